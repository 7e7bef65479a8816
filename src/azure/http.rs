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

/// Why a TLS handshake with ARM or Entra failed and what to do (see [`crate::tls::problem`]).
pub fn tls_problem(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    crate::tls::problem(e, &ARM_TLS_FIXES)
}

/// The fixes for a certificate ARM or the token endpoint presented.
pub const ARM_TLS_FIXES: crate::tls::Fixes = crate::tls::Fixes {
    ca: "pass the CA that signed it with --ca-file FILE (or ASM_CANARY_CA_FILE)",
    name: "check the endpoint's host name (--arm-endpoint, --authority-host)",
};

/// The most of a body ARM answers with success that is read (a managed cluster document is
/// tens of KiB; the kubeconfig a few): a larger one is refused, not buffered.
pub const ARM_BODY_LIMIT: usize = 32 << 20;
/// The most of an error body read: ARM's are a few hundred bytes.
pub const ARM_ERROR_BODY_LIMIT: usize = 1 << 20;

/// A body read with a running limit.
#[derive(Debug, thiserror::Error)]
pub enum LimitedBodyError {
    #[error("the body is larger than {} MiB", .limit >> 20)]
    TooLarge { limit: usize },
    #[error(transparent)]
    Read(reqwest::Error),
}

/// Reads `resp`'s body chunk by chunk, refusing it (without reading further) as soon as it
/// passes `limit` bytes, or at once when its Content-Length says it will.
pub async fn read_limited(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<bytes::Bytes, LimitedBodyError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(LimitedBodyError::TooLarge { limit });
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(LimitedBodyError::Read)? {
        if body.len() + chunk.len() > limit {
            return Err(LimitedBodyError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The most of a token endpoint's answer that is read: Entra's are a few KiB.
pub const TOKEN_BODY_LIMIT: usize = 1 << 20;

/// azure_core's transport for the credential's token requests: the same reqwest client, with
/// the answer's body refused once it passes `limit` bytes (azure_identity reads it whole).
#[derive(Debug)]
pub struct LimitedTransport {
    pub http: reqwest::Client,
    pub limit: usize,
}

#[async_trait::async_trait]
impl azure_core::http::HttpClient for LimitedTransport {
    async fn execute_request(
        &self,
        request: &azure_core::http::Request,
    ) -> azure_core::Result<azure_core::http::AsyncRawResponse> {
        use futures::StreamExt;
        let response = self.http.execute_request(request).await?;
        let (status, headers, body) = response.deconstruct();
        let limit = self.limit;
        let mut read = 0usize;
        let capped = body.map(move |chunk| {
            let chunk = chunk?;
            read += chunk.len();
            if read > limit {
                return Err(azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Io,
                    format!(
                        "the token endpoint's answer is larger than {} MiB",
                        limit >> 20
                    ),
                ));
            }
            Ok(chunk)
        });
        Ok(azure_core::http::AsyncRawResponse::new(
            status,
            headers,
            Box::pin(capped),
        ))
    }
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
