//! Egress under `REGISTRY_ONLY`: hosts the workloads call that no `ServiceEntry` lists, which
//! their proxies send to `BlackHoleCluster` (dropped: HTTP answered 502, TLS reset).
//!
//! Read from the proxies' own stats (`/stats/prometheus` on port 15090, through the API
//! server's port-forward; see [`super::observe`]), as Istio's stats filter reports them on the
//! client side (`reporter="source"`): `istio_requests_total` with
//! `destination_service_name="BlackHoleCluster"` names the host in `destination_service` (the
//! Host header); `istio_tcp_connections_opened_total` (TLS, TCP) has no Host header, so
//! `destination_service="unknown"` there and the host is only in the proxy's access log.

use std::collections::BTreeMap;

use super::observe::{IstioKind, Observed, ProxyStats};
use crate::contract::doctor::{Finding, Severity};
use crate::istio::ISTIO_NAMESPACE;

const BLACKHOLE: &str = "BlackHoleCluster";
const SHARED_PREFIX: &str = "istio-shared-configmap-";

/// One series of Prometheus's text format: name, labels, value. `None` for comments and
/// lines it cannot read.
fn parse_series(line: &str) -> Option<(&str, BTreeMap<String, String>, f64)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, rest) = match line.find('{') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => {
            let (name, value) = line.split_once(' ')?;
            return Some((name, BTreeMap::new(), value.trim().parse().ok()?));
        }
    };
    let mut labels = BTreeMap::new();
    let mut chars = rest.char_indices().peekable();
    loop {
        while chars.next_if(|(_, c)| *c == ',' || *c == ' ').is_some() {}
        let (start, c) = chars.next()?;
        if c == '}' {
            let value = rest[start + 1..].split_whitespace().next()?;
            return Some((name, labels, value.parse().ok()?));
        }
        let eq = rest[start..].find("=\"")? + start;
        let key = rest[start..eq].to_string();
        while chars.next_if(|(i, _)| *i <= eq + 1).is_some() {}
        let mut value = String::new();
        loop {
            match chars.next()? {
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, '"') => break,
                (_, other) => value.push(other),
            }
        }
        labels.insert(key, value);
    }
}

/// The blackholed traffic in one proxy's stats: per host (`None`: a TLS or TCP connection,
/// whose host the stats do not carry), how many requests or connections.
fn blackholed(stats: &str) -> BTreeMap<Option<String>, f64> {
    let mut out: BTreeMap<Option<String>, f64> = BTreeMap::new();
    for (name, labels, value) in stats.lines().filter_map(parse_series) {
        let source = labels.get("reporter").map(String::as_str) == Some("source");
        let hole = labels.get("destination_service_name").map(String::as_str) == Some(BLACKHOLE);
        if !source || !hole || value <= 0.0 {
            continue;
        }
        let host = match name {
            "istio_requests_total" => labels
                .get("destination_service")
                .filter(|h| *h != "unknown" && !h.is_empty())
                .cloned(),
            "istio_tcp_connections_opened_total" => None,
            _ => continue,
        };
        *out.entry(host).or_default() += value;
    }
    out
}

/// A host from a Host header (`api.stripe.com`, `files.example.com:8443`): name and port.
fn host_port(host: &str) -> (&str, u16) {
    match host.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h, p.parse().unwrap_or(80)),
        _ => (host, 80),
    }
}

/// The ServiceEntry (`namespace/name`) visible from `from` that lists `host` and its port now:
/// the proxy's counter still holds what it dropped before the entry existed (Envoy's
/// counters count since the proxy started).
fn listed_by(o: &Observed, from: &str, host: &str) -> Option<String> {
    let (name, port) = host_port(host);
    o.istio
        .iter()
        .filter(|se| se.kind == IstioKind::ServiceEntry)
        .find(|se| {
            let spec = &se.spec;
            let visible = spec["exportTo"].as_array().is_none_or(|to| {
                to.iter()
                    .any(|t| t == "*" || (t == "." && se.namespace == from) || t == from)
            });
            let listed = spec["hosts"].as_array().is_some_and(|hs| {
                hs.iter()
                    .filter_map(|h| h.as_str())
                    .any(|h| match h.strip_prefix('*') {
                        Some(suffix) => name.ends_with(suffix) && name.len() > suffix.len(),
                        None => h.eq_ignore_ascii_case(name),
                    })
            });
            let port_ok = spec["ports"].as_array().is_none_or(|ps| {
                ps.is_empty() || ps.iter().any(|p| p["number"] == u64::from(port))
            });
            visible && listed && port_ok
        })
        .map(|se| format!("{}/{}", se.namespace, se.name))
}

/// A ServiceEntry for `host` (`api.stripe.com`, or `host:port` from a Host header) in
/// `namespace`, as `kubectl apply` takes it.
fn service_entry(namespace: &str, host: &str, tls: bool) -> String {
    let (name, port) = match host_port(host) {
        (h, 80) if tls && h == host => (h, 443),
        other => other,
    };
    let (port_name, protocol) = if tls {
        ("tls", "TLS")
    } else {
        ("http", "HTTP")
    };
    let object = name.trim_start_matches("*.").replace(['.', '*'], "-");
    format!(
        "kubectl apply -f - <<'EOF'\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: {object}\n  namespace: {namespace}\nspec:\n  hosts:\n  - {name}\n  location: MESH_EXTERNAL\n  resolution: DNS\n  ports:\n  - number: {port}\n    name: {port_name}-{port}\n    protocol: {protocol}\nEOF"
    )
}

/// Workloads whose proxies send traffic to `BlackHoleCluster` under `REGISTRY_ONLY`, each
/// named with its hosts and the ServiceEntry that lets them out.
pub fn registry_only(o: &Observed) -> Vec<Finding> {
    let Some(facts) = &o.egress else {
        return Vec::new(); // ALLOW_ANY: the all-clear says so
    };
    let revs = facts.registry_only.join(", ");
    let mut out = Vec::new();
    let mut read = 0;
    let mut failed = Vec::new();
    let mut fixed = Vec::new();
    for p in &facts.proxies {
        let stats = match &p.stats {
            Ok(s) => s,
            Err(e) => {
                failed.push(format!("{}/{}: {e}", p.namespace, p.pod));
                continue;
            }
        };
        read += 1;
        let mut holes = blackholed(stats);
        holes.retain(|host, _| {
            let Some(h) = host else { return true };
            let Some(se) = listed_by(o, &p.namespace, h) else {
                return true;
            };
            fixed.push(format!(
                "{}/{} → {h} (ServiceEntry {se})",
                p.namespace, p.workload
            ));
            false
        });
        if !holes.is_empty() {
            out.push(finding(p, &holes, &revs));
        }
    }
    if !fixed.is_empty() {
        out.push(Finding::ok(format!(
            "dropped before a ServiceEntry listed the host (the proxies' counters count since they started; a restart resets them): {}",
            crate::steps::first_few(fixed.iter(), 5, "hosts")
        )));
    }
    if read > 0 && !out.iter().any(|f| f.severity != Severity::Ok) {
        out.push(Finding::ok(format!(
            "outboundTrafficPolicy is REGISTRY_ONLY ({revs}): no proxy of the {read} workload(s) read sends traffic to {BLACKHOLE}"
        )));
    }
    if !failed.is_empty() {
        out.push(Finding::ok(format!(
            "outboundTrafficPolicy is REGISTRY_ONLY ({revs}): the stats of {} proxy(ies) could not be read, so their egress was not checked: {}",
            failed.len(),
            crate::steps::first_few(failed.iter(), 3, "proxies")
        )));
    }
    if facts.proxies.is_empty() {
        out.push(Finding::ok(format!(
            "outboundTrafficPolicy is REGISTRY_ONLY ({revs}): no running meshed workload to read proxy stats from; not checked"
        )));
    }
    if facts.unread > 0 {
        out.push(Finding::ok(format!(
            "the proxies of {} more workload(s) were not read (the doctor reads at most {} per run)",
            facts.unread,
            facts.proxies.len()
        )));
    }
    out
}

fn finding(p: &ProxyStats, holes: &BTreeMap<Option<String>, f64>, revs: &str) -> Finding {
    let (ns, wl) = (&p.namespace, &p.workload);
    let what: Vec<String> = holes
        .iter()
        .map(|(host, n)| match host {
            Some(h) => format!("{h} ({n} request(s) answered 502)"),
            None => format!("{n} TLS/TCP connection(s) to a host the stats do not name"),
        })
        .collect();
    let mut fixes: Vec<String> = holes
        .keys()
        .flatten()
        .map(|h| service_entry(ns, h, false))
        .collect();
    if holes.contains_key(&None) {
        fixes.push(format!(
            "find the TLS host in the proxy's access log (accessLogFile in {SHARED_PREFIX}<rev> in {ISTIO_NAMESPACE}): kubectl logs {} -n {ns} -c istio-proxy | grep {BLACKHOLE}; then {}",
            p.pod,
            service_entry(ns, "<host>", true)
        ));
    }
    Finding::broken(
        format!(
            "{ns}/{wl} calls hosts outside the mesh's registry, and REGISTRY_ONLY ({revs}) drops them ({BLACKHOLE}): {}",
            what.join(", ")
        ),
        vec![format!("{ns}/{wl}")],
        fixes.join("\n"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::observe::EgressFacts;

    #[test]
    fn series_are_read_with_their_labels() {
        let (name, labels, v) = parse_series(
            r#"istio_requests_total{reporter="source",destination_service="a\"b",x="1,2"} 7"#,
        )
        .unwrap();
        assert_eq!(name, "istio_requests_total");
        assert_eq!(labels["reporter"], "source");
        assert_eq!(labels["destination_service"], "a\"b");
        assert_eq!(labels["x"], "1,2");
        assert_eq!(v, 7.0);
        assert_eq!(parse_series("envoy_server_live 1").unwrap().2, 1.0);
        assert!(parse_series("# TYPE x counter").is_none());
        assert!(parse_series("x{a=\"1\"").is_none());
    }

    #[test]
    fn blackholed_http_names_its_host_and_tls_does_not() {
        let stats = concat!(
            "istio_requests_total{reporter=\"source\",destination_service=\"api.stripe.com\",destination_service_name=\"BlackHoleCluster\",response_code=\"502\"} 12\n",
            "istio_requests_total{reporter=\"source\",destination_service=\"partner.example.com\",destination_service_name=\"partner.example.com\",response_code=\"200\"} 40\n",
            "istio_requests_total{reporter=\"destination\",destination_service=\"x\",destination_service_name=\"BlackHoleCluster\"} 3\n",
            "istio_tcp_connections_opened_total{reporter=\"source\",destination_service=\"unknown\",destination_service_name=\"BlackHoleCluster\",response_flags=\"UH\"} 2\n",
        );
        let holes = blackholed(stats);
        assert_eq!(holes.len(), 2, "{holes:?}");
        assert_eq!(holes[&Some("api.stripe.com".to_string())], 12.0);
        assert_eq!(holes[&None], 2.0);
    }

    #[test]
    fn unreadable_stats_are_said_plainly_without_a_warning() {
        let o = Observed {
            egress: Some(EgressFacts {
                registry_only: vec!["asm-1-27".into()],
                proxies: vec![ProxyStats {
                    namespace: "payments".into(),
                    pod: "api-1".into(),
                    workload: "api".into(),
                    stats: Err("no answer within 5s".into()),
                }],
                unread: 3,
            }),
            ..Default::default()
        };
        let f = registry_only(&o);
        assert!(f.iter().all(|f| f.severity == Severity::Ok), "{f:?}");
        assert!(
            f.iter().any(|f| f.message.contains("could not be read")
                && f.message.contains("payments/api-1: no answer within 5s")),
            "{f:?}"
        );
        assert!(
            f.iter().any(|f| f.message.contains("3 more workload(s)")),
            "{f:?}"
        );
        // ALLOW_ANY: nothing read, nothing said (the all-clear speaks)
        assert!(registry_only(&Observed::default()).is_empty());
    }

    #[test]
    fn the_service_entry_fix_has_the_host_and_port() {
        let fix = service_entry("payments", "api.stripe.com", false);
        for line in [
            "  namespace: payments",
            "  - api.stripe.com",
            "  location: MESH_EXTERNAL",
            "  resolution: DNS",
            "  - number: 80",
            "    protocol: HTTP",
        ] {
            assert!(fix.lines().any(|l| l == line), "{line:?} in {fix}");
        }
        let fix = service_entry("payments", "files.example.com:8443", false);
        assert!(fix.contains("  - number: 8443\n"), "{fix}");
        assert!(fix.contains("  - files.example.com\n"), "{fix}");
        assert!(
            service_entry("p", "<host>", true)
                .contains("  - number: 443\n    name: tls-443\n    protocol: TLS")
        );
    }
}
