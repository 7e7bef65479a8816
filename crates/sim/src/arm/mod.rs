//! Azure Resource Manager and the Entra ID token endpoint (placeholder until issue 2 lands).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{Scenario, Shared};

/// ARM faults a scenario can inject.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArmFaults {}

impl ArmFaults {
    pub fn builtin(_name: &str) -> Self {
        Self::default()
    }
}

/// ARM's mutable state: the cluster document, operations, tokens.
pub struct ArmState {}

impl ArmState {
    pub fn new(_scenario: &Scenario) -> Self {
        Self {}
    }
}

pub fn router(_shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
}
