//! Metadata-only answers: a client that sends `Accept: application/json;as=PartialObjectMetadata;
//! g=meta.k8s.io;v=v1` (or `…List` for a list) gets each object's metadata only, as
//! kube-apiserver serves it to metadata informers (kube-rs's `metadata_watcher`).

use serde_json::{Value, json};

use super::status::ApiError;

/// The form of metadata-only answer a request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partial {
    /// `as=PartialObjectMetadata`: one object, or each event of a watch.
    Object,
    /// `as=PartialObjectMetadataList`: a list.
    List,
}

fn parameter<'a>(media: &'a str, key: &str) -> Option<&'a str> {
    media.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        (k.trim() == key).then_some(v.trim())
    })
}

/// What the first acceptable media type of `accept` asks for, if it is a metadata form.
pub fn wanted(accept: &str) -> Option<Partial> {
    let first = accept.split(',').next()?;
    let form = match parameter(first, "as")? {
        "PartialObjectMetadata" => Partial::Object,
        "PartialObjectMetadataList" => Partial::List,
        _ => return None,
    };
    (parameter(first, "g") == Some("meta.k8s.io") && parameter(first, "v") == Some("v1"))
        .then_some(form)
}

/// Refuses a form that does not fit the request (a list asked as a single object and the
/// reverse), with kube-apiserver's 406.
pub fn check(form: Partial, is_list: bool) -> Result<(), ApiError> {
    let ok = match form {
        Partial::List => is_list,
        Partial::Object => !is_list,
    };
    if ok {
        Ok(())
    } else {
        Err(ApiError::NotAcceptable(format!(
            "only the following media types are accepted: application/json;as={}",
            if is_list {
                "PartialObjectMetadataList;g=meta.k8s.io;v=v1"
            } else {
                "PartialObjectMetadata;g=meta.k8s.io;v=v1"
            }
        )))
    }
}

/// The `PartialObjectMetadata` of an object.
pub fn object(full: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": full.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// The `PartialObjectMetadataList` of a list's items.
pub fn list<'a>(items: impl Iterator<Item = &'a Value>, metadata: Value) -> Value {
    json!({
        "kind": "PartialObjectMetadataList",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "items": items.map(object).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_media_type_decides_and_needs_the_meta_group() {
        assert_eq!(
            wanted(
                "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
            ),
            Some(Partial::List)
        );
        assert_eq!(
            wanted("application/json; as=PartialObjectMetadata; g=meta.k8s.io; v=v1"),
            Some(Partial::Object)
        );
        assert_eq!(
            wanted("application/json;as=PartialObjectMetadata;g=other;v=v1"),
            None
        );
        assert_eq!(wanted("application/json"), None);
        assert_eq!(wanted("application/json;as=Table;g=meta.k8s.io;v=v1"), None);
    }

    #[test]
    fn only_metadata_is_kept_and_the_wrong_form_is_not_acceptable() {
        let full = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "c2VjcmV0"}});
        let partial = object(&full);
        assert_eq!(partial["kind"], "PartialObjectMetadata");
        assert_eq!(partial["metadata"]["name"], "s");
        assert!(partial.get("data").is_none());
        assert_eq!(check(Partial::Object, true).unwrap_err().code(), 406);
        assert!(check(Partial::List, true).is_ok());
    }
}
