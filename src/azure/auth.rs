//! Choosing and building the Azure credential.
//!
//! azure_identity 1.x has no `DefaultAzureCredential`, so the tool chooses, and says which it
//! chose and why. `auto` looks at the environment, most specific first:
//!
//! | environment | mode |
//! |---|---|
//! | `AZURE_CLIENT_SECRET` with `AZURE_TENANT_ID` and `AZURE_CLIENT_ID` | client-secret |
//! | `AZURE_FEDERATED_TOKEN_FILE` (AKS workload identity webhook) | workload-identity |
//! | `SYSTEM_OIDCREQUESTURI` with `AZURESUBSCRIPTION_SERVICE_CONNECTION_ID` (Azure Pipelines) | pipelines |
//! | `IDENTITY_ENDPOINT`, `MSI_ENDPOINT` or `IMDS_ENDPOINT` | managed-identity |
//! | otherwise | cli (the Azure CLI's login) |
//!
//! A VM's IMDS endpoint is not probed (that would cost a network timeout on every laptop);
//! pass `--auth managed-identity` there. Every credential's token requests go through the
//! given HTTPS client, so `--ca-file` applies to them, and through the authority host when set.
//!
//! `cli` runs `az account get-access-token` inside azure_identity: the user asked for their
//! CLI login. asm-canary itself never runs `az`.

use std::sync::Arc;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::{ClientOptions, ExponentialRetryOptions, RetryOptions, Transport};
use azure_identity::{
    AzureCliCredential, AzureCliCredentialOptions, AzurePipelinesCredential,
    AzurePipelinesCredentialOptions, ClientAssertionCredentialOptions, ClientSecretCredential,
    ClientSecretCredentialOptions, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    UserAssignedId, WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use serde::{Deserialize, Serialize};

use super::http::{LimitedTransport, TOKEN_BODY_LIMIT};

/// How to authenticate to Azure (`--auth`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
#[value(rename_all = "kebab-case")]
pub enum AuthMode {
    /// Pick by the environment (see the table in the module docs).
    #[default]
    Auto,
    /// The Azure CLI's logged-in account.
    Cli,
    /// AKS workload identity (federated token file).
    WorkloadIdentity,
    /// Managed identity (App Service / VM IMDS).
    ManagedIdentity,
    /// Service principal with a client secret.
    ClientSecret,
    /// An Azure Pipelines service connection (workload identity federation).
    Pipelines,
}

impl AuthMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            AuthMode::Auto => "auto",
            AuthMode::Cli => "cli",
            AuthMode::WorkloadIdentity => "workload-identity",
            AuthMode::ManagedIdentity => "managed-identity",
            AuthMode::ClientSecret => "client-secret",
            AuthMode::Pipelines => "pipelines",
        }
    }
}

impl std::fmt::Display for AuthMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The credential chosen, and the sentence that explains it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CredentialChoice {
    pub mode: AuthMode,
    pub reason: String,
}

/// Settings from flags; `None` fields fall back to the environment.
#[derive(Clone, Default)]
pub struct AuthSettings {
    pub mode: AuthMode,
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    /// e.g. `https://login.microsoftonline.us`; must be https.
    pub authority_host: Option<String>,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("mode", &self.mode)
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "***"))
            .field("authority_host", &self.authority_host)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "--auth {mode}: {missing} is not set (pass it as a flag or set the environment variable)"
    )]
    Missing {
        mode: AuthMode,
        missing: &'static str,
    },
    #[error("--auth {mode}: cannot create the credential: {source}")]
    Create {
        mode: AuthMode,
        #[source]
        source: azure_core::Error,
    },
    #[error("authority host {host:?} must be an https:// URL")]
    AuthorityHost { host: String },
}

/// Environment lookup, injectable for tests.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, with empty values treated as unset.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn get(explicit: &Option<String>, env: EnvLookup<'_>, name: &str) -> Option<String> {
    explicit
        .clone()
        .filter(|v| !v.is_empty())
        .or_else(|| env(name).filter(|v| !v.is_empty()))
}

/// Resolves `auto` by the environment; any other mode is taken as given.
pub fn resolve_auth_mode(settings: &AuthSettings, env: EnvLookup<'_>) -> CredentialChoice {
    if settings.mode != AuthMode::Auto {
        return CredentialChoice {
            mode: settings.mode,
            reason: format!("--auth {} was given", settings.mode),
        };
    }
    let has = |explicit: &Option<String>, name: &str| get(explicit, env, name).is_some();
    let choice = |mode, reason: &str| CredentialChoice {
        mode,
        reason: format!("--auth auto: {reason}"),
    };
    if has(&settings.client_secret, "AZURE_CLIENT_SECRET")
        && has(&settings.tenant_id, "AZURE_TENANT_ID")
        && has(&settings.client_id, "AZURE_CLIENT_ID")
    {
        return choice(
            AuthMode::ClientSecret,
            "a client secret, tenant and client id are set (AZURE_CLIENT_SECRET, AZURE_TENANT_ID, AZURE_CLIENT_ID)",
        );
    }
    if env("AZURE_FEDERATED_TOKEN_FILE").is_some() {
        return choice(
            AuthMode::WorkloadIdentity,
            "AZURE_FEDERATED_TOKEN_FILE is set (AKS workload identity)",
        );
    }
    if env("SYSTEM_OIDCREQUESTURI").is_some()
        && env("AZURESUBSCRIPTION_SERVICE_CONNECTION_ID").is_some()
    {
        return choice(
            AuthMode::Pipelines,
            "SYSTEM_OIDCREQUESTURI and AZURESUBSCRIPTION_SERVICE_CONNECTION_ID are set (Azure Pipelines)",
        );
    }
    for var in ["IDENTITY_ENDPOINT", "MSI_ENDPOINT", "IMDS_ENDPOINT"] {
        if env(var).is_some() {
            return choice(
                AuthMode::ManagedIdentity,
                &format!("{var} is set (managed identity)"),
            );
        }
    }
    choice(
        AuthMode::Cli,
        "no service principal, workload identity, pipeline or managed identity in the environment; using the Azure CLI login",
    )
}

fn client_options(
    http: &reqwest::Client,
    authority_host: Option<&str>,
) -> Result<ClientOptions, AuthError> {
    // The SDK's default retries a failing token request for a minute, TLS errors included;
    // a wrong --ca-file should fail in seconds, and transient Entra errors still get retries.
    let retry = RetryOptions::exponential(ExponentialRetryOptions {
        initial_delay: azure_core::time::Duration::milliseconds(200),
        max_retries: 4,
        max_total_elapsed: azure_core::time::Duration::seconds(20),
        max_delay: azure_core::time::Duration::seconds(5),
    });
    let mut options = ClientOptions {
        transport: Some(Transport::new(Arc::new(LimitedTransport {
            http: http.clone(),
            limit: TOKEN_BODY_LIMIT,
        }))),
        retry,
        ..Default::default()
    };
    if let Some(host) = authority_host {
        if !host.starts_with("https://") {
            return Err(AuthError::AuthorityHost {
                host: host.to_string(),
            });
        }
        let mut custom = CustomConfiguration::default();
        custom.authority_host = host.trim_end_matches('/').to_string();
        options.cloud = Some(Arc::new(CloudConfiguration::Custom(custom)));
    }
    Ok(options)
}

/// Builds the credential for `settings` (resolving `auto`), sending its token requests
/// through `http`.
pub fn build_credential(
    settings: &AuthSettings,
    http: &reqwest::Client,
    env: EnvLookup<'_>,
) -> Result<(Arc<dyn TokenCredential>, CredentialChoice), AuthError> {
    let choice = resolve_auth_mode(settings, env);
    let mode = choice.mode;
    let authority = get(&settings.authority_host, env, "AZURE_AUTHORITY_HOST");
    let client_options = client_options(http, authority.as_deref())?;
    let created = |source| AuthError::Create { mode, source };
    let need = |explicit: &Option<String>, name: &'static str| {
        get(explicit, env, name).ok_or(AuthError::Missing {
            mode,
            missing: name,
        })
    };
    let credential: Arc<dyn TokenCredential> = match mode {
        AuthMode::ClientSecret => {
            let tenant = need(&settings.tenant_id, "AZURE_TENANT_ID")?;
            let client = need(&settings.client_id, "AZURE_CLIENT_ID")?;
            let secret = need(&settings.client_secret, "AZURE_CLIENT_SECRET")?;
            ClientSecretCredential::new(
                &tenant,
                client,
                Secret::new(secret),
                Some(ClientSecretCredentialOptions { client_options }),
            )
            .map_err(created)?
        }
        AuthMode::WorkloadIdentity => {
            WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions { client_options },
                client_id: get(&settings.client_id, env, "AZURE_CLIENT_ID"),
                tenant_id: get(&settings.tenant_id, env, "AZURE_TENANT_ID"),
                token_file_path: env("AZURE_FEDERATED_TOKEN_FILE").map(Into::into),
            }))
            .map_err(created)?
        }
        AuthMode::ManagedIdentity => {
            ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                user_assigned_id: settings.client_id.clone().map(UserAssignedId::ClientId),
                client_options,
            }))
            .map_err(created)?
        }
        AuthMode::Pipelines => {
            let tenant = get(&settings.tenant_id, env, "AZURESUBSCRIPTION_TENANT_ID")
                .or_else(|| get(&None, env, "AZURE_TENANT_ID"))
                .ok_or(AuthError::Missing {
                    mode,
                    missing: "AZURESUBSCRIPTION_TENANT_ID",
                })?;
            let client = get(&settings.client_id, env, "AZURESUBSCRIPTION_CLIENT_ID")
                .or_else(|| get(&None, env, "AZURE_CLIENT_ID"))
                .ok_or(AuthError::Missing {
                    mode,
                    missing: "AZURESUBSCRIPTION_CLIENT_ID",
                })?;
            let connection = need(&None, "AZURESUBSCRIPTION_SERVICE_CONNECTION_ID")?;
            let token = need(&None, "SYSTEM_ACCESSTOKEN")?;
            AzurePipelinesCredential::new(
                tenant,
                client,
                &connection,
                Secret::new(token),
                Some(AzurePipelinesCredentialOptions {
                    credential_options: ClientAssertionCredentialOptions { client_options },
                }),
            )
            .map_err(created)?
        }
        AuthMode::Cli | AuthMode::Auto => {
            AzureCliCredential::new(Some(AzureCliCredentialOptions {
                tenant_id: get(&settings.tenant_id, env, "AZURE_TENANT_ID"),
                ..Default::default()
            }))
            .map_err(created)?
        }
    };
    tracing::info!(mode = %choice.mode, reason = %choice.reason, "Azure credential chosen");
    Ok((credential, choice))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn mk_env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| map.get(k).cloned().filter(|v| !v.is_empty())
    }

    fn auto() -> AuthSettings {
        AuthSettings::default()
    }

    #[test]
    fn auto_prefers_a_complete_service_principal() {
        let env = mk_env(&[
            ("AZURE_CLIENT_SECRET", "s"),
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/token"),
        ]);
        let choice = resolve_auth_mode(&auto(), &env);
        assert_eq!(choice.mode, AuthMode::ClientSecret);
        assert!(
            choice.reason.contains("AZURE_CLIENT_SECRET"),
            "{}",
            choice.reason
        );
    }

    #[test]
    fn auto_secret_without_ids_is_not_enough() {
        let env = mk_env(&[("AZURE_CLIENT_SECRET", "s")]);
        assert_eq!(resolve_auth_mode(&auto(), &env).mode, AuthMode::Cli);
        // Flags complete what the environment lacks.
        let settings = AuthSettings {
            tenant_id: Some("t".into()),
            client_id: Some("c".into()),
            ..auto()
        };
        assert_eq!(
            resolve_auth_mode(&settings, &env).mode,
            AuthMode::ClientSecret
        );
    }

    #[test]
    fn auto_order_of_the_others() {
        let wi = mk_env(&[
            ("AZURE_FEDERATED_TOKEN_FILE", "/t"),
            ("IDENTITY_ENDPOINT", "http://x"),
        ]);
        assert_eq!(
            resolve_auth_mode(&auto(), &wi).mode,
            AuthMode::WorkloadIdentity
        );
        let pipes = mk_env(&[
            ("SYSTEM_OIDCREQUESTURI", "https://dev.azure.com/x"),
            ("AZURESUBSCRIPTION_SERVICE_CONNECTION_ID", "conn"),
            ("IDENTITY_ENDPOINT", "http://x"),
        ]);
        assert_eq!(resolve_auth_mode(&auto(), &pipes).mode, AuthMode::Pipelines);
        let only_oidc = mk_env(&[("SYSTEM_OIDCREQUESTURI", "https://dev.azure.com/x")]);
        assert_eq!(resolve_auth_mode(&auto(), &only_oidc).mode, AuthMode::Cli);
        let mi = mk_env(&[("MSI_ENDPOINT", "http://169.254.169.254")]);
        let choice = resolve_auth_mode(&auto(), &mi);
        assert_eq!(choice.mode, AuthMode::ManagedIdentity);
        assert!(choice.reason.contains("MSI_ENDPOINT"));
        let none = mk_env(&[]);
        let choice = resolve_auth_mode(&auto(), &none);
        assert_eq!(choice.mode, AuthMode::Cli);
        assert!(choice.reason.starts_with("--auth auto:"));
    }

    #[test]
    fn explicit_mode_wins() {
        let env = mk_env(&[("AZURE_FEDERATED_TOKEN_FILE", "/t")]);
        let settings = AuthSettings {
            mode: AuthMode::ManagedIdentity,
            ..auto()
        };
        let choice = resolve_auth_mode(&settings, &env);
        assert_eq!(choice.mode, AuthMode::ManagedIdentity);
        assert_eq!(choice.reason, "--auth managed-identity was given");
    }

    #[test]
    fn value_enum_names() {
        use clap::ValueEnum;
        let names: Vec<String> = AuthMode::value_variants()
            .iter()
            .map(|v| v.to_possible_value().unwrap().get_name().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "auto",
                "cli",
                "workload-identity",
                "managed-identity",
                "client-secret",
                "pipelines"
            ]
        );
        for v in AuthMode::value_variants() {
            assert_eq!(v.to_possible_value().unwrap().get_name(), v.as_str());
        }
    }

    #[test]
    fn client_secret_needs_its_parts_and_an_https_authority() {
        let http = crate::azure::http::build_http_client(None).unwrap();
        let settings = AuthSettings {
            mode: AuthMode::ClientSecret,
            tenant_id: Some("t".into()),
            ..auto()
        };
        let err = build_credential(&settings, &http, &mk_env(&[])).unwrap_err();
        assert!(
            matches!(
                err,
                AuthError::Missing {
                    missing: "AZURE_CLIENT_ID",
                    ..
                }
            ),
            "{err}"
        );
        let settings = AuthSettings {
            mode: AuthMode::ClientSecret,
            tenant_id: Some("t".into()),
            client_id: Some("c".into()),
            client_secret: Some("s".into()),
            authority_host: Some("http://login.example".into()),
        };
        let err = build_credential(&settings, &http, &mk_env(&[])).unwrap_err();
        assert!(matches!(err, AuthError::AuthorityHost { .. }), "{err}");
        let settings = AuthSettings {
            authority_host: Some("https://login.example/".into()),
            ..settings
        };
        let (_, choice) = build_credential(&settings, &http, &mk_env(&[])).unwrap();
        assert_eq!(choice.mode, AuthMode::ClientSecret);
        // Debug never shows the secret.
        assert!(!format!("{settings:?}").contains("\"s\""));
    }
}
