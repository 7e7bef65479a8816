//! The guided session through a pseudo-terminal: the prompts appear only when stdin and stderr
//! are terminals, so each test runs the real binary under `tests/pty_driver.py` (python3's pty
//! module) which types the answers a person would.

mod common;

use std::process::Output;

use common::{FAST, TestSim};

/// Runs `asm-canary upgrade` in a pseudo-terminal, answering each (prompt, answer) in turn.
async fn guided(sim: &TestSim, script: &[(&str, &str)], extra: &[&str]) -> Output {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    if std::process::Command::new(&python)
        .arg("--version")
        .output()
        .is_err()
    {
        panic!(
            "{python} is not installed: the guided prompts need a pseudo-terminal, driven by tests/pty_driver.py (apt-get install python3, or set PYTHON)"
        );
    }
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pty_driver.py"));
    for (prompt, answer) in script {
        cmd.args(["--expect", prompt, answer]);
    }
    let state = sim.state_file();
    cmd.args(["--", env!("CARGO_BIN_EXE_asm-canary"), "upgrade", "--state"])
        .arg(&state)
        .args(FAST)
        .args(extra);
    for (k, v) in sim.handle.info.env_lines() {
        cmd.env(k, v);
    }
    cmd.env("ASM_CANARY_CA_FILE", &sim.ca_file)
        .env("ASM_CANARY_AUTH", "client-secret")
        .env("ASM_CANARY_ARM_POLL_INTERVAL", "100ms")
        .env("PTY_DRIVER_TIMEOUT", "60")
        .env_remove("ASM_CANARY_LOG")
        .kill_on_drop(true);
    cmd.output().await.expect("pty driver runs")
}

fn transcript(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guided_yes_shows_the_plan_asks_before_start_and_complete_and_completes() {
    let sim = TestSim::start("healthy").await;
    let out = guided(
        &sim,
        &[
            ("Approve step \"start\"", "y"),
            ("Approve step \"complete\"", "yes"),
        ],
        &[],
    )
    .await;
    let t = transcript(&out);
    assert_eq!(out.status.code(), Some(0), "transcript:\n{t}");
    let plan_at = t
        .find("Upgrade     asm-1-27 → asm-1-29")
        .expect("the plan first");
    let prompt_at = t.find("Approve step \"start\"").expect("a start prompt");
    assert!(
        plan_at < prompt_at,
        "the plan comes before the first prompt"
    );
    assert!(t.contains("Wave 1/3    canary: 1 workload(s)"), "{t}");
    assert!(t.contains("completed: asm-1-27 → asm-1-29"), "{t}");
    assert!(t.contains("report: "), "{t}");
    assert_eq!(sim.revisions().await, vec!["asm-1-29"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guided_no_at_start_changes_nothing_and_pauses_resumably() {
    let sim = TestSim::start("healthy").await;
    let out = guided(&sim, &[("Approve step \"start\"", "n")], &[]).await;
    let t = transcript(&out);
    assert_eq!(out.status.code(), Some(4), "transcript:\n{t}");
    assert!(t.contains("not approved"), "{t}");
    assert!(t.contains("asm-canary resume --state"), "{t}");
    assert_eq!(sim.revisions().await, vec!["asm-1-27"], "nothing changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guided_gate_failure_offers_rollback_and_rolling_back_exits_3() {
    let sim = TestSim::start("stale-proxies").await;
    let out = guided(
        &sim,
        &[("Approve step \"start\"", "y"), ("What now", "r")],
        &["--param", "verify_timeout=4s"],
    )
    .await;
    let t = transcript(&out);
    assert_eq!(out.status.code(), Some(3), "transcript:\n{t}");
    assert!(
        t.contains("step \"canary\" failed"),
        "the canary wave's gate: {t}"
    );
    assert!(t.contains("[r]ollback"), "{t}");
    assert!(t.contains("rolled back to asm-1-27"), "{t}");
    assert!(t.contains("(exit 3)"), "{t}");
    assert!(!t.contains("Approve step \"complete\""), "{t}");
    assert_eq!(sim.revisions().await, vec!["asm-1-27"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guided_halt_leaves_the_canary_paused_and_a_later_rollback_finishes_it() {
    let sim = TestSim::start("stale-proxies").await;
    let out = guided(
        &sim,
        &[("Approve step \"start\"", "y"), ("What now", "h")],
        &["--param", "verify_timeout=3s"],
    )
    .await;
    let t = transcript(&out);
    assert_eq!(out.status.code(), Some(4), "transcript:\n{t}");
    assert!(
        t.contains("halted: step \"canary\" failed"),
        "the canary wave's gate: {t}"
    );
    assert!(!t.contains("rolling back"), "{t}");
    // Halting changes nothing more: both control planes still run.
    assert_eq!(sim.revisions().await, vec!["asm-1-27", "asm-1-29"]);
    let state = sim.state_file();
    let s = state.to_str().unwrap();
    let out = sim.run(&["status", "--state", s, "--output", "json"]).await;
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    assert_eq!(doc["state"], "paused");
    assert_eq!(
        doc["next"]["command"],
        format!("asm-canary rollback --state {s}")
    );
    let out = sim
        .run(&["rollback", "--state", s, "--unattended", "--output", "json"])
        .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "a requested rollback exits 0: {}",
        common::stderr(&out)
    );
    assert_eq!(sim.revisions().await, vec!["asm-1-27"]);
}
