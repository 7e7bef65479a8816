//! Step 2 (copy-shared-configmap, gate configmap-copied) and its undo (delete-target-configmap).
//!
//! The add-on merges `istio-shared-configmap-<rev>` over its own defaults; the target
//! revision's copy must exist before its istiod starts, or the canary runs without the
//! user's MeshConfig (REGISTRY_ONLY egress, access logs…). The step, its gate and the plan
//! read one decision, [`crate::k8s::plan_copy`], through [`super::plan::decide_copy`].

use std::sync::Arc;

use asm_canary_engine::{Action, ActionCtx, ActionOutcome, Gate, GateCtx, GateStatus, StepError};
use async_trait::async_trait;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::DeleteParams;
use serde_json::json;

use super::plan::{ConfigMapCopy, decide_copy};
use super::{Env, k8s_err, kube_err, outputs};
use crate::istio::{ISTIO_NAMESPACE, shared_configmap_name};
use crate::k8s::{CopyPlan, write_copy};

const KIND_CREATE: &str = "configmap-create";

pub struct CopySharedConfigMap(pub Arc<Env>);
pub struct ConfigMapCopied(pub Arc<Env>);
pub struct DeleteTargetConfigMap(pub Arc<Env>);

fn api(env: &Env) -> Api<ConfigMap> {
    Api::namespaced(env.kube.clone(), ISTIO_NAMESPACE)
}

/// The copy as the plan decides it, read for this step.
async fn decide(
    env: &Env,
    source: &str,
    target: &str,
    force: bool,
) -> Result<ConfigMapCopy, StepError> {
    decide_copy(env, source, target, force)
        .await
        .map_err(|e| k8s_err("reading the shared ConfigMaps", e))
}

#[async_trait]
impl Action for CopySharedConfigMap {
    async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
        let source: String = ctx.input("source")?;
        let target: String = ctx.input("target")?;
        let force: bool = ctx.input_opt("force")?.unwrap_or(false);
        let copy = decide(&self.0, &source, &target, force).await?;
        let (from, to) = (&copy.from, &copy.to);
        let out = outputs([("configmap", json!(to)), ("source_configmap", json!(from))]);
        // A resumed step whose create landed finds the copy identical: close the entry.
        let in_flight = ctx.journal.find(KIND_CREATE, to).filter(|e| !e.is_done());
        match &copy.decision {
            CopyPlan::SkipNoSource => Ok(ActionOutcome::skipped(format!(
                "{ISTIO_NAMESPACE}/{from} does not exist: the source revision has no custom MeshConfig to carry over"
            ))),
            CopyPlan::SkipIdentical => {
                if let Some(entry) = in_flight {
                    ctx.journal
                        .done(asm_canary_engine::EntryId(entry.seq), None)
                        .await?;
                    return Ok(ActionOutcome::done(out));
                }
                Ok(ActionOutcome::already_done(
                    out,
                    format!("{ISTIO_NAMESPACE}/{to} already holds the same data"),
                ))
            }
            CopyPlan::RefuseDifferent { differing_keys, .. } => Err(StepError::msg(format!(
                "{ISTIO_NAMESPACE}/{to} already exists with different data (keys: {}); \
                 it was not overwritten. Compare it with {from}, then delete it or rerun with --force",
                differing_keys.join(", ")
            ))),
            CopyPlan::Create(_) | CopyPlan::Overwrite(_) => {
                write(&self.0, ctx, &copy).await?;
                Ok(ActionOutcome::done(out))
            }
        }
    }
}

/// Creates (or, forced, overwrites) the target: journaled first, with the data it replaces.
async fn write(env: &Env, ctx: &ActionCtx, copy: &ConfigMapCopy) -> Result<(), StepError> {
    let (from, to) = (&copy.from, &copy.to);
    let overwrite = copy.existing.is_some();
    let previous = copy
        .existing
        .as_ref()
        .map(|d| json!({"data": d.data, "binaryData": d.binary_data}));
    let id = ctx
        .journal
        .intent(
            KIND_CREATE,
            to,
            json!({ "from": from, "overwrite": overwrite, "previous": previous }),
        )
        .await?;
    write_copy(&env.kube, ISTIO_NAMESPACE, &copy.decision, false)
        .await
        .map_err(|e| k8s_err(format!("copying {ISTIO_NAMESPACE}/{from} to {to}"), e))?;
    ctx.journal.done(id, None).await?;
    ctx.events.info(format!(
        "copied {ISTIO_NAMESPACE}/{from} to {to}{}",
        if overwrite {
            " (overwrote, --force)"
        } else {
            ""
        }
    ));
    Ok(())
}

#[async_trait]
impl Gate for ConfigMapCopied {
    async fn check(&self, ctx: &mut GateCtx) -> Result<GateStatus, StepError> {
        let source: String = ctx.input("source")?;
        let target: String = ctx.input("target")?;
        Ok(copied(&decide(&self.0, &source, &target, false).await?))
    }
}

/// The gate reads the step's own decision: nothing left to copy is a copy done.
fn copied(copy: &ConfigMapCopy) -> GateStatus {
    let to = &copy.to;
    match copy.decision {
        CopyPlan::SkipNoSource => GateStatus::Passed {
            detail: Some("no source ConfigMap: nothing to copy".into()),
        },
        CopyPlan::SkipIdentical => GateStatus::Passed {
            detail: Some(format!("{ISTIO_NAMESPACE}/{to} holds the source's data")),
        },
        CopyPlan::Create(_) => {
            GateStatus::waiting(format!("{ISTIO_NAMESPACE}/{to} does not exist yet"))
        }
        CopyPlan::Overwrite(_) | CopyPlan::RefuseDifferent { .. } => GateStatus::failed(format!(
            "{ISTIO_NAMESPACE}/{to} exists but its data differs from the source's"
        )),
    }
}

#[async_trait]
impl Action for DeleteTargetConfigMap {
    async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
        let target: String = ctx.input("target")?;
        let to = shared_configmap_name(&target);
        // Only what this run created: a ConfigMap a person made beforehand is theirs.
        let created = ctx
            .journal
            .all()
            .into_iter()
            .any(|e| e.kind == KIND_CREATE && e.target == to && !is_overwrite(&e.details));
        let source: Option<String> = ctx.input_opt("source")?;
        if !created
            && let Some(older) =
                source.filter(|_| super::adoption::adopted(&ctx.journal.all(), &target))
        {
            // An adopted canary's ConfigMap is a copy of the older one's, if that has one.
            let removed = delete_canary_configmap(&self.0, ctx, &older, &target).await?;
            return Ok(ActionOutcome::done(super::outputs([(
                "removed",
                serde_json::json!(removed),
            )])));
        }
        if !created {
            return Ok(ActionOutcome::skipped(format!(
                "this run did not create {ISTIO_NAMESPACE}/{to}"
            )));
        }
        delete_configmap(&self.0, ctx, &to).await
    }
}

fn is_overwrite(details: &serde_json::Value) -> bool {
    details.get("overwrite").and_then(|v| v.as_bool()) == Some(true)
}

/// Deletes `aks-istio-system/<name>`, journaled; absent already counts as done.
pub(crate) async fn delete_configmap(
    env: &Env,
    ctx: &ActionCtx,
    name: &str,
) -> Result<ActionOutcome, StepError> {
    let api = api(env);
    let exists = api
        .get_opt(name)
        .await
        .map_err(|e| kube_err(format!("reading ConfigMap {ISTIO_NAMESPACE}/{name}"), e))?;
    if exists.is_none() {
        return Ok(ActionOutcome::already_done(
            outputs([("deleted", json!(name))]),
            format!("{ISTIO_NAMESPACE}/{name} is already gone"),
        ));
    }
    let id = ctx
        .journal
        .intent("configmap-delete", name, json!({}))
        .await?;
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => {
            return Err(kube_err(
                format!("deleting ConfigMap {ISTIO_NAMESPACE}/{name}"),
                e,
            ));
        }
    }
    ctx.journal.done(id, None).await?;
    ctx.events
        .info(format!("deleted ConfigMap {ISTIO_NAMESPACE}/{name}"));
    Ok(ActionOutcome::done(outputs([("deleted", json!(name))])))
}

/// Deletes the canary's shared ConfigMap when the older revision has one (then the canary's
/// is a copy of it, made for the canary); journaled. What was deleted.
pub async fn delete_canary_configmap(
    env: &Env,
    ctx: &ActionCtx,
    older: &str,
    canary: &str,
) -> Result<Vec<String>, StepError> {
    let api: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(env.kube.clone(), ISTIO_NAMESPACE);
    let older_cm = shared_configmap_name(older);
    let has = api
        .get_opt(&older_cm)
        .await
        .map_err(|e| kube_err(format!("reading ConfigMap {older_cm}"), e))?
        .is_some();
    if !has {
        return Ok(vec![]);
    }
    let cm = shared_configmap_name(canary);
    match delete_configmap(env, ctx, &cm).await? {
        ActionOutcome::Done { .. } => Ok(vec![format!("configmap/{cm}")]),
        _ => Ok(vec![]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::plan_copy;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn mk_cm(name: &str, data: Option<&[(&str, &str)]>) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
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

    fn gate(src: Option<ConfigMap>, dst: Option<ConfigMap>) -> GateStatus {
        let to = "istio-shared-configmap-asm-1-29".to_string();
        copied(&ConfigMapCopy {
            from: "istio-shared-configmap-asm-1-27".into(),
            decision: plan_copy(src.as_ref(), dst.as_ref(), &to, false),
            existing: dst,
            to,
        })
    }

    /// Regression: the gate compared the data field by field, so a copy the step judged
    /// identical (no data against an empty map) failed the gate and rolled the run back.
    #[test]
    fn the_gate_passes_what_the_step_judged_identical() {
        let (a, b) = (
            "istio-shared-configmap-asm-1-27",
            "istio-shared-configmap-asm-1-29",
        );
        let passed = |s: &GateStatus| matches!(s, GateStatus::Passed { .. });
        assert!(passed(&gate(
            Some(mk_cm(a, Some(&[]))),
            Some(mk_cm(b, None))
        )));
        assert!(passed(&gate(None, None)));
        assert!(passed(&gate(
            Some(mk_cm(a, Some(&[("mesh", "x")]))),
            Some(mk_cm(b, Some(&[("mesh", "x")])))
        )));
        assert!(!passed(&gate(Some(mk_cm(a, Some(&[("mesh", "x")]))), None)));
        assert!(!passed(&gate(
            Some(mk_cm(a, Some(&[("mesh", "x")]))),
            Some(mk_cm(b, Some(&[("mesh", "y")])))
        )));
    }
}
