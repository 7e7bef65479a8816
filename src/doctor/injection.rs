//! Checks of injection: namespace labels, revision tags, injector webhooks and the pods they
//! left without a sidecar.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Pod;

use super::observe::Observed;
use super::{is_ready, is_running, kubectl_restart, ns_labels, pod_name};
use crate::contract::doctor::Finding;
use crate::istio::{
    INJECTION_LABEL, ISTIO_NAMESPACE, PodRevision, REV_LABEL, TAG_LABEL, pod_revision, tag_revision,
};
use crate::k8s::{Owner, owner_of};

/// The revision tags (`istio.io/tag` webhooks): tag → (webhook, revision it sends pods to).
pub(super) fn tags(o: &Observed) -> BTreeMap<String, (String, Option<String>)> {
    o.webhooks
        .iter()
        .filter_map(|w| {
            let tag = w.metadata.labels.as_ref()?.get(TAG_LABEL)?.clone();
            let name = w.metadata.name.clone().unwrap_or_default();
            Some((tag, (name, tag_revision(w))))
        })
        .collect()
}

/// What an `istio.io/rev` value resolves to: an installed revision, directly or via a tag.
fn resolves(o: &Observed, value: &str) -> Option<String> {
    if o.installed.iter().any(|r| r == value) {
        return Some(value.to_string());
    }
    let (_, rev) = tags(o).remove(value)?;
    rev.filter(|r| o.installed.contains(r))
}

/// Meshed namespaces (labelled for an installed revision or a tag of one) whose running pods
/// have no sidecar: labelled after the pods started, and never restarted.
pub fn sidecars(o: &Observed) -> Vec<Finding> {
    let meshed: BTreeSet<String> = o
        .namespaces
        .iter()
        .filter_map(|ns| {
            let value = ns_labels(ns).get(REV_LABEL)?.clone();
            resolves(o, &value).and(ns.metadata.name.clone())
        })
        .collect();
    let mut bare: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for pod in o.pods.iter().filter(|p| is_running(p)) {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        if meshed.contains(&ns) && pod_revision(pod) == PodRevision::NotInjected {
            bare.entry(ns).or_default().push(pod);
        }
    }
    bare.into_iter()
        .map(|(ns, pods)| {
            let mut fixes: Vec<String> = pods
                .iter()
                .map(|p| match owner_of(p) {
                    Owner::Workload(w) => kubectl_restart(&w),
                    _ => format!("kubectl delete pod {} -n {ns}", pod_name(p)),
                })
                .collect();
            fixes.dedup();
            Finding::warning(
                format!(
                    "namespace {ns} is in the mesh, but {} pod(s) run without a sidecar (1/1): labelled after they started and never restarted; they are outside mTLS and every policy",
                    pods.len()
                ),
                pods.iter().map(|p| format!("{ns}/{}", pod_name(p))).collect(),
                fixes.join(" && "),
            )
        })
        .collect()
}

/// Namespace labels the add-on ignores (`istio-injection=enabled`) or that name a revision
/// neither installed nor a tag.
pub fn labels(o: &Observed) -> Vec<Finding> {
    let tags = tags(o);
    // a tag of an installed revision, else the revision itself
    let suggestion = tags
        .iter()
        .find(|(_, (_, rev))| rev.as_ref().is_some_and(|r| o.installed.contains(r)))
        .map(|(tag, _)| tag.clone())
        .or_else(|| o.installed.first().cloned())
        .unwrap_or_else(|| "<tag or revision>".to_string());
    let mut out = Vec::new();
    for ns in &o.namespaces {
        let name = ns.metadata.name.clone().unwrap_or_default();
        let labels = ns_labels(ns);
        if labels.get(INJECTION_LABEL).map(String::as_str) == Some("enabled") {
            out.push(Finding::warning(
                format!(
                    "namespace {name} is labelled istio-injection=enabled, which the AKS add-on ignores: its pods get no sidecar"
                ),
                vec![name.clone()],
                format!(
                    "kubectl label ns {name} istio-injection- istio.io/rev={suggestion} --overwrite, then restart its workloads"
                ),
            ));
        }
        if let Some(value) = labels.get(REV_LABEL)
            && !o.installed.contains(value)
            && !tags.contains_key(value)
            && value.parse::<crate::istio::Revision>().is_ok()
        {
            out.push(Finding::broken(
                format!(
                    "namespace {name} is labelled istio.io/rev={value}, which is neither an installed revision ({}) nor a tag: new pods there get no sidecar",
                    o.installed.join(", ")
                ),
                vec![name.clone()],
                format!("kubectl label ns {name} istio.io/rev={suggestion} --overwrite, then restart its workloads"),
            ));
        }
    }
    out.extend(missing_tags(o, &tags));
    out
}

/// `istio.io/rev` values that are no revision name and no tag: a tag whose webhook is gone
/// (deleted by hand, or never created). One finding per tag, with the command that restores
/// it; relabelling each namespace to a revision (the fix given before) pinned them off the tag
/// and restarted pods that already had their sidecars.
fn missing_tags(o: &Observed, tags: &BTreeMap<String, (String, Option<String>)>) -> Vec<Finding> {
    let mut by_tag: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for ns in &o.namespaces {
        if let Some(value) = ns_labels(ns).get(REV_LABEL)
            && !o.installed.contains(value)
            && !tags.contains_key(value)
            && value.parse::<crate::istio::Revision>().is_err()
        {
            let name = ns.metadata.name.clone().unwrap_or_default();
            by_tag.entry(value.clone()).or_default().push(name);
        }
    }
    let revision = o
        .installed
        .first()
        .cloned()
        .unwrap_or_else(|| "<revision>".into());
    by_tag
        .into_iter()
        .map(|(tag, namespaces)| {
            Finding::broken(
                format!(
                    "{} namespace(s) are labelled istio.io/rev={tag}, but tag {tag} does not exist (no revision-tag webhook): new pods there get no sidecar ({})",
                    namespaces.len(),
                    namespaces.join(", ")
                ),
                namespaces,
                format!(
                    "istioctl tag set {tag} --revision {revision} --istioNamespace {ISTIO_NAMESPACE} (restores the tag; pods that have their sidecar need no restart)"
                ),
            )
        })
        .collect()
}

/// Tags whose webhook sends pods to a revision that is not installed: pod creation in their
/// namespaces fails closed (`failurePolicy: Fail`).
pub fn tag_targets(o: &Observed) -> Vec<Finding> {
    let to = o.installed.last().cloned().unwrap_or_default();
    tags(o)
        .into_iter()
        .filter(|(_, (_, rev))| rev.as_ref().is_none_or(|r| !o.installed.contains(r)))
        .map(|(tag, (webhook, rev))| {
            let rev = rev.unwrap_or_else(|| "no revision".to_string());
            Finding::broken(
                format!(
                    "tag {tag} points at {rev}, which is not installed: creating a pod in a namespace labelled istio.io/rev={tag} fails (the webhook's istiod is gone, failurePolicy Fail)"
                ),
                vec![webhook],
                format!(
                    "istioctl tag set {tag} --revision {to} --istioNamespace {ISTIO_NAMESPACE} --overwrite (or, if nothing uses it: istioctl tag remove {tag} --istioNamespace {ISTIO_NAMESPACE})"
                ),
            )
        })
        .collect()
}

/// Injector webhooks (a revision's own, or a tag's) whose istiod Service exists but has no
/// ready pod behind it: every injected pod creation they match fails.
pub fn webhook_endpoints(o: &Observed) -> Vec<Finding> {
    let mut by_service: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for w in &o.webhooks {
        let name = w.metadata.name.clone().unwrap_or_default();
        for hook in w.webhooks.iter().flatten() {
            if let Some(svc) = &hook.client_config.service
                && svc.namespace == ISTIO_NAMESPACE
                && svc.name.starts_with("istiod-")
            {
                by_service
                    .entry(svc.name.clone())
                    .or_default()
                    .insert(name.clone());
            }
        }
    }
    let mut out = Vec::new();
    for (service, webhooks) in by_service {
        let Some(svc) = o.services.iter().find(|s| {
            s.metadata.name.as_deref() == Some(&service)
                && s.metadata.namespace.as_deref() == Some(ISTIO_NAMESPACE)
        }) else {
            continue; // a tag at a removed revision: `tags` says it
        };
        let selector = svc
            .spec
            .as_ref()
            .and_then(|s| s.selector.clone())
            .unwrap_or_default();
        let ready = o.pods.iter().filter(|p| {
            p.metadata.namespace.as_deref() == Some(ISTIO_NAMESPACE)
                && !selector.is_empty()
                && selector
                    .iter()
                    .all(|(k, v)| p.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v))
                && is_ready(p)
        });
        if ready.count() == 0 {
            out.push(Finding::broken(
                format!(
                    "Service {ISTIO_NAMESPACE}/{service} has no ready endpoints: the webhooks calling it ({}) refuse every pod they match",
                    webhooks.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
                webhooks.into_iter().collect(),
                format!(
                    "kubectl get pods -n {ISTIO_NAMESPACE} -l app=istiod and kubectl describe deployment {service} -n {ISTIO_NAMESPACE}; if istiod does not recover, open an AKS support request (the add-on manages istiod)"
                ),
            ));
        }
    }
    out
}
