//! Naming why a TLS handshake failed, for ARM, Entra and the Kubernetes API alike: reqwest,
//! hyper and the Azure SDK only say "error sending request"; the rustls error that says why
//! sits deep in the cause chain.

/// What to do about a refused certificate, worded for the endpoint that presented it.
#[derive(Clone, Copy, Debug)]
pub struct Fixes {
    /// How to trust the CA that signed it.
    pub ca: &'static str,
    /// Where the host name asked for comes from.
    pub name: &'static str,
}

/// Why a TLS handshake failed and what to do, when `e`'s cause chain holds a rustls error
/// (a certificate signed by an unknown CA, a name mismatch, an expired certificate). reqwest
/// and the Azure SDK only say "error sending request"; the cause sits deep in the chain,
/// inside an `io::Error` (whose `source()` skips it, so it is looked into).
pub fn problem(e: &(dyn std::error::Error + 'static), fixes: &Fixes) -> Option<String> {
    use rustls::CertificateError as C;
    let found = find_rustls(e)?;
    let (ca_fix, name_fix) = (fixes.ca, fixes.name);
    Some(match found {
        rustls::Error::InvalidCertificate(cert) => match cert {
            C::UnknownIssuer => format!(
                "the server's TLS certificate is signed by a CA this machine does not trust; {ca_fix}"
            ),
            C::NotValidForName | C::NotValidForNameContext { .. } => format!(
                "the server's TLS certificate is not valid for the host name asked for ({cert}); {name_fix}"
            ),
            C::Expired
            | C::ExpiredContext { .. }
            | C::NotValidYet
            | C::NotValidYetContext { .. } => {
                format!(
                    "the server's TLS certificate is outside its validity period ({cert}); check this machine's clock, or the server's certificate"
                )
            }
            other => format!(
                "the server's TLS certificate was refused ({other}); {ca_fix}, or {name_fix}"
            ),
        },
        other => format!("the TLS handshake failed ({other}); {ca_fix}, or {name_fix}"),
    })
}

fn find_rustls<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(found) = err.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(found) = find_rustls(inner)
        {
            return Some(found);
        }
        cur = err.source();
    }
    None
}
