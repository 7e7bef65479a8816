//! Step 2 (copy-shared-configmap, gate configmap-copied) and its undo (delete-target-configmap).
//!
//! The add-on merges `istio-shared-configmap-<rev>` over its own defaults; the target
//! revision's copy must exist before its istiod starts, or the canary runs without the
//! user's MeshConfig (REGISTRY_ONLY egress, access logs…).

use std::sync::Arc;

use asm_canary_engine::{Action, ActionCtx, ActionOutcome, Gate, GateCtx, GateStatus, StepError};
use async_trait::async_trait;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;

use super::{Env, kube_err, outputs};
use crate::istio::{ISTIO_NAMESPACE, shared_configmap_name};
use crate::k8s::{CopyPlan, plan_copy};

const KIND_CREATE: &str = "configmap-create";

pub struct CopySharedConfigMap(pub Arc<Env>);
pub struct ConfigMapCopied(pub Arc<Env>);
pub struct DeleteTargetConfigMap(pub Arc<Env>);

fn api(env: &Env) -> Api<ConfigMap> {
    Api::namespaced(env.kube.clone(), ISTIO_NAMESPACE)
}

async fn read_pair(
    env: &Env,
    source: &str,
    target: &str,
) -> Result<(Option<ConfigMap>, Option<ConfigMap>), StepError> {
    let api = api(env);
    let from = shared_configmap_name(source);
    let to = shared_configmap_name(target);
    let src = api
        .get_opt(&from)
        .await
        .map_err(|e| kube_err(format!("reading ConfigMap {ISTIO_NAMESPACE}/{from}"), e))?;
    let dst = api
        .get_opt(&to)
        .await
        .map_err(|e| kube_err(format!("reading ConfigMap {ISTIO_NAMESPACE}/{to}"), e))?;
    Ok((src, dst))
}

#[async_trait]
impl Action for CopySharedConfigMap {
    async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
        let source: String = ctx.input("source")?;
        let target: String = ctx.input("target")?;
        let force: bool = ctx.input_opt("force")?.unwrap_or(false);
        let to = shared_configmap_name(&target);
        let from = shared_configmap_name(&source);
        let (src, dst) = read_pair(&self.0, &source, &target).await?;
        let out = outputs([("configmap", json!(to)), ("source_configmap", json!(from))]);
        // A resumed step whose create landed finds the copy identical: close the entry.
        let in_flight = ctx.journal.find(KIND_CREATE, &to).filter(|e| !e.is_done());
        match plan_copy(src.as_ref(), dst.as_ref(), &to, force) {
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
            CopyPlan::RefuseDifferent { differing_keys } => Err(StepError::msg(format!(
                "{ISTIO_NAMESPACE}/{to} already exists with different data (keys: {}); \
                 it was not overwritten. Compare it with {from}, then delete it or rerun with --force",
                differing_keys.join(", ")
            ))),
            CopyPlan::Create(cm) | CopyPlan::Overwrite(cm) => {
                let overwrite = dst.is_some();
                let previous = dst
                    .as_ref()
                    .map(|d| json!({"data": d.data, "binaryData": d.binary_data}));
                let id = ctx
                    .journal
                    .intent(
                        KIND_CREATE,
                        &to,
                        json!({ "from": from, "overwrite": overwrite, "previous": previous }),
                    )
                    .await?;
                let api = api(&self.0);
                let res = if overwrite {
                    api.replace(&to, &PostParams::default(), &cm).await
                } else {
                    api.create(&PostParams::default(), &cm).await
                };
                res.map_err(|e| {
                    kube_err(
                        format!("writing ConfigMap {ISTIO_NAMESPACE}/{to} (copy of {from})"),
                        e,
                    )
                })?;
                ctx.journal.done(id, None).await?;
                ctx.events.info(format!(
                    "copied {ISTIO_NAMESPACE}/{from} to {to}{}",
                    if overwrite {
                        " (overwrote, --force)"
                    } else {
                        ""
                    }
                ));
                Ok(ActionOutcome::done(out))
            }
        }
    }
}

#[async_trait]
impl Gate for ConfigMapCopied {
    async fn check(&self, ctx: &mut GateCtx) -> Result<GateStatus, StepError> {
        let source: String = ctx.input("source")?;
        let target: String = ctx.input("target")?;
        let (src, dst) = read_pair(&self.0, &source, &target).await?;
        let to = shared_configmap_name(&target);
        Ok(match (src, dst) {
            (None, _) => GateStatus::Passed {
                detail: Some("no source ConfigMap: nothing to copy".into()),
            },
            (Some(_), None) => {
                GateStatus::waiting(format!("{ISTIO_NAMESPACE}/{to} does not exist yet"))
            }
            (Some(s), Some(d)) if s.data == d.data && s.binary_data == d.binary_data => {
                GateStatus::Passed {
                    detail: Some(format!("{ISTIO_NAMESPACE}/{to} holds the source's data")),
                }
            }
            (Some(_), Some(_)) => GateStatus::failed(format!(
                "{ISTIO_NAMESPACE}/{to} exists but its data differs from the source's"
            )),
        })
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
