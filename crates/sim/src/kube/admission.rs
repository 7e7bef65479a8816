//! Admission: the defaults the API server applies, validation of what it refuses, the
//! add-on's mutating webhooks (sidecar injection) and its MeshConfig allowlist.

use serde_json::{Value, json};

use super::KubeState;
use super::addon;
use super::resources::ResourceType;
use super::selectors::LabelSelector;
use super::status::ApiError;
use super::store::{metadata_mut, name_of};

pub fn on_create(kube: &KubeState, rt: &ResourceType, obj: &mut Value) -> Result<(), ApiError> {
    match rt.kind {
        "Namespace" => {
            let name = name_of(obj).to_string();
            let meta = metadata_mut(obj);
            let labels = meta.entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
        }
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" => {
            workload_defaults(rt, obj);
            validate_workload(rt, obj)?;
        }
        "Pod" => {
            pod_spec_defaults(&mut obj["spec"]);
            addon::inject(kube, obj)?;
            obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
        }
        "Service" => {
            if obj["spec"].get("clusterIP").is_none() && obj["spec"]["type"] != "ExternalName" {
                use rand::Rng;
                let mut rng = rand::rng();
                obj["spec"]["clusterIP"] = json!(format!(
                    "10.0.{}.{}",
                    rng.random_range(1..255),
                    rng.random_range(1..255)
                ));
            }
            if obj["spec"].get("type").is_none() {
                obj["spec"]["type"] = json!("ClusterIP");
            }
        }
        "ConfigMap" => addon::validate_shared_configmap(rt, obj)?,
        _ => {}
    }
    Ok(())
}

pub fn on_update(
    _kube: &KubeState,
    rt: &ResourceType,
    old: &Value,
    new: &mut Value,
) -> Result<(), ApiError> {
    match rt.kind {
        "Namespace" => {
            let name = name_of(old).to_string();
            let meta = metadata_mut(new);
            let labels = meta.entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
            if new.get("spec").is_none() {
                new["spec"] = old["spec"].clone();
            }
        }
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" => {
            workload_defaults(rt, new);
            validate_workload(rt, new)?;
            if old["spec"]["selector"] != new["spec"]["selector"] {
                return Err(ApiError::invalid(
                    rt,
                    name_of(old),
                    "spec.selector",
                    "FieldValueInvalid",
                    &format!(
                        "Invalid value: {}: field is immutable",
                        new["spec"]["selector"]
                    ),
                ));
            }
        }
        "ConfigMap" => addon::validate_shared_configmap(rt, new)?,
        _ => {}
    }
    Ok(())
}

fn set_default(v: &mut Value, key: &str, default: Value) {
    if let Some(m) = v.as_object_mut() {
        let e = m.entry(key.to_string()).or_insert(Value::Null);
        if e.is_null() {
            *e = default;
        }
    }
}

pub fn pod_spec_defaults(spec: &mut Value) {
    if !spec.is_object() {
        *spec = json!({});
    }
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "securityContext", json!({}));
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs {
                set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
                set_default(c, "terminationMessagePolicy", json!("File"));
                let image = c["image"].as_str().unwrap_or("").to_string();
                let latest = !image.rsplit('/').next().unwrap_or("").contains(':')
                    || image.ends_with(":latest");
                set_default(
                    c,
                    "imagePullPolicy",
                    json!(if latest { "Always" } else { "IfNotPresent" }),
                );
                set_default(c, "resources", json!({}));
            }
        }
    }
}

fn workload_defaults(rt: &ResourceType, obj: &mut Value) {
    if !obj["spec"].is_object() {
        obj["spec"] = json!({});
    }
    let spec = &mut obj["spec"];
    if rt.kind != "DaemonSet" {
        set_default(spec, "replicas", json!(1));
    }
    set_default(spec, "revisionHistoryLimit", json!(10));
    match rt.kind {
        "Deployment" => {
            set_default(spec, "progressDeadlineSeconds", json!(600));
            set_default(
                spec,
                "strategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
            );
            if spec["strategy"]["type"] == "RollingUpdate" {
                let ru = &mut spec["strategy"]["rollingUpdate"];
                if !ru.is_object() {
                    *ru = json!({});
                }
                set_default(ru, "maxUnavailable", json!("25%"));
                set_default(ru, "maxSurge", json!("25%"));
            }
        }
        "StatefulSet" => {
            set_default(spec, "podManagementPolicy", json!("OrderedReady"));
            set_default(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
            );
            set_default(
                spec,
                "persistentVolumeClaimRetentionPolicy",
                json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
            );
        }
        "DaemonSet" => {
            set_default(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
            );
        }
        _ => {}
    }
    if let Some(m) = spec.as_object_mut()
        && m.contains_key("template")
    {
        pod_spec_defaults(&mut spec["template"]["spec"]);
    }
}

fn validate_workload(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    let name = name_of(obj).to_string();
    let sel = obj["spec"].get("selector");
    if sel.is_none_or(|s| s.as_object().is_none_or(|m| m.is_empty())) {
        return Err(ApiError::invalid(
            rt,
            &name,
            "spec.selector",
            "FieldValueRequired",
            "Required value",
        ));
    }
    let selector = LabelSelector::from_json(sel);
    let labels = obj["spec"]["template"]["metadata"]["labels"].as_object();
    if !selector.matches(labels) {
        return Err(ApiError::invalid(
            rt,
            &name,
            "spec.template.metadata.labels",
            "FieldValueInvalid",
            &format!(
                "Invalid value: {}: `selector` does not match template `labels`",
                obj["spec"]["template"]["metadata"]["labels"]
            ),
        ));
    }
    if obj["spec"]["template"]["spec"]["containers"]
        .as_array()
        .is_none_or(|c| c.is_empty())
    {
        return Err(ApiError::invalid(
            rt,
            &name,
            "spec.template.spec.containers",
            "FieldValueRequired",
            "Required value",
        ));
    }
    Ok(())
}
