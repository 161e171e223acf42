//! The testbed's authentication and RBAC, driven with the real kubectl as a user would:
//! ServiceAccount tokens (`kubectl create token`), requests made with them authorized by Roles
//! and bindings (403s in kube-apiserver's words), `kubectl auth can-i --as` and `whoami`,
//! TokenReview and SubjectAccessReview, impersonation, and RBAC's escalation check.

use maos_e2e::cluster::{KubectlError, TestCluster};
use serde_json::Value;

const NS: &str = "rbac-a";
const SA_USER: &str = "system:serviceaccount:rbac-a:reader";

/// A testbed with namespace `rbac-a`, ServiceAccount `reader` that may get and list
/// ConfigMaps there, and one ConfigMap.
fn cluster() -> TestCluster {
    let cluster = TestCluster::start().expect("the testbed starts");
    let admin = |args: &[&str]| {
        cluster
            .run_kubectl(args, None)
            .unwrap_or_else(|e| panic!("{e}"))
    };
    admin(&["create", "namespace", NS]);
    admin(&["create", "serviceaccount", "reader", "-n", NS]);
    admin(&[
        "create",
        "role",
        "cm-reader",
        "--verb=get,list",
        "--resource=configmaps",
        "-n",
        NS,
    ]);
    admin(&[
        "create",
        "rolebinding",
        "reader-reads",
        "--role=cm-reader",
        "--serviceaccount=rbac-a:reader",
        "-n",
        NS,
    ]);
    admin(&[
        "create",
        "configmap",
        "settings",
        "--from-literal=a=b",
        "-n",
        NS,
    ]);
    cluster
}

fn token(cluster: &TestCluster, account: &str) -> String {
    cluster
        .run_kubectl(&["create", "token", account, "-n", NS], None)
        .expect("kubectl create token")
        .trim()
        .to_string()
}

/// kubectl with `token` instead of the kubeconfig's admin token.
fn as_token(cluster: &TestCluster, token: &str, args: &[&str]) -> Result<String, KubectlError> {
    let flag = format!("--token={token}");
    let mut all = vec![flag.as_str()];
    all.extend_from_slice(args);
    cluster.run_kubectl(&all, None)
}

#[test]
fn a_service_account_token_can_do_what_its_role_grants_and_gets_kube_apiservers_403_otherwise() {
    let cluster = cluster();
    let token = token(&cluster, "reader");
    let listed =
        as_token(&cluster, &token, &["get", "configmaps", "-n", NS]).expect("list is granted");
    assert!(listed.contains("settings"), "{listed}");
    let got = as_token(
        &cluster,
        &token,
        &[
            "get",
            "configmap",
            "settings",
            "-n",
            NS,
            "-o",
            "jsonpath={.data.a}",
        ],
    )
    .expect("get is granted");
    assert_eq!(got, "b");

    let denied = as_token(
        &cluster,
        &token,
        &["delete", "configmap", "settings", "-n", NS],
    )
    .expect_err("delete is not granted");
    assert!(
        denied.stderr().contains(&format!(
            "Error from server (Forbidden): configmaps \"settings\" is forbidden: User \"{SA_USER}\" cannot delete resource \"configmaps\" in API group \"\" in the namespace \"{NS}\""
        )),
        "{}",
        denied.stderr()
    );
    let elsewhere = as_token(&cluster, &token, &["get", "configmaps", "-n", "default"])
        .expect_err("the RoleBinding grants only in its namespace");
    assert!(
        elsewhere.stderr().contains(
            "cannot list resource \"configmaps\" in API group \"\" in the namespace \"default\""
        ),
        "{}",
        elsewhere.stderr()
    );
    let cluster_scope =
        as_token(&cluster, &token, &["get", "namespaces"]).expect_err("no cluster-wide rights");
    assert!(
        cluster_scope
            .stderr()
            .contains("cannot list resource \"namespaces\" in API group \"\" at the cluster scope"),
        "{}",
        cluster_scope.stderr()
    );
    // The admin's own access is untouched.
    cluster
        .run_kubectl(&["get", "namespaces"], None)
        .expect("the admin lists namespaces");

    let testbed = cluster.testbed().expect("a testbed");
    let log = testbed.auth().access_log();
    let find = |verb: &str, allowed: bool| {
        log.iter().any(|r| {
            r.user == SA_USER
                && r.verb == verb
                && r.resource == "configmaps"
                && r.namespace == NS
                && r.allowed == allowed
        })
    };
    assert!(find("list", true) && find("get", true), "{log:#?}");
    assert!(find("delete", false), "the refusal is recorded: {log:#?}");
    assert!(
        !log.iter().any(|r| r.user == "kubernetes-admin"),
        "the admin is not recorded"
    );
}

#[test]
fn kubectl_create_token_honours_duration_audience_and_the_bound_object() {
    let cluster = cluster();
    let json = cluster
        .run_kubectl(
            &[
                "create",
                "token",
                "reader",
                "-n",
                NS,
                "--duration=20m",
                "--audience=vault",
                "-o",
                "json",
            ],
            None,
        )
        .expect("kubectl create token -o json");
    let request: Value = serde_json::from_str(&json).expect("a TokenRequest");
    assert_eq!(request["kind"], "TokenRequest");
    assert_eq!(request["spec"]["expirationSeconds"], 1200);
    assert_eq!(request["spec"]["audiences"], serde_json::json!(["vault"]));
    let vault_token = request["status"]["token"]
        .as_str()
        .expect("a token")
        .to_string();
    // A token for another audience is not one for this API server.
    let refused = as_token(&cluster, &vault_token, &["get", "configmaps", "-n", NS])
        .expect_err("wrong audience");
    assert!(
        refused.stderr().contains("Unauthorized"),
        "{}",
        refused.stderr()
    );

    let short = cluster
        .run_kubectl(
            &["create", "token", "reader", "-n", NS, "--duration=5m"],
            None,
        )
        .expect_err("less than ten minutes is refused");
    assert!(
        short
            .stderr()
            .contains("may not specify a duration less than 10 minutes"),
        "{}",
        short.stderr()
    );

    let unbound = cluster
        .run_kubectl(
            &[
                "create",
                "token",
                "reader",
                "-n",
                NS,
                "--bound-object-kind=Secret",
                "--bound-object-name=missing",
            ],
            None,
        )
        .expect_err("the bound object must exist");
    assert!(
        unbound.stderr().contains("secrets \"missing\" not found"),
        "{}",
        unbound.stderr()
    );
    cluster
        .run_kubectl(&["create", "secret", "generic", "anchor", "-n", NS], None)
        .expect("a Secret to bind to");
    let bound = cluster
        .run_kubectl(
            &[
                "create",
                "token",
                "reader",
                "-n",
                NS,
                "--bound-object-kind=Secret",
                "--bound-object-name=anchor",
            ],
            None,
        )
        .expect("a bound token")
        .trim()
        .to_string();
    as_token(&cluster, &bound, &["get", "configmaps", "-n", NS])
        .expect("valid while the Secret exists");
    cluster
        .run_kubectl(&["delete", "secret", "anchor", "-n", NS], None)
        .expect("delete the Secret");
    as_token(&cluster, &bound, &["get", "configmaps", "-n", NS])
        .expect_err("invalid once it is gone");

    let plain = token(&cluster, "reader");
    cluster
        .run_kubectl(&["delete", "serviceaccount", "reader", "-n", NS], None)
        .expect("delete the ServiceAccount");
    let gone = as_token(&cluster, &plain, &["get", "configmaps", "-n", NS])
        .expect_err("its tokens die with it");
    assert!(gone.stderr().contains("Unauthorized"), "{}", gone.stderr());
}

#[test]
fn kubectl_auth_can_i_and_whoami_answer_from_the_same_rbac() {
    let cluster = cluster();
    let can_i = |args: &[&str]| {
        let mut all = vec!["auth", "can-i"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--as", SA_USER, "-n", NS]);
        // `no` is printed on stdout with exit status 1.
        let output = cluster.kubectl().args(&all).output().expect("kubectl runs");
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    assert_eq!(can_i(&["list", "configmaps"]), "yes");
    assert_eq!(can_i(&["get", "configmaps/settings"]), "yes");
    assert!(
        can_i(&["delete", "configmaps"]).contains("no"),
        "delete is not granted"
    );
    assert!(can_i(&["create", "pods"]).contains("no"));

    let token = token(&cluster, "reader");
    let whoami =
        as_token(&cluster, &token, &["auth", "whoami", "-o", "json"]).expect("kubectl auth whoami");
    let review: Value = serde_json::from_str(&whoami).expect("a SelfSubjectReview");
    assert_eq!(review["status"]["userInfo"]["username"], SA_USER);
    let groups = review["status"]["userInfo"]["groups"].to_string();
    for group in [
        "system:serviceaccounts",
        "system:serviceaccounts:rbac-a",
        "system:authenticated",
    ] {
        assert!(groups.contains(group), "{groups}");
    }
    // The ServiceAccount itself may ask about itself (system:basic-user), but not impersonate.
    let own = as_token(
        &cluster,
        &token,
        &["auth", "can-i", "list", "configmaps", "-n", NS],
    )
    .expect("self review");
    assert_eq!(own.trim(), "yes");
    let impersonate = as_token(
        &cluster,
        &token,
        &["get", "configmaps", "-n", NS, "--as=alice"],
    )
    .expect_err("impersonation needs the impersonate verb");
    assert!(
        impersonate.stderr().contains(&format!(
            "users \"alice\" is forbidden: User \"{SA_USER}\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
        )),
        "{}",
        impersonate.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_and_access_reviews_need_auth_delegator_and_answer_truthfully() {
    use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
    };
    let cluster = cluster();
    cluster
        .run_kubectl(&["create", "serviceaccount", "gateway", "-n", NS], None)
        .expect("a ServiceAccount for a server that reviews its clients");
    let reader_token = token(&cluster, "reader");
    let gateway_token = token(&cluster, "gateway");
    let testbed = cluster.testbed().expect("a testbed");
    let path = testbed
        .kubeconfig_path()
        .with_file_name("gateway.kubeconfig");
    testbed
        .write_kubeconfig_for(&path, &gateway_token)
        .expect("a kubeconfig for the gateway");
    let gateway = maos_e2e::apiserver::client_from_kubeconfig(&path)
        .await
        .expect("a client");
    let reviews: kube::Api<TokenReview> = kube::Api::all(gateway.clone());
    let review = |token: &str| TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_string()),
            audiences: None,
        },
        ..TokenReview::default()
    };
    let refused = reviews
        .create(&Default::default(), &review(&reader_token))
        .await
        .expect_err("not delegated yet");
    assert!(refused.to_string().contains("cannot create resource \"tokenreviews\" in API group \"authentication.k8s.io\" at the cluster scope"), "{refused}");

    cluster
        .run_kubectl(
            &[
                "create",
                "clusterrolebinding",
                "gateway-delegates",
                "--clusterrole=system:auth-delegator",
                "--serviceaccount=rbac-a:gateway",
            ],
            None,
        )
        .expect("bind system:auth-delegator");
    let answered = reviews
        .create(&Default::default(), &review(&reader_token))
        .await
        .expect("a TokenReview");
    let status = answered.status.expect("status");
    assert_eq!(status.authenticated, Some(true));
    assert_eq!(
        status.user.and_then(|u| u.username).as_deref(),
        Some(SA_USER)
    );
    let bogus = reviews
        .create(&Default::default(), &review("not-a-token"))
        .await
        .expect("a TokenReview");
    let status = bogus.status.expect("status");
    assert_eq!(status.authenticated, Some(false));
    assert!(status.error.is_some_and(|e| !e.is_empty()));

    let access: kube::Api<SubjectAccessReview> = kube::Api::all(gateway);
    let ask = |verb: &str| SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(SA_USER.to_string()),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                "system:authenticated".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(NS.into()),
                verb: Some(verb.into()),
                resource: Some("configmaps".into()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let list = access
        .create(&Default::default(), &ask("list"))
        .await
        .expect("a SubjectAccessReview");
    assert!(list.status.expect("status").allowed);
    let delete = access
        .create(&Default::default(), &ask("delete"))
        .await
        .expect("a SubjectAccessReview");
    assert!(!delete.status.expect("status").allowed);
    let nobody = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes::default()),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let invalid = access
        .create(&Default::default(), &nobody)
        .await
        .expect_err("a subject is required");
    assert!(
        invalid
            .to_string()
            .contains("at least one of user or group must be specified"),
        "{invalid}"
    );
}

#[test]
fn rbac_cannot_grant_what_the_granter_does_not_hold() {
    let cluster = cluster();
    // The reader may also manage Roles and RoleBindings in its namespace, but holds only
    // get/list on ConfigMaps.
    cluster
        .run_kubectl(
            &[
                "create",
                "role",
                "rbac-manager",
                "--verb=create,get,list",
                "--resource=roles,rolebindings",
                "-n",
                NS,
            ],
            None,
        )
        .expect("a role manager role");
    cluster
        .run_kubectl(
            &[
                "create",
                "rolebinding",
                "reader-manages",
                "--role=rbac-manager",
                "--serviceaccount=rbac-a:reader",
                "-n",
                NS,
            ],
            None,
        )
        .expect("bind it");
    let token = token(&cluster, "reader");
    as_token(
        &cluster,
        &token,
        &[
            "create",
            "role",
            "subset",
            "--verb=get",
            "--resource=configmaps",
            "-n",
            NS,
        ],
    )
    .expect("a Role within what it holds");
    let escalation = as_token(
        &cluster,
        &token,
        &[
            "create",
            "role",
            "more",
            "--verb=get,delete",
            "--resource=configmaps",
            "-n",
            NS,
        ],
    )
    .expect_err("a Role beyond what it holds");
    assert!(
        escalation
            .stderr()
            .contains("is attempting to grant RBAC permissions not currently held")
            && escalation.stderr().contains("Verbs:[\"delete\"]"),
        "{}",
        escalation.stderr()
    );
    let bind = as_token(
        &cluster,
        &token,
        &[
            "create",
            "rolebinding",
            "grab",
            "--clusterrole=cluster-admin",
            "--user=mallory",
            "-n",
            NS,
        ],
    )
    .expect_err("binding a role it does not hold");
    assert!(
        bind.stderr()
            .contains("is attempting to grant RBAC permissions not currently held"),
        "{}",
        bind.stderr()
    );
    as_token(
        &cluster,
        &token,
        &[
            "create",
            "rolebinding",
            "share",
            "--role=subset",
            "--user=bob",
            "-n",
            NS,
        ],
    )
    .expect("binding a role it holds");
}

#[test]
fn a_bindings_role_ref_cannot_change() {
    let cluster = cluster();
    let changed = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: reader-reads
  namespace: rbac-a
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: view
subjects:
- kind: ServiceAccount
  name: reader
  namespace: rbac-a
"#;
    let refused = cluster
        .run_kubectl(&["apply", "-f", "-"], Some(changed))
        .expect_err("a new roleRef is refused");
    assert!(
        refused.stderr().contains(
            "The RoleBinding \"reader-reads\" is invalid: roleRef: Invalid value: rbac.RoleRef{APIGroup:\"rbac.authorization.k8s.io\", Kind:\"ClusterRole\", Name:\"view\"}: cannot change roleRef"
        ),
        "{}",
        refused.stderr()
    );
    let kept = cluster
        .run_kubectl(
            &[
                "get",
                "rolebinding",
                "reader-reads",
                "-n",
                NS,
                "-o",
                "jsonpath={.roleRef.name}",
            ],
            None,
        )
        .expect("get");
    assert_eq!(kept, "cm-reader");
    // Changing only the subjects is an ordinary update.
    cluster
        .run_kubectl(
            &["apply", "-f", "-"],
            Some(
                &changed
                    .replace(
                        "kind: ClusterRole\n  name: view",
                        "kind: Role\n  name: cm-reader",
                    )
                    .replace("name: reader\n", "name: other\n"),
            ),
        )
        .expect("subjects may change");
}

#[test]
fn an_apply_that_creates_needs_create_as_well_as_patch() {
    let cluster = cluster();
    let admin = |args: &[&str]| {
        cluster
            .run_kubectl(args, None)
            .unwrap_or_else(|e| panic!("{e}"))
    };
    admin(&[
        "create",
        "role",
        "cm-patcher",
        "--verb=patch",
        "--resource=configmaps",
        "-n",
        NS,
    ]);
    admin(&[
        "create",
        "rolebinding",
        "reader-patches",
        "--role=cm-patcher",
        "--serviceaccount=rbac-a:reader",
        "-n",
        NS,
    ]);
    let token = token(&cluster, "reader");
    let flag = format!("--token={token}");
    let apply = |name: &str| {
        let manifest = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {NS}\ndata:\n  k: v\n"
        );
        cluster.run_kubectl(
            &[
                &flag,
                "apply",
                "--server-side",
                "--field-manager=t",
                "-f",
                "-",
            ],
            Some(&manifest),
        )
    };
    apply("settings").expect("patch alone may apply to an object that exists");
    let refused = apply("fresh").expect_err("patch alone may not create");
    assert!(
        refused.stderr().contains(&format!(
            "configmaps \"fresh\" is forbidden: User \"{SA_USER}\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"{NS}\""
        )),
        "{}",
        refused.stderr()
    );
    assert!(
        cluster
            .run_kubectl(&["get", "configmap", "fresh", "-n", NS], None)
            .is_err(),
        "nothing was created"
    );
    admin(&[
        "create",
        "role",
        "cm-creator",
        "--verb=create",
        "--resource=configmaps",
        "-n",
        NS,
    ]);
    admin(&[
        "create",
        "rolebinding",
        "reader-creates",
        "--role=cm-creator",
        "--serviceaccount=rbac-a:reader",
        "-n",
        NS,
    ]);
    apply("fresh").expect("with create too, the apply creates");
}
