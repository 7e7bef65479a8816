//! `fleet run` over many simulated healthy clusters at once, beside the same upgrade of one
//! cluster alone: the fleet's wall time against the slowest single-cluster upgrade (target
//! ≤ 1.3×), and the `asm-canary` binary's peak resident memory (target < 300 MB).
//!
//! `cargo build --release --bins --examples && ./target/release/examples/fleet_bench [CLUSTERS] [SINGLES]`
//! (default 50 clusters, `max_concurrency` = all of them; 3 single-cluster upgrades, each on
//! a fresh one-cluster fleet). Policy waits (the soaks) are at their minimum, as in
//! `upgrade_bench`. The simulated fleet runs in this process, the binary in its own.

// Shared with upgrade_bench: this benchmark uses only its measuring part.
#[allow(dead_code)]
#[path = "bench/compare.rs"]
mod compare;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::Path;
use std::time::Duration;

use asm_canary_sim::{FleetHandle, FleetOptions, FleetScenario};

/// The runbook params of every run: the soaks at their minimum, the rest at defaults.
const PARAMS: &[(&str, &str)] = &[
    ("soak", "1s"),
    ("wave_soak", "1s"),
    ("poll_interval", "200ms"),
];

async fn fleet(n: usize, dir: &Path) -> FleetHandle {
    let mut opts = FleetOptions::new(FleetScenario::healthy(n));
    opts.ca_file = Some(dir.join("ca.pem"));
    asm_canary_sim::start_fleet(opts).await.expect("fleet")
}

fn command(fleet: &FleetHandle, dir: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(compare::tool_binary());
    cmd.envs(fleet.info.env_lines())
        .env("ASM_CANARY_CA_FILE", dir.join("ca.pem"))
        .env("ASM_CANARY_AUTH", "client-secret")
        .env_remove("ASM_CANARY_LOG");
    cmd
}

/// One cluster upgraded alone, as `upgrade --state-backend kubernetes` does it.
async fn single() -> (Duration, i32) {
    let dir = tempfile::tempdir().expect("tempdir");
    let fleet = fleet(1, dir.path()).await;
    let mut cmd = command(&fleet, dir.path());
    cmd.args([
        "upgrade",
        "--unattended",
        "--output",
        "json",
        "--state-backend",
        "kubernetes",
    ])
    .args(["--approve", "start", "--approve", "complete"])
    .args(["--cluster-id", &fleet.info.members[0].cluster_id]);
    for (k, v) in PARAMS {
        cmd.args(["--param", &format!("{k}={v}")]);
    }
    let (out, wall, _) = compare::measured(cmd).await;
    fleet.shutdown().await;
    (wall, out.status.code().unwrap_or(-1))
}

/// The whole fleet in one stage, every cluster at once.
async fn whole_fleet(n: usize) -> (Duration, i32, f64, Option<f64>, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let fleet = fleet(n, dir.path()).await;
    let params: Vec<String> = PARAMS.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let file = dir.path().join("fleet.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: asm-canary.fleet/1\nclusters:\n  - subscription: {}\nstages:\n  - name: prod\n    selector: {{tags: {{asm-canary/ring: prod}}}}\n    max_concurrency: \"100%\"\nupgrade:\n  params: {{{}}}\n",
            fleet.info.subscriptions[0],
            params.join(", ")
        ),
    )
    .expect("fleet file");
    let state = dir.path().join("fleet-run.json");
    let mut cmd = command(&fleet, dir.path());
    cmd.args([
        "fleet",
        "run",
        "--unattended",
        "--output",
        "json",
        "--fleet",
    ])
    .arg(&file)
    .arg("--state")
    .arg(&state);
    let (out, wall, rss, cpu) = compare::measured_cpu(cmd).await;
    let code = out.status.code().unwrap_or(-1);
    if code != 0 {
        let err = String::from_utf8_lossy(&out.stderr);
        println!(
            "  fleet run exited {code}: {}",
            err.lines().last().unwrap_or("")
        );
    }
    let slowest_inside = slowest_in_state(&state);
    fleet.shutdown().await;
    (wall, code, rss, slowest_inside, cpu)
}

/// The longest cluster upgrade inside the fleet run, from its checkpoint (seconds).
fn slowest_in_state(state: &Path) -> Option<f64> {
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(state).ok()?).ok()?;
    doc["clusters"]
        .as_array()?
        .iter()
        .filter_map(|c| {
            let t = |k: &str| c[k].as_str()?.parse::<chrono::DateTime<chrono::Utc>>().ok();
            Some((t("finished_at")? - t("started_at")?).as_seconds_f64())
        })
        .reduce(f64::max)
}

#[tokio::main]
async fn main() {
    asm_canary::azure::ensure_ring_provider();
    let mut args = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<usize>().ok());
    let clusters = args.next().unwrap_or(50);
    let singles = args.next().unwrap_or(3).max(1);
    let mut slowest = Duration::ZERO;
    for i in 1..=singles {
        let (wall, code) = single().await;
        println!(
            "single cluster #{i}: {:.2}s (exit {code})",
            wall.as_secs_f64()
        );
        slowest = slowest.max(wall);
    }
    let own_before = compare::cpu_seconds(std::process::id()).unwrap_or(0.0);
    let (wall, code, rss, inside, cpu) = whole_fleet(clusters).await;
    let own = compare::cpu_seconds(std::process::id()).unwrap_or(0.0) - own_before;
    println!(
        "{clusters} clusters, max_concurrency {clusters}: fleet wall {:.2}s (exit {code}) | slowest single-cluster upgrade alone {:.2}s | fleet ÷ slowest single {:.2} (target ≤ 1.3) | slowest cluster inside the fleet {} | peak RSS {rss:.0} MiB (target < 300 MB)",
        wall.as_secs_f64(),
        slowest.as_secs_f64(),
        wall.as_secs_f64() / slowest.as_secs_f64(),
        inside.map_or("?".into(), |s| format!("{s:.2}s")),
    );
    println!(
        "  CPU during the fleet run: asm-canary {cpu:.1}s, the simulated fleet (this process) {own:.1}s, on {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
}
