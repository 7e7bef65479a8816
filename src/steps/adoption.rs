//! Recovery from the cluster alone (issue 12 #2): a canary that no run owns — started by a
//! plain ARM PUT (`az aks mesh upgrade start`), or by a run whose checkpoint was lost — is
//! *adopted* by a new run before any change: the run observes the canary (the tag webhooks
//! and namespace labels that name it, the pods it injected) and journals an `adopt-canary`
//! entry. From then on the canary is this run's, as if it had installed it: `start` accepts
//! it, and the rollback moves the tag, labels and workloads back onto the older revision and
//! removes it. A canary with no such entry (and no update of the revisions in the journal)
//! stays another's: the "not ours" rule of [`super::cluster`] still protects it.
//!
//! | class (plan) | cluster | what the run does |
//! |---|---|---|
//! | resume-canary | `[S, T]`, `--to T` | adopts `T`, then the canary steps from the tag move on |
//! | consolidate | `[S, C]`, `--to` neither | adopts `C`, rolls it back onto `S` (step `consolidate`), then a fresh canary |
//! | rollback (`rollback --from-cluster`) | `[S, T]` | adopts `T`, then the runbook's rollback sequence |

use asm_canary_engine::{ActionCtx, JournalEntry, StepError};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::ListParams;
use serde::{Deserialize, Serialize};

use super::{Env, k8s_err, kube_err};
use crate::istio::tag::tag_revision;
use crate::istio::{INGRESS_NAMESPACE, ISTIO_NAMESPACE, REV_LABEL, Revision, TAG_LABEL};
use crate::k8s::{Owner, PodInfo, WorkloadRef};

/// The journal entry that makes a canary this run's: written before any change.
pub const KIND_ADOPT: &str = "adopt-canary";

/// A canary adopted from the cluster, as observed when it was adopted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adoption {
    /// The revision everything returns to on a rollback (the older of the two).
    pub older: String,
    /// The canary (the newer of the two).
    pub newer: String,
    /// The tags whose webhook pointed at the canary.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The namespaces labelled `istio.io/rev=<canary>`.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Application pods the canary had injected.
    #[serde(default)]
    pub pods: usize,
}

impl Adoption {
    /// What was found, in a sentence.
    pub fn describe(&self) -> String {
        format!(
            "adopted the canary {} next to {} (no run owns it): tag(s) on it: {}; namespaces labelled with it: {}; {} application pod(s) on it",
            self.newer,
            self.older,
            list_or_none(&self.tags),
            list_or_none(&self.namespaces),
            self.pods
        )
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// The older and the newer of two installed revisions (by asm-X-Y order).
pub fn older_newer(revisions: &[String]) -> Option<(String, String)> {
    let [a, b] = revisions else { return None };
    let (ra, rb) = (a.parse::<Revision>().ok()?, b.parse::<Revision>().ok()?);
    if ra < rb {
        Some((a.clone(), b.clone()))
    } else {
        Some((b.clone(), a.clone()))
    }
}

/// The adoption in this run's journal, if any.
pub fn adoption(journal: &[JournalEntry]) -> Option<Adoption> {
    journal
        .iter()
        .rev()
        .find(|e| e.kind == KIND_ADOPT)
        .and_then(|e| serde_json::from_value(e.details.clone()).ok())
}

/// This run adopted `revision` as its canary.
pub fn adopted(journal: &[JournalEntry], revision: &str) -> bool {
    adoption(journal).is_some_and(|a| a.newer == revision)
}

/// Reads what uses the canary `newer`: tag webhooks, namespace labels, pods.
pub async fn observe(env: &Env, older: &str, newer: &str) -> Result<Adoption, StepError> {
    let sel = format!("{REV_LABEL}={newer}");
    let (tags, nss, pods) = futures::try_join!(
        tags_pointing_at(env, newer),
        async {
            Api::<Namespace>::all(env.kube.clone())
                .list(&ListParams::default().labels(&sel))
                .await
                .map_err(|e| kube_err(format!("listing namespaces {sel}"), e))
        },
        app_pods_on(env, newer),
    )?;
    Ok(Adoption {
        older: older.to_string(),
        newer: newer.to_string(),
        tags,
        namespaces: nss
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect(),
        pods: pods.len(),
    })
}

/// Journals the adoption of `newer` (once: a resumed step finds its entry) before any change.
pub async fn adopt(
    env: &Env,
    ctx: &ActionCtx,
    older: &str,
    newer: &str,
) -> Result<Adoption, StepError> {
    if let Some(a) = adoption(&ctx.journal.all()).filter(|a| a.newer == newer) {
        return Ok(a);
    }
    let found = observe(env, older, newer).await?;
    let details = serde_json::to_value(&found)
        .map_err(|e| StepError::with_source("recording the adoption", e))?;
    let id = ctx.journal.intent(KIND_ADOPT, newer, details).await?;
    ctx.journal.done(id, None).await?;
    ctx.events.warn(found.describe());
    Ok(found)
}

/// The tags whose webhook points at `revision`.
pub(super) async fn tags_pointing_at(env: &Env, revision: &str) -> Result<Vec<String>, StepError> {
    let list = Api::<MutatingWebhookConfiguration>::all(env.kube.clone())
        .list(&ListParams::default().labels(TAG_LABEL))
        .await
        .map_err(|e| kube_err("listing tag webhooks", e))?;
    let mut tags: Vec<String> = list
        .items
        .iter()
        .filter(|w| tag_revision(w).as_deref() == Some(revision))
        .filter_map(|w| w.metadata.labels.as_ref()?.get(TAG_LABEL).cloned())
        .collect();
    tags.sort();
    tags.dedup();
    Ok(tags)
}

/// Application pods (outside the add-on's namespaces) that `revision` injected.
async fn app_pods_on(env: &Env, revision: &str) -> Result<Vec<PodInfo>, StepError> {
    let pods = crate::k8s::pods::list_pods(&env.kube, None, None)
        .await
        .map_err(|e| k8s_err("listing pods", e))?;
    Ok(pods
        .into_iter()
        .filter(|p| !p.terminating)
        .filter(|p| p.revision.revision() == Some(revision))
        .filter(|p| p.namespace != ISTIO_NAMESPACE && p.namespace != INGRESS_NAMESPACE)
        .collect())
}

/// The workloads with pods on `revision` now, once each.
pub async fn workloads_on(env: &Env, revision: &str) -> Result<Vec<WorkloadRef>, StepError> {
    let mut out: Vec<WorkloadRef> = Vec::new();
    for p in app_pods_on(env, revision).await? {
        if let Owner::Workload(w) = p.owner
            && !out.contains(&w)
        {
            out.push(w);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revs(r: &[&str]) -> Vec<String> {
        r.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_older_of_two_revisions_is_the_one_to_return_to_in_either_order() {
        let want = Some(("asm-1-27".to_string(), "asm-1-28".to_string()));
        assert_eq!(older_newer(&revs(&["asm-1-27", "asm-1-28"])), want);
        assert_eq!(older_newer(&revs(&["asm-1-28", "asm-1-27"])), want);
        assert_eq!(older_newer(&revs(&["asm-1-27"])), None);
        assert_eq!(older_newer(&revs(&["asm-1-27", "x"])), None);
    }
}
