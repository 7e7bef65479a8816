//! The plan of a canary upgrade: the decisions a run makes before its first change, made in
//! one place. `asm-canary plan` shows them, a new run refuses on them before it writes
//! anything, and the steps that make them during a run (preflight, get-upgrades,
//! copy-configmap) call the same functions.
//!
//! ```text
//!  PlanRequest ─▶ observe         GET the cluster ─▶ classify ─▶ MeshState         preflight
//!                 choose_upgrade  meshUpgradeProfiles/istio ─▶ choose_target       get-upgrades
//!                 decide_copy     both shared ConfigMaps ─▶ k8s::plan_copy         copy-configmap
//!              ─▶ Plan { verdict, target, configmap, tag move, waves, gates, refusals }
//! ```
//!
//! Validation is the plan's list of [`Refusal`]s: what can never succeed (a downgrade, a
//! target ARM does not offer, a shared ConfigMap the add-on's admission rejects). Everything
//! else (not ready, mid-upgrade, a different target ConfigMap) is the run's to meet, with
//! its own outcome.

use std::collections::BTreeSet;

use asm_canary_engine::{ApprovalMode, DurationSpec, Runbook, StepError};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;
use kube::api::ListParams;
use serde::Serialize;
use serde_json::{Map, Value};

use super::restart::{MovePlan, mesh_namespaces, plan_each, restart_blockers};
use super::tag::Mode;
use super::wave::{CanaryChoice, Growth, choose_canary, grow_waves};
use super::{Env, kube_err};
use crate::azure::{ArmError, ClusterDoc};
use crate::istio::{
    INJECTION_LABEL, ISTIO_NAMESPACE, REV_LABEL, Revision, RevisionError, TAG_LABEL, TargetError,
    choose_target, shared_configmap_name,
};
use crate::k8s::{CopyPlan, K8sError, plan_copy, read_copy, write_copy};

/// The plan document's schema (`plan --output json`).
pub const PLAN_SCHEMA: &str = "asm-canary.plan/1.1";

/// What a person asked for, checked: the plan's input.
#[derive(Debug, Clone)]
pub struct PlanRequest {
    /// `--to`; `None`: the newest upgrade offered.
    pub to: Option<Revision>,
    pub tag: String,
    /// `--create-tag`: a tag nothing uses yet is to be created, not refused as a typo.
    pub create_tag: bool,
    pub mode: Mode,
    pub canary_namespaces: Vec<String>,
    pub force: bool,
    /// `--restart-ondelete`: restart the pods of `OnDelete` workloads one by one.
    pub restart_ondelete: bool,
    /// The runbook the run follows: the gates shown are its gates.
    pub runbook: Runbook,
    /// The params given on the command line; they win over the runbook's defaults.
    pub params: Map<String, Value>,
}

/// The plan: what `plan` prints and guided `upgrade` shows before its first prompt.
#[derive(Debug, Serialize)]
pub struct Plan {
    pub schema: &'static str,
    pub cluster: String,
    pub kubernetes_version: Option<String>,
    pub installed: Vec<String>,
    pub state: MeshState,
    /// What kind of run this cluster calls for (`upgrade`, `resume-canary`, `consolidate`,
    /// `reconcile`, `skip`, `refuse`).
    pub class: RunClass,
    pub verdict: String,
    pub source: Option<String>,
    pub target: Option<String>,
    pub target_reason: Option<String>,
    pub offered: Vec<String>,
    pub configmap: Option<String>,
    pub tag_move: Option<String>,
    /// The canary wave: restarted and gated before the tag moves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryPlan>,
    /// What the run does after `start`, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub order: Vec<String>,
    /// The canary first, then the growing waves, each with its blast radius.
    pub waves: Vec<Wave>,
    pub gates: Vec<GateLine>,
    pub warnings: Vec<String>,
    /// Workloads restarted pod by pod (`OnDelete`, with `--restart-ondelete`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pod_by_pod: Vec<String>,
    /// What a new run would be refused for (exit 2, before any change) that the verdict does
    /// not say: the traps of [`super::traps`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
    /// Why a new run would be refused. Not part of the document: the verdict says it.
    #[serde(skip)]
    pub refusals: Vec<Refusal>,
}

#[derive(Debug, Serialize)]
pub struct Wave {
    /// True for the canary wave (restarted before the tag moves).
    pub canary: bool,
    pub namespaces: Vec<NamespaceCount>,
    pub workloads: usize,
    /// The wave's blast radius: its share of the workloads this run moves, in percent.
    pub percent_of_mesh: f64,
    /// The share moved once this wave is done, in percent.
    pub cumulative_percent: f64,
    /// Workloads restarted at once in this wave.
    pub parallelism: usize,
}

/// The canary wave's namespaces and how they were chosen.
#[derive(Debug, Serialize)]
pub struct CanaryPlan {
    pub namespaces: Vec<String>,
    /// No (usable) `--canary-namespaces` nor labelled namespace: the namespace with the
    /// fewest workloads to move.
    pub chosen_by_default: bool,
    /// `flag` (`--canary-namespaces`), `label` (namespaces labelled `asm-canary/canary=true`)
    /// or `default`.
    pub chosen_by: CanaryChoice,
    /// The run asks for approval (step `promote`) after the canary passed.
    pub promote_approval: bool,
}

#[derive(Debug, Serialize)]
pub struct NamespaceCount {
    pub namespace: String,
    /// Workloads (Deployments, StatefulSets, DaemonSets) with pods not yet on the target.
    pub workloads: usize,
    /// Those of them with pods that have no sidecar at all (the namespace was labelled after
    /// they started): the restart injects them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub without_sidecar: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct GateLine {
    pub step: String,
    pub gate: String,
    pub timeout: String,
    /// How long the gate's condition must hold (the soak), when it must.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stable_for: Option<String>,
    /// The step asks for approval before its action.
    pub approval: bool,
    /// What happens when the gate fails: `rollback` or `halt`.
    pub on_failure: String,
}

/// Why a new run is refused before it writes anything: bad input (exit 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `--to` is not newer than the installed revision.
    #[error("{}", downgrade_sentence(.installed, .requested))]
    Downgrade {
        installed: String,
        requested: String,
    },
    /// No target: `--to` is not offered, or nothing is.
    #[error("{0}")]
    NoTarget(TargetError),
    /// The mesh is in a state no new run can start from (two or more revisions installed
    /// with no asm-canary run owning them, or the add-on disabled).
    #[error("{}", .0.explain("the cluster"))]
    Mesh(MeshState),
    /// The add-on's admission rejects the copy of the source's shared ConfigMap.
    #[error(
        "ConfigMap {ISTIO_NAMESPACE}/{from} cannot be copied to {to}: {message}; fix {from} (remove the field the add-on does not allow) and run again"
    )]
    ConfigMapRejected {
        from: String,
        to: String,
        message: String,
    },
    /// Tag mode, and namespaces labelled with the source revision itself: moving the tag does
    /// not move them, and their pods would block `complete`.
    #[error("{}", source_labelled_sentence(.namespaces, .installed, .tag))]
    SourceLabelled {
        namespaces: Vec<String>,
        installed: String,
        tag: String,
    },
    /// `OnDelete` StatefulSets or DaemonSets without `--restart-ondelete`: a rollout restart
    /// does not replace their pods.
    #[error("{}", on_delete_sentence(.workloads, .installed))]
    OnDelete {
        workloads: Vec<String>,
        installed: String,
    },
    /// Paused Deployments: a restart cannot move their pods.
    #[error("{}", paused_sentence(.workloads, .installed))]
    Paused {
        workloads: Vec<crate::k8s::WorkloadRef>,
        installed: String,
    },
    /// `--tag` names a tag that no tag webhook and no namespace uses: most likely a typo, and
    /// the run would create a new tag and restart nothing.
    #[error(
        "--tag {tag}: no revision tag webhook and no namespace label istio.io/rev={tag} uses it (tags in use: {}); check the name, or pass --create-tag to create it",
        if .known.is_empty() { "none".to_string() } else { .known.join(", ") }
    )]
    UnknownTag { tag: String, known: Vec<String> },
}

/// `--tag` of a tag-mode run: the tag, and whether it may be created (`--create-tag`).
#[derive(Debug, Clone)]
pub struct TagRequest {
    pub name: String,
    pub create: bool,
}

/// Refuses a tag nothing uses unless `--create-tag` asks for it.
pub async fn tag_refusal(env: &Env, tag: &TagRequest) -> Result<Option<Refusal>, StepError> {
    if tag.create {
        return Ok(None);
    }
    let known = tag_names(env).await?;
    if known.contains(&tag.name) {
        return Ok(None);
    }
    let labelled = Api::<Namespace>::all(env.kube.clone())
        .list(&ListParams::default().labels(&format!("{REV_LABEL}={}", tag.name)))
        .await
        .map_err(|e| kube_err("listing namespaces", e))?;
    if !labelled.items.is_empty() {
        return Ok(None);
    }
    Ok(Some(Refusal::UnknownTag {
        tag: tag.name.clone(),
        known: known.into_iter().collect(),
    }))
}

fn source_labelled_sentence(namespaces: &[String], source: &str, tag: &str) -> String {
    let first = namespaces.first().map(String::as_str).unwrap_or("NS");
    format!(
        "{} labelled istio.io/rev={source}, the source revision itself rather than the tag {tag}: \
         moving the tag does not move them, and their pods would block complete; relabel them to \
         the tag (kubectl label ns {first} istio.io/rev={tag} --overwrite), or upgrade with --mode label",
        super::first_few(
            namespaces.iter().map(|n| format!("namespace {n}")),
            8,
            "namespaces"
        ) + if namespaces.len() == 1 { " is" } else { " are" }
    )
}

fn on_delete_sentence(workloads: &[String], source: &str) -> String {
    format!(
        "{} {} updateStrategy OnDelete: a rollout restart does not replace their pods, which would \
         stay on {source} and block complete; pass --restart-ondelete to have their pods deleted \
         one at a time (each replacement ready on the target before the next), or switch them to \
         RollingUpdate",
        super::first_few(workloads, 8, "workloads"),
        if workloads.len() == 1 { "uses" } else { "use" }
    )
}

fn paused_sentence(workloads: &[crate::k8s::WorkloadRef], source: &str) -> String {
    let fix = workloads
        .first()
        .map(|w| {
            format!(
                "kubectl rollout resume deployment/{} -n {}",
                w.name, w.namespace
            )
        })
        .unwrap_or_default();
    format!(
        "{} {} paused: a restart cannot move a paused Deployment's pods, which would stay on \
         {source} and block complete; resume {} ({fix}) or take {} namespace out of the mesh, \
         then run again",
        super::first_few(workloads, 8, "workloads"),
        if workloads.len() == 1 { "is" } else { "are" },
        if workloads.len() == 1 { "it" } else { "them" },
        if workloads.len() == 1 { "its" } else { "their" },
    )
}

/// What stopped the plan from being made: Azure or the cluster could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Arm(Box<ArmError>),
    #[error("installed revision {revision:?}: {source}")]
    InstalledRevision {
        revision: String,
        #[source]
        source: RevisionError,
    },
    #[error(transparent)]
    Kube(#[from] K8sError),
    #[error("cannot check the copy of ConfigMap {ISTIO_NAMESPACE}/{from}: {source}")]
    CheckCopy {
        from: String,
        #[source]
        source: Box<K8sError>,
    },
    #[error(transparent)]
    Step(#[from] StepError),
}

impl From<ArmError> for PlanError {
    fn from(e: ArmError) -> Self {
        PlanError::Arm(Box::new(e))
    }
}

/// How preflight classifies the mesh (Azure/ARO-Tools `decide.go` names most of these).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum MeshState {
    /// One revision, an upgrade to do.
    Ready,
    /// Only the requested target is installed: nothing to do.
    AlreadyAtTarget,
    /// The cluster is not `Succeeded` (an operation runs, or the last one failed).
    NotReady {
        provisioning_state: String,
    },
    /// The add-on is not enabled.
    MeshDisabled,
    /// Two revisions, one of them the requested target: an upgrade is in progress.
    MidUpgrade {
        revisions: Vec<String>,
    },
    /// Two revisions, neither the target: a canary left behind.
    StaleCanary {
        revisions: Vec<String>,
    },
    TooManyRevisions {
        revisions: Vec<String>,
    },
    /// The requested target is older than (or the same as) the source.
    Downgrade {
        source: String,
        target: String,
    },
}

fn downgrade_sentence(source: &str, target: &str) -> String {
    format!(
        "--to {target} is not newer than the installed {source}: downgrades are not upgrades; \
         pick a newer revision (asm-canary plan lists them)"
    )
}

impl MeshState {
    /// A sentence for the person: what is wrong and what to do.
    pub fn explain(&self, cluster: &str) -> String {
        match self {
            MeshState::Ready => format!("{cluster} is ready for a canary upgrade"),
            MeshState::AlreadyAtTarget => {
                format!("{cluster} already runs only the target revision: nothing to do")
            }
            MeshState::NotReady { provisioning_state } => format!(
                "{cluster} is {provisioning_state}, not Succeeded: wait for the running operation to end (or fix the failed one) and run again"
            ),
            MeshState::MeshDisabled => format!(
                "the Istio add-on is not enabled on {cluster} (serviceMeshProfile.mode is not Istio)"
            ),
            MeshState::MidUpgrade { revisions } => format!(
                "{cluster} runs two revisions ({}) and no asm-canary run owns them; --to names the \
                 older one: to return to it, roll the canary back (asm-canary rollback --from-cluster); \
                 to finish the upgrade, run upgrade --to the newer one",
                revisions.join(", ")
            ),
            MeshState::StaleCanary { revisions } => format!(
                "{cluster} runs two revisions ({}), no asm-canary run owns them, and --to is not newer \
                 than the older one: roll the canary back (asm-canary rollback --from-cluster), or run \
                 upgrade --to a revision newer than the older one (the canary is consolidated first)",
                revisions.join(", ")
            ),
            MeshState::TooManyRevisions { revisions } => format!(
                "{cluster} reports {} revisions ({}): this needs a person",
                revisions.len(),
                revisions.join(", ")
            ),
            MeshState::Downgrade { source, target } => downgrade_sentence(source, target),
        }
    }

    pub fn is_ready(&self) -> bool {
        matches!(self, MeshState::Ready)
    }
}

/// What a run does with the mesh it finds (Azure/ARO-Tools `decide.go`'s classes): the plan
/// says it, preflight acts on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunClass {
    /// One revision: a canary upgrade.
    Upgrade,
    /// The target installed next to an older revision, no run owning it: adopt that canary
    /// and carry the upgrade on from there.
    ResumeCanary,
    /// A stale canary that is not the target: roll it back onto the older revision, then a
    /// fresh canary to the target.
    Consolidate,
    /// Only the target is installed: repair what an upgrade left behind.
    Reconcile,
    /// A failed operation: nothing a run can do until it is fixed (`--skip-if-not-ready`
    /// exits 0). A cluster busy with an operation is an [`RunClass::Upgrade`] once it ends.
    Skip,
    /// Nothing a run can start from (exit 2).
    Refuse,
}

impl RunClass {
    pub fn as_str(self) -> &'static str {
        match self {
            RunClass::Upgrade => "upgrade",
            RunClass::ResumeCanary => "resume-canary",
            RunClass::Consolidate => "consolidate",
            RunClass::Reconcile => "reconcile",
            RunClass::Skip => "skip",
            RunClass::Refuse => "refuse",
        }
    }
}

impl MeshState {
    /// The two revisions of a canary (mid-upgrade or stale).
    pub fn revisions(&self) -> Option<&[String]> {
        match self {
            MeshState::MidUpgrade { revisions } | MeshState::StaleCanary { revisions } => {
                Some(revisions)
            }
            _ => None,
        }
    }

    /// The class of run this state calls for, against `to`.
    pub fn class(&self, to: Option<&str>) -> RunClass {
        let newer_than = |rev: &str, than: &str| matches!((rev.parse::<Revision>(), than.parse::<Revision>()), (Ok(r), Ok(t)) if r > t);
        match self {
            MeshState::Ready => RunClass::Upgrade,
            MeshState::AlreadyAtTarget => RunClass::Reconcile,
            // An operation running: preflight's gate waits for it to end, then the upgrade.
            MeshState::NotReady { provisioning_state } if provisioning_state != "Failed" => {
                RunClass::Upgrade
            }
            MeshState::NotReady { .. } => RunClass::Skip,
            MeshState::MidUpgrade { revisions } => match super::adoption::older_newer(revisions) {
                Some((_, newer)) if to == Some(newer.as_str()) => RunClass::ResumeCanary,
                _ => RunClass::Refuse,
            },
            MeshState::StaleCanary { revisions } => match super::adoption::older_newer(revisions) {
                Some((older, _)) if to.is_none_or(|t| newer_than(t, &older)) => {
                    RunClass::Consolidate
                }
                _ => RunClass::Refuse,
            },
            _ => RunClass::Refuse,
        }
    }

    /// What a run of `class` does here, for the plan and preflight.
    pub fn what_it_does(&self, class: RunClass, to: Option<&str>) -> Option<String> {
        let (older, newer) = match self {
            MeshState::MidUpgrade { revisions } | MeshState::StaleCanary { revisions } => {
                super::adoption::older_newer(revisions)?
            }
            _ => return None,
        };
        let to = to.map_or("the newest upgrade offered".to_string(), str::to_string);
        match class {
            RunClass::ResumeCanary => Some(format!(
                "resume the canary: {newer} runs next to {older} and no run owns it; this run adopts it (journaled before any change), moves the tag and restarts the workloads onto {newer}, verifies, then completes (removes {older}); its rollback returns everything to {older} and removes {newer}"
            )),
            RunClass::Consolidate => Some(format!(
                "consolidate, then upgrade: {newer} is a stale canary next to {older} that no run owns; step consolidate (its own approval) moves tags, labels and workloads on {newer} back onto {older} and removes {newer}, then a fresh canary {older} → {to}"
            )),
            _ => None,
        }
    }
}

/// Classifies a cluster document against the requested target.
pub fn classify(doc: &ClusterDoc, to: Option<&str>) -> MeshState {
    let revisions = doc.revisions();
    if doc.mesh_mode() != Some("Istio") {
        return MeshState::MeshDisabled;
    }
    let state = doc.provisioning_state().unwrap_or("Unknown");
    if state != "Succeeded" {
        return MeshState::NotReady {
            provisioning_state: state.to_string(),
        };
    }
    match revisions.as_slice() {
        [] => MeshState::MeshDisabled,
        [one] => match to {
            Some(t) if t == one => MeshState::AlreadyAtTarget,
            Some(t) => match (one.parse::<Revision>(), t.parse::<Revision>()) {
                (Ok(s), Ok(tt)) if tt <= s => MeshState::Downgrade {
                    source: one.clone(),
                    target: t.to_string(),
                },
                _ => MeshState::Ready,
            },
            None => MeshState::Ready,
        },
        [_, _] => {
            if to.is_some_and(|t| revisions.iter().any(|r| r == t)) {
                MeshState::MidUpgrade { revisions }
            } else {
                MeshState::StaleCanary { revisions }
            }
        }
        _ => MeshState::TooManyRevisions { revisions },
    }
}

/// Preflight's reading: the cluster document and its mesh state against `to`.
pub async fn observe(env: &Env, to: Option<&str>) -> Result<(ClusterDoc, MeshState), ArmError> {
    let doc = env.arm.get_cluster(&env.cluster).await?;
    let state = classify(&doc, to);
    Ok((doc, state))
}

/// What ARM offers the source, and the target chosen from it: get-upgrades' decision.
#[derive(Debug, Clone)]
pub struct UpgradeChoice {
    pub offered: Vec<String>,
    pub target: Result<Revision, TargetError>,
    /// `--to` named the target.
    pub requested: bool,
}

impl UpgradeChoice {
    /// Why this target, as the plan and get-upgrades say it.
    pub fn reason(&self) -> &'static str {
        if self.requested {
            "requested with --to"
        } else {
            "the newest upgrade offered"
        }
    }
}

/// Reads `meshUpgradeProfiles/istio` and picks the target for `source`: `to` if offered,
/// else the newest upgrade.
pub async fn choose_upgrade(
    env: &Env,
    source: &str,
    to: Option<Revision>,
) -> Result<UpgradeChoice, PlanError> {
    let current: Revision = source.parse().map_err(|e| PlanError::InstalledRevision {
        revision: source.to_string(),
        source: e,
    })?;
    let profile = env.arm.mesh_upgrade_profile(&env.cluster).await?;
    let offered = profile.properties.upgrades;
    let target = choose_target(current, &offered, to);
    Ok(UpgradeChoice {
        offered,
        target,
        requested: to.is_some(),
    })
}

/// The copy of the source's shared ConfigMap to the target's name, as copy-configmap
/// decides it (by [`plan_copy`]: the plan, the step and its gate cannot disagree).
#[derive(Debug, Clone)]
pub struct ConfigMapCopy {
    /// `istio-shared-configmap-<source>`.
    pub from: String,
    /// `istio-shared-configmap-<target>`.
    pub to: String,
    /// The target as it exists now.
    pub existing: Option<ConfigMap>,
    pub decision: CopyPlan,
}

/// Reads both shared ConfigMaps and decides the copy.
pub async fn decide_copy(
    env: &Env,
    source: &str,
    target: &str,
    force: bool,
) -> Result<ConfigMapCopy, K8sError> {
    let (from, to) = (shared_configmap_name(source), shared_configmap_name(target));
    let (src, existing) = read_copy(&env.kube, ISTIO_NAMESPACE, &from, &to).await?;
    let decision = plan_copy(src.as_ref(), existing.as_ref(), &to, force);
    Ok(ConfigMapCopy {
        from,
        to,
        existing,
        decision,
    })
}

impl ConfigMapCopy {
    /// The plan's line for the copy, and a warning when the step will refuse it.
    pub fn describe(&self, source: &str) -> (String, Option<String>) {
        let (from, to) = (&self.from, &self.to);
        let ns = ISTIO_NAMESPACE;
        match &self.decision {
            CopyPlan::SkipNoSource => (format!("none to copy: {source} has no {ns}/{from}"), None),
            CopyPlan::SkipIdentical => (
                format!("{ns}/{to} already holds {from}'s data; nothing to copy"),
                None,
            ),
            CopyPlan::Overwrite(_) => (
                format!("{ns}/{from} → {to} (overwrites a different {to}: --force)"),
                None,
            ),
            CopyPlan::RefuseDifferent { .. } => (
                format!("{ns}/{from} → {to} (refused: {to} differs)"),
                Some(format!(
                    "{ns}/{to} exists with different data: copy-configmap will refuse to overwrite it; compare them, then delete it or pass --force"
                )),
            ),
            CopyPlan::Create(cm) => {
                let keys = cm.data.as_ref().map_or(0, |d| d.len())
                    + cm.binary_data.as_ref().map_or(0, |d| d.len());
                (format!("{ns}/{from} → {to} ({keys} key(s))"), None)
            }
        }
    }

    /// Refuses a copy the add-on's admission would reject: a server-side dry run of the very
    /// create the step would send, so the real webhook decides. An existing target is the
    /// step's to judge (the same data, or `--force`).
    pub async fn admission_refusal(&self, env: &Env) -> Result<Option<Refusal>, PlanError> {
        if !matches!(self.decision, CopyPlan::Create(_)) {
            return Ok(None);
        }
        match write_copy(&env.kube, ISTIO_NAMESPACE, &self.decision, true).await {
            Ok(_) => Ok(None),
            Err(e) => self.rejection(e),
        }
    }

    fn rejection(&self, e: K8sError) -> Result<Option<Refusal>, PlanError> {
        let status = match &e {
            K8sError::Api {
                source: kube::Error::Api(s),
                ..
            } => Some((s.code, s.message.clone())),
            _ => None,
        };
        match status {
            // Created meanwhile: the step decides (the same data, or --force).
            Some((409, _)) => Ok(None),
            Some((400 | 403 | 422, message)) => Ok(Some(Refusal::ConfigMapRejected {
                from: self.from.clone(),
                to: self.to.clone(),
                message,
            })),
            _ => Err(PlanError::CheckCopy {
                from: self.from.clone(),
                source: Box::new(e),
            }),
        }
    }
}

/// The decisions before the first change, in the run's order.
#[derive(Debug)]
pub struct Decisions {
    pub doc: ClusterDoc,
    pub state: MeshState,
    /// `--to`, as asked.
    pub to: Option<String>,
    /// Only when the mesh is ready for an upgrade.
    pub upgrade: Option<Upgrade>,
}

#[derive(Debug)]
pub struct Upgrade {
    pub source: String,
    pub choice: UpgradeChoice,
    /// Only when a target was chosen.
    pub copy: Option<ConfigMapCopy>,
}

/// GET the cluster → classify → upgrade profile → choose the target → decide the copy.
pub async fn decide(env: &Env, to: Option<Revision>, force: bool) -> Result<Decisions, PlanError> {
    let to_name = to.map(|t| t.to_string());
    let (doc, state) = observe(env, to_name.as_deref()).await?;
    if !state.is_ready() {
        return Ok(Decisions {
            doc,
            state,
            to: to_name,
            upgrade: None,
        });
    }
    // Ready means exactly one revision.
    let source = doc.revisions()[0].clone();
    let choice = choose_upgrade(env, &source, to).await?;
    let copy = match &choice.target {
        Ok(target) => Some(decide_copy(env, &source, &target.to_string(), force).await?),
        Err(_) => None,
    };
    Ok(Decisions {
        doc,
        state,
        to: to_name,
        upgrade: Some(Upgrade {
            source,
            choice,
            copy,
        }),
    })
}

impl Decisions {
    /// The refusals these decisions carry (the admission check is not among them: it writes,
    /// if only as a dry run).
    pub fn refusals(&self) -> Vec<Refusal> {
        let mut out = Vec::new();
        if let MeshState::Downgrade { source, target } = &self.state {
            out.push(Refusal::Downgrade {
                installed: source.clone(),
                requested: target.clone(),
            });
        }
        if let Some(Err(e)) = self.upgrade.as_ref().map(|u| &u.choice.target) {
            out.push(Refusal::NoTarget(e.clone()));
        }
        if matches!(
            self.state,
            MeshState::MidUpgrade { .. }
                | MeshState::StaleCanary { .. }
                | MeshState::TooManyRevisions { .. }
                | MeshState::MeshDisabled
        ) && self.class() == RunClass::Refuse
        {
            out.push(Refusal::Mesh(self.state.clone()));
        }
        out
    }

    /// The class of run these decisions call for.
    pub fn class(&self) -> RunClass {
        self.state.class(self.to.as_deref())
    }

    /// The plan's verdict: what a run of this class does, or why it cannot run.
    pub fn verdict(&self, cluster: &str) -> String {
        let class = self.class();
        (self.state)
            .what_it_does(class, self.to.as_deref())
            .unwrap_or_else(|| self.state.explain(cluster))
    }

    /// The revisions a run of this class moves workloads between (source, target), when it
    /// is known before the run: an upgrade's, a canary it resumes (older → newer), a stale
    /// canary it consolidates before the upgrade to `--to` (older → `--to`). What preflight's
    /// traps are read for.
    pub fn migration(&self) -> Option<(String, String)> {
        match self.class() {
            RunClass::Upgrade => {
                let u = self.upgrade.as_ref()?;
                let target = u.choice.target.as_ref().ok()?;
                Some((u.source.clone(), target.to_string()))
            }
            RunClass::ResumeCanary => super::adoption::older_newer(self.state.revisions()?),
            RunClass::Consolidate => {
                let (older, _) = super::adoption::older_newer(self.state.revisions()?)?;
                Some((older, self.to.clone()?))
            }
            _ => None,
        }
    }

    /// Why a pipeline that retries on a schedule may skip this run (`--skip-if-not-ready`):
    /// the cluster is busy or failed, or no upgrade is offered.
    pub fn not_ready(&self) -> Option<String> {
        match (&self.state, self.upgrade.as_ref().map(|u| &u.choice.target)) {
            (MeshState::NotReady { .. }, _) => Some(self.state.explain("the cluster")),
            (_, Some(Err(e))) => Some(e.to_string()),
            _ => None,
        }
    }
}

/// What a new run is refused for, read-only but for a dry-run create of the shared
/// ConfigMap's copy (which needs the right to create it, as the run does).
/// `tag`: the tag of a tag-mode run (`None` in label mode).
pub async fn refusals(
    env: &Env,
    to: Option<Revision>,
    tag: Option<&TagRequest>,
) -> Result<Vec<Refusal>, PlanError> {
    refusals_of(&decide(env, to, false).await?, env, tag).await
}

/// [`Decisions::refusals`], the unused tag, and the admission dry run when there are none.
pub async fn refusals_of(
    decisions: &Decisions,
    env: &Env,
    tag: Option<&TagRequest>,
) -> Result<Vec<Refusal>, PlanError> {
    let mut out = decisions.refusals();
    if decisions.upgrade.is_some()
        && let Some(tag) = tag
    {
        out.extend(tag_refusal(env, tag).await?);
    }
    if out.is_empty()
        && let Some(copy) = decisions.upgrade.as_ref().and_then(|u| u.copy.as_ref())
    {
        out.extend(copy.admission_refusal(env).await?);
    }
    Ok(out)
}

/// Builds the plan: preflight, the target, the copy, the tag move, the waves and the gates.
/// Reads only: the plan needs no right to write (so no admission dry run either).
pub async fn build(env: &Env, req: &PlanRequest) -> Result<Plan, PlanError> {
    let decisions = decide(env, req.to, req.force).await?;
    let installed = decisions.doc.revisions();
    let mut plan = Plan {
        schema: PLAN_SCHEMA,
        cluster: env.cluster.to_string(),
        kubernetes_version: decisions.doc.kubernetes_version().map(str::to_string),
        installed: installed.clone(),
        state: decisions.state.clone(),
        class: decisions.class(),
        verdict: decisions.verdict(&env.cluster.name),
        source: None,
        target: None,
        target_reason: None,
        offered: vec![],
        configmap: None,
        tag_move: None,
        canary: None,
        order: vec![],
        waves: vec![],
        gates: gate_lines(&req.runbook, &req.params),
        warnings: preflight_warnings(env, &installed).await?,
        pod_by_pod: vec![],
        refused: vec![],
        refusals: decisions.refusals(),
    };
    // `promote` asks only when promote_approval is on (otherwise its `when` skips it).
    let promote = param_value(req, "promote_approval").and_then(|v| v.as_bool()) == Some(true);
    if let Some(g) = plan.gates.iter_mut().find(|g| g.step == "promote") {
        g.approval = promote;
    }
    if let Some(upgrade) = &decisions.upgrade {
        plan.add_upgrade(env, req, upgrade).await?;
    } else if let Some((source, target)) = decisions.migration() {
        // A canary resumed or consolidated: its workloads meet the same traps.
        plan.add_traps(env, req, &source, &target).await?;
    }
    Ok(plan)
}

impl Plan {
    async fn add_upgrade(
        &mut self,
        env: &Env,
        req: &PlanRequest,
        upgrade: &Upgrade,
    ) -> Result<(), PlanError> {
        let source = &upgrade.source;
        self.source = Some(source.clone());
        self.offered = upgrade.choice.offered.clone();
        let target = match &upgrade.choice.target {
            Ok(t) => t.to_string(),
            Err(e) => {
                self.verdict = e.to_string();
                return Ok(());
            }
        };
        self.target_reason = Some(upgrade.choice.reason().to_string());
        if let Some(copy) = &upgrade.copy {
            let (line, warning) = copy.describe(source);
            self.configmap = Some(line);
            self.warnings.extend(warning);
        }
        self.tag_move = Some(tag_move(req, source, &target));
        if req.mode == Mode::Tag {
            let tag = TagRequest {
                name: req.tag.clone(),
                create: req.create_tag,
            };
            if let Some(refusal) = tag_refusal(env, &tag).await? {
                self.verdict = refusal.to_string();
                self.refusals.push(refusal);
            }
        }
        self.waves = plan_waves(env, req, source, &target, self).await?;
        self.add_traps(env, req, source, &target).await?;
        self.target = Some(target);
        Ok(())
    }
}

fn tag_move(req: &PlanRequest, source: &str, target: &str) -> String {
    match req.mode {
        Mode::Tag => format!(
            "tag {}: {source} → {target}, after the canary wave passed",
            req.tag
        ),
        Mode::Label => format!(
            "namespaces labelled istio.io/rev={source} → istio.io/rev={target}, wave by wave"
        ),
    }
}

/// A param as the run will see it: given on the command line, else the runbook's default.
fn param_value(req: &PlanRequest, name: &str) -> Option<Value> {
    req.params.get(name).cloned().or_else(|| {
        req.runbook
            .params
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| p.default.clone())
    })
}

fn percent(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    (part as f64 * 1000.0 / whole as f64).round() / 10.0
}

/// The waves as the run restarts them: the canary first (given, or the default), then the
/// rest in growing waves, each with what its namespaces would move and its blast radius;
/// also the plan's canary and order.
async fn plan_waves(
    env: &Env,
    req: &PlanRequest,
    source: &str,
    target: &str,
    plan: &mut Plan,
) -> Result<Vec<Wave>, StepError> {
    // Before the run, the namespaces to migrate carry the tag (or, in label mode, the source).
    let label = super::restart::label_before(req.mode, &req.tag, source);
    let nss = mesh_namespaces(env, Mode::Tag, &label, target).await?;
    if let Some(why) = super::restart::unknown_canaries_among(&nss, &label, &req.canary_namespaces)
    {
        plan.warnings.push(format!("{why}; `upgrade` refuses it"));
    }
    let mut moves: Vec<(String, MovePlan)> = plan_each(env, &nss, target).await?;
    moves.sort_by(|a, b| a.0.cmp(&b.0));
    let counts: Vec<(String, usize)> = moves
        .iter()
        .map(|(ns, p)| (ns.clone(), p.workloads.len()))
        .collect();
    let marked = super::restart::marked_canaries(env).await?;
    let (canary, choice) = choose_canary(&req.canary_namespaces, &marked, &counts);
    let growth_raw = param_value(req, "waves")
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| super::wave::DEFAULT_GROWTH.to_string());
    let growth = Growth::parse(&growth_raw).map_err(StepError::msg)?;
    let parallelism = param_value(req, "parallelism").unwrap_or(serde_json::json!(4));
    let promote = param_value(req, "promote_approval").and_then(|v| v.as_bool()) == Some(true);
    let count_of = |ns: &str| counts.iter().find(|(n, _)| n == ns).map_or(0, |c| c.1);
    let canary_size: usize = canary.iter().map(|ns| count_of(ns)).sum();
    let rest: Vec<(String, usize)> = counts
        .iter()
        .filter(|(ns, _)| !canary.contains(ns))
        .cloned()
        .collect();
    let mut groups = vec![canary.clone()];
    groups.extend(grow_waves(&rest, canary_size.max(1), &growth));
    groups.retain(|g| !g.is_empty());
    let total: usize = counts.iter().map(|c| c.1).sum();
    let mut done = 0usize;
    let mut out = Vec::new();
    for (i, group) in groups.iter().enumerate() {
        let mut wave = Wave {
            canary: i == 0 && !canary.is_empty(),
            namespaces: vec![],
            workloads: 0,
            percent_of_mesh: 0.0,
            cumulative_percent: 0.0,
            parallelism: 0,
        };
        for ns in group {
            let Some((_, p)) = moves.iter().find(|(n, _)| n == ns) else {
                continue;
            };
            wave.workloads += p.workloads.len();
            if !p.uninjected.is_empty() {
                plan.warnings.push(format!(
                    "namespace {ns}: {}",
                    super::restart::uninjected_line(&p.uninjected)
                ));
            }
            wave.namespaces.push(NamespaceCount {
                namespace: ns.clone(),
                workloads: p.workloads.len(),
                without_sidecar: p.uninjected.iter().map(|w| w.to_string()).collect(),
            });
            plan.warnings
                .extend(p.unmovable.iter().map(|u| format!("will not move {u}")));
        }
        done += wave.workloads;
        wave.percent_of_mesh = percent(wave.workloads, total);
        wave.cumulative_percent = percent(done, total);
        wave.parallelism = super::wave::parallelism_for(&parallelism, wave.workloads);
        out.push(wave);
    }
    if !canary.is_empty() {
        plan.canary = Some(CanaryPlan {
            namespaces: canary.clone(),
            chosen_by_default: choice == CanaryChoice::Default,
            chosen_by: choice,
            promote_approval: promote,
        });
    }
    plan.order = order_lines(
        req,
        source,
        target,
        &canary,
        promote,
        out.len(),
        &growth_raw,
    );
    Ok(out)
}

/// The run after `start`, in order, as sentences.
fn order_lines(
    req: &PlanRequest,
    source: &str,
    target: &str,
    canary: &[String],
    promote: bool,
    waves: usize,
    growth: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    let soak = param_value(req, "wave_soak")
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "the wave soak".into());
    let gate = format!("gate: rolled out, every proxy SYNCED for {soak}, then the analysis");
    if !canary.is_empty() {
        let still = match req.mode {
            Mode::Tag => format!("tag {} still names {source}", req.tag),
            Mode::Label => "no other namespace is relabelled".to_string(),
        };
        out.push(format!(
            "canary: {} relabelled istio.io/rev={target} directly and restarted while {still}; {gate}",
            super::first_few(canary, 8, "namespaces")
        ));
    }
    if promote {
        out.push("promote: asks for approval (a prompt, or --approve promote)".to_string());
    }
    if req.mode == Mode::Tag {
        out.push(format!("tag {}: {source} → {target}", req.tag));
    }
    let later = waves.saturating_sub(usize::from(!canary.is_empty()));
    if later > 0 {
        let relabel = match req.mode {
            Mode::Tag => String::new(),
            Mode::Label => format!(", each relabelled istio.io/rev={target} just before"),
        };
        out.push(format!(
            "{later} more wave(s), growing {growth}{relabel}; after each, the {gate}"
        ));
    }
    if req.mode == Mode::Tag && !canary.is_empty() {
        out.push(format!(
            "the canary namespaces take istio.io/rev={} back (no restart: the tag names {target} now)",
            req.tag
        ));
    }
    out
}

/// Every step's gate, as the runbook says; a param given on the command line wins over the
/// runbook's default.
pub fn gate_lines(runbook: &Runbook, params: &Map<String, Value>) -> Vec<GateLine> {
    let show = |d: &DurationSpec| match d {
        DurationSpec::Fixed(d) => asm_canary_engine::duration::format_duration(*d),
        DurationSpec::Param(p) => params
            .get(p)
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .or_else(|| {
                runbook
                    .params
                    .iter()
                    .find(|spec| spec.name == *p)
                    .and_then(|spec| spec.default.as_ref())
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| format!("${{params.{p}}}")),
    };
    runbook
        .steps
        .iter()
        .map(|s| GateLine {
            step: s.id.clone(),
            gate: s.gate.as_ref().map(|g| g.check.clone()).unwrap_or_default(),
            timeout: s
                .gate
                .as_ref()
                .map(|g| show(&g.timeout))
                .unwrap_or_default(),
            stable_for: s
                .gate
                .as_ref()
                .map(|g| show(&g.stable_for))
                .filter(|v| !v.is_empty() && v != "0s" && v != "0ms"),
            approval: matches!(s.approval, ApprovalMode::Required),
            on_failure: s.on_failure.as_str().to_string(),
        })
        .collect()
}

/// Things preflight warns about: they will not stop the run, but a person should know.
pub async fn preflight_warnings(env: &Env, installed: &[String]) -> Result<Vec<String>, StepError> {
    let mut warnings = Vec::new();
    let nss = Api::<Namespace>::all(env.kube.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| kube_err("listing namespaces", e))?;
    let tags = tag_names(env).await?;
    let meshed: Vec<String> = nss
        .items
        .iter()
        .filter(|ns| {
            ns.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(REV_LABEL))
        })
        .filter_map(|ns| ns.metadata.name.clone())
        .collect();
    let mut blockers = restart_blockers(env, &meshed).await?;
    for ns in &nss.items {
        let name = ns.metadata.name.clone().unwrap_or_default();
        let labels = ns.metadata.labels.clone().unwrap_or_default();
        if labels.get(INJECTION_LABEL).map(String::as_str) == Some("enabled") {
            warnings.push(format!(
                "namespace {name} is labelled istio-injection=enabled, which the AKS add-on ignores: its pods get no sidecar; label it istio.io/rev=<tag or revision> instead"
            ));
        }
        warnings.extend(blockers.remove(&name).unwrap_or_default());
        if let Some(rev) = labels.get(REV_LABEL)
            && !installed.contains(rev)
            && !tags.contains(rev)
        {
            warnings.push(format!(
                "namespace {name} is labelled istio.io/rev={rev}, which is neither an installed revision nor a tag: new pods there get no sidecar (or fail to start)"
            ));
        }
    }
    Ok(warnings)
}

async fn tag_names(env: &Env) -> Result<BTreeSet<String>, StepError> {
    let list = Api::<MutatingWebhookConfiguration>::all(env.kube.clone())
        .list(&ListParams::default().labels(TAG_LABEL))
        .await
        .map_err(|e| kube_err("listing tag webhooks", e))?;
    Ok(list
        .items
        .iter()
        .filter_map(|w| w.metadata.labels.as_ref()?.get(TAG_LABEL).cloned())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use serde_json::json;

    fn mk_body(mode: Option<&str>, state: &str, revisions: &[&str]) -> Value {
        let mut mesh = json!({ "istio": { "revisions": revisions } });
        if let Some(mode) = mode {
            mesh["mode"] = json!(mode);
        }
        json!({
            "location": "eastus2",
            "properties": {
                "provisioningState": state,
                "kubernetesVersion": "1.33",
                "serviceMeshProfile": mesh
            }
        })
    }

    fn mk_doc(mode: Option<&str>, state: &str, revisions: &[&str]) -> ClusterDoc {
        ClusterDoc::new(
            crate::azure::ClusterId::new(
                "00000000-0000-0000-0000-000000000000",
                "rg-sim",
                "aks-sim",
            )
            .unwrap(),
            mk_body(mode, state, revisions),
            None,
        )
    }

    /// The add-on enabled, the last operation Succeeded.
    fn mk_cluster(revisions: &[&str]) -> ClusterDoc {
        mk_doc(Some("Istio"), "Succeeded", revisions)
    }

    fn mk_busy(state: &str, revisions: &[&str]) -> ClusterDoc {
        mk_doc(Some("Istio"), state, revisions)
    }

    fn mk_no_mesh(mode: Option<&str>) -> ClusterDoc {
        mk_doc(mode, "Succeeded", &[])
    }

    fn revs(r: &[&str]) -> Vec<String> {
        r.iter().map(|s| s.to_string()).collect()
    }

    type Case = (&'static str, ClusterDoc, Option<&'static str>, MeshState);

    /// One cluster document per mesh state (and the ways to reach it), with what it is.
    fn every_mesh_state() -> Vec<Case> {
        use MeshState::*;
        let two = &["asm-1-27", "asm-1-28"];
        let three = &["asm-1-26", "asm-1-27", "asm-1-28"];
        let not_ready = |s: &str| NotReady {
            provisioning_state: s.into(),
        };
        vec![
            (
                "not ready: an operation runs",
                mk_busy("Updating", &["asm-1-27"]),
                None,
                not_ready("Updating"),
            ),
            (
                "not ready: the last operation failed",
                mk_busy("Failed", &["asm-1-27"]),
                Some("asm-1-28"),
                not_ready("Failed"),
            ),
            (
                "no mesh: the add-on is off",
                mk_no_mesh(Some("Disabled")),
                None,
                MeshDisabled,
            ),
            (
                "no mesh: no mode at all, even mid-operation",
                mk_doc(None, "Updating", &[]),
                None,
                MeshDisabled,
            ),
            (
                "no mesh: Istio without a revision",
                mk_cluster(&[]),
                None,
                MeshDisabled,
            ),
            (
                "one revision: the newest upgrade",
                mk_cluster(&["asm-1-27"]),
                None,
                Ready,
            ),
            (
                "one revision: --to a newer one",
                mk_cluster(&["asm-1-27"]),
                Some("asm-1-29"),
                Ready,
            ),
            (
                "one revision: --to it",
                mk_cluster(&["asm-1-27"]),
                Some("asm-1-27"),
                AlreadyAtTarget,
            ),
            (
                "downgrade: --to an older one",
                mk_cluster(&["asm-1-27"]),
                Some("asm-1-26"),
                Downgrade {
                    source: "asm-1-27".into(),
                    target: "asm-1-26".into(),
                },
            ),
            (
                "target installed with another",
                mk_cluster(two),
                Some("asm-1-28"),
                MidUpgrade {
                    revisions: revs(two),
                },
            ),
            (
                "stale canary: --to neither",
                mk_cluster(two),
                Some("asm-1-29"),
                StaleCanary {
                    revisions: revs(two),
                },
            ),
            (
                "stale canary: no --to",
                mk_cluster(two),
                None,
                StaleCanary {
                    revisions: revs(two),
                },
            ),
            (
                "more than two",
                mk_cluster(three),
                Some("asm-1-28"),
                TooManyRevisions {
                    revisions: revs(three),
                },
            ),
        ]
    }

    #[test]
    fn classify_every_mesh_state() {
        for (name, doc, to, want) in every_mesh_state() {
            let got = classify(&doc, to);
            assert_eq!(got.is_ready(), want == MeshState::Ready, "{name}");
            assert_eq!(got, want, "{name}");
        }
    }

    /// Regression: a canary no run owns was always refused (exit 2), though the run could
    /// adopt it (`--to` it) or consolidate it (`--to` a newer one).
    #[test]
    fn a_canary_no_run_owns_is_resumed_or_consolidated_not_refused() {
        use RunClass::*;
        let two = mk_cluster(&["asm-1-27", "asm-1-28"]);
        let cases = [
            (&two, Some("asm-1-28"), ResumeCanary),
            (&two, Some("asm-1-29"), Consolidate),
            (&two, None, Consolidate),
            (&two, Some("asm-1-27"), Refuse),
            (&two, Some("asm-1-26"), Refuse),
        ];
        for (doc, to, want) in cases {
            let state = classify(doc, to);
            assert_eq!(state.class(to), want, "{to:?}");
            let decisions = Decisions {
                doc: doc.clone(),
                state,
                to: to.map(str::to_string),
                upgrade: None,
            };
            assert_eq!(decisions.refusals().is_empty(), want != Refuse, "{to:?}");
            let verdict = decisions.verdict("aks-sim");
            match want {
                Refuse => assert!(verdict.contains("rollback --from-cluster"), "{verdict}"),
                _ => assert!(
                    verdict.contains("adopt") || verdict.contains("consolidate"),
                    "{verdict}"
                ),
            }
        }
        let cluster = |revs: &[&str]| mk_cluster(revs);
        assert_eq!(classify(&cluster(&["asm-1-27"]), None).class(None), Upgrade);
        let at = Some("asm-1-27");
        assert_eq!(classify(&cluster(&["asm-1-27"]), at).class(at), Reconcile);
        assert_eq!(
            classify(&mk_busy("Updating", &["asm-1-27"]), None).class(None),
            Upgrade,
            "the gate waits for the operation, then the upgrade"
        );
        assert_eq!(
            classify(&mk_busy("Failed", &["asm-1-27"]), None).class(None),
            Skip
        );
        let three = cluster(&["asm-1-26", "asm-1-27", "asm-1-28"]);
        assert_eq!(classify(&three, None).class(None), Refuse);
    }

    #[test]
    fn refusals_say_what_the_pre_run_check_always_said() {
        let downgrade = Refusal::Downgrade {
            installed: "asm-1-27".into(),
            requested: "asm-1-26".into(),
        };
        assert_eq!(
            downgrade.to_string(),
            MeshState::Downgrade {
                source: "asm-1-27".into(),
                target: "asm-1-26".into()
            }
            .explain("aks-sim")
        );
        assert_eq!(
            downgrade.to_string(),
            "--to asm-1-26 is not newer than the installed asm-1-27: downgrades are not upgrades; pick a newer revision (asm-canary plan lists them)"
        );
        let rejected = Refusal::ConfigMapRejected {
            from: "istio-shared-configmap-asm-1-27".into(),
            to: "istio-shared-configmap-asm-1-29".into(),
            message: "denied".into(),
        };
        assert_eq!(
            rejected.to_string(),
            "ConfigMap aks-istio-system/istio-shared-configmap-asm-1-27 cannot be copied to istio-shared-configmap-asm-1-29: denied; fix istio-shared-configmap-asm-1-27 (remove the field the add-on does not allow) and run again"
        );
        let decisions = Decisions {
            doc: mk_cluster(&["asm-1-27"]),
            state: classify(&mk_cluster(&["asm-1-27"]), Some("asm-1-26")),
            to: Some("asm-1-26".into()),
            upgrade: None,
        };
        assert_eq!(decisions.refusals(), vec![downgrade]);
    }

    fn mk_cm(name: &str, data: Option<&[(&str, &str)]>) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ISTIO_NAMESPACE.into()),
                ..Default::default()
            },
            data: data.map(|d| {
                d.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            }),
            ..Default::default()
        }
    }

    fn mk_copy(src: Option<ConfigMap>, dst: Option<ConfigMap>, force: bool) -> ConfigMapCopy {
        let (from, to) = (
            shared_configmap_name("asm-1-27"),
            shared_configmap_name("asm-1-29"),
        );
        ConfigMapCopy {
            decision: plan_copy(src.as_ref(), dst.as_ref(), &to, force),
            existing: dst,
            from,
            to,
        }
    }

    /// Regression: the plan compared the data field by field, so `None` and an empty map
    /// differed and the plan announced a refusal the step would never make.
    #[test]
    fn plan_and_step_agree_on_a_configmap_without_data_and_one_with_an_empty_map() {
        let from = shared_configmap_name("asm-1-27");
        let to = shared_configmap_name("asm-1-29");
        for (src, dst) in [
            (mk_cm(&from, Some(&[])), mk_cm(&to, None)),
            (mk_cm(&from, None), mk_cm(&to, Some(&[]))),
        ] {
            let copy = mk_copy(Some(src), Some(dst), false);
            assert_eq!(copy.decision, CopyPlan::SkipIdentical);
            assert_eq!(
                copy.describe("asm-1-27"),
                (
                    "aks-istio-system/istio-shared-configmap-asm-1-29 already holds istio-shared-configmap-asm-1-27's data; nothing to copy".to_string(),
                    None
                )
            );
        }
    }

    #[test]
    fn the_configmap_line_for_every_copy_decision() {
        let from = shared_configmap_name("asm-1-27");
        let to = shared_configmap_name("asm-1-29");
        let mesh = [("mesh", "accessLogFile: /dev/stdout\n")];
        let other = [("mesh", "accessLogFile: \"\"\n")];
        let line = |c: ConfigMapCopy| c.describe("asm-1-27");
        assert_eq!(
            line(mk_copy(None, None, false)).0,
            "none to copy: asm-1-27 has no aks-istio-system/istio-shared-configmap-asm-1-27"
        );
        assert_eq!(
            line(mk_copy(Some(mk_cm(&from, Some(&mesh))), None, false)).0,
            "aks-istio-system/istio-shared-configmap-asm-1-27 → istio-shared-configmap-asm-1-29 (1 key(s))"
        );
        let (refused, warning) = line(mk_copy(
            Some(mk_cm(&from, Some(&mesh))),
            Some(mk_cm(&to, Some(&other))),
            false,
        ));
        assert_eq!(
            refused,
            "aks-istio-system/istio-shared-configmap-asm-1-27 → istio-shared-configmap-asm-1-29 (refused: istio-shared-configmap-asm-1-29 differs)"
        );
        assert!(warning.is_some_and(|w| w.contains("pass --force")));
        assert_eq!(
            line(mk_copy(
                Some(mk_cm(&from, Some(&mesh))),
                Some(mk_cm(&to, Some(&other))),
                true
            )),
            (
                "aks-istio-system/istio-shared-configmap-asm-1-27 → istio-shared-configmap-asm-1-29 (overwrites a different istio-shared-configmap-asm-1-29: --force)".to_string(),
                None
            )
        );
    }

    #[test]
    fn an_admission_denial_of_the_dry_run_is_a_refusal_other_failures_are_not() {
        let copy = mk_copy(
            Some(mk_cm(&shared_configmap_name("asm-1-27"), Some(&[]))),
            None,
            false,
        );
        let api = |code: u16| K8sError::Api {
            action: "create",
            kind: "ConfigMap",
            target: "aks-istio-system/istio-shared-configmap-asm-1-29".into(),
            source: kube::Error::Api(Box::new(
                serde_json::from_value(json!({ "code": code, "message": "denied" })).unwrap(),
            )),
        };
        for code in [400, 403, 422] {
            assert!(
                matches!(
                    copy.rejection(api(code)),
                    Ok(Some(Refusal::ConfigMapRejected { ref message, .. })) if message == "denied"
                ),
                "{code}"
            );
        }
        assert!(matches!(copy.rejection(api(409)), Ok(None)));
        assert!(matches!(
            copy.rejection(api(500)),
            Err(PlanError::CheckCopy { .. })
        ));
    }
}
