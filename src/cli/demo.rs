//! `asm-canary demo`: starts the simulated AKS cluster in-process and runs the real canary
//! upgrade against it over HTTPS, exactly as against Azure (the same clients, the same
//! runbook), with the scenario's faults.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde_json::json;

use super::args::{AuthArg, ClusterArgs, OutputArg};
use super::connect::Pace;
use super::error::CliError;
use super::request::{Builtin, UpgradeOptions};
use super::run::{Mode, RunArgs, execute};

/// The range of the demo's analysis queries, on the simulator's clock.
const DEMO_WINDOW: &str = "10s";

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// A built-in scenario (healthy, stale-proxies, crashloop-istiod, arm-throttling,
    /// lro-failure, slow-rollout, stuck-rollout, legacy-labels, native-sidecars, large, bad-canary,
    /// slow-canary, patch-rolled) or a scenario YAML file. A scenario where AKS rolled a patch
    /// (patch-rolled) runs the patch restart instead of the upgrade. `fleet`: twelve simulated
    /// clusters upgraded in three rings by `fleet run` (`--state` is then the fleet checkpoint).
    #[arg(long, default_value = "healthy")]
    pub scenario: String,
    #[command(flatten)]
    pub upgrade: UpgradeOptions,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Gate timings that suit the simulator's scaled clock; `--soak`/`--param` still win. A patch
/// restart takes only the timings its runbook declares.
fn demo_params(
    upgrade: &UpgradeOptions,
    builtin: Builtin,
) -> Result<serde_json::Map<String, serde_json::Value>, CliError> {
    let mut params = timings();
    if builtin == Builtin::PatchRestart {
        params.remove("control_plane_timeout");
        if let Some(soak) = &upgrade.soak {
            params.insert("soak".into(), json!(soak));
        }
        return Ok(params);
    }
    for (k, v) in upgrade.params()? {
        params.insert(k, v);
    }
    Ok(params)
}

pub fn timings() -> serde_json::Map<String, serde_json::Value> {
    let mut params = serde_json::Map::new();
    params.insert("soak".into(), json!("2s"));
    params.insert("wave_soak".into(), json!("1s"));
    params.insert("poll_interval".into(), json!("250ms"));
    params.insert("control_plane_timeout".into(), json!("45s"));
    params.insert("rollout_timeout".into(), json!("60s"));
    params.insert("verify_timeout".into(), json!("30s"));
    // The analysis on the simulator's clock: Prometheus scrapes every second.
    params.insert("analysis_interval".into(), json!("2s"));
    params.insert("analysis_count".into(), json!(3));
    params.insert("analysis_window".into(), json!(DEMO_WINDOW));
    params.insert("analysis_timeout".into(), json!("60s"));
    params
}

pub async fn demo(args: DemoArgs) -> Result<u8, CliError> {
    let DemoArgs {
        scenario,
        upgrade,
        mut run,
    } = args;
    let scenario = asm_canary_sim::Scenario::load(&scenario)
        .map_err(|e| CliError::bad_because(e.to_string(), e))?;
    let dir = tempfile::tempdir()
        .map_err(|e| CliError::internal("cannot create a temporary directory", e))?;
    let ca_file = dir.path().join("sim-ca.pem");
    let mut opts = asm_canary_sim::SimOptions::new(scenario.clone());
    opts.ca_file = Some(ca_file.clone());
    let sim = asm_canary_sim::start(opts)
        .await
        .map_err(|e| CliError::internal("cannot start the simulated cluster", e))?;
    let info = sim.info.clone();
    // AKS rolled a patch in this scenario: the demo shows the patch restart.
    if !scenario.kube.rolled_patches.is_empty() && run.runbook.is_none() {
        run.builtin = Builtin::PatchRestart;
    }
    let text = run.output == OutputArg::Text;
    let say = move |line: String| {
        if text {
            crate::say!("{line}");
        }
    };
    say(format!(
        "asm-canary demo: simulated AKS cluster {} ({}), scenario {:?}: {}",
        info.cluster, info.location, scenario.name, scenario.description
    ));
    say(format!(
        "  ARM {}  Kubernetes {}  (CA {})",
        info.arm_endpoint,
        info.kube_server,
        ca_file.display()
    ));
    let _prometheus = local_prometheus(&mut run, &info.metrics_url).await;
    // The demo talks to the simulator as any client would: a service principal, the
    // simulator's CA as an extra trusted root, the kubeconfig from listClusterUserCredential.
    let cluster = sim_cluster_args(&info, &ca_file);
    let connected = super::connect::connect_with_secret(
        &cluster,
        Pace::Simulated,
        &info.tenant_id,
        &info.client_id,
        &info.client_secret,
    )
    .await?;
    if !super::run::interactive(&run) && run.approve.is_empty() && run.builtin == Builtin::Upgrade {
        // A rehearsal has no one to approve: approve the gated steps, say so.
        run.approve = vec!["start".into(), "complete".into()];
        say("  unattended: approving start and complete in advance".to_string());
    }
    let env = connected.env.clone();
    let location = run
        .checkpoint
        .locate(&env, Some(PathBuf::from(dir.path()).join("demo-run.json")));
    let params = demo_params(&upgrade, run.builtin)?;
    if run.builtin == Builtin::PatchRestart {
        say(format!(
            "  AKS rolled a patch: running the patch restart ({})",
            Builtin::PatchRestart.source().1
        ));
        let plan = super::day2::day2_plan(&connected.env, &run, &params).await?;
        say(crate::steps::day2::render(&plan, super::plan::render_gate));
    } else {
        super::validate::refuse_unknown_canaries(&connected.env, &upgrade).await?;
        if super::run::interactive(&run) {
            super::plan::show_plan(&connected.env, &upgrade, &params, run.runbook.as_deref())
                .await?;
        }
    }
    let code = execute(connected.env, &run, Mode::Run(params), location).await?;

    if let Some(line) = cluster_now(&env).await {
        say(line);
    }
    if run.checkpoint.state.is_none() {
        // on stderr in every output mode: the report's path was just printed there
        crate::say!(
            "(the checkpoint and its report were in a temporary directory, removed now; keep them with --state FILE, then try asm-canary status/report --state FILE)"
        );
    }
    sim.shutdown().await;
    Ok(code)
}

/// The analysis gate judges the simulator's traffic on a local Prometheus when there is one
/// (and no `--prometheus` was given): started, and set as the run's Prometheus.
async fn local_prometheus(
    run: &mut RunArgs,
    metrics_url: &str,
) -> Option<crate::analysis::local::LocalPrometheus> {
    let text = run.output == OutputArg::Text;
    let say = |line: String| {
        if text {
            crate::say!("{line}");
        }
    };
    if run.prometheus.prometheus.is_some() {
        return None;
    }
    if crate::analysis::local::find_on_path("prometheus").is_none() {
        say("  no prometheus on PATH (install the `prometheus` package, or give --prometheus URL): the analysis gate is off".to_string());
        return None;
    }
    match crate::analysis::local::LocalPrometheus::start(metrics_url).await {
        Ok(p) => {
            say(format!(
                "  Prometheus {} scraping the sidecars' metrics at {metrics_url} every second",
                p.url
            ));
            // Its first scrapes, so that the first wave is not judged on "no data".
            let first = format!(
                "sum(rate(istio_requests_total{{reporter=\"destination\"}}[{DEMO_WINDOW}]))"
            );
            if let Err(e) = p.wait_for_data(&first, Duration::from_secs(30)).await {
                say(format!("  warning: {e}"));
            }
            run.prometheus.prometheus = Some(p.url.clone());
            Some(p)
        }
        Err(e) => {
            say(format!(
                "  cannot start a local Prometheus ({e}): the analysis gate is off"
            ));
            None
        }
    }
}

/// The cluster flags of the simulator `info` describes, with its CA trusted (the demo, and the
/// benchmarks that drive the simulator as the demo does).
pub fn sim_cluster_args(
    info: &asm_canary_sim::ConnectionInfo,
    ca_file: &std::path::Path,
) -> ClusterArgs {
    ClusterArgs {
        subscription: Some(info.subscription.clone()),
        resource_group: Some(info.resource_group.clone()),
        cluster: Some(info.cluster.clone()),
        cluster_id: None,
        arm_endpoint: info.arm_endpoint.clone(),
        authority_host: Some(info.authority_host.clone()),
        ca_file: Some(ca_file.to_path_buf()),
        auth: AuthArg::ClientSecret,
        arm_poll_interval: None,
        kubeconfig: None,
    }
}

/// What the cluster says after the run, read back over the same APIs: its revisions and the
/// application pods per revision.
async fn cluster_now(env: &crate::steps::Env) -> Option<String> {
    let doc = env.arm.get_cluster(&env.cluster).await.ok()?;
    let pods = crate::k8s::pods::list_pods(&env.kube, None, None)
        .await
        .unwrap_or_default();
    let mut by_rev: BTreeMap<String, usize> = BTreeMap::new();
    for p in &pods {
        let ns = p.namespace.as_str();
        if ns.starts_with("aks-istio-") || ns == "kube-system" {
            continue;
        }
        let rev = p.revision.revision().unwrap_or("no sidecar").to_string();
        *by_rev.entry(rev).or_default() += 1;
    }
    let pods_line = by_rev
        .iter()
        .map(|(r, n)| format!("{n} on {r}"))
        .collect::<Vec<_>>()
        .join(", ");
    Some(format!(
        "cluster now: revisions [{}], application pods: {}",
        doc.revisions().join(", "),
        if pods_line.is_empty() {
            "none".to_string()
        } else {
            pods_line
        }
    ))
}
