//! What egress is made of, apart from the cluster: a workload's calls to an external host, the
//! route a proxy gives one, the series Istio's stats filter reports for it, and each proxy's
//! counters. [`super`] decides the routes from the cluster's ServiceEntries and mesh config.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// A workload's calls to one external host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EgressCall {
    /// `namespace/name` of the calling workload (a Deployment's name for its pods).
    pub workload: String,
    /// The host it calls (`api.stripe.com`).
    pub host: String,
    pub port: u16,
    /// `HTTP` (the proxy sees the Host header) or `TLS` (it sees a connection only).
    pub protocol: String,
    /// Calls per simulated second, per pod.
    pub rate: f64,
}

impl Default for EgressCall {
    fn default() -> Self {
        Self {
            workload: String::new(),
            host: String::new(),
            port: 80,
            protocol: "HTTP".into(),
            rate: 1.0,
        }
    }
}

impl EgressCall {
    pub(super) fn is_http(&self) -> bool {
        self.protocol.eq_ignore_ascii_case("HTTP")
    }

    /// The Host header: the host, with the port unless it is HTTP's 80.
    pub(super) fn authority(&self) -> String {
        if self.port == 80 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Where a proxy sends a call.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Route {
    /// No ServiceEntry, `REGISTRY_ONLY`: dropped.
    BlackHole,
    /// No ServiceEntry, `ALLOW_ANY`: sent on as it came.
    Passthrough,
    /// A ServiceEntry in this namespace lists the host.
    ServiceEntry { namespace: String },
}

/// One client-side series of `count` calls from `wl` in `ns`, as Istio's stats filter labels
/// it.
pub(crate) fn series(ns: &str, wl: &str, call: &EgressCall, route: &Route, count: f64) -> String {
    let (service, service_name, service_ns) = match route {
        Route::BlackHole | Route::Passthrough => {
            let name = if *route == Route::BlackHole {
                "BlackHoleCluster"
            } else {
                "PassthroughCluster"
            };
            let host = if call.is_http() {
                call.authority()
            } else {
                "unknown".to_string()
            };
            (host, name.to_string(), "unknown".to_string())
        }
        Route::ServiceEntry { namespace } => {
            (call.host.clone(), call.host.clone(), namespace.clone())
        }
    };
    let src = format!(
        "reporter=\"source\",source_workload=\"{wl}\",source_canonical_service=\"{wl}\",source_canonical_revision=\"latest\",source_workload_namespace=\"{ns}\",source_principal=\"spiffe://cluster.local/ns/{ns}/sa/default\",source_app=\"{wl}\",source_version=\"unknown\",source_cluster=\"Kubernetes\""
    );
    let dst = format!(
        "destination_workload=\"unknown\",destination_workload_namespace=\"unknown\",destination_principal=\"unknown\",destination_app=\"unknown\",destination_version=\"unknown\",destination_service=\"{service}\",destination_canonical_service=\"unknown\",destination_canonical_revision=\"latest\",destination_service_name=\"{service_name}\",destination_service_namespace=\"{service_ns}\",destination_cluster=\"unknown\""
    );
    let blackholed = *route == Route::BlackHole;
    if call.is_http() {
        let code = if blackholed { 502 } else { 200 };
        format!(
            "istio_requests_total{{{src},{dst},request_protocol=\"http\",response_code=\"{code}\",grpc_response_status=\"\",response_flags=\"-\",connection_security_policy=\"unknown\"}} {}\n",
            count.floor()
        )
    } else {
        // no endpoint behind BlackHoleCluster: no healthy upstream
        let flags = if blackholed { "UH" } else { "-" };
        format!(
            "istio_tcp_connections_opened_total{{{src},{dst},request_protocol=\"tcp\",response_flags=\"{flags}\",connection_security_policy=\"unknown\"}} {}\n",
            count.floor()
        )
    }
}

/// Per proxy (pod uid) and call (host, port, protocol): the calls counted per route, and
/// when they were last counted. A route a call no longer takes keeps its count, as Envoy's
/// counters do until the proxy restarts.
#[derive(Default)]
pub(crate) struct ProxyCounters {
    pub(super) counted: Mutex<HashMap<CallKey, Counted>>,
}

/// A call's count per route, and when it was last counted.
pub(super) type Counted = (BTreeMap<Route, f64>, Instant);

/// A proxy's call: pod uid, host, port, protocol.
pub(super) type CallKey = (String, String, u16, String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blackholed_http_names_the_host_and_tls_does_not() {
        let http = EgressCall {
            workload: "payments/api".into(),
            host: "api.stripe.com".into(),
            ..Default::default()
        };
        let s = series("payments", "api", &http, &Route::BlackHole, 3.7);
        assert!(
            s.starts_with("istio_requests_total{reporter=\"source\""),
            "{s}"
        );
        assert!(s.contains("destination_service=\"api.stripe.com\""), "{s}");
        assert!(
            s.contains("destination_service_name=\"BlackHoleCluster\""),
            "{s}"
        );
        assert!(s.contains("response_code=\"502\""), "{s}");
        assert!(s.trim_end().ends_with(" 3"), "{s}");
        let tls = EgressCall {
            port: 443,
            protocol: "TLS".into(),
            ..http.clone()
        };
        let s = series("payments", "api", &tls, &Route::BlackHole, 1.0);
        assert!(s.starts_with("istio_tcp_connections_opened_total{"), "{s}");
        assert!(s.contains("destination_service=\"unknown\""), "{s}");
        assert!(s.contains("response_flags=\"UH\""), "{s}");
        let s = series(
            "payments",
            "api",
            &http,
            &Route::ServiceEntry {
                namespace: "payments".into(),
            },
            1.0,
        );
        assert!(
            s.contains("destination_service_name=\"api.stripe.com\""),
            "{s}"
        );
        assert!(s.contains("response_code=\"200\""), "{s}");
        let odd_port = EgressCall { port: 8080, ..http };
        let s = series("payments", "api", &odd_port, &Route::Passthrough, 1.0);
        assert!(
            s.contains("destination_service=\"api.stripe.com:8080\""),
            "{s}"
        );
        assert!(
            s.contains("destination_service_name=\"PassthroughCluster\""),
            "{s}"
        );
    }
}
