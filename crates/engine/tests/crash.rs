//! Crash safety: a child process runs a runbook whose fake actions write their side effects to
//! a file, is killed with SIGKILL at a chosen point (inside an action, inside a gate, inside
//! the rollback), and the run is resumed; every side effect must have happened exactly once.
//!
//! The child is this test binary itself, re-run on the ignored `child_entry` test with
//! `CRASH_DIR` set.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use asm_canary_engine::*;
use async_trait::async_trait;
use serde_json::json;

const RUNBOOK: &str = r#"apiVersion: asm-canary.runbook/v1
name: crash
steps:
  - id: a
    action: effect
    gate: { check: hookgate, timeout: 1m, poll_interval: 10ms }
  - id: b
    action: effect
    gate: { check: hookgate, timeout: 1m, poll_interval: 10ms }
  - id: c
    action: effect
    gate: { check: hookgate, timeout: 1m, poll_interval: 10ms }
rollback:
  - id: undo
    action: undo
    gate: { check: hookgate, timeout: 1m, poll_interval: 10ms }
"#;

/// Side effects live in `effects.log`, one line each, fsynced: the "cluster".
#[derive(Clone)]
struct FileWorld {
    dir: PathBuf,
    /// `step:point` at which to signal the parent and hang (to be killed).
    crash_at: Option<String>,
    /// A step whose action fails (to start the rollback).
    fail: Option<String>,
}

impl FileWorld {
    fn log(&self) -> PathBuf {
        self.dir.join("effects.log")
    }
    fn has(&self, name: &str) -> bool {
        std::fs::read_to_string(self.log())
            .unwrap_or_default()
            .lines()
            .any(|l| l == name)
    }
    fn apply(&self, name: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap();
        writeln!(f, "{name}").unwrap();
        f.sync_all().unwrap();
    }
    async fn hook(&self, step: &str, point: &str) {
        if self.crash_at.as_deref() == Some(&format!("{step}:{point}")) {
            std::fs::write(self.dir.join("reached"), b"1").unwrap();
            std::future::pending::<()>().await;
        }
    }
}

struct EffectA(FileWorld);

#[async_trait]
impl Action for EffectA {
    async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
        let w = &self.0;
        if w.fail.as_deref() == Some(ctx.step.as_str()) {
            return Err(StepError::msg("told to fail"));
        }
        let name = ctx.step.clone();
        let in_flight = ctx
            .journal
            .in_flight()
            .into_iter()
            .find(|e| e.target == name);
        if let Some(e) = &in_flight
            && w.has(&name)
        {
            ctx.journal.done(EntryId(e.seq), None).await?;
            return Ok(ActionOutcome::done(Outputs::new()));
        }
        if in_flight.is_none() && w.has(&name) {
            return Ok(ActionOutcome::already_done(Outputs::new(), "present"));
        }
        let id = match in_flight {
            Some(e) => EntryId(e.seq),
            None => {
                w.hook(&ctx.step, "before-intent").await;
                let id = ctx.journal.intent("effect", &name, json!({})).await?;
                w.hook(&ctx.step, "after-intent").await;
                id
            }
        };
        w.apply(&name);
        w.hook(&ctx.step, "after-effect").await;
        ctx.journal.done(id, None).await?;
        w.hook(&ctx.step, "after-done").await;
        Ok(ActionOutcome::done(Outputs::new()))
    }
}

/// Undoes every forward effect the journal records (done or in flight), once.
struct UndoA(FileWorld);

#[async_trait]
impl Action for UndoA {
    async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
        let w = &self.0;
        for e in ctx.journal.all() {
            if e.phase != Phase::Forward || !w.has(&e.target) {
                continue;
            }
            let undo = format!("undo:{}", e.target);
            let prior = ctx.journal.find("undo", &e.target);
            if w.has(&undo) {
                if let Some(p) = prior.filter(|p| !p.is_done()) {
                    ctx.journal.done(EntryId(p.seq), None).await?;
                }
                continue;
            }
            let id = match prior {
                Some(p) => EntryId(p.seq),
                None => ctx.journal.intent("undo", &e.target, json!({})).await?,
            };
            w.hook(&format!("undo-{}", e.target), "after-intent").await;
            w.apply(&undo);
            w.hook(&format!("undo-{}", e.target), "after-effect").await;
            ctx.journal.done(id, None).await?;
        }
        Ok(ActionOutcome::done(Outputs::new()))
    }
}

struct HookGate(FileWorld);

#[async_trait]
impl Gate for HookGate {
    async fn check(&self, ctx: &mut GateCtx) -> Result<GateStatus, StepError> {
        self.0.hook(&ctx.step, "gate").await;
        Ok(GateStatus::passed())
    }
}

fn executor(world: &FileWorld) -> Executor {
    let reg = Registry::new()
        .action("effect", EffectA(world.clone()))
        .action("undo", UndoA(world.clone()))
        .gate("hookgate", HookGate(world.clone()));
    let rb = Runbook::parse(RUNBOOK, "crash.yaml", &reg).unwrap();
    Executor::new(rb, reg, FileStore::new(world.dir.join("run.json")))
}

fn request() -> RunRequest {
    RunRequest {
        target: "cluster".into(),
        params: Default::default(),
        run_id: Some("crash-run".into()),
    }
}

/// A gate that never passes (the signal tests interrupt it).
struct Forever(FileWorld);

#[async_trait]
impl Gate for Forever {
    async fn check(&self, ctx: &mut GateCtx) -> Result<GateStatus, StepError> {
        if ctx.check_count == 1 {
            std::fs::write(self.0.dir.join("reached"), b"1").unwrap();
        }
        Ok(GateStatus::waiting("rolling out"))
    }
}

/// The child of the signal tests: Ctrl-C handling as the CLI wires it.
#[test]
#[ignore = "entry point of the child process spawned by the signal tests"]
fn signal_child_entry() {
    let Ok(dir) = std::env::var("SIGNAL_DIR") else {
        return;
    };
    let world = FileWorld {
        dir: PathBuf::from(dir),
        crash_at: None,
        fail: None,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let code = rt.block_on(async {
        let token = CancellationToken::new();
        asm_canary_engine::signals::cancel_on_signals(token.clone()).unwrap();
        if std::env::var("SIGNAL_IGNORE_FIRST").is_ok() {
            // Something that does not stop on the first signal: only the second one ends it.
            std::fs::write(world.dir.join("reached"), b"1").unwrap();
            std::future::pending::<()>().await;
        }
        let reg = Registry::new()
            .action("effect", EffectA(world.clone()))
            .action("undo", UndoA(world.clone()))
            .gate("hookgate", Forever(world.clone()));
        let rb = Runbook::parse(RUNBOOK, "crash.yaml", &reg).unwrap();
        let r = Executor::new(rb, reg, FileStore::new(world.dir.join("run.json")))
            .with_cancellation(token)
            .run(request())
            .await
            .unwrap();
        r.exit_code()
    });
    std::process::exit(code as i32);
}

fn spawn_signal_child(dir: &Path, ignore_first: bool) -> std::process::Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["signal_child_entry", "--exact", "--ignored", "--nocapture"])
        .env("SIGNAL_DIR", dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if ignore_first {
        cmd.env("SIGNAL_IGNORE_FIRST", "1");
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dir.join("reached").exists() {
        assert!(child.try_wait().unwrap().is_none(), "child exited early");
        assert!(Instant::now() < deadline, "child never reached its gate");
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

fn send(child: &std::process::Child, sig: &str) {
    let status = Command::new("sh")
        .args(["-c", &format!("kill -{sig} {}", child.id())])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn first_ctrl_c_pauses_with_exit_4_and_a_resumable_checkpoint() {
    for sig in ["INT", "TERM"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut child = spawn_signal_child(dir, false);
        send(&child, sig);
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(4), "SIG{sig}");
        let cp = checkpoint(dir);
        assert_eq!(cp.state, RunState::Paused);
        assert_eq!(cp.step("a").unwrap().status, StepStatus::Interrupted);
        assert!(cp.step("a").unwrap().action_done);
        assert_eq!(effects(dir), ["a"]);
    }
}

#[test]
fn second_ctrl_c_aborts_with_130() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = spawn_signal_child(tmp.path(), true);
    send(&child, "INT");
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first signal does not abort"
    );
    send(&child, "INT");
    assert_eq!(child.wait().unwrap().code(), Some(130));
}

/// The child: runs (or resumes) the runbook until killed at `CRASH_AT`.
#[test]
#[ignore = "entry point of the child process spawned by the crash tests"]
fn child_entry() {
    let Ok(dir) = std::env::var("CRASH_DIR") else {
        return;
    };
    let world = FileWorld {
        dir: PathBuf::from(dir),
        crash_at: std::env::var("CRASH_AT").ok(),
        fail: std::env::var("CRASH_FAIL").ok(),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ex = executor(&world);
        let r = if std::env::var("CRASH_RESUME").is_ok() {
            ex.resume(ResumeOptions::default()).await
        } else {
            ex.run(request()).await
        };
        std::fs::write(world.dir.join("finished"), format!("{r:?}")).unwrap();
    });
}

/// Spawns the child, waits until it reaches the crash point, SIGKILLs it.
fn run_child_and_kill(dir: &Path, crash_at: &str, fail: Option<&str>, resume: bool) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "child_entry",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("CRASH_DIR", dir)
    .env("CRASH_AT", crash_at)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if let Some(f) = fail {
        cmd.env("CRASH_FAIL", f);
    }
    if resume {
        cmd.env("CRASH_RESUME", "1");
    }
    let mut child = cmd.spawn().unwrap();
    let reached = dir.join("reached");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !reached.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "child exited ({status}) before reaching {crash_at}: {}",
                std::fs::read_to_string(dir.join("finished")).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "child never reached {crash_at}");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL on unix
    child.wait().unwrap();
    std::fs::remove_file(&reached).unwrap();
}

fn effects(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_to_string(dir.join("effects.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

fn checkpoint(dir: &Path) -> Checkpoint {
    let b = std::fs::read(dir.join("run.json")).unwrap();
    Checkpoint::from_json(&b, "run.json", Access::ReadWrite).unwrap()
}

#[tokio::test]
async fn killed_at_any_point_of_the_forward_steps_resumes_with_each_effect_once() {
    let points = [
        "before-intent",
        "after-intent",
        "after-effect",
        "after-done",
        "gate",
    ];
    for step in ["a", "b", "c"] {
        for point in points {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path();
            let at = format!("{step}:{point}");
            run_child_and_kill(dir, &at, None, false);
            let cp = checkpoint(dir);
            assert_eq!(
                cp.state,
                RunState::Running,
                "{at}: the process died while running"
            );
            let rec = cp.step(step).unwrap();
            let expected = if point == "gate" {
                StepStatus::Gating
            } else {
                StepStatus::Acting
            };
            assert_eq!(rec.status, expected, "{at}");
            let world = FileWorld {
                dir: dir.to_path_buf(),
                crash_at: None,
                fail: None,
            };
            let r = executor(&world)
                .resume(ResumeOptions::default())
                .await
                .unwrap();
            assert_eq!(r.outcome, Outcome::Completed, "{at}: {r:?}");
            assert_eq!(
                effects(dir),
                ["a", "b", "c"],
                "{at}: each side effect exactly once"
            );
            let cp = checkpoint(dir);
            assert_eq!(cp.journal.len(), 3, "{at}: {:#?}", cp.journal);
            assert!(cp.journal.iter().all(|e| e.is_done()), "{at}");
            let attempts = cp.step(step).unwrap().attempts;
            assert_eq!(attempts, if point == "gate" { 1 } else { 2 }, "{at}");
        }
    }
}

#[tokio::test]
async fn killed_during_the_rollback_resumes_the_rollback_with_each_undo_once() {
    for at in ["undo-a:after-intent", "undo-b:after-effect", "undo:gate"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        run_child_and_kill(dir, at, Some("c"), false);
        assert_eq!(checkpoint(dir).state, RunState::RollingBack, "{at}");
        // Resume in another child that is killed again at the same point if it is reached twice
        // would hang; resume in-process instead.
        let world = FileWorld {
            dir: dir.to_path_buf(),
            crash_at: None,
            fail: Some("c".into()),
        };
        let r = executor(&world)
            .resume(ResumeOptions::default())
            .await
            .unwrap();
        assert_eq!(r.outcome, Outcome::RolledBack, "{at}: {r:?}");
        assert_eq!(r.exit_code(), 3);
        assert_eq!(effects(dir), ["a", "b", "undo:a", "undo:b"], "{at}");
    }
}

#[tokio::test]
async fn killed_twice_in_a_row_still_converges() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    run_child_and_kill(dir, "b:after-intent", None, false);
    run_child_and_kill(dir, "c:after-effect", None, true);
    let world = FileWorld {
        dir: dir.to_path_buf(),
        crash_at: None,
        fail: None,
    };
    let r = executor(&world)
        .resume(ResumeOptions::default())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Completed);
    assert_eq!(effects(dir), ["a", "b", "c"]);
    assert_eq!(checkpoint(dir).step("b").unwrap().attempts, 2);
    assert_eq!(checkpoint(dir).step("c").unwrap().attempts, 2);
}
