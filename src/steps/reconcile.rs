//! `reconcile-mesh` (issue 12 #2): the cluster already runs only the target, but an upgrade
//! done by hand (or one that lost its run) left things behind. Repaired, each journaled
//! before it is made:
//!
//! - the installed revision's shared ConfigMap missing while a removed revision's remains:
//!   copied to the installed revision's name (the MeshConfig the mesh ran with);
//! - a revision tag whose webhook points at a revision no longer installed: new pods in its
//!   namespaces fail to start (the webhook fails closed), so it is pointed at the installed one;
//! - gateway leader-election Leases of revisions no longer installed: deleted.

use std::sync::Arc;

use asm_canary_engine::{Action, ActionCtx, ActionOutcome, StepError};
use async_trait::async_trait;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::ListParams;
use serde_json::json;

use super::{Env, k8s_err, kube_err, outputs};
use crate::istio::tag::tag_revision;
use crate::istio::{ISTIO_NAMESPACE, Revision, TAG_LABEL, shared_configmap_name};
use crate::k8s::{CopyPlan, delete_leases, plan_copy, write_copy};

const CM_PREFIX: &str = "istio-shared-configmap-";
const LEASE_PREFIXES: [&str; 2] = ["istio-gateway-deployment-", "istio-gateway-status-leader-"];

pub struct ReconcileMesh(pub Arc<Env>);

#[async_trait]
impl Action for ReconcileMesh {
    async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
        let env = &self.0;
        let revision: String = ctx.input("revision")?;
        let mut repaired = Vec::new();
        repaired.extend(shared_configmap(env, ctx, &revision).await?);
        repaired.extend(stale_tags(env, ctx, &revision).await?);
        repaired.extend(orphan_leases(env, ctx, &revision).await?);
        let out = outputs([("repaired", json!(repaired))]);
        if repaired.is_empty() {
            return Ok(ActionOutcome::already_done(
                out,
                format!(
                    "nothing to repair: {revision}'s shared ConfigMap, tags and Leases are in order"
                ),
            ));
        }
        ctx.events
            .info(format!("repaired: {}", repaired.join(", ")));
        Ok(ActionOutcome::done(out))
    }
}

/// The revision a name ends with (`<prefix>asm-X-Y`), if it is one.
fn revision_suffix<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    name.strip_prefix(prefix)
        .filter(|r| r.parse::<Revision>().is_ok())
}

/// Copies the newest removed revision's shared ConfigMap to `revision`'s missing one.
async fn shared_configmap(
    env: &Env,
    ctx: &ActionCtx,
    revision: &str,
) -> Result<Option<String>, StepError> {
    let api: Api<ConfigMap> = Api::namespaced(env.kube.clone(), ISTIO_NAMESPACE);
    let to = shared_configmap_name(revision);
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| kube_err("listing the shared ConfigMaps", e))?;
    if list
        .items
        .iter()
        .any(|c| c.metadata.name.as_deref() == Some(&to))
    {
        return Ok(None);
    }
    let Some(from) = (list.items.iter())
        .filter_map(|c| {
            let name = c.metadata.name.as_deref()?;
            let rev: Revision = revision_suffix(name, CM_PREFIX)?.parse().ok()?;
            Some((rev, c))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, c)| c)
    else {
        return Ok(None);
    };
    let from_name = from.metadata.name.clone().unwrap_or_default();
    let plan = plan_copy(Some(from), None, &to, false);
    if !matches!(plan, CopyPlan::Create(_)) {
        return Ok(None);
    }
    let id = ctx
        .journal
        .intent(
            "configmap-repair",
            &to,
            json!({ "from": from_name, "reconcile": true }),
        )
        .await?;
    write_copy(&env.kube, ISTIO_NAMESPACE, &plan, false)
        .await
        .map_err(|e| k8s_err(format!("creating ConfigMap {to} from {from_name}"), e))?;
    ctx.journal.done(id, None).await?;
    Ok(Some(format!("configmap/{to} (from {from_name})")))
}

/// Points every tag webhook on a revision that is not installed at `revision`.
async fn stale_tags(env: &Env, ctx: &ActionCtx, revision: &str) -> Result<Vec<String>, StepError> {
    let list = Api::<MutatingWebhookConfiguration>::all(env.kube.clone())
        .list(&ListParams::default().labels(TAG_LABEL))
        .await
        .map_err(|e| kube_err("listing tag webhooks", e))?;
    let mut out = Vec::new();
    for wh in &list.items {
        let Some(tag) = wh.metadata.labels.as_ref().and_then(|l| l.get(TAG_LABEL)) else {
            continue;
        };
        let Some(on) = tag_revision(wh).filter(|r| r != revision) else {
            continue;
        };
        let name = wh.metadata.name.clone().unwrap_or_default();
        let id = ctx
            .journal
            .intent(
                "tag-repair",
                &name,
                json!({ "tag": tag, "from": on, "to": revision, "reconcile": true }),
            )
            .await?;
        super::tag::apply_tag(env, tag, revision).await?;
        ctx.journal.done(id, None).await?;
        ctx.events.info(format!(
            "tag {tag} pointed at {on}, which is not installed: new pods in its namespaces could not start; it points at {revision} now"
        ));
        out.push(format!("tag {tag}: {on} → {revision}"));
    }
    Ok(out)
}

/// Deletes the gateway leader-election Leases of revisions other than `revision`.
async fn orphan_leases(
    env: &Env,
    ctx: &ActionCtx,
    revision: &str,
) -> Result<Vec<String>, StepError> {
    let list = Api::<Lease>::namespaced(env.kube.clone(), ISTIO_NAMESPACE)
        .list(&ListParams::default())
        .await
        .map_err(|e| kube_err("listing the Leases", e))?;
    let names: Vec<String> = (list.items.into_iter())
        .filter_map(|l| l.metadata.name)
        .filter(|n| {
            LEASE_PREFIXES
                .iter()
                .any(|p| revision_suffix(n, p).is_some_and(|r| r != revision))
        })
        .collect();
    if names.is_empty() {
        return Ok(vec![]);
    }
    let id = ctx
        .journal
        .intent(
            "lease-delete",
            &names.join(","),
            json!({ "reconcile": true }),
        )
        .await?;
    let deleted = delete_leases(&env.kube, ISTIO_NAMESPACE, &names)
        .await
        .map_err(|e| k8s_err("deleting the orphaned gateway Leases", e))?;
    ctx.journal.done(id, Some(json!(deleted))).await?;
    Ok(deleted
        .into_iter()
        .filter(|d| d.deleted)
        .map(|d| format!("lease/{}", d.name))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_ending_in_a_revision_are_a_revisions_leftovers() {
        assert_eq!(
            revision_suffix("istio-shared-configmap-asm-1-27", CM_PREFIX),
            Some("asm-1-27")
        );
        assert_eq!(
            revision_suffix("istio-shared-configmap-custom", CM_PREFIX),
            None
        );
        assert_eq!(
            revision_suffix("istio-gateway-status-leader-asm-1-26", LEASE_PREFIXES[1]),
            Some("asm-1-26")
        );
        assert_eq!(revision_suffix("asm-canary-lock", LEASE_PREFIXES[0]), None);
    }
}
