//! `asm-canary sim serve`: the simulated AKS cluster (or fleet: `--scenario fleet`, or a
//! fleet file) on its own, until Ctrl-C or SIGTERM.
//!
//! stdout gets only the `KEY=value` connection lines (so `eval`/`source` and scripts can use
//! them); everything a person reads goes to stderr.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use asm_canary_sim::fleet::{AnyScenario, load_any};
use asm_canary_sim::{FleetOptions, FleetScenario, Scenario, SimError, SimOptions};
use clap::Args;

use super::error::CliError;
use crate::contract::exit;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A built-in scenario (healthy, arm-throttling, lro-failure, …), `fleet` (a dozen
    /// clusters in three rings behind one ARM endpoint), or the path of a scenario YAML file
    /// (a fleet file has a top-level `fleet:` key).
    #[arg(long, value_name = "NAME|FILE", default_value = "healthy")]
    pub scenario: String,
    /// Address of the ARM, token-endpoint and `/_sim` listener (port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Address of the Kubernetes API listener (port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub kube_listen: SocketAddr,
    /// Also write the connection settings to FILE as `KEY=value` lines (mode 0600); the CA
    /// certificate goes next to it as `<stem>-ca.pem`.
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    /// Also write, in DIR, what the runbook by hand needs: the CA, a kubeconfig, an Azure CLI
    /// configuration folder with the simulated cloud registered and its service principal
    /// signed in, and `DIR/env` to `source` (AZURE_CONFIG_DIR, REQUESTS_CA_BUNDLE, KUBECONFIG).
    #[arg(long, value_name = "DIR")]
    pub rehearsal: Option<PathBuf>,
}

/// Serves until Ctrl-C or SIGTERM. A bad scenario or an address that cannot be bound is bad
/// input (exit 2); anything else that stops the simulator from starting is exit 1.
pub fn serve(args: ServeArgs) -> Result<u8, CliError> {
    run(args)?;
    Ok(exit::OK)
}

fn write_error(path: &Path, source: std::io::Error) -> CliError {
    CliError::internal(format!("cannot write {}", path.display()), source)
}

fn start_error(e: SimError) -> CliError {
    match e {
        SimError::Bind { .. } => CliError::bad_because("cannot start the simulator", e),
        e => CliError::internal("cannot start the simulator", e),
    }
}

fn run(args: ServeArgs) -> Result<(), CliError> {
    let ServeArgs {
        scenario,
        listen,
        kube_listen,
        env_file,
        rehearsal,
    } = args;
    let scenario = load_any(&scenario).map_err(|e| CliError::bad_because("bad scenario", e))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::internal("cannot start the async runtime", e))?;
    match scenario {
        AnyScenario::Cluster(scenario) => runtime.block_on(serve_async(
            *scenario,
            listen,
            kube_listen,
            env_file,
            rehearsal,
        )),
        AnyScenario::Fleet(fleet) => {
            if rehearsal.is_some() {
                return Err(CliError::bad(
                    "--rehearsal prepares one cluster: it does not apply to a fleet scenario",
                ));
            }
            runtime.block_on(serve_fleet(fleet, listen, env_file))
        }
    }
}

/// Where the CA goes: next to the env file, else in a directory of our own under the temp dir.
fn ca_path(env_file: Option<&Path>) -> Result<(PathBuf, Option<PathBuf>), CliError> {
    if let Some(env) = env_file {
        // Absolute, so the env file works from any directory.
        let env = std::path::absolute(env).map_err(|source| write_error(env, source))?;
        check_env_file(&env)?;
        let stem = env
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "asm-canary-sim".into());
        let dir = env.parent().unwrap_or(Path::new(".")).to_path_buf();
        return Ok((dir.join(format!("{stem}-ca.pem")), None));
    }
    let dir = std::env::temp_dir().join(format!("asm-canary-sim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| write_error(&dir, source))?;
    Ok((dir.join("ca.pem"), Some(dir)))
}

/// `--env-file` names a file (or nothing yet) in a folder that exists: checked before the CA
/// is written beside it, so a typo leaves nothing behind.
fn check_env_file(env: &Path) -> Result<(), CliError> {
    let shown = env.display();
    let dir = env.parent().unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(CliError::bad(format!(
            "--env-file {shown}: the folder {} does not exist; create it first",
            dir.display()
        )));
    }
    let what = match std::fs::symlink_metadata(env) {
        Ok(m) if m.is_dir() => "a directory; name a file in it",
        Ok(m) if !m.is_file() && !m.file_type().is_symlink() => {
            "not a regular file (a device, FIFO or socket)"
        }
        _ => return Ok(()),
    };
    Err(CliError::bad(format!("--env-file {shown} is {what}")))
}

async fn serve_async(
    scenario: Scenario,
    listen: SocketAddr,
    kube_listen: SocketAddr,
    env_file: Option<PathBuf>,
    rehearsal: Option<PathBuf>,
) -> Result<(), CliError> {
    let (ca_file, temp_dir) = ca_path(env_file.as_deref())?;
    let name = scenario.name.clone();
    let mut opts = SimOptions::new(scenario);
    opts.arm_listen = listen;
    opts.kube_listen = kube_listen;
    opts.ca_file = Some(ca_file);
    let result = serve_until_stopped(opts, &name, env_file.as_deref(), rehearsal.as_deref()).await;
    if let Some(dir) = temp_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

async fn serve_until_stopped(
    opts: SimOptions,
    scenario: &str,
    env_file: Option<&Path>,
    rehearsal: Option<&Path>,
) -> Result<(), CliError> {
    let handle = asm_canary_sim::start(opts).await.map_err(start_error)?;
    let info = handle.info.clone();
    if let Some(dir) = rehearsal {
        let env = super::rehearsal::write(dir, &info).map_err(|source| write_error(dir, source))?;
        crate::say!(
            "asm-canary sim: rehearsal folder {}: `source {}`, then az and kubectl talk to the simulator",
            dir.display(),
            env.display()
        );
    }
    let stop = StopSignals::listen();
    publish_env(&info.env_lines(), env_file)?;
    crate::say!(
        "asm-canary sim: scenario {scenario}; ARM and token endpoint {}, Kubernetes API {}, CA {}{}",
        info.arm_endpoint,
        info.kube_server,
        info.ca_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        env_file
            .map(|p| format!(", settings in {}", p.display()))
            .unwrap_or_default()
    );
    crate::say!(
        "asm-canary sim: the sidecars' metrics (a Prometheus scrape target, plain HTTP): {}",
        info.metrics_url
    );
    crate::say!("asm-canary sim: serving until Ctrl-C or SIGTERM");
    stop.wait().await;
    crate::say!("asm-canary sim: stopping");
    handle.shutdown().await;
    Ok(())
}

/// Serves a fleet: the shared ARM and sign-in settings on stdout (and in the env file),
/// the member table on stderr.
async fn serve_fleet(
    fleet: FleetScenario,
    listen: SocketAddr,
    env_file: Option<PathBuf>,
) -> Result<(), CliError> {
    let (ca_file, temp_dir) = ca_path(env_file.as_deref())?;
    let name = fleet.name.clone();
    let mut opts = FleetOptions::new(fleet);
    opts.arm_listen = listen;
    opts.ca_file = Some(ca_file);
    let result = async {
        let handle = asm_canary_sim::start_fleet(opts).await.map_err(start_error)?;
        let info = &handle.info;
        let stop = StopSignals::listen();
        publish_env(&info.env_lines(), env_file.as_deref())?;
        crate::say!(
            "asm-canary sim: fleet {name}: {} clusters in {} subscriptions; ARM and token endpoint {}",
            info.members.len(),
            info.subscriptions.len(),
            info.arm_endpoint
        );
        crate::say_part!("{}", info.member_table());
        crate::say!("asm-canary sim: serving until Ctrl-C or SIGTERM");
        stop.wait().await;
        crate::say!("asm-canary sim: stopping");
        handle.shutdown().await;
        Ok(())
    }
    .await;
    if let Some(dir) = temp_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

/// The `KEY=value` lines on stdout, and in the env file when asked.
fn publish_env(lines: &[(String, String)], env_file: Option<&Path>) -> Result<(), CliError> {
    let text: String = lines.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    if let Some(path) = env_file {
        asm_canary_sim::write_private(path, text.as_bytes())
            .map_err(|source| write_error(path, source))?;
    }
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    Ok(())
}

/// Ctrl-C and SIGTERM, listened for from the moment this is made: made before the settings
/// are printed, so a signal sent as soon as they are read stops the server cleanly (exit 0)
/// instead of killing it.
struct StopSignals {
    #[cfg(unix)]
    signals: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl StopSignals {
    fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let signals = signal(SignalKind::interrupt())
                .and_then(|int| Ok((int, signal(SignalKind::terminate())?)))
                .ok();
            Self { signals }
        }
        #[cfg(not(unix))]
        Self {}
    }

    async fn wait(self) {
        #[cfg(unix)]
        if let Some((mut int, mut term)) = self.signals {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
