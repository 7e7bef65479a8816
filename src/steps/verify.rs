//! Step 6 (verify-proxies, gate proxies-synced): proxy status from the revision's istiod,
//! read like `istioctl proxy-status` reads it, through a port-forward to `/debug/syncz` on
//! port 15014 (which answers only loopback callers, so the API server's pod proxy is no use).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use asm_canary_engine::{Action, ActionCtx, ActionOutcome, Gate, GateCtx, GateStatus, StepError};
use async_trait::async_trait;
use serde_json::json;

use super::{Env, k8s_err, outputs};
use crate::istio::ProxyStatus;

pub struct VerifyProxies(pub Arc<Env>);
pub struct ProxiesSynced(pub Arc<Env>);

/// The proxy-status rows of every running istiod of `revision`.
pub async fn proxy_status(env: &Env, revision: &str) -> Result<Vec<ProxyStatus>, StepError> {
    crate::k8s::mesh::proxy_status(&env.kube, revision, None)
        .await
        .map_err(|e| k8s_err(format!("reading proxy status from istiod {revision}"), e))
}

#[async_trait]
impl Action for VerifyProxies {
    async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
        let revision: String = ctx.input("revision")?;
        // Read-only: the action records what istiod sees now; the gate judges it over time.
        let rows = proxy_status(&self.0, &revision).await?;
        let synced = rows.iter().filter(|r| r.is_synced()).count();
        ctx.events.info(format!(
            "istiod {revision} reports {} proxies, {synced} SYNCED",
            rows.len()
        ));
        Ok(ActionOutcome::done(outputs([
            ("proxies", json!(rows.len())),
            ("synced", json!(synced)),
        ])))
    }
}

#[async_trait]
impl Gate for ProxiesSynced {
    async fn check(&self, ctx: &mut GateCtx) -> Result<GateStatus, StepError> {
        let revision: String = ctx.input("revision")?;
        let namespaces: BTreeSet<String> = ctx
            .input_opt::<Vec<String>>("namespaces")?
            .unwrap_or_default()
            .into_iter()
            .collect();
        synced_status(&self.0, &revision, namespaces.into_iter().collect()).await
    }
}

/// One check of the proxies of `namespaces` against `revision`'s istiod: passed when every
/// running, injected pod there is connected and SYNCED. The `proxies-synced` gate and the gate
/// after every restart wave ([`super::wave::gate_wave`]) both judge by it.
pub async fn synced_status(
    env: &Env,
    revision: &str,
    namespaces: Vec<String>,
) -> Result<GateStatus, StepError> {
    if namespaces.is_empty() {
        return Ok(GateStatus::Passed {
            detail: Some("no migrated namespace to verify".into()),
        });
    }
    // What istiod reports and the pods that should be there, read at once.
    let (rows, listed) = futures::try_join!(proxy_status(env, revision), async {
        crate::k8s::pods::pods_of_namespaces(&env.kube, namespaces)
            .await
            .map_err(|e| k8s_err("listing pods", e))
    },)?;
    let by_proxy: BTreeMap<&str, &ProxyStatus> =
        rows.iter().map(|r| (r.proxy.as_str(), r)).collect();
    // Every running, injected pod of the migrated namespaces must be connected and synced.
    let mut expected = Vec::new();
    for (_, pods) in listed {
        for p in pods {
            if p.terminating || !p.revision.is_injected() || p.phase.as_deref() != Some("Running") {
                continue;
            }
            expected.push(p);
        }
    }
    let mut problems = Vec::new();
    let mut synced = 0u64;
    for p in &expected {
        let key = format!("{}.{}", p.name, p.namespace);
        match by_proxy.get(key.as_str()) {
            None => problems.push(format!(
                "{}/{} not connected to istiod {revision}",
                p.namespace, p.name
            )),
            Some(row) if row.is_synced() => synced += 1,
            Some(row) => problems.push(format!(
                "{}/{} {}",
                p.namespace,
                p.name,
                row.unsynced().join(", ")
            )),
        }
    }
    let total = expected.len() as u64;
    if problems.is_empty() {
        return Ok(GateStatus::Passed {
            detail: Some(format!("{synced}/{total} proxies SYNCED on {revision}")),
        });
    }
    Ok(GateStatus::waiting_progress(
        format!(
            "{synced}/{total} proxies SYNCED; {}{}",
            problems
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join("; "),
            if problems.len() > 3 {
                format!("; {} more", problems.len() - 3)
            } else {
                String::new()
            }
        ),
        synced,
        Some(total),
    ))
}
