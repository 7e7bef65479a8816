//! Scenarios: the cluster's starting shape, the time scale, and the faults to inject.
//!
//! A scenario is either built in (`healthy`, `arm-throttling`, …) or a YAML file whose keys
//! are the fields below; every field has a default, so a file names only what it changes.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::arm::ArmFaults;
use crate::kube::KubeScenario;

/// The names `--scenario` accepts besides a file path.
pub const BUILTIN: &[&str] = &[
    "healthy",
    "stale-proxies",
    "crashloop-istiod",
    "arm-throttling",
    "lro-failure",
    "slow-rollout",
    "stuck-rollout",
    "legacy-labels",
    "native-sidecars",
    "large",
];

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    /// Real seconds per simulated second.
    pub time_scale: f64,
    pub cluster: ClusterShape,
    pub arm: ArmFaults,
    pub kube: KubeScenario,
}

/// The managed cluster as ARM describes it, and the identity that may reach it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterShape {
    pub subscription: String,
    pub resource_group: String,
    pub name: String,
    pub location: String,
    pub kubernetes_version: String,
    pub current_kubernetes_version: String,
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    /// Installed mesh revisions at start.
    pub revisions: Vec<String>,
    /// Enabled ingress gateway modes at start (`External`, `Internal`).
    pub ingress_gateways: Vec<String>,
    /// The region's mesh revision profile: revision → upgrades and compatible Kubernetes versions.
    pub mesh_revisions: Vec<MeshRevisionShape>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MeshRevisionShape {
    pub revision: String,
    pub upgrades: Vec<String>,
    pub kubernetes: Vec<String>,
}

impl Default for ClusterShape {
    fn default() -> Self {
        let k8s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Self {
            subscription: "00000000-0000-0000-0000-000000000000".into(),
            resource_group: "rg-sim".into(),
            name: "aks-sim".into(),
            location: "eastus2".into(),
            kubernetes_version: "1.33".into(),
            current_kubernetes_version: "1.33.5".into(),
            tenant_id: "11111111-1111-1111-1111-111111111111".into(),
            client_id: "22222222-2222-2222-2222-222222222222".into(),
            client_secret: "sim-client-secret".into(),
            revisions: vec!["asm-1-27".into()],
            ingress_gateways: vec!["External".into(), "Internal".into()],
            mesh_revisions: vec![
                MeshRevisionShape {
                    revision: "asm-1-27".into(),
                    upgrades: vec!["asm-1-28".into(), "asm-1-29".into()],
                    kubernetes: k8s(&["1.31", "1.32", "1.33"]),
                },
                MeshRevisionShape {
                    revision: "asm-1-28".into(),
                    upgrades: vec!["asm-1-29".into()],
                    kubernetes: k8s(&["1.32", "1.33", "1.34"]),
                },
                MeshRevisionShape {
                    revision: "asm-1-29".into(),
                    upgrades: vec![],
                    kubernetes: k8s(&["1.33", "1.34", "1.35"]),
                },
            ],
        }
    }
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            name: "healthy".into(),
            description: "A healthy cluster on asm-1-27 with asm-1-28 and asm-1-29 offered.".into(),
            time_scale: 0.02,
            cluster: ClusterShape::default(),
            arm: ArmFaults::default(),
            kube: KubeScenario::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error(
        "unknown scenario {name:?}: use one of {} or the path of a scenario YAML file",
        BUILTIN.join(", ")
    )]
    Unknown { name: String },
    #[error("cannot read scenario file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: String,
        line: u64,
        column: u64,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl Scenario {
    /// A built-in scenario by name.
    pub fn builtin(name: &str) -> Result<Self, ScenarioError> {
        if !BUILTIN.contains(&name) {
            return Err(ScenarioError::Unknown {
                name: name.to_string(),
            });
        }
        Ok(Self {
            name: name.to_string(),
            description: describe(name).to_string(),
            arm: ArmFaults::builtin(name),
            kube: KubeScenario::builtin(name),
            ..Self::default()
        })
    }

    /// A built-in name, or else a path to a YAML file.
    pub fn load(name_or_path: &str) -> Result<Self, ScenarioError> {
        if BUILTIN.contains(&name_or_path) {
            return Self::builtin(name_or_path);
        }
        let path = Path::new(name_or_path);
        if !path.exists() {
            return Err(ScenarioError::Unknown {
                name: name_or_path.to_string(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: name_or_path.to_string(),
            source,
        })?;
        Self::from_yaml(name_or_path, &text)
    }

    /// Parses a scenario YAML document; `origin` names it in errors.
    pub fn from_yaml(origin: &str, text: &str) -> Result<Self, ScenarioError> {
        let scenario: Scenario = serde_saphyr::from_str(text).map_err(|err| {
            let (line, column) = err
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            ScenarioError::Parse {
                path: origin.to_string(),
                line,
                column,
                message: first_line(&err.to_string()),
            }
        })?;
        scenario
            .validate()
            .map_err(|message| ScenarioError::Invalid {
                path: origin.to_string(),
                message,
            })?;
        Ok(scenario)
    }

    fn validate(&self) -> Result<(), String> {
        if !(self.time_scale.is_finite() && self.time_scale > 0.0) {
            return Err(format!(
                "time_scale must be a positive number, not {}",
                self.time_scale
            ));
        }
        if self.cluster.revisions.is_empty() {
            return Err("cluster.revisions must name at least one installed revision".into());
        }
        Ok(())
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).to_string()
}

fn describe(name: &str) -> &'static str {
    match name {
        "healthy" => "A healthy cluster on asm-1-27 with asm-1-28 and asm-1-29 offered.",
        "stale-proxies" => "Proxies on the new revision never acknowledge their configuration.",
        "crashloop-istiod" => "The new revision's istiod never becomes ready.",
        "arm-throttling" => {
            "ARM answers 429 with Retry-After and transient 409 OperationNotAllowed."
        }
        "lro-failure" => "The start operation ends Failed with an error body.",
        "slow-rollout" => "Pods take a long time to become ready.",
        "stuck-rollout" => {
            "A Deployment never finishes rolling out and hits its progress deadline."
        }
        "legacy-labels" => {
            "Namespaces labelled istio-injection=enabled and with a revision that is not installed."
        }
        "native-sidecars" => "Proxies are injected as native sidecars (init containers).",
        "large" => "200 namespaces, 2,000 Deployments, 10,000 pods.",
        _ => "",
    }
}
