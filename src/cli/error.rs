//! The one error type of the command line, and its exit code (see [`crate::exit`]).

use asm_canary_engine::EngineError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Arguments, files or environment the user must fix: exit 2.
    #[error("{0}")]
    BadInput(String),
    /// Reaching Azure or the cluster failed before the runbook started: exit 1.
    #[error("{0}")]
    Connect(String),
    /// Another run holds the cluster's lock: exit 5.
    #[error("{0}")]
    Locked(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Internal(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::BadInput(_) => crate::exit::BAD_INPUT,
            CliError::Connect(_) | CliError::Internal(_) => crate::exit::INTERNAL,
            CliError::Locked(_) => crate::exit::LOCKED,
            CliError::Engine(e) => e.exit_code(),
        }
    }

    pub fn bad(message: impl std::fmt::Display) -> Self {
        CliError::BadInput(message.to_string())
    }
}
