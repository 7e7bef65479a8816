//! One run per cluster: a `coordination.k8s.io/v1` Lease `asm-canary-lock` in
//! `aks-istio-system`, created create-only, renewed while the run lives, deleted at the end.
//!
//! The Lease names its holder in `spec.holderIdentity` (`<host>/<pid>`) and in annotations
//! (`asm-canary.io/run-id`, `asm-canary.io/host`, `asm-canary.io/pid`); it expires
//! `leaseDurationSeconds` after `renewTime`. A second run sees a live Lease and stops with
//! [`LockError::Held`] (exit 5). A Lease is taken over (replace guarded by its
//! resourceVersion, so two contenders cannot both win) when it has expired, when its holder
//! is this same run on this host and that process is gone (a resume after a crash), or with
//! `--break-lock` after explicit confirmation.

use std::sync::Arc;
use std::time::Duration;

use asm_canary_engine::CancellationToken;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use tokio::sync::Mutex;

pub const LOCK_NAME: &str = "asm-canary-lock";
pub const LOCK_NAMESPACE: &str = crate::istio::ISTIO_NAMESPACE;
const ANN_RUN_ID: &str = "asm-canary.io/run-id";
const ANN_HOST: &str = "asm-canary.io/host";
const ANN_PID: &str = "asm-canary.io/pid";

/// Who holds (or wants) the lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub run_id: String,
    pub host: String,
    pub pid: u32,
}

impl Holder {
    /// This process, running `run_id`.
    pub fn this_process(run_id: &str) -> Self {
        Holder {
            run_id: run_id.to_string(),
            host: hostname::get()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "unknown-host".into()),
            pid: std::process::id(),
        }
    }

    fn identity(&self) -> String {
        format!("{}/{}", self.host, self.pid)
    }

    fn from_lease(lease: &Lease) -> Self {
        let ann = lease.metadata.annotations.clone().unwrap_or_default();
        let identity = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.clone())
            .unwrap_or_default();
        Holder {
            run_id: ann.get(ANN_RUN_ID).cloned().unwrap_or_default(),
            host: ann.get(ANN_HOST).cloned().unwrap_or_else(|| {
                identity
                    .rsplit_once('/')
                    .map(|(h, _)| h.to_string())
                    .unwrap_or(identity.clone())
            }),
            pid: ann.get(ANN_PID).and_then(|p| p.parse().ok()).unwrap_or(0),
        }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "run {} on host {} (pid {})",
            if self.run_id.is_empty() {
                "?"
            } else {
                &self.run_id
            },
            self.host,
            self.pid
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another run holds the lock of this cluster: {holder}, Lease {LOCK_NAMESPACE}/{LOCK_NAME}, expires {expires}; wait for it to finish, or if that run is dead pass --break-lock (with --yes when unattended)"
    )]
    Held { holder: Holder, expires: String },
    #[error(
        "--break-lock: the lock is held by {holder} (expires {expires}); not broken without confirmation — pass --yes to break it unattended"
    )]
    NotConfirmed { holder: Holder, expires: String },
    #[error("cannot {action} Lease {LOCK_NAMESPACE}/{LOCK_NAME}: {source}{}", super::tls_hint(.source))]
    Api {
        action: &'static str,
        #[source]
        source: kube::Error,
    },
}

/// How to take the lock.
#[derive(Clone, Debug)]
pub struct LockOptions {
    pub duration: Duration,
    /// `--break-lock`: take a live lock held by someone else.
    pub break_lock: bool,
    /// Asks a person to confirm breaking `holder`'s lock; `None` when nobody can answer.
    pub confirmed: bool,
}

/// What acquiring did, for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acquired {
    Created,
    /// Took over an expired Lease.
    Expired(Holder),
    /// This run's own Lease left by a process that is gone.
    OwnStale(Holder),
    /// Broke a live Lease with --break-lock.
    Broken(Holder),
}

/// The held lock: renewed in the background until [`RunLock::release`].
pub struct RunLock {
    api: Api<Lease>,
    holder: Holder,
    state: Arc<Mutex<Lease>>,
    renewer: tokio::task::JoinHandle<()>,
    lost: CancellationToken,
    pub acquired: Acquired,
}

fn now_micro() -> MicroTime {
    MicroTime(Timestamp::now())
}

fn expiry(lease: &Lease) -> Option<Timestamp> {
    let spec = lease.spec.as_ref()?;
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0)?;
    let secs = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    renewed
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(secs))
        .ok()
}

fn expires_text(lease: &Lease) -> String {
    match expiry(lease) {
        Some(t) => {
            let left = t.as_second() - Timestamp::now().as_second();
            if left >= 0 {
                format!("at {t} (in {left}s)")
            } else {
                format!("at {t} ({}s ago)", -left)
            }
        }
        None => "never (no renewTime)".into(),
    }
}

/// True when the holder is a process on this host that no longer exists.
fn holder_process_gone(h: &Holder) -> bool {
    let me = Holder::this_process(&h.run_id);
    h.host == me.host && h.pid != 0 && !process_alive(h.pid)
}

/// Whether process `pid` runs on this host: it is in `/proc` and not a zombie (a process
/// killed with -9 whose parent has not reaped it yet stays in `/proc` in state `Z`; it was
/// taken for a live holder, and the same run, resumed, was refused its own lock).
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        // `pid (comm) S …`: the state follows the last `)` (comm may hold one).
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
    }
}

fn desired(holder: &Holder, duration: Duration, base: Option<&Lease>) -> Lease {
    let mut meta = base
        .map(|l| l.metadata.clone())
        .unwrap_or_else(|| ObjectMeta {
            name: Some(LOCK_NAME.into()),
            namespace: Some(LOCK_NAMESPACE.into()),
            ..Default::default()
        });
    let ann = meta.annotations.get_or_insert_with(Default::default);
    ann.insert(ANN_RUN_ID.into(), holder.run_id.clone());
    ann.insert(ANN_HOST.into(), holder.host.clone());
    ann.insert(ANN_PID.into(), holder.pid.to_string());
    meta.labels
        .get_or_insert_with(Default::default)
        .insert("app.kubernetes.io/managed-by".into(), "asm-canary".into());
    let transitions = base
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.lease_transitions)
        .map(|t| t + 1)
        .unwrap_or(0);
    Lease {
        metadata: meta,
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.identity()),
            lease_duration_seconds: Some(duration.as_secs().clamp(1, i32::MAX as u64) as i32),
            acquire_time: Some(now_micro()),
            renew_time: Some(now_micro()),
            lease_transitions: Some(transitions),
            ..Default::default()
        }),
    }
}

impl RunLock {
    /// Takes the cluster's lock for `holder`, or says who has it.
    pub async fn acquire(
        client: &Client,
        holder: Holder,
        opts: &LockOptions,
    ) -> Result<RunLock, LockError> {
        let api = Api::<Lease>::namespaced(client.clone(), LOCK_NAMESPACE);
        let (lease, acquired) = loop {
            match api
                .create(
                    &PostParams::default(),
                    &desired(&holder, opts.duration, None),
                )
                .await
            {
                Ok(l) => break (l, Acquired::Created),
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(source) => {
                    return Err(LockError::Api {
                        action: "create",
                        source,
                    });
                }
            }
            let existing = match api.get_opt(LOCK_NAME).await {
                Ok(Some(l)) => l,
                Ok(None) => continue, // released in between: try to create again
                Err(source) => {
                    return Err(LockError::Api {
                        action: "read",
                        source,
                    });
                }
            };
            let theirs = Holder::from_lease(&existing);
            let expired = expiry(&existing).is_none_or(|t| t < Timestamp::now());
            let how = if theirs == holder {
                Acquired::OwnStale(theirs.clone())
            } else if expired {
                Acquired::Expired(theirs.clone())
            } else if theirs.run_id == holder.run_id && holder_process_gone(&theirs) {
                Acquired::OwnStale(theirs.clone())
            } else if opts.break_lock && opts.confirmed {
                Acquired::Broken(theirs.clone())
            } else if opts.break_lock {
                return Err(LockError::NotConfirmed {
                    holder: theirs,
                    expires: expires_text(&existing),
                });
            } else {
                return Err(LockError::Held {
                    holder: theirs,
                    expires: expires_text(&existing),
                });
            };
            // Replace guarded by the resourceVersion we read: a concurrent taker gets 409.
            let name = LOCK_NAME;
            match api
                .replace(
                    name,
                    &PostParams::default(),
                    &desired(&holder, opts.duration, Some(&existing)),
                )
                .await
            {
                Ok(l) => break (l, how),
                Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => continue,
                Err(source) => {
                    return Err(LockError::Api {
                        action: "take over",
                        source,
                    });
                }
            }
        };
        let state = Arc::new(Mutex::new(lease));
        let lost = CancellationToken::new();
        let renewer = tokio::spawn(renew_loop(
            api.clone(),
            state.clone(),
            opts.duration,
            lost.clone(),
        ));
        Ok(RunLock {
            api,
            holder,
            state,
            renewer,
            lost,
            acquired,
        })
    }

    pub fn holder(&self) -> &Holder {
        &self.holder
    }

    /// Cancelled when renewing found the Lease taken by someone else.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Stops renewing and deletes the Lease (only if it is still ours).
    pub async fn release(self) -> Result<(), LockError> {
        self.renewer.abort();
        let _ = self.renewer.await;
        if self.lost.is_cancelled() {
            return Ok(());
        }
        let lease = self.state.lock().await.clone();
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: lease.metadata.uid.clone(),
                resource_version: lease.metadata.resource_version.clone(),
            }),
            ..Default::default()
        };
        match self.api.delete(LOCK_NAME, &dp).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(source) => Err(LockError::Api {
                action: "release",
                source,
            }),
        }
    }
}

async fn renew_loop(
    api: Api<Lease>,
    state: Arc<Mutex<Lease>>,
    duration: Duration,
    lost: CancellationToken,
) {
    let every = (duration / 3).max(Duration::from_millis(200));
    loop {
        tokio::time::sleep(every).await;
        let mut cur = state.lock().await;
        let mut next = cur.clone();
        if let Some(spec) = next.spec.as_mut() {
            spec.renew_time = Some(now_micro());
        }
        match api.replace(LOCK_NAME, &PostParams::default(), &next).await {
            Ok(l) => *cur = l,
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {
                // Someone broke or took the lock: stop making changes.
                let now = api.get_opt(LOCK_NAME).await.ok().flatten();
                let by = now
                    .as_ref()
                    .map(|l| Holder::from_lease(l).to_string())
                    .unwrap_or_else(|| "nobody (deleted)".into());
                tracing::error!(
                    "lost the cluster lock (Lease {LOCK_NAMESPACE}/{LOCK_NAME} is now held by {by}); pausing the run"
                );
                lost.cancel();
                return;
            }
            // A transient failure: try again at the next tick (the Lease lasts 3 ticks).
            Err(e) => tracing::warn!("cannot renew the cluster lock: {e}; retrying"),
        }
    }
}

#[cfg(test)]
mod process_tests {
    use super::process_alive;

    /// A holder killed with -9 and not yet reaped is a zombie: gone, not alive.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_zombie_holder_is_not_alive() {
        assert!(process_alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while process_alive(pid) {
            assert!(std::time::Instant::now() < deadline, "true never exited");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "still unreaped: a zombie in /proc"
        );
        child.wait().unwrap();
        assert!(!process_alive(pid));
    }
}
