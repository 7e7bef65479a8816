//! Patch drift: sidecars whose proxy image is older than what their revision's injector
//! injects now. AKS rolls patch versions of istiod and the gateways inside a revision by
//! itself (1.27.3 → 1.27.4); a sidecar keeps the image it was injected with until its pod is
//! recreated.
//!
//! ```text
//!  istio-sidecar-injector-<rev> ConfigMap (values: hub, tag, proxy.image)
//!     └─ else the istiod-<rev> Deployment's image tag ──▶ injected image per revision
//!  pods (istio-proxy image, injecting revision) ──▶ drifted_workloads (pure) ──▶ PatchDrift
//! ```
//!
//! [`find_patch_drift`] reads; [`drifted_workloads`] decides, tested with fabricated pods.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};
use serde::Serialize;

use super::{K8sError, Owner, PodInfo, WorkloadRef};
use crate::istio::{ISTIO_NAMESPACE, istiod_name};

/// One workload whose sidecars run an older proxy than its revision injects now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DriftedWorkload {
    pub workload: WorkloadRef,
    /// The injecting revision (`asm-1-27`).
    pub revision: String,
    /// The oldest proxy image among its pods.
    pub running: String,
    /// What the revision's injector injects now.
    pub injected: String,
    /// Its pods with an older proxy (`namespace/name`).
    pub pods: Vec<String>,
}

/// What [`find_patch_drift`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PatchDrift {
    /// Per installed revision, the proxy image its injector injects now.
    pub injected: BTreeMap<String, String>,
    /// Workloads to restart, sorted.
    pub workloads: Vec<DriftedWorkload>,
    /// Drifted pods a restart cannot renew (bare pods, Job pods, …), `namespace/name (why)`.
    pub unmovable: Vec<String>,
}

/// An Istio version read from an image tag: `…/proxyv2:1.27.3-distroless` → (1, 27, 3).
pub fn image_version(image: &str) -> Option<(u32, u32, u32)> {
    let tag = image.rsplit_once(':')?.1;
    if tag.contains('/') {
        return None;
    }
    let core = tag.split(['-', '_']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u32>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

/// Whether a sidecar running `running` is behind an injector injecting `injected`: an older
/// version; when either version cannot be read, any other image.
pub fn is_older(running: &str, injected: &str) -> bool {
    match (image_version(running), image_version(injected)) {
        (Some(r), Some(i)) => r < i,
        _ => running != injected,
    }
}

/// The proxy image an injector's `values` (the `istio-sidecar-injector-<rev>` ConfigMap's
/// `data.values`, JSON) renders: `{hub}/{proxy.image}:{tag}`, as Istio's injection template does.
pub fn injector_image(values: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(values).ok()?;
    let global = &v["global"];
    let hub = global["hub"].as_str()?;
    let image = global["proxy"]["image"].as_str().unwrap_or("proxyv2");
    if image.contains(':') || image.contains('/') {
        // a full image name rather than a name under the hub
        return Some(image.to_string());
    }
    let tag = match &global["tag"] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return None,
    };
    Some(format!("{hub}/{image}:{tag}"))
}

/// The proxy image of istiod's own image: `…/pilot:1.27.4-distroless` → `…/proxyv2:1.27.4-distroless`.
pub fn proxy_image_of_istiod(istiod_image: &str) -> Option<String> {
    let (repo, tag) = istiod_image.rsplit_once(':')?;
    let hub = repo.rsplit_once('/').map(|(h, _)| h)?;
    Some(format!("{hub}/proxyv2:{tag}"))
}

/// The drift among `pods`, given what each revision injects now (`injected`). Pods of a
/// revision not in `injected`, terminating pods and pods without a sidecar are left out.
pub fn drifted_workloads(pods: &[PodInfo], injected: &BTreeMap<String, String>) -> PatchDrift {
    let mut by_workload: BTreeMap<WorkloadRef, DriftedWorkload> = BTreeMap::new();
    let mut unmovable = BTreeSet::new();
    for pod in pods.iter().filter(|p| !p.terminating) {
        let crate::istio::PodRevision::Injected {
            revision,
            proxy_image: Some(running),
            ..
        } = &pod.revision
        else {
            continue;
        };
        let Some(want) = injected.get(revision) else {
            continue;
        };
        if !is_older(running, want) {
            continue;
        }
        let pod_name = format!("{}/{}", pod.namespace, pod.name);
        let Owner::Workload(w) = &pod.owner else {
            unmovable.insert(format!(
                "{pod_name} (runs {running}; not owned by a Deployment, StatefulSet or DaemonSet: recreate it yourself)"
            ));
            continue;
        };
        let entry = by_workload
            .entry(w.clone())
            .or_insert_with(|| DriftedWorkload {
                workload: w.clone(),
                revision: revision.clone(),
                running: running.clone(),
                injected: want.clone(),
                pods: Vec::new(),
            });
        if image_version(running) < image_version(&entry.running) {
            entry.running = running.clone();
        }
        entry.pods.push(pod_name);
    }
    PatchDrift {
        injected: injected.clone(),
        workloads: by_workload.into_values().collect(),
        unmovable: unmovable.into_iter().collect(),
    }
}

/// What the injector of each of `revisions` injects now: its ConfigMap's `values`, else
/// istiod's image tag. A revision with neither is left out (nothing to compare against).
pub async fn injected_images(
    client: &Client,
    revisions: &[String],
) -> Result<BTreeMap<String, String>, K8sError> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ISTIO_NAMESPACE);
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), ISTIO_NAMESPACE);
    let mut out = BTreeMap::new();
    for rev in revisions {
        let cm_name = format!("istio-sidecar-injector-{rev}");
        let cm = cms
            .get_opt(&cm_name)
            .await
            .map_err(|source| K8sError::Api {
                action: "read",
                kind: "ConfigMap",
                target: super::target(ISTIO_NAMESPACE, &cm_name),
                source,
            })?;
        let from_cm = cm
            .and_then(|c| c.data)
            .and_then(|d| d.get("values").cloned())
            .and_then(|v| injector_image(&v));
        let image = match from_cm {
            Some(i) => Some(i),
            None => {
                let name = istiod_name(rev);
                let d = deploys
                    .get_opt(&name)
                    .await
                    .map_err(|source| K8sError::Api {
                        action: "read",
                        kind: "Deployment",
                        target: super::target(ISTIO_NAMESPACE, &name),
                        source,
                    })?;
                d.and_then(|d| d.spec)
                    .and_then(|s| s.template.spec)
                    .and_then(|s| s.containers.into_iter().next())
                    .and_then(|c| c.image)
                    .and_then(|i| proxy_image_of_istiod(&i))
            }
        };
        if let Some(i) = image {
            out.insert(rev.clone(), i);
        }
    }
    Ok(out)
}

/// Workloads whose proxy image is older than what their revision's injector injects now,
/// among the application pods of the cluster (`namespaces`: only these; the add-on's own
/// `aks-istio-*` and `kube-*` namespaces are never looked at). `revisions`: the installed
/// revisions (from ARM, or the istiod Deployments).
pub async fn find_patch_drift(
    client: &Client,
    revisions: &[String],
    namespaces: Option<&[String]>,
) -> Result<PatchDrift, K8sError> {
    let injected = injected_images(client, revisions).await?;
    drift_against(client, &injected, namespaces).await
}

/// [`find_patch_drift`] against given images per revision (what a run set out to reach).
pub async fn drift_against(
    client: &Client,
    injected: &BTreeMap<String, String>,
    namespaces: Option<&[String]>,
) -> Result<PatchDrift, K8sError> {
    let pods: Vec<PodInfo> = super::pods::list_pods(client, None, None)
        .await?
        .into_iter()
        .filter(|p| super::is_application_namespace(&p.namespace))
        .filter(|p| namespaces.is_none_or(|nss| nss.contains(&p.namespace)))
        .collect();
    Ok(drifted_workloads(&pods, injected))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::istio::{PodRevision, RevisionSource};
    use crate::k8s::WorkloadKind;

    fn mk_pod(ns: &str, name: &str, owner: Option<&str>, rev: &str, image: &str) -> PodInfo {
        PodInfo {
            namespace: ns.into(),
            name: name.into(),
            uid: None,
            phase: Some("Running".into()),
            ready: true,
            terminating: false,
            revision: PodRevision::Injected {
                revision: rev.into(),
                source: RevisionSource::StatusAnnotation,
                placement: None,
                proxy_image: Some(image.into()),
            },
            owner: match owner {
                Some(d) => Owner::Workload(WorkloadRef::new(WorkloadKind::Deployment, ns, d)),
                None => Owner::None,
            },
            opted_out: false,
        }
    }

    const OLD: &str = "mcr.microsoft.com/oss/istio/proxyv2:1.27.3-distroless";
    const NEW: &str = "mcr.microsoft.com/oss/istio/proxyv2:1.27.4-distroless";

    #[test]
    fn versions_compare_by_number_not_by_text() {
        assert_eq!(image_version(OLD), Some((1, 27, 3)));
        assert_eq!(image_version("proxyv2:1.9.10"), Some((1, 9, 10)));
        assert!(is_older("p:1.27.9", "p:1.27.10"));
        assert!(!is_older(NEW, OLD));
        assert!(!is_older(NEW, NEW));
        assert!(is_older("p:latest", NEW));
        assert_eq!(image_version("localhost:5000/proxyv2"), None);
    }

    #[test]
    fn the_injector_image_is_rendered_from_its_values_or_istiods_image() {
        let values = r#"{"global":{"hub":"mcr.microsoft.com/oss/istio","tag":"1.27.4-distroless","proxy":{"image":"proxyv2"}},"revision":"asm-1-27"}"#;
        assert_eq!(injector_image(values).as_deref(), Some(NEW));
        assert_eq!(
            proxy_image_of_istiod("mcr.microsoft.com/oss/istio/pilot:1.27.4-distroless").as_deref(),
            Some(NEW)
        );
        assert_eq!(injector_image("not json"), None);
    }

    #[test]
    fn only_workloads_behind_their_injector_drift() {
        let injected = BTreeMap::from([("asm-1-27".to_string(), NEW.to_string())]);
        let pods = [
            mk_pod("shop", "api-1", Some("api"), "asm-1-27", OLD),
            mk_pod("shop", "api-2", Some("api"), "asm-1-27", NEW),
            mk_pod("shop", "web-1", Some("web"), "asm-1-27", NEW),
            mk_pod("shop", "bare", None, "asm-1-27", OLD),
            // a revision whose injector is unknown: not judged
            mk_pod("shop", "other-1", Some("other"), "asm-1-28", OLD),
        ];
        let drift = drifted_workloads(&pods, &injected);
        assert_eq!(drift.workloads.len(), 1, "{drift:?}");
        let d = &drift.workloads[0];
        assert_eq!(d.workload.name, "api");
        assert_eq!(d.running, OLD);
        assert_eq!(d.injected, NEW);
        assert_eq!(d.pods, vec!["shop/api-1".to_string()]);
        assert_eq!(drift.unmovable.len(), 1);
        assert!(drift.unmovable[0].starts_with("shop/bare"));
    }
}
