//! Side by side on fresh simulators of the same shape: the seed's runbook done by hand with
//! the real kubectl, and the `asm-canary` binary at its defaults (policy waits — the soak — at
//! their minimum), with the binary's peak resident memory.
//!
//! By hand is what a person at a terminal does after reading the seed's article: the ARM
//! start (the request `az aks mesh upgrade start` sends; az itself is not on the machine),
//! `kubectl wait` for the new istiod, one `kubectl label` relabelling every meshed namespace,
//! then one namespace at a time `kubectl rollout restart deployment -n NS` and `kubectl
//! rollout status deployment -n NS`, then the ARM complete. kubectl is `$KUBECTL`, or
//! `kubectl` on PATH.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use asm_canary_sim::{Scenario, SimHandle, SimOptions};

/// The `large` scenario cut to `namespaces` namespaces; its Deployments per namespace.
pub fn large(namespaces: u32) -> (Scenario, u32) {
    let mut scenario = Scenario::builtin("large").expect("large scenario");
    let g = scenario
        .kube
        .generated
        .as_mut()
        .expect("large is generated");
    g.namespaces = namespaces;
    let per_ns = g.deployments_per_namespace;
    (scenario, per_ns)
}

/// A fresh simulator of `large(namespaces)`, its CA written into `dir`.
pub async fn fresh_sim(namespaces: u32, dir: &Path) -> (SimHandle, PathBuf) {
    let ca_file = dir.join("ca.pem");
    let mut opts = SimOptions::new(large(namespaces).0);
    opts.ca_file = Some(ca_file.clone());
    (asm_canary_sim::start(opts).await.expect("sim"), ca_file)
}

/// The `asm-canary` binary built next to this example (`cargo build --release` first), or
/// `$ASM_CANARY_BIN` (to compare two builds).
pub fn tool_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("ASM_CANARY_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("asm-canary"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --release` before the benchmark",
        bin.display()
    );
    bin
}

/// What the binary did at its defaults.
pub struct ToolRun {
    pub wall: Duration,
    pub exit: i32,
    pub source: String,
    pub target: String,
    /// Peak resident set of the binary, in MiB.
    pub peak_rss_mib: f64,
    pub requests: u64,
    /// The binary's JSON Lines events.
    pub events: Vec<serde_json::Value>,
}

/// Runs `asm-canary upgrade` unattended at its defaults against `sim`.
pub async fn tool(sim: &SimHandle, dir: &Path) -> ToolRun {
    let before = requests(sim);
    let state = dir.join("run.json");
    let mut cmd = tokio::process::Command::new(tool_binary());
    cmd.args(["upgrade", "--unattended", "--output", "json"])
        .args(["--approve", "start", "--approve", "complete"])
        // Policy waits (the soaks) at their minimum; everything else at its default.
        .args(["--param", "soak=1s", "--param", "wave_soak=1s"])
        .args(["--param", "poll_interval=200ms"])
        .arg("--state")
        .arg(&state)
        .envs(sim.info.env_lines());
    let (out, wall, peak_rss_mib) = measured(cmd).await;
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let last = events.last().cloned().unwrap_or_default();
    let field = |k: &str| last[k].as_str().unwrap_or("?").to_string();
    let exit = out.status.code().unwrap_or(-1);
    if exit != 0 {
        let err = String::from_utf8_lossy(&out.stderr);
        println!(
            "      asm-canary exited {exit}: {}",
            err.lines().last().unwrap_or("")
        );
    }
    ToolRun {
        wall,
        exit,
        source: field("source"),
        target: field("target"),
        peak_rss_mib,
        requests: requests(sim) - before,
        events,
    }
}

/// Each step's seconds from `step_started` to its end, and each wave's (`side_effect`
/// `restart-wave`, journaled to done), from a run's events.
pub fn timeline(events: &[serde_json::Value]) -> String {
    let ts = |e: &serde_json::Value| {
        e["ts"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    };
    let mut open: std::collections::HashMap<String, chrono::DateTime<chrono::FixedOffset>> =
        Default::default();
    let mut out = Vec::new();
    for e in events {
        let Some(at) = ts(e) else { continue };
        let key = match e["event"].as_str() {
            Some("step_started") => Some((e["step"].to_string(), true)),
            Some("step_succeeded" | "step_failed" | "step_skipped") => {
                Some((e["step"].to_string(), false))
            }
            Some("side_effect") if e["kind"] == "restart-wave" => {
                Some((format!("{} {}", e["kind"], e["target"]), e["done"] == false))
            }
            _ => None,
        };
        match key {
            Some((k, true)) => {
                open.insert(k, at);
            }
            Some((k, false)) => {
                if let Some(t0) = open.remove(&k) {
                    let secs = (at - t0).num_milliseconds() as f64 / 1000.0;
                    out.push(format!("{} {secs:.2}s", k.replace('"', "")));
                }
            }
            None => {}
        }
    }
    out.join(", ")
}

/// Runs `cmd` (stdout and stderr piped) to its end: its output, wall time and peak resident
/// set in MiB (`VmHWM`, sampled every 20 ms; the last reading before the exit is the peak).
pub async fn measured(cmd: tokio::process::Command) -> (std::process::Output, Duration, f64) {
    let (out, wall, rss, _) = measured_cpu(cmd).await;
    (out, wall, rss)
}

/// [`measured`], and the CPU seconds (user + system) the process had used at the last sample.
pub async fn measured_cpu(
    mut cmd: tokio::process::Command,
) -> (std::process::Output, Duration, f64, f64) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let t = Instant::now();
    let child = cmd.spawn().expect("run asm-canary");
    let pid = child.id().expect("pid");
    let mut output = tokio::spawn(child.wait_with_output());
    let mut peak_kib = 0u64;
    let mut cpu = 0.0f64;
    let out = loop {
        tokio::select! {
            done = &mut output => break done.expect("join").expect("wait"),
            _ = tokio::time::sleep(Duration::from_millis(20)) => {
                peak_kib = peak_kib.max(vm_hwm_kib(pid).unwrap_or(0));
                cpu = cpu_seconds(pid).unwrap_or(cpu);
            }
        }
    };
    (out, t.elapsed(), peak_kib as f64 / 1024.0, cpu)
}

/// utime + stime of `/proc/PID/stat`, in seconds (at 100 ticks per second, Linux's USER_HZ).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// `VmHWM` of `/proc/PID/status`, in KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// ARM and Kubernetes requests the simulator has answered.
pub fn requests(h: &SimHandle) -> u64 {
    h.shared
        .requests
        .totals()
        .into_iter()
        .filter(|((api, _), _)| api == "kube" || api == "arm")
        .map(|(_, n)| n)
        .sum()
}

fn kubectl() -> String {
    std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into())
}

/// `kubectl version --client`, first line.
pub fn kubectl_version() -> String {
    std::process::Command::new(kubectl())
        .args(["version", "--client"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_else(|| {
            format!(
                "{} not found: install kubectl (Debian: kubernetes-client)",
                kubectl()
            )
        })
}

/// The kubeconfig a person would get from `az aks get-credentials`.
fn kubeconfig(sim: &SimHandle, ca_file: &Path, dir: &Path) -> PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: sim\n  cluster:\n    server: {}\n    certificate-authority: {}\ncontexts:\n- name: sim\n  context: {{cluster: sim, user: sim}}\ncurrent-context: sim\nusers:\n- name: sim\n  user:\n    token: {}\n",
        sim.info.kube_server,
        ca_file.display(),
        sim.info.sim_token
    );
    std::fs::write(&path, text).expect("write kubeconfig");
    path
}

async fn run_kubectl(config: &Path, args: &[&str]) -> Result<(), String> {
    let out = tokio::process::Command::new(kubectl())
        .env("KUBECONFIG", config)
        .args(args)
        .output()
        .await
        .map_err(|e| format!("kubectl: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The seed's runbook by hand, from `source` to `target`, on `sim`; its wall time.
pub async fn by_hand(
    sim: &SimHandle,
    env: &asm_canary::steps::Env,
    ca_file: &Path,
    dir: &Path,
    namespaces: &[String],
    (source, target): (&str, &str),
) -> Result<Duration, String> {
    let config = kubeconfig(sim, ca_file, dir);
    let id = &env.cluster;
    let accept_any = |_: &asm_canary::azure::ClusterDoc| Ok(());
    let t = Instant::now();
    let both = [source.to_string(), target.to_string()];
    env.arm
        .set_revisions(id, &both, &accept_any)
        .await
        .map_err(|e| format!("ARM start: {e}"))?;
    let istiod = format!("deploy/istiod-{target}");
    run_kubectl(
        &config,
        &[
            "wait",
            "--for=condition=Available",
            &istiod,
            "-n",
            "aks-istio-system",
            "--timeout=600s",
        ],
    )
    .await?;
    let label = format!("istio.io/rev={target}");
    let mut args = vec!["label", "namespace"];
    args.extend(namespaces.iter().map(String::as_str));
    args.extend([label.as_str(), "--overwrite"]);
    run_kubectl(&config, &args).await?;
    for ns in namespaces {
        run_kubectl(&config, &["rollout", "restart", "deployment", "-n", ns]).await?;
        run_kubectl(
            &config,
            &[
                "rollout",
                "status",
                "deployment",
                "-n",
                ns,
                "--timeout=600s",
            ],
        )
        .await?;
    }
    env.arm
        .set_revisions(id, &[target.to_string()], &accept_any)
        .await
        .map_err(|e| format!("ARM complete: {e}"))?;
    Ok(t.elapsed())
}
