//! Reusable flag groups (the cluster flags, output) and their validation into a
//! [`ClusterTarget`]: raw arguments first, then a checked configuration.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

/// The cluster flags every command that reaches a cluster takes. Each reads an environment
/// variable too; `asm-canary sim serve` writes exactly these names.
#[derive(Debug, Clone, Args, Default)]
pub struct ClusterArgs {
    /// Subscription id of the AKS cluster.
    #[arg(long, env = "ASM_CANARY_SUBSCRIPTION", help_heading = "Cluster")]
    pub subscription: Option<String>,
    /// Resource group of the AKS cluster.
    #[arg(long, env = "ASM_CANARY_RESOURCE_GROUP", help_heading = "Cluster")]
    pub resource_group: Option<String>,
    /// Name of the AKS cluster.
    #[arg(long, env = "ASM_CANARY_CLUSTER", help_heading = "Cluster")]
    pub cluster: Option<String>,
    /// Full ARM id of the cluster, instead of the three flags above.
    #[arg(long, env = "ASM_CANARY_CLUSTER_ID", help_heading = "Cluster",
          conflicts_with_all = ["subscription", "resource_group", "cluster"])]
    pub cluster_id: Option<String>,
    /// ARM endpoint (sovereign clouds, the simulator).
    #[arg(
        long,
        env = "ASM_CANARY_ARM_ENDPOINT",
        default_value = "https://management.azure.com",
        help_heading = "Cluster"
    )]
    pub arm_endpoint: String,
    /// Entra ID authority host.
    #[arg(long, env = "AZURE_AUTHORITY_HOST", help_heading = "Cluster")]
    pub authority_host: Option<String>,
    /// An extra CA certificate (PEM) to trust for ARM, Entra ID and the Kubernetes API.
    #[arg(long, env = "ASM_CANARY_CA_FILE", help_heading = "Cluster")]
    pub ca_file: Option<PathBuf>,
    /// How to authenticate to Azure.
    #[arg(long, env = "ASM_CANARY_AUTH", value_enum, default_value_t = AuthArg::Auto,
          help_heading = "Cluster")]
    pub auth: AuthArg,
    /// How often to poll an ARM operation when ARM sends no Retry-After (e.g. 15s, 500ms).
    #[arg(
        long,
        env = "ASM_CANARY_ARM_POLL_INTERVAL",
        value_name = "DURATION",
        help_heading = "Cluster"
    )]
    pub arm_poll_interval: Option<String>,
    /// Kubeconfig to use instead of fetching the cluster user credential from ARM.
    #[arg(long, env = "ASM_CANARY_KUBECONFIG", help_heading = "Cluster")]
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum, Default, PartialEq, Eq)]
pub enum AuthArg {
    /// Pick by environment and say which was used.
    #[default]
    Auto,
    /// The Azure CLI's logged-in account.
    Cli,
    /// Workload identity (AZURE_FEDERATED_TOKEN_FILE).
    WorkloadIdentity,
    /// Managed identity (IMDS or App Service).
    ManagedIdentity,
    /// A service principal secret (AZURE_CLIENT_SECRET).
    ClientSecret,
    /// An Azure Pipelines service connection (OIDC).
    Pipelines,
}

#[derive(Debug, Clone, Copy, ValueEnum, Default, PartialEq, Eq)]
pub enum OutputArg {
    /// Human-readable text (stderr for progress).
    #[default]
    Text,
    /// JSON on stdout: JSON Lines, one event per line, from a command that runs a runbook;
    /// one document from `plan`, `status`, `proxy-status` and `doctor`.
    Json,
}

/// `-n`/`--namespace` values: a namespace name, checked before any request carries it (a
/// typo such as `Payments` or `shop?x` is refused, exit 2, instead of reaching the API server
/// as another name or failing there).
pub fn namespace_name(value: &str) -> Result<String, String> {
    let ns = value.trim();
    if crate::k8s::is_namespace_name(ns) {
        return Ok(ns.to_string());
    }
    Err(format!(
        "{value:?} is not a namespace name: lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters"
    ))
}

/// `--canary-namespaces` values: as [`namespace_name`], but an empty item (an empty pipeline
/// variable) stays empty and means no choice.
pub fn canary_namespace_name(value: &str) -> Result<String, String> {
    match value.trim() {
        "" => Ok(String::new()),
        _ => namespace_name(value),
    }
}

#[cfg(test)]
mod namespace_tests {
    use super::*;

    #[test]
    fn a_namespace_flag_refuses_what_is_no_namespace_name() {
        for bad in [
            "", " ", "Payments", "shop?a=b", "shop#x", "-shop", "shop-", "a.b",
        ] {
            assert!(namespace_name(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(namespace_name(&"a".repeat(64)).is_err());
        assert_eq!(namespace_name(" shop7 ").unwrap(), "shop7");
        assert_eq!(namespace_name("app-000").unwrap(), "app-000");
        assert_eq!(canary_namespace_name(" ").unwrap(), "");
        assert!(canary_namespace_name("Payments").is_err());
    }
}
