//! Services as far as an install needs them: kube-apiserver's defaults and validation of a
//! Service's spec, a cluster IP allocated from the service range (and kept on update), and the
//! `kubernetes` Service (with its Endpoints) in `default` that every cluster has. Nothing
//! routes to a cluster IP here: pods reach the API server through KUBERNETES_SERVICE_HOST.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

use super::resource::str_at;
use super::status::{ApiError, FieldCause};

/// The service range, kube-apiserver's default `--service-cluster-ip-range`.
const SERVICE_RANGE: (Ipv4Addr, u32) = (Ipv4Addr::new(10, 96, 0, 0), 12);

/// The `kubernetes` Service's cluster IP: the first address of the range, as on a cluster.
pub const KUBERNETES_CLUSTER_IP: &str = "10.96.0.1";

fn invalid(name: &str, field: &str, reason: &'static str, message: String) -> ApiError {
    ApiError::invalid(
        "Service",
        name,
        vec![FieldCause {
            field: field.to_string(),
            reason,
            message,
        }],
    )
}

/// Defaults and validates a Service's spec as kube-apiserver does; `old` is the stored
/// Service on update (its cluster IP is kept), `taken` the cluster IPs in use.
pub fn admit(
    service: &mut Value,
    old: Option<&Value>,
    taken: &BTreeSet<String>,
) -> Result<(), ApiError> {
    let name = str_at(service, "/metadata/name").to_string();
    if !service.get("spec").is_some_and(Value::is_object) {
        service["spec"] = json!({});
    }
    let spec = &mut service["spec"];
    let kind = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if !matches!(
        kind.as_str(),
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
    ) {
        return Err(invalid(
            &name,
            "spec.type",
            "FieldValueNotSupported",
            format!(
                "Unsupported value: \"{kind}\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""
            ),
        ));
    }
    spec["type"] = json!(kind);
    if spec.get("sessionAffinity").is_none() {
        spec["sessionAffinity"] = json!("None");
    }
    let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
    let ports = spec
        .get_mut("ports")
        .and_then(Value::as_array_mut)
        .map(std::mem::take)
        .unwrap_or_default();
    if ports.is_empty() && !headless && kind != "ExternalName" {
        return Err(invalid(
            &name,
            "spec.ports",
            "FieldValueRequired",
            "Required value".into(),
        ));
    }
    let mut names = BTreeSet::new();
    let many = ports.len() > 1;
    let mut defaulted = Vec::with_capacity(ports.len());
    for (i, mut port) in ports.into_iter().enumerate() {
        let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&number) {
            return Err(invalid(
                &name,
                &format!("spec.ports[{i}].port"),
                "FieldValueInvalid",
                format!("Invalid value: {number}: must be between 1 and 65535, inclusive"),
            ));
        }
        let port_name = str_at(&port, "/name").to_string();
        if many && port_name.is_empty() {
            return Err(invalid(
                &name,
                &format!("spec.ports[{i}].name"),
                "FieldValueRequired",
                "Required value".into(),
            ));
        }
        if !port_name.is_empty() && !names.insert(port_name.clone()) {
            return Err(invalid(
                &name,
                &format!("spec.ports[{i}].name"),
                "FieldValueDuplicate",
                format!("Duplicate value: \"{port_name}\""),
            ));
        }
        if port.get("protocol").is_none() {
            port["protocol"] = json!("TCP");
        }
        if port.get("targetPort").is_none() {
            port["targetPort"] = json!(number);
        }
        defaulted.push(port);
    }
    if !defaulted.is_empty() || spec.get("ports").is_some() {
        spec["ports"] = Value::Array(defaulted);
    }
    if kind == "ExternalName" {
        return Ok(());
    }
    let old_ip = old
        .map(|o| str_at(o, "/spec/clusterIP").to_string())
        .unwrap_or_default();
    let sent = str_at(spec, "/clusterIP").to_string();
    let ip = match (old_ip.is_empty(), sent.is_empty()) {
        (false, true) => old_ip.clone(),
        (false, false) if sent != old_ip => {
            return Err(invalid(
                &name,
                "spec.clusterIPs[0]",
                "FieldValueInvalid",
                format!("Invalid value: []string{{\"{sent}\"}}: may not change once set"),
            ));
        }
        (_, false) if sent == "None" => sent,
        (true, false) => {
            let parsed: Ipv4Addr = sent.parse().map_err(|_| {
                invalid(
                    &name,
                    "spec.clusterIPs[0]",
                    "FieldValueInvalid",
                    format!("Invalid value: \"{sent}\": must be a valid IP address"),
                )
            })?;
            if !in_range(parsed) {
                return Err(invalid(
                    &name,
                    "spec.clusterIPs[0]",
                    "FieldValueInvalid",
                    format!(
                        "Invalid value: \"{sent}\": failed to allocate IP {sent}: the provided IP ({sent}) is not in the valid range. The range of valid IPs is 10.96.0.0/12"
                    ),
                ));
            }
            if taken.contains(&sent) {
                return Err(invalid(
                    &name,
                    "spec.clusterIPs[0]",
                    "FieldValueInvalid",
                    format!(
                        "Invalid value: []string{{\"{sent}\"}}: failed to allocate IP {sent}: provided IP is already allocated"
                    ),
                ));
            }
            sent
        }
        (_, _) => allocate(taken).ok_or_else(|| {
            ApiError::Internal("failed to allocate a serviceIP: range is full".into())
        })?,
    };
    spec["clusterIP"] = json!(ip);
    spec["clusterIPs"] = json!([ip]);
    if ip != "None" {
        spec["ipFamilies"] = json!(["IPv4"]);
        spec["ipFamilyPolicy"] = json!("SingleStack");
        spec["internalTrafficPolicy"] = spec
            .get("internalTrafficPolicy")
            .cloned()
            .unwrap_or_else(|| json!("Cluster"));
    }
    Ok(())
}

fn in_range(ip: Ipv4Addr) -> bool {
    let (base, bits) = SERVICE_RANGE;
    let mask = u32::MAX << (32 - bits);
    u32::from(ip) & mask == u32::from(base)
}

/// The lowest free address of the range after the network address and the `kubernetes`
/// Service's (kube-apiserver picks at random; lowest-first is as valid and repeatable).
fn allocate(taken: &BTreeSet<String>) -> Option<String> {
    let (base, bits) = SERVICE_RANGE;
    let first = u32::from(base) + 1;
    let last = u32::from(base) + (1u32 << (32 - bits)) - 2;
    (first..=last)
        .map(|n| Ipv4Addr::from(n).to_string())
        .find(|ip| !taken.contains(ip))
}

/// The cluster IPs the stored Services hold.
pub fn cluster_ips<'a>(services: impl Iterator<Item = &'a Value>) -> BTreeSet<String> {
    services
        .map(|s| str_at(s, "/spec/clusterIP").to_string())
        .filter(|ip| !ip.is_empty() && ip != "None")
        .collect()
}

/// The `kubernetes` Service in `default`, for an API server listening on `port`.
pub fn kubernetes_service(port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {
            "clusterIP": KUBERNETES_CLUSTER_IP,
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}],
            "type": "ClusterIP",
            "sessionAffinity": "None",
        },
    })
}

/// The `kubernetes` Endpoints: where the API server really listens.
pub fn kubernetes_endpoints(host: &str, port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": host}],
                     "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(spec: Value) -> Value {
        json!({"metadata": {"name": "web"}, "spec": spec})
    }

    #[test]
    fn a_service_gets_kube_apiservers_defaults_and_the_next_free_cluster_ip() {
        let taken: BTreeSet<String> = [KUBERNETES_CLUSTER_IP.to_string()].into();
        let mut web = service(json!({"ports": [{"port": 80}]}));
        admit(&mut web, None, &taken).unwrap();
        assert_eq!(web["spec"]["clusterIP"], "10.96.0.2");
        assert_eq!(web["spec"]["clusterIPs"], json!(["10.96.0.2"]));
        assert_eq!(web["spec"]["type"], "ClusterIP");
        assert_eq!(web["spec"]["sessionAffinity"], "None");
        assert_eq!(
            web["spec"]["ports"],
            json!([{"port": 80, "protocol": "TCP", "targetPort": 80}])
        );
    }

    #[test]
    fn the_cluster_ip_is_kept_on_update_and_may_not_change() {
        let taken = BTreeSet::new();
        let mut web = service(json!({"ports": [{"port": 80}]}));
        admit(&mut web, None, &taken).unwrap();
        let mut update = service(json!({"ports": [{"port": 8080}]}));
        admit(&mut update, Some(&web), &taken).unwrap();
        assert_eq!(update["spec"]["clusterIP"], web["spec"]["clusterIP"]);
        let mut moved = service(json!({"ports": [{"port": 80}], "clusterIP": "10.96.0.77"}));
        let refused = admit(&mut moved, Some(&web), &taken).unwrap_err();
        assert!(
            refused.to_string().contains("may not change once set"),
            "{refused}"
        );
    }

    #[test]
    fn bad_ports_and_addresses_are_refused_naming_the_field() {
        let taken: BTreeSet<String> = ["10.96.0.9".to_string()].into();
        for (spec, field) in [
            (json!({}), "spec.ports: Required value"),
            (json!({"ports": [{"port": 0}]}), "spec.ports[0].port"),
            (
                json!({"ports": [{"port": 1}, {"port": 2}]}),
                "spec.ports[0].name: Required value",
            ),
            (
                json!({"ports": [{"port": 1}], "clusterIP": "10.96.0.9"}),
                "already allocated",
            ),
            (
                json!({"ports": [{"port": 1}], "clusterIP": "192.168.0.1"}),
                "not in the valid range",
            ),
            (
                json!({"ports": [{"port": 1}], "type": "Magic"}),
                "spec.type: Unsupported value",
            ),
        ] {
            let refused = admit(&mut service(spec.clone()), None, &taken).unwrap_err();
            assert!(refused.to_string().contains(field), "{spec}: {refused}");
            assert_eq!(refused.code(), 422);
        }
    }

    #[test]
    fn a_headless_service_keeps_none_and_needs_no_ports() {
        let mut headless = service(json!({"clusterIP": "None"}));
        admit(&mut headless, None, &BTreeSet::new()).unwrap();
        assert_eq!(headless["spec"]["clusterIP"], "None");
    }
}
