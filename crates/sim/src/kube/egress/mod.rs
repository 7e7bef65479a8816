//! Egress: the external hosts the workloads call, and where their sidecars send those calls.
//!
//! A call leaves through the pod's proxy. The mesh's `outboundTrafficPolicy.mode` (from the
//! shared ConfigMap `istio-shared-configmap-<rev>` of the revision that injected the pod;
//! `ALLOW_ANY` without one) decides what happens to a host no `ServiceEntry` lists:
//! `REGISTRY_ONLY` sends it to `BlackHoleCluster` (dropped), `ALLOW_ANY` to
//! `PassthroughCluster`. A host a ServiceEntry lists goes to that service.
//!
//! The proxy reports it as Istio's stats filter does (istio/proxy
//! `source/extensions/filters/http/istio_stats/istio_stats.cc`, client side, `reporter="source"`):
//! an HTTP call counts in `istio_requests_total` with `destination_service` the Host header
//! and `destination_service_name` `BlackHoleCluster` (route `block_all`, answered 502) or
//! `PassthroughCluster`; a TLS call counts in `istio_tcp_connections_opened_total`, where a
//! blackholed or passed-through connection has no Host header and so
//! `destination_service="unknown"`. The series are on the proxy's own stats endpoint (port
//! 15090, `/stats/prometheus`, which a port-forward reaches) and on the sim's metrics page.

pub(super) mod calls;

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::istio::{ISTIO_NS, pod_revision};
use super::object::{meta_str, name_of, ns_of};
use super::resources::by_plural;
use super::state::KubeState;
use super::traffic::workload_of;
use calls::{EgressCall, Route, series};

/// The revision's `outboundTrafficPolicy.mode` is `REGISTRY_ONLY` (its shared ConfigMap says
/// so; the default, without one or without the field, is `ALLOW_ANY`).
pub(crate) fn registry_only(kube: &KubeState, revision: &str) -> bool {
    let name = format!("istio-shared-configmap-{revision}");
    let Some(cm) = kube.store.get(by_plural("configmaps"), ISTIO_NS, &name) else {
        return false;
    };
    let mesh = cm["data"]["mesh"].as_str().unwrap_or_default();
    serde_saphyr::from_str::<Value>(mesh)
        .ok()
        .is_some_and(|m| m["outboundTrafficPolicy"]["mode"] == "REGISTRY_ONLY")
}

/// A ServiceEntry host pattern matches `host`: equal, or `*.suffix` for a subdomain.
fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => host.ends_with(suffix) && host.len() > suffix.len(),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// The namespace of a ServiceEntry visible from `from` that lists the call's host and port
/// (`exportTo` absent or `*`: everywhere; `.`: its own namespace only).
fn service_entry(kube: &KubeState, from: &str, call: &EgressCall) -> Option<String> {
    let (entries, _) = kube.store.list(by_plural("serviceentries"), None);
    entries.iter().find_map(|se| {
        let spec = &se["spec"];
        let ns = ns_of(se);
        let visible = spec["exportTo"].as_array().is_none_or(|to| {
            to.iter()
                .any(|t| t == "*" || (t == "." && ns == from) || t.as_str() == Some(from))
        });
        let hosts = spec["hosts"].as_array()?;
        let listed = hosts
            .iter()
            .filter_map(Value::as_str)
            .any(|h| host_matches(h, &call.host));
        let ports = spec["ports"].as_array();
        let port_ok = ports.is_none_or(|ps| {
            ps.is_empty() || ps.iter().any(|p| p["number"] == u64::from(call.port))
        });
        (visible && listed && port_ok).then(|| ns.to_string())
    })
}

/// Where a pod of namespace `from`, injected by `revision`, sends the call.
pub(crate) fn route(kube: &KubeState, from: &str, revision: &str, call: &EgressCall) -> Route {
    if let Some(namespace) = service_entry(kube, from, call) {
        Route::ServiceEntry { namespace }
    } else if registry_only(kube, revision) {
        Route::BlackHole
    } else {
        Route::Passthrough
    }
}

/// The calls of the workload `namespace/workload`.
pub(crate) fn calls_of<'a>(
    kube: &'a KubeState,
    namespace: &str,
    workload: &str,
) -> impl Iterator<Item = &'a EgressCall> {
    let key = format!("{namespace}/{workload}");
    kube.scenario
        .traffic
        .egress
        .iter()
        .filter(move |c| c.workload == key)
}

/// The controller owner (kind, name) of a pod object.
fn controller_of(pod: &Value) -> Option<(String, String)> {
    pod["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)
        .map(|r| {
            (
                r["kind"].as_str().unwrap_or_default().to_string(),
                r["name"].as_str().unwrap_or_default().to_string(),
            )
        })
}

/// A sidecar's `/stats/prometheus` (port 15090): the egress series of its pod, counted from
/// the pod's creation (`rate` calls per simulated second; at least one once it runs) on the
/// route each call takes at the time.
pub(crate) fn proxy_stats(kube: &KubeState, pod: &Value) -> String {
    let ns = ns_of(pod);
    let wl = workload_of(&controller_of(pod), name_of(pod));
    let revision = pod_revision(pod).unwrap_or_default();
    let age = chrono::DateTime::parse_from_rfc3339(meta_str(pod, "creationTimestamp"))
        .map(|t| (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).as_seconds_f64())
        .unwrap_or(0.0)
        .max(0.0);
    let mut lines = Vec::new();
    let now = Instant::now();
    let mut counted = kube.egress.counted.lock().expect("egress poisoned");
    for call in calls_of(kube, ns, &wl) {
        let route = route(kube, ns, &revision, call);
        let key = (
            meta_str(pod, "uid").to_string(),
            call.host.clone(),
            call.port,
            call.protocol.clone(),
        );
        let (routes, last) = counted.entry(key).or_insert_with(|| {
            let started = now - Duration::from_secs_f64(age.min(1e6));
            (BTreeMap::new(), started.min(now))
        });
        let simulated = now.duration_since(*last).as_secs_f64() / kube.clock.scale();
        *last = now;
        let n = routes.entry(route).or_insert(0.0);
        *n = (*n + call.rate * simulated).max(1.0);
        for (route, n) in routes.iter() {
            lines.push(series(ns, &wl, call, route, *n));
        }
    }
    drop(counted);
    // a metric family's series stay together, under its TYPE line
    let mut out = String::new();
    for family in ["istio_requests_total", "istio_tcp_connections_opened_total"] {
        let _ = writeln!(out, "# TYPE {family} counter");
        for line in lines
            .iter()
            .filter(|l| l.starts_with(&format!("{family}{{")))
        {
            out.push_str(line);
        }
    }
    out.push_str("# TYPE envoy_server_live gauge\nenvoy_server_live{} 1\n");
    out
}

/// The proxy's HTTP answer on port 15090.
pub(crate) fn proxy_http(
    kube: &KubeState,
    pod: &Value,
    path_and_query: &str,
) -> (u16, &'static str, Vec<u8>) {
    let path = path_and_query.split('?').next().unwrap_or_default();
    if path == "/stats/prometheus" {
        (
            200,
            "text/plain; version=0.0.4",
            proxy_stats(kube, pod).into_bytes(),
        )
    } else {
        (404, "text/plain", b"404 page not found\n".to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Scenario;

    /// A running pod of `namespace/workload`'s Deployment.
    fn pod_of(kube: &KubeState, namespace: &str, workload: &str) -> Value {
        let (pods, _) = kube.store.list(by_plural("pods"), Some(namespace));
        pods.iter()
            .find(|p| name_of(p).starts_with(&format!("{workload}-")))
            .map(|p| (**p).clone())
            .expect("a pod")
    }

    #[test]
    fn registry_only_blackholes_hosts_without_a_service_entry() {
        let kube = KubeState::new(&Scenario::builtin("registry-only").unwrap());
        assert!(registry_only(&kube, "asm-1-27"));
        let api = proxy_stats(&kube, &pod_of(&kube, "payments", "api"));
        assert!(
            api.contains("destination_service=\"api.stripe.com\",destination_canonical_service=\"unknown\",destination_canonical_revision=\"latest\",destination_service_name=\"BlackHoleCluster\""),
            "{api}"
        );
        assert!(api.contains("source_workload=\"api\""), "{api}");
        let web = proxy_stats(&kube, &pod_of(&kube, "orders", "web"));
        assert!(
            web.contains("destination_service_name=\"api.partner.example.com\",destination_service_namespace=\"orders\""),
            "{web}"
        );
        assert!(!web.contains("BlackHoleCluster"), "{web}");
        // a workload that calls nothing reports nothing of egress
        let worker = proxy_stats(&kube, &pod_of(&kube, "payments", "worker"));
        assert!(!worker.contains("istio_requests_total{"), "{worker}");
        // a ServiceEntry for the host, in another namespace (exportTo defaults to all): routed
        kube.insert_unadmitted(
            "serviceentries",
            serde_json::json!({"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
                "metadata": {"name": "stripe", "namespace": "orders"},
                "spec": {"hosts": ["api.stripe.com"], "location": "MESH_EXTERNAL", "resolution": "DNS",
                         "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}]}}),
        )
        .unwrap();
        let api = proxy_stats(&kube, &pod_of(&kube, "payments", "api"));
        assert!(
            api.contains("destination_service_name=\"api.stripe.com\""),
            "{api}"
        );
        // what it dropped before stays counted, as Envoy's counters do until a restart
        assert!(api.contains("BlackHoleCluster"), "{api}");
    }

    #[test]
    fn a_service_entry_for_another_port_or_kept_to_its_namespace_does_not_help() {
        let kube = KubeState::new(&Scenario::builtin("registry-only").unwrap());
        let call = EgressCall {
            workload: "payments/api".into(),
            host: "api.stripe.com".into(),
            ..Default::default()
        };
        for (name, ns, export, port) in [
            ("other-port", "payments", "*", 443),
            ("private", "orders", ".", 80),
        ] {
            kube.insert_unadmitted(
                "serviceentries",
                serde_json::json!({"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {"hosts": ["api.stripe.com"], "exportTo": [export],
                             "ports": [{"number": port, "name": "p", "protocol": "HTTP"}]}}),
            )
            .unwrap();
        }
        assert_eq!(
            route(&kube, "payments", "asm-1-27", &call),
            Route::BlackHole
        );
        // … but the namespace that keeps it sees it
        assert_eq!(
            route(&kube, "orders", "asm-1-27", &call),
            Route::ServiceEntry {
                namespace: "orders".into()
            }
        );
    }

    #[test]
    fn allow_any_passes_unknown_hosts_through() {
        let mut s = Scenario::builtin("registry-only").unwrap();
        s.kube.shared_mesh_config = Some("accessLogFile: /dev/stdout\n".into());
        let kube = KubeState::new(&s);
        assert!(!registry_only(&kube, "asm-1-27"));
        let api = proxy_stats(&kube, &pod_of(&kube, "payments", "api"));
        assert!(
            api.contains("destination_service_name=\"PassthroughCluster\""),
            "{api}"
        );
        assert!(api.contains("response_code=\"200\""), "{api}");
    }

    #[test]
    fn service_entry_hosts_match_exactly_or_by_wildcard() {
        assert!(host_matches("api.stripe.com", "api.stripe.com"));
        assert!(host_matches("*.stripe.com", "api.stripe.com"));
        assert!(!host_matches("*.stripe.com", "stripe.com"));
        assert!(!host_matches("api.stripe.com", "files.stripe.com"));
    }
}
