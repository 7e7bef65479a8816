//! The read-only commands: `plan`, `status` and `proxy-status`. They change nothing.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use serde::Serialize;

use super::args::{ClusterArgs, OutputArg};
use super::connect::{Pace, connect};
use super::error::CliError;
use super::run::{UpgradeOptions, load_runbook};
use crate::istio::{Revision, choose_target};
use crate::steps::Env;
use crate::steps::cluster::{MeshState, classify, preflight_warnings};
use crate::steps::restart::{mesh_namespaces, plan_namespace, waves};
use crate::steps::tag::mode_of;

#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub upgrade: UpgradeOptions,
    #[arg(long, value_enum, default_value_t = OutputArg::Text)]
    pub output: OutputArg,
}

#[derive(Debug, Serialize)]
pub struct Plan {
    pub schema: &'static str,
    pub cluster: String,
    pub kubernetes_version: Option<String>,
    pub installed: Vec<String>,
    pub state: MeshState,
    pub verdict: String,
    pub source: Option<String>,
    pub target: Option<String>,
    pub target_reason: Option<String>,
    pub offered: Vec<String>,
    pub configmap: Option<String>,
    pub tag_move: Option<String>,
    pub waves: Vec<Wave>,
    pub gates: Vec<GateLine>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Wave {
    pub namespaces: Vec<NamespaceCount>,
    pub workloads: usize,
}

#[derive(Debug, Serialize)]
pub struct NamespaceCount {
    pub namespace: String,
    /// Workloads (Deployments, StatefulSets, DaemonSets) with pods not yet on the target.
    pub workloads: usize,
}

#[derive(Debug, Serialize)]
pub struct GateLine {
    pub step: String,
    pub gate: String,
    pub timeout: String,
    /// How long the gate's condition must hold (the soak), when it must.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stable_for: Option<String>,
    /// The step asks for approval before its action.
    pub approval: bool,
    /// What happens when the gate fails: `rollback` or `halt`.
    pub on_failure: String,
}

/// The plan document's schema (`plan --output json`).
pub const PLAN_SCHEMA: &str = "asm-canary.plan/1.0";

/// Builds the plan: preflight, the target, the waves and the gates. Reads only.
pub async fn build_plan(env: &Env, upgrade: &UpgradeOptions) -> Result<Plan, CliError> {
    let step = |e: asm_canary_engine::StepError| CliError::connect("cannot read the cluster", e);
    let doc = env
        .arm
        .get_cluster(&env.cluster)
        .await
        .map_err(|e| CliError::connect("cannot read the cluster", e))?;
    let installed = doc.revisions();
    let state = classify(&doc, upgrade.to.as_deref());
    let verdict = state.explain(&env.cluster.name);
    let mut warnings = preflight_warnings(env, &installed).await.map_err(step)?;
    let mut plan = Plan {
        schema: PLAN_SCHEMA,
        cluster: env.cluster.to_string(),
        kubernetes_version: doc.kubernetes_version().map(str::to_string),
        installed: installed.clone(),
        state: state.clone(),
        verdict,
        source: None,
        target: None,
        target_reason: None,
        offered: vec![],
        configmap: None,
        tag_move: None,
        waves: vec![],
        gates: vec![],
        warnings: vec![],
    };
    if !state.is_ready() {
        plan.warnings = warnings;
        return Ok(plan);
    }
    let source = installed[0].clone();
    let profile = env
        .arm
        .mesh_upgrade_profile(&env.cluster)
        .await
        .map_err(|e| CliError::connect("cannot read the cluster", e))?;
    plan.offered = profile.properties.upgrades.clone();
    let current: Revision = source
        .parse()
        .map_err(|e| CliError::connect(format!("installed revision {source:?}: {e}"), e))?;
    let requested = upgrade
        .to
        .as_deref()
        .map(str::parse::<Revision>)
        .transpose()
        .map_err(|e| CliError::bad(format!("--to: {e}")))?;
    let target = match choose_target(current, &plan.offered, requested) {
        Ok(t) => t.to_string(),
        Err(e) => {
            plan.source = Some(source);
            plan.verdict = e.to_string();
            plan.warnings = warnings;
            return Ok(plan);
        }
    };
    plan.target_reason = Some(if upgrade.to.is_some() {
        "requested with --to".into()
    } else {
        "the newest upgrade offered".into()
    });
    let from_cm = crate::istio::shared_configmap_name(&source);
    let to_cm = crate::istio::shared_configmap_name(&target);
    let cms = kube::Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(
        env.kube.clone(),
        "aks-istio-system",
    );
    let read = |name: String| {
        let cms = cms.clone();
        async move {
            cms.get_opt(&name).await.map_err(|e| {
                CliError::connect(format!("reading ConfigMap aks-istio-system/{name}: {e}"), e)
            })
        }
    };
    let (src_cm, dst_cm) = (read(from_cm.clone()).await?, read(to_cm.clone()).await?);
    plan.configmap = Some(match (&src_cm, &dst_cm) {
        (None, _) => format!("none to copy: {source} has no aks-istio-system/{from_cm}"),
        (Some(a), Some(b)) if a.data == b.data && a.binary_data == b.binary_data => {
            format!("aks-istio-system/{to_cm} already holds {from_cm}'s data; nothing to copy")
        }
        (Some(_), Some(_)) => {
            if upgrade.force {
                format!(
                    "aks-istio-system/{from_cm} → {to_cm} (overwrites a different {to_cm}: --force)"
                )
            } else {
                warnings.push(format!(
                    "aks-istio-system/{to_cm} exists with different data: copy-configmap will refuse to overwrite it; compare them, then delete it or pass --force"
                ));
                format!("aks-istio-system/{from_cm} → {to_cm} (refused: {to_cm} differs)")
            }
        }
        (Some(a), None) => format!(
            "aks-istio-system/{from_cm} → {to_cm} ({} key(s))",
            a.data.as_ref().map(|d| d.len()).unwrap_or(0)
                + a.binary_data.as_ref().map(|d| d.len()).unwrap_or(0)
        ),
    });
    let mode = mode_of(Some(upgrade.mode.clone())).map_err(|e| CliError::bad(e.to_string()))?;
    plan.tag_move = Some(match mode {
        crate::steps::tag::Mode::Tag => format!("tag {}: {source} → {target}", upgrade.tag),
        crate::steps::tag::Mode::Label => {
            format!("namespaces labelled istio.io/rev={source} → istio.io/rev={target}")
        }
    });
    let label_for = match mode {
        crate::steps::tag::Mode::Tag => upgrade.tag.clone(),
        crate::steps::tag::Mode::Label => source.clone(),
    };
    let nss = mesh_namespaces(env, crate::steps::tag::Mode::Tag, &label_for, &target)
        .await
        .map_err(step)?;
    for c in &upgrade.canary_namespaces {
        if !nss.contains(c) {
            warnings.push(format!(
                "--canary-namespaces {c}: not a namespace this run migrates (none labelled istio.io/rev={label_for})"
            ));
        }
    }
    for w in waves(&nss, &upgrade.canary_namespaces) {
        let mut wave = Wave {
            namespaces: vec![],
            workloads: 0,
        };
        for ns in w {
            let p = plan_namespace(env, &ns, &target).await.map_err(step)?;
            wave.workloads += p.workloads.len();
            wave.namespaces.push(NamespaceCount {
                namespace: ns,
                workloads: p.workloads.len(),
            });
            warnings.extend(
                p.unmovable
                    .into_iter()
                    .map(|u| format!("will not move {u}")),
            );
        }
        plan.waves.push(wave);
    }
    plan.source = Some(source);
    plan.target = Some(target);
    plan.warnings = warnings;
    Ok(plan)
}

pub fn render_plan(plan: &Plan) -> String {
    let mut s = String::new();
    let line = |s: &mut String, t: String| {
        s.push_str(&t);
        s.push('\n');
    };
    line(&mut s, format!("Cluster     {}", plan.cluster));
    line(
        &mut s,
        format!(
            "Installed   {} (Kubernetes {})",
            plan.installed.join(", "),
            plan.kubernetes_version.as_deref().unwrap_or("?")
        ),
    );
    line(&mut s, format!("Preflight   {}", plan.verdict));
    if let (Some(src), Some(tgt)) = (&plan.source, &plan.target) {
        line(
            &mut s,
            format!(
                "Upgrade     {src} → {tgt}: {} (offered: {})",
                plan.target_reason.as_deref().unwrap_or(""),
                plan.offered.join(", ")
            ),
        );
        if let Some(cm) = &plan.configmap {
            line(&mut s, format!("ConfigMap   {cm}"));
        }
        if let Some(t) = &plan.tag_move {
            line(&mut s, format!("Injection   {t}"));
        }
        if plan.waves.is_empty() {
            line(
                &mut s,
                "Waves       none: no namespace uses the tag; nothing to restart".to_string(),
            );
        }
        for (i, w) in plan.waves.iter().enumerate() {
            // hundreds of namespaces: the first few (`--output json` has all)
            let nss = crate::steps::first_few(
                w.namespaces
                    .iter()
                    .map(|n| format!("{} ({})", n.namespace, n.workloads)),
                8,
                "namespaces",
            );
            line(
                &mut s,
                format!(
                    "Wave {:<6} {} workload(s): {nss}",
                    format!("{}/{}", i + 1, plan.waves.len()),
                    w.workloads
                ),
            );
        }
        line(&mut s, "Steps and gates".to_string());
        for g in &plan.gates {
            let mut extra = vec![];
            if let Some(st) = &g.stable_for {
                extra.push(format!("stable for {st}"));
            }
            if g.approval {
                extra.push("asks approval first".to_string());
            }
            extra.push(format!("on failure: {}", g.on_failure));
            line(
                &mut s,
                format!(
                    "  {:<15} gate {:<22} timeout {:<5} {}",
                    g.step,
                    g.gate,
                    g.timeout,
                    extra.join(", ")
                ),
            );
        }
    } else {
        line(
            &mut s,
            "Nothing to do: see the preflight verdict above.".to_string(),
        );
    }
    for w in &plan.warnings {
        line(&mut s, format!("Warning     {w}"));
    }
    s
}

/// The plan with its gates: what `plan` prints and guided `upgrade` shows first.
pub async fn full_plan(
    env: &Arc<Env>,
    upgrade: &UpgradeOptions,
    params: &serde_json::Map<String, serde_json::Value>,
) -> Result<Plan, CliError> {
    let mut plan = build_plan(env, upgrade).await?;
    let (runbook, _) = load_runbook(None, env.clone())?;
    plan.gates = gate_lines(&runbook, params);
    Ok(plan)
}

/// Guided mode: the plan on stderr before the first prompt.
pub async fn show_plan(
    env: &Arc<Env>,
    upgrade: &UpgradeOptions,
    params: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), CliError> {
    let plan = full_plan(env, upgrade, params).await?;
    eprintln!("{}", render_plan(&plan));
    Ok(())
}

pub async fn plan(args: PlanArgs) -> Result<u8, CliError> {
    let PlanArgs {
        cluster,
        upgrade,
        output,
    } = args;
    let params = upgrade.params()?;
    let connected = connect(&cluster, Pace::Real).await?;
    let plan = full_plan(&connected.env, &upgrade, &params).await?;
    match output {
        OutputArg::Json => println!(
            "{}",
            serde_json::to_string_pretty(&plan)
                .map_err(|e| CliError::internal("cannot render JSON", e))?
        ),
        OutputArg::Text => print!("{}", render_plan(&plan)),
    }
    Ok(crate::contract::exit::OK)
}

fn gate_lines(
    runbook: &asm_canary_engine::Runbook,
    params: &serde_json::Map<String, serde_json::Value>,
) -> Vec<GateLine> {
    // A param given on the command line wins over the runbook's default.
    let show = |d: &asm_canary_engine::DurationSpec| match d {
        asm_canary_engine::DurationSpec::Fixed(d) => {
            asm_canary_engine::duration::format_duration(*d)
        }
        asm_canary_engine::DurationSpec::Param(p) => params
            .get(p)
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .or_else(|| {
                runbook
                    .params
                    .iter()
                    .find(|spec| spec.name == *p)
                    .and_then(|spec| spec.default.as_ref())
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| format!("${{params.{p}}}")),
    };
    runbook
        .steps
        .iter()
        .map(|s| GateLine {
            step: s.id.clone(),
            gate: s.gate.as_ref().map(|g| g.check.clone()).unwrap_or_default(),
            timeout: s
                .gate
                .as_ref()
                .map(|g| show(&g.timeout))
                .unwrap_or_default(),
            stable_for: s
                .gate
                .as_ref()
                .map(|g| show(&g.stable_for))
                .filter(|v| !v.is_empty() && v != "0s" && v != "0ms"),
            approval: matches!(s.approval, asm_canary_engine::ApprovalMode::Required),
            on_failure: s.on_failure.as_str().to_string(),
        })
        .collect()
}

#[derive(Debug, Clone, Args)]
pub struct ProxyStatusArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Ask only this revision's istiod (default: every installed revision).
    #[arg(long, value_name = "REV")]
    pub revision: Option<String>,
    /// Only proxies of this namespace.
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    #[arg(long, value_enum, default_value_t = OutputArg::Text)]
    pub output: OutputArg,
}

pub async fn proxy_status(args: ProxyStatusArgs) -> Result<u8, CliError> {
    let ProxyStatusArgs {
        cluster,
        revision,
        namespace,
        output,
    } = args;
    let env = connect(&cluster, Pace::Real).await?.env;
    let revisions = match revision {
        Some(r) => vec![r],
        None => env
            .arm
            .get_cluster(&env.cluster)
            .await
            .map_err(|e| CliError::connect("cannot read the cluster", e))?
            .revisions(),
    };
    let mut rows = Vec::new();
    for rev in &revisions {
        let mut r = crate::k8s::mesh::proxy_status(&env.kube, rev, namespace.as_deref())
            .await
            .map_err(|e| CliError::connect("cannot read the cluster", e))?;
        rows.append(&mut r);
    }
    match output {
        OutputArg::Json => println!(
            "{}",
            serde_json::to_string_pretty(&rows)
                .map_err(|e| CliError::internal("cannot render JSON", e))?
        ),
        OutputArg::Text => print!("{}", crate::istio::syncz::render_table(&rows)),
    }
    Ok(if rows.iter().all(|r| r.is_synced()) {
        crate::contract::exit::OK
    } else {
        crate::contract::exit::PAUSED
    })
}

#[derive(Debug, Clone, Copy, clap::ValueEnum, Default, PartialEq, Eq)]
pub enum ReportFormat {
    /// Markdown (what every run writes to `<state>.report.md`).
    #[default]
    Md,
    /// A standalone HTML page with the timeline as an inline SVG.
    Html,
    /// The timeline picture alone.
    Svg,
}

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// The checkpoint file of the run.
    #[arg(long, value_name = "FILE")]
    pub state: PathBuf,
    #[arg(long, value_enum, default_value_t = ReportFormat::Md)]
    pub format: ReportFormat,
    /// Write it to this file instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: Option<PathBuf>,
}

pub async fn report(args: ReportArgs) -> Result<u8, CliError> {
    let ReportArgs { state, format, out } = args;
    let cp = asm_canary_engine::read_checkpoint(&asm_canary_engine::FileStore::new(&state)).await?;
    let events = crate::report::read_events(&state, &cp.run_id);
    let t = crate::report::Timeline::build(cp, &events);
    let text = match format {
        ReportFormat::Md => crate::report::markdown(&t),
        ReportFormat::Html => crate::report::html(&t),
        ReportFormat::Svg => crate::report::svg(&t) + "\n",
    };
    match out {
        Some(path) => {
            std::fs::write(&path, text).map_err(|e| {
                CliError::bad(format!("--out {}: cannot write it: {e}", path.display()))
            })?;
            eprintln!("report: {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(crate::contract::exit::OK)
}
