//! The canary upgrade against the simulator's `large` shape, at several sizes, each on fresh
//! simulators: the seed's runbook by hand with the real kubectl beside the `asm-canary` binary
//! at its defaults (their ratio, the binary's requests per Deployment and peak RSS; see
//! `bench/compare.rs`), then the upgrade with parallelism unbounded against the simulator's
//! own critical path.
//!
//! `cargo build --release && cargo run --release --example upgrade_bench [-- NAMESPACES...]`
//! (default 20 50 200; the `large` scenario is 200 namespaces × 10 Deployments × 5 replicas =
//! 10,000 pods). `--unbounded-only` skips the side-by-side part; `--tool-only` runs only the
//! binary at its defaults (wall time and peak RSS), `$ASM_CANARY_BIN` naming another build.
//!
//! The critical path is what no client could beat: the two ARM operations (start, complete)
//! plus the rollouts of every Deployment restarted at once, measured after the upgrade as one
//! wave of all of them restarted by a bare client that only patches each Deployment and
//! watches it roll out, in the same simulator. The soak is a policy wait, printed and also
//! excluded. The run (parallelism = all) still restarts in its gated waves (the canary, then
//! waves that double): its own plan's floor is those waves restarted one after the other by
//! the bare client, plus the two LROs and the policy waits (a wave soak after each wave, the
//! final soak); printed beside it.
//!
//! It runs with mimalloc, the allocator of the `asm-canary` binary.

#[path = "bench/compare.rs"]
mod compare;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use asm_canary::cli::connect::{Pace, connect_with_secret};
use asm_canary::cli::demo::sim_cluster_args;
use asm_canary::cli::request::load_runbook;
use asm_canary::k8s::{WorkloadKind, WorkloadRef};
use asm_canary_engine::{Event, Executor, FileStore, MemorySink, PreApproved, RunRequest};
use asm_canary_sim::SimOptions;
use serde_json::json;

/// A restart as the restart step makes it: read the workload, pick kubectl's stamp, patch.
async fn restart(
    kube: &kube::Client,
    w: &WorkloadRef,
) -> Result<asm_canary::k8s::RestartOutcome, String> {
    let current = asm_canary::k8s::rollout::get_workload(kube, w)
        .await
        .map_err(|e| e.to_string())?;
    let stamp = asm_canary::k8s::restart_stamp(&current, chrono::Local::now().fixed_offset())
        .ok_or_else(|| format!("{w} is paused"))?;
    asm_canary::k8s::rollout::patch_restart(kube, w, &stamp)
        .await
        .map_err(|e| e.to_string())
}

fn totals(h: &asm_canary_sim::SimHandle) -> (u64, u64) {
    let mut arm = 0;
    let mut kube = 0;
    for ((api, _), n) in h.shared.requests.totals() {
        match api.as_str() {
            "kube" => kube += n,
            "arm" => arm += n,
            _ => {}
        }
    }
    (arm, kube)
}

async fn one(namespaces: u32) {
    let (scenario, per_ns) = compare::large(namespaces);
    let deployments = u64::from(namespaces * per_ns);
    let lro = Duration::from_secs_f64(scenario.arm.lro_seconds * scenario.time_scale);
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    let mut opts = SimOptions::new(scenario);
    opts.ca_file = Some(ca_file.clone());
    let started = Instant::now();
    let sim = asm_canary_sim::start(opts).await.expect("sim");
    let boot = started.elapsed();
    let info = sim.info.clone();
    let cluster = sim_cluster_args(&info, &ca_file);
    let env = connect_with_secret(
        &cluster,
        Pace::Simulated,
        &info.tenant_id,
        &info.client_id,
        &info.client_secret,
    )
    .await
    .expect("connect")
    .env;

    // One Deployment's rollout, on its own: the floor of a wave.
    let probe = WorkloadRef::new(WorkloadKind::Deployment, "app-000", "svc-00");
    let t = Instant::now();
    let restarted = restart(&env.kube, &probe).await.expect("probe restart");
    asm_canary::k8s::wait_rollout(
        &env.kube,
        &probe,
        restarted.generation,
        Duration::from_secs(120),
        &mut |_| {},
    )
    .await
    .expect("probe rollout");
    let rollout = t.elapsed();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (arm0, kube0) = totals(&sim);
    let (report, wall, events) = run_unbounded(&env, dir.path(), deployments).await;
    let (arm1, kube1) = totals(&sim);
    // The same wave again with nothing but the restart and the watch, in the same conditions
    // (pods injected by the target revision): the simulator's own floor for restarting every
    // Deployment at once.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let all: Vec<WorkloadRef> = (0..namespaces)
        .flat_map(|i| {
            (0..per_ns).map(move |j| {
                WorkloadRef::new(
                    WorkloadKind::Deployment,
                    format!("app-{i:03}"),
                    format!("svc-{j:02}"),
                )
            })
        })
        .collect();
    let (wave_floor, failures) = bare_wave(&env.kube, &all).await;
    if !failures.is_empty() {
        // The bare wave can overload the simulator too (progress deadlines at 2,000
        // Deployments at once): say so rather than print a ratio against it.
        println!(
            "      bare wave: {} of {} rollouts failed in the simulator ({}); its time is a lower bound",
            failures.len(),
            all.len(),
            failures[0]
        );
    }

    let critical = lro * 2 + wave_floor.max(rollout);
    let soak = Duration::from_secs(1);
    // The run's own wave plan (the canary, then the growing waves), each wave restarted at
    // once by the bare client and waited for, one after the other; with the policy waits (a
    // wave soak after each, the final soak), the floor of this plan in this simulator.
    let waves = journaled_waves(&dir.path().join("run.json"));
    let plan_floor = bare_waves(&env.kube, &waves).await;
    let policy = soak * (waves.len() as u32 + 1);
    let plan_critical = lro * 2 + plan_floor + policy;
    println!(
        "{namespaces:>4} ns {deployments:>5} deploys | {:?} | wall {:>6.2}s | critical path {:>5.2}s (2 LROs {:.2}s + wave {:.2}s; one rollout alone {:.2}s), soak {:.0}s | wall/critical {:.2} (soak excluded {:.2}) | requests: ARM {} + kube {} = {:.1} per Deployment | sim boot {:.2}s",
        report.outcome,
        wall.as_secs_f64(),
        critical.as_secs_f64(),
        (lro * 2).as_secs_f64(),
        wave_floor.as_secs_f64(),
        rollout.as_secs_f64(),
        soak.as_secs_f64(),
        wall.as_secs_f64() / critical.as_secs_f64(),
        wall.saturating_sub(soak).as_secs_f64() / critical.as_secs_f64(),
        arm1 - arm0,
        kube1 - kube0,
        (kube1 - kube0 + arm1 - arm0) as f64 / deployments as f64,
        boot.as_secs_f64(),
    );
    println!(
        "      the run's own plan ({} waves, {}): bare waves {:.2}s + 2 LROs {:.2}s + policy waits {:.0}s = {:.2}s | wall ÷ that {:.2}",
        waves.len(),
        waves
            .iter()
            .map(|w| w.len().to_string())
            .collect::<Vec<_>>()
            .join("+"),
        plan_floor.as_secs_f64(),
        (lro * 2).as_secs_f64(),
        policy.as_secs_f64(),
        plan_critical.as_secs_f64(),
        wall.as_secs_f64() / plan_critical.as_secs_f64(),
    );
    print_where_the_time_went(&events.records());
    sim.shutdown().await;
}

/// The upgrade through the engine, every wave at once (parallelism = all Deployments), the
/// policy waits at their minimum: its report, wall time and events.
async fn run_unbounded(
    env: &Arc<asm_canary::steps::Env>,
    dir: &std::path::Path,
    deployments: u64,
) -> (asm_canary_engine::RunReport, Duration, Arc<MemorySink>) {
    let (runbook, registry) = load_runbook(None, env.clone()).expect("runbook");
    let events = Arc::new(MemorySink::new());
    let executor = Executor::new(runbook, registry, FileStore::new(dir.join("run.json")))
        .with_events(events.clone())
        .with_approver(Arc::new(PreApproved::new(["start", "complete"])));
    let mut params = serde_json::Map::new();
    for (k, v) in [
        ("soak", json!("1s")),
        ("wave_soak", json!("1s")),
        ("poll_interval", json!("200ms")),
        ("parallelism", json!(deployments.max(1))),
        ("rollout_timeout", json!("10m")),
        ("control_plane_timeout", json!("2m")),
        ("verify_timeout", json!("5m")),
    ] {
        params.insert(k.into(), v);
    }
    let t = Instant::now();
    let report = executor
        .run(RunRequest {
            target: env.cluster.to_string(),
            params,
            run_id: None,
        })
        .await
        .expect("run");
    let wall = t.elapsed();
    (report, wall, events)
}

/// Where the run's time went: each step from start to success, and inside restart the
/// planning before the first patch, the waves (first patch to the last workload rolled out)
/// and the gate after the last.
fn print_where_the_time_went(records: &[asm_canary_engine::EventRecord]) {
    let mut started_at = std::collections::BTreeMap::new();
    let mut line = Vec::new();
    for r in records {
        match &r.event {
            Event::StepStarted { step, .. } => {
                started_at.insert(step.clone(), r.ts);
            }
            Event::StepSucceeded { step, .. } | Event::StepSkipped { step, .. } => {
                if let Some(t0) = started_at.get(step) {
                    line.push(format!(
                        "{step} {:.2}s",
                        (r.ts - *t0).num_milliseconds() as f64 / 1000.0
                    ));
                }
            }
            _ => {}
        }
    }
    println!("      steps: {}", line.join(", "));
    for r in records {
        if let Event::StepFailed { step, error, .. } = &r.event {
            println!("      FAILED {step}: {error}");
        }
    }
    // Inside restart: planning before the first patch, the wave itself (first patch to the
    // last workload rolled out), and the gate after it.
    let ts_of = |pred: &dyn Fn(&Event) -> bool, last: bool| {
        let mut it = records.iter().filter(|r| pred(&r.event)).map(|r| r.ts);
        if last { it.last() } else { it.next() }
    };
    let step_start = ts_of(
        &|e| matches!(e, Event::StepStarted { step, .. } if step == "restart"),
        false,
    );
    // the first wave of the restart step itself (the canary's wave is its own step's)
    let first_patch = records
        .iter()
        .filter(|r| step_start.is_some_and(|t| r.ts >= t))
        .find(|r| {
            matches!(&r.event, Event::SideEffect { kind, done: false, .. } if kind == "restart-wave")
        })
        .map(|r| r.ts);
    let last_rolled = ts_of(
        &|e| matches!(e, Event::SideEffect { kind, done: true, .. } if kind == "restart-wave"),
        true,
    );
    let step_end = ts_of(
        &|e| matches!(e, Event::StepSucceeded { step, .. } if step == "restart"),
        false,
    );
    if let (Some(a), Some(b), Some(c), Some(d)) = (step_start, first_patch, last_rolled, step_end) {
        let s = |x: chrono::DateTime<chrono::Utc>, y: chrono::DateTime<chrono::Utc>| {
            (y - x).num_milliseconds() as f64 / 1000.0
        };
        println!(
            "      restart: planning {:.2}s, wave {:.2}s, gate {:.2}s",
            s(a, b),
            s(b, c),
            s(c, d)
        );
    }
}

/// Restarts `all` at once as a bare client would (patch, then watch each rollout): its wall
/// time, and the rollouts that failed.
async fn bare_wave(kube: &kube::Client, all: &[WorkloadRef]) -> (Duration, Vec<String>) {
    let t = Instant::now();
    let failures: Vec<String> = futures::future::join_all(all.iter().map(|w| {
        let kube = kube.clone();
        async move {
            let r = restart(&kube, w).await?;
            asm_canary::k8s::wait_rollout(
                &kube,
                w,
                r.generation,
                Duration::from_secs(600),
                &mut |_| {},
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
        }
    }))
    .await
    .into_iter()
    .filter_map(Result::err)
    .collect();
    (t.elapsed(), failures)
}

/// `waves` restarted by [`bare_wave`] one after the other: the sum of their times.
async fn bare_waves(kube: &kube::Client, waves: &[Vec<WorkloadRef>]) -> Duration {
    let mut total = Duration::ZERO;
    for wave in waves {
        tokio::time::sleep(Duration::from_millis(300)).await;
        total += bare_wave(kube, wave).await.0;
    }
    total
}

/// The workloads of each `restart-wave` entry of the checkpoint at `path`, in order.
fn journaled_waves(path: &std::path::Path) -> Vec<Vec<WorkloadRef>> {
    let text = std::fs::read_to_string(path).expect("the run's checkpoint");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("checkpoint JSON");
    let entries = doc["journal"].as_array().cloned().unwrap_or_default();
    entries
        .iter()
        .filter(|e| e["kind"] == "restart-wave")
        .map(|e| {
            e["details"]["workloads"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|w| {
                    let kind = match w["kind"].as_str()? {
                        "Deployment" => WorkloadKind::Deployment,
                        "StatefulSet" => WorkloadKind::StatefulSet,
                        "DaemonSet" => WorkloadKind::DaemonSet,
                        _ => return None,
                    };
                    Some(WorkloadRef::new(
                        kind,
                        w["namespace"].as_str()?,
                        w["name"].as_str()?,
                    ))
                })
                .collect()
        })
        .collect()
}

/// The seed's runbook by hand and the binary at its defaults, each on a fresh simulator.
async fn by_hand_and_defaults(namespaces: u32) {
    let (_, per_ns) = compare::large(namespaces);
    let deployments = u64::from(namespaces * per_ns);
    let dir = tempfile::tempdir().expect("tempdir");
    let (sim, _) = compare::fresh_sim(namespaces, dir.path()).await;
    let tool = compare::tool(&sim, dir.path()).await;
    sim.shutdown().await;

    let dir = tempfile::tempdir().expect("tempdir");
    let (sim, ca_file) = compare::fresh_sim(namespaces, dir.path()).await;
    let info = sim.info.clone();
    let env = connect_with_secret(
        &sim_cluster_args(&info, &ca_file),
        Pace::Simulated,
        &info.tenant_id,
        &info.client_id,
        &info.client_secret,
    )
    .await
    .expect("connect")
    .env;
    let names: Vec<String> = (0..namespaces).map(|i| format!("app-{i:03}")).collect();
    let revisions = (tool.source.as_str(), tool.target.as_str());
    let hand = compare::by_hand(&sim, &env, &ca_file, dir.path(), &names, revisions).await;
    sim.shutdown().await;
    if let Err(e) = &hand {
        println!("      by hand failed: {e}");
    }
    let hand = hand.ok().map(|d| d.as_secs_f64());
    let show = |x: Option<f64>, unit: &str| x.map_or("failed".into(), |x| format!("{x:.2}{unit}"));
    let ratio = hand.map(|h| h / tool.wall.as_secs_f64());
    println!(
        "{namespaces:>4} ns {deployments:>5} deploys | by hand (kubectl) {} | asm-canary at defaults {:.2}s (exit {}) | by hand ÷ asm-canary {} | requests {:.1} per Deployment | peak RSS {:.0} MiB",
        show(hand, "s"),
        tool.wall.as_secs_f64(),
        tool.exit,
        show(ratio, ""),
        tool.requests as f64 / deployments as f64,
        tool.peak_rss_mib,
    );
}

/// The binary at its defaults on a fresh simulator, alone.
async fn tool_only(namespaces: u32) {
    let (_, per_ns) = compare::large(namespaces);
    let deployments = u64::from(namespaces * per_ns);
    let dir = tempfile::tempdir().expect("tempdir");
    let (sim, _) = compare::fresh_sim(namespaces, dir.path()).await;
    let tool = compare::tool(&sim, dir.path()).await;
    sim.shutdown().await;
    println!(
        "{namespaces:>4} ns {deployments:>5} deploys | asm-canary at defaults {:.2}s (exit {}) | requests {:.1} per Deployment | peak RSS {:.0} MiB",
        tool.wall.as_secs_f64(),
        tool.exit,
        tool.requests as f64 / deployments as f64,
        tool.peak_rss_mib,
    );
    println!("      {}", compare::timeline(&tool.events));
}

#[tokio::main]
async fn main() {
    asm_canary::azure::ensure_ring_provider();
    let sizes: Vec<u32> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![20, 50, 200]
    } else {
        sizes
    };
    if std::env::args().any(|a| a == "--tool-only") {
        for n in sizes {
            tool_only(n).await;
        }
        return;
    }
    let side_by_side = !std::env::args().any(|a| a == "--unbounded-only");
    if side_by_side {
        println!("kubectl: {}", compare::kubectl_version());
    }
    for n in sizes {
        if side_by_side {
            by_hand_and_defaults(n).await;
        }
        one(n).await;
    }
}
