//! Discovery documents as a real API server serves them (legacy, non-aggregated form, which
//! every client accepts; see kubernetes-wire.md §1.5).

use serde_json::{Value, json};

use super::resources::{RESOURCES, group_versions};

pub fn version(kubernetes_version: &str) -> Value {
    let (major, minor) = kubernetes_version
        .split_once('.')
        .map(|(a, b)| {
            (
                a.to_string(),
                b.split('.').next().unwrap_or("0").to_string(),
            )
        })
        .unwrap_or(("1".into(), "33".into()));
    let patch = kubernetes_version.split('.').nth(2).unwrap_or("0");
    let prev = minor
        .parse::<u32>()
        .map(|m| m.saturating_sub(1))
        .unwrap_or(0);
    json!({
        "major": major,
        "minor": minor,
        "emulationMajor": major,
        "emulationMinor": minor,
        "minCompatibilityMajor": major,
        "minCompatibilityMinor": prev.to_string(),
        "gitVersion": format!("v{major}.{minor}.{patch}"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.9",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

pub fn api_versions(server: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}]
    })
}

pub fn api_groups() -> Value {
    let groups: Vec<Value> = group_versions()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, v)| {
            let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
            json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": if r.plural == "namespaces" {
                json!(["create","delete","get","list","patch","update","watch"])
            } else {
                json!(VERBS)
            },
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        resources.push(entry);
        for sub in r.subresources {
            let (kind, verbs, gv): (&str, Value, Option<(&str, &str)>) = match *sub {
                "status" => (r.kind, json!(["get", "patch", "update"]), None),
                "scale" => (
                    "Scale",
                    json!(["get", "patch", "update"]),
                    Some(("autoscaling", "v1")),
                ),
                "portforward" => ("PodPortForwardOptions", json!(["create", "get"]), None),
                "log" => ("Pod", json!(["get"]), None),
                _ => continue,
            };
            let mut e = json!({
                "name": format!("{}/{}", r.plural, sub),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": kind,
                "verbs": verbs,
            });
            if let Some((g, v)) = gv {
                e["group"] = json!(g);
                e["version"] = json!(v);
            }
            resources.push(e);
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources
    }))
}
