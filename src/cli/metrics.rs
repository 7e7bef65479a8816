//! `--prometheus URL` and its auth options: the analysis gate's metrics source, attached to
//! the steps' [`Env`] before a run; without it the gate is off and the run says so first.

use std::sync::Arc;

use clap::{Args, ValueEnum};

use super::error::CliError;
use crate::analysis::{MetricSource, PrometheusAuth, PrometheusClient};
use crate::steps::Env;

/// How the analysis gate authenticates to Prometheus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PrometheusAuthArg {
    /// `azure-monitor` for an Azure Monitor workspace (`*.prometheus.monitor.azure.com`),
    /// `bearer` when ASM_CANARY_PROMETHEUS_TOKEN is set, `basic` with --prometheus-user,
    /// else `none`.
    Auto,
    None,
    /// `Authorization: Bearer` with ASM_CANARY_PROMETHEUS_TOKEN.
    Bearer,
    /// Basic auth: --prometheus-user and ASM_CANARY_PROMETHEUS_PASSWORD.
    Basic,
    /// An Entra token for https://prometheus.monitor.azure.com/.default from the --auth chain.
    AzureMonitor,
}

/// The analysis gate's Prometheus.
#[derive(Debug, Clone, Default, Args)]
pub struct PrometheusArgs {
    /// The analysis gate's Prometheus HTTP API (any Prometheus, or an Azure Monitor
    /// workspace's query endpoint). Without it the analysis gate is off. `demo` starts a
    /// local `prometheus` when one is on PATH.
    #[arg(long, value_name = "URL", env = "ASM_CANARY_PROMETHEUS")]
    pub prometheus: Option<String>,
    /// How to authenticate to --prometheus (secrets only from the environment).
    #[arg(long, value_enum, value_name = "MODE")]
    pub prometheus_auth: Option<PrometheusAuthArg>,
    /// The user for `--prometheus-auth basic` (password: ASM_CANARY_PROMETHEUS_PASSWORD).
    #[arg(long, value_name = "USER", env = "ASM_CANARY_PROMETHEUS_USER")]
    pub prometheus_user: Option<String>,
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The provider's auth for `args` (`env` reads the environment).
pub fn prometheus_auth(
    url: &str,
    args: &PrometheusArgs,
    env: &Env,
    read: &dyn Fn(&str) -> Option<String>,
) -> Result<PrometheusAuth, CliError> {
    let token = read("ASM_CANARY_PROMETHEUS_TOKEN");
    let host = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    let mode = match args.prometheus_auth.unwrap_or(PrometheusAuthArg::Auto) {
        PrometheusAuthArg::Auto if host.ends_with(".prometheus.monitor.azure.com") => {
            PrometheusAuthArg::AzureMonitor
        }
        PrometheusAuthArg::Auto if token.is_some() => PrometheusAuthArg::Bearer,
        PrometheusAuthArg::Auto if args.prometheus_user.is_some() => PrometheusAuthArg::Basic,
        PrometheusAuthArg::Auto => PrometheusAuthArg::None,
        other => other,
    };
    Ok(match mode {
        PrometheusAuthArg::Auto | PrometheusAuthArg::None => PrometheusAuth::None,
        PrometheusAuthArg::Bearer => PrometheusAuth::Bearer(token.ok_or_else(|| {
            CliError::bad("--prometheus-auth bearer: set ASM_CANARY_PROMETHEUS_TOKEN")
        })?),
        PrometheusAuthArg::Basic => PrometheusAuth::Basic {
            user: args
                .prometheus_user
                .clone()
                .ok_or_else(|| CliError::bad("--prometheus-auth basic: give --prometheus-user"))?,
            password: read("ASM_CANARY_PROMETHEUS_PASSWORD").ok_or_else(|| {
                CliError::bad("--prometheus-auth basic: set ASM_CANARY_PROMETHEUS_PASSWORD")
            })?,
        },
        PrometheusAuthArg::AzureMonitor => PrometheusAuth::AzureMonitor(env.arm.credential()),
    })
}

/// `env` with the analysis gate's metrics source from `args` (or without, when no
/// `--prometheus`), and the line saying whether the gate is on.
pub fn attach_metrics(
    env: Arc<Env>,
    args: &PrometheusArgs,
) -> Result<(Arc<Env>, String), CliError> {
    let Some(url) = args.prometheus.as_deref().filter(|u| !u.is_empty()) else {
        return Ok((env, crate::steps::analysis::GATE_OFF.to_string()));
    };
    let auth = prometheus_auth(url, args, &env, &env_var)?;
    let client = PrometheusClient::new(url, auth, env.arm.http())
        .map_err(|e| CliError::bad_because(format!("--prometheus: {e}"), e))?;
    let line = format!(
        "analysis gate on: Prometheus {} (success rate ≥ 99%, p99 ≤ 500 ms per restarted workload)",
        client.describe()
    );
    let source: Arc<dyn MetricSource> = Arc::new(client);
    let env = Arc::new(Env {
        arm: env.arm.clone(),
        cluster: env.cluster.clone(),
        kube: env.kube.clone(),
        metrics: Some(source),
    });
    Ok((env, line))
}
