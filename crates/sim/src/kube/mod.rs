//! The Kubernetes API server and the add-on's controllers.
//!
//! ```text
//!  HTTPS ─▶ api (auth, discovery, verbs) ─▶ admission (defaults, injection, mesh allowlist)
//!                │                                  │
//!                ├─ watch ◀── events ── store ◀─────┘ (uid, resourceVersion, generation)
//!                └─ portforward ─▶ addon::istiod_debug (/debug/syncz on 15014)
//!
//!  controllers (Deployment → ReplicaSet → Pod, StatefulSet, DaemonSet, readiness, GC)
//!  addon (follows Shared::mesh: istiod, webhooks, gateways, leases per revision; proxies)
//! ```

mod addon;
mod admission;
mod api;
mod controllers;
mod discovery;
mod gc;
mod patch;
mod portforward;
mod resources;
mod scenario;
mod selectors;
mod status;
mod store;
mod summary;
mod watch;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch as tokio_watch;

pub use scenario::{GeneratedShape, KubeScenario, NamespaceShape, TagShape, WorkloadShape};
pub use store::{Event, EventType, Obj, Store, Stored};

use crate::{Clock, Scenario, Shared};

/// The object store and everything the controllers remember between passes.
pub struct KubeState {
    pub store: Store,
    pub scenario: KubeScenario,
    pub(crate) clock: Clock,
    /// How often an idle watch gets a bookmark (real time).
    pub(crate) bookmark_every: Duration,
    /// Pods waiting to turn Ready: (when, namespace, name, uid).
    pub(crate) ready_timers: Mutex<Vec<(Instant, String, String, String)>>,
    /// When each proxy (pod uid) connected to istiod; absent = since the start.
    pub(crate) proxies: Mutex<HashMap<String, Instant>>,
    /// Revisions at start (the installed ones), for "new revision" faults.
    pub(crate) initial_revisions: Vec<String>,
}

impl KubeState {
    /// Builds the starting cluster, already settled: the installed revisions' control plane,
    /// the tags, the application workloads with their pods injected, Ready and SYNCED.
    pub fn new(scenario: &Scenario) -> Self {
        let state = Self {
            store: Store::with_time_scale(scenario.time_scale),
            scenario: scenario.kube.clone(),
            clock: Clock::new(scenario.time_scale),
            bookmark_every: Duration::from_secs(1),
            ready_timers: Mutex::new(Vec::new()),
            proxies: Mutex::new(HashMap::new()),
            initial_revisions: scenario.cluster.revisions.clone(),
        };
        addon::seed(
            &state,
            &scenario.cluster.revisions,
            &scenario.cluster.ingress_gateways,
        );
        controllers::seed_workloads(&state);
        controllers::settle(&state);
        state
    }
}

impl KubeState {
    /// Stores an object without admission, as one created before a webhook existed (tests use
    /// it for a shared ConfigMap the add-on's MeshConfig validation would now reject).
    /// `plural` is the resource's plural name (`configmaps`).
    pub fn insert_unadmitted(&self, plural: &str, obj: serde_json::Value) -> Result<(), String> {
        self.store
            .create(resources::by_plural(plural), obj)
            .map(|_| ())
            .map_err(|e| e.message)
    }
}

pub fn router(shared: Arc<Shared>) -> axum::Router {
    api::router(shared)
}

/// Starts the add-on and workload controllers; they stop when `shutdown` turns true.
pub fn start_controllers(
    shared: Arc<Shared>,
    shutdown: tokio_watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(controllers::run(shared.clone(), shutdown.clone())),
        tokio::spawn(addon::run(shared, shutdown)),
    ]
}

/// The Kubernetes side of `/_sim/state`: namespaces, workloads, pods by revision, webhooks, tags.
pub fn state_summary(shared: &Shared) -> serde_json::Value {
    summary::summary(&shared.kube)
}
