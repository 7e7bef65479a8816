//! istiod's monitoring port (15014), as port-forwarding reaches it: `/debug/syncz` (the
//! proxies connected to this istiod and whether they acked its last push), `/version`,
//! `/metrics`, `/ready`. Proxies spread over a revision's ready istiods by a hash of their
//! uid; a proxy acks after the scenario's `proxy_ack_seconds`, or never on a stale revision.

use std::hash::{Hash, Hasher};
use std::time::Instant;

use serde_json::{Value, json};

use super::MANAGER;
use super::manifests::istio_version;
use crate::kube::istio::{INGRESS_NS, ISTIO_NS};
use crate::kube::object::{label, name_of, pod_ready};
use crate::kube::resources::by_plural;
use crate::kube::state::KubeState;
use crate::kube::store::{PodFacts, Stored};

fn stable_hash(parts: &[&str]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for p in parts {
        p.hash(&mut h);
    }
    h.finish()
}

fn nonce(parts: &[&str]) -> String {
    let a = stable_hash(parts);
    let b = stable_hash(&[parts.join("/").as_str(), "nonce"]);
    uuid::Uuid::from_u64_pair(a, b).to_string()
}

/// The ready istiod pods of a revision, sorted by name.
fn ready_istiods(kube: &KubeState, rev: &str) -> Vec<String> {
    let (pods, _) = kube.client(MANAGER).list(by_plural("pods"), Some(ISTIO_NS));
    let mut out: Vec<String> = pods
        .iter()
        .filter(|p| {
            label(p, "app") == Some("istiod")
                && label(p, "istio.io/rev") == Some(rev)
                && pod_ready(p)
        })
        .map(|p| name_of(p).to_string())
        .collect();
    out.sort();
    out
}

const TYPES: &[(&str, &str)] = &[
    (
        "cluster",
        "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    ),
    (
        "listener",
        "type.googleapis.com/envoy.config.listener.v3.Listener",
    ),
    (
        "route",
        "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
    ),
    (
        "endpoint",
        "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
    ),
    (
        "extensionconfig",
        "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
    ),
];

/// istiod's `/debug/syncz` for one istiod pod: the proxies connected to it.
pub fn syncz(kube: &KubeState, istiod_pod: &Value, namespace: Option<&str>) -> Value {
    let Some(rev) = label(istiod_pod, "istio.io/rev").map(str::to_string) else {
        return json!([]);
    };
    let me = name_of(istiod_pod).to_string();
    let istiods = ready_istiods(kube, &rev);
    if !istiods.contains(&me) {
        return json!([]);
    }
    let stale = kube.scenario.stale_revisions.contains(&rev);
    let ack_after = kube.clock.real(std::time::Duration::from_secs_f64(
        kube.scenario.proxy_ack_seconds.max(0.0),
    ));
    let proxies = kube
        .proxies
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let now = Instant::now();
    // Judged on what the store indexes of each pod: ten thousand proxies are not parsed.
    let (pods, _) = kube.client(MANAGER).list_raw(by_plural("pods"), namespace);
    let mut out = Vec::new();
    for p in pods.iter() {
        let Some(facts) = p.pod.as_ref() else {
            continue;
        };
        if !facts.ready || facts.revision.as_deref() != Some(rev.as_str()) {
            continue;
        }
        let uid = p.uid.as_str();
        let idx = (stable_hash(&[uid]) % istiods.len() as u64) as usize;
        if istiods[idx] != me {
            continue;
        }
        let connected = proxies.get(uid).copied();
        let acked = !stale && connected.is_none_or(|c| now.duration_since(c) >= ack_after);
        out.push(sync_entry(p, facts, &rev, &me, acked));
    }
    Value::Array(out)
}

/// One proxy's line of syncz: what `me` sent it, and whether it acked.
fn sync_entry(p: &Stored, facts: &PodFacts, rev: &str, me: &str, acked_yet: bool) -> Value {
    let uid = p.uid.as_str();
    let gateway = p.namespace == INGRESS_NS;
    let version = facts
        .proxy_image
        .as_deref()
        .and_then(|i| i.rsplit(':').next())
        .map(|t| t.trim_end_matches("-distroless").to_string())
        .unwrap_or_else(|| istio_version(rev));
    let mut entry = serde_json::Map::new();
    entry.insert("cluster_id".into(), json!("Kubernetes"));
    entry.insert("proxy".into(), json!(format!("{}.{}", p.name, p.namespace)));
    entry.insert(
        "proxy_type".into(),
        json!(if gateway { "router" } else { "sidecar" }),
    );
    entry.insert("proxy_version".into(), json!(version));
    entry.insert("istio_version".into(), json!(version));
    let mut resources = serde_json::Map::new();
    let sent_time = facts.start_time.clone();
    for (short, type_url) in TYPES {
        if *short == "extensionconfig" {
            continue;
        }
        let sent = nonce(&[uid, short, me]);
        let acked = if acked_yet {
            sent.clone()
        } else {
            String::new()
        };
        entry.insert(format!("{short}_sent"), json!(sent));
        if !acked.is_empty() {
            entry.insert(format!("{short}_acked"), json!(acked));
        }
        let mut r = json!({"sent": sent, "sentTime": sent_time});
        if !acked.is_empty() {
            r["acked"] = json!(acked);
        }
        resources.insert(type_url.to_string(), r);
    }
    entry.insert("resources".into(), Value::Object(resources));
    Value::Object(entry)
}

/// What istiod's monitoring port (15014) answers for `path`: (status, content type, body).
pub fn http(
    kube: &KubeState,
    istiod_pod: &Value,
    path_and_query: &str,
) -> (u16, &'static str, Vec<u8>) {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let namespace = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "namespace")
        .map(|(_, v)| v.into_owned());
    match path {
        "/debug/syncz" => {
            let body = syncz(kube, istiod_pod, namespace.as_deref());
            (200, "application/json", serde_json::to_vec_pretty(&body).unwrap_or_default())
        }
        "/version" | "/debug/version" => {
            let rev = label(istiod_pod, "istio.io/rev").unwrap_or("");
            let v = kube.patches.version(rev);
            (200, "application/json", json!({"version": v, "revision": rev}).to_string().into_bytes())
        }
        "/metrics" => (
            200,
            "text/plain; version=0.0.4",
            b"# HELP pilot_xds Number of endpoints connected to this pilot using XDS.\n# TYPE pilot_xds gauge\n".to_vec(),
        ),
        "/ready" => (200, "text/plain", Vec::new()),
        p if p.starts_with("/debug") => (
            404,
            "text/plain; charset=utf-8",
            b"404 page not found\n".to_vec(),
        ),
        _ => (404, "text/plain; charset=utf-8", b"404 page not found\n".to_vec()),
    }
}
