//! Server-side printing: the `meta.k8s.io/v1` Table a real API server answers to
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` (what `kubectl get` asks for), with
//! the columns of the API server's printers for pods, deployments, namespaces, services,
//! configmaps, leases and nodes. Other kinds are answered as plain lists, which kubectl prints
//! as NAME and AGE.

use serde_json::{Value, json};

use super::resources::ResourceType;

/// What each row carries besides its cells (`?includeObject=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

impl Include {
    pub fn parse(q: Option<&str>) -> Include {
        match q {
            Some("None") => Include::None,
            Some("Object") => Include::Object,
            _ => Include::Metadata,
        }
    }
}

/// Whether an `Accept` header asks for a `meta.k8s.io` Table (v1 or v1beta1) before a plain
/// object, and which version.
pub fn wanted(accept: &str) -> Option<&'static str> {
    for media in accept.split(',') {
        let parts: Vec<&str> = media.split(';').map(str::trim).collect();
        let param = |k: &str| {
            parts
                .iter()
                .find_map(|p| p.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
        };
        if param("as") == Some("Table") && param("g") == Some("meta.k8s.io") {
            match param("v") {
                Some("v1") => return Some("v1"),
                Some("v1beta1") => return Some("v1beta1"),
                _ => continue,
            }
        }
        if parts.first().is_some_and(|m| !m.is_empty()) && param("as").is_none() {
            // a plain media type listed before any Table: the client prefers objects
            return None;
        }
    }
    None
}

/// The kinds printed with their own columns.
pub fn printed(rt: &ResourceType) -> bool {
    columns(rt).is_some()
}

type Col = (&'static str, &'static str, &'static str, u8);

const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DESC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// (name, type, description, priority) of each column after Name; Age sits where it belongs.
fn columns(rt: &ResourceType) -> Option<&'static [Col]> {
    let cols: &'static [Col] = match (rt.group, rt.kind) {
        ("", "Pod") => &[
            (
                "Ready",
                "string",
                "The aggregate readiness state of this pod for accepting traffic.",
                0,
            ),
            (
                "Status",
                "string",
                "The aggregate status of the containers in this pod.",
                0,
            ),
            (
                "Restarts",
                "string",
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
                0,
            ),
            ("Age", "string", AGE_DESC, 0),
            (
                "IP",
                "string",
                "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
                1,
            ),
            (
                "Node",
                "string",
                "NodeName indicates in which node this pod is scheduled.",
                1,
            ),
            (
                "Nominated Node",
                "string",
                "nominatedNodeName is set only when this pod preempts other pods on the node.",
                1,
            ),
            (
                "Readiness Gates",
                "string",
                "If specified, all readiness gates will be evaluated for pod readiness.",
                1,
            ),
        ],
        ("apps", "Deployment") => &[
            ("Ready", "string", "Number of the pod with ready state", 0),
            (
                "Up-to-date",
                "string",
                "Total number of non-terminating pods targeted by this deployment that have the desired template spec.",
                0,
            ),
            (
                "Available",
                "string",
                "Total number of available non-terminating pods (ready for at least minReadySeconds) targeted by this deployment.",
                0,
            ),
            ("Age", "string", AGE_DESC, 0),
            (
                "Containers",
                "string",
                "Names of each container in the template.",
                1,
            ),
            (
                "Images",
                "string",
                "Images referenced by each container in the template.",
                1,
            ),
            ("Selector", "string", "Label selector for pods.", 1),
        ],
        ("", "Namespace") => &[
            ("Status", "string", "The status of the namespace", 0),
            ("Age", "string", AGE_DESC, 0),
        ],
        ("", "Service") => &[
            (
                "Type",
                "string",
                "type determines how the Service is exposed.",
                0,
            ),
            (
                "Cluster-IP",
                "string",
                "clusterIP is the IP address of the service.",
                0,
            ),
            (
                "External-IP",
                "string",
                "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
                0,
            ),
            (
                "Port(s)",
                "string",
                "The list of ports that are exposed by this service.",
                0,
            ),
            ("Age", "string", AGE_DESC, 0),
            (
                "Selector",
                "string",
                "Route service traffic to pods with label keys and values matching this selector.",
                1,
            ),
        ],
        _ => return more_columns(rt),
    };
    Some(cols)
}

/// The columns of configmaps, leases and nodes.
fn more_columns(rt: &ResourceType) -> Option<&'static [Col]> {
    let cols: &'static [Col] = match (rt.group, rt.kind) {
        ("", "ConfigMap") => &[
            ("Data", "string", "Data contains the configuration data.", 0),
            ("Age", "string", AGE_DESC, 0),
        ],
        ("coordination.k8s.io", "Lease") => &[
            ("Holder", "string", "The holder of the lease", 0),
            ("Age", "string", AGE_DESC, 0),
        ],
        ("", "Node") => &[
            ("Status", "string", "The status of the node", 0),
            ("Roles", "string", "The roles of the node", 0),
            ("Age", "string", AGE_DESC, 0),
            (
                "Version",
                "string",
                "Kubelet Version reported by the node.",
                0,
            ),
            (
                "Internal-IP",
                "string",
                "List of addresses reachable to the node.",
                1,
            ),
            (
                "External-IP",
                "string",
                "List of addresses reachable to the node.",
                1,
            ),
            (
                "OS-Image",
                "string",
                "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
                1,
            ),
            (
                "Kernel-Version",
                "string",
                "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
                1,
            ),
            (
                "Container-Runtime",
                "string",
                "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
                1,
            ),
        ],
        _ => return None,
    };
    Some(cols)
}

/// The Table of `objs` (one object for a GET of a name, every listed one for a LIST), or
/// `None` for a kind without printer columns. `meta` is the list's metadata.
pub fn table(
    rt: &ResourceType,
    version: &str,
    objs: &[Value],
    meta: Value,
    include: Include,
) -> Option<Value> {
    let cols = columns(rt)?;
    let mut defs = vec![
        json!({"name":"Name","type":"string","format":"name","description":NAME_DESC,"priority":0}),
    ];
    defs.extend(cols.iter().map(|(name, ty, desc, prio)| {
        json!({"name": name, "type": ty, "format": "", "description": desc, "priority": prio})
    }));
    let now = chrono::Utc::now();
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            let mut row = json!({"cells": cells(rt, o, now)});
            match include {
                Include::None => {}
                Include::Metadata => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": format!("meta.k8s.io/{version}"),
                        "metadata": o["metadata"],
                    });
                }
                Include::Object => row["object"] = o.clone(),
            }
            row
        })
        .collect();
    Some(json!({
        "kind": "Table",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": meta,
        "columnDefinitions": defs,
        "rows": rows,
    }))
}

type Now = chrono::DateTime<chrono::Utc>;

fn cells(rt: &ResourceType, o: &Value, now: Now) -> Vec<Value> {
    let name = json!(o["metadata"]["name"].as_str().unwrap_or(""));
    let age = json!(age(&o["metadata"]["creationTimestamp"], now));
    let mut c = vec![name];
    match (rt.group, rt.kind) {
        ("", "Pod") => c.extend(pod_cells(o, age, now)),
        ("apps", "Deployment") => {
            let s = &o["status"];
            let n = |v: &Value| v.as_i64().unwrap_or(0);
            c.push(json!(format!(
                "{}/{}",
                n(&s["readyReplicas"]),
                o["spec"]["replicas"].as_i64().unwrap_or(1)
            )));
            c.push(json!(n(&s["updatedReplicas"])));
            c.push(json!(n(&s["availableReplicas"])));
            c.push(age);
            let containers = o["spec"]["template"]["spec"]["containers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let join = |k: &str| {
                containers
                    .iter()
                    .map(|x| x[k].as_str().unwrap_or("").to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            c.push(json!(join("name")));
            c.push(json!(join("image")));
            c.push(json!(label_selector(&o["spec"]["selector"])));
        }
        ("", "Namespace") => {
            c.push(json!(o["status"]["phase"].as_str().unwrap_or("")));
            c.push(age);
        }
        ("", "Service") => c.extend(service_cells(o, age)),
        ("", "ConfigMap") => {
            let n = o["data"].as_object().map_or(0, |m| m.len())
                + o["binaryData"].as_object().map_or(0, |m| m.len());
            c.push(json!(n));
            c.push(age);
        }
        ("coordination.k8s.io", "Lease") => {
            c.push(json!(o["spec"]["holderIdentity"].as_str().unwrap_or("")));
            c.push(age);
        }
        ("", "Node") => c.extend(node_cells(o, age)),
        _ => c.push(age),
    }
    c
}

/// READY, STATUS, RESTARTS, AGE, IP, NODE, NOMINATED NODE, READINESS GATES: the API server's
/// `printPod`, sidecars (restartable init containers) counted as containers.
fn pod_cells(p: &Value, age: Value, now: Now) -> Vec<Value> {
    let arr = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let spec = &p["spec"];
    let status = &p["status"];
    let sidecars: Vec<String> = arr(&spec["initContainers"])
        .iter()
        .filter(|c| c["restartPolicy"] == "Always")
        .map(|c| c["name"].as_str().unwrap_or("").to_string())
        .collect();
    let total = arr(&spec["containers"]).len() + sidecars.len();
    let mut ready = 0;
    let mut restarts = 0;
    let mut last_restart: Option<chrono::DateTime<chrono::FixedOffset>> = None;
    let mut reason = status["phase"].as_str().unwrap_or("").to_string();
    if let Some(r) = status["reason"].as_str().filter(|r| !r.is_empty()) {
        reason = r.to_string();
    }
    let mut note_restart = |cs: &Value| {
        restarts += cs["restartCount"].as_i64().unwrap_or(0);
        if let Some(t) = cs["lastState"]["terminated"]["finishedAt"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            && last_restart.is_none_or(|l| t > l)
        {
            last_restart = Some(t);
        }
    };
    for cs in arr(&status["initContainerStatuses"]) {
        if sidecars.iter().any(|s| cs["name"] == s.as_str()) {
            note_restart(&cs);
            if cs["started"] == true && cs["ready"] == true {
                ready += 1;
            }
        }
    }
    let mut has_running = false;
    for cs in arr(&status["containerStatuses"]).iter().rev() {
        note_restart(cs);
        let state = &cs["state"];
        if let Some(r) = state["waiting"]["reason"]
            .as_str()
            .filter(|r| !r.is_empty())
        {
            reason = r.to_string();
        } else if let Some(r) = state["terminated"]["reason"]
            .as_str()
            .filter(|r| !r.is_empty())
        {
            reason = r.to_string();
        } else if state["terminated"].is_object() {
            reason = format!(
                "ExitCode:{}",
                state["terminated"]["exitCode"].as_i64().unwrap_or(0)
            );
        } else if cs["ready"] == true && state["running"].is_object() {
            has_running = true;
            ready += 1;
        }
    }
    if reason == "Completed" && has_running {
        reason = if super::object::pod_ready(p) {
            "Running"
        } else {
            "NotReady"
        }
        .into();
    }
    let phase = status["phase"].as_str().unwrap_or("");
    if !p["metadata"]["deletionTimestamp"].is_null() && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".into();
    }
    let restarts = match last_restart {
        Some(t) if restarts != 0 => {
            format!(
                "{restarts} ({} ago)",
                human_duration(now.signed_duration_since(t))
            )
        }
        _ => restarts.to_string(),
    };
    let or_none = |s: &str| {
        if s.is_empty() {
            "<none>".to_string()
        } else {
            s.to_string()
        }
    };
    let ip = status["podIPs"][0]["ip"]
        .as_str()
        .or(status["podIP"].as_str())
        .unwrap_or("");
    let gates = arr(&spec["readinessGates"]);
    let gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conds = arr(&status["conditions"]);
        let true_count = gates
            .iter()
            .filter(|g| {
                conds
                    .iter()
                    .any(|c| c["type"] == g["conditionType"] && c["status"] == "True")
            })
            .count();
        format!("{true_count}/{}", gates.len())
    };
    vec![
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts),
        age,
        json!(or_none(ip)),
        json!(or_none(spec["nodeName"].as_str().unwrap_or(""))),
        json!(or_none(status["nominatedNodeName"].as_str().unwrap_or(""))),
        json!(gates),
    ]
}

/// TYPE, CLUSTER-IP, EXTERNAL-IP, PORT(S), AGE, SELECTOR.
fn service_cells(s: &Value, age: Value) -> Vec<Value> {
    let spec = &s["spec"];
    let ty = spec["type"].as_str().unwrap_or("ClusterIP");
    let cluster_ip = spec["clusterIP"]
        .as_str()
        .filter(|c| !c.is_empty())
        .unwrap_or("<none>");
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let external = match ty {
        "ExternalName" => spec["externalName"].as_str().unwrap_or("").to_string(),
        "LoadBalancer" => {
            let mut ips: Vec<String> = s["status"]["loadBalancer"]["ingress"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|i| i["ip"].as_str().or(i["hostname"].as_str()))
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            ips.extend(strs(&spec["externalIPs"]));
            if ips.is_empty() {
                "<pending>".into()
            } else {
                ips.join(",")
            }
        }
        _ => {
            let ips = strs(&spec["externalIPs"]);
            if ips.is_empty() {
                "<none>".into()
            } else {
                ips.join(",")
            }
        }
    };
    let ports: Vec<String> = spec["ports"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    let proto = p["protocol"].as_str().unwrap_or("TCP");
                    match p["nodePort"].as_i64().filter(|n| *n != 0) {
                        Some(n) => format!("{}:{n}/{proto}", p["port"]),
                        None => format!("{}/{proto}", p["port"]),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let ports = if ports.is_empty() {
        "<none>".into()
    } else {
        ports.join(",")
    };
    let selector = match spec["selector"].as_object() {
        Some(m) if !m.is_empty() => {
            let mut kv: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect();
            kv.sort();
            kv.join(",")
        }
        _ => "<none>".into(),
    };
    vec![
        json!(ty),
        json!(cluster_ip),
        json!(external),
        json!(ports),
        age,
        json!(selector),
    ]
}

/// STATUS, ROLES, AGE, VERSION and the wide columns of a node.
fn node_cells(n: &Value, age: Value) -> Vec<Value> {
    let conds = n["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut status = match conds.iter().find(|c| c["type"] == "Ready") {
        Some(c) if c["status"] == "True" => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if n["spec"]["unschedulable"] == true {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<String> = n["metadata"]["labels"]
        .as_object()
        .map(|l| {
            l.keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                .filter(|r| !r.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    let roles = if roles.is_empty() {
        "<none>".into()
    } else {
        roles.join(",")
    };
    let addr = |ty: &str| {
        n["status"]["addresses"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["type"] == ty))
            .and_then(|x| x["address"].as_str())
            .unwrap_or("<none>")
            .to_string()
    };
    let info = &n["status"]["nodeInfo"];
    let s = |v: &Value| json!(v.as_str().filter(|s| !s.is_empty()).unwrap_or("<unknown>"));
    vec![
        json!(status),
        json!(roles),
        age,
        json!(info["kubeletVersion"].as_str().unwrap_or("")),
        json!(addr("InternalIP")),
        json!(addr("ExternalIP")),
        s(&info["osImage"]),
        s(&info["kernelVersion"]),
        s(&info["containerRuntimeVersion"]),
    ]
}

/// `metav1.FormatLabelSelector`: `k=v,k2 in (a,b)`, `<none>` for an empty selector.
fn label_selector(sel: &Value) -> String {
    let mut parts: Vec<String> = sel["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    parts.sort();
    for e in sel["matchExpressions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let key = e["key"].as_str().unwrap_or("");
        let values: Vec<&str> = e["values"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        parts.push(match e["operator"].as_str().unwrap_or("") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            op => format!("{key} {op} ({})", values.join(",")),
        });
    }
    if parts.is_empty() {
        "<none>".into()
    } else {
        parts.join(",")
    }
}

/// `translateTimestampSince`: the object's age, `<unknown>` without a creation time.
fn age(created: &Value, now: Now) -> String {
    match created
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    {
        Some(t) => human_duration(now.signed_duration_since(t)),
        None => "<unknown>".into(),
    }
}

/// `duration.HumanDuration` of apimachinery: `42s`, `3m10s`, `15m`, `5h3m`, `2d4h`, `45d`,
/// `2y10d`.
pub fn human_duration(d: chrono::TimeDelta) -> String {
    let secs = d.num_seconds();
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 60 * 2 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_get_asks_for_a_v1_table() {
        let a = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(wanted(a), Some("v1"));
        assert_eq!(wanted("application/json"), None);
        assert_eq!(
            wanted("application/json, application/json;as=Table;v=v1;g=meta.k8s.io"),
            None
        );
    }

    #[test]
    fn ages_print_as_the_api_server_prints_them() {
        let s = chrono::TimeDelta::seconds;
        assert_eq!(human_duration(s(42)), "42s");
        assert_eq!(human_duration(s(190)), "3m10s");
        assert_eq!(human_duration(s(15 * 60)), "15m");
        assert_eq!(human_duration(s(5 * 3600 + 180)), "5h3m");
        assert_eq!(human_duration(s(30 * 3600)), "30h");
        assert_eq!(human_duration(s(52 * 3600)), "2d4h");
        assert_eq!(human_duration(s(45 * 86400)), "45d");
    }
}
