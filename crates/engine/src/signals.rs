//! Ctrl-C and SIGTERM: the first cancels the run's token (the executor finishes the checkpoint
//! write in progress, marks the step interrupted and pauses: exit 4); the second aborts the
//! process at once with exit 130.

use std::io::Write as _;
use tokio_util::sync::CancellationToken;

/// The exit code of a process aborted by a second signal (128 + SIGINT).
pub const ABORTED: i32 = 130;

/// Installs the handlers and returns the task that runs them. Call once, inside a tokio
/// runtime, before starting the executor with the same token.
#[cfg(unix)]
pub fn cancel_on_signals(token: CancellationToken) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(tokio::spawn(async move {
        let mut seen = 0u32;
        loop {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            seen += 1;
            if seen == 1 {
                // Not eprintln!: it panics when stderr is closed (`2>&1 | head`).
                let _ = writeln!(
                    std::io::stderr(),
                    "asm-canary: interrupted; finishing the current checkpoint write, then pausing (press Ctrl-C again to abort)"
                );
                token.cancel();
            } else {
                let _ = writeln!(
                    std::io::stderr(),
                    "asm-canary: aborted; resume from the checkpoint to continue"
                );
                std::process::exit(ABORTED);
            }
        }
    }))
}

/// Installs the Ctrl-C handler (non-unix: no SIGTERM).
#[cfg(not(unix))]
pub fn cancel_on_signals(token: CancellationToken) -> std::io::Result<tokio::task::JoinHandle<()>> {
    Ok(tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            token.cancel();
        }
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(ABORTED);
        }
    }))
}
