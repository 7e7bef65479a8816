//! Checkpoint files: atomic 0600 writes, the lock (exit 5, names the holder), and refusal of
//! corrupt, truncated, foreign, newer and changed-runbook checkpoints — never overwriting them.

mod common;

use std::sync::Arc;

use asm_canary_engine::*;
use common::*;
use serde_json::{Value, json};

async fn paused_run(state: &std::path::Path) -> (Fakes, String) {
    let yaml = three_steps("rollback", true);
    let f = Fakes::new();
    let ev = Arc::new(MemorySink::new());
    let r = executor(&yaml, &f, state, &ev)
        .run(request())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Paused);
    (f, yaml)
}

#[tokio::test]
async fn checkpoint_is_written_0600_atomically_with_the_documented_fields() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("run.json");
    paused_run(&state).await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(
        names,
        ["run.json", "run.json.lock"],
        "no temp file left behind"
    );
    let v: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(v["schema_version"], "1.1");
    assert_eq!(v["kind"], "asm-canary/checkpoint");
    assert_eq!(v["run_id"], "run-1");
    assert_eq!(v["runbook"]["name"], "three");
    assert!(
        v["runbook"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("name: three")),
        "the checkpoint keeps the runbook's text: {}",
        v["runbook"]
    );
    assert_eq!(v["runbook"]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(v["params"], json!({"tag": "prod"}));
    assert_eq!(v["state"], "paused");
    assert_eq!(v["steps"][0]["status"], "succeeded");
    assert_eq!(v["steps"][0]["attempts"], 1);
    assert_eq!(v["steps"][2]["status"], "awaiting_approval");
    assert_eq!(v["journal"][0]["kind"], "effect");
    assert_eq!(v["journal"][0]["status"], "done");
    assert!(v["journal"][0]["recorded_at"].is_string());
    let lock = std::fs::read_to_string(dir.path().join("run.json.lock")).unwrap();
    assert!(
        lock.starts_with(&format!("pid {}, started ", std::process::id())),
        "{lock}"
    );
}

#[tokio::test]
async fn a_held_lock_refuses_a_second_run_with_exit_5_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("run.json");
    let (f, yaml) = paused_run(&state).await;
    let held = FileStore::new(&state).lock_sync().unwrap();
    let ev = Arc::new(MemorySink::new());
    let err = executor(&yaml, &f, &state, &ev)
        .resume(ResumeOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 5);
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "locked by another asm-canary run (pid {}, started ",
            std::process::id()
        )),
        "{msg}"
    );
    assert!(msg.contains("host "), "{msg}");
    drop(held);
    let r = executor(&yaml, &f, &state, &ev)
        .resume(ResumeOptions::default())
        .await
        .unwrap();
    assert_eq!(
        r.outcome,
        Outcome::Paused,
        "the lock is free again once dropped"
    );
}

async fn refuse(
    state: &std::path::Path,
    yaml: &str,
    f: &Fakes,
    opts: ResumeOptions,
) -> EngineError {
    let before = std::fs::read(state).unwrap();
    let ev = Arc::new(MemorySink::new());
    let err = executor(yaml, f, state, &ev)
        .resume(opts.clone())
        .await
        .unwrap_err();
    let err2 = executor(yaml, f, state, &ev)
        .rollback(opts)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), err2.to_string());
    assert_eq!(
        std::fs::read(state).unwrap(),
        before,
        "the checkpoint is never overwritten"
    );
    assert!(ev.events().is_empty(), "nothing ran");
    err
}

#[tokio::test]
async fn corrupt_truncated_and_foreign_files_are_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("run.json");
    let (f, yaml) = paused_run(&state).await;
    let good = std::fs::read(&state).unwrap();

    std::fs::write(&state, &good[..good.len() / 2]).unwrap();
    let e = refuse(&state, &yaml, &f, ResumeOptions::default()).await;
    assert_eq!(e.exit_code(), 2);
    assert!(
        e.to_string().contains("is corrupt: the file is truncated"),
        "{e}"
    );

    std::fs::write(&state, b"{not json").unwrap();
    let e = refuse(&state, &yaml, &f, ResumeOptions::default()).await;
    assert!(
        e.to_string()
            .contains("is corrupt: key must be a string at line 1"),
        "{e}"
    );

    std::fs::write(&state, br#"{"apiVersion": "v1", "kind": "ConfigMap"}"#).unwrap();
    let e = refuse(&state, &yaml, &f, ResumeOptions::default()).await;
    assert_eq!(e.exit_code(), 2);
    assert!(
        e.to_string().contains("is not an asm-canary checkpoint"),
        "{e}"
    );

    let mut v: Value = serde_json::from_slice(&good).unwrap();
    v["steps"] = json!("nope");
    std::fs::write(&state, serde_json::to_vec(&v).unwrap()).unwrap();
    let e = refuse(&state, &yaml, &f, ResumeOptions::default()).await;
    assert!(e.to_string().contains("is corrupt: invalid type"), "{e}");

    // A field this version does not write (a hand repair's typo) was dropped at the next
    // write without a word; an empty run id answered as an owner-record conflict (exit 5).
    let mut v: Value = serde_json::from_slice(&good).unwrap();
    v["rollback_requestd"] = json!(true);
    v["steps"][0]["bar"] = json!(2);
    std::fs::write(&state, serde_json::to_vec(&v).unwrap()).unwrap();
    let e = refuse(&state, &yaml, &f, ResumeOptions::default()).await;
    assert_eq!(e.exit_code(), 2);
    assert!(
        e.to_string().contains(
            "has fields no asm-canary 1.1 checkpoint has: steps[0].bar, rollback_requestd"
        ),
        "{e}"
    );
    let mut v: Value = serde_json::from_slice(&good).unwrap();
    v["run_id"] = json!("");
    std::fs::write(&state, serde_json::to_vec(&v).unwrap()).unwrap();
    let e = refuse(&state, &yaml, &f, ResumeOptions::default()).await;
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("run_id is empty"), "{e}");

    // A fresh run refuses to overwrite even a corrupt file.
    std::fs::write(&state, b"garbage").unwrap();
    let ev = Arc::new(MemorySink::new());
    let e = executor(&yaml, &f, &state, &ev)
        .run(request())
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert_eq!(std::fs::read(&state).unwrap(), b"garbage");
}

#[tokio::test]
async fn another_target_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("run.json");
    let (f, yaml) = paused_run(&state).await;
    let e = refuse(
        &state,
        &yaml,
        &f,
        ResumeOptions {
            expect_target: Some("/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/other".into()),
            force: true,
        },
    )
    .await;
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("belongs to target \"/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/c\", not \"/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/other\""), "{e}");
}

#[tokio::test]
async fn newer_schema_rule() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("run.json");
    let (f, yaml) = paused_run(&state).await;
    let good: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();

    // Newer major: refused.
    let mut v = good.clone();
    v["schema_version"] = json!("2.0");
    std::fs::write(&state, serde_json::to_vec(&v).unwrap()).unwrap();
    let e = refuse(&state, &yaml, &f, ResumeOptions::default()).await;
    assert_eq!(e.exit_code(), 2);
    assert!(
        e.to_string()
            .contains("has schema 2.0, newer than this asm-canary supports (1.1)"),
        "{e}"
    );

    // Newer minor with a field this build would drop: refused for writing, readable for status.
    let mut v = good.clone();
    v["schema_version"] = json!("1.3");
    v["steps"][0]["retries_left"] = json!(2);
    let bytes = serde_json::to_vec(&v).unwrap();
    std::fs::write(&state, &bytes).unwrap();
    let e = refuse(&state, &yaml, &f, ResumeOptions::default()).await;
    assert!(
        e.to_string()
            .contains("has schema 1.3 (with fields steps[0].retries_left)"),
        "{e}"
    );
    let cp = read_checkpoint(&FileStore::new(&state)).await.unwrap();
    assert_eq!(cp.run_id, "run-1");

    // Newer minor without unknown fields: accepted (nothing would be lost).
    let mut v = good.clone();
    v["schema_version"] = json!("1.3");
    std::fs::write(&state, serde_json::to_vec(&v).unwrap()).unwrap();
    let ev = Arc::new(MemorySink::new());
    let r = executor(&yaml, &f, &state, &ev)
        .resume(ResumeOptions::default())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Paused);
    assert_eq!(load(&state).schema_version, "1.1");
}

/// A checkpoint written before checkpoints kept the runbook's text (schema 1.0) gets it when
/// a resume rewrites it, so that the next asm-canary version can go on with that runbook.
#[tokio::test]
async fn a_resumed_checkpoint_of_schema_1_0_keeps_the_runbook_from_then_on() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("run.json");
    let (f, yaml) = paused_run(&state).await;
    let mut v: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    v["schema_version"] = json!("1.0");
    v["runbook"].as_object_mut().unwrap().remove("text");
    std::fs::write(&state, serde_json::to_vec(&v).unwrap()).unwrap();
    let ev = Arc::new(MemorySink::new());
    let r = executor(&yaml, &f, &state, &ev)
        .resume(ResumeOptions::default())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Paused);
    let cp = load(&state);
    assert_eq!(cp.schema_version, "1.1");
    assert_eq!(cp.runbook.kept_text(), Some(yaml.as_str()));
}

#[tokio::test]
async fn a_changed_runbook_is_refused_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("run.json");
    let (f, yaml) = paused_run(&state).await;
    let changed = yaml.replace("default: prod", "default: canary");
    let e = refuse(&state, &changed, &f, ResumeOptions::default()).await;
    assert_eq!(e.exit_code(), 2);
    assert!(
        e.to_string()
            .contains("the runbook changed since — use the same runbook, or --force"),
        "{e}"
    );

    let ev = Arc::new(MemorySink::new());
    let r = executor(&changed, &f, &state, &ev)
        .with_approver(Arc::new(PreApproved::new(["c"])))
        .resume(ResumeOptions {
            expect_target: None,
            force: true,
        })
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Completed);
    let cp = load(&state);
    assert_ne!(
        cp.runbook.sha256,
        Runbook::parse(&yaml, "x", &f.registry()).unwrap().sha256
    );
    assert_eq!(cp.params["tag"], "prod", "params stay as the run started");
}

#[tokio::test]
async fn resume_without_a_checkpoint_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("none.json");
    let yaml = three_steps("rollback", false);
    let f = Fakes::new();
    let ev = Arc::new(MemorySink::new());
    let e = executor(&yaml, &f, &state, &ev)
        .resume(ResumeOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("no checkpoint at"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn checkpoint_format_snapshot() {
    // The checkpoint is a contract (resume across versions, `status`): a change to its shape
    // is a reviewed change.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("run.json");
    let yaml = three_steps("rollback", true);
    let f = Fakes::new();
    f.gate.set(
        "a",
        vec![GateStatus::waiting("warming up"), GateStatus::passed()],
    );
    let ev = Arc::new(MemorySink::new());
    let r = executor(&yaml, &f, &state, &ev)
        .run(request())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Paused);
    let text = String::from_utf8(std::fs::read(&state).unwrap()).unwrap();
    insta::assert_snapshot!(text);
}

/// The checkpoint's temp file had a predictable name (`.NAME.tmp-PID`) and was opened without
/// exclusive create, so a symlink planted there redirected the write to any file the user can
/// write. The temp file is now unpredictable and created exclusively.
#[cfg(unix)]
#[test]
fn a_symlink_at_the_old_temp_name_does_not_redirect_the_write() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "precious").unwrap();
    let planted = dir
        .path()
        .join(format!(".run.json.tmp-{}", std::process::id()));
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    let store = FileStore::new(dir.path().join("run.json"));
    store.write_sync(b"{\"checkpoint\": true}").unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("run.json")).unwrap(),
        "{\"checkpoint\": true}"
    );
    let left = temp_files(dir.path());
    assert!(left.is_empty(), "no temp file left: {left:?}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("run.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// `ln -s victim.txt run.json.lock; asm-canary rollback --state run.json` overwrote
/// `victim.txt` with the lock holder's pid: the lock file was opened through the link. It is
/// now opened with `O_NOFOLLOW`, and the link is refused by name (bad input).
#[cfg(unix)]
#[test]
fn a_symlink_at_the_lock_path_is_refused_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "precious").unwrap();
    let store = FileStore::new(dir.path().join("run.json"));
    std::os::unix::fs::symlink(&victim, store.lock_path()).unwrap();
    let err = store.lock_sync().unwrap_err();
    assert!(
        matches!(err, asm_canary_engine::CheckpointError::Symlink { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("run.json.lock") && text.contains("symbolic link"),
        "{text}"
    );
    assert_eq!(err.exit_code(), 2);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    // A dangling link is not followed either (it would create the file it names).
    let dangling = dir.path().join("other.json");
    let store = FileStore::new(&dangling);
    let target = dir.path().join("created-through-the-link");
    std::os::unix::fs::symlink(&target, store.lock_path()).unwrap();
    assert!(store.lock_sync().is_err());
    assert!(!target.exists(), "the lock was created through the link");
}

/// The report and the checkpoint are written with `write_atomic`: a symlink at the destination
/// is replaced by the new file, never written through.
#[cfg(unix)]
#[test]
fn a_symlink_at_an_atomically_written_path_is_replaced_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "precious").unwrap();
    let report = dir.path().join("run.json.report.md");
    std::os::unix::fs::symlink(&victim, &report).unwrap();
    asm_canary_engine::checkpoint::write_atomic(&report, b"# report").unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(
        !std::fs::symlink_metadata(&report)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read_to_string(&report).unwrap(), "# report");
}

/// `fleet pipeline --output /dev/null` renamed its temp file over the device node: `/dev/null`
/// became a regular file for every process on the machine. An atomic write now replaces only
/// a missing path, a regular writable file or a symlink; a socket, FIFO or device, a
/// directory and a read-only file are refused, left as they were, and no temp file is left.
#[cfg(unix)]
#[test]
fn an_atomic_write_refuses_to_replace_what_is_no_writable_regular_file() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    use std::os::unix::net::UnixListener;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("socket");
    let _listener = UnixListener::bind(&socket).unwrap();
    let folder = dir.path().join("folder");
    std::fs::create_dir(&folder).unwrap();
    let protected = dir.path().join("protected.yml");
    std::fs::write(&protected, "kept").unwrap();
    std::fs::set_permissions(&protected, std::fs::Permissions::from_mode(0o444)).unwrap();
    for (path, says) in [
        (&socket, "not a regular file"),
        (&folder, "a directory"),
        (&protected, "read-only"),
    ] {
        let (op, e) = checkpoint::write_atomic(path, b"new").unwrap_err();
        assert_eq!(op, "check what is there");
        assert!(e.to_string().contains(says), "{}: {e}", path.display());
    }
    assert!(
        std::fs::symlink_metadata(&socket)
            .unwrap()
            .file_type()
            .is_socket()
    );
    assert!(folder.is_dir());
    assert_eq!(std::fs::read_to_string(&protected).unwrap(), "kept");
    let left = temp_files(dir.path());
    assert!(left.is_empty(), "no temp file left: {left:?}");
    let fresh = dir.path().join("fresh.yml");
    checkpoint::write_atomic(&fresh, b"new").unwrap();
    assert_eq!(std::fs::read_to_string(&fresh).unwrap(), "new");
}

/// `--state /dev/full` read the device into memory without end (gigabytes in seconds), and a
/// FIFO blocked the read forever. A checkpoint is read only from a regular file of at most
/// `MAX_CHECKPOINT_BYTES`; anything else is refused as not a checkpoint (exit 2), left as it was.
#[cfg(unix)]
#[test]
fn a_checkpoint_is_read_only_from_a_regular_file_of_bounded_size() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let huge = dir.path().join("huge.json");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(checkpoint::MAX_CHECKPOINT_BYTES + 1)
        .unwrap();
    for (path, says) in [
        (&socket, "not a regular file"),
        (&dir.path().to_path_buf(), "not a regular file"),
        (&huge, "larger than any checkpoint"),
    ] {
        let err = FileStore::new(path).read_sync().unwrap_err();
        assert!(
            matches!(err, CheckpointError::NotACheckpoint { .. }),
            "{err:?}"
        );
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains(says), "{err}");
    }
    assert_eq!(
        std::fs::metadata(&huge).unwrap().len(),
        checkpoint::MAX_CHECKPOINT_BYTES + 1
    );
    assert_eq!(
        FileStore::new(dir.path().join("none.json"))
            .read_sync()
            .unwrap(),
        None
    );
}

/// The temp files an atomic write left in `dir` (none, after any write or refusal).
fn temp_files(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}
