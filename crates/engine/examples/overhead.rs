//! Prints what the engine costs per step: a runbook of N no-op steps (each journals one side
//! effect and has a gate that passes at once), run against a real checkpoint file.
//!
//! `cargo run --release -p asm-canary-engine --example overhead -- 200`

use std::time::Instant;

use asm_canary_engine::*;
use async_trait::async_trait;
use serde_json::json;

struct Noop;

#[async_trait]
impl Action for Noop {
    async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
        let id = ctx
            .journal
            .intent("noop", &ctx.step, json!({"n": 1}))
            .await?;
        ctx.journal.done(id, None).await?;
        Ok(ActionOutcome::done(Outputs::new()))
    }
}

/// Journals 200 side effects from tasks, `width` at a time (like restarting workloads in waves).
struct Wave(usize);

#[async_trait]
impl Action for Wave {
    async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
        let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(self.0));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..200 {
            let journal = ctx.journal.clone();
            let permits = permits.clone();
            tasks.spawn(async move {
                let _p = permits
                    .acquire_owned()
                    .await
                    .map_err(|e| StepError::msg(e.to_string()))?;
                let id = journal
                    .intent("restart", &format!("w{i}"), json!({}))
                    .await?;
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                journal.done(id, None).await
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.map_err(|e| StepError::msg(format!("task: {e}")))??;
        }
        Ok(ActionOutcome::done(Outputs::new()))
    }
}

struct Pass;

#[async_trait]
impl Gate for Pass {
    async fn check(&self, _ctx: &mut GateCtx) -> Result<GateStatus, StepError> {
        Ok(GateStatus::passed())
    }
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let mut yaml = String::from("apiVersion: asm-canary.runbook/v1\nname: overhead\nsteps:\n");
    for i in 0..n {
        yaml.push_str(&format!(
            "  - id: s{i}\n    action: noop\n    gate: {{ check: pass, timeout: 1m }}\n"
        ));
    }
    let reg = Registry::new().action("noop", Noop).gate("pass", Pass);
    let t = Instant::now();
    let rb = Runbook::parse(&yaml, "overhead.yaml", &reg).expect("runbook");
    let parse = t.elapsed();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("run.json");
    let store = FileStore::new(&path);
    let t = Instant::now();
    let r = Executor::new(rb, reg, store)
        .run(RunRequest {
            target: "t".into(),
            ..Default::default()
        })
        .await
        .expect("run");
    let run = t.elapsed();
    assert_eq!(r.outcome, Outcome::Completed);
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    // Writes per step: acting, journal intent, journal done, action finished, gating, succeeded.
    let writes = n * 6 + 4;
    println!("steps: {n}");
    println!("parse+validate: {:.2} ms", parse.as_secs_f64() * 1e3);
    println!(
        "run: {:.1} ms total, {:.2} ms/step, ~{writes} checkpoint writes, {:.3} ms/write",
        run.as_secs_f64() * 1e3,
        run.as_secs_f64() * 1e3 / n as f64,
        run.as_secs_f64() * 1e3 / writes as f64
    );
    println!("final checkpoint: {size} bytes");

    // One step journaling 200 side effects (each "takes" 5 ms) from parallel tasks: concurrent
    // journal writes are group-committed.
    for width in [1usize, 8, 64] {
        let yaml = "apiVersion: asm-canary.runbook/v1\nname: wave\nsteps:\n  - id: wave\n    action: wave\n";
        let dir = tempfile::tempdir().expect("tempdir");
        let reg = Registry::new().action("wave", Wave(width));
        let rb = Runbook::parse(yaml, "wave.yaml", &reg).expect("runbook");
        let t = Instant::now();
        Executor::new(rb, reg, FileStore::new(dir.path().join("wave.json")))
            .run(RunRequest {
                target: "t".into(),
                ..Default::default()
            })
            .await
            .expect("run");
        let total = t.elapsed();
        println!(
            "200 journaled side effects, {width} at a time: {:.0} ms ({:.2} ms per side effect)",
            total.as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3 / 200.0
        );
    }
}
