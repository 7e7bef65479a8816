//! The one HTTPS client behind both the token requests (as azure_core's transport) and the
//! ARM calls, so an extra trusted CA (a sovereign cloud's proxy, the simulator) applies to
//! both. rustls with the ring provider only.

use std::time::Duration;

/// Why the HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpSetupError {
    #[error("extra CA {origin}: {message}")]
    Ca { origin: String, message: String },
    #[error("cannot build the HTTPS client: {0}")]
    Build(#[source] reqwest::Error),
}

/// Installs rustls's ring provider as the process default, once; later calls (and a
/// provider someone else installed first) are fine.
pub fn ensure_ring_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Builds the HTTPS client: platform roots plus `extra_ca_pem` (one or more PEM
/// certificates), no redirects, bounded connect and read times. `origin` names where the
/// PEM came from, for error messages.
pub fn build_http_client(
    extra_ca_pem: Option<(&str, &[u8])>,
) -> Result<reqwest::Client, HttpSetupError> {
    ensure_ring_provider();
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(20))
        .read_timeout(Duration::from_secs(120))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("asm-canary/", env!("CARGO_PKG_VERSION")));
    if let Some((origin, pem)) = extra_ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| HttpSetupError::Ca {
            origin: origin.to_string(),
            message: format!("not valid PEM: {e}"),
        })?;
        if certs.is_empty() {
            return Err(HttpSetupError::Ca {
                origin: origin.to_string(),
                message: "contains no PEM certificate (expected -----BEGIN CERTIFICATE-----)"
                    .to_string(),
            });
        }
        builder = builder.tls_certs_merge(certs);
    }
    builder.build().map_err(HttpSetupError::Build)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_with_and_without_an_extra_ca() {
        build_http_client(None).unwrap();
        let ca = asm_canary_sim::tls::SimTls::generate().unwrap().ca_pem;
        build_http_client(Some(("ca.pem", ca.as_bytes()))).unwrap();
        let err = build_http_client(Some(("ca.pem", b"nope"))).unwrap_err();
        assert!(err.to_string().starts_with("extra CA ca.pem:"), "{err}");
    }
}
