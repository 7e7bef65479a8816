//! The gate after start: both control planes up, their injectors registered, their
//! per-revision ingress gateways ready.

use std::sync::Arc;

use asm_canary_engine::{Gate, GateCtx, GateStatus, StepError};
use async_trait::async_trait;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;

use super::{Env, kube_err};
use crate::istio::{
    INGRESS_NAMESPACE, ISTIO_NAMESPACE, ingress_gateway_name, istiod_name, istiod_selector,
    revision_webhook_name,
};

pub struct ControlPlanesReady(pub Arc<Env>);

/// A pod restarting this often while waiting in CrashLoopBackOff will not come up by itself.
const CRASHLOOP_RESTARTS: i32 = 3;

fn available(d: &Deployment) -> (i32, i32) {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let have = d
        .status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0);
    (have, want)
}

/// What one revision's control plane still lacks (empty when ready), or a hard failure.
pub async fn control_plane_gaps(
    env: &Env,
    revision: &str,
    gateway_modes: &[String],
) -> Result<Result<Vec<String>, String>, StepError> {
    let mut gaps = Vec::new();
    let deploys = Api::<Deployment>::namespaced(env.kube.clone(), ISTIO_NAMESPACE);
    let name = istiod_name(revision);
    match deploys
        .get_opt(&name)
        .await
        .map_err(|e| kube_err(format!("reading Deployment {ISTIO_NAMESPACE}/{name}"), e))?
    {
        None => gaps.push(format!("Deployment {name} does not exist yet")),
        Some(d) => {
            let (have, want) = available(&d);
            if have < want.max(1) {
                gaps.push(format!("{name}: {have}/{want} available"));
            }
        }
    }
    let pods = Api::<Pod>::namespaced(env.kube.clone(), ISTIO_NAMESPACE)
        .list(&ListParams::default().labels(&istiod_selector(revision)))
        .await
        .map_err(|e| kube_err(format!("listing istiod pods of {revision}"), e))?;
    for pod in &pods.items {
        for cs in pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .into_iter()
            .flatten()
        {
            let waiting = cs
                .state
                .as_ref()
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.as_deref());
            if waiting == Some("CrashLoopBackOff") && cs.restart_count >= CRASHLOOP_RESTARTS {
                return Ok(Err(format!(
                    "istiod pod {ISTIO_NAMESPACE}/{} is in CrashLoopBackOff ({} restarts): the {revision} control plane will not come up",
                    pod.metadata.name.clone().unwrap_or_default(),
                    cs.restart_count
                )));
            }
        }
    }
    let webhook = revision_webhook_name(revision);
    if Api::<MutatingWebhookConfiguration>::all(env.kube.clone())
        .get_opt(&webhook)
        .await
        .map_err(|e| kube_err(format!("reading MutatingWebhookConfiguration {webhook}"), e))?
        .is_none()
    {
        gaps.push(format!("injector webhook {webhook} is not registered"));
    }
    let gateways = Api::<Deployment>::namespaced(env.kube.clone(), INGRESS_NAMESPACE);
    for mode in gateway_modes {
        let gw = ingress_gateway_name(mode, revision);
        match gateways
            .get_opt(&gw)
            .await
            .map_err(|e| kube_err(format!("reading Deployment {INGRESS_NAMESPACE}/{gw}"), e))?
        {
            None => gaps.push(format!("ingress gateway {gw} does not exist yet")),
            Some(d) => {
                let (have, want) = available(&d);
                if have < want.max(1) {
                    gaps.push(format!("{gw}: {have}/{want} available"));
                }
            }
        }
    }
    Ok(Ok(gaps))
}

#[async_trait]
impl Gate for ControlPlanesReady {
    async fn check(&self, ctx: &mut GateCtx) -> Result<GateStatus, StepError> {
        let revisions: Vec<String> = ctx.input("revisions")?;
        let modes: Vec<String> = ctx.input_opt("ingress_gateways")?.unwrap_or_default();
        let mut gaps = Vec::new();
        for rev in &revisions {
            match control_plane_gaps(&self.0, rev, &modes).await? {
                Err(fatal) => return Ok(GateStatus::failed(fatal)),
                Ok(g) => gaps.extend(g),
            }
        }
        if gaps.is_empty() {
            Ok(GateStatus::Passed {
                detail: Some(format!(
                    "istiod {} available, injectors registered{}",
                    revisions.join(" and "),
                    if modes.is_empty() {
                        String::new()
                    } else {
                        ", gateways ready".to_string()
                    }
                )),
            })
        } else {
            Ok(GateStatus::waiting(gaps.join("; ")))
        }
    }

    async fn wait_for_change(&self, ctx: &mut GateCtx) {
        let api = Api::<Deployment>::namespaced(self.0.kube.clone(), ISTIO_NAMESPACE);
        super::wake_on_change(ctx, api).await
    }
}
