//! The runbook engine: runbook files, the gated step executor, checkpoints and events.
//! It knows nothing of Azure, Istio or terminals.

#![forbid(unsafe_code)]
