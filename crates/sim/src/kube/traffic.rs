//! Application traffic, as the sidecars would report it: `istio_requests_total` and
//! `istio_request_duration_milliseconds` (a histogram) with Istio's standard labels, in
//! Prometheus's text format, for a Prometheus to scrape (plain HTTP on loopback).
//!
//! A request model per workload drives them on the scenario's clock: every Ready, injected
//! pod serves `rps_per_pod` requests per simulated second, a share of them answered 5xx, with
//! a latency distribution; a [`TrafficFault`] makes the pods of one workload injected by some
//! revisions worse. Counters only grow (the model accumulates between scrapes), as Envoy's do.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::egress::calls::{EgressCall, Route};
use super::istio::INGRESS_NS;

/// Envoy's default histogram buckets (milliseconds), which Istio's request duration uses
/// (envoy `source/common/stats/histogram_impl.cc`, `defaultBuckets`).
pub const BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// A healthy pod's request duration, as a piecewise-linear distribution: (ms, share at or
/// below). Median 20 ms, p90 50 ms, p99 120 ms, nothing above 200 ms.
const LATENCY_CDF: [(f64, f64); 6] = [
    (0.0, 0.0),
    (5.0, 0.1),
    (20.0, 0.5),
    (50.0, 0.9),
    (120.0, 0.99),
    (200.0, 1.0),
];

/// The traffic the workloads serve.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrafficShape {
    /// Requests per simulated second each Ready, injected pod serves.
    pub rps_per_pod: f64,
    /// Share of requests a healthy pod answers with a 503.
    pub error_rate: f64,
    /// Workloads whose pods of some revisions answer worse.
    pub faults: Vec<TrafficFault>,
    /// The external hosts workloads call ([`super::egress`]).
    pub egress: Vec<EgressCall>,
}

impl Default for TrafficShape {
    fn default() -> Self {
        Self {
            rps_per_pod: 10.0,
            error_rate: 0.0,
            faults: Vec::new(),
            egress: Vec::new(),
        }
    }
}

/// A workload (`namespace/name`) whose pods injected by `revisions` (empty: by any revision
/// not installed at the start) answer `error_rate` of requests with a 503 and take
/// `latency_factor` times as long.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrafficFault {
    pub workload: String,
    pub revisions: Vec<String>,
    pub error_rate: f64,
    pub latency_factor: f64,
}

impl Default for TrafficFault {
    fn default() -> Self {
        Self {
            workload: String::new(),
            revisions: Vec::new(),
            error_rate: 0.0,
            latency_factor: 1.0,
        }
    }
}

/// The share of a healthy pod's requests at or below `ms`.
fn healthy_cdf(ms: f64) -> f64 {
    let mut prev = LATENCY_CDF[0];
    for &(x, p) in &LATENCY_CDF[1..] {
        if ms <= x {
            return prev.1 + (p - prev.1) * (ms - prev.0) / (x - prev.0);
        }
        prev = (x, p);
    }
    1.0
}

/// The mean of the healthy distribution, in ms.
fn healthy_mean() -> f64 {
    LATENCY_CDF
        .windows(2)
        .map(|w| (w[1].1 - w[0].1) * (w[0].0 + w[1].0) / 2.0)
        .sum()
}

/// What one series (a workload and a response code) has counted so far.
#[derive(Clone, Debug, Default)]
struct Acc {
    requests: f64,
    buckets: [f64; BUCKETS_MS.len()],
    sum_ms: f64,
}

impl Acc {
    fn add(&mut self, requests: f64, latency_factor: f64) {
        if requests <= 0.0 {
            return;
        }
        self.requests += requests;
        for (b, le) in self.buckets.iter_mut().zip(BUCKETS_MS) {
            *b += requests * healthy_cdf(le / latency_factor);
        }
        self.sum_ms += requests * healthy_mean() * latency_factor;
    }
}

/// The counters, advanced at every scrape by the traffic served since the last one.
pub struct Traffic {
    last: Mutex<Instant>,
    /// (namespace, workload, response code) → counts.
    series: Mutex<BTreeMap<(String, String, u16), Acc>>,
    /// (namespace, workload, call, route) → calls to external hosts.
    egress: Mutex<BTreeMap<EgressKey, f64>>,
}

/// An egress series: the calling workload's namespace and name, the call and its route.
type EgressKey = (String, String, String, u16, String, Route);

impl Default for Traffic {
    fn default() -> Self {
        Self {
            last: Mutex::new(Instant::now()),
            series: Mutex::new(BTreeMap::new()),
            egress: Mutex::new(BTreeMap::new()),
        }
    }
}

/// The workload a pod belongs to, as Istio names it: a ReplicaSet's Deployment, else its
/// controller.
pub(crate) fn workload_of(controller: &Option<(String, String)>, pod: &str) -> String {
    match controller {
        Some((kind, name)) if kind == "ReplicaSet" => name
            .rsplit_once('-')
            .map_or(name.as_str(), |(d, _)| d)
            .to_string(),
        Some((_, name)) => name.clone(),
        None => pod.to_string(),
    }
}

impl TrafficShape {
    /// The fault that applies to a pod of `workload` (`namespace/name`) injected by
    /// `revision`, if any; `initial` are the revisions installed at start.
    fn fault_for(
        &self,
        workload: &str,
        revision: &str,
        initial: &[String],
    ) -> Option<&TrafficFault> {
        self.faults.iter().find(|f| {
            f.workload == workload
                && if f.revisions.is_empty() {
                    !initial.iter().any(|r| r == revision)
                } else {
                    f.revisions.iter().any(|r| r == revision)
                }
        })
    }
}

/// A pod serving traffic: its namespace, its workload (as Istio names it, see
/// [`workload_of`]) and the revision that injected it.
pub(crate) struct Serving {
    pub namespace: String,
    pub workload: String,
    pub revision: String,
    /// Its workload's external calls and where its proxy sends them.
    pub egress: Vec<(EgressCall, Route)>,
}

impl Traffic {
    /// Adds the traffic `serving` pods served since the last call (`scale` real seconds per
    /// simulated one; `initial`: the revisions installed at start, for faults on new ones).
    fn advance(&self, serving: &[Serving], shape: &TrafficShape, initial: &[String], scale: f64) {
        let now = Instant::now();
        let simulated = {
            let mut last = self.last.lock().expect("traffic clock poisoned");
            let real = now.duration_since(*last).as_secs_f64();
            *last = now;
            real / scale
        };
        let mut series = self.series.lock().expect("traffic poisoned");
        for pod in serving {
            let key = format!("{}/{}", pod.namespace, pod.workload);
            let (error_rate, factor) = match shape.fault_for(&key, &pod.revision, initial) {
                Some(f) => (f.error_rate, f.latency_factor),
                None => (shape.error_rate, 1.0),
            };
            let requests = shape.rps_per_pod * simulated;
            for (code, share) in [(200u16, 1.0 - error_rate), (503, error_rate)] {
                let acc = series
                    .entry((pod.namespace.clone(), pod.workload.clone(), code))
                    .or_default();
                acc.add(requests * share, factor);
            }
        }
        let mut egress = self.egress.lock().expect("traffic poisoned");
        for pod in serving {
            for (call, route) in &pod.egress {
                let key = (
                    pod.namespace.clone(),
                    pod.workload.clone(),
                    call.host.clone(),
                    call.port,
                    call.protocol.clone(),
                    route.clone(),
                );
                *egress.entry(key).or_default() += call.rate * simulated;
            }
        }
    }

    /// The metrics page after adding what `serving` served since the last scrape: every
    /// series so far, in Prometheus's text format (0.0.4).
    pub(crate) fn scrape(
        &self,
        serving: &[Serving],
        shape: &TrafficShape,
        initial: &[String],
        scale: f64,
    ) -> String {
        self.advance(serving, shape, initial, scale);
        let series = self.series.lock().expect("traffic poisoned").clone();
        let mut out = String::new();
        out.push_str("# HELP istio_requests_total Total requests handled by an Istio proxy.\n# TYPE istio_requests_total counter\n");
        for ((ns, wl, code), acc) in &series {
            for reporter in ["destination", "source"] {
                let labels = labels(reporter, ns, wl, *code);
                let _ = writeln!(
                    out,
                    "istio_requests_total{{{labels}}} {}",
                    acc.requests.floor()
                );
            }
        }
        // a metric family's series stay together: the egress ones join the requests' block
        let (egress_http, egress_tcp) = self.egress_page(&shape.egress);
        out.push_str(&egress_http);
        out.push_str("# HELP istio_request_duration_milliseconds Request duration in milliseconds.\n# TYPE istio_request_duration_milliseconds histogram\n");
        for ((ns, wl, code), acc) in &series {
            for reporter in ["destination", "source"] {
                let labels = labels(reporter, ns, wl, *code);
                for (b, le) in acc.buckets.iter().zip(BUCKETS_MS) {
                    let _ = writeln!(
                        out,
                        "istio_request_duration_milliseconds_bucket{{{labels},le=\"{le}\"}} {}",
                        b.floor()
                    );
                }
                let n = acc.requests.floor();
                let _ = writeln!(
                    out,
                    "istio_request_duration_milliseconds_bucket{{{labels},le=\"+Inf\"}} {n}\nistio_request_duration_milliseconds_sum{{{labels}}} {:.3}\nistio_request_duration_milliseconds_count{{{labels}}} {n}",
                    acc.sum_ms
                );
            }
        }
        if !egress_tcp.is_empty() {
            out.push_str("# TYPE istio_tcp_connections_opened_total counter\n");
            out.push_str(&egress_tcp);
        }
        out
    }

    /// The egress series so far ([`super::egress::series`]): the HTTP ones (which belong in
    /// `istio_requests_total`'s block) and the TCP ones. A call whose pods served since the
    /// last scrape shows at least one.
    fn egress_page(&self, calls: &[EgressCall]) -> (String, String) {
        let egress = self.egress.lock().expect("traffic poisoned").clone();
        let (mut http, mut tcp) = (String::new(), String::new());
        for ((ns, wl, host, port, protocol, route), count) in &egress {
            let call = calls
                .iter()
                .find(|c| c.host == *host && c.port == *port && c.protocol == *protocol)
                .cloned()
                .unwrap_or_default();
            let line = super::egress::calls::series(ns, wl, &call, route, count.max(1.0));
            if line.starts_with("istio_requests_total{") {
                http.push_str(&line);
            } else {
                tcp.push_str(&line);
            }
        }
        (http, tcp)
    }
}

/// Istio's standard labels for requests from the external ingress gateway to `wl` in `ns`.
fn labels(reporter: &str, ns: &str, wl: &str, code: u16) -> String {
    let src = "aks-istio-ingressgateway-external";
    let src_ns = INGRESS_NS;
    format!(
        "reporter=\"{reporter}\",source_workload=\"{src}\",source_workload_namespace=\"{src_ns}\",source_principal=\"spiffe://cluster.local/ns/{src_ns}/sa/{src}\",source_app=\"{src}\",source_version=\"unknown\",source_canonical_service=\"{src}\",source_canonical_revision=\"latest\",source_cluster=\"Kubernetes\",destination_workload=\"{wl}\",destination_workload_namespace=\"{ns}\",destination_principal=\"spiffe://cluster.local/ns/{ns}/sa/default\",destination_app=\"{wl}\",destination_version=\"unknown\",destination_service=\"{wl}.{ns}.svc.cluster.local\",destination_service_name=\"{wl}\",destination_service_namespace=\"{ns}\",destination_canonical_service=\"{wl}\",destination_canonical_revision=\"latest\",destination_cluster=\"Kubernetes\",request_protocol=\"http\",response_code=\"{code}\",grpc_response_status=\"\",response_flags=\"-\",connection_security_policy=\"{}\"",
        if reporter == "destination" {
            "mutual_tls"
        } else {
            "unknown"
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_healthy_distribution_has_its_quantiles() {
        assert!((healthy_cdf(20.0) - 0.5).abs() < 1e-12);
        assert!((healthy_cdf(120.0) - 0.99).abs() < 1e-12);
        assert_eq!(healthy_cdf(1e9), 1.0);
        assert_eq!(healthy_cdf(0.0), 0.0);
        assert!((healthy_mean() - 28.5).abs() < 1e-9);
    }

    #[test]
    fn a_slow_factor_moves_the_p99_above_500ms() {
        let mut acc = Acc::default();
        acc.add(1000.0, 5.0);
        // With p99 at 600 ms, fewer than 99 % are at or below 500 ms.
        let le500 = BUCKETS_MS.iter().position(|b| *b == 500.0).unwrap();
        assert!(acc.buckets[le500] < 990.0, "{}", acc.buckets[le500]);
        let mut acc = Acc::default();
        acc.add(1000.0, 1.0);
        assert!(acc.buckets[le500] >= 999.0);
    }

    #[test]
    fn workloads_are_named_as_istio_names_them() {
        let rs = Some(("ReplicaSet".to_string(), "api-7c9f8".to_string()));
        assert_eq!(workload_of(&rs, "api-7c9f8-abcde"), "api");
        let sts = Some(("StatefulSet".to_string(), "db".to_string()));
        assert_eq!(workload_of(&sts, "db-0"), "db");
    }
}
