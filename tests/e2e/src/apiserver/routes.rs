//! The HTTP layer: authenticates, decodes paths, query parameters and bodies, calls the API's
//! verbs, and encodes results (JSON, Tables, watch streams, Status errors).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::PodLogSource;
use super::api::{Cluster, DeleteRequest, ListOptions, Patch, WriteOptions};
use super::auth::attributes::Attributes;
use super::auth::{Auth, UserInfo, escalation, impersonation, reviews};
use super::discovery;
use super::openapi;
use super::partial;
use super::patch::{PatchType, decode_body};
use super::protobuf;
use super::resource::ResourceInfo;
use super::selectors::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{DeleteOptions, EventType, UpdateTarget, WatchEvent, encode_frame as frame};
use super::table;
use super::watch::{Subscription, WatchFilter};

/// Response body: whole JSON documents or a watch stream.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// kube-apiserver's default request body limit.
const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Everything a request handler needs.
pub struct ServerState {
    /// The API's state.
    pub cluster: Arc<Cluster>,
    /// Tokens, impersonation and RBAC.
    pub auth: Arc<Auth>,
    /// Injected latency.
    pub faults: Arc<super::faults::Faults>,
    /// How often watches that allow bookmarks get one.
    pub bookmark_interval: Duration,
    /// Where pod logs come from.
    pub logs: Arc<dyn PodLogSource>,
    /// Flips to true when the server stops, ending open watches.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(full(serde_json::to_vec(value).unwrap_or_default()));
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn error_response(error: &ApiError) -> Response<Body> {
    let code = StatusCode::from_u16(error.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let status = error.to_status();
    let mut response = json_response(code, &status);
    // kube-apiserver turns a suggested wait into Retry-After, which clients honour.
    if let Some(seconds) = status
        .pointer("/details/retryAfterSeconds")
        .and_then(Value::as_u64)
        && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// The bearer token a request presents, if any.
fn bearer(request: &Request<Incoming>) -> Option<&str> {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Handles one request; never fails (errors become Status responses).
pub async fn handle(
    state: Arc<ServerState>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let public = matches!(path.as_str(), "/healthz" | "/livez" | "/readyz");
    let user = match bearer(&request) {
        Some(token) => state.auth.authenticate(&state.cluster, token),
        // Health needs no credentials, as kube-apiserver's public-info-viewer grants them to
        // anonymous users; everything else does.
        None if public => return Ok(Response::new(full("ok"))),
        None => None,
    };
    let Some(user) = user else {
        tracing::debug!(%method, %path, "unauthorized request");
        return Ok(error_response(&ApiError::Unauthorized));
    };
    let user = match impersonation::apply(&state.auth, &state.cluster, user, request.headers()) {
        Ok(user) => user,
        Err(error) => {
            tracing::debug!(%method, %path, %error, "impersonation refused");
            return Ok(error_response(&error));
        }
    };
    let response = match route(&state, request, user).await {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(%method, %path, code = error.code(), %error, "request refused");
            error_response(&error)
        }
    };
    Ok(response)
}

struct Parsed {
    user: UserInfo,
    method: Method,
    path: String,
    query: HashMap<String, String>,
    accept: String,
    content_type: String,
    user_agent: String,
    body: Bytes,
}

async fn route(
    state: &Arc<ServerState>,
    request: Request<Incoming>,
    user: UserInfo,
) -> Result<Response<Body>, ApiError> {
    let (parts, body) = request.into_parts();
    let body = Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| ApiError::BadRequest(format!("reading the request body: {e}")))?
        .to_bytes();
    let header_str = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let request = Parsed {
        user,
        method: parts.method.clone(),
        path: parts.uri.path().to_string(),
        query: form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect(),
        accept: header_str(header::ACCEPT),
        content_type: header_str(header::CONTENT_TYPE),
        user_agent: header_str(header::USER_AGENT),
        body,
    };
    let attributes = Attributes::of_request(&request.method, &request.path, &request.query);
    state
        .auth
        .require(&state.cluster, &request.user, &attributes)?;
    if let Some(delay) = state.faults.delay_for(&attributes.resource) {
        tokio::time::sleep(delay).await;
    }
    let segments: Vec<&str> = request.path.split('/').filter(|s| !s.is_empty()).collect();
    let registry = || state.cluster.registry();
    let get_only = |value: Option<Value>| -> Result<Response<Body>, ApiError> {
        if request.method != Method::GET {
            return Err(ApiError::MethodNotAllowed(format!(
                "the server does not allow this method on the requested resource: {}",
                request.method
            )));
        }
        value
            .map(|v| json_response(StatusCode::OK, &v))
            .ok_or_else(|| ApiError::not_found("", &request.path))
    };
    match segments.as_slice() {
        ["healthz" | "livez" | "readyz"] => Ok(Response::new(full("ok"))),
        ["version"] => get_only(Some(discovery::version())),
        ["api" | "apis"]
            if request.method == Method::GET
                && discovery::aggregated_version(&request.accept).is_some() =>
        {
            let version = discovery::aggregated_version(&request.accept).unwrap_or("v2");
            let document = discovery::aggregated(&registry(), segments[0] == "api", version);
            let mut response = json_response(StatusCode::OK, &document);
            let media = format!(
                "application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList"
            );
            if let Ok(value) = HeaderValue::from_str(&media) {
                response.headers_mut().insert(header::CONTENT_TYPE, value);
            }
            Ok(response)
        }
        ["api"] => get_only(Some(discovery::core_versions())),
        ["apis"] => get_only(Some(discovery::groups(&registry()))),
        ["apis", group] => get_only(discovery::group(&registry(), group)),
        ["api", "v1"] => get_only(discovery::resources(&registry(), "", "v1")),
        ["apis", group, version] => get_only(discovery::resources(&registry(), group, version)),
        ["openapi", "v2"] => {
            // kubectl only asks v2 for protobuf; an empty document lets it carry on with v3.
            let mut response = Response::new(full(Bytes::new()));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                ),
            );
            Ok(response)
        }
        ["openapi", "v3"] => get_only(Some(openapi::root(&registry()))),
        ["openapi", "v3", "apis", group, version] => {
            get_only(openapi::group_version_document(&registry(), group, version))
        }
        ["api", "v1", rest @ ..] => resource_route(state, &request, "", "v1", rest).await,
        ["apis", group, version, rest @ ..] => {
            resource_route(state, &request, group, version, rest)
                .await
                .map_err(|e| e.in_group(group))
        }
        _ => Err(ApiError::not_found("", &request.path)),
    }
}

fn query_bool(query: &HashMap<String, String>, key: &str) -> bool {
    matches!(query.get(key).map(String::as_str), Some("true" | "1"))
}

fn list_options(query: &HashMap<String, String>) -> Result<ListOptions, ApiError> {
    Ok(ListOptions {
        labels: LabelSelector::parse(query.get("labelSelector").map(String::as_str).unwrap_or(""))?,
        fields: FieldSelector::parse(query.get("fieldSelector").map(String::as_str).unwrap_or(""))?,
        limit: query
            .get("limit")
            .and_then(|l| l.parse::<usize>().ok())
            .filter(|l| *l > 0),
        continue_token: query.get("continue").filter(|c| !c.is_empty()).cloned(),
    })
}

/// `dryRun`: absent, or `All`; anything else is refused (422 on the verb's options kind), as
/// kube-apiserver refuses it, rather than taken as a real write.
fn dry_run(values: Option<&str>, options_kind: &str) -> Result<bool, ApiError> {
    match values {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(ApiError::invalid(
            options_kind,
            "",
            vec![super::status::FieldCause {
                field: "dryRun".into(),
                reason: "FieldValueNotSupported",
                message: format!(
                    "Unsupported value: []string{{{other:?}}}: supported values: \"All\""
                ),
            }],
        )
        .in_group("meta.k8s.io")),
    }
}

/// The request's field manager: `fieldManager`, else (except for apply, which must name one)
/// the User-Agent's product, as kube-apiserver defaults it.
fn field_manager(request: &Parsed) -> Option<String> {
    if let Some(manager) = request.query.get("fieldManager") {
        return Some(manager.clone());
    }
    if request.content_type.starts_with("application/apply-patch") {
        return None;
    }
    let product = request.user_agent.split('/').next().unwrap_or("");
    Some(product.chars().take(128).collect())
}

fn write_options(request: &Parsed) -> Result<WriteOptions, ApiError> {
    let query = &request.query;
    let options_kind = match request.method {
        Method::POST => "CreateOptions",
        Method::PUT => "UpdateOptions",
        _ => "PatchOptions",
    };
    Ok(WriteOptions {
        dry_run: dry_run(query.get("dryRun").map(String::as_str), options_kind)?,
        strict: query.get("fieldValidation").is_some_and(|v| v == "Strict"),
        field_manager: field_manager(request),
        force: query_bool(query, "force"),
    })
}

fn body_object(request: &Parsed) -> Result<Value, ApiError> {
    let media = request.content_type.split(';').next().unwrap_or("").trim();
    let value = if media == protobuf::MEDIA_TYPE {
        protobuf::decode(&request.body)?
    } else {
        decode_body(&request.body)?
    };
    if !value.is_object() {
        return Err(ApiError::BadRequest(
            "the request body must be a JSON or YAML object".to_string(),
        ));
    }
    Ok(value)
}

/// Renders one object or a list, as a Table or metadata only when the client asked for one.
fn render_list(
    res: &ResourceInfo,
    items: &[Arc<Value>],
    metadata: Value,
    accept: &str,
) -> Result<Value, ApiError> {
    if let Some(form) = partial::wanted(accept) {
        partial::check(form, true)?;
        return Ok(partial::list(items.iter().map(|i| i.as_ref()), metadata));
    }
    Ok(render_list_plain(res, items, metadata, accept))
}

fn render_list_plain(
    res: &ResourceInfo,
    items: &[Arc<Value>],
    metadata: Value,
    accept: &str,
) -> Value {
    if table::wants_table(accept) {
        let refs: Vec<&Value> = items.iter().map(|i| i.as_ref()).collect();
        return table::table(res, &refs, metadata, true, jiff::Timestamp::now());
    }
    json!({
        "kind": format!("{}List", res.kind),
        "apiVersion": res.api_version(),
        "metadata": metadata,
        "items": items.iter().map(|i| i.as_ref()).collect::<Vec<_>>(),
    })
}

fn render_object(res: &ResourceInfo, object: &Value, accept: &str) -> Result<Value, ApiError> {
    if let Some(form) = partial::wanted(accept) {
        partial::check(form, false)?;
        return Ok(partial::object(object));
    }
    Ok(render_object_plain(res, object, accept))
}

fn render_object_plain(res: &ResourceInfo, object: &Value, accept: &str) -> Value {
    if table::wants_table(accept) {
        let rv = object
            .pointer("/metadata/resourceVersion")
            .cloned()
            .unwrap_or(json!(""));
        return table::table(
            res,
            &[object],
            json!({"resourceVersion": rv}),
            true,
            jiff::Timestamp::now(),
        );
    }
    object.clone()
}

async fn resource_route(
    state: &Arc<ServerState>,
    request: &Parsed,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<Response<Body>, ApiError> {
    // /namespaces/{ns}/{plural}/... addresses namespaced objects, except the namespace's own
    // subresources (/namespaces/{name}/status and /finalize).
    let (namespace, plural, name, subresource) = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if !(tail.is_empty() && matches!(*plural, "status" | "finalize")) =>
        {
            (
                Some(*ns),
                *plural,
                tail.first().copied(),
                tail.get(1).copied(),
            )
        }
        [plural] => (None, *plural, None, None),
        [plural, name] => (None, *plural, Some(*name), None),
        [plural, name, sub] => (None, *plural, Some(*name), Some(*sub)),
        _ => return Err(ApiError::not_found("", &request.path)),
    };
    if rest.len() > 5 {
        return Err(ApiError::not_found("", &request.path));
    }
    let res = state.cluster.resource(group, version, plural)?;
    if res.namespaced != namespace.is_some() && (name.is_some() || !res.namespaced) {
        return Err(ApiError::not_found("", &request.path));
    }
    let ns = namespace.unwrap_or("");
    let cluster = &state.cluster;
    if res.create_only {
        return match (name, &request.method) {
            (None, &Method::POST) => {
                let body = body_object(request)?;
                let reply =
                    reviews::create(&state.auth, cluster, &request.user, &res.plural, ns, &body)?;
                Ok(json_response(StatusCode::CREATED, &reply))
            }
            _ => Err(ApiError::MethodNotAllowed(format!(
                "the server does not allow this method on the requested resource: {}",
                request.method
            ))),
        };
    }
    // The escalation check sees what a write would store.
    let guard =
        |object: &Value| escalation::check(&state.auth, cluster, &request.user, &res, ns, object);
    match (name, subresource) {
        (None, None) => match request.method {
            Method::GET if query_bool(&request.query, "watch") => {
                watch(state, &res, namespace, request)
            }
            Method::GET => {
                let (items, metadata) =
                    cluster.list(&res, namespace, &list_options(&request.query)?)?;
                Ok(json_response(
                    StatusCode::OK,
                    &render_list(&res, &items, metadata, &request.accept)?,
                ))
            }
            Method::POST => {
                if namespace.is_none() && res.namespaced {
                    return Err(ApiError::MethodNotAllowed(
                        "create requires a namespace".to_string(),
                    ));
                }
                let body = body_object(request)?;
                guard(&body)?;
                let created = cluster.create(&res, ns, body, &write_options(request)?)?;
                Ok(json_response(StatusCode::CREATED, &created))
            }
            Method::DELETE => {
                let deleted =
                    cluster.delete_collection(&res, namespace, &list_options(&request.query)?)?;
                let items: Vec<Arc<Value>> = deleted.into_iter().map(Arc::new).collect();
                let rv = cluster.hub.read(|s| s.resource_version());
                Ok(json_response(
                    StatusCode::OK,
                    &render_list_plain(
                        &res,
                        &items,
                        json!({"resourceVersion": rv.to_string()}),
                        "",
                    ),
                ))
            }
            _ => Err(ApiError::MethodNotAllowed(format!(
                "{} is not supported on a collection",
                request.method
            ))),
        },
        (Some(name), sub) => {
            let target = match sub {
                None => UpdateTarget::Main,
                Some("status") if res.status_subresource => UpdateTarget::Status,
                Some("log") if res.group.is_empty() && res.plural == "pods" => {
                    return pod_log(state, &res, ns, name, request);
                }
                Some("binding") if res.group.is_empty() && res.plural == "pods" => {
                    if request.method != Method::POST {
                        return Err(ApiError::MethodNotAllowed(
                            "pods/binding only supports POST".to_string(),
                        ));
                    }
                    let binding = body_object(request)?;
                    let node = binding
                        .pointer("/target/name")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    cluster.bind(&res, ns, name, node)?;
                    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
                    return Ok(json_response(StatusCode::CREATED, &status));
                }
                Some("eviction") if res.group.is_empty() && res.plural == "pods" => {
                    if request.method != Method::POST {
                        return Err(ApiError::MethodNotAllowed(
                            "pods/eviction only supports POST".to_string(),
                        ));
                    }
                    let eviction = body_object(request)?;
                    let status = super::disruption::evict(
                        cluster,
                        &res,
                        ns,
                        name,
                        &eviction,
                        write_options(request)?.dry_run,
                    )?;
                    return Ok(json_response(StatusCode::CREATED, &status));
                }
                Some("token") if res.group.is_empty() && res.plural == "serviceaccounts" => {
                    if request.method != Method::POST {
                        return Err(ApiError::MethodNotAllowed(
                            "serviceaccounts/token only supports POST".to_string(),
                        ));
                    }
                    let service_account = cluster.get(&res, ns, name)?;
                    let reply = state.auth.tokens().request(
                        cluster,
                        &service_account,
                        &body_object(request)?,
                    )?;
                    return Ok(json_response(StatusCode::CREATED, &reply));
                }
                Some(_) => return Err(ApiError::not_found("", &request.path)),
            };
            match request.method {
                Method::GET => {
                    let object = cluster.get(&res, ns, name)?;
                    Ok(json_response(
                        StatusCode::OK,
                        &render_object(&res, &object, &request.accept)?,
                    ))
                }
                Method::PUT => {
                    let body = body_object(request)?;
                    guard(&body)?;
                    let updated =
                        cluster.update(&res, ns, name, body, target, &write_options(request)?)?;
                    Ok(json_response(StatusCode::OK, &updated))
                }
                Method::PATCH => {
                    let patch_type = PatchType::from_content_type(&request.content_type)?;
                    let patch = decode_body(&request.body)?;
                    let existed = cluster.get(&res, ns, name).is_ok();
                    if !existed && patch_type == PatchType::Apply {
                        // An apply that creates is authorized as a create too, as
                        // kube-apiserver does: patch alone may not create.
                        let create = Attributes {
                            verb: "create".to_string(),
                            ..Attributes::of_request(&request.method, &request.path, &request.query)
                        };
                        state.auth.require(cluster, &request.user, &create)?;
                    }
                    if res.group == super::auth::rbac::GROUP && !request.user.is_master() {
                        let preview = WriteOptions {
                            dry_run: true,
                            ..write_options(request)?
                        };
                        let result = cluster.patch(
                            &res,
                            ns,
                            name,
                            Patch::new(patch_type, patch.clone()),
                            target,
                            &preview,
                        )?;
                        guard(&result)?;
                    }
                    let patched = cluster.patch(
                        &res,
                        ns,
                        name,
                        Patch::new(patch_type, patch),
                        target,
                        &write_options(request)?,
                    )?;
                    let code = if existed {
                        StatusCode::OK
                    } else {
                        StatusCode::CREATED
                    };
                    Ok(json_response(code, &patched))
                }
                Method::DELETE if sub.is_none() => {
                    let options = if request.body.is_empty() {
                        json!({})
                    } else {
                        body_object(request)?
                    };
                    let deleted =
                        cluster.delete(&res, ns, name, &delete_request(request, &options)?)?;
                    Ok(json_response(StatusCode::OK, &deleted))
                }
                _ => Err(ApiError::MethodNotAllowed(format!(
                    "{} is not supported here",
                    request.method
                ))),
            }
        }
        (None, Some(_)) => Err(ApiError::not_found("", &request.path)),
    }
}

/// The delete a request asks for, from its `DeleteOptions` body and query parameters.
fn delete_request(request: &Parsed, options: &Value) -> Result<DeleteRequest, ApiError> {
    let text = |pointer: &str| {
        options
            .pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let policy =
        text("/propagationPolicy").or_else(|| request.query.get("propagationPolicy").cloned());
    let body_dry_run = options
        .get("dryRun")
        .and_then(Value::as_array)
        .and_then(|d| d.first())
        .and_then(Value::as_str);
    let dry_run = dry_run(
        body_dry_run.or_else(|| request.query.get("dryRun").map(String::as_str)),
        "DeleteOptions",
    )?;
    Ok(DeleteRequest {
        preconditions: DeleteOptions {
            uid: text("/preconditions/uid"),
            resource_version: text("/preconditions/resourceVersion"),
            graceful: None,
        },
        grace_period_seconds: options
            .get("gracePeriodSeconds")
            .and_then(Value::as_i64)
            .or_else(|| {
                request
                    .query
                    .get("gracePeriodSeconds")
                    .and_then(|g| g.parse().ok())
            }),
        orphan: policy.as_deref() == Some("Orphan")
            || options.get("orphanDependents").and_then(Value::as_bool) == Some(true),
        dry_run,
    })
}

/// The last `lines` lines of `text` (all of it when `None`).
fn tail(text: &str, lines: Option<usize>) -> &str {
    let Some(lines) = lines else { return text };
    if lines == 0 {
        return "";
    }
    let body = text.strip_suffix('\n').unwrap_or(text);
    match body.rmatch_indices('\n').nth(lines - 1) {
        Some((index, _)) => &text[index + 1..],
        None => text,
    }
}

/// Whether every container of the pod has stopped, so a followed log can end.
fn pod_finished(pod: &Value) -> bool {
    if matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    ) {
        return true;
    }
    pod.pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .is_some_and(|statuses| {
            !statuses.is_empty()
                && statuses
                    .iter()
                    .all(|s| s.pointer("/state/terminated").is_some())
        })
}

fn pod_log(
    state: &Arc<ServerState>,
    res: &ResourceInfo,
    ns: &str,
    name: &str,
    request: &Parsed,
) -> Result<Response<Body>, ApiError> {
    if request.method != Method::GET {
        return Err(ApiError::MethodNotAllowed(
            "pods/log only supports GET".to_string(),
        ));
    }
    state.cluster.get(res, ns, name)?;
    let container = request.query.get("container").cloned();
    let tail_lines = request
        .query
        .get("tailLines")
        .and_then(|t| t.parse::<usize>().ok());
    let limit = request
        .query
        .get("limitBytes")
        .and_then(|l| l.parse::<usize>().ok());
    let text = state
        .logs
        .logs(ns, name, container.as_deref())
        .unwrap_or_default();
    let mut first = tail(&text, tail_lines).to_string();
    if let Some(limit) = limit {
        let mut cut = limit.min(first.len());
        while !first.is_char_boundary(cut) {
            cut -= 1;
        }
        first.truncate(cut);
    }
    let body = if query_bool(&request.query, "follow") {
        follow_log(state, res, ns, name, container, first, text.len())
    } else {
        full(first)
    };
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(response)
}

/// Streams a pod's log as it grows, until the pod finishes or goes, or the client leaves.
fn follow_log(
    state: &Arc<ServerState>,
    res: &ResourceInfo,
    ns: &str,
    name: &str,
    container: Option<String>,
    first: String,
    mut sent: usize,
) -> Body {
    let (out, receiver) = mpsc::channel::<Bytes>(64);
    let (state, res, ns, name) = (state.clone(), res.clone(), ns.to_string(), name.to_string());
    let mut shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        if !first.is_empty() && out.send(Bytes::from(first)).await.is_err() {
            return;
        }
        let mut ticker = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = ticker.tick() => {}
            }
            let pod = state.cluster.get(&res, &ns, &name).ok();
            let text = state
                .logs
                .logs(&ns, &name, container.as_deref())
                .unwrap_or_default();
            if text.len() < sent {
                // The log was replaced (a restarted container): start over.
                sent = 0;
            }
            if let Some(new) = text.get(sent..).filter(|n| !n.is_empty()) {
                if out.send(Bytes::from(new.to_string())).await.is_err() {
                    return;
                }
                sent = text.len();
                continue;
            }
            if pod.as_ref().is_none_or(pod_finished) {
                return;
            }
        }
    });
    StreamBody::new(futures::stream::unfold(
        receiver,
        |mut receiver| async move {
            receiver
                .recv()
                .await
                .map(|bytes| (Ok::<_, Infallible>(Frame::data(bytes)), receiver))
        },
    ))
    .boxed_unsync()
}

struct WatchStream {
    res: Arc<ResourceInfo>,
    filter: WatchFilter,
    table: bool,
    /// Events carry `PartialObjectMetadata` only.
    partial: bool,
    columns_sent: bool,
    out: mpsc::Sender<Bytes>,
}

impl WatchStream {
    /// Sends an object event; false once the client has gone.
    async fn send(&mut self, event_type: EventType, stored: &Value) -> bool {
        let converted;
        let object = if self.filter.core_events {
            converted = super::events::core_view(stored);
            &converted
        } else {
            stored
        };
        let frame = if self.partial {
            frame(event_type.as_str(), &partial::object(object))
        } else if self.table {
            let with_columns = !self.columns_sent;
            self.columns_sent = true;
            let rv = object
                .pointer("/metadata/resourceVersion")
                .cloned()
                .unwrap_or(json!(""));
            let t = table::table(
                &self.res,
                &[object],
                json!({"resourceVersion": rv}),
                with_columns,
                jiff::Timestamp::now(),
            );
            frame(event_type.as_str(), &t)
        } else {
            frame(event_type.as_str(), object)
        };
        self.out.send(frame).await.is_ok()
    }

    /// Sends a stored change as `event_type`, reusing its shared encoding when possible.
    async fn send_event(&mut self, event_type: EventType, event: &WatchEvent) -> bool {
        if self.table || self.partial || event_type != event.event_type || self.filter.core_events {
            return self.send(event_type, &event.object).await;
        }
        self.out.send(event.frame()).await.is_ok()
    }

    async fn send_raw(&self, event_type: &str, object: &Value) -> bool {
        self.out.send(frame(event_type, object)).await.is_ok()
    }

    fn bookmark(&self, rv: u64, initial_events_end: bool) -> Value {
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        if self.partial {
            return json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": metadata});
        }
        json!({"kind": self.res.kind, "apiVersion": self.res.api_version(), "metadata": metadata})
    }
}

fn watch(
    state: &Arc<ServerState>,
    res: &Arc<ResourceInfo>,
    namespace: Option<&str>,
    request: &Parsed,
) -> Result<Response<Body>, ApiError> {
    let options = list_options(&request.query)?;
    let partial = match partial::wanted(&request.accept) {
        Some(form) => {
            partial::check(form, false)?;
            true
        }
        None => false,
    };
    let filter = WatchFilter {
        storage_key: res.storage_key(),
        namespace: namespace.map(str::to_string),
        labels: options.labels,
        fields: options.fields,
        core_events: super::events::is_core_view(res),
    };
    let bookmarks = query_bool(&request.query, "allowWatchBookmarks");
    let send_initial = query_bool(&request.query, "sendInitialEvents");
    let timeout = request
        .query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let requested_rv = request
        .query
        .get("resourceVersion")
        .map(String::as_str)
        .unwrap_or("");
    // "" and "0" mean "any version": start with the current objects as ADDED events.
    let from_now = requested_rv.is_empty() || requested_rv == "0" || send_initial;
    let (initial, subscription): (Vec<Arc<Value>>, Result<Subscription, ApiError>) = if from_now {
        let storage_key = res.storage_key();
        let (items, sub) = state.cluster.hub.snapshot_and_subscribe(|store| {
            store
                .list(
                    &storage_key,
                    namespace,
                    |o| filter.matches_object(o),
                    None,
                    None,
                )
                .items
        });
        (items, Ok(sub))
    } else {
        let rv = requested_rv.parse::<u64>().map_err(|_| {
            ApiError::BadRequest(format!("invalid resourceVersion: {requested_rv}"))
        })?;
        (Vec::new(), state.cluster.hub.subscribe(Some(rv)))
    };
    let (out, receiver) = mpsc::channel::<Bytes>(256);
    let mut stream = WatchStream {
        res: res.clone(),
        filter,
        table: table::wants_table(&request.accept),
        partial,
        columns_sent: false,
        out,
    };
    let mut shutdown = state.shutdown.clone();
    let bookmark_interval = state.bookmark_interval;
    tokio::spawn(async move {
        let mut sub = match subscription {
            Ok(sub) => sub,
            Err(gone) => {
                // A too-old version is a 200 with an ERROR event, as kube-apiserver sends it.
                stream.send_raw("ERROR", &gone.to_status()).await;
                return;
            }
        };
        for object in &initial {
            if !stream.send(EventType::Added, object).await {
                return;
            }
        }
        let mut last_rv = sub.rv;
        if send_initial
            && !stream
                .send_raw("BOOKMARK", &stream.bookmark(last_rv, true))
                .await
        {
            return;
        }
        for event in std::mem::take(&mut sub.replay) {
            last_rv = last_rv.max(event.rv);
            if let Some(event_type) = stream.filter.translate(&event)
                && !stream.send_event(event_type, &event).await
            {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(bookmark_interval.max(Duration::from_millis(10)));
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = shutdown.changed() => return,
                _ = sub.expiry.changed() => {
                    let gone = ApiError::Gone("too old resource version: the watch history was compacted".to_string());
                    stream.send_raw("ERROR", &gone.to_status()).await;
                    return;
                }
                _ = ticker.tick(), if bookmarks => {
                    if !stream.send_raw("BOOKMARK", &stream.bookmark(last_rv, false)).await {
                        return;
                    }
                }
                received = sub.live.recv() => match received {
                    Ok(event) => {
                        if event.rv <= last_rv {
                            continue;
                        }
                        last_rv = event.rv;
                        if let Some(event_type) = stream.filter.translate(&event)
                            && !stream.send_event(event_type, &event).await
                        {
                            return;
                        }
                    }
                    // Too slow to keep up: end the stream; the client resumes from its last
                    // version, or relists if that has left the history.
                    Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
    let body = StreamBody::new(futures::stream::unfold(
        receiver,
        |mut receiver| async move {
            receiver
                .recv()
                .await
                .map(|bytes| (Ok::<_, Infallible>(Frame::data(bytes)), receiver))
        },
    ));
    let mut response = Response::new(body.boxed_unsync());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", Some(2)), "b\nc\n");
        assert_eq!(tail("a\nb\nc", Some(1)), "c");
        assert_eq!(tail("a\nb\n", Some(5)), "a\nb\n");
        assert_eq!(tail("a\nb\n", Some(0)), "");
        assert_eq!(tail("a\nb\n", None), "a\nb\n");
    }

    #[test]
    fn a_pod_is_finished_when_all_containers_terminated_or_its_phase_says_so() {
        let running = json!({"status": {"containerStatuses": [{"state": {"terminated": {}}}, {"state": {"running": {}}}]}});
        assert!(!pod_finished(&running));
        let done = json!({"status": {"containerStatuses": [{"state": {"terminated": {}}}]}});
        assert!(pod_finished(&done));
        assert!(pod_finished(&json!({"status": {"phase": "Failed"}})));
        assert!(!pod_finished(&json!({"status": {"phase": "Pending"}})));
    }
}
