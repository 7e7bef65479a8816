//! What the API server, the controllers and the add-on share: the object store, the
//! admission chain, the scenario and clock, and what the controllers remember between passes.
//! [`KubeState::client`] is how the controllers and the add-on reach the cluster.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::admission::{Admission, WebhookServer};
use super::client::Client;
use super::resources;
use super::scenario::KubeScenario;
use super::store::Store;
use crate::clock::Clock;
use crate::scenario::Scenario;

/// The object store and everything the controllers remember between passes.
pub struct KubeState {
    pub store: Store,
    pub scenario: KubeScenario,
    /// The admission chain every create and update goes through.
    pub(crate) admission: Admission,
    pub(crate) clock: Clock,
    /// How often an idle watch gets a bookmark (real time).
    pub(crate) bookmark_every: Duration,
    /// Pods waiting to turn Ready: (namespace, name, uid), each due when its delay is over.
    pub(crate) ready_timers: Mutex<super::due::DueQueue<(String, String, String)>>,
    /// When each proxy (pod uid) connected to istiod; absent = since the start.
    pub(crate) proxies: Mutex<HashMap<String, Instant>>,
    /// Revisions at start (the installed ones), for "new revision" faults.
    pub(crate) initial_revisions: Vec<String>,
    /// The application traffic's counters.
    pub(crate) traffic: super::traffic::Traffic,
    /// Each proxy's egress counters (Envoy's: they count since the proxy started).
    pub(crate) egress: super::egress::calls::ProxyCounters,
    /// The Istio patch each revision runs (the add-on and its injector share it).
    pub(crate) patches: super::addon::versions::Patches,
}

impl KubeState {
    /// An empty cluster whose admission calls `webhooks` (see `KubeState::new` for the
    /// starting cluster).
    pub(crate) fn empty(scenario: &Scenario, webhooks: impl WebhookServer + 'static) -> Self {
        Self {
            store: Store::with_time_scale(scenario.time_scale),
            scenario: scenario.kube.clone(),
            admission: Admission::new(webhooks),
            clock: Clock::new(scenario.time_scale),
            bookmark_every: Duration::from_secs(1),
            ready_timers: Default::default(),
            proxies: Mutex::new(HashMap::new()),
            initial_revisions: scenario.cluster.revisions.clone(),
            traffic: Default::default(),
            egress: Default::default(),
            patches: Default::default(),
        }
    }

    /// The cluster as the writer `manager` (a field manager) sees it.
    pub(crate) fn client<'a>(&'a self, manager: &'a str) -> Client<'a> {
        Client::new(&self.store, &self.admission, manager)
    }

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
