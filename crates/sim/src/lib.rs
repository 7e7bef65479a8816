//! A simulated AKS cluster running the managed Istio add-on, served over HTTPS on loopback.
//!
//! It stands in for three real services, closely enough that clients written for them work
//! against it unchanged:
//!
//! ```text
//!   ARM listener  (arm_endpoint == authority_host)
//!     ├── Entra ID token endpoint     POST /{tenant}/oauth2/v2.0/token        (token)
//!     ├── Microsoft.ContainerService  managedClusters, mesh profiles, LROs   (arm)
//!     └── introspection               /_sim/state, /_sim/requests           (introspect)
//!   Kubernetes listener (kube_server)
//!     └── API server: discovery, CRUD, watch, patch, port-forward           (kube)
//!
//!   Shared state: the scenario, a scaled clock, the mesh spec ARM has applied, the log of
//!   mutating requests. The add-on controllers (addon) turn the mesh spec into istiod,
//!   webhooks, gateways and proxies inside the Kubernetes store.
//! ```
//!
//! The simulator knows nothing of the asm-canary engine: it only speaks the wire protocols.

#![forbid(unsafe_code)]

pub mod arm;
pub mod clock;
pub mod fleet;
pub mod kube;
pub mod scenario;
mod server;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use clock::Clock;
pub use fleet::{
    AnyScenario, FleetConnectionInfo, FleetHandle, FleetMember, FleetMemberInfo, FleetOptions,
    FleetRequest, FleetScenario, start_fleet,
};
pub use scenario::{Scenario, ScenarioError};

/// The mesh as ARM last applied it: what the add-on must run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MeshSpec {
    /// Installed revisions, e.g. `["asm-1-27", "asm-1-28"]`.
    pub revisions: Vec<String>,
    /// Enabled ingress gateway modes (`External`, `Internal`).
    pub ingress_gateways: Vec<String>,
}

/// One mutating request, as `/_sim/requests` reports it.
#[derive(Clone, Debug, Serialize)]
pub struct RequestRecord {
    pub seq: u64,
    /// `arm`, `token` or `kube`.
    pub api: &'static str,
    pub method: String,
    pub path: String,
    pub status: u16,
    /// RFC 3339, wall clock.
    pub time: String,
    /// Position among every request recorded by the logs sharing this log's counter (a
    /// fleet's members share one, so their requests are totally ordered).
    #[serde(skip)]
    pub order: u64,
}

/// What reaches a simulator, a cluster's or a fleet's: ARM, the token endpoint, the identity,
/// the CA and the pace.
pub(crate) struct Reach<'a> {
    pub arm_endpoint: &'a str,
    pub authority_host: &'a str,
    pub tenant_id: &'a str,
    pub client_id: &'a str,
    pub client_secret: &'a str,
    pub ca_file: Option<&'a std::path::Path>,
    pub arm_poll_interval_ms: u64,
    pub sim_token: &'a str,
}

/// `KEY=value` lines for [`Reach`], in the names asm-canary reads.
pub(crate) fn reach_lines(r: &Reach<'_>) -> Vec<(String, String)> {
    let mut lines = vec![
        ("ASM_CANARY_ARM_ENDPOINT", r.arm_endpoint.to_string()),
        ("AZURE_AUTHORITY_HOST", r.authority_host.to_string()),
        ("AZURE_TENANT_ID", r.tenant_id.to_string()),
        ("AZURE_CLIENT_ID", r.client_id.to_string()),
        ("AZURE_CLIENT_SECRET", r.client_secret.to_string()),
    ];
    if let Some(ca) = r.ca_file {
        lines.push(("ASM_CANARY_CA_FILE", ca.display().to_string()));
    }
    lines.push((
        "ASM_CANARY_ARM_POLL_INTERVAL",
        format!("{}ms", r.arm_poll_interval_ms),
    ));
    lines.push(("ASM_CANARY_SIM_TOKEN", r.sim_token.to_string()));
    lines.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Append-only log of mutating requests (never reads: GET, LIST and WATCH are not logged),
/// and a count of every request, reads included, by API and method (for benchmarks).
#[derive(Default)]
pub struct RequestLog {
    inner: Mutex<Vec<RequestRecord>>,
    totals: Mutex<std::collections::BTreeMap<(String, String), u64>>,
    order: Arc<AtomicU64>,
}

impl RequestLog {
    /// A log numbering its records from `order`, a counter other logs may share.
    pub fn with_order(order: Arc<AtomicU64>) -> Self {
        Self {
            order,
            ..Self::default()
        }
    }

    pub fn record(&self, api: &'static str, method: &str, path: &str, status: u16) {
        let mut log = self.inner.lock().expect("request log poisoned");
        let seq = log.len() as u64 + 1;
        log.push(RequestRecord {
            seq,
            api,
            method: method.to_string(),
            path: path.to_string(),
            status,
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            order: self.order.fetch_add(1, Ordering::SeqCst) + 1,
        });
    }

    /// Counts one request of any kind (`api` is `arm`, `token`, `kube`, `sim`).
    pub fn count(&self, api: &str, method: &str) {
        let mut totals = self.totals.lock().expect("request totals poisoned");
        *totals
            .entry((api.to_string(), method.to_string()))
            .or_default() += 1;
    }

    /// Every request counted so far: `(api, method) → count`.
    pub fn totals(&self) -> std::collections::BTreeMap<(String, String), u64> {
        self.totals.lock().expect("request totals poisoned").clone()
    }

    pub fn snapshot(&self) -> Vec<RequestRecord> {
        self.inner.lock().expect("request log poisoned").clone()
    }
}

/// What a client needs to reach the simulator; `sim serve` prints it and writes it as an
/// env file (the names are the ones the asm-canary cluster flags read).
#[derive(Clone, Debug, Serialize)]
pub struct ConnectionInfo {
    pub arm_endpoint: String,
    pub authority_host: String,
    pub kube_server: String,
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    pub subscription: String,
    pub resource_group: String,
    pub cluster: String,
    pub location: String,
    /// PEM of the CA that signed both listeners' certificates.
    pub ca_pem: String,
    /// Where the CA PEM was written, if anywhere.
    pub ca_file: Option<PathBuf>,
    /// Bearer token accepted by `/_sim/*` (and by the Kubernetes API).
    pub sim_token: String,
    /// The sidecars' metrics page for a Prometheus to scrape (`http://127.0.0.1:PORT/metrics`,
    /// plain HTTP, no auth): `istio_requests_total` and `istio_request_duration_milliseconds`.
    pub metrics_url: String,
    /// How often a client should poll an ARM operation here: a real client's 15 s on the
    /// simulator's scaled clock (an operation lasts `lro_seconds` scaled; without this a
    /// client would sleep its real default between polls of a one-second operation).
    pub arm_poll_interval_ms: u64,
}

impl ConnectionInfo {
    /// `KEY=value` lines, in the order a person reads them.
    pub fn env_lines(&self) -> Vec<(String, String)> {
        let mut lines: Vec<(String, String)> = [
            ("ASM_CANARY_SUBSCRIPTION", &self.subscription),
            ("ASM_CANARY_RESOURCE_GROUP", &self.resource_group),
            ("ASM_CANARY_CLUSTER", &self.cluster),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        lines.extend(reach_lines(&Reach {
            arm_endpoint: &self.arm_endpoint,
            authority_host: &self.authority_host,
            tenant_id: &self.tenant_id,
            client_id: &self.client_id,
            client_secret: &self.client_secret,
            ca_file: self.ca_file.as_deref(),
            arm_poll_interval_ms: self.arm_poll_interval_ms,
            sim_token: &self.sim_token,
        }));
        lines
    }

    /// The cluster's ARM resource id.
    pub fn cluster_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.ContainerService/managedClusters/{}",
            self.subscription, self.resource_group, self.cluster
        )
    }
}

/// State shared by every part of the simulator.
pub struct Shared {
    pub scenario: Scenario,
    pub clock: Clock,
    pub info: ConnectionInfo,
    /// ARM publishes the applied mesh here; the add-on controllers follow it.
    pub mesh: watch::Sender<MeshSpec>,
    pub requests: RequestLog,
    pub arm: arm::ArmState,
    pub kube: kube::KubeState,
}

/// How to start the simulator.
#[derive(Clone, Debug)]
pub struct SimOptions {
    pub scenario: Scenario,
    /// ARM, token endpoint and introspection. Port 0 picks a free port.
    pub arm_listen: SocketAddr,
    /// Kubernetes API server. Port 0 picks a free port.
    pub kube_listen: SocketAddr,
    /// The sidecars' metrics page (plain HTTP). Port 0 picks a free port.
    pub metrics_listen: SocketAddr,
    /// Where to write `ca.pem`; nothing is written when `None`.
    pub ca_file: Option<PathBuf>,
    /// The CA and server certificate to serve with; a fresh one is generated when `None`
    /// (a fleet passes its one CA to every member).
    pub tls: Option<tls::SimTls>,
    /// Set for a member of a fleet: ARM is served by the fleet's listener.
    pub(crate) member: Option<MemberLink>,
}

/// What a fleet member shares with the fleet: it binds no ARM listener of its own.
#[derive(Clone, Debug)]
pub(crate) struct MemberLink {
    /// The fleet's ARM (and token endpoint) URL.
    pub arm_endpoint: String,
    pub sim_token: String,
    pub tokens: Arc<arm::token::TokenStore>,
    /// The fleet-wide request counter.
    pub order: Arc<AtomicU64>,
}

impl SimOptions {
    pub fn new(scenario: Scenario) -> Self {
        Self {
            scenario,
            arm_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            kube_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ca_file: None,
            tls: None,
            member: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen on {addr}: {source} (is another process using the port?)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the CA certificate to {path}: {source}")]
    WriteCa {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A running simulator. Dropping it stops the listeners.
pub struct SimHandle {
    pub info: ConnectionInfo,
    pub shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    server_config: Arc<rustls::ServerConfig>,
    /// `None` for a fleet member (the fleet serves its ARM).
    arm_addr: Option<SocketAddr>,
    kube_addr: SocketAddr,
    metrics_addr: SocketAddr,
}

impl SimHandle {
    /// A restart of the simulated services: stops serving (listeners closed, open
    /// connections and watches ended, controllers stopped), stays down for `down_for`, then
    /// serves the same state again on the same addresses with the same CA. The state lives in
    /// memory, so it survives this restart but not the process. (A fleet member restarts its
    /// Kubernetes API; the fleet's ARM listener stays up.)
    pub async fn restart(&mut self, down_for: std::time::Duration) -> Result<(), SimError> {
        self.shared.kube.store.interrupt_watches(false);
        let _ = self.shutdown.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        tokio::time::sleep(down_for).await;
        let arm_listener = match self.arm_addr {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let kube_listener = bind(self.kube_addr).await?;
        let metrics_listener = bind(self.metrics_addr).await?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        self.tasks = spawn_services(
            &self.shared,
            Listeners {
                arm: arm_listener,
                kube: kube_listener,
                metrics: metrics_listener,
            },
            &self.server_config,
            shutdown_rx,
        );
        self.shutdown = shutdown;
        Ok(())
    }

    /// Stops accepting, lets open connections finish their current request, and waits.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, SimError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| SimError::Bind { addr, source })
}

pub(crate) fn local_addr(
    listener: &TcpListener,
    asked: SocketAddr,
) -> Result<SocketAddr, SimError> {
    listener.local_addr().map_err(|source| SimError::Bind {
        addr: asked,
        source,
    })
}

/// The bound listeners of one cluster (no ARM listener for a fleet member).
struct Listeners {
    arm: Option<TcpListener>,
    kube: TcpListener,
    metrics: TcpListener,
}

/// Starts the simulator: generates the CA (unless given one), binds the listeners, starts the
/// controllers.
pub async fn start(mut opts: SimOptions) -> Result<SimHandle, SimError> {
    let tls = match opts.tls.take() {
        Some(tls) => tls,
        None => tls::SimTls::generate()?,
    };
    let arm_listener = match opts.member {
        Some(_) => None,
        None => Some(bind(opts.arm_listen).await?),
    };
    let arm_addr = match &arm_listener {
        Some(l) => Some(local_addr(l, opts.arm_listen)?),
        None => None,
    };
    let kube_listener = bind(opts.kube_listen).await?;
    let kube_addr = local_addr(&kube_listener, opts.kube_listen)?;
    let metrics_listener = bind(opts.metrics_listen).await?;
    let metrics_addr = local_addr(&metrics_listener, opts.metrics_listen)?;
    if let Some(path) = &opts.ca_file {
        write_private(path, tls.ca_pem.as_bytes()).map_err(|source| SimError::WriteCa {
            path: path.clone(),
            source,
        })?;
    }
    let arm_endpoint = match (&opts.member, arm_addr) {
        (Some(link), _) => link.arm_endpoint.clone(),
        (None, Some(addr)) => format!("https://{}", host_port(addr)),
        (None, None) => unreachable!("a cluster of its own binds its ARM listener"),
    };
    let info = connection_info(&tls, &opts, arm_endpoint, kube_addr, metrics_addr);
    let shared = Arc::new(new_shared(
        opts.scenario,
        info.clone(),
        opts.member.as_ref(),
    ));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let listeners = Listeners {
        arm: arm_listener,
        kube: kube_listener,
        metrics: metrics_listener,
    };
    let tasks = spawn_services(&shared, listeners, &tls.server_config, shutdown_rx);
    Ok(SimHandle {
        info,
        shared,
        shutdown,
        tasks,
        server_config: tls.server_config.clone(),
        arm_addr,
        kube_addr,
        metrics_addr,
    })
}

fn connection_info(
    tls: &tls::SimTls,
    opts: &SimOptions,
    arm_endpoint: String,
    kube_addr: SocketAddr,
    metrics_addr: SocketAddr,
) -> ConnectionInfo {
    let scenario = &opts.scenario;
    let shape = &scenario.cluster;
    let sim_token = match &opts.member {
        Some(link) => link.sim_token.clone(),
        None => format!("sim-{}", uuid::Uuid::new_v4().simple()),
    };
    ConnectionInfo {
        authority_host: arm_endpoint.clone(),
        arm_endpoint,
        kube_server: format!("https://{}", host_port(kube_addr)),
        tenant_id: shape.tenant_id.clone(),
        client_id: shape.client_id.clone(),
        client_secret: shape.client_secret.clone(),
        subscription: shape.subscription.clone(),
        resource_group: shape.resource_group.clone(),
        cluster: shape.name.clone(),
        location: shape.location.clone(),
        ca_pem: tls.ca_pem.clone(),
        ca_file: opts.ca_file.clone(),
        sim_token,
        metrics_url: format!("http://{metrics_addr}/metrics"),
        arm_poll_interval_ms: ((15_000.0 * scenario.time_scale) as u64).max(50),
    }
}

fn new_shared(scenario: Scenario, info: ConnectionInfo, member: Option<&MemberLink>) -> Shared {
    let shape = &scenario.cluster;
    let (mesh, _) = watch::channel(MeshSpec {
        revisions: shape.revisions.clone(),
        ingress_gateways: shape.ingress_gateways.clone(),
    });
    let (arm_state, requests) = match member {
        Some(link) => (
            arm::ArmState::with_tokens(&scenario, link.tokens.clone()),
            RequestLog::with_order(link.order.clone()),
        ),
        None => (arm::ArmState::new(&scenario), RequestLog::default()),
    };
    Shared {
        clock: Clock::new(scenario.time_scale),
        kube: kube::KubeState::new(&scenario),
        arm: arm_state,
        scenario,
        info,
        mesh,
        requests,
    }
}

/// Serves the ARM (unless a fleet does), Kubernetes (both TLS) and metrics (plain HTTP)
/// listeners, and starts the controllers.
fn spawn_services(
    shared: &Arc<Shared>,
    listeners: Listeners,
    server_config: &Arc<rustls::ServerConfig>,
    shutdown_rx: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut metrics_shutdown = shutdown_rx.clone();
    let metrics = axum::serve(listeners.metrics, kube::metrics_router(shared.clone()))
        .with_graceful_shutdown(async move {
            let _ = metrics_shutdown.wait_for(|stop| *stop).await;
        });
    let mut tasks = vec![
        tokio::spawn(async move {
            let _ = metrics.await;
        }),
        tokio::spawn(server::serve_tls(
            listeners.kube,
            server_config.clone(),
            kube::router(shared.clone()),
            shutdown_rx.clone(),
        )),
    ];
    if let Some(arm_listener) = listeners.arm {
        tasks.push(tokio::spawn(server::serve_tls(
            arm_listener,
            server_config.clone(),
            arm::router(shared.clone()),
            shutdown_rx.clone(),
        )));
    }
    tasks.extend(kube::start_controllers(shared.clone(), shutdown_rx));
    tasks
}

pub(crate) fn host_port(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(v4) if v4.ip().is_loopback() => format!("localhost:{}", v4.port()),
        SocketAddr::V6(v6) if v6.ip().is_loopback() => format!("localhost:{}", v6.port()),
        other => other.to_string(),
    }
}

/// Writes a file readable only by its owner (the CA is public, but the env file is not).
pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut file = opts.open(path)?;
    // `mode` applies only to a file created here: an existing one is made private too.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(bytes)?;
    file.sync_all()
}
