//! Mesh upgrade profiles (per cluster) and mesh revision profiles (per region), reference §2.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::cluster::kubernetes_minor;
use super::document::revisions_of;
use super::errors::ArmError;
use crate::Shared;
use crate::scenario::MeshRevisionShape;

/// `MeshRevision`: an absent `upgrades` key when there are none, as the real service answers.
fn mesh_revision(shape: &MeshRevisionShape, upgrades: &[String]) -> Value {
    let mut v = json!({
        "revision": shape.revision,
        "compatibleWith": [{"name": "kubernetes", "versions": shape.kubernetes}],
    });
    if !upgrades.is_empty() {
        v["upgrades"] = json!(upgrades);
    }
    v
}

/// `GET …/managedClusters/{name}/meshUpgradeProfiles[/{mode}]`.
pub(crate) fn upgrade_profiles(shared: &Shared, mode: Option<&str>) -> Result<Response, ArmError> {
    let info = &shared.info;
    let doc = shared.arm.lock().cluster.clone();
    if let Some(m) = mode
        && !m.eq_ignore_ascii_case("istio")
    {
        return Err(ArmError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("Mesh upgrade profile '{m}' was not found; the only mesh mode is 'istio'."),
        ));
    }
    let enabled = doc
        .pointer("/properties/serviceMeshProfile/mode")
        .and_then(Value::as_str)
        .is_some_and(|m| m.eq_ignore_ascii_case("Istio"));
    let revisions = revisions_of(&doc);
    if !enabled || revisions.is_empty() {
        return match mode {
            None => Ok((StatusCode::OK, axum::Json(json!({"value": []}))).into_response()),
            Some(_) => Err(ArmError::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                "The managed cluster has no service mesh enabled, so it has no mesh upgrade profile.",
            )),
        };
    }
    if revisions.len() >= 2 {
        return Err(ArmError::new(
            StatusCode::CONFLICT,
            "ServiceMeshUpgradeInProgress",
            format!(
                "A service mesh upgrade is in progress: revisions {} are both installed. Complete or roll back the upgrade before listing upgrades.",
                revisions.join(" and ")
            ),
        ));
    }
    let current = &revisions[0];
    let k8s = doc
        .pointer("/properties/currentKubernetesVersion")
        .and_then(Value::as_str)
        .map(kubernetes_minor)
        .unwrap_or_default();
    let profile = &shared.scenario.cluster.mesh_revisions;
    let properties = match profile.iter().find(|p| &p.revision == current) {
        Some(shape) => {
            // Upgrades the cluster's Kubernetes version can run (the service filters them).
            let upgrades: Vec<String> = shape
                .upgrades
                .iter()
                .filter(|u| {
                    profile
                        .iter()
                        .find(|p| &p.revision == *u)
                        .is_some_and(|p| k8s.is_empty() || p.kubernetes.contains(&k8s))
                })
                .cloned()
                .collect();
            mesh_revision(shape, &upgrades)
        }
        None => json!({"revision": current}),
    };
    let item = json!({
        "id": format!("{}/meshUpgradeProfiles/istio", info.cluster_id()),
        "type": "Microsoft.ContainerService/managedClusters/meshUpgradeProfiles",
        "name": "istio",
        "properties": properties,
    });
    let body = match mode {
        Some(_) => item,
        None => json!({"value": [item]}),
    };
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}

/// `GET /subscriptions/{sub}/providers/Microsoft.ContainerService/locations/{loc}/meshRevisionProfiles[/{mode}]`.
pub(crate) fn revision_profiles(
    shared: &Shared,
    location: &str,
    mode: Option<&str>,
) -> Result<Response, ArmError> {
    if let Some(m) = mode
        && !m.eq_ignore_ascii_case("istio")
    {
        return Err(ArmError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("Mesh revision profile '{m}' was not found; the only mesh mode is 'istio'."),
        ));
    }
    let revisions: Vec<Value> = shared
        .scenario
        .cluster
        .mesh_revisions
        .iter()
        .map(|shape| mesh_revision(shape, &shape.upgrades))
        .collect();
    let item = json!({
        "id": format!(
            "/subscriptions/{}/providers/Microsoft.ContainerService/locations/{location}/meshRevisionProfiles/istio",
            shared.info.subscription
        ),
        "type": "Microsoft.ContainerService/locations/meshRevisionProfiles",
        "name": "istio",
        "properties": {"meshRevisions": revisions},
    });
    let body = match mode {
        Some(_) => item,
        None => json!({"value": [item]}),
    };
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}
