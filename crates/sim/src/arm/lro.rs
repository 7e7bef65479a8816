//! Long-running operations: a PUT starts one, it runs in simulated time, the add-on applies
//! the new revisions part-way through, and the `Azure-AsyncOperation` URL reports
//! InProgress → Succeeded | Failed | Canceled (reference §3.1).

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::ArmInner;
use super::document::{self, new_etag, set_provisioning_state};
use super::errors::{ArmError, OPERATIONS_API_VERSION};
use crate::Shared;
use crate::scenario::{FailStatus, LroFailure, OperationKind};

/// One update operation, as `/_sim/state` shows it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    pub id: String,
    pub kind: OperationKind,
    /// `InProgress`, `Succeeded`, `Failed` or `Canceled`.
    pub status: String,
    pub start_time: DateTime<Utc>,
    pub end_time: Option<DateTime<Utc>>,
    pub previous_revisions: Vec<String>,
    pub revisions: Vec<String>,
    /// Whether the add-on has been told to run `revisions`.
    pub applied: bool,
    pub error: Option<Value>,
    #[serde(skip)]
    failure: Option<LroFailure>,
    /// The cluster before the PUT, to roll back to.
    #[serde(skip)]
    before: Value,
}

impl Operation {
    pub(crate) fn new(
        kind: OperationKind,
        before: Value,
        revisions: Vec<String>,
        failure: Option<LroFailure>,
    ) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            kind,
            status: "InProgress".into(),
            start_time: Utc::now(),
            end_time: None,
            previous_revisions: document::revisions_of(&before),
            revisions,
            applied: false,
            error: None,
            failure,
            before,
        }
    }

    fn status_body(&self) -> Value {
        let mut body = json!({
            "name": self.id,
            "status": self.status,
            "startTime": rfc3339(self.start_time),
        });
        if let Some(end) = self.end_time {
            body["endTime"] = json!(rfc3339(end));
        }
        if let Some(error) = &self.error {
            body["error"] = error.clone();
        }
        body
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Picks the scenario's failure for an operation of `kind`, if one is still due.
pub(crate) fn planned_failure(
    inner: &mut ArmInner,
    failures: &[LroFailure],
    kind: OperationKind,
) -> Option<LroFailure> {
    for (i, f) in failures.iter().enumerate() {
        let matches = f.on == OperationKind::Any || f.on == kind;
        let fired = inner.failures_fired.get(i).copied().unwrap_or(0);
        if matches && (f.times == 0 || fired < f.times) {
            if let Some(n) = inner.failures_fired.get_mut(i) {
                *n += 1;
            }
            return Some(f.clone());
        }
    }
    None
}

/// The `Azure-AsyncOperation` URL: absolute, with its own api-version and signed-looking
/// parameters, as AKS hands it out. Clients must poll it verbatim.
pub(crate) fn operation_url(shared: &Shared, id: &str) -> String {
    let info = &shared.info;
    let ticks = Utc::now().timestamp_micros() * 10;
    let cert: [u8; 24] = rand::random();
    let sig = Sha256::digest(format!("{id}|{ticks}|{}", info.sim_token));
    let hash = Sha256::digest(format!("{ticks}|{id}"));
    format!(
        "{}/subscriptions/{}/providers/Microsoft.ContainerService/locations/{}/operations/{id}?api-version={OPERATIONS_API_VERSION}&t={ticks}&c={}&s={}&h={}",
        info.arm_endpoint,
        info.subscription,
        info.location,
        URL_SAFE_NO_PAD.encode(cert),
        URL_SAFE_NO_PAD.encode(sig),
        URL_SAFE_NO_PAD.encode(hash),
    )
}

/// Runs operation `id` to its end in simulated time.
pub(crate) fn spawn(shared: Arc<Shared>, id: String) {
    tokio::spawn(async move {
        let faults = &shared.scenario.arm;
        let total = Duration::from_secs_f64(faults.lro_seconds);
        let apply = total.mul_f64(faults.apply_at);
        shared.clock.sleep(apply).await;
        {
            let mut inner = shared.arm.lock();
            let Some(op) = inner.operations.iter_mut().find(|o| o.id == id) else {
                return;
            };
            if op.status != "InProgress" {
                return;
            }
            // A failing operation never reaches the add-on: the mesh stays as it was.
            if op.failure.is_none() {
                op.applied = true;
                let spec = document::mesh_spec(&inner.cluster);
                publish(&shared, spec);
            }
        }
        shared.clock.sleep(total.saturating_sub(apply)).await;
        let mut inner = shared.arm.lock();
        let Some(idx) = inner.operations.iter().position(|o| o.id == id) else {
            return;
        };
        if inner.operations[idx].status != "InProgress" {
            return;
        }
        match inner.operations[idx].failure.clone() {
            None => finish(&mut inner, idx, "Succeeded", None),
            Some(f) => {
                let status = match f.status {
                    FailStatus::Failed => "Failed",
                    FailStatus::Canceled => "Canceled",
                };
                let error = json!({
                    "code": "ResourceOperationFailure",
                    "message": format!("The resource operation completed with terminal provisioning state '{status}'."),
                    "details": [{"code": f.code, "message": f.message}],
                });
                finish(&mut inner, idx, status, Some(error));
            }
        }
    });
}

fn publish(shared: &Shared, spec: crate::MeshSpec) {
    shared.mesh.send_if_modified(|current| {
        if *current == spec {
            false
        } else {
            *current = spec;
            true
        }
    });
}

/// Ends operation `idx`; on failure the cluster's revisions go back to what they were.
fn finish(inner: &mut ArmInner, idx: usize, status: &str, error: Option<Value>) {
    let op = &mut inner.operations[idx];
    op.status = status.to_string();
    op.end_time = Some(Utc::now());
    op.error = error.clone();
    let before = op.before.clone();
    inner.running = None;
    match status {
        "Succeeded" => inner.counters.operations_succeeded += 1,
        "Failed" => inner.counters.operations_failed += 1,
        _ => inner.counters.operations_canceled += 1,
    }
    if status != "Succeeded" {
        // The add-on rolls the whole change back: the cluster is what it was before the PUT.
        inner.cluster = before;
    }
    let doc = &mut inner.cluster;
    if status != "Succeeded" {
        if let Some(props) = doc.get_mut("properties").and_then(Value::as_object_mut)
            && let Some(e) = &error
        {
            props.insert("status".into(), json!({"provisioningError": e}));
        }
    } else if let Some(props) = doc.get_mut("properties").and_then(Value::as_object_mut) {
        props.remove("status");
    }
    set_provisioning_state(doc, status);
    doc["eTag"] = json!(new_etag());
}

/// `GET …/locations/{loc}/operations/{id}`: always 200 while the operation is known.
pub(crate) fn status(shared: &Shared, id: &str) -> Result<Response, ArmError> {
    let inner = shared.arm.lock();
    let Some(op) = inner.operations.iter().find(|o| o.id == id) else {
        return Err(ArmError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!(
                "Operation '{id}' was not found; poll the Azure-AsyncOperation URL the PUT returned."
            ),
        ));
    };
    Ok((StatusCode::OK, axum::Json(op.status_body())).into_response())
}

/// `POST …/abort`: cancels the running operation; the cluster goes back to what it was and
/// the add-on follows.
pub(crate) fn abort(shared: &Arc<Shared>) -> Result<Response, ArmError> {
    let mut inner = shared.arm.lock();
    let Some(running) = inner.running.clone() else {
        return Err(ArmError::new(
            StatusCode::CONFLICT,
            "OperationNotAllowed",
            "There is no operation in progress to abort on this managed cluster.",
        ));
    };
    let Some(idx) = inner.operations.iter().position(|o| o.id == running) else {
        return Err(ArmError::operation_not_allowed());
    };
    let before = inner.operations[idx].before.clone();
    let error = json!({
        "code": "OperationCanceled",
        "message": "The operation was canceled by an abort request (AbortLatestOperation).",
    });
    finish(&mut inner, idx, "Canceled", Some(error));
    publish(shared, document::mesh_spec(&before));
    Ok(StatusCode::NO_CONTENT.into_response())
}
