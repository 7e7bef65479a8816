//! Building a kube `Client`: from kubeconfig bytes (as ARM's listClusterUserCredential
//! returns them), or from `--kubeconfig` / `$KUBECONFIG` / `~/.kube/config`, optionally
//! trusting an extra CA (PEM) on top of the kubeconfig's own.

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::K8sError;

/// Parses PEM certificates into DER; an input with no certificate is an error.
pub fn pem_to_der(pem: &[u8]) -> Result<Vec<Vec<u8>>, K8sError> {
    let mut out = Vec::new();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| K8sError::ExtraCa {
            message: format!("not valid PEM: {e}"),
        })?;
        out.push(cert.as_ref().to_vec());
    }
    if out.is_empty() {
        return Err(K8sError::ExtraCa {
            message: "contains no PEM certificate (expected -----BEGIN CERTIFICATE-----)".into(),
        });
    }
    Ok(out)
}

fn add_extra_ca(config: &mut Config, extra_ca_pem: Option<&[u8]>) -> Result<(), K8sError> {
    if let Some(pem) = extra_ca_pem {
        let extra = pem_to_der(pem)?;
        config.root_cert.get_or_insert_with(Vec::new).extend(extra);
    }
    Ok(())
}

/// A kubeconfig error that names `origin` (a file; empty for bytes from ARM) and, for a YAML
/// error, the line and column: never the YAML itself, whose lines hold tokens, keys and
/// passwords (the parser's own message quotes them).
fn kubeconfig_error(origin: &str, e: kube::config::KubeconfigError) -> K8sError {
    use kube::config::KubeconfigError as E;
    let message = match e {
        E::Parse(p) => {
            let place = match (p.location(), origin.is_empty()) {
                (Some(l), false) => format!("{origin}:{}:{}", l.line(), l.column()),
                (Some(l), true) => format!("line {}, column {}", l.line(), l.column()),
                (None, false) => origin.to_string(),
                (None, true) => "it".to_string(),
            };
            format!(
                "cannot parse {place}: not a valid kubeconfig there (its text is not shown, as a kubeconfig holds credentials)"
            )
        }
        E::ReadConfig(io, _) => format!("cannot read {origin}: {io}"),
        other if origin.is_empty() => format!("unusable: {other}"),
        other => format!("{origin} is unusable: {other}"),
    };
    K8sError::Kubeconfig { message }
}

/// A client from kubeconfig YAML bytes, using its current context.
pub async fn client_from_kubeconfig_bytes(
    bytes: &[u8],
    extra_ca_pem: Option<&[u8]>,
) -> Result<Client, K8sError> {
    let text = std::str::from_utf8(bytes).map_err(|e| K8sError::Kubeconfig {
        message: format!("not UTF-8: {e}"),
    })?;
    let kubeconfig = Kubeconfig::from_yaml(text).map_err(|e| kubeconfig_error("", e))?;
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| kubeconfig_error("", e))?;
    add_extra_ca(&mut config, extra_ca_pem)?;
    build_client(config)
}

/// A client from a kubeconfig file, or (with `None`) from `$KUBECONFIG` / `~/.kube/config`.
pub async fn client_from_kubeconfig(
    path: Option<&Path>,
    extra_ca_pem: Option<&[u8]>,
) -> Result<Client, K8sError> {
    let mut config = match path {
        Some(path) => {
            let origin = path.display().to_string();
            let kubeconfig =
                Kubeconfig::read_from(path).map_err(|e| kubeconfig_error(&origin, e))?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| kubeconfig_error(&origin, e))?
        }
        None => Config::from_kubeconfig(&KubeConfigOptions::default())
            .await
            .map_err(|e| kubeconfig_error("$KUBECONFIG or ~/.kube/config", e))?,
    };
    add_extra_ca(&mut config, extra_ca_pem)?;
    build_client(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_without_certificates_is_refused() {
        let err = pem_to_der(b"hello").unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
    }

    #[tokio::test]
    async fn bad_kubeconfig_says_why() {
        let Err(err) = client_from_kubeconfig_bytes(b"clusters: [", None).await else {
            panic!("a broken kubeconfig was accepted");
        };
        assert!(
            err.to_string().starts_with("kubeconfig: cannot parse"),
            "{err}"
        );
        let Err(err) = client_from_kubeconfig_bytes(&[0xff, 0xfe], None).await else {
            panic!("a non-UTF-8 kubeconfig was accepted");
        };
        assert!(err.to_string().contains("not UTF-8"), "{err}");
    }

    /// A kubeconfig with a YAML error was refused with the parser's message, which quoted the
    /// offending lines: `user: "SUPERSECRETTOKEN-abc123"` on stderr. Now only the position.
    #[tokio::test]
    async fn kubeconfig_parse_error_names_the_position_not_the_secret() {
        let bad =
            "apiVersion: v1\nusers:\n- name: u\n  user: \"SUPERSECRETTOKEN-abc123\"\n  token: [\n";
        let Err(err) = client_from_kubeconfig_bytes(bad.as_bytes(), None).await else {
            panic!("a broken kubeconfig was accepted");
        };
        let text = err.to_string();
        assert!(!text.contains("SUPERSECRET"), "{text}");
        assert!(text.contains("cannot parse"), "{text}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, bad).unwrap();
        let Err(err) = client_from_kubeconfig(Some(&path), None).await else {
            panic!("a broken kubeconfig was accepted");
        };
        let text = err.to_string();
        assert!(!text.contains("SUPERSECRET"), "{text}");
        assert!(
            text.contains(&format!("{}:", path.display())),
            "names the file: {text}"
        );
        // The wrong type is the user's string at line 4.
        let type_error = "users:\n- name: u\n  user: \"SUPERSECRETTOKEN-abc123\"\n";
        let Err(err) = client_from_kubeconfig_bytes(type_error.as_bytes(), None).await else {
            panic!("a broken kubeconfig was accepted");
        };
        let text = err.to_string();
        assert!(!text.contains("SUPERSECRET"), "{text}");
        assert!(text.contains("line 3, column"), "{text}");
    }

    #[tokio::test]
    async fn valid_kubeconfig_with_extra_ca_builds_a_client() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = asm_canary_sim::tls::SimTls::generate().unwrap().ca_pem;
        let kubeconfig = r#"
apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: https://127.0.0.1:6443
contexts:
- name: ctx
  context: {cluster: c, user: u, namespace: shop}
current-context: ctx
users:
- name: u
  user: {token: abc}
"#;
        let Ok(client) =
            client_from_kubeconfig_bytes(kubeconfig.as_bytes(), Some(ca.as_bytes())).await
        else {
            panic!("a valid kubeconfig was refused");
        };
        assert_eq!(client.default_namespace(), "shop");
        let der = pem_to_der(ca.as_bytes()).unwrap();
        assert_eq!(der.len(), 1);
    }
}

/// The client with a retry layer: 429/503/504 as kube-rs retries them, and a connection that
/// could not be established (the API server restarting, a load balancer dropping us). Only
/// failed connects are retried, so a request is never sent twice.
fn build_client(config: Config) -> Result<Client, K8sError> {
    let builder = kube::client::ClientBuilder::try_from(config)
        .map_err(|source| K8sError::Client { source })?;
    Ok(builder
        .with_layer(&super::limit::LimitBodiesLayer)
        .with_layer(&tower::buffer::BufferLayer::new(1024))
        .with_layer(&tower::retry::RetryLayer::new(ConnectRetry::default()))
        .build())
}

/// Retries requests whose connection could not be established, with a doubling delay
/// (100 ms to 2 s, 12 times: about 15 s), and otherwise defers to kube-rs's policy.
#[derive(Clone, Default)]
pub struct ConnectRetry {
    inner: kube::client::retry::RetryPolicy,
    attempts: u32,
}

const CONNECT_RETRIES: u32 = 12;

/// True when the error chain holds a connect failure (nothing was sent).
pub fn is_connect_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<hyper_util::client::legacy::Error>()
            && h.is_connect()
        {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        cur = err.source();
    }
    false
}

impl<Res>
    tower::retry::Policy<http::Request<kube::client::Body>, http::Response<Res>, tower::BoxError>
    for ConnectRetry
{
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

    fn retry(
        &mut self,
        req: &mut http::Request<kube::client::Body>,
        result: &mut Result<http::Response<Res>, tower::BoxError>,
    ) -> Option<Self::Future> {
        if let Err(e) = result
            && is_connect_error(e.as_ref())
        {
            if self.attempts >= CONNECT_RETRIES {
                return None;
            }
            let delay = std::time::Duration::from_millis(100 << self.attempts.min(4));
            self.attempts += 1;
            tracing::debug!(
                attempt = self.attempts,
                ?delay,
                "Kubernetes API unreachable; retrying"
            );
            return Some(Box::pin(tokio::time::sleep(delay)));
        }
        self.inner
            .retry(req, result)
            .map(|s| Box::pin(s) as Self::Future)
    }

    fn clone_request(
        &mut self,
        req: &http::Request<kube::client::Body>,
    ) -> Option<http::Request<kube::client::Body>> {
        <kube::client::retry::RetryPolicy as tower::retry::Policy<
            http::Request<kube::client::Body>,
            http::Response<Res>,
            tower::BoxError,
        >>::clone_request(&mut self.inner, req)
    }
}
