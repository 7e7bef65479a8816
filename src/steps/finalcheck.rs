//! The final check after `complete` (issue 12, item 5): the cluster as the upgrade leaves it.
//!
//! ```text
//!  ARM revisions ─┐
//!  tag webhooks  ─┼─▶ judge ─▶ FinalCheck { ok, passed, problems }  ─▶ complete's outputs,
//!  namespaces    ─┤                                                    its events, the report
//!  pods          ─┘
//! ```
//!
//! Three facts: the tag points at the target (tag mode), every `istio.io/rev` namespace label
//! names an installed revision or a tag that points at one, and no pod outside the add-on's
//! own namespaces runs a revision that is no longer installed. The check reports; it does not
//! undo the completed upgrade (nothing could: the old revision is gone).

use std::collections::BTreeMap;

use asm_canary_engine::StepError;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::ListParams;
use serde::{Deserialize, Serialize};

use super::tag::Mode;
use super::{Env, arm_err, k8s_err, kube_err};
use crate::istio::tag::tag_revision;
use crate::istio::{INGRESS_NAMESPACE, ISTIO_NAMESPACE, REV_LABEL, TAG_LABEL};

/// The check's result: in complete's outputs (`final_check`) and in the report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalCheck {
    pub ok: bool,
    /// What held, one sentence each.
    pub passed: Vec<String>,
    /// What did not, one sentence each, with what to do.
    pub problems: Vec<String>,
}

/// What the check reads from the cluster.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The revisions ARM reports installed.
    pub installed: Vec<String>,
    /// Tag name → the revision its webhook points at (`None`: unreadable).
    pub tags: BTreeMap<String, Option<String>>,
    /// Namespace → its `istio.io/rev` label.
    pub labels: BTreeMap<String, String>,
    /// `namespace/name` → the revision that injected it, for injected application pods.
    pub pods: BTreeMap<String, String>,
}

/// Judges what was read: `mode` and `tag` say whether the tag must point at `target`.
pub fn judge(seen: &Observed, mode: Mode, tag: &str, target: &str) -> FinalCheck {
    let mut check = FinalCheck::default();
    let installed = |r: &str| seen.installed.iter().any(|i| i == r);
    if mode == Mode::Tag {
        match seen.tags.get(tag) {
            Some(Some(r)) if r == target => check
                .passed
                .push(format!("tag {tag} points at {target}")),
            Some(other) => check.problems.push(format!(
                "tag {tag} points at {}, not {target}: move it (istioctl tag set {tag} --revision {target} --overwrite)",
                other.as_deref().unwrap_or("no readable revision")
            )),
            None => check.problems.push(format!(
                "tag {tag} does not exist: namespaces labelled istio.io/rev={tag} get no sidecar; create it (istioctl tag set {tag} --revision {target})"
            )),
        }
    }
    for (name, rev) in &seen.tags {
        if let Some(r) = rev.as_deref().filter(|r| !installed(r)) {
            check.problems.push(format!(
                "tag {name} points at {r}, which is not installed: pod creation in its namespaces fails while its webhook has no istiod; move it to {target}"
            ));
        }
    }
    let bad_labels: Vec<String> = seen
        .labels
        .iter()
        .filter(|(_, v)| {
            !installed(v) && !matches!(seen.tags.get(*v), Some(Some(r)) if installed(r))
        })
        .map(|(ns, v)| format!("{ns} (istio.io/rev={v})"))
        .collect();
    if bad_labels.is_empty() {
        check.passed.push(format!(
            "{} meshed namespace(s), each labelled with an installed revision or a tag on one",
            seen.labels.len()
        ));
    } else {
        check.problems.push(format!(
            "{} namespace(s) labelled with neither an installed revision nor a tag on one: {}; relabel them istio.io/rev={}",
            bad_labels.len(),
            super::first_few(&bad_labels, 8, "namespaces"),
            if mode == Mode::Tag { tag } else { target }
        ));
    }
    let stranded: Vec<String> = seen
        .pods
        .iter()
        .filter(|(_, r)| !installed(r))
        .map(|(p, r)| format!("{p} ({r})"))
        .collect();
    if stranded.is_empty() {
        check.passed.push(format!(
            "no pod runs a removed revision ({} injected pod(s) checked)",
            seen.pods.len()
        ));
    } else {
        check.problems.push(format!(
            "{} pod(s) run a revision that is no longer installed: {}; restart their workloads",
            stranded.len(),
            super::first_few(&stranded, 8, "pods")
        ));
    }
    check.ok = check.problems.is_empty();
    check
}

/// Reads the cluster and judges it.
pub async fn final_check(
    env: &Env,
    mode: Mode,
    tag: &str,
    target: &str,
) -> Result<FinalCheck, StepError> {
    Ok(judge(&observe(env).await?, mode, tag, target))
}

/// The check as complete runs it: `tag` and `mode` from its inputs, each problem a warning
/// event, the result one line.
pub async fn run_after_complete(
    env: &Env,
    ctx: &asm_canary_engine::ActionCtx,
    target: &str,
) -> Result<FinalCheck, StepError> {
    let mode = super::tag::mode_of(ctx.input_opt("mode")?)?;
    let tag: String = ctx.input_opt("tag")?.unwrap_or_else(|| "prod".to_string());
    let check = final_check(env, mode, &tag, target).await?;
    for p in &check.problems {
        ctx.events.warn(format!("final check: {p}"));
    }
    ctx.events.info(if check.ok {
        format!("final check passed: {}", check.passed.join("; "))
    } else {
        format!(
            "final check found {} problem(s) after the upgrade completed (see the warnings)",
            check.problems.len()
        )
    });
    Ok(check)
}

async fn observe(env: &Env) -> Result<Observed, StepError> {
    let doc = env
        .arm
        .get_cluster(&env.cluster)
        .await
        .map_err(|e| arm_err("reading the cluster", e))?;
    let webhooks = Api::<MutatingWebhookConfiguration>::all(env.kube.clone())
        .list(&ListParams::default().labels(TAG_LABEL))
        .await
        .map_err(|e| kube_err("listing tag webhooks", e))?;
    let namespaces = Api::<Namespace>::all(env.kube.clone())
        .list(&ListParams::default().labels(REV_LABEL))
        .await
        .map_err(|e| kube_err("listing namespaces", e))?;
    let pods = crate::k8s::pods::list_pods(&env.kube, None, None)
        .await
        .map_err(|e| k8s_err("listing pods", e))?;
    let mut seen = Observed {
        installed: doc.revisions(),
        ..Default::default()
    };
    for w in &webhooks.items {
        if let Some(name) = w.metadata.labels.as_ref().and_then(|l| l.get(TAG_LABEL)) {
            seen.tags.insert(name.clone(), tag_revision(w));
        }
    }
    for ns in &namespaces.items {
        let label = ns.metadata.labels.as_ref().and_then(|l| l.get(REV_LABEL));
        if let (Some(name), Some(label)) = (&ns.metadata.name, label) {
            seen.labels.insert(name.clone(), label.clone());
        }
    }
    for p in pods.iter().filter(|p| !p.terminating) {
        let ns = p.namespace.as_str();
        // The add-on's own pods (istiod, gateways) go with their revision by themselves.
        if ns == ISTIO_NAMESPACE || ns == INGRESS_NAMESPACE {
            continue;
        }
        if let Some(rev) = p.revision.revision() {
            seen.pods
                .insert(format!("{ns}/{}", p.name), rev.to_string());
        }
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_seen() -> Observed {
        Observed {
            installed: vec!["asm-1-29".into()],
            tags: [("prod".to_string(), Some("asm-1-29".to_string()))].into(),
            labels: [
                ("payments".to_string(), "prod".to_string()),
                ("direct".to_string(), "asm-1-29".to_string()),
            ]
            .into(),
            pods: [("payments/api-1".to_string(), "asm-1-29".to_string())].into(),
        }
    }

    #[test]
    fn a_clean_completion_passes_all_three_facts() {
        let check = judge(&mk_seen(), Mode::Tag, "prod", "asm-1-29");
        assert!(check.ok, "{check:?}");
        assert_eq!(check.passed.len(), 3, "{check:?}");
        assert_eq!(check.passed[0], "tag prod points at asm-1-29");
    }

    /// What the final check exists to catch, each on its own: a tag left on the removed
    /// revision, a namespace labelled with it, and a pod it injected.
    #[test]
    fn a_tag_label_or_pod_left_on_a_removed_revision_is_a_problem() {
        let mut tag_left = mk_seen();
        tag_left
            .tags
            .insert("prod".into(), Some("asm-1-27".to_string()));
        let check = judge(&tag_left, Mode::Tag, "prod", "asm-1-29");
        assert!(!check.ok);
        assert!(
            check.problems[0].starts_with("tag prod points at asm-1-27, not asm-1-29"),
            "{check:?}"
        );
        // the namespaces labelled prod now follow a tag on a removed revision
        assert!(
            check
                .problems
                .iter()
                .any(|p| p.contains("payments (istio.io/rev=prod)")),
            "{check:?}"
        );

        let mut label_left = mk_seen();
        label_left.labels.insert("legacy".into(), "asm-1-27".into());
        let check = judge(&label_left, Mode::Tag, "prod", "asm-1-29");
        assert_eq!(check.problems.len(), 1, "{check:?}");
        assert!(check.problems[0].contains("legacy (istio.io/rev=asm-1-27)"));

        let mut pod_left = mk_seen();
        pod_left
            .pods
            .insert("orders/db-0".into(), "asm-1-27".into());
        let check = judge(&pod_left, Mode::Tag, "prod", "asm-1-29");
        assert_eq!(check.problems.len(), 1, "{check:?}");
        assert!(check.problems[0].contains("orders/db-0 (asm-1-27)"));
    }

    #[test]
    fn label_mode_does_not_ask_the_tag_to_move() {
        let mut seen = mk_seen();
        seen.tags.clear();
        seen.labels.remove("payments");
        let check = judge(&seen, Mode::Label, "prod", "asm-1-29");
        assert!(check.ok, "{check:?}");
        assert_eq!(check.passed.len(), 2);
    }
}
