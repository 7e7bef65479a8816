//! Checkpoints: one JSON document per run, written atomically after every state change,
//! under an exclusive lock.
//!
//! Version rule (`schema_version` is `major.minor`, this build writes [`SCHEMA_VERSION`]):
//! a newer **major** is always refused; a newer **minor** is refused for any run, resume or
//! rollback if the file holds fields this build does not know (it would drop them when it
//! rewrites the file), and accepted otherwise. Reading for display ([`Access::ReadOnly`])
//! accepts any newer minor.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::approval::ApprovalRecord;
use crate::journal::JournalEntry;

/// The checkpoint format this build writes.
pub const SCHEMA_VERSION: &str = "1.1";
const MAJOR: u32 = 1;
const MINOR: u32 = 1;
/// The `kind` field: tells a checkpoint from any other JSON file.
pub const CHECKPOINT_KIND: &str = "asm-canary/checkpoint";

/// The overall state of a run.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Running, or the process died while running (resume continues).
    Running,
    /// Paused: awaiting approval, interrupted, or halted on a failure. Resumable.
    Paused,
    Completed,
    /// The rollback sequence is running (or the process died during it: resume continues it).
    RollingBack,
    RolledBack,
    /// The rollback failed: a person must look; `rollback` retries it.
    Failed,
}

/// One step's status.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    /// Waiting for an approval (the run is paused).
    AwaitingApproval,
    /// The action is running (or was, when the process died).
    Acting,
    /// The action finished; the gate is waiting.
    Gating,
    Succeeded,
    Failed,
    Skipped,
    /// Cancelled by the operator (Ctrl-C) while acting or gating.
    Interrupted,
}

/// One step's record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepRecord {
    pub id: String,
    pub status: StepStatus,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// The action finished (its outputs are recorded): a resumed step only re-runs its gate.
    #[serde(default)]
    pub action_done: bool,
    /// The action observed that nothing needed doing.
    #[serde(default)]
    pub already_done: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<String>,
}

impl StepRecord {
    pub fn pending(id: &str) -> Self {
        StepRecord {
            id: id.to_string(),
            status: StepStatus::Pending,
            attempts: 0,
            started_at: None,
            finished_at: None,
            action_done: false,
            already_done: false,
            outputs: None,
            error: None,
            skip_reason: None,
        }
    }
    /// Succeeded or skipped: nothing left to do.
    pub fn is_finished(&self) -> bool {
        matches!(self.status, StepStatus::Succeeded | StepStatus::Skipped)
    }
}

/// The runbook a checkpoint was made with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunbookRef {
    pub name: String,
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// The runbook's text (schema 1.1; absent from checkpoints written before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// The hex sha256 of `bytes`: how a checkpoint names the runbook text it was made with (and a
/// fleet checkpoint its fleet file).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

impl RunbookRef {
    /// The runbook text this checkpoint kept, if it has one whose sha256 is the recorded one
    /// (a copy edited by hand is not the runbook the run started with).
    pub fn kept_text(&self) -> Option<&str> {
        self.text
            .as_deref()
            .filter(|t| sha256_hex(t.as_bytes()) == self.sha256)
    }
}

/// The checkpoint document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Checkpoint {
    pub schema_version: String,
    pub kind: String,
    pub run_id: String,
    /// The run's target identity (the cluster's ARM id for asm-canary), opaque to the engine.
    pub target: String,
    pub runbook: RunbookRef,
    pub params: Map<String, Value>,
    pub state: RunState,
    /// Why the run is paused / failed / rolled back, in a sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The forward step whose failure started the rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<String>,
    /// True when the rollback was asked for (`asm-canary rollback`), not caused by a failure.
    #[serde(default)]
    pub rollback_requested: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub steps: Vec<StepRecord>,
    #[serde(default)]
    pub rollback: Vec<StepRecord>,
    #[serde(default)]
    pub journal: Vec<JournalEntry>,
    #[serde(default)]
    pub approvals: Vec<ApprovalRecord>,
    /// The runbook's summary values (e.g. source and target revision), as last resolved.
    #[serde(default)]
    pub summary: Map<String, Value>,
}

impl Checkpoint {
    /// Outputs of every step so far, by id (forward and rollback).
    pub fn outputs_by_step(&self) -> Map<String, Value> {
        let mut m = Map::new();
        for r in self.steps.iter().chain(self.rollback.iter()) {
            if let Some(o) = &r.outputs {
                m.insert(r.id.clone(), Value::Object(o.clone()));
            }
        }
        m
    }

    pub fn step(&self, id: &str) -> Option<&StepRecord> {
        self.steps
            .iter()
            .chain(self.rollback.iter())
            .find(|s| s.id == id)
    }

    /// Parses a checkpoint, applying the version rule (see the module docs).
    pub fn from_json(bytes: &[u8], origin: &str, access: Access) -> Result<Self, CheckpointError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| CheckpointError::Corrupt {
            advice: FILE_CORRUPT_ADVICE.into(),
            path: origin.to_string(),
            detail: if e.is_eof() {
                format!(
                    "the file is truncated (ends at line {}, column {})",
                    e.line(),
                    e.column()
                )
            } else {
                format!("{e}")
            },
        })?;
        let obj = value
            .as_object()
            .ok_or_else(|| CheckpointError::NotACheckpoint {
                path: origin.to_string(),
                advice: FILE_FOREIGN_ADVICE.into(),
            })?;
        if obj.get("kind").and_then(Value::as_str) != Some(CHECKPOINT_KIND) {
            return Err(CheckpointError::NotACheckpoint {
                path: origin.to_string(),
                advice: FILE_FOREIGN_ADVICE.into(),
            });
        }
        let version = obj
            .get("schema_version")
            .and_then(Value::as_str)
            .ok_or_else(|| CheckpointError::Corrupt {
                advice: FILE_CORRUPT_ADVICE.into(),
                path: origin.to_string(),
                detail: "schema_version is missing".into(),
            })?;
        let (major, minor) = parse_version(version).ok_or_else(|| CheckpointError::Corrupt {
            advice: FILE_CORRUPT_ADVICE.into(),
            path: origin.to_string(),
            detail: format!("schema_version {version:?} is not major.minor"),
        })?;
        if major > MAJOR {
            return Err(CheckpointError::NewerSchema {
                path: origin.to_string(),
                found: version.to_string(),
                supported: SCHEMA_VERSION.to_string(),
            });
        }
        if major < MAJOR {
            return Err(CheckpointError::Corrupt {
                advice: FILE_CORRUPT_ADVICE.into(),
                path: origin.to_string(),
                detail: format!("schema_version {version:?} predates this format"),
            });
        }
        let cp: Checkpoint =
            serde_json::from_value(value.clone()).map_err(|e| CheckpointError::Corrupt {
                advice: FILE_CORRUPT_ADVICE.into(),
                path: origin.to_string(),
                detail: e.to_string(),
            })?;
        if access == Access::ReadWrite {
            let back = serde_json::to_value(&cp).unwrap_or(Value::Null);
            let mut lost = Vec::new();
            unknown_fields(&value, &back, "", &mut lost);
            if !lost.is_empty() && minor > MINOR {
                return Err(CheckpointError::NewerSchema {
                    path: origin.to_string(),
                    found: format!("{version} (with fields {})", lost.join(", ")),
                    supported: SCHEMA_VERSION.to_string(),
                });
            }
            // A field this version does not write (a hand repair's typo such as
            // `rollback_requestd`) was dropped at the next write without a word.
            if !lost.is_empty() {
                return Err(CheckpointError::Corrupt {
                    advice: FILE_CORRUPT_ADVICE.into(),
                    path: origin.to_string(),
                    detail: format!(
                        "it has fields no asm-canary {version} checkpoint has: {} (a hand edit? fix their names or remove them)",
                        lost.join(", ")
                    ),
                });
            }
        }
        if cp.run_id.trim().is_empty() {
            return Err(CheckpointError::Corrupt {
                advice: FILE_CORRUPT_ADVICE.into(),
                path: origin.to_string(),
                detail: "run_id is empty".into(),
            });
        }
        Ok(cp)
    }

    /// The JSON form (pretty, stable field order).
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

fn parse_version(v: &str) -> Option<(u32, u32)> {
    let (a, b) = v.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Paths present in `orig` but absent from `back` (fields a rewrite would drop).
fn unknown_fields(orig: &Value, back: &Value, path: &str, out: &mut Vec<String>) {
    match (orig, back) {
        (Value::Object(o), Value::Object(b)) => {
            for (k, v) in o {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    None if !v.is_null() => out.push(p),
                    None => {}
                    Some(bv) => unknown_fields(v, bv, &p, out),
                }
            }
        }
        (Value::Array(o), Value::Array(b)) => {
            for (i, (ov, bv)) in o.iter().zip(b.iter()).enumerate() {
                unknown_fields(ov, bv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// What to do about a corrupt checkpoint file.
const FILE_CORRUPT_ADVICE: &str = "restore it or start a new run with another --state file";
/// What to do about a file that is not a checkpoint.
const FILE_FOREIGN_ADVICE: &str = "pass the checkpoint file the run wrote";

/// Reading for display, or for a run that will rewrite the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadOnly,
    ReadWrite,
}

/// Checkpoint and lock errors. `exit_code()`: 5 for a held lock, 2 for a bad file, 1 for I/O.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(
        "checkpoint {path} is locked by another asm-canary run ({holder}); wait for it to finish, or if that process is gone, remove {path}.lock"
    )]
    Locked { path: String, holder: String },
    /// `advice`: what to do about it, as the store says ([`CheckpointStore::unusable_advice`]).
    #[error("checkpoint {path} is corrupt: {detail}; it was left untouched — {advice}")]
    Corrupt {
        path: String,
        detail: String,
        advice: String,
    },
    #[error("{path} is not an asm-canary checkpoint; it was left untouched — {advice}")]
    NotACheckpoint { path: String, advice: String },
    #[error(
        "checkpoint {path} has schema {found}, newer than this asm-canary supports ({supported}); use a newer asm-canary"
    )]
    NewerSchema {
        path: String,
        found: String,
        supported: String,
    },
    #[error(
        "checkpoint {path} belongs to target {found:?}, not {expected:?}; pass the checkpoint of this target"
    )]
    ForeignTarget {
        path: String,
        found: String,
        expected: String,
    },
    #[error(
        "checkpoint {path} was made with runbook {found_name:?} (sha256 {found_sha}), not {name:?} (sha256 {sha}); the runbook changed since — use the same runbook, or --force to continue anyway"
    )]
    RunbookChanged {
        path: String,
        found_name: String,
        found_sha: String,
        name: String,
        sha: String,
    },
    #[error(
        "checkpoint {path} already exists (run {run_id}); resume it, or choose another --state file"
    )]
    AlreadyExists { path: String, run_id: String },
    #[error(
        "{path} is a symbolic link; asm-canary does not write through one — remove it (it was left untouched, and so was what it points at)"
    )]
    Symlink { path: String },
    #[error(
        "no checkpoint at {path}; start a run first, or check where its checkpoint was written"
    )]
    Missing { path: String },
    #[error("checkpoint {path}: {op} failed: {source}")]
    Io {
        path: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl CheckpointError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CheckpointError::Locked { .. } => crate::exit::LOCKED,
            CheckpointError::Io { .. } => crate::exit::INTERNAL,
            _ => crate::exit::BAD_INPUT,
        }
    }
}

/// Held while a run owns a checkpoint; dropping it releases the lock.
pub trait StoreLock: Send + Sync + std::fmt::Debug {}

/// Where checkpoints live. [`FileStore`] is the only backend today; a Kubernetes ConfigMap
/// store can implement the same trait.
#[async_trait]
pub trait CheckpointStore: Send + Sync {
    /// Where the checkpoint is, for messages (a path, `configmap ns/name`).
    fn location(&self) -> String;
    /// Takes the exclusive lock; fails with [`CheckpointError::Locked`] naming the holder.
    async fn lock(&self) -> Result<Box<dyn StoreLock>, CheckpointError>;
    /// The raw bytes, or `None` if there is no checkpoint yet.
    async fn read(&self) -> Result<Option<Vec<u8>>, CheckpointError>;
    /// Replaces the checkpoint atomically and durably.
    async fn write(&self, bytes: &[u8]) -> Result<(), CheckpointError>;

    /// What to do about a checkpoint that cannot be used (corrupt, or not a checkpoint), if
    /// this store has better advice than a file's ("start a new run with another --state").
    fn unusable_advice(&self) -> Option<String> {
        None
    }

    /// Reads and parses the checkpoint.
    async fn load(&self, access: Access) -> Result<Option<Checkpoint>, CheckpointError> {
        match self.read().await? {
            None => Ok(None),
            Some(b) => Checkpoint::from_json(&b, &self.location(), access)
                .map(Some)
                .map_err(|e| with_advice(e, self.unusable_advice())),
        }
    }
}

/// The store's advice in place of a file's, for a checkpoint it cannot use.
fn with_advice(e: CheckpointError, advice: Option<String>) -> CheckpointError {
    match (e, advice) {
        (CheckpointError::Corrupt { path, detail, .. }, Some(advice)) => CheckpointError::Corrupt {
            path,
            detail,
            advice,
        },
        (CheckpointError::NotACheckpoint { path, .. }, Some(advice)) => {
            CheckpointError::NotACheckpoint { path, advice }
        }
        (e, _) => e,
    }
}

/// Whether a new file may be renamed over `path`: nothing is there, a symbolic link (replaced
/// by the file, never written through: a planted link redirects nothing), or a regular file
/// that is not read-only. A rename would replace a device node (`/dev/null`), a FIFO or a
/// socket rather than write into it, and a read-only file was protected by someone: each is
/// refused, the error saying what is there.
pub fn replaceable(path: &Path) -> std::io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
        Ok(m) => m,
    };
    let kind = meta.file_type();
    let what = if kind.is_symlink() {
        return Ok(());
    } else if kind.is_dir() {
        "a directory"
    } else if !kind.is_file() {
        "not a regular file (a device, FIFO or socket)"
    } else if meta.permissions().readonly() {
        "read-only (make it writable if it is to be replaced)"
    } else {
        return Ok(());
    };
    Err(std::io::Error::other(format!(
        "{} is {what}; nothing was written",
        path.display()
    )))
}

/// Replaces `path` with `bytes` atomically and durably, mode 0600: a temp file of an
/// unpredictable name in the same directory, created exclusively (a planted file or symlink
/// cannot redirect the write), written, fsynced, renamed over `path`, the directory fsynced.
/// A crash leaves the old or the new file, never a mix; on an error the temp file is removed.
/// Only a missing path or a writable regular file is replaced ([`replaceable`]). The error
/// names the operation that failed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), (&'static str, std::io::Error)> {
    replaceable(path).map_err(|e| ("check what is there", e))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "checkpoint".into());
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(|e| ("create temp file", e))?;
    tmp.write_all(bytes).map_err(|e| ("write temp file", e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| ("fsync temp file", e))?;
    tmp.persist(path)
        .map_err(|e| ("rename temp file", e.error))?;
    let d = File::open(&dir).map_err(|e| ("open directory", e))?;
    d.sync_all().map_err(|e| ("fsync directory", e))?;
    Ok(())
}

/// A store chosen at run time (`--state-backend`) is a boxed one.
#[async_trait]
impl<S: CheckpointStore + ?Sized> CheckpointStore for Box<S> {
    fn location(&self) -> String {
        (**self).location()
    }
    fn unusable_advice(&self) -> Option<String> {
        (**self).unusable_advice()
    }
    async fn lock(&self) -> Result<Box<dyn StoreLock>, CheckpointError> {
        (**self).lock().await
    }
    async fn read(&self) -> Result<Option<Vec<u8>>, CheckpointError> {
        (**self).read().await
    }
    async fn write(&self, bytes: &[u8]) -> Result<(), CheckpointError> {
        (**self).write(bytes).await
    }
}

/// The largest checkpoint file read: far above any run's (1.1 MB on the `large` scenario).
pub const MAX_CHECKPOINT_BYTES: u64 = 256 << 20;

/// Checkpoints in a file, with `<file>.lock` beside it.
///
/// Writes go to a temp file in the same directory (mode 0600), which is fsynced, renamed over
/// the checkpoint, and the directory fsynced: a crash leaves the old or the new file, never a
/// mix. The lock is `flock(LOCK_EX|LOCK_NB)` on `<file>.lock`, which holds the holder's pid,
/// start time and hostname for the error a second process gets.
#[derive(Debug, Clone)]
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileStore { path: path.into() }
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn lock_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".lock");
        PathBuf::from(p)
    }
    fn io(&self, op: &'static str) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
        move |source| CheckpointError::Io {
            path: self.path.display().to_string(),
            op,
            source,
        }
    }

    /// A lock file that cannot be opened; a symbolic link planted at its path is refused by
    /// name (opening it would write the pid into whatever it points at).
    fn lock_open_error(&self, lock_path: &Path, source: std::io::Error) -> CheckpointError {
        let is_link = std::fs::symlink_metadata(lock_path)
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false);
        if is_link {
            return CheckpointError::Symlink {
                path: lock_path.display().to_string(),
            };
        }
        self.io("open lock file")(source)
    }

    /// Synchronous atomic write (used by the async trait method; checkpoints are small).
    pub fn write_sync(&self, bytes: &[u8]) -> Result<(), CheckpointError> {
        write_atomic(&self.path, bytes).map_err(|(op, e)| self.io(op)(e))
    }

    /// The checkpoint's bytes: only from a regular file of at most [`MAX_CHECKPOINT_BYTES`]
    /// (`--state /dev/zero` read gigabytes into memory, a FIFO blocked forever).
    pub fn read_sync(&self) -> Result<Option<Vec<u8>>, CheckpointError> {
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io("read")(e)),
        };
        let refuse = |advice: String| CheckpointError::NotACheckpoint {
            path: self.path.display().to_string(),
            advice,
        };
        if !meta.is_file() {
            return Err(refuse(
                "it is not a regular file (a folder, device, FIFO or socket): name the checkpoint file".into(),
            ));
        }
        let mut bytes = Vec::new();
        if meta.len() <= MAX_CHECKPOINT_BYTES {
            File::open(&self.path)
                .and_then(|f| f.take(MAX_CHECKPOINT_BYTES + 1).read_to_end(&mut bytes))
                .map_err(self.io("read"))?;
        }
        if meta.len() > MAX_CHECKPOINT_BYTES || bytes.len() as u64 > MAX_CHECKPOINT_BYTES {
            return Err(refuse(format!(
                "it is larger than any checkpoint ({} MiB at most)",
                MAX_CHECKPOINT_BYTES >> 20
            )));
        }
        Ok(Some(bytes))
    }

    pub fn lock_sync(&self) -> Result<FileLock, CheckpointError> {
        let lock_path = self.lock_path();
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        no_follow(&mut opts);
        let file = opts
            .open(&lock_path)
            .map_err(|e| self.lock_open_error(&lock_path, e))?;
        let info = format!(
            "pid {}, started {}, host {}",
            std::process::id(),
            Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            hostname::get()
                .map(|h| h.to_string_lossy().to_string())
                .unwrap_or_else(|_| "unknown".into())
        );
        let mut lock = fd_lock::RwLock::new(file);
        match lock.try_write() {
            Ok(mut guard) => {
                let f: &mut File = &mut guard;
                let _ = f.set_len(0);
                let _ = std::io::Seek::seek(f, std::io::SeekFrom::Start(0));
                let _ = f.write_all(info.as_bytes());
                let _ = f.sync_all();
                // Keep the flock for as long as the file stays open: the guard would unlock on
                // drop, so forget it; dropping `FileLock` closes the file, which releases it.
                std::mem::forget(guard);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let mut holder = String::new();
                let mut read = OpenOptions::new();
                read.read(true);
                no_follow(&mut read);
                let _ = read
                    .open(&lock_path)
                    .and_then(|mut f| f.read_to_string(&mut holder));
                let holder = holder.trim();
                return Err(CheckpointError::Locked {
                    path: self.path.display().to_string(),
                    holder: if holder.is_empty() {
                        "holder unknown".into()
                    } else {
                        holder.to_string()
                    },
                });
            }
            Err(e) => return Err(self.io("lock")(e)),
        }
        Ok(FileLock {
            _lock: lock,
            path: lock_path,
        })
    }
}

/// Makes `opts` refuse to open a symbolic link at the last component of the path
/// (`O_NOFOLLOW`): files asm-canary appends to or rewrites in place (the `.lock`, the event
/// log) are never written through a link someone planted there.
pub fn no_follow(opts: &mut OpenOptions) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NOFOLLOW);
    }
    #[cfg(not(unix))]
    let _ = opts;
}

/// The held lock of a [`FileStore`].
pub struct FileLock {
    _lock: fd_lock::RwLock<File>,
    path: PathBuf,
}

impl std::fmt::Debug for FileLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileLock")
            .field("path", &self.path)
            .finish()
    }
}

impl StoreLock for FileLock {}

#[async_trait]
impl CheckpointStore for FileStore {
    fn location(&self) -> String {
        self.path.display().to_string()
    }
    async fn lock(&self) -> Result<Box<dyn StoreLock>, CheckpointError> {
        Ok(Box::new(self.lock_sync()?))
    }
    async fn read(&self) -> Result<Option<Vec<u8>>, CheckpointError> {
        self.read_sync()
    }
    async fn write(&self, bytes: &[u8]) -> Result<(), CheckpointError> {
        // Synchronous on purpose: checkpoints are small, and a write must not be torn by the
        // executor dropping a future on cancellation.
        self.write_sync(bytes)
    }
}
