//! The command line: clap definitions and dispatch. Each command validates its arguments,
//! then hands off to the library; errors map to the exit codes in [`crate::exit`].

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod sim;

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
    /// Run the simulated AKS cluster.
    #[command(subcommand)]
    Sim(SimCommand),
}

#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Serve the simulated cluster (ARM, token endpoint, Kubernetes API) until stopped.
    Serve(sim::ServeArgs),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Sim(SimCommand::Serve(args)) => sim::serve(args),
    }
}
