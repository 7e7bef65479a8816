//! Scenarios: the cluster's starting shape, the time scale, and the faults to inject.
//!
//! A scenario is either built in (`healthy`, `arm-throttling`, …) or a YAML file whose keys
//! are the fields below; every field has a default, so a file names only what it changes.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::kube::scenario::KubeScenario;

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
    /// Show `serviceMeshProfile.istio.certificateAuthority.plugin` (a Key Vault plug-in CA).
    pub plugin_ca: bool,
}

/// ARM and Entra ID behaviour: durations and faults. Durations marked "simulated" are scaled
/// by `time_scale`; `Retry-After` and token lifetimes are real seconds, because clients read
/// them off the wire and wait that long themselves.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArmFaults {
    /// Simulated seconds an update of the cluster (a PUT) runs before it ends.
    pub lro_seconds: f64,
    /// Fraction of `lro_seconds` after which the add-on applies the new revisions.
    pub apply_at: f64,
    /// Lifetime of issued access tokens, in real seconds (`expires_in`).
    pub token_lifetime_secs: u64,
    /// Every Nth ARM request (1st, N+1th, …) answers 429; 0 = never.
    pub throttle_every: u32,
    /// `Retry-After` on a 429, in real seconds.
    pub retry_after_secs: u64,
    /// Every Nth PUT (1st, N+1th, …) answers 409 `OperationNotAllowed` although no
    /// operation runs (a transient conflict, as from an agent-pool operation); 0 = never.
    pub conflict_every: u32,
    /// Every Nth ARM request, counted from the second (2nd, N+2th, …), answers 500
    /// `InternalServerError` (a transient ARM failure, retryable); 0 = never.
    pub server_error_every: u32,
    /// Operations that end Failed or Canceled instead of Succeeded.
    pub lro_failures: Vec<LroFailure>,
    /// Answer an `If-Match` mismatch with 409 `EtagMismatch` (seen from AKS) instead of the
    /// documented 412.
    pub etag_mismatch_409: bool,
}

impl Default for ArmFaults {
    fn default() -> Self {
        Self {
            lro_seconds: 60.0,
            apply_at: 0.3,
            token_lifetime_secs: 3599,
            throttle_every: 0,
            retry_after_secs: 1,
            conflict_every: 0,
            server_error_every: 0,
            lro_failures: Vec::new(),
            etag_mismatch_409: false,
        }
    }
}

impl ArmFaults {
    /// The ARM side of a built-in scenario.
    pub fn builtin(name: &str) -> Self {
        match name {
            "arm-throttling" => Self {
                throttle_every: 3,
                conflict_every: 2,
                ..Self::default()
            },
            "lro-failure" => Self {
                lro_failures: vec![LroFailure::default()],
                ..Self::default()
            },
            _ => Self::default(),
        }
    }
}

/// Which update operations a failure applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OperationKind {
    /// A PUT that adds a revision (the canary start).
    Start,
    /// A PUT that removes a revision (complete or rollback).
    Remove,
    /// Any update.
    Any,
}

/// Terminal status of a failing operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailStatus {
    Failed,
    Canceled,
}

/// An operation that ends badly: the revisions it asked for are rolled back.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LroFailure {
    pub on: OperationKind,
    /// How many matching operations fail before later ones succeed (0 = all of them).
    pub times: u32,
    pub status: FailStatus,
    /// The inner error (`error.details[0]`) of the operation.
    pub code: String,
    pub message: String,
}

impl Default for LroFailure {
    fn default() -> Self {
        Self {
            on: OperationKind::Start,
            times: 1,
            status: FailStatus::Failed,
            code: "ServiceMeshRevisionInstallFailed".into(),
            message: "The control plane of the new revision did not become ready in time; the service mesh add-on rolled the change back.".into(),
        }
    }
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
            plugin_ca: true,
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
        let arm = &self.arm;
        if !(arm.lro_seconds.is_finite() && arm.lro_seconds >= 0.0) {
            return Err(format!(
                "arm.lro_seconds must be zero or more, not {}",
                arm.lro_seconds
            ));
        }
        if !(arm.apply_at.is_finite() && (0.0..=1.0).contains(&arm.apply_at)) {
            return Err(format!(
                "arm.apply_at must be between 0 and 1, not {}",
                arm.apply_at
            ));
        }
        if self.cluster.revisions.len() > 2 {
            return Err("cluster.revisions may name at most two revisions".into());
        }
        if self.cluster.revisions.is_empty() {
            return Err("cluster.revisions must name at least one installed revision".into());
        }
        Ok(())
    }
}

/// The parser's message without its own "error: line L column C: " prefix (the location is
/// already in front of it).
fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or(s);
    let trimmed = line.strip_prefix("error: ").unwrap_or(line);
    match trimmed
        .strip_prefix("line ")
        .and_then(|rest| rest.split_once(": "))
    {
        Some((location, message)) if location.contains("column") => message.to_string(),
        _ => trimmed.to_string(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_set_their_arm_faults() {
        assert_eq!(Scenario::builtin("healthy").unwrap().arm.throttle_every, 0);
        let throttling = Scenario::builtin("arm-throttling").unwrap();
        assert!(throttling.arm.throttle_every > 1 && throttling.arm.conflict_every > 1);
        let failing = Scenario::builtin("lro-failure").unwrap();
        assert_eq!(failing.arm.lro_failures.len(), 1);
        assert_eq!(failing.arm.lro_failures[0].on, OperationKind::Start);
        for name in BUILTIN {
            assert_eq!(Scenario::builtin(name).unwrap().name, *name);
        }
        assert!(matches!(
            Scenario::builtin("nope"),
            Err(ScenarioError::Unknown { .. })
        ));
    }

    #[test]
    fn a_yaml_file_sets_every_arm_knob() {
        let yaml = "name: custom\ntime_scale: 0.001\narm:\n  lro_seconds: 10\n  apply_at: 0.5\n  token_lifetime_secs: 2\n  throttle_every: 4\n  retry_after_secs: 3\n  conflict_every: 5\n  lro_failures:\n    - on: remove\n      times: 0\n      status: Canceled\n      code: X\n      message: y\ncluster:\n  revisions: [asm-1-28]\n  plugin_ca: false\n";
        let s = Scenario::from_yaml("t.yaml", yaml).unwrap();
        assert_eq!(s.arm.lro_seconds, 10.0);
        assert_eq!(s.arm.token_lifetime_secs, 2);
        assert_eq!(s.arm.throttle_every, 4);
        assert_eq!(s.arm.conflict_every, 5);
        assert_eq!(s.arm.lro_failures[0].on, OperationKind::Remove);
        assert_eq!(s.arm.lro_failures[0].status, FailStatus::Canceled);
        assert_eq!(s.cluster.revisions, vec!["asm-1-28".to_string()]);
        assert!(!s.cluster.plugin_ca);
        // unspecified fields keep their defaults
        assert_eq!(s.cluster.name, "aks-sim");
    }

    #[test]
    fn a_bad_yaml_file_names_line_and_column() {
        let yaml = "name: x\narm:\n  throttle_evry: 3\n";
        match Scenario::from_yaml("bad.yaml", yaml) {
            Err(ScenarioError::Parse {
                line,
                column,
                message,
                ..
            }) => {
                assert_eq!((line, column), (3, 3));
                assert!(
                    message.starts_with("unknown field `throttle_evry`"),
                    "{message}"
                );
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
        let err = Scenario::from_yaml("bad.yaml", "arm:\n  apply_at: 2\n").unwrap_err();
        assert!(err.to_string().contains("apply_at"), "{err}");
    }
}
