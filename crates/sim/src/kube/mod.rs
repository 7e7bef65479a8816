//! The Kubernetes API server and the add-on's controllers (placeholder until issue 3 lands).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::{Scenario, Shared};

/// The Kubernetes side of a scenario: namespaces, workloads, and faults.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubeScenario {}

impl KubeScenario {
    pub fn builtin(_name: &str) -> Self {
        Self::default()
    }
}

/// The object store and everything that watches it.
pub struct KubeState {}

impl KubeState {
    pub fn new(_scenario: &Scenario) -> Self {
        Self {}
    }
}

pub fn router(_shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
}

/// Starts the add-on and workload controllers; they stop when `shutdown` turns true.
pub fn start_controllers(
    _shared: Arc<Shared>,
    _shutdown: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    Vec::new()
}

/// The Kubernetes side of `/_sim/state`: namespaces, workloads, pods by revision, webhooks, tags.
pub fn state_summary(_shared: &Shared) -> serde_json::Value {
    serde_json::Value::Null
}
