//! Admission: the chain the API server runs on every create and update before the store.
//! First its own defaults and the rules it refuses by; then, on a pod's creation, the
//! mutating webhooks that the MutatingWebhookConfigurations in the store select (rules,
//! namespace and object selectors, failure policy), each a call of the Service it names;
//! last the validating webhooks. The servers behind those calls plug in as a
//! [`WebhookServer`] (the add-on's): admission knows the webhook protocol, not Istio.

use serde_json::{Value, json};

use super::object::{labels_of, metadata_mut, name_of, ns_of, pod_ready};
use super::resources::{ResourceType, by_plural};
use super::selectors::LabelSelector;
use super::status::ApiError;
use super::store::{Obj, Store};

/// What answers the cluster's admission webhooks.
pub trait WebhookServer: Send + Sync {
    /// A mutating webhook's call for `pod`, being created: `service` is the Service the
    /// webhook configuration names, and it has a ready endpoint.
    fn mutate_pod(&self, service: &Value, pod: &mut Value);

    /// The validating webhooks' verdict on an object being created or updated.
    fn validate(&self, rt: &ResourceType, obj: &Value) -> Result<(), ApiError>;
}

/// The admission chain; the API server runs it on every create and update, the in-process
/// clients on every create.
pub struct Admission {
    webhooks: Box<dyn WebhookServer>,
}

impl Admission {
    pub fn new(webhooks: impl WebhookServer + 'static) -> Self {
        Self {
            webhooks: Box::new(webhooks),
        }
    }

    /// Admits an object being created; `store` is read for the webhook configurations.
    pub fn on_create(
        &self,
        store: &Store,
        rt: &ResourceType,
        obj: &mut Value,
    ) -> Result<(), ApiError> {
        match rt.kind {
            "Namespace" => {
                label_namespace(obj, None);
                obj["spec"] = json!({"finalizers": ["kubernetes"]});
                obj["status"] = json!({"phase": "Active"});
            }
            "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" => {
                workload_defaults(rt, obj);
                validate_workload(rt, obj)?;
            }
            "Pod" => {
                pod_spec_defaults(&mut obj["spec"]);
                self.call_pod_webhooks(store, obj)?;
                obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
            }
            "Service" => service_defaults(obj),
            "ConfigMap" | "Secret" => validate_data_size(rt, obj)?,
            _ => {}
        }
        self.webhooks.validate(rt, obj)
    }

    /// Admits an update of `old` to `new`.
    pub fn on_update(
        &self,
        rt: &ResourceType,
        old: &Value,
        new: &mut Value,
    ) -> Result<(), ApiError> {
        match rt.kind {
            "Namespace" => {
                label_namespace(new, Some(old));
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
            "ConfigMap" | "Secret" => validate_data_size(rt, new)?,
            _ => {}
        }
        self.webhooks.validate(rt, new)
    }

    /// Calls the mutating webhooks that select `pod`, in the order of their configurations.
    fn call_pod_webhooks(&self, store: &Store, pod: &mut Value) -> Result<(), ApiError> {
        let ns = ns_of(pod).to_string();
        let namespaces = store.list_cached(by_plural("namespaces"));
        let ns_labels = namespaces
            .iter()
            .find(|n| name_of(n) == ns)
            .and_then(|n| labels_of(n).cloned());
        let mwcs = store.list_cached(by_plural("mutatingwebhookconfigurations"));
        for wh in mwcs
            .iter()
            .filter_map(|mwc| mwc["webhooks"].as_array())
            .flatten()
        {
            if !rule_matches_pod_create(wh) {
                continue;
            }
            let ns_sel = LabelSelector::from_json(wh.get("namespaceSelector"));
            let obj_sel = LabelSelector::from_json(wh.get("objectSelector"));
            if !ns_sel.matches(ns_labels.as_ref()) || !obj_sel.matches(labels_of(pod)) {
                continue;
            }
            let call = WebhookCall::of(wh);
            match call.service(store) {
                Ok(service) => self.webhooks.mutate_pod(&service, pod),
                Err(why) if call.fail => return Err(call.failed(&why)),
                Err(_) => {}
            }
        }
        Ok(())
    }
}

/// A webhook of a configuration: the Service it calls, and its failure policy.
struct WebhookCall<'a> {
    name: &'a str,
    service_ns: &'a str,
    service_name: &'a str,
    path: &'a str,
    /// `failurePolicy: Fail` (the default): an unreachable server fails the request.
    fail: bool,
}

impl<'a> WebhookCall<'a> {
    fn of(wh: &'a Value) -> Self {
        let service = &wh["clientConfig"]["service"];
        Self {
            name: wh["name"].as_str().unwrap_or(""),
            service_ns: service["namespace"].as_str().unwrap_or(""),
            service_name: service["name"].as_str().unwrap_or(""),
            path: service["path"].as_str().unwrap_or("/inject"),
            fail: wh["failurePolicy"].as_str().unwrap_or("Fail") == "Fail",
        }
    }

    /// The Service the webhook calls, when a ready pod backs it.
    fn service(&self, store: &Store) -> Result<Obj, String> {
        let name = self.service_name;
        let svc = store
            .get(by_plural("services"), self.service_ns, name)
            .ok_or_else(|| format!("service \"{name}\" not found"))?;
        let sel = LabelSelector::from_json(Some(&json!({"matchLabels": svc["spec"]["selector"]})));
        let (pods, _) = store.list(by_plural("pods"), Some(self.service_ns));
        if !pods
            .iter()
            .any(|p| sel.matches(labels_of(p)) && pod_ready(p))
        {
            return Err(format!("no endpoints available for service \"{name}\""));
        }
        Ok(svc)
    }

    fn failed(&self, why: &str) -> ApiError {
        let (wh_name, svc_name, svc_ns, path) =
            (self.name, self.service_name, self.service_ns, self.path);
        ApiError::internal(format!(
            "failed calling webhook \"{wh_name}\": failed to call webhook: Post \"https://{svc_name}.{svc_ns}.svc:443{path}?timeout=10s\": {why}"
        ))
    }
}

fn rule_matches_pod_create(webhook: &Value) -> bool {
    webhook["rules"].as_array().is_some_and(|rules| {
        rules.iter().any(|r| {
            let has = |field: &str, want: &str| {
                r[field]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == want || x == "*"))
            };
            has("operations", "CREATE") && has("resources", "pods") && has("apiGroups", "")
        })
    })
}

/// The `kubernetes.io/metadata.name` label every namespace carries (its name, or on an
/// update the old object's).
fn label_namespace(obj: &mut Value, old: Option<&Value>) {
    let name = name_of(old.unwrap_or(obj)).to_string();
    let meta = metadata_mut(obj);
    let labels = meta.entry("labels").or_insert_with(|| json!({}));
    if let Some(l) = labels.as_object_mut() {
        l.insert("kubernetes.io/metadata.name".into(), json!(name));
    }
}

fn service_defaults(obj: &mut Value) {
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

fn set_default(v: &mut Value, key: &str, default: Value) {
    if let Some(m) = v.as_object_mut() {
        let e = m.entry(key.to_string()).or_insert(Value::Null);
        if e.is_null() {
            *e = default;
        }
    }
}

fn pod_spec_defaults(spec: &mut Value) {
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

/// The API server's limit on a ConfigMap's or Secret's data, all keys together
/// (`core.MaxSecretSize`).
pub const MAX_DATA_BYTES: usize = 1024 * 1024;

/// A ConfigMap's `data` and `binaryData`, or a Secret's `data` and `stringData`, at most
/// [`MAX_DATA_BYTES`] in all (values only; binary values counted decoded), as
/// `ValidateConfigMap` and `ValidateSecret` refuse: 422 `[]: Too long`.
fn validate_data_size(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    use base64::Engine;
    let values = |key: &str| obj[key].as_object().into_iter().flat_map(|m| m.values());
    let decoded = |v: &Value| {
        v.as_str()
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            .map_or(0, |b| b.len())
    };
    let plain = |v: &Value| v.as_str().map_or(0, str::len);
    let total: usize = match rt.kind {
        "Secret" => {
            values("data").map(decoded).sum::<usize>()
                + values("stringData").map(plain).sum::<usize>()
        }
        _ => {
            values("data").map(plain).sum::<usize>()
                + values("binaryData").map(decoded).sum::<usize>()
        }
    };
    if total <= MAX_DATA_BYTES {
        return Ok(());
    }
    Err(ApiError::invalid(
        rt,
        name_of(obj),
        "[]",
        "FieldValueTooLong",
        &format!("Too long: may not be more than {MAX_DATA_BYTES} bytes"),
    ))
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
