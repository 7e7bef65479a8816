//! Checks of mesh policy and traffic: policy in the wrong root namespace, DestinationRules
//! that turn mTLS off toward STRICT workloads, and the ingress gateways.

use std::collections::BTreeMap;

use super::is_ready;
use super::observe::{IstioKind, IstioObject, Observed};
use crate::contract::doctor::Finding;
use crate::istio::{INGRESS_NAMESPACE, ISTIO_NAMESPACE};

/// Upstream Istio's root namespace, which the add-on does not read.
const UPSTREAM_ROOT: &str = "istio-system";

/// PeerAuthentication, AuthorizationPolicy and Sidecar objects in `istio-system`: upstream's
/// root namespace, which nothing reads on the add-on (its root is `aks-istio-system`).
pub fn root_namespace(o: &Observed) -> Vec<Finding> {
    o.istio
        .iter()
        .filter(|p| p.namespace == UPSTREAM_ROOT)
        .filter(|p| {
            matches!(
                p.kind,
                IstioKind::PeerAuthentication | IstioKind::AuthorizationPolicy | IstioKind::Sidecar
            )
        })
        .map(|p| {
            let kind = p.kind.kubectl_name();
            let name = &p.name;
            Finding::broken(
                format!(
                    "{} {UPSTREAM_ROOT}/{name} is in upstream Istio's root namespace; the add-on's is {ISTIO_NAMESPACE}, so nothing applies it",
                    p.kind.kind()
                ),
                vec![format!("{UPSTREAM_ROOT}/{name}")],
                format!(
                    "kubectl get {kind} {name} -n {UPSTREAM_ROOT} -o yaml | sed 's/namespace: {UPSTREAM_ROOT}$/namespace: {ISTIO_NAMESPACE}/' | kubectl apply -f - && kubectl delete {kind} {name} -n {UPSTREAM_ROOT}"
                ),
            )
        })
        .collect()
}

/// A PeerAuthentication's mode when it applies to a whole namespace (no selector).
fn namespace_mode(p: &IstioObject) -> Option<&str> {
    let selected = p.spec["selector"]["matchLabels"]
        .as_object()
        .is_some_and(|m| !m.is_empty());
    if p.kind != IstioKind::PeerAuthentication || selected {
        return None;
    }
    p.spec["mtls"]["mode"].as_str().filter(|m| *m != "UNSET")
}

/// The namespaces whose workloads demand mTLS: STRICT mesh-wide (in the add-on's root
/// namespace) unless the namespace says otherwise, or STRICT for the namespace itself.
fn strict(o: &Observed, namespace: &str) -> bool {
    let mode_of = |ns: &str| {
        o.istio
            .iter()
            .filter(|p| p.namespace == ns)
            .find_map(namespace_mode)
    };
    match mode_of(namespace) {
        Some(mode) => mode == "STRICT",
        None => mode_of(ISTIO_NAMESPACE) == Some("STRICT"),
    }
}

/// The namespace of a DestinationRule's `host`: `svc.ns.svc.cluster.local` (or `*.ns.…`), or a
/// short name (no dot), which Istio reads in the rule's own namespace; `None` for anything
/// else (hosts outside the cluster).
fn host_namespace(host: &str, own: &str) -> Option<String> {
    if !host.contains('.') {
        return (host != "*" && !host.is_empty()).then(|| own.to_string());
    }
    let parts: Vec<&str> = host.split('.').collect();
    match parts.as_slice() {
        [_, ns, "svc", "cluster", "local"] => Some(ns.to_string()),
        _ => None,
    }
}

/// DestinationRules with `tls.mode: DISABLE` (for all ports or some) toward a STRICT namespace:
/// the client's sidecar sends plain text, the server's refuses it.
pub fn mtls_conflicts(o: &Observed) -> Vec<Finding> {
    let mut out = Vec::new();
    for dr in o
        .istio
        .iter()
        .filter(|p| p.kind == IstioKind::DestinationRule)
    {
        let policy = &dr.spec["trafficPolicy"];
        let disabled = policy["tls"]["mode"] == "DISABLE"
            || policy["portLevelSettings"]
                .as_array()
                .is_some_and(|a| a.iter().any(|p| p["tls"]["mode"] == "DISABLE"));
        let host = dr.spec["host"].as_str().unwrap_or_default();
        let Some(target) = host_namespace(host, &dr.namespace) else {
            continue;
        };
        if !disabled || !strict(o, &target) {
            continue;
        }
        let (ns, name) = (&dr.namespace, &dr.name);
        out.push(Finding::broken(
            format!(
                "DestinationRule {ns}/{name} sets tls.mode DISABLE toward {host}, whose namespace {target} requires STRICT mTLS: its calls are refused (connection reset, 503)"
            ),
            vec![format!("{ns}/{name}")],
            format!(
                "kubectl patch destinationrule {name} -n {ns} --type merge -p '{{\"spec\":{{\"trafficPolicy\":{{\"tls\":{{\"mode\":\"ISTIO_MUTUAL\"}}}}}}}}' (and the same in any portLevelSettings)"
            ),
        ));
    }
    out
}

/// Ingress gateway Services (type LoadBalancer in `aks-istio-ingress`) with no external
/// address, or no ready pod behind them.
pub fn ingress_gateways(o: &Observed) -> Vec<Finding> {
    let mut out = Vec::new();
    let gateways = o.services.iter().filter(|s| {
        s.metadata.namespace.as_deref() == Some(INGRESS_NAMESPACE)
            && s.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
    });
    for svc in gateways {
        let name = svc.metadata.name.clone().unwrap_or_default();
        let object = vec![format!("{INGRESS_NAMESPACE}/{name}")];
        let addressed = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .is_some_and(|i| i.iter().any(|a| a.ip.is_some() || a.hostname.is_some()));
        if !addressed {
            out.push(Finding::broken(
                format!("ingress gateway Service {INGRESS_NAMESPACE}/{name} has no external IP: nothing outside reaches it"),
                object.clone(),
                format!("kubectl describe svc {name} -n {INGRESS_NAMESPACE} (its events give the load balancer's error: quota, subnet, permissions)"),
            ));
        }
        let selector: BTreeMap<String, String> = svc
            .spec
            .as_ref()
            .and_then(|s| s.selector.clone())
            .unwrap_or_default();
        let ready = o
            .pods
            .iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(INGRESS_NAMESPACE))
            .filter(|p| {
                let labels = p.metadata.labels.clone().unwrap_or_default();
                !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
            .filter(|p| is_ready(p))
            .count();
        if ready == 0 {
            let sel: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push(Finding::broken(
                format!("ingress gateway Service {INGRESS_NAMESPACE}/{name} has no ready pod behind it: its traffic is dropped"),
                object,
                format!("kubectl get pods -n {INGRESS_NAMESPACE} -l {} and kubectl describe them", sel.join(",")),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_resolve_to_their_namespace() {
        assert_eq!(host_namespace("api", "shop").as_deref(), Some("shop"));
        assert_eq!(host_namespace("api.pay", "shop"), None);
        assert_eq!(
            host_namespace("api.pay.svc.cluster.local", "shop").as_deref(),
            Some("pay")
        );
        assert_eq!(
            host_namespace("*.pay.svc.cluster.local", "shop").as_deref(),
            Some("pay")
        );
        assert_eq!(host_namespace("example.com", "shop"), None);
        assert_eq!(host_namespace("www.example.com", "shop"), None);
        assert_eq!(host_namespace("*", "shop"), None);
    }
}
