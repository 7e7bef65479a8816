//! Mesh upgrade and revision profiles (hand-written: no usable Rust ARM crate models them).
//! Every field is optional on the wire; the newest revision has no `upgrades` key at all.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompatibleVersions {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub versions: Vec<String>,
}

/// A revision, the revisions it can be upgraded to, and the Kubernetes versions it supports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshRevision {
    #[serde(default)]
    pub revision: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub upgrades: Vec<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub compatible_with: Vec<CompatibleVersions>,
}

fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

impl MeshRevision {
    /// The Kubernetes `major.minor` versions this revision supports.
    pub fn kubernetes_versions(&self) -> Vec<&str> {
        self.compatible_with
            .iter()
            .filter(|c| {
                c.name
                    .as_deref()
                    .is_none_or(|n| n.eq_ignore_ascii_case("kubernetes"))
            })
            .flat_map(|c| c.versions.iter().map(String::as_str))
            .collect()
    }

    /// Whether a cluster version (`1.33` or `1.33.2`) is in `compatibleWith`.
    pub fn supports_kubernetes(&self, version: &str) -> bool {
        let minor = major_minor(version);
        self.kubernetes_versions()
            .iter()
            .any(|v| major_minor(v) == minor)
    }
}

fn major_minor(v: &str) -> &str {
    let v = v.trim_start_matches('v');
    match v.match_indices('.').nth(1) {
        Some((i, _)) => &v[..i],
        None => v,
    }
}

/// `GET managedClusters/{name}/meshUpgradeProfiles/istio` → `properties`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshUpgradeProfile {
    #[serde(default)]
    pub properties: MeshRevision,
}

/// `GET locations/{location}/meshRevisionProfiles/istio` → `properties`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshRevisionProfile {
    #[serde(default)]
    pub properties: MeshRevisionProfileProperties,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshRevisionProfileProperties {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub mesh_revisions: Vec<MeshRevision>,
}

impl MeshRevisionProfile {
    /// The entry for one revision, if the location offers it.
    pub fn revision(&self, name: &str) -> Option<&MeshRevision> {
        self.properties
            .mesh_revisions
            .iter()
            .find(|r| r.revision.as_deref() == Some(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spec_examples() {
        let up: MeshUpgradeProfile = serde_json::from_str(r#"{
            "id": "/subscriptions/0/resourcegroups/rg1/providers/Microsoft.ContainerService/managedClusters/c/meshUpgradeProfiles/istio",
            "type": "Microsoft.ContainerService/managedClusters/meshUpgradeProfiles",
            "name": "istio",
            "properties": {"revision": "asm-1-17", "upgrades": ["asm-1-18"],
              "compatibleWith": [{"name": "kubernetes", "versions": ["1.23", "1.24", "1.25", "1.26"]}]}
        }"#).unwrap();
        assert_eq!(up.properties.revision.as_deref(), Some("asm-1-17"));
        assert_eq!(up.properties.upgrades, vec!["asm-1-18".to_string()]);
        assert!(up.properties.supports_kubernetes("1.26.3"));
        assert!(!up.properties.supports_kubernetes("1.27"));

        let rp: MeshRevisionProfile = serde_json::from_str(r#"{"properties": {"meshRevisions": [
            {"revision": "asm-1-17", "upgrades": ["asm-1-18"], "compatibleWith": [{"name": "kubernetes", "versions": ["1.23"]}]},
            {"revision": "asm-1-18", "compatibleWith": [{"name": "kubernetes", "versions": ["1.24"]}]},
            {"revision": "asm-1-19", "upgrades": null}
        ]}}"#).unwrap();
        assert_eq!(rp.properties.mesh_revisions.len(), 3);
        assert!(
            rp.revision("asm-1-18").unwrap().upgrades.is_empty(),
            "missing upgrades key = none"
        );
        assert!(
            rp.revision("asm-1-19").unwrap().upgrades.is_empty(),
            "null upgrades = none"
        );
        assert!(rp.revision("asm-1-20").is_none());
    }

    #[test]
    fn major_minor_of_versions() {
        assert_eq!(major_minor("1.33.2"), "1.33");
        assert_eq!(major_minor("1.33"), "1.33");
        assert_eq!(major_minor("v1.33.0"), "1.33");
    }
}
