//! The one error type of the command line, and its exit code (see [`crate::contract::exit`]).
//!
//! Every variant keeps its cause (`#[source]`); [`CliError::chain`] renders the message with
//! the causes it does not already quote, which is what `main` prints.

use asm_canary_engine::EngineError;

use crate::contract::exit;

/// A cause kept for the chain.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Arguments, files or environment the user must fix: exit 2.
    #[error("{message}")]
    BadInput {
        message: String,
        #[source]
        source: Option<Cause>,
    },
    /// Reaching Azure or the cluster failed before the runbook started: exit 1.
    #[error("{context}")]
    Connect {
        context: String,
        #[source]
        source: Option<Cause>,
    },
    /// Another run holds the cluster's lock: exit 5.
    #[error("{message}")]
    Locked {
        message: String,
        #[source]
        source: Option<Cause>,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A bug, or an environment the tool cannot work in: exit 1.
    #[error("{context}")]
    Internal {
        context: String,
        #[source]
        source: Option<Cause>,
    },
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::BadInput { .. } => exit::BAD_INPUT,
            CliError::Connect { .. } | CliError::Internal { .. } => exit::INTERNAL,
            CliError::Locked { .. } => exit::LOCKED,
            CliError::Engine(e) => e.exit_code(),
        }
    }

    /// Bad input with no underlying error: the message says what and what to do.
    pub fn bad(message: impl std::fmt::Display) -> Self {
        CliError::BadInput {
            message: message.to_string(),
            source: None,
        }
    }

    /// Bad input caused by `source` (a parse error, an unreadable file).
    pub fn bad_because(message: impl std::fmt::Display, source: impl Into<Cause>) -> Self {
        CliError::BadInput {
            message: message.to_string(),
            source: Some(source.into()),
        }
    }

    /// Azure or the cluster could not be reached or read: `context` says what was being done.
    pub fn connect(context: impl std::fmt::Display, source: impl Into<Cause>) -> Self {
        CliError::Connect {
            context: context.to_string(),
            source: Some(source.into()),
        }
    }

    /// The cluster's lock is held; `source` is the lock's own error, when there is one.
    pub fn locked(message: impl std::fmt::Display, source: Option<Cause>) -> Self {
        CliError::Locked {
            message: message.to_string(),
            source,
        }
    }

    pub fn internal(context: impl std::fmt::Display, source: impl Into<Cause>) -> Self {
        CliError::Internal {
            context: context.to_string(),
            source: Some(source.into()),
        }
    }

    /// The message and, after `: `, each cause whose text it does not already contain.
    pub fn chain(&self) -> String {
        chain(self)
    }
}

/// `e` and its causes, each once: a cause already quoted by the text so far is skipped.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !more.is_empty() && !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("connection refused")]
    struct Refused;

    #[derive(Debug, thiserror::Error)]
    #[error("GET cluster failed: {0}")]
    struct Quoting(#[source] Refused);

    #[test]
    fn the_chain_names_each_cause_once() {
        let e = CliError::connect("cannot read the cluster aks-sim", Refused);
        assert_eq!(
            e.chain(),
            "cannot read the cluster aks-sim: connection refused"
        );
        assert_eq!(e.exit_code(), exit::INTERNAL);
        let e = CliError::connect("cannot read the cluster", Quoting(Refused));
        assert_eq!(
            e.chain(),
            "cannot read the cluster: GET cluster failed: connection refused"
        );
        let source = std::error::Error::source(&e).map(|s| s.to_string());
        assert_eq!(
            source.as_deref(),
            Some("GET cluster failed: connection refused")
        );
    }

    #[test]
    fn each_kind_has_its_exit_code() {
        assert_eq!(CliError::bad("x").exit_code(), exit::BAD_INPUT);
        assert_eq!(CliError::locked("held", None).exit_code(), exit::LOCKED);
        assert_eq!(CliError::internal("x", Refused).exit_code(), exit::INTERNAL);
    }
}
