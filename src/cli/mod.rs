//! The command line: clap definitions and dispatch. Each command validates its arguments,
//! then hands off to the library; errors map to the exit codes in [`crate::contract::exit`].

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

pub mod args;
pub mod connect;
pub mod day2;
pub mod demo;
pub mod doctor;
pub mod error;
pub mod fleet;
mod fleet_demo;
mod fleet_run;
mod fleet_view;
pub mod inspect;
pub mod metrics;
mod owner;
pub mod plan;
mod rehearsal;
pub mod request;
pub mod run;
pub mod sim;
pub mod state;
pub mod status;
pub mod stored;
pub mod validate;

use error::CliError;

/// Canary upgrades of the AKS managed Istio add-on (Azure Service Mesh), with a gate after
/// every step, a checkpoint after every change, and a rollback that can always be resumed.
#[derive(Debug, Parser)]
#[command(name = "asm-canary", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the canary upgrade against a simulated AKS cluster started in-process.
    Demo(demo::DemoArgs),
    /// Preflight and the step plan; changes nothing.
    Plan(plan::PlanArgs),
    /// Run the canary upgrade.
    Upgrade(run::UpgradeArgs),
    /// Continue a run from its checkpoint.
    Resume(run::ResumeArgs),
    /// Roll a run back from wherever it stands (itself resumable); `--from-cluster` rolls
    /// back a canary found in the cluster, without a checkpoint.
    Rollback(run::RollbackArgs),
    /// What the checkpoint says, what the cluster says now, and the next command to run.
    Status(status::StatusArgs),
    /// Restart the workloads whose proxy image is older than what their revision's injector
    /// injects now (AKS rolled a newer patch), in gated waves; `--plan` shows them.
    PatchRestart(day2::PatchRestartArgs),
    /// Bring namespaces into the mesh: label them for the tag (or `--revision`), restart their
    /// workloads in gated waves, verify every pod 2/2 and SYNCED; rolled back when a gate fails.
    Onboard(day2::OnboardArgs),
    /// The proxy sync table, like `istioctl proxy-status`.
    ProxyStatus(inspect::ProxyStatusArgs),
    /// The add-on's traps, checked against the cluster as it is; changes nothing. Exit 0: all
    /// fine, 4: warnings only, 3: something is broken.
    Doctor(doctor::DoctorArgs),
    /// The run's report (timeline of steps and gates, what changed), from its checkpoint.
    Report(inspect::ReportArgs),
    /// The checkpoint kept in the cluster (`--state-backend kubernetes`): show it as stored,
    /// or archive it so that a new run can start.
    #[command(subcommand)]
    State(stored::StateCommand),
    /// Every AKS cluster of an organisation, upgraded in rings, from a fleet file.
    #[command(subcommand)]
    Fleet(fleet::FleetCommand),
    /// Run the simulated AKS cluster.
    #[command(subcommand)]
    Sim(SimCommand),
    /// Print shell completions: `asm-canary completions bash > /etc/bash_completion.d/asm-canary`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Serve the simulated cluster (ARM, token endpoint, Kubernetes API) until stopped.
    Serve(sim::ServeArgs),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The simulator logs what it serves (info); the tool speaks only when something is wrong.
    let default_level = match cli.command {
        Command::Sim(_) => "info",
        _ => "warn",
    };
    init_tracing(default_level);
    match cli.command {
        Command::Sim(SimCommand::Serve(args)) => finish("asm-canary sim serve", sim::serve(args)),
        Command::Completions { shell } => {
            // Into memory first: clap_complete panics on a write error (e.g. `| head`).
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "asm-canary", &mut buf);
            print_stdout(&String::from_utf8_lossy(&buf));
            ExitCode::SUCCESS
        }
        command => {
            // A few blocking threads are enough (file writes, name lookups); each one an
            // allocator keeps memory for.
            let result = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .max_blocking_threads(8)
                .build()
                .map_err(|e| CliError::internal("cannot start the async runtime", e))
                .and_then(|runtime| runtime.block_on(dispatch(command)));
            finish("asm-canary", result)
        }
    }
}

/// The exit code of a command; an error is printed with its causes.
fn finish(who: &str, result: Result<u8, CliError>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            crate::say!("{who}: {}", e.chain());
            ExitCode::from(e.exit_code())
        }
    }
}

async fn dispatch(command: Command) -> Result<u8, CliError> {
    crate::azure::ensure_ring_provider();
    match command {
        Command::Demo(a) if asm_canary_sim::fleet::FLEET_BUILTIN.contains(&a.scenario.as_str()) => {
            fleet_demo::demo_fleet(a).await
        }
        Command::Demo(a) => demo::demo(a).await,
        Command::Plan(a) => plan::plan(a).await,
        Command::Upgrade(a) => run::upgrade(a).await,
        Command::PatchRestart(a) => day2::patch_restart(a).await,
        Command::Onboard(a) => day2::onboard(a).await,
        Command::Resume(a) => run::resume(a, false).await,
        Command::Rollback(a) if a.from_cluster => run::rollback_from_cluster(a).await,
        Command::Rollback(a) => run::resume(a.resume, true).await,
        Command::Status(a) => status::status(a).await,
        Command::ProxyStatus(a) => inspect::proxy_status(a).await,
        Command::Doctor(a) => doctor::doctor(a).await,
        Command::Report(a) => inspect::report(a).await,
        Command::State(c) => stored::state(c).await,
        Command::Fleet(c) => fleet::fleet(c).await,
        Command::Sim(_) | Command::Completions { .. } => unreachable!("handled before the runtime"),
    }
}

/// Asks a yes/no question on the terminal; anything but y/yes is no.
pub(crate) fn confirm(question: &str) -> bool {
    use std::io::Write;
    crate::say_part!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    if std::io::stdin().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// Writes a command's result to stdout. A reader that went away (`| head`) is not an error: the
/// rest is dropped quietly, as other Unix tools do (`println!` would panic, exit 101).
pub fn print_stdout(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// A document (`--output json`) on stdout, pretty-printed, one trailing newline.
pub fn print_document<T: serde::Serialize>(what: &str, doc: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(doc)
        .map_err(|e| CliError::internal(format!("cannot render the {what} document"), e))?;
    print_stdout(&(text + "\n"));
    Ok(())
}

/// One tracing set-up for every command: `ASM_CANARY_LOG` (e.g. `debug`,
/// `asm_canary=trace`) wins over the command's default level.
fn init_tracing(default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("ASM_CANARY_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for a person: CI logs and `2>file` get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
