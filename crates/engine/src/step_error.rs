//! The failure of an action, a gate or a journal write: what both the step API and the
//! journal speak, so neither imports the other for it.

/// An action's or gate's failure.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The step failed; the runbook's `on_failure` decides what happens next.
    #[error("{0}")]
    Failed(String),
    /// The step failed because of an underlying error.
    #[error("{message}: {source}")]
    Source {
        message: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The step refuses to act on what it found (for example work that looks done but that
    /// this run did not do): it changed nothing, and neither does the engine — no rollback,
    /// whatever `on_failure` says. The run pauses with the refusal and ends with
    /// [`crate::Outcome::Refused`] (exit 2); `resume` tries the step again once a person has
    /// looked.
    #[error("{0}")]
    Refused(String),
    /// The step cannot decide now (an analysis with no data, or NaN): not a failure, so no
    /// rollback. The step is left interrupted and the run pauses (exit 4) with the reason;
    /// `resume` runs the step again, which re-observes from its journal.
    #[error("{0}")]
    Inconclusive(String),
    /// The step stopped because the run was cancelled; the run pauses, resumable.
    #[error("interrupted")]
    Cancelled,
    /// Writing the checkpoint (a journal entry) failed: the engine stops without acting further.
    #[error("checkpoint write failed: {0}")]
    Checkpoint(String),
}

impl StepError {
    /// A failure with a message that says what happened, to what, and what to do next.
    pub fn msg(message: impl std::fmt::Display) -> Self {
        StepError::Failed(message.to_string())
    }
    /// A refusal: see [`StepError::Refused`].
    pub fn refused(message: impl std::fmt::Display) -> Self {
        StepError::Refused(message.to_string())
    }
    /// A failure caused by another error.
    pub fn with_source(
        message: impl std::fmt::Display,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StepError::Source {
            message: message.to_string(),
            source: Box::new(source),
        }
    }
}
