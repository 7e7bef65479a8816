//! `asm-canary demo --scenario fleet`: starts the simulated fleet in-process (one ARM endpoint,
//! a Kubernetes API per cluster) and runs `fleet run` over it with a fleet file of three rings,
//! exactly as against Azure: ARM's paged list, each cluster's kubeconfig from ARM, each
//! cluster's checkpoint in its ConfigMap.

use std::path::Path;

use super::args::{AuthArg, ClusterArgs, OutputArg};
use super::connect::Pace;
use super::demo::DemoArgs;
use super::error::CliError;
use super::fleet_run::{FleetRunArgs, read_state, run_fleet};

/// The demo's fleet file: three rings by tag, a soak and an approval after the canary ring,
/// two clusters at once in the early ring, half the prod ring at once.
fn demo_fleet_file(subscriptions: &[String]) -> String {
    let sources: String = subscriptions
        .iter()
        .map(|s| format!("  - subscription: {s}\n"))
        .collect();
    format!(
        "apiVersion: asm-canary.fleet/1
clusters:
{sources}stages:
  - name: canary
    selector: {{tags: {{asm-canary/ring: canary}}}}
    after: {{soak: 2s, approval: true}}
  - name: early
    selector: {{tags: {{asm-canary/ring: early}}}}
    max_concurrency: 2
    after: {{soak: 2s}}
    upgrade:
      params: {{control_plane_timeout: 10s}}
  - name: prod
    selector: {{tags: {{asm-canary/ring: prod}}}}
    max_concurrency: \"50%\"
upgrade:
  target: newest
  approve: [start, complete]
"
    )
}

pub async fn demo_fleet(args: DemoArgs) -> Result<u8, CliError> {
    let DemoArgs { scenario, run, .. } = args;
    let text = run.output == OutputArg::Text;
    let say = |line: String| {
        if text {
            crate::say!("{line}");
        }
    };
    let fleet = asm_canary_sim::FleetScenario::builtin(&scenario)
        .map_err(|e| CliError::bad_because(e.to_string(), e))?;
    let dir = tempfile::tempdir()
        .map_err(|e| CliError::internal("cannot create a temporary directory", e))?;
    let ca_file = dir.path().join("sim-ca.pem");
    let mut opts = asm_canary_sim::FleetOptions::new(fleet.clone());
    opts.ca_file = Some(ca_file.clone());
    let sim = asm_canary_sim::start_fleet(opts)
        .await
        .map_err(|e| CliError::internal("cannot start the simulated fleet", e))?;
    let info = sim.info.clone();
    say(format!(
        "asm-canary demo: a simulated fleet, scenario {:?}: {}\n  ARM {}  (CA {})\n{}",
        fleet.name,
        fleet.description,
        info.arm_endpoint,
        ca_file.display(),
        info.member_table()
    ));
    let fleet_file = dir.path().join("fleet.yaml");
    std::fs::write(&fleet_file, demo_fleet_file(&info.subscriptions))
        .map_err(|e| CliError::internal("cannot write the demo's fleet file", e))?;
    let state = (run.checkpoint.state.clone()).unwrap_or_else(|| dir.path().join("fleet-run.json"));
    let mut approve: Vec<String> = run.approve.clone();
    if approve.is_empty() && !super::run::interactive(&run) {
        approve.push("stage:canary".into());
        say(
            "  unattended: approving the stage after canary in advance (--approve stage:canary)"
                .into(),
        );
    }
    let azure_args = sim_fleet_args(&info, &ca_file);
    let secret = (
        info.tenant_id.clone(),
        info.client_id.clone(),
        info.client_secret.clone(),
    );
    let flags = azure_args.clone();
    let connect = move || {
        let (t, c, s) = &secret;
        super::connect::connect_azure(&flags, Pace::Simulated, Some((t, c, s)))
    };
    let args = FleetRunArgs {
        fleet: fleet_file,
        state: state.clone(),
        approve,
        unattended: run.unattended,
        output: run.output,
        lock_duration: run.lock_duration,
        azure: azure_args,
    };
    let code = run_fleet(args, connect, super::demo::timings()).await?;
    if text {
        show_status(&state);
    }
    if run.checkpoint.state.is_none() {
        // on stderr in every output mode: the report's path was just printed there
        crate::say!(
            "(the fleet checkpoint and its report were in a temporary directory, removed now; keep them with --state FILE, then try asm-canary fleet status --state FILE)"
        );
    }
    sim.shutdown().await;
    Ok(code)
}

fn show_status(state: &Path) {
    if let Ok(Some(s)) = read_state(state) {
        let doc = super::fleet_view::status_doc(&s, state);
        crate::say_part!("\n{}", super::fleet_view::render_status(&doc));
    }
}

/// The flags that reach the simulated fleet's ARM with its CA trusted.
fn sim_fleet_args(info: &asm_canary_sim::FleetConnectionInfo, ca_file: &Path) -> ClusterArgs {
    ClusterArgs {
        arm_endpoint: info.arm_endpoint.clone(),
        authority_host: Some(info.authority_host.clone()),
        ca_file: Some(ca_file.to_path_buf()),
        auth: AuthArg::ClientSecret,
        ..ClusterArgs::default()
    }
}
