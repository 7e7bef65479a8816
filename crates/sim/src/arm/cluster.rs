//! The managed cluster resource: its JSON document, GET, PUT (round-trip, eTag, validation,
//! LRO start), PATCH of tags, and the kubeconfig from `listClusterUserCredential`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::document::{etag, new_etag, revisions_of, set_provisioning_state};
use super::errors::ArmError;
use super::lro;
use crate::Shared;
use crate::scenario::{MeshRevisionShape, OperationKind};

/// Top-level fields the service owns: a PUT cannot change them.
const READ_ONLY_TOP: &[&str] = &["id", "name", "type", "eTag", "systemData"];
/// Fields under `properties` the service owns.
const READ_ONLY_PROPERTIES: &[&str] = &[
    "provisioningState",
    "powerState",
    "currentKubernetesVersion",
    "fqdn",
    "privateFQDN",
    "azurePortalFQDN",
    "maxAgentPools",
    "resourceUID",
    "status",
];

pub(crate) fn get(shared: &Shared) -> Response {
    let doc = shared.arm.lock().cluster.clone();
    (StatusCode::OK, axum::Json(doc)).into_response()
}

/// `If-Match` / `If-None-Match` as AKS applies them (reference §1.5).
fn check_preconditions(
    headers: &HeaderMap,
    current: &str,
    mismatch_409: bool,
) -> Result<(), ArmError> {
    let get = |name: header::HeaderName| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("\u{0}").trim().to_string())
    };
    let if_match = get(header::IF_MATCH).filter(|v| !v.is_empty());
    let if_none_match = get(header::IF_NONE_MATCH).filter(|v| !v.is_empty());
    if if_match.is_some() && if_none_match.is_some() {
        return Err(ArmError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "The If-Match and If-None-Match headers cannot be used together; send If-Match with the eTag you read.",
        ));
    }
    if let Some(inm) = if_none_match {
        if inm != "*" {
            return Err(ArmError::new(
                StatusCode::BAD_REQUEST,
                "InvalidRequest",
                format!("If-None-Match must be empty or '*', not '{inm}'."),
            ));
        }
        return Err(ArmError::new(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
            "The managed cluster already exists and If-None-Match is '*'.",
        ));
    }
    if let Some(im) = if_match {
        let given = im.trim_start_matches("W/").trim_matches('"').to_string();
        if given != "*" && given != current && mismatch_409 {
            // What AKS has been seen answering (reference §1.5).
            let mut err = ArmError::new(
                StatusCode::CONFLICT,
                "EtagMismatch",
                "Operation is not allowed: Another operation is in progress",
            );
            err.details.push(json!({
                "code": "EtagMismatch",
                "message": "rpc error: code = FailedPrecondition desc = Etag mismatched",
            }));
            return Err(err);
        }
        if given != "*" && given != current {
            return Err(ArmError::new(
                StatusCode::PRECONDITION_FAILED,
                "PreconditionFailed",
                format!(
                    "Operation failed: the eTag '{given}' in the If-Match header does not match the current eTag '{current}' of the managed cluster; get the cluster again and retry."
                ),
            ));
        }
    }
    Ok(())
}

fn parse_body(body: &Bytes) -> Result<serde_json::Map<String, Value>, ArmError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ArmError::invalid_request_content(&format!(
            "{e}. Path '', line {}, position {}.",
            e.line(),
            e.column()
        ))
    })?;
    match value {
        Value::Object(map) => Ok(map),
        other => Err(ArmError::invalid_request_content(&format!(
            "Error converting value {other} to type 'ManagedCluster'. Path '', line 1, position 1."
        ))),
    }
}

/// `PUT` of the cluster: checked and validated as AKS does, then an update operation starts
/// (it applies the new revisions part-way through, in simulated time).
pub(crate) fn put(
    shared: &Arc<Shared>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ArmError> {
    let faults = &shared.scenario.arm;
    // ARM deserializes the body before anything else: a body that is not a JSON object is a
    // 400 `InvalidRequestContent` even while an operation runs (not a 409).
    let mut body = parse_body(body)?;
    let mut inner = shared.arm.lock();
    if inner.running.is_some() {
        return Err(ArmError::operation_not_allowed());
    }
    let seen = inner.puts_seen;
    inner.puts_seen += 1;
    if faults.conflict_every > 0 && seen.is_multiple_of(u64::from(faults.conflict_every)) {
        return Err(ArmError::operation_not_allowed());
    }
    check_preconditions(headers, &etag(&inner.cluster), faults.etag_mismatch_409)?;

    let old = inner.cluster.clone();
    if body.get("location").and_then(Value::as_str).is_none() {
        return Err(ArmError::new(
            StatusCode::BAD_REQUEST,
            "LocationRequired",
            "The location property is required for this definition.",
        ));
    }
    let props = body
        .entry("properties")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| {
            ArmError::invalid_request_content(
                "Error converting value to type 'ManagedClusterProperties'. Path 'properties'.",
            )
        })?;
    check_kubernetes_version(props, &old)?;
    let new_revisions = put_mesh_profile(props, &old, &shared.scenario.cluster.mesh_revisions)?;
    let doc = with_service_fields(Value::Object(body), &old);

    let old_revisions = revisions_of(&old);
    let kind = if new_revisions.iter().any(|r| !old_revisions.contains(r)) {
        OperationKind::Start
    } else if new_revisions.len() < old_revisions.len() {
        OperationKind::Remove
    } else {
        OperationKind::Any
    };
    let failure = lro::planned_failure(&mut inner, &shared.scenario.arm.lro_failures, kind);
    let op = lro::Operation::new(kind, old, new_revisions, failure);
    let op_id = op.id.clone();
    inner.operations.push(op);
    inner.running = Some(op_id.clone());
    inner.counters.operations_started += 1;
    inner.cluster = doc.clone();
    drop(inner);

    lro::spawn(shared.clone(), op_id.clone());
    let mut response = (StatusCode::OK, axum::Json(doc)).into_response();
    if let Ok(v) = HeaderValue::from_str(&lro::operation_url(shared, &op_id)) {
        response.headers_mut().insert("azure-asyncoperation", v);
    }
    Ok(response)
}

/// A PUT may send the version the cluster reports (desired or running); upgrading
/// Kubernetes is not modelled.
fn check_kubernetes_version(
    props: &serde_json::Map<String, Value>,
    old: &Value,
) -> Result<(), ArmError> {
    let Some(kv) = props.get("kubernetesVersion").and_then(Value::as_str) else {
        return Ok(());
    };
    let cur = old
        .pointer("/properties/kubernetesVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let running = old
        .pointer("/properties/currentKubernetesVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    if kv != cur && kv != running {
        return Err(ArmError::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!(
                "Changing kubernetesVersion from {cur} to {kv} is not modelled by the simulator; send the version the cluster reports."
            ),
        ));
    }
    Ok(())
}

/// The PUT's service mesh profile, completed and validated in place: an omitted profile or
/// revision list keeps what is installed (reference §1.5). Returns the revisions it asks for.
fn put_mesh_profile(
    props: &mut serde_json::Map<String, Value>,
    old: &Value,
    offered: &[MeshRevisionShape],
) -> Result<Vec<String>, ArmError> {
    let old_revisions = revisions_of(old);
    let old_profile = old
        .pointer("/properties/serviceMeshProfile")
        .cloned()
        .unwrap_or(json!({"mode": "Disabled"}));
    let profile = props
        .entry("serviceMeshProfile")
        .or_insert_with(|| old_profile.clone());
    let Some(profile) = profile.as_object_mut() else {
        return Err(ArmError::invalid_request_content(
            "Error converting value to type 'ServiceMeshProfile'. Path 'properties.serviceMeshProfile'.",
        ));
    };
    if mesh_mode(profile)? == "Disabled" {
        profile.remove("istio");
        return Ok(Vec::new());
    }
    let istio = profile
        .entry("istio")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| {
            ArmError::invalid_request_content(
                "Error converting value to type 'IstioServiceMesh'. Path 'properties.serviceMeshProfile.istio'.",
            )
        })?;
    let revisions = requested_revisions(istio.get("revisions"), &old_revisions)?;
    istio.insert("revisions".into(), json!(revisions));
    let k8s = old
        .pointer("/properties/currentKubernetesVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    validate_revisions(&old_revisions, &revisions, offered, k8s)
        .map_err(ArmError::revisions_not_allowed)?;
    Ok(revisions)
}

/// `serviceMeshProfile.mode`: `Istio` or `Disabled`, in any case.
fn mesh_mode(profile: &serde_json::Map<String, Value>) -> Result<&'static str, ArmError> {
    match profile.get("mode").and_then(Value::as_str) {
        Some(m) if m.eq_ignore_ascii_case("Istio") => Ok("Istio"),
        Some(m) if m.eq_ignore_ascii_case("Disabled") => Ok("Disabled"),
        Some(m) => Err(ArmError::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            format!(
                "The value '{m}' of serviceMeshProfile.mode is invalid; use Istio or Disabled."
            ),
        )),
        None => Err(ArmError::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            "serviceMeshProfile.mode is required: use Istio or Disabled.",
        )),
    }
}

/// `istio.revisions` as sent (absent or null: the installed ones).
fn requested_revisions(
    sent: Option<&Value>,
    installed: &[String],
) -> Result<Vec<String>, ArmError> {
    match sent {
        None | Some(Value::Null) => Ok(installed.to_vec()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str().map(str::to_string).ok_or_else(|| {
                    ArmError::invalid_request_content(&format!(
                        "Error converting value {item} to type 'System.String'. Path 'properties.serviceMeshProfile.istio.revisions'."
                    ))
                })
            })
            .collect(),
        Some(other) => Err(ArmError::invalid_request_content(&format!(
            "Error converting value {other} to type 'System.String[]'. Path 'properties.serviceMeshProfile.istio.revisions'."
        ))),
    }
}

/// The new document: what the client sent, with the service's own fields restored from
/// `old`, a new eTag, and the update in progress.
fn with_service_fields(mut doc: Value, old: &Value) -> Value {
    for key in READ_ONLY_TOP {
        match old.get(*key) {
            Some(v) => doc[*key] = v.clone(),
            None => {
                if let Some(o) = doc.as_object_mut() {
                    o.remove(*key);
                }
            }
        }
    }
    for key in READ_ONLY_PROPERTIES {
        let old_v = old.pointer(&format!("/properties/{key}")).cloned();
        if let Some(props) = doc.get_mut("properties").and_then(Value::as_object_mut) {
            match old_v {
                Some(v) if *key != "status" => {
                    props.insert((*key).to_string(), v);
                }
                _ => {
                    props.remove(*key);
                }
            }
        }
    }
    doc["eTag"] = json!(new_etag());
    set_provisioning_state(&mut doc, "Updating");
    doc
}

/// The add-on's rules for a change of revisions (reference §2.4).
pub(crate) fn validate_revisions(
    old: &[String],
    new: &[String],
    profile: &[MeshRevisionShape],
    kubernetes_version: &str,
) -> Result<(), String> {
    if new.is_empty() {
        return Err(
            "at least one revision is required while the mesh mode is Istio; set the mode to Disabled to remove the mesh."
                .into(),
        );
    }
    if new.len() > 2 {
        return Err(format!(
            "at most two revisions can be installed at a time (one during normal operation, two during a canary upgrade); got {}: {}.",
            new.len(),
            new.join(", ")
        ));
    }
    for r in new {
        if parse_revision(r).is_none() {
            return Err(format!(
                "'{r}' is not a valid revision; revisions have the form asm-X-Y, e.g. asm-1-27."
            ));
        }
    }
    if new.len() == 2 && new[0] == new[1] {
        return Err(format!("revision {} is listed more than once.", new[0]));
    }
    let minor = kubernetes_minor(kubernetes_version);
    for r in new.iter().filter(|r| !old.contains(r)) {
        let Some(entry) = profile.iter().find(|p| &p.revision == r) else {
            return Err(format!(
                "Revision {r} is not supported by the service mesh add-on."
            ));
        };
        if old.len() >= 2 {
            return Err(format!(
                "a canary upgrade is already in progress with revisions {}; complete or roll it back before adding {r}.",
                old.join(" and ")
            ));
        }
        if !old.is_empty() {
            let offered = old.iter().any(|o| {
                profile
                    .iter()
                    .any(|p| &p.revision == o && p.upgrades.contains(r))
            });
            if !offered {
                let targets: Vec<&str> = old
                    .iter()
                    .flat_map(|o| {
                        profile
                            .iter()
                            .filter(move |p| &p.revision == o)
                            .flat_map(|p| p.upgrades.iter().map(String::as_str))
                    })
                    .collect();
                return Err(format!(
                    "Revision {r} is not an available upgrade from {}; available upgrades: {}. Use 'az aks mesh get-upgrades' to list them.",
                    old.join(", "),
                    if targets.is_empty() {
                        "none".to_string()
                    } else {
                        targets.join(", ")
                    }
                ));
            }
        }
        if !minor.is_empty() && !entry.kubernetes.iter().any(|k| k == &minor) {
            return Err(format!(
                "Service mesh revision {r} is not compatible with cluster version {kubernetes_version}. To find information about mesh-cluster compatibility, use 'az aks mesh get-upgrades'."
            ));
        }
    }
    Ok(())
}

/// `asm-X-Y` → (X, Y).
pub(crate) fn parse_revision(r: &str) -> Option<(u32, u32)> {
    let rest = r.strip_prefix("asm-")?;
    let (major, minor) = rest.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(major) || !digits(minor) {
        return None;
    }
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// `1.33.5` → `1.33`.
pub(crate) fn kubernetes_minor(version: &str) -> String {
    let mut parts = version.split('.');
    match (parts.next(), parts.next()) {
        (Some(a), Some(b)) => format!("{a}.{b}"),
        _ => version.to_string(),
    }
}

/// `PATCH` of the cluster: tags only (`ManagedClusters_UpdateTags`).
pub(crate) fn patch_tags(
    shared: &Arc<Shared>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ArmError> {
    let faults = &shared.scenario.arm;
    // ARM deserializes the body before anything else: a body that is not a JSON object is a
    // 400 `InvalidRequestContent` even while an operation runs (not a 409).
    let body = parse_body(body)?;
    let mut inner = shared.arm.lock();
    if inner.running.is_some() {
        return Err(ArmError::operation_not_allowed());
    }
    check_preconditions(headers, &etag(&inner.cluster), faults.etag_mismatch_409)?;
    if let Some(other) = body.keys().find(|k| k.as_str() != "tags") {
        return Err(ArmError::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            format!(
                "PATCH of a managed cluster updates tags only; '{other}' cannot be patched. Use PUT with the whole cluster."
            ),
        ));
    }
    let tags = body.get("tags").cloned().unwrap_or(json!({}));
    if !tags.is_object() {
        return Err(ArmError::invalid_request_content(
            "Error converting value to type 'TagsObject'. Path 'tags'.",
        ));
    }
    inner.cluster["tags"] = tags;
    inner.cluster["eTag"] = json!(new_etag());
    let doc = inner.cluster.clone();
    Ok((StatusCode::OK, axum::Json(doc)).into_response())
}

/// `listClusterUserCredential` / `listClusterAdminCredential`: a kubeconfig for the
/// simulated Kubernetes API server.
pub(crate) fn credentials(shared: &Shared, admin: bool) -> Response {
    let info = &shared.info;
    let (name, user) = if admin {
        (
            "clusterAdmin",
            format!("clusterAdmin_{}_{}", info.resource_group, info.cluster),
        )
    } else {
        (
            "clusterUser",
            format!("clusterUser_{}_{}", info.resource_group, info.cluster),
        )
    };
    let kubeconfig = kubeconfig_yaml(
        &info.cluster,
        &info.kube_server,
        &STANDARD.encode(info.ca_pem.as_bytes()),
        &user,
        &info.sim_token,
    );
    let body = json!({
        "kubeconfigs": [{"name": name, "value": STANDARD.encode(kubeconfig.as_bytes())}]
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

fn kubeconfig_yaml(cluster: &str, server: &str, ca_b64: &str, user: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {ca_b64}\n    server: {server}\n  name: {cluster}\ncontexts:\n- context:\n    cluster: {cluster}\n    user: {user}\n  name: {cluster}\ncurrent-context: {cluster}\nkind: Config\npreferences: {{}}\nusers:\n- name: {user}\n  user:\n    token: {token}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> Vec<MeshRevisionShape> {
        crate::scenario::ClusterShape::default().mesh_revisions
    }

    fn revs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn start_to_an_offered_revision_is_allowed() {
        let p = profile();
        assert!(
            validate_revisions(
                &revs(&["asm-1-27"]),
                &revs(&["asm-1-27", "asm-1-28"]),
                &p,
                "1.33.5"
            )
            .is_ok()
        );
        // a skip of one minor, as the profile offers it
        assert!(
            validate_revisions(
                &revs(&["asm-1-27"]),
                &revs(&["asm-1-27", "asm-1-29"]),
                &p,
                "1.33.5"
            )
            .is_ok()
        );
        // complete and rollback
        assert!(
            validate_revisions(
                &revs(&["asm-1-27", "asm-1-28"]),
                &revs(&["asm-1-28"]),
                &p,
                "1.33.5"
            )
            .is_ok()
        );
        assert!(
            validate_revisions(
                &revs(&["asm-1-27", "asm-1-28"]),
                &revs(&["asm-1-27"]),
                &p,
                "1.33.5"
            )
            .is_ok()
        );
    }

    #[test]
    fn rejects_what_the_add_on_rejects() {
        let p = profile();
        let one = revs(&["asm-1-27"]);
        let cases: &[(&[&str], &str)] = &[
            (&[], "at least one revision"),
            (
                &["asm-1-27", "asm-1-28", "asm-1-29"],
                "at most two revisions",
            ),
            (&["asm-1-27", "asm-1.28"], "not a valid revision"),
            (&["asm-1-27", "asm-1-27"], "listed more than once"),
            (
                &["asm-1-27", "asm-1-99"],
                "Revision asm-1-99 is not supported",
            ),
            (&["asm-1-27", "asm-1-26"], "not supported"),
        ];
        for (new, want) in cases {
            let err = validate_revisions(&one, &revs(new), &p, "1.33.5").unwrap_err();
            assert!(err.contains(want), "{new:?}: {err}");
        }
    }

    #[test]
    fn rejects_a_revision_not_offered_or_incompatible() {
        let mut p = profile();
        p.push(MeshRevisionShape {
            revision: "asm-1-26".into(),
            upgrades: vec!["asm-1-27".into()],
            kubernetes: vec!["1.30".into()],
        });
        let err = validate_revisions(
            &revs(&["asm-1-28"]),
            &revs(&["asm-1-28", "asm-1-26"]),
            &p,
            "1.33.5",
        )
        .unwrap_err();
        assert!(err.contains("not an available upgrade"), "{err}");
        let err = validate_revisions(
            &revs(&["asm-1-27", "asm-1-28"]),
            &revs(&["asm-1-28", "asm-1-29"]),
            &p,
            "1.33.5",
        )
        .unwrap_err();
        assert!(err.contains("already in progress"), "{err}");
        // enabling a revision the cluster's Kubernetes cannot run
        let err = validate_revisions(&[], &revs(&["asm-1-26"]), &p, "1.33.5").unwrap_err();
        assert!(
            err.contains("not compatible with cluster version 1.33.5"),
            "{err}"
        );
    }

    #[test]
    fn parses_revisions_numerically() {
        assert_eq!(parse_revision("asm-1-9"), Some((1, 9)));
        assert_eq!(parse_revision("asm-1-28"), Some((1, 28)));
        assert_eq!(parse_revision("asm-1-"), None);
        assert_eq!(parse_revision("istio-1-28"), None);
        assert_eq!(kubernetes_minor("1.33.5"), "1.33");
    }
}
