//! Who a request comes from and what it may do, as kube-apiserver decides it: bearer tokens
//! (the admin's, and ServiceAccount tokens from TokenRequest), impersonation, and the RBAC
//! authorizer over the stored Roles and bindings with kube-apiserver's default policy.
//!
//! The HTTP layer calls [`Auth::authenticate`], then [`impersonation::apply`], then
//! [`Auth::authorize`] on the request's [`attributes::Attributes`]; the reviews
//! (TokenReview, the SubjectAccessReviews) answer from the same three.

pub mod attributes;
pub mod bootstrap;
pub mod escalation;
pub mod impersonation;
pub mod rbac;
pub mod reviews;
pub mod tokens;

use std::collections::BTreeMap;
use std::sync::Mutex;

use attributes::Attributes;
use rbac::Policy;

use super::api::Cluster;
use super::status::ApiError;

/// The group whose members every authorizer lets through (kube-apiserver's privileged group).
pub const MASTERS: &str = "system:masters";
/// The group every authenticated user is in.
pub const AUTHENTICATED: &str = "system:authenticated";
/// The group every ServiceAccount is in.
pub const SERVICE_ACCOUNTS: &str = "system:serviceaccounts";
/// The prefix of a ServiceAccount's user name: `system:serviceaccount:<namespace>:<name>`.
pub const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";
/// The user the kubeconfig's admin token authenticates as (kubeadm's and kind's name).
pub const ADMIN_USER: &str = "kubernetes-admin";

/// An authenticated user, as kube-apiserver's `user.Info`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    /// The user name, e.g. `system:serviceaccount:maos-system:maos-operator`.
    pub name: String,
    /// A unique id (the ServiceAccount's uid for its tokens).
    pub uid: String,
    /// Groups, including `system:authenticated`.
    pub groups: Vec<String>,
    /// Extra attributes (a bound token's pod name and uid, its credential id).
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// The admin the kubeconfig's token stands for: in `system:masters`.
    pub fn admin() -> Self {
        UserInfo {
            name: ADMIN_USER.to_string(),
            uid: String::new(),
            groups: vec![MASTERS.to_string(), AUTHENTICATED.to_string()],
            extra: BTreeMap::new(),
        }
    }

    /// The user of a ServiceAccount's tokens.
    pub fn service_account(namespace: &str, name: &str, uid: &str) -> Self {
        UserInfo {
            name: service_account_user(namespace, name),
            uid: uid.to_string(),
            groups: vec![
                SERVICE_ACCOUNTS.to_string(),
                format!("{SERVICE_ACCOUNTS}:{namespace}"),
                AUTHENTICATED.to_string(),
            ],
            extra: BTreeMap::new(),
        }
    }

    /// Whether the user is in the privileged group that no authorizer refuses.
    pub fn is_master(&self) -> bool {
        self.groups.iter().any(|g| g == MASTERS)
    }

    /// The `userInfo`/`user` object of TokenReview and SelfSubjectReview statuses.
    pub fn to_json(&self) -> serde_json::Value {
        let mut user = serde_json::json!({"username": self.name, "groups": self.groups});
        if !self.uid.is_empty() {
            user["uid"] = serde_json::json!(self.uid);
        }
        if !self.extra.is_empty() {
            user["extra"] = serde_json::json!(self.extra);
        }
        user
    }
}

/// `system:serviceaccount:<namespace>:<name>`.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}")
}

/// The namespace and name of a ServiceAccount user name, if it is one.
pub fn split_service_account(user: &str) -> Option<(&str, &str)> {
    let rest = user.strip_prefix(SERVICE_ACCOUNT_PREFIX)?;
    let (namespace, name) = rest.split_once(':')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains(':')).then_some((namespace, name))
}

/// One authorization decision, as tests read them back ([`Auth::access_log`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccessRecord {
    /// The user name the decision was for.
    pub user: String,
    /// The verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, …).
    pub verb: String,
    /// API group (empty for the core group and for non-resource paths).
    pub group: String,
    /// Resource plural (empty for non-resource paths).
    pub resource: String,
    /// Subresource (`status`, `log`, `token`, …), or empty.
    pub subresource: String,
    /// Namespace, or empty at the cluster scope.
    pub namespace: String,
    /// Object name, or empty for lists, creates and collections.
    pub name: String,
    /// The path, for non-resource requests (empty otherwise).
    pub path: String,
    /// Whether it was allowed.
    pub allowed: bool,
}

/// The authentication and authorization state of one API server.
pub struct Auth {
    tokens: tokens::Tokens,
    /// Each distinct decision and how many requests it was made for.
    log: Mutex<BTreeMap<AccessRecord, u64>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").finish_non_exhaustive()
    }
}

impl Auth {
    /// Auth for a server whose admin presents `admin_token`.
    pub fn new(admin_token: String) -> Self {
        Auth {
            tokens: tokens::Tokens::new(admin_token),
            log: Mutex::new(BTreeMap::new()),
        }
    }

    /// The token store (TokenRequest issues from it, TokenReview reads it).
    pub fn tokens(&self) -> &tokens::Tokens {
        &self.tokens
    }

    /// The user a bearer token stands for, or `None` if it is not valid here.
    pub fn authenticate(&self, cluster: &Cluster, token: &str) -> Option<UserInfo> {
        self.tokens
            .authenticate(cluster, token, &[tokens::API_AUDIENCE.to_string()])
            .ok()
    }

    /// Whether `user` may do what `attributes` describe; records decisions about anyone
    /// outside `system:masters`.
    pub fn authorize(&self, cluster: &Cluster, user: &UserInfo, attributes: &Attributes) -> bool {
        if user.is_master() {
            return true;
        }
        let allowed = cluster
            .hub
            .read(Policy::from_store)
            .allows(user, attributes);
        self.record(user, attributes, allowed);
        allowed
    }

    /// [`Auth::authorize`], as the 403 kube-apiserver answers when it says no.
    pub fn require(
        &self,
        cluster: &Cluster,
        user: &UserInfo,
        attributes: &Attributes,
    ) -> Result<(), ApiError> {
        if self.authorize(cluster, user, attributes) {
            Ok(())
        } else {
            Err(attributes.forbidden(&user.name, ""))
        }
    }

    fn record(&self, user: &UserInfo, attributes: &Attributes, allowed: bool) {
        let record = AccessRecord {
            user: user.name.clone(),
            verb: attributes.verb.clone(),
            group: attributes.api_group.clone(),
            resource: attributes.resource.clone(),
            subresource: attributes.subresource.clone(),
            namespace: attributes.namespace.clone(),
            name: attributes.name.clone(),
            path: if attributes.resource_request {
                String::new()
            } else {
                attributes.path.clone()
            },
            allowed,
        };
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(record)
            .and_modify(|n| *n += 1)
            .or_insert(1);
    }

    /// Every distinct decision made about a user outside `system:masters`, in order.
    pub fn access_log(&self) -> Vec<AccessRecord> {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Every distinct decision made about a user outside `system:masters`, with how many
    /// requests it was made for (a watch counts once, when it is opened).
    pub fn request_counts(&self) -> Vec<(AccessRecord, u64)> {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(record, n)| (record.clone(), *n))
            .collect()
    }

    /// Forgets the recorded decisions (a test's arrange steps are not what it measures).
    pub fn clear_access_log(&self) {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_names_split_back_into_namespace_and_name() {
        let user = service_account_user("maos-system", "maos-operator");
        assert_eq!(user, "system:serviceaccount:maos-system:maos-operator");
        assert_eq!(
            split_service_account(&user),
            Some(("maos-system", "maos-operator"))
        );
        assert_eq!(split_service_account("system:serviceaccount:ns"), None);
        assert_eq!(split_service_account("system:serviceaccount::x"), None);
        assert_eq!(split_service_account("alice"), None);
    }
}
