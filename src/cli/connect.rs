//! From cluster flags to the clients the steps use: the ARM client (credential chosen and
//! reported), the cluster id, and a Kubernetes client (from `--kubeconfig`, or from ARM's
//! listClusterUserCredential, trusting the extra CA when one is given).

use std::sync::Arc;
use std::time::Duration;

use super::args::{AuthArg, ClusterArgs};
use super::error::CliError;
use crate::azure::{
    ArmClient, ArmClientOptions, AuthMode, AuthSettings, ClusterId, CredentialChoice, PollOptions,
};
use crate::steps::Env;

/// How fast to poll ARM operations; the simulator runs on a scaled clock.
#[derive(Clone, Copy, Debug, Default)]
pub enum Pace {
    #[default]
    Real,
    Simulated,
}

pub struct Connected {
    pub env: Arc<Env>,
    pub credential: CredentialChoice,
}

fn auth_mode(a: AuthArg) -> AuthMode {
    match a {
        AuthArg::Auto => AuthMode::Auto,
        AuthArg::Cli => AuthMode::Cli,
        AuthArg::WorkloadIdentity => AuthMode::WorkloadIdentity,
        AuthArg::ManagedIdentity => AuthMode::ManagedIdentity,
        AuthArg::ClientSecret => AuthMode::ClientSecret,
        AuthArg::Pipelines => AuthMode::Pipelines,
    }
}

/// The cluster's ARM id from `--cluster-id` or the three parts.
pub fn cluster_id(args: &ClusterArgs) -> Result<ClusterId, CliError> {
    if let Some(id) = &args.cluster_id {
        return id
            .parse()
            .map_err(|e| CliError::bad_because(format!("--cluster-id: {e}"), e));
    }
    let missing: Vec<&str> = [
        ("--subscription", &args.subscription),
        ("--resource-group", &args.resource_group),
        ("--cluster", &args.cluster),
    ]
    .iter()
    .filter(|(_, v)| v.as_deref().is_none_or(str::is_empty))
    .map(|(n, _)| *n)
    .collect();
    if !missing.is_empty() {
        return Err(CliError::bad(format!(
            "which cluster? {} not given: pass them (or --cluster-id, or the ASM_CANARY_* environment variables; \
             `asm-canary sim serve --env-file F` writes them for the simulator)",
            missing.join(", ")
        )));
    }
    ClusterId::new(
        args.subscription.as_deref().unwrap_or_default(),
        args.resource_group.as_deref().unwrap_or_default(),
        args.cluster.as_deref().unwrap_or_default(),
    )
    .map_err(|e| CliError::bad_because(e.to_string(), e))
}

/// `--arm-endpoint`: HTTPS only, since every request carries a bearer token.
fn arm_endpoint(raw: &str) -> Result<String, CliError> {
    let url = reqwest::Url::parse(raw)
        .map_err(|e| CliError::bad_because(format!("--arm-endpoint {raw:?}: not a URL: {e}"), e))?;
    if url.scheme() != "https" {
        return Err(CliError::bad(format!(
            "--arm-endpoint {raw:?}: ARM is reached over https only (every request carries a bearer token, which {} would send in plain text); give the https:// endpoint of your cloud",
            url.scheme()
        )));
    }
    Ok(raw.trim_end_matches('/').to_string())
}

/// The shortest and longest `--arm-poll-interval`: shorter polls ARM back to back (and is
/// throttled), longer leaves an operation unobserved for longer than any takes.
const ARM_POLL_BOUNDS: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(600));

fn arm_poll_interval(raw: &str) -> Result<Duration, CliError> {
    let d = asm_canary_engine::duration::parse_duration(raw)
        .map_err(|e| CliError::bad_because(format!("--arm-poll-interval {raw:?}: {e}"), e))?;
    let (min, max) = ARM_POLL_BOUNDS;
    if d < min || d > max {
        return Err(CliError::bad(format!(
            "--arm-poll-interval {raw:?}: give a duration from 100ms to 10m (ARM's own Retry-After is usually 15s)"
        )));
    }
    Ok(d)
}

/// Builds the ARM and Kubernetes clients for `args`.
pub async fn connect(args: &ClusterArgs, pace: Pace) -> Result<Connected, CliError> {
    connect_inner(args, pace, None).await
}

/// As [`connect`], with a service principal given explicitly (the demo's own simulator).
pub async fn connect_with_secret(
    args: &ClusterArgs,
    pace: Pace,
    tenant: &str,
    client: &str,
    secret: &str,
) -> Result<Connected, CliError> {
    connect_inner(args, pace, Some((tenant, client, secret))).await
}

async fn connect_inner(
    args: &ClusterArgs,
    pace: Pace,
    secret: Option<(&str, &str, &str)>,
) -> Result<Connected, CliError> {
    let cluster = cluster_id(args)?;
    let azure = connect_azure(args, pace, secret)?;
    let env = azure.cluster(cluster).await?;
    Ok(Connected {
        env,
        credential: azure.credential,
    })
}

/// ARM reached and signed in to, ready to reach any cluster the credential may: one token
/// cache for a whole fleet.
pub struct Azure {
    pub arm: ArmClient,
    pub credential: CredentialChoice,
    args: ClusterArgs,
    ca_pem: Option<Vec<u8>>,
}

impl Azure {
    /// The clients for one cluster: this ARM client, and a Kubernetes client from
    /// `--kubeconfig` or from ARM's listClusterUserCredential.
    pub async fn cluster(&self, cluster: ClusterId) -> Result<Arc<Env>, CliError> {
        let kube = kube_client(
            &self.args,
            &self.arm,
            &cluster,
            self.ca_pem.as_deref(),
            &self.credential,
        )
        .await?;
        Ok(Arc::new(Env {
            arm: self.arm.clone(),
            cluster,
            kube,
            metrics: None,
        }))
    }
}

/// The ARM client for `args` (the cluster identity flags are not read), with the credential
/// chosen and said on stderr.
pub fn connect_azure(
    args: &ClusterArgs,
    pace: Pace,
    secret: Option<(&str, &str, &str)>,
) -> Result<Azure, CliError> {
    let ca_pem = match &args.ca_file {
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            CliError::bad_because(
                format!("--ca-file {}: cannot read it: {e}", path.display()),
                e,
            )
        })?),
        None => None,
    };
    let options = arm_options(args, pace)?;
    let mut auth = AuthSettings {
        mode: auth_mode(args.auth),
        authority_host: args.authority_host.clone(),
        ..Default::default()
    };
    if let Some((tenant, client, secret)) = secret {
        auth.tenant_id = Some(tenant.to_string());
        auth.client_id = Some(client.to_string());
        auth.client_secret = Some(secret.to_string());
    }
    let origin = args.ca_file.as_ref().map(|p| p.display().to_string());
    let extra = match (&origin, &ca_pem) {
        (Some(o), Some(pem)) => Some((o.as_str(), pem.as_slice())),
        _ => None,
    };
    let (arm, credential) =
        ArmClient::connect(options, &auth, extra, &crate::azure::auth::process_env)
            .map_err(|e| CliError::bad_because(e.to_string(), e))?;
    // Say which credential was used: with `--auth auto` a person must be able to tell.
    crate::say!(
        "asm-canary: Azure credential: {} ({})",
        credential.mode.as_str(),
        credential.reason
    );
    Ok(Azure {
        arm,
        credential,
        args: args.clone(),
        ca_pem,
    })
}

/// ARM's endpoint, polling and retry pace from the flags.
fn arm_options(args: &ClusterArgs, pace: Pace) -> Result<ArmClientOptions, CliError> {
    let mut options = ArmClientOptions {
        endpoint: arm_endpoint(&args.arm_endpoint)?,
        ..Default::default()
    };
    if let Pace::Simulated = pace {
        options.poll = PollOptions {
            default_interval: Duration::from_millis(200),
            min_interval: Duration::from_millis(50),
            max_interval: Duration::from_secs(2),
            timeout: Duration::from_secs(300),
        };
        options.retry.base_delay = Duration::from_millis(50);
        options.retry.max_delay = Duration::from_secs(2);
    }
    if let Some(raw) = &args.arm_poll_interval {
        let d = arm_poll_interval(raw)?;
        options.poll.default_interval = d;
        options.poll.min_interval = options.poll.min_interval.min(d);
        options.retry.base_delay = options.retry.base_delay.min(d);
    }
    Ok(options)
}

/// The Kubernetes client: from `--kubeconfig`, or from ARM's listClusterUserCredential.
async fn kube_client(
    args: &ClusterArgs,
    arm: &ArmClient,
    cluster: &ClusterId,
    ca_pem: Option<&[u8]>,
    credential: &CredentialChoice,
) -> Result<kube::Client, CliError> {
    match &args.kubeconfig {
        Some(path) => crate::k8s::client_from_kubeconfig(Some(path), ca_pem)
            .await
            .map_err(|e| CliError::bad_because(format!("--kubeconfig {}: {e}", path.display()), e)),
        None => {
            let bytes = arm.list_cluster_user_kubeconfig(cluster).await.map_err(|source| {
                // No such cluster (or resource group, or subscription): the flags are wrong,
                // and another kubeconfig would not help.
                if let crate::azure::ArmError::Api {
                    status: 404, code, ..
                } = &source
                {
                    return CliError::bad_because(
                        format!(
                            "{cluster} does not exist (ARM answered 404 {code}); check --subscription, --resource-group and --cluster (or --cluster-id), and their ASM_CANARY_* variables"
                        ),
                        source,
                    );
                }
                let e = source.to_string();
                let hint = match &source {
                    // Another credential would fail the same way: the message says the fix.
                    crate::azure::ArmError::Tls { .. } => String::new(),
                    crate::azure::ArmError::Token { .. } => format!(
                        "; signed in with --auth {} ({}); choose another with --auth cli|workload-identity|managed-identity|client-secret|pipelines (see README, \"Sign-in\")",
                        credential.mode.as_str(),
                        credential.reason
                    ),
                    _ => "; pass --kubeconfig to use your own".to_string(),
                };
                CliError::connect(
                    format!(
                        "cannot get a kubeconfig for {cluster} from ARM (listClusterUserCredential): {e}{hint}"
                    ),
                    source,
                )
            })?;
            crate::k8s::client_from_kubeconfig_bytes(&bytes, ca_pem)
                .await
                .map_err(|e| {
                    CliError::connect(format!("the kubeconfig ARM returned for {cluster}: {e}"), e)
                })
        }
    }
}
