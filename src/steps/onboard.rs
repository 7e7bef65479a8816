//! Namespace onboarding (`runbooks/asm-canary-onboard.yaml`): label namespaces for the tag
//! (or a revision), restart their workloads in waves with the upgrade's gates so that every
//! pod gets its sidecar, verify every proxy SYNCED; roll back (label removed, workloads
//! restarted back without a sidecar) when a gate fails.
//!
//! | runbook name | kind |
//! |---|---|
//! | onboard-preflight | action: [`onboard_scope`] decides and refuses |
//! | label-namespaces | action: the label, journaled ([`super::tag::relabel_set`]) |
//! | onboard-restart | action: waves ([`super::restart::restart_in_waves`]) |
//! | unlabel-namespaces | rollback action: the labels this run put, removed |
//! | workloads-without-sidecar | rollback gate ([`super::restart`]) |

use std::sync::Arc;

use asm_canary_engine::{Action, ActionCtx, ActionOutcome, EntryId, StepError};
use async_trait::async_trait;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde::Serialize;
use serde_json::json;

use super::restart::{WaveSpec, plan_each, restart_in_waves};
use super::tag::{KIND_RELABEL_SET, relabel_set};
use super::{Env, arm_err, k8s_err, kube_err, outputs};
use crate::istio::{INJECTION_LABEL, REV_LABEL};

pub struct OnboardPreflight(pub Arc<Env>);
pub struct LabelNamespaces(pub Arc<Env>);
pub struct OnboardRestart(pub Arc<Env>);
pub struct UnlabelNamespaces(pub Arc<Env>);

/// The journal name of the onboarding's label entry.
const LABEL_ENTRY: &str = "onboard";
const KIND_UNLABEL: &str = "namespaces-unlabel";

/// What an onboarding will do, decided before any change.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct OnboardScope {
    /// The namespaces to label and restart, in the order given.
    pub namespaces: Vec<String>,
    /// Namespaces already in the mesh, with the label that puts them there: left alone.
    pub already: Vec<(String, String)>,
    /// The `istio.io/rev` value put on them: the tag, or a revision.
    pub label: String,
    /// The revision that label injects.
    pub revision: String,
}

/// Namespaces that are the cluster's or the add-on's own: never onboarded.
pub fn is_system_namespace(ns: &str) -> bool {
    ns.starts_with("kube-")
        || ns.starts_with("aks-istio-")
        || matches!(
            ns,
            "istio-system" | "gatekeeper-system" | "calico-system" | "tigera-operator"
        )
}

/// What a namespace's injection labels mean for an onboarding: `Ok(None)` not in the mesh (to
/// onboard), `Ok(Some(label))` in the mesh already through a revision or tag that is there
/// (left alone), `Err(why)` labels through which the add-on injects nothing, refused with the
/// fix: `istio-injection` (ignored by the add-on, and its revision injectors skip namespaces
/// that carry it; `disabled` is an explicit opt-out) or an `istio.io/rev` naming nothing.
async fn mesh_labels(
    env: &Env,
    installed: &[String],
    ns: &Namespace,
) -> Result<Result<Option<String>, String>, StepError> {
    let name = ns.metadata.name.as_deref().unwrap_or_default();
    let Some(labels) = ns.metadata.labels.as_ref() else {
        return Ok(Ok(None));
    };
    if let Some(v) = labels.get(INJECTION_LABEL) {
        let why = match v.as_str() {
            "disabled" => "it was opted out of injection".to_string(),
            _ => "the AKS add-on ignores that label and its injectors skip namespaces that carry it, so its pods get no sidecar".to_string(),
        };
        return Ok(Err(format!(
            "namespace {name} is labelled {INJECTION_LABEL}={v}: {why}; if it belongs in the mesh, remove that label (kubectl label ns {name} {INJECTION_LABEL}-) and run onboard again"
        )));
    }
    let Some(rev) = labels.get(REV_LABEL) else {
        return Ok(Ok(None));
    };
    let live = installed.contains(rev)
        || super::tag::current_tag_revision(env, rev)
            .await?
            .is_some_and(|r| installed.contains(&r));
    if live {
        return Ok(Ok(Some(format!("{REV_LABEL}={rev}"))));
    }
    Ok(Err(format!(
        "namespace {name} is labelled {REV_LABEL}={rev}, which names no installed revision ({}) and no tag, so its pods get no sidecar; remove the label (kubectl label ns {name} {REV_LABEL}-) and run onboard again",
        installed.join(", ")
    )))
}

/// Decides an onboarding of `namespaces` for `tag`, or for `revision` when given: `Ok(Err)`
/// is a refusal in a sentence (a namespace missing or the system's, a revision not
/// installed, a tag that does not exist); `Err` is a failure to read the cluster.
pub async fn onboard_scope(
    env: &Env,
    namespaces: &[String],
    tag: &str,
    revision: Option<&str>,
) -> Result<Result<OnboardScope, String>, StepError> {
    if namespaces.is_empty() {
        return Ok(Err("name at least one namespace (-n NS)".into()));
    }
    if let Some(bad) = namespaces
        .iter()
        .find(|n| !crate::k8s::is_namespace_name(n))
    {
        return Ok(Err(format!(
            "{bad:?} is not a namespace name (lowercase letters, digits and '-')"
        )));
    }
    if let Some(sys) = namespaces.iter().find(|n| is_system_namespace(n)) {
        return Ok(Err(format!(
            "namespace {sys} belongs to the cluster or the mesh add-on; it is never onboarded"
        )));
    }
    let installed = env
        .arm
        .get_cluster(&env.cluster)
        .await
        .map_err(|e| arm_err("reading the cluster", e))?
        .revisions();
    let (label, injects) = match revision {
        Some(r) if installed.iter().any(|i| i == r) => (r.to_string(), r.to_string()),
        Some(r) => {
            return Ok(Err(format!(
                "revision {r} is not installed (installed: {})",
                installed.join(", ")
            )));
        }
        None => match super::tag::current_tag_revision(env, tag).await? {
            Some(r) => (tag.to_string(), r),
            None => {
                return Ok(Err(format!(
                    "tag {tag} does not exist (no revision-tag webhook); name an existing tag with --tag, or a revision with --revision {}",
                    installed.first().map_or("asm-X-Y", String::as_str)
                )));
            }
        },
    };
    // Its injector refuses every pod while its istiod has no ready pod: the restarted
    // workloads would not come back (the run failed its gates and rolled back).
    let istiods = crate::k8s::mesh::istiod_pods(&env.kube, &injects)
        .await
        .map_err(|e| k8s_err(format!("reading istiod of {injects}"), e))?;
    if !istiods.iter().any(crate::k8s::mesh::pod_ready) {
        return Ok(Err(format!(
            "istiod of {injects} has no ready pod, so its injector refuses every pod it matches: the restarted workloads would not come back; see `asm-canary doctor`, and onboard once istiod is ready"
        )));
    }
    let api: Api<Namespace> = Api::all(env.kube.clone());
    let mut scope = OnboardScope {
        namespaces: Vec::new(),
        already: Vec::new(),
        label,
        revision: injects,
    };
    for ns in namespaces {
        let found = api
            .get_opt(ns)
            .await
            .map_err(|e| kube_err(format!("reading namespace {ns}"), e))?;
        let Some(n) = found else {
            return Ok(Err(format!("namespace {ns} does not exist")));
        };
        match mesh_labels(env, &installed, &n).await? {
            Err(why) => return Ok(Err(why)),
            Ok(Some(label)) => scope.already.push((ns.clone(), label)),
            Ok(None) if !scope.namespaces.contains(ns) => scope.namespaces.push(ns.clone()),
            Ok(None) => {}
        }
    }
    Ok(Ok(scope))
}

/// The sentence for namespaces already in the mesh.
pub fn already_line(already: &[(String, String)]) -> String {
    format!(
        "already in the mesh, left alone: {}",
        super::first_few(
            already.iter().map(|(n, why)| format!("{n} ({why})")),
            8,
            "namespaces"
        )
    )
}

#[async_trait]
impl Action for OnboardPreflight {
    async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
        let namespaces: Vec<String> = ctx.input_opt("namespaces")?.unwrap_or_default();
        let tag: String = ctx.input_opt("tag")?.unwrap_or_else(|| "prod".into());
        let revision: Option<String> = ctx
            .input_opt::<String>("revision")?
            .filter(|r| !r.is_empty());
        let scope = onboard_scope(&self.0, &namespaces, &tag, revision.as_deref())
            .await?
            .map_err(|why| StepError::msg(format!("{why}; nothing was changed")))?;
        if !scope.already.is_empty() {
            ctx.events.info(already_line(&scope.already));
        }
        ctx.events.info(format!(
            "onboarding {} with {REV_LABEL}={} (injected by {})",
            if scope.namespaces.is_empty() {
                "nothing".to_string()
            } else {
                scope.namespaces.join(", ")
            },
            scope.label,
            scope.revision
        ));
        Ok(ActionOutcome::done(outputs([
            ("namespaces", json!(scope.namespaces)),
            ("needed", json!(!scope.namespaces.is_empty())),
            ("label", json!(scope.label)),
            ("revision", json!(scope.revision)),
        ])))
    }
}

#[async_trait]
impl Action for LabelNamespaces {
    async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
        let namespaces: Vec<String> = ctx.input("namespaces")?;
        let label: String = ctx.input("label")?;
        relabel_set(
            &self.0,
            ctx,
            LABEL_ENTRY,
            &namespaces,
            "none",
            &label,
            Default::default(),
        )
        .await?;
        Ok(ActionOutcome::done(outputs([(
            "namespaces",
            json!(namespaces),
        )])))
    }
}

#[async_trait]
impl Action for OnboardRestart {
    async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
        let env = &self.0;
        let namespaces: Vec<String> = ctx.input("namespaces")?;
        let revision: String = ctx.input("revision")?;
        let waves = match super::restart::journaled_waves(ctx)? {
            Some(w) => w,
            None => {
                let growth = super::wave::Growth::of_input(ctx.input_opt("waves")?)?;
                let counts: Vec<(String, usize)> = plan_each(env, &namespaces, &revision)
                    .await?
                    .into_iter()
                    .map(|(ns, p)| (ns, p.workloads.len()))
                    .collect();
                super::wave::first_then_growing(&counts, &growth)
            }
        };
        let spec = WaveSpec::of(ctx, &revision)?;
        let (records, acted) = restart_in_waves(env, ctx, &spec, &waves, None).await?;
        Ok(super::restart::waves_outcome(
            &records,
            &namespaces,
            acted,
            format!("every pod of the onboarded namespaces already runs {revision}"),
        ))
    }
}

/// Rollback: the label this run put on each namespace, removed (only where it still is what
/// this run put), journaled as one entry before the first patch.
#[async_trait]
impl Action for UnlabelNamespaces {
    async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
        let all = ctx.journal.all();
        let Some(labelled) = all
            .iter()
            .find(|e| e.kind == KIND_RELABEL_SET && e.target == LABEL_ENTRY)
        else {
            return Ok(ActionOutcome::skipped("this run labelled no namespace"));
        };
        let namespaces: Vec<String> =
            serde_json::from_value(labelled.details["namespaces"].clone())
                .map_err(|e| StepError::with_source("reading the labelled namespaces", e))?;
        let label = labelled.details["to"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let id = match ctx
            .journal
            .step_entries()
            .into_iter()
            .find(|e| e.kind == KIND_UNLABEL)
        {
            Some(e) if e.is_done() => {
                return Ok(ActionOutcome::already_done(
                    outputs([("namespaces", json!(namespaces))]),
                    "the labels were removed",
                ));
            }
            Some(e) => EntryId(e.seq),
            None => {
                ctx.journal
                    .intent(
                        KIND_UNLABEL,
                        LABEL_ENTRY,
                        json!({ "namespaces": namespaces, "label": label }),
                    )
                    .await?
            }
        };
        let api: Api<Namespace> = Api::all(self.0.kube.clone());
        for ns in &namespaces {
            let current = api
                .get_opt(ns)
                .await
                .map_err(|e| kube_err(format!("reading namespace {ns}"), e))?;
            let ours = current
                .and_then(|n| n.metadata.labels)
                .and_then(|l| l.get(REV_LABEL).cloned())
                .is_some_and(|v| v == label);
            if !ours {
                ctx.events.warn(format!(
                    "namespace {ns} no longer carries {REV_LABEL}={label}; left as it is"
                ));
                continue;
            }
            let patch = json!({ "metadata": { "labels": { REV_LABEL: null } } });
            api.patch(ns, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| kube_err(format!("removing {REV_LABEL} from namespace {ns}"), e))?;
        }
        ctx.journal.done(id, None).await?;
        ctx.events.info(format!(
            "{REV_LABEL}={label} removed from {}",
            super::first_few(&namespaces, 8, "namespaces")
        ));
        Ok(ActionOutcome::done(outputs([(
            "namespaces",
            json!(namespaces),
        )])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clusters_own_namespaces_are_never_onboarded() {
        for ns in [
            "kube-system",
            "kube-public",
            "aks-istio-system",
            "aks-istio-ingress",
        ] {
            assert!(is_system_namespace(ns), "{ns}");
        }
        for ns in ["payments", "default", "istio-tools"] {
            assert!(!is_system_namespace(ns), "{ns}");
        }
    }
}
