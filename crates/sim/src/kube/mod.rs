//! The Kubernetes API server and the add-on's controllers, in layers: each module uses
//! only those below it.
//!
//! ```text
//!  mod.rs      the face: KubeState::new plugs the add-on's webhooks into admission,
//!    │         seeds the cluster and settles it
//!    ▼
//!  api ───────▶ portforward ─▶ addon (istiod's port 15014)
//!    │  HTTPS: auth, discovery, verbs; creates through a Client, the other verbs on the store
//!    ▼
//!  addon · controllers · summary
//!    │  the add-on follows Shared::mesh (istiod, webhooks, gateways, leases per revision);
//!    │  the controllers run Deployment → ReplicaSet → Pod, StatefulSet, DaemonSet, kubelet
//!    ▼
//!  state (KubeState) ─▶ client (Client: the controllers' and the add-on's one interface)
//!    ▼
//!  admission (defaults; webhook calls ─▶ a WebhookServer) · gc · patch · watch
//!    ▼
//!  store (objects as JSON, resourceVersion, events; uid, generation, finalizers, grace)
//!    ▼
//!  object · istio · resources · selectors · status · discovery · scenario (the vocabulary)
//! ```

mod addon;
mod admission;
mod api;
mod client;
mod controllers;
mod discovery;
mod due;
mod egress;
mod gc;
mod istio;
mod metrics;
mod object;
mod patch;
mod portforward;
mod proto;
pub(crate) mod resources;
pub(crate) mod scenario;
mod selectors;
mod state;
mod status;
mod store;
mod summary;
mod table;
pub(crate) mod traffic;
mod watch;

use std::sync::Arc;

use tokio::sync::watch as tokio_watch;

pub use egress::calls::EgressCall;
pub use scenario::{
    ClusterWideForbidden, GeneratedShape, KubeScenario, NamespaceShape, SidecarRestart, TagShape,
    WorkloadShape,
};
pub use state::KubeState;
pub use store::{Event, EventType, Obj, Store, Stored};
pub use traffic::{BUCKETS_MS, TrafficFault, TrafficShape};

use crate::{Scenario, Shared};

impl KubeState {
    /// Builds the starting cluster, already settled: the installed revisions' control plane,
    /// the tags, the application workloads with their pods injected, Ready and SYNCED.
    pub fn new(scenario: &Scenario) -> Self {
        let patches = addon::Patches::default();
        let mut state = Self::empty(
            scenario,
            addon::Webhooks::new(&scenario.kube, patches.clone()),
        );
        state.patches = patches;
        addon::seed(
            &state,
            &scenario.cluster.revisions,
            &scenario.cluster.ingress_gateways,
        );
        controllers::seed_workloads(&state);
        controllers::settle(&state);
        controllers::label_late(&state);
        if !scenario.kube.rolled_patches.is_empty() {
            // AKS rolled a patch after the workloads started: istiod and the gateways move
            // to it, the sidecars keep the image they were injected with.
            for (rev, times) in &scenario.kube.rolled_patches {
                for _ in 0..*times {
                    let _ = addon::roll_patch(&state, rev);
                }
            }
            controllers::settle(&state);
        }
        controllers::seed_objects(&state);
        state
    }

    /// Rolls the next Istio patch of the installed revision `rev`, as AKS does by itself:
    /// istiod, the injector and the gateways move to it; sidecars keep their image until
    /// their pods are recreated. The new version (`1.27.4`).
    pub fn roll_patch(&self, rev: &str) -> Result<String, String> {
        addon::roll_patch(self, rev)
    }

    /// The proxy image the injector of `rev` injects now.
    pub fn injected_proxy_image(&self, rev: &str) -> String {
        self.patches.proxy_image(rev)
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

/// The sidecars' metrics page (`GET /metrics`), for a Prometheus to scrape over plain HTTP.
pub fn metrics_router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let shared = shared.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    metrics::page(&shared.kube),
                )
            }
        }),
    )
}

/// The Kubernetes side of `/_sim/state`: namespaces, workloads, pods by revision, webhooks, tags.
pub fn state_summary(shared: &Shared) -> serde_json::Value {
    summary::summary(&shared.kube)
}
