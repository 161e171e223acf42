//! Impersonation (`Impersonate-User`, `Impersonate-Group`, `Impersonate-Uid`,
//! `Impersonate-Extra-<key>`): the authenticated user acts as another, when RBAC lets it
//! `impersonate` each of those — what `kubectl --as` and `kubectl auth can-i --as` send.

use http::HeaderMap;

use super::attributes::Attributes;
use super::{AUTHENTICATED, Auth, SERVICE_ACCOUNTS, UserInfo, split_service_account};
use crate::apiserver::api::Cluster;
use crate::apiserver::status::ApiError;

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA_PREFIX: &str = "impersonate-extra-";

fn values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

/// The user a request acts as: `user` itself without impersonation headers, otherwise the
/// impersonated one, once every part of it is authorized; a 403 naming the first part that
/// is not.
pub fn apply(
    auth: &Auth,
    cluster: &Cluster,
    user: UserInfo,
    headers: &HeaderMap,
) -> Result<UserInfo, ApiError> {
    let name = values(headers, USER).first().map(|s| s.to_string());
    let groups: Vec<String> = values(headers, GROUP)
        .iter()
        .map(|s| s.to_string())
        .collect();
    let uid = values(headers, UID).first().map(|s| s.to_string());
    let mut extra = std::collections::BTreeMap::<String, Vec<String>>::new();
    for (header, value) in headers {
        if let Some(key) = header.as_str().strip_prefix(EXTRA_PREFIX)
            && let Ok(value) = value.to_str()
        {
            let key = percent_decode(key);
            extra.entry(key).or_default().push(value.to_string());
        }
    }
    let Some(name) = name else {
        if groups.is_empty() && uid.is_none() && extra.is_empty() {
            return Ok(user);
        }
        // kube-apiserver answers this with a 500.
        return Err(ApiError::Internal(
            "requested impersonation of groups, uid or extra without impersonating a user"
                .to_string(),
        ));
    };
    let check = |attributes: Attributes| auth.require(cluster, &user, &attributes);
    match split_service_account(&name) {
        Some((namespace, sa)) => check(Attributes::resource(
            "impersonate",
            "",
            "serviceaccounts",
            "",
            namespace,
            sa,
        ))?,
        None => check(Attributes::resource(
            "impersonate",
            "",
            "users",
            "",
            "",
            &name,
        ))?,
    }
    for group in &groups {
        check(Attributes::resource(
            "impersonate",
            "",
            "groups",
            "",
            "",
            group,
        ))?;
    }
    if let Some(uid) = &uid {
        check(Attributes::resource(
            "impersonate",
            "authentication.k8s.io",
            "uids",
            "",
            "",
            uid,
        ))?;
    }
    for (key, list) in &extra {
        for value in list {
            check(Attributes::resource(
                "impersonate",
                "authentication.k8s.io",
                "userextras",
                key,
                "",
                value,
            ))?;
        }
    }
    let mut impersonated_groups = groups.clone();
    if groups.is_empty()
        && let Some((namespace, _)) = split_service_account(&name)
    {
        impersonated_groups.push(SERVICE_ACCOUNTS.to_string());
        impersonated_groups.push(format!("{SERVICE_ACCOUNTS}:{namespace}"));
    }
    if name == "system:anonymous" {
        if !impersonated_groups
            .iter()
            .any(|g| g == "system:unauthenticated")
        {
            impersonated_groups.push("system:unauthenticated".to_string());
        }
    } else if !impersonated_groups.iter().any(|g| g == AUTHENTICATED) {
        impersonated_groups.push(AUTHENTICATED.to_string());
    }
    Ok(UserInfo {
        name,
        uid: uid.unwrap_or_default(),
        groups: impersonated_groups,
        extra,
    })
}

/// Extra keys travel percent-encoded in header names.
fn percent_decode(key: &str) -> String {
    form_urlencoded::parse(format!("k={key}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| key.to_string())
}
