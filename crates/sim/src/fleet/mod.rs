//! A simulated fleet: many managed clusters behind one ARM endpoint.
//!
//! ```text
//!   fleet ARM listener (arm_endpoint == authority_host), one CA for every listener
//!     ├── Entra ID token endpoint, cloud metadata, /tenants, /subscriptions   (fleet)
//!     ├── GET …/managedClusters (per subscription, per resource group), paged
//!     │     with nextLink + $skipToken                                        (arm::list)
//!     ├── …/managedClusters/{name}[/…] ─▶ that member's own ARM router        (tower oneshot)
//!     ├── …/locations/{l}/operations/{id} ─▶ the member that started it
//!     └── /_sim/state, /_sim/requests (every member's, the cluster named)
//!   member i: its own Kubernetes API and metrics listeners, its own scenario and state;
//!     its kubeconfig (listClusterUserCredential) points at its own Kubernetes listener
//! ```
//!
//! Members share the token store (a token from the fleet's token endpoint is good for every
//! cluster), the simulator token and a request counter, so the fleet's requests are totally
//! ordered across clusters ([`FleetHandle::requests`]).

mod arm;
mod scenario;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::watch;

pub use scenario::{
    AnyScenario, FLEET_BUILTIN, FleetMember, FleetScenario, MEMBER_BUILTIN, RING_TAG, load_any,
    member_scenario,
};

use crate::{MemberLink, RequestLog, RequestRecord, SimError, SimHandle, SimOptions};

/// How to start a fleet.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    pub scenario: FleetScenario,
    /// The fleet's ARM, token endpoint and introspection listener. Port 0 picks a free port.
    pub arm_listen: SocketAddr,
    /// Where to write the CA's PEM; nothing is written when `None`.
    pub ca_file: Option<PathBuf>,
}

impl FleetOptions {
    pub fn new(scenario: FleetScenario) -> Self {
        Self {
            scenario,
            arm_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ca_file: None,
        }
    }
}

/// One member as a client sees it.
#[derive(Clone, Debug, Serialize)]
pub struct FleetMemberInfo {
    /// The cluster's ARM resource id.
    pub cluster_id: String,
    pub subscription: String,
    pub resource_group: String,
    pub name: String,
    pub location: String,
    pub tags: BTreeMap<String, String>,
    /// The `asm-canary/ring` tag, if any.
    pub ring: Option<String>,
    /// What the member was started as, e.g. `healthy on asm-1-27`, `stale canary (…)`.
    pub state: String,
    pub kube_server: String,
    pub metrics_url: String,
}

/// What a client needs to reach the fleet.
#[derive(Clone, Debug, Serialize)]
pub struct FleetConnectionInfo {
    pub arm_endpoint: String,
    pub authority_host: String,
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    /// PEM of the CA that signed every listener's certificate.
    pub ca_pem: String,
    pub ca_file: Option<PathBuf>,
    /// The subscriptions of the fleet, in order of first appearance.
    pub subscriptions: Vec<String>,
    /// Bearer token accepted by `/_sim/*` and by every member's Kubernetes API.
    pub sim_token: String,
    /// The shortest of the members' ARM poll intervals (see [`crate::ConnectionInfo`]).
    pub arm_poll_interval_ms: u64,
    pub members: Vec<FleetMemberInfo>,
}

impl FleetConnectionInfo {
    /// `KEY=value` lines: the single-cluster ones without the cluster's own
    /// subscription, resource group and name.
    pub fn env_lines(&self) -> Vec<(String, String)> {
        crate::reach_lines(&crate::Reach {
            arm_endpoint: &self.arm_endpoint,
            authority_host: &self.authority_host,
            tenant_id: &self.tenant_id,
            client_id: &self.client_id,
            client_secret: &self.client_secret,
            ca_file: self.ca_file.as_deref(),
            arm_poll_interval_ms: self.arm_poll_interval_ms,
            sim_token: &self.sim_token,
        })
    }

    /// The members as a table: ring, cluster id, state (one line each, a header first).
    pub fn member_table(&self) -> String {
        let ring_width = self
            .members
            .iter()
            .map(|m| m.ring.as_deref().unwrap_or("-").len())
            .chain([4])
            .max()
            .unwrap_or(4);
        let id_width = self
            .members
            .iter()
            .map(|m| m.cluster_id.len())
            .max()
            .unwrap_or(7);
        let mut out = format!("{:ring_width$}  {:id_width$}  STATE\n", "RING", "CLUSTER");
        for m in &self.members {
            let ring = m.ring.as_deref().unwrap_or("-");
            out.push_str(&format!(
                "{ring:ring_width$}  {:id_width$}  {}\n",
                m.cluster_id, m.state
            ));
        }
        out
    }

    /// The member with this ARM id (case-insensitive) or name.
    pub fn member(&self, id_or_name: &str) -> Option<&FleetMemberInfo> {
        self.members.iter().find(|m| {
            m.cluster_id.eq_ignore_ascii_case(id_or_name) || m.name.eq_ignore_ascii_case(id_or_name)
        })
    }
}

/// One request of the fleet's log: a member's mutating request (ARM or Kubernetes), or a
/// request the fleet answered itself (the token endpoint: no cluster).
#[derive(Clone, Debug, Serialize)]
pub struct FleetRequest {
    /// The member's ARM id; `None` for the fleet's own answers.
    pub cluster: Option<String>,
    /// Position in the fleet-wide order (1, 2, …).
    pub order: u64,
    #[serde(flatten)]
    pub record: RequestRecord,
}

/// A running fleet. Dropping it stops every listener.
pub struct FleetHandle {
    pub info: FleetConnectionInfo,
    /// The members, in the scenario's order (`members[i].info.kube_server` is its API).
    pub members: Vec<SimHandle>,
    state: Arc<arm::FleetState>,
    shutdown: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FleetHandle {
    /// Every member's mutating requests and the fleet's own, in the order they happened.
    pub fn requests(&self) -> Vec<FleetRequest> {
        self.state.requests()
    }

    /// The member with this ARM id (case-insensitive) or name.
    pub fn member(&self, id_or_name: &str) -> Option<&SimHandle> {
        let i = self.info.members.iter().position(|m| {
            m.cluster_id.eq_ignore_ascii_case(id_or_name) || m.name.eq_ignore_ascii_case(id_or_name)
        })?;
        self.members.get(i)
    }

    /// Stops the fleet's ARM listener and every member, and waits.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        for member in std::mem::take(&mut self.members) {
            member.shutdown().await;
        }
    }
}

impl Drop for FleetHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Starts a fleet: one CA, the fleet's ARM listener, then each member with its own
/// Kubernetes and metrics listeners.
pub async fn start_fleet(opts: FleetOptions) -> Result<FleetHandle, SimError> {
    let tls = crate::tls::SimTls::generate()?;
    let listener = crate::bind(opts.arm_listen).await?;
    let addr = crate::local_addr(&listener, opts.arm_listen)?;
    if let Some(path) = &opts.ca_file {
        crate::write_private(path, tls.ca_pem.as_bytes()).map_err(|source| SimError::WriteCa {
            path: path.clone(),
            source,
        })?;
    }
    let link = MemberLink {
        arm_endpoint: format!("https://{}", crate::host_port(addr)),
        sim_token: format!("sim-{}", uuid::Uuid::new_v4().simple()),
        tokens: Arc::default(),
        order: Arc::default(),
    };
    let fleet = &opts.scenario;
    let mut members = Vec::with_capacity(fleet.members.len());
    for member in &fleet.members {
        let mut sim = SimOptions::new(member.bound_scenario(fleet));
        sim.tls = Some(tls.clone());
        sim.member = Some(link.clone());
        members.push(crate::start(sim).await?);
    }
    let info = connection_info(fleet, &members, &link, &tls.ca_pem, opts.ca_file.clone());
    let state = Arc::new(arm::FleetState::new(
        fleet,
        &members,
        link.sim_token.clone(),
        RequestLog::with_order(link.order.clone()),
    ));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let task = tokio::spawn(crate::server::serve_tls(
        listener,
        tls.server_config.clone(),
        arm::router(state.clone()),
        shutdown_rx,
    ));
    Ok(FleetHandle {
        info,
        members,
        state,
        shutdown,
        task: Some(task),
    })
}

fn connection_info(
    fleet: &FleetScenario,
    members: &[SimHandle],
    link: &MemberLink,
    ca_pem: &str,
    ca_file: Option<PathBuf>,
) -> FleetConnectionInfo {
    let mut subscriptions: Vec<String> = Vec::new();
    for m in &fleet.members {
        if !subscriptions
            .iter()
            .any(|s| s.eq_ignore_ascii_case(&m.subscription))
        {
            subscriptions.push(m.subscription.clone());
        }
    }
    let member_info = fleet
        .members
        .iter()
        .zip(members)
        .map(|(m, h)| FleetMemberInfo {
            cluster_id: m.cluster_id(),
            subscription: m.subscription.clone(),
            resource_group: m.resource_group.clone(),
            name: m.name.clone(),
            location: m.location.clone(),
            tags: h.shared.scenario.cluster.tags.clone(),
            ring: m.ring().map(str::to_string),
            state: m.state(),
            kube_server: h.info.kube_server.clone(),
            metrics_url: h.info.metrics_url.clone(),
        })
        .collect();
    FleetConnectionInfo {
        arm_endpoint: link.arm_endpoint.clone(),
        authority_host: link.arm_endpoint.clone(),
        tenant_id: fleet.tenant_id.clone(),
        client_id: fleet.client_id.clone(),
        client_secret: fleet.client_secret.clone(),
        ca_pem: ca_pem.to_string(),
        ca_file,
        subscriptions,
        sim_token: link.sim_token.clone(),
        arm_poll_interval_ms: members
            .iter()
            .map(|h| h.info.arm_poll_interval_ms)
            .min()
            .unwrap_or(50),
        members: member_info,
    }
}
