//! Checks of the control plane's surroundings: the shared MeshConfig, proxy sync, sidecar
//! restarts, orphaned gateway Leases, and the installed revision's support window.

use std::collections::{BTreeMap, BTreeSet};

use super::observe::Observed;
use super::{kubectl_restart, pod_name};
use crate::contract::doctor::Finding;
use crate::istio::meshconfig::rejected_fields;
use crate::istio::{ISTIO_NAMESPACE, PROXY_CONTAINER, Revision, XdsStatus, orphaned_lease_names};
use crate::k8s::{Owner, owner_of};

const SHARED_PREFIX: &str = "istio-shared-configmap-";

/// `istio-shared-configmap-<rev>`: missing for an installed revision while another has one,
/// named for a revision that is not installed, or holding fields the add-on rejects.
pub fn shared_configmap(o: &Observed) -> Vec<Finding> {
    let shared: BTreeMap<String, &k8s_openapi::api::core::v1::ConfigMap> = o
        .configmaps
        .iter()
        .filter_map(|cm| {
            let rev = cm.metadata.name.as_deref()?.strip_prefix(SHARED_PREFIX)?;
            Some((rev.to_string(), cm))
        })
        .collect();
    let mut out = Vec::new();
    let with: Vec<&String> = o
        .installed
        .iter()
        .filter(|r| shared.contains_key(*r))
        .collect();
    let stray: Vec<&String> = shared.keys().filter(|r| !o.installed.contains(r)).collect();
    for rev in o.installed.iter().filter(|r| !shared.contains_key(*r)) {
        let Some(from) = with
            .first()
            .map(|r| r.as_str())
            .or(stray.first().map(|r| r.as_str()))
        else {
            continue; // no custom MeshConfig anywhere: nothing missing
        };
        let name = format!("{SHARED_PREFIX}{rev}");
        out.push(Finding::broken(
            format!(
                "{name} is missing: istiod-{rev} runs without the custom MeshConfig that {SHARED_PREFIX}{from} holds (the add-on reads only the ConfigMap named for its revision)"
            ),
            vec![format!("{ISTIO_NAMESPACE}/{name}")],
            format!(
                "kubectl get cm {SHARED_PREFIX}{from} -n {ISTIO_NAMESPACE} -o yaml | sed 's/name: {SHARED_PREFIX}{from}/name: {name}/' | kubectl create -f -"
            ),
        ));
    }
    for rev in &stray {
        out.push(Finding::warning(
            format!(
                "{SHARED_PREFIX}{rev} is named for {rev}, which is not installed ({}): nothing reads it",
                o.installed.join(", ")
            ),
            vec![format!("{ISTIO_NAMESPACE}/{SHARED_PREFIX}{rev}")],
            format!("kubectl delete cm {SHARED_PREFIX}{rev} -n {ISTIO_NAMESPACE} (after copying any setting you still need to the installed revision's)"),
        ));
    }
    for (rev, cm) in &shared {
        let mesh = cm
            .data
            .as_ref()
            .and_then(|d| d.get("mesh"))
            .map(String::as_str)
            .unwrap_or("");
        let rejected = rejected_fields(mesh);
        if !rejected.is_empty() {
            out.push(Finding::broken(
                format!(
                    "{SHARED_PREFIX}{rev} holds what the add-on rejects: {}; the add-on's admission refuses such a ConfigMap, and one that got in is not applied",
                    rejected.join(", ")
                ),
                vec![format!("{ISTIO_NAMESPACE}/{SHARED_PREFIX}{rev}")],
                format!(
                    "kubectl edit cm {SHARED_PREFIX}{rev} -n {ISTIO_NAMESPACE}: remove {} from data.mesh (allowed fields: AKS docs, istio-meshconfig)",
                    rejected.join(", ")
                ),
            ));
        }
    }
    out
}

/// Proxies that are not SYNCED for CDS, LDS, EDS or RDS, per istiod, with the pods named.
pub fn proxy_sync(o: &Observed) -> Vec<Finding> {
    let mut out = Vec::new();
    for (rev, rows) in &o.proxies {
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                out.push(Finding::warning(
                    format!("cannot read the proxy status from istiod-{rev}: {e}"),
                    vec![format!("{ISTIO_NAMESPACE}/istiod-{rev}")],
                    format!(
                        "kubectl get pods -n {ISTIO_NAMESPACE} -l app=istiod,istio.io/rev={rev}"
                    ),
                ));
                continue;
            }
        };
        let mut by_istiod: BTreeMap<&str, Vec<&crate::istio::ProxyStatus>> = BTreeMap::new();
        for r in rows.iter().filter(|r| !r.is_synced()) {
            by_istiod.entry(&r.istiod).or_default().push(r);
        }
        for (istiod, bad) in by_istiod {
            let stale = bad.iter().any(|r| {
                [&r.cds, &r.lds, &r.eds, &r.rds]
                    .iter()
                    .any(|s| !matches!(s, XdsStatus::Synced | XdsStatus::NotSent))
            });
            let what: Vec<String> = bad
                .iter()
                .map(|r| format!("{} ({})", r.proxy, r.unsynced().join(", ")))
                .collect();
            let message = format!(
                "{} proxy(ies) of istiod {istiod} ({rev}) are not SYNCED: {}",
                bad.len(),
                crate::steps::first_few(what.iter(), 5, "proxies")
            );
            let objects = bad
                .iter()
                .map(|r| format!("{}/{}", r.namespace, r.pod))
                .collect();
            let fix = format!(
                "asm-canary proxy-status --revision {rev}; if they stay so, kubectl logs -n {ISTIO_NAMESPACE} {istiod} and restart the stuck pods (kubectl delete pod <pod> -n <namespace>)"
            );
            out.push(if stale {
                Finding::broken(message, objects, fix)
            } else {
                Finding::warning(message, objects, fix)
            });
        }
    }
    out
}

/// The restarted sidecars of one workload: pods, most restarts, last reasons.
type Restarted = (Vec<String>, i32, BTreeSet<String>);

/// Sidecars killed for memory (`OOMKilled`) or restarting, from the `istio-proxy` container
/// status (a native sidecar's is among the init containers'), one finding per workload.
pub fn sidecar_restarts(o: &Observed) -> Vec<Finding> {
    let mut by_owner: BTreeMap<(String, String), Restarted> = BTreeMap::new();
    for pod in &o.pods {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let Some(status) = pod.status.as_ref() else {
            continue;
        };
        let proxy = status
            .container_statuses
            .iter()
            .flatten()
            .chain(status.init_container_statuses.iter().flatten())
            .find(|c| c.name == PROXY_CONTAINER);
        let Some(c) = proxy.filter(|c| c.restart_count > 0) else {
            continue;
        };
        let reason = c
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .and_then(|t| t.reason.clone())
            .unwrap_or_else(|| "unknown".to_string());
        let owner = match owner_of(pod) {
            Owner::Workload(w) => kubectl_restart(&w),
            _ => format!("pod/{}", pod_name(pod)),
        };
        let entry = by_owner.entry((ns.clone(), owner)).or_default();
        entry.0.push(format!("{ns}/{}", pod_name(pod)));
        entry.1 = entry.1.max(c.restart_count);
        entry.2.insert(reason);
    }
    by_owner
        .into_iter()
        .map(|((ns, owner), (pods, restarts, reasons))| {
            let reasons: Vec<String> = reasons.into_iter().collect();
            let first = pods[0].rsplit('/').next().unwrap_or_default().to_string();
            let fix = if reasons.iter().any(|r| r == "OOMKilled") {
                format!(
                    "raise the proxy's memory limit: annotate the pod template with sidecar.istio.io/proxyMemoryLimit (e.g. 2Gi), then {}; or trim its config with a Sidecar resource in {ns}",
                    if owner.starts_with("kubectl") { owner.clone() } else { "recreate the pod".to_string() }
                )
            } else {
                format!("kubectl logs {first} -n {ns} -c {PROXY_CONTAINER} --previous")
            };
            Finding::warning(
                format!(
                    "the sidecars of {} pod(s) in {ns} restarted (up to {restarts} time(s)), last because {}",
                    pods.len(),
                    reasons.join(", ")
                ),
                pods,
                fix,
            )
        })
        .collect()
}

/// Gateway leader-election Leases of revisions no longer installed (AKS leaves them behind).
pub fn orphaned_leases(o: &Observed) -> Vec<Finding> {
    let mut out = Vec::new();
    for lease in &o.leases {
        let name = lease.metadata.name.clone().unwrap_or_default();
        let rev = ["istio-gateway-deployment-", "istio-gateway-status-leader-"]
            .iter()
            .find_map(|p| name.strip_prefix(p));
        let Some(rev) = rev.filter(|r| r.parse::<Revision>().is_ok()) else {
            continue;
        };
        if o.installed.iter().any(|i| i == rev) || !orphaned_lease_names(rev).contains(&name) {
            continue;
        }
        out.push(Finding::warning(
            format!("Lease {name} belongs to the gateways of {rev}, which is not installed (AKS leaves it behind when a revision is removed)"),
            vec![format!("{ISTIO_NAMESPACE}/{name}")],
            format!("kubectl delete lease {name} -n {ISTIO_NAMESPACE}"),
        ));
    }
    out
}

/// Proxies older than what their revision's injector injects now: AKS rolled a patch of the
/// revision (istiod, the injector and the gateways moved) and these pods were not restarted.
pub fn patch_drift(o: &Observed) -> Vec<Finding> {
    let pods: Vec<crate::k8s::PodInfo> = o
        .pods
        .iter()
        .map(crate::k8s::PodInfo::from_pod)
        .filter(|p| crate::k8s::is_application_namespace(&p.namespace))
        .collect();
    let drift = crate::k8s::patch::drifted_workloads(&pods, &o.injected);
    let mut by_revision: BTreeMap<&str, Vec<&crate::k8s::patch::DriftedWorkload>> = BTreeMap::new();
    for w in &drift.workloads {
        by_revision.entry(&w.revision).or_default().push(w);
    }
    by_revision
        .into_iter()
        .map(|(rev, ws)| {
            let injected = o.injected.get(rev).cloned().unwrap_or_default();
            Finding::warning(
                format!(
                    "{} workload(s) on {rev} run a proxy older than its injector's {injected}: {}",
                    ws.len(),
                    crate::steps::first_few(
                        ws.iter().map(|w| format!("{} ({})", w.workload, w.running)),
                        5,
                        "workloads"
                    )
                ),
                ws.iter().map(|w| w.workload.to_string()).collect(),
                "asm-canary patch-restart (restarts them in gated waves; --plan first)".to_string(),
            )
        })
        .collect()
}
