//! `/_sim/state` and `/_sim/requests`: what tests read to check the simulator's side of a run;
//! `POST /_sim/patch?revision=REV`: AKS rolls the next Istio patch of an installed revision.
//! Bearer-authenticated with the simulator's token (`ASM_CANARY_SIM_TOKEN`) or a valid ARM token.

use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::document::{etag, provisioning_state, revisions_of};
use super::errors::ArmError;
use super::token::TokenCheck;
use crate::Shared;

pub(crate) fn handle(
    shared: &Shared,
    method: &Method,
    segs: &[&str],
    uri: &Uri,
    headers: &HeaderMap,
) -> Response {
    if let Err(err) = authorize(shared, headers) {
        return err.into_response();
    }
    if let [_, "patch"] = segs {
        return roll_patch(shared, method, uri);
    }
    if method != Method::GET {
        return ArmError::method_not_allowed(method.as_str(), uri.path()).into_response();
    }
    match segs {
        [_, "state"] => (StatusCode::OK, axum::Json(state(shared))).into_response(),
        [_, "requests"] => {
            let since: u64 = uri
                .query()
                .and_then(|q| {
                    serde_urlencoded::from_str::<Vec<(String, String)>>(q)
                        .ok()?
                        .into_iter()
                        .find(|(k, _)| k == "since")
                        .and_then(|(_, v)| v.parse().ok())
                })
                .unwrap_or(0);
            let requests: Vec<_> = shared
                .requests
                .snapshot()
                .into_iter()
                .filter(|r| r.seq > since)
                .collect();
            (StatusCode::OK, axum::Json(json!({ "requests": requests }))).into_response()
        }
        _ => ArmError::no_route(method.as_str(), uri.path()).into_response(),
    }
}

/// `POST /_sim/patch?revision=asm-1-27`: `{"revision", "version", "proxyImage"}`; 404 when
/// the revision is not installed.
fn roll_patch(shared: &Shared, method: &Method, uri: &Uri) -> Response {
    if method != Method::POST {
        return ArmError::method_not_allowed(method.as_str(), uri.path()).into_response();
    }
    let revision = uri
        .query()
        .and_then(|q| {
            serde_urlencoded::from_str::<Vec<(String, String)>>(q)
                .ok()?
                .into_iter()
                .find(|(k, _)| k == "revision")
                .map(|(_, v)| v)
        })
        .unwrap_or_default();
    match shared.kube.roll_patch(&revision) {
        Ok(version) => (
            StatusCode::OK,
            axum::Json(json!({
                "revision": revision,
                "version": version,
                "proxyImage": shared.kube.injected_proxy_image(&revision),
            })),
        )
            .into_response(),
        Err(message) => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": {"code": "RevisionNotInstalled", "message": message}})),
        )
            .into_response(),
    }
}

fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<(), ArmError> {
    match super::bearer(headers) {
        None => Err(ArmError::missing_token()),
        Some(Err(())) => Err(ArmError::invalid_token()),
        Some(Ok(token)) if token == shared.info.sim_token => Ok(()),
        Some(Ok(token)) => match shared.arm.check_token(token) {
            TokenCheck::Valid => Ok(()),
            TokenCheck::Expired(at) => Err(ArmError::expired_token(at)),
            TokenCheck::Unknown => Err(ArmError::invalid_token()),
        },
    }
}

/// `{"arm": {...}, "kube": {...}}`.
pub fn state(shared: &Shared) -> serde_json::Value {
    let arm = {
        let inner = shared.arm.lock();
        json!({
            "cluster": shared.info.cluster,
            "revisions": revisions_of(&inner.cluster),
            "provisioningState": provisioning_state(&inner.cluster),
            "eTag": etag(&inner.cluster),
            "mesh": *shared.mesh.borrow(),
            "runningOperation": inner.running,
            "operations": inner.operations,
            "counters": inner.counters,
            "scenario": shared.scenario.name,
        })
    };
    json!({ "arm": arm, "kube": crate::kube::state_summary(shared) })
}
