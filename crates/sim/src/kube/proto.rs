//! The Kubernetes protobuf encoding (`application/vnd.kubernetes.protobuf`) of the built-in
//! kinds kubectl creates: the `k8s\0` magic, a `runtime.Unknown` envelope carrying the kind and
//! the object, the object as the `k8s-pb` message of its kind. The API server keeps JSON; this
//! converts both ways, field by field, for namespaces, configmaps, pods, services, deployments
//! and leases.
//!
//! Nothing is dropped silently: a body is accepted only when every field it carries is one the
//! simulator reads (the message, written as JSON and read back, is the message it was), and an
//! object is answered in protobuf only when its JSON says nothing the message cannot hold.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::coordination::v1 as coordination;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::{Map, Value, json};

/// The media type of the protobuf encoding.
pub const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";
/// The four bytes every protobuf-encoded object starts with.
const MAGIC: &[u8] = b"k8s\0";

/// How a message is written as JSON.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Every field the message carries, empty strings included: for the round trip.
    Exact,
    /// As the API server writes JSON: empty strings left out (Go's `omitempty`).
    Api,
}

/// A message (or a scalar) and its JSON form.
trait Json: Default {
    fn to_json(&self, mode: Mode) -> Value;
    fn from_json(v: &Value) -> Self;
}

/// A field of a message: optional, repeated or a map of something [`Json`].
trait Field: Default {
    fn put(&self, name: &str, map: &mut Map<String, Value>, mode: Mode);
    fn take(v: Option<&Value>) -> Self;
}

impl Json for String {
    fn to_json(&self, _: Mode) -> Value {
        Value::String(self.clone())
    }
    fn from_json(v: &Value) -> Self {
        v.as_str().unwrap_or_default().to_string()
    }
}

impl Json for i32 {
    fn to_json(&self, _: Mode) -> Value {
        json!(self)
    }
    fn from_json(v: &Value) -> Self {
        v.as_i64().and_then(|n| i32::try_from(n).ok()).unwrap_or(0)
    }
}

impl Json for i64 {
    fn to_json(&self, _: Mode) -> Value {
        json!(self)
    }
    fn from_json(v: &Value) -> Self {
        v.as_i64().unwrap_or(0)
    }
}

impl Json for bool {
    fn to_json(&self, _: Mode) -> Value {
        json!(self)
    }
    fn from_json(v: &Value) -> Self {
        v.as_bool().unwrap_or(false)
    }
}

/// `bytes` fields (a ConfigMap's `binaryData`): base64 in JSON.
impl Json for Vec<u8> {
    fn to_json(&self, _: Mode) -> Value {
        json!(base64::engine::general_purpose::STANDARD.encode(self))
    }
    fn from_json(v: &Value) -> Self {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl<T: Json> Field for Option<T> {
    fn put(&self, name: &str, map: &mut Map<String, Value>, mode: Mode) {
        if let Some(x) = self {
            let v = x.to_json(mode);
            if mode == Mode::Exact || !omitted(name, &v) {
                map.insert(name.to_string(), v);
            }
        }
    }
    fn take(v: Option<&Value>) -> Self {
        v.map(T::from_json)
    }
}

/// Go's `omitempty` on a value field: empty strings, zeros and `false` are left out of the
/// JSON, except in the fields Go keeps as pointers or writes always (`replicas: 0` is not
/// `replicas` unset).
fn omitted(name: &str, v: &Value) -> bool {
    const KEPT: &[&str] = &[
        "replicas",
        "terminationGracePeriodSeconds",
        "activeDeadlineSeconds",
        "automountServiceAccountToken",
        "enableServiceLinks",
        "priority",
        "shareProcessNamespace",
        "setHostnameAsFQDN",
        "hostUsers",
        "immutable",
        "revisionHistoryLimit",
        "progressDeadlineSeconds",
        "deletionGracePeriodSeconds",
        "controller",
        "blockOwnerDeletion",
        "started",
        "ready",
        "restartCount",
        "exitCode",
        "containerPort",
        "port",
        "leaseDurationSeconds",
        "leaseTransitions",
        "allocateLoadBalancerNodePorts",
        "collisionCount",
        "runAsUser",
        "runAsGroup",
        "runAsNonRoot",
        "fsGroup",
    ];
    let zero = v.as_str() == Some("") || v.as_bool() == Some(false) || v.as_i64() == Some(0);
    zero && (v.is_string() || !KEPT.contains(&name))
}

impl<T: Json> Field for Vec<T> {
    fn put(&self, name: &str, map: &mut Map<String, Value>, mode: Mode) {
        if !self.is_empty() {
            let items = self.iter().map(|x| x.to_json(mode)).collect();
            map.insert(name.to_string(), Value::Array(items));
        }
    }
    fn take(v: Option<&Value>) -> Self {
        v.and_then(Value::as_array)
            .map(|a| a.iter().map(T::from_json).collect())
            .unwrap_or_default()
    }
}

impl<T: Json> Field for BTreeMap<String, T> {
    fn put(&self, name: &str, map: &mut Map<String, Value>, mode: Mode) {
        if !self.is_empty() {
            let m = self
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json(mode)))
                .collect();
            map.insert(name.to_string(), Value::Object(m));
        }
    }
    fn take(v: Option<&Value>) -> Self {
        v.and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), T::from_json(v)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// `metav1.Time`: RFC 3339 to the second in JSON, `null` for the zero time.
impl Json for meta::Time {
    fn to_json(&self, _: Mode) -> Value {
        time_json(self.seconds, self.nanos, chrono::SecondsFormat::Secs)
    }
    fn from_json(v: &Value) -> Self {
        let (seconds, nanos) = time_parts(v);
        Self { seconds, nanos }
    }
}

/// `metav1.MicroTime`: RFC 3339 to the microsecond.
impl Json for meta::MicroTime {
    fn to_json(&self, _: Mode) -> Value {
        time_json(self.seconds, self.nanos, chrono::SecondsFormat::Micros)
    }
    fn from_json(v: &Value) -> Self {
        let (seconds, nanos) = time_parts(v);
        Self { seconds, nanos }
    }
}

fn time_json(seconds: Option<i64>, nanos: Option<i32>, f: chrono::SecondsFormat) -> Value {
    let (s, n) = (seconds.unwrap_or(0), nanos.unwrap_or(0));
    if s == 0 && n == 0 {
        return Value::Null;
    }
    chrono::DateTime::from_timestamp(s, u32::try_from(n).unwrap_or(0))
        .map(|t| json!(t.to_rfc3339_opts(f, true)))
        .unwrap_or(Value::Null)
}

fn time_parts(v: &Value) -> (Option<i64>, Option<i32>) {
    match v
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
    {
        Some(t) => (
            Some(t.timestamp()),
            Some(i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0)),
        ),
        None => (None, None),
    }
}

/// `intstr.IntOrString`: a number or a string in JSON; Go writes all three fields.
impl Json for IntOrString {
    fn to_json(&self, _: Mode) -> Value {
        if self.r#type == Some(1) {
            json!(self.str_val.clone().unwrap_or_default())
        } else {
            json!(self.int_val.unwrap_or(0))
        }
    }
    fn from_json(v: &Value) -> Self {
        match v.as_str() {
            Some(s) => Self {
                r#type: Some(1),
                int_val: Some(0),
                str_val: Some(s.to_string()),
            },
            None => Self {
                r#type: Some(0),
                int_val: Some(i32::from_json(v)),
                str_val: Some(String::new()),
            },
        }
    }
}

/// `metav1.FieldsV1`: the JSON it holds, as JSON.
impl Json for meta::FieldsV1 {
    fn to_json(&self, _: Mode) -> Value {
        serde_json::from_slice(self.raw.as_deref().unwrap_or(b"{}")).unwrap_or(Value::Null)
    }
    fn from_json(v: &Value) -> Self {
        Self {
            raw: serde_json::to_vec(v).ok(),
        }
    }
}

/// `resource.Quantity`: its string.
impl Json for Quantity {
    fn to_json(&self, _: Mode) -> Value {
        json!(self.string.clone().unwrap_or_default())
    }
    fn from_json(v: &Value) -> Self {
        Self {
            string: Some(String::from_json(v)),
        }
    }
}

/// A message whose fields are listed with their JSON names.
macro_rules! message {
    ($ty:ty { $($field:ident : $name:literal),* $(,)? }) => {
        impl Json for $ty {
            fn to_json(&self, mode: Mode) -> Value {
                let mut m = Map::new();
                $( Field::put(&self.$field, $name, &mut m, mode); )*
                Value::Object(m)
            }
            #[allow(clippy::needless_update)]
            fn from_json(v: &Value) -> Self {
                Self { $( $field: Field::take(v.get($name)), )* ..Default::default() }
            }
        }
    };
}

message!(meta::ObjectMeta {
    name: "name",
    generate_name: "generateName",
    namespace: "namespace",
    self_link: "selfLink",
    uid: "uid",
    resource_version: "resourceVersion",
    generation: "generation",
    creation_timestamp: "creationTimestamp",
    deletion_timestamp: "deletionTimestamp",
    deletion_grace_period_seconds: "deletionGracePeriodSeconds",
    labels: "labels",
    annotations: "annotations",
    owner_references: "ownerReferences",
    finalizers: "finalizers",
    managed_fields: "managedFields",
});
message!(meta::ManagedFieldsEntry {
    manager: "manager",
    operation: "operation",
    api_version: "apiVersion",
    time: "time",
    fields_type: "fieldsType",
    fields_v1: "fieldsV1",
    subresource: "subresource",
});
message!(meta::OwnerReference {
    api_version: "apiVersion",
    kind: "kind",
    name: "name",
    uid: "uid",
    controller: "controller",
    block_owner_deletion: "blockOwnerDeletion",
});
message!(meta::LabelSelector {
    match_labels: "matchLabels",
    match_expressions: "matchExpressions"
});
message!(meta::LabelSelectorRequirement {
    key: "key",
    operator: "operator",
    values: "values"
});

message!(core::Namespace {
    metadata: "metadata",
    spec: "spec",
    status: "status"
});
message!(core::NamespaceSpec {
    finalizers: "finalizers"
});
message!(core::NamespaceStatus {
    phase: "phase",
    conditions: "conditions"
});
message!(core::NamespaceCondition {
    r#type: "type",
    status: "status",
    last_transition_time: "lastTransitionTime",
    reason: "reason",
    message: "message",
});
message!(core::ConfigMap {
    metadata: "metadata",
    immutable: "immutable",
    data: "data",
    binary_data: "binaryData",
});
message!(core::Pod {
    metadata: "metadata",
    spec: "spec",
    status: "status"
});
message!(core::PodTemplateSpec {
    metadata: "metadata",
    spec: "spec"
});
message!(core::PodSpec {
    init_containers: "initContainers",
    containers: "containers",
    restart_policy: "restartPolicy",
    termination_grace_period_seconds: "terminationGracePeriodSeconds",
    active_deadline_seconds: "activeDeadlineSeconds",
    dns_policy: "dnsPolicy",
    node_selector: "nodeSelector",
    security_context: "securityContext",
    service_account_name: "serviceAccountName",
    service_account: "serviceAccount",
    automount_service_account_token: "automountServiceAccountToken",
    node_name: "nodeName",
    host_network: "hostNetwork",
    host_pid: "hostPID",
    host_ipc: "hostIPC",
    share_process_namespace: "shareProcessNamespace",
    hostname: "hostname",
    subdomain: "subdomain",
    scheduler_name: "schedulerName",
    priority_class_name: "priorityClassName",
    priority: "priority",
    runtime_class_name: "runtimeClassName",
    enable_service_links: "enableServiceLinks",
    preemption_policy: "preemptionPolicy",
    set_hostname_as_fqdn: "setHostnameAsFQDN",
    host_users: "hostUsers",
});
message!(core::PodSecurityContext {
    run_as_user: "runAsUser",
    run_as_group: "runAsGroup",
    run_as_non_root: "runAsNonRoot",
    supplemental_groups: "supplementalGroups",
    fs_group: "fsGroup",
});
message!(core::Container {
    name: "name",
    image: "image",
    command: "command",
    args: "args",
    working_dir: "workingDir",
    ports: "ports",
    env: "env",
    resources: "resources",
    restart_policy: "restartPolicy",
    termination_message_path: "terminationMessagePath",
    termination_message_policy: "terminationMessagePolicy",
    image_pull_policy: "imagePullPolicy",
    stdin: "stdin",
    stdin_once: "stdinOnce",
    tty: "tty",
});
message!(core::ContainerPort {
    name: "name",
    host_port: "hostPort",
    container_port: "containerPort",
    protocol: "protocol",
    host_ip: "hostIP",
});
message!(core::EnvVar {
    name: "name",
    value: "value"
});
message!(core::ResourceRequirements {
    limits: "limits",
    requests: "requests"
});
message!(core::PodStatus {
    observed_generation: "observedGeneration",
    phase: "phase",
    conditions: "conditions",
    message: "message",
    reason: "reason",
    nominated_node_name: "nominatedNodeName",
    host_ip: "hostIP",
    host_ips: "hostIPs",
    pod_ip: "podIP",
    pod_ips: "podIPs",
    start_time: "startTime",
    init_container_statuses: "initContainerStatuses",
    container_statuses: "containerStatuses",
    qos_class: "qosClass",
});
message!(core::PodIp { ip: "ip" });
message!(core::HostIp { ip: "ip" });
message!(core::PodCondition {
    r#type: "type",
    observed_generation: "observedGeneration",
    status: "status",
    last_probe_time: "lastProbeTime",
    last_transition_time: "lastTransitionTime",
    reason: "reason",
    message: "message",
});
message!(core::ContainerStatus {
    name: "name",
    state: "state",
    last_state: "lastState",
    ready: "ready",
    restart_count: "restartCount",
    image: "image",
    image_id: "imageID",
    container_id: "containerID",
    started: "started",
});
message!(core::ContainerState {
    waiting: "waiting",
    running: "running",
    terminated: "terminated"
});
message!(core::ContainerStateRunning {
    started_at: "startedAt"
});
message!(core::ContainerStateWaiting {
    reason: "reason",
    message: "message"
});
message!(core::ContainerStateTerminated {
    exit_code: "exitCode",
    signal: "signal",
    reason: "reason",
    message: "message",
    started_at: "startedAt",
    finished_at: "finishedAt",
    container_id: "containerID",
});
message!(core::Service {
    metadata: "metadata",
    spec: "spec",
    status: "status"
});
message!(core::ServiceSpec {
    ports: "ports",
    selector: "selector",
    cluster_ip: "clusterIP",
    cluster_ips: "clusterIPs",
    r#type: "type",
    external_ips: "externalIPs",
    session_affinity: "sessionAffinity",
    load_balancer_ip: "loadBalancerIP",
    load_balancer_source_ranges: "loadBalancerSourceRanges",
    external_name: "externalName",
    external_traffic_policy: "externalTrafficPolicy",
    health_check_node_port: "healthCheckNodePort",
    publish_not_ready_addresses: "publishNotReadyAddresses",
    ip_families: "ipFamilies",
    ip_family_policy: "ipFamilyPolicy",
    allocate_load_balancer_node_ports: "allocateLoadBalancerNodePorts",
    load_balancer_class: "loadBalancerClass",
    internal_traffic_policy: "internalTrafficPolicy",
    traffic_distribution: "trafficDistribution",
});
message!(core::ServicePort {
    name: "name",
    protocol: "protocol",
    app_protocol: "appProtocol",
    port: "port",
    target_port: "targetPort",
    node_port: "nodePort",
});
message!(core::ServiceStatus {
    load_balancer: "loadBalancer"
});
message!(core::LoadBalancerStatus { ingress: "ingress" });
message!(core::LoadBalancerIngress {
    ip: "ip",
    hostname: "hostname",
    ip_mode: "ipMode"
});

message!(apps::Deployment {
    metadata: "metadata",
    spec: "spec",
    status: "status"
});
message!(apps::DeploymentSpec {
    replicas: "replicas",
    selector: "selector",
    template: "template",
    strategy: "strategy",
    min_ready_seconds: "minReadySeconds",
    revision_history_limit: "revisionHistoryLimit",
    paused: "paused",
    progress_deadline_seconds: "progressDeadlineSeconds",
});
message!(apps::DeploymentStrategy {
    r#type: "type",
    rolling_update: "rollingUpdate"
});
message!(apps::RollingUpdateDeployment {
    max_unavailable: "maxUnavailable",
    max_surge: "maxSurge"
});
message!(apps::DeploymentStatus {
    observed_generation: "observedGeneration",
    replicas: "replicas",
    updated_replicas: "updatedReplicas",
    ready_replicas: "readyReplicas",
    available_replicas: "availableReplicas",
    unavailable_replicas: "unavailableReplicas",
    terminating_replicas: "terminatingReplicas",
    conditions: "conditions",
    collision_count: "collisionCount",
});
message!(apps::DeploymentCondition {
    r#type: "type",
    status: "status",
    last_update_time: "lastUpdateTime",
    last_transition_time: "lastTransitionTime",
    reason: "reason",
    message: "message",
});
message!(coordination::Lease {
    metadata: "metadata",
    spec: "spec"
});
message!(coordination::LeaseSpec {
    holder_identity: "holderIdentity",
    lease_duration_seconds: "leaseDurationSeconds",
    acquire_time: "acquireTime",
    renew_time: "renewTime",
    lease_transitions: "leaseTransitions",
    strategy: "strategy",
    preferred_holder: "preferredHolder",
});

/// Why a protobuf body was refused.
#[derive(Debug)]
pub enum DecodeError {
    /// Not protobuf at all, or a message that does not parse: a 400.
    Malformed(String),
    /// A kind, or a field of it, the simulator does not convert: a 415 that says to send JSON.
    Unsupported(String),
}

/// A protobuf request body as the object's JSON (with its `apiVersion` and `kind`).
pub fn decode(body: &[u8]) -> Result<Value, DecodeError> {
    let raw = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| DecodeError::Malformed("provided data does not appear to be a protobuf message, expected prefix [107 56 115 0]".into()))?;
    let unknown = Unknown::decode(raw)
        .map_err(|e| DecodeError::Malformed(format!("the protobuf envelope: {e}")))?;
    let tm = unknown.type_meta.unwrap_or_default();
    let (api_version, kind) = (
        tm.api_version.unwrap_or_default(),
        tm.kind.unwrap_or_default(),
    );
    let raw = unknown.raw.unwrap_or_default();
    let obj = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => decode_as::<core::Namespace>(&raw),
        ("v1", "ConfigMap") => decode_as::<core::ConfigMap>(&raw),
        ("v1", "Pod") => decode_as::<core::Pod>(&raw),
        ("v1", "Service") => decode_as::<core::Service>(&raw),
        ("apps/v1", "Deployment") => decode_as::<apps::Deployment>(&raw),
        ("coordination.k8s.io/v1", "Lease") => decode_as::<coordination::Lease>(&raw),
        _ => Err(DecodeError::Unsupported(format!(
            "the simulator reads no protobuf {kind} ({api_version}): send it as JSON"
        ))),
    }?;
    Ok(with_type(&api_version, &kind, obj))
}

fn decode_as<T: Json + Message + PartialEq>(raw: &[u8]) -> Result<Value, DecodeError> {
    let pb = T::decode(raw).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if T::from_json(&pb.to_json(Mode::Exact)) != pb {
        return Err(DecodeError::Unsupported(
            "the object carries fields the simulator does not read from protobuf: send it as JSON"
                .into(),
        ));
    }
    Ok(pb.to_json(Mode::Api))
}

/// `kind` and `apiVersion` first, then the object's fields.
fn with_type(api_version: &str, kind: &str, obj: Value) -> Value {
    let mut m = Map::new();
    m.insert("kind".into(), json!(kind));
    m.insert("apiVersion".into(), json!(api_version));
    if let Value::Object(o) = obj {
        m.extend(o);
    }
    Value::Object(m)
}

/// The object in protobuf (magic and envelope included), or `None` when its kind is not one
/// converted or its JSON holds something the message cannot: the caller answers JSON then.
pub fn encode(obj: &Value) -> Option<Vec<u8>> {
    let api_version = obj.get("apiVersion")?.as_str()?;
    let kind = obj.get("kind")?.as_str()?;
    let mut body = obj.as_object()?.clone();
    body.remove("apiVersion");
    body.remove("kind");
    let body = Value::Object(body);
    let raw = match (api_version, kind) {
        ("v1", "Namespace") => encode_as::<core::Namespace>(&body),
        ("v1", "ConfigMap") => encode_as::<core::ConfigMap>(&body),
        ("v1", "Pod") => encode_as::<core::Pod>(&body),
        ("v1", "Service") => encode_as::<core::Service>(&body),
        ("apps/v1", "Deployment") => encode_as::<apps::Deployment>(&body),
        ("coordination.k8s.io/v1", "Lease") => encode_as::<coordination::Lease>(&body),
        _ => None,
    }?;
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.to_string()),
            kind: Some(kind.to_string()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = MAGIC.to_vec();
    out.extend(unknown.encode_to_vec());
    Some(out)
}

fn encode_as<T: Json + Message>(body: &Value) -> Option<Vec<u8>> {
    let pb = T::from_json(body);
    (pb.to_json(Mode::Api) == *body).then(|| pb.encode_to_vec())
}

/// Whether an `Accept` header asks for protobuf before anything else.
pub fn prefers_protobuf(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .map(|first| first.split(';').next().unwrap_or("").trim())
        == Some(PROTOBUF)
}

/// Whether a `Content-Type` is the protobuf encoding.
pub fn is_protobuf(content_type: &str) -> bool {
    content_type.split(';').next().unwrap_or("").trim() == PROTOBUF
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let u = Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some(api_version.into()),
                kind: Some(kind.into()),
            }),
            raw: Some(raw),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        let mut out = MAGIC.to_vec();
        out.extend(u.encode_to_vec());
        out
    }

    #[test]
    fn a_protobuf_deployment_reads_as_its_json() {
        let d = apps::Deployment {
            metadata: Some(meta::ObjectMeta {
                name: Some("web".into()),
                namespace: Some(String::new()),
                labels: [("app".to_string(), "web".to_string())].into(),
                creation_timestamp: Some(meta::Time::default()),
                ..Default::default()
            }),
            spec: Some(apps::DeploymentSpec {
                replicas: Some(2),
                selector: Some(meta::LabelSelector {
                    match_labels: [("app".to_string(), "web".to_string())].into(),
                    ..Default::default()
                }),
                template: Some(core::PodTemplateSpec {
                    metadata: Some(meta::ObjectMeta::default()),
                    spec: Some(core::PodSpec {
                        containers: vec![core::Container {
                            name: Some("nginx".into()),
                            image: Some("nginx".into()),
                            resources: Some(core::ResourceRequirements::default()),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                }),
                strategy: Some(apps::DeploymentStrategy::default()),
                ..Default::default()
            }),
            status: Some(apps::DeploymentStatus::default()),
        };
        let obj = decode(&envelope("apps/v1", "Deployment", d.encode_to_vec())).unwrap();
        assert_eq!(
            obj,
            json!({"kind":"Deployment","apiVersion":"apps/v1",
                "metadata":{"name":"web","creationTimestamp":null,"labels":{"app":"web"}},
                "spec":{"replicas":2,"selector":{"matchLabels":{"app":"web"}},
                    "template":{"metadata":{},"spec":{"containers":[{"name":"nginx","image":"nginx","resources":{}}]}},
                    "strategy":{}},
                "status":{}})
        );
    }

    #[test]
    fn a_protobuf_field_the_simulator_does_not_read_is_refused_not_dropped() {
        let p = core::Pod {
            spec: Some(core::PodSpec {
                affinity: Some(core::Affinity::default()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let err = decode(&envelope("v1", "Pod", p.encode_to_vec())).unwrap_err();
        assert!(matches!(err, DecodeError::Unsupported(_)), "{err:?}");
        let err = decode(b"{\"kind\":\"Pod\"}").unwrap_err();
        assert!(matches!(err, DecodeError::Malformed(_)), "{err:?}");
    }

    #[test]
    fn an_object_answered_in_protobuf_reads_back_the_same() {
        let cm = json!({"kind":"ConfigMap","apiVersion":"v1",
            "metadata":{"name":"c","namespace":"d","uid":"u","resourceVersion":"7",
                "creationTimestamp":"2026-01-02T03:04:05Z"},
            "data":{"a":"1","empty":""}});
        let bytes = encode(&cm).expect("a configmap encodes");
        assert_eq!(decode(&bytes).unwrap(), cm);
        // something the message cannot hold: answered in JSON instead
        let odd = json!({"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"c"},"extra":1});
        assert!(encode(&odd).is_none());
    }

    #[test]
    fn accept_and_content_type() {
        assert!(prefers_protobuf(
            "application/vnd.kubernetes.protobuf, application/json"
        ));
        assert!(!prefers_protobuf(
            "application/json, application/vnd.kubernetes.protobuf"
        ));
        assert!(is_protobuf("application/vnd.kubernetes.protobuf"));
        assert!(!is_protobuf("application/json"));
    }
}
