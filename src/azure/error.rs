//! ARM errors, carrying what a person needs to act: the cluster, ARM's code and message,
//! the HTTP status and, for long-running operations, the operation URL.

use std::time::Duration;

use serde_json::Value;

use super::{AuthError, BodyError, ClusterIdError};

#[derive(Debug, thiserror::Error)]
pub enum ArmError {
    #[error("ARM {method} {what} of {cluster} answered {status} {code}: {message}")]
    Api {
        cluster: String,
        method: String,
        /// What was asked, e.g. `managed cluster`, `meshUpgradeProfiles/istio`.
        what: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error(
        "ARM {method} {what} of {cluster} still answered {status} {code} after {attempts} attempts: {message}"
    )]
    RetriesExhausted {
        cluster: String,
        method: String,
        what: String,
        status: u16,
        code: String,
        message: String,
        attempts: u32,
    },
    #[error(
        "the operation on {cluster} ended {status}: {code}: {message} (operation {})",
        redact_str(operation_url)
    )]
    OperationFailed {
        cluster: String,
        operation_url: String,
        /// `Failed` or `Canceled`.
        status: String,
        code: String,
        message: String,
    },
    #[error(
        "the operation on {cluster} did not finish within {waited:?}; it may still be running: resume to keep polling {}",
        redact_str(operation_url)
    )]
    PollTimeout {
        cluster: String,
        operation_url: String,
        waited: Duration,
    },
    #[error(
        "{cluster} stayed in provisioningState {state:?} for {waited:?}; wait for the running operation (see the Azure portal's activity log) and retry"
    )]
    BusyTimeout {
        cluster: String,
        state: String,
        waited: Duration,
    },
    #[error(
        "after the operation, {cluster} is {state:?} with revisions {actual:?}, expected {expected:?}{detail}"
    )]
    RevisionsMismatch {
        cluster: String,
        state: String,
        actual: Vec<String>,
        expected: Vec<String>,
        /// `: <code>: <message>` from `status.provisioningError`, when present.
        detail: String,
    },
    #[error("{cluster} is not in the state this step expects: {message}")]
    Precondition { cluster: String, message: String },
    #[error(
        "the mesh of {cluster} is mid-upgrade (two revisions installed), so ARM lists no upgrades: {message}"
    )]
    UpgradeInProgress { cluster: String, message: String },
    #[error("{cluster} answered without an eTag; refusing to PUT without one")]
    MissingEtag { cluster: String },
    #[error("cannot build the PUT body for {cluster}: {source}")]
    Body {
        cluster: String,
        #[source]
        source: BodyError,
    },
    #[error("cannot get an Azure token for {scope}: {source}")]
    Token {
        scope: String,
        #[source]
        source: azure_core::Error,
    },
    #[error("cannot reach ARM for {what} at {url}: {source}")]
    Transport {
        what: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error(
        "ARM answered {what} with a body larger than {} MiB at {url}; no ARM answer is that large — check --arm-endpoint and any proxy in between",
        .limit >> 20
    )]
    BodyTooLarge {
        what: String,
        url: String,
        limit: usize,
    },
    /// A TLS handshake failed: `problem` says why and what to do.
    #[error("cannot connect to {peer} over TLS: {problem}")]
    Tls { peer: String, problem: String },
    #[error("ARM answered {what} with something unexpected: {message}")]
    Decode { what: String, message: String },
    #[error("invalid ARM endpoint {endpoint:?}: {message}")]
    Endpoint { endpoint: String, message: String },
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Http(#[from] super::HttpSetupError),
    #[error(transparent)]
    ClusterId(#[from] ClusterIdError),
}

impl ArmError {
    /// ARM's error code, when the error came from ARM.
    pub fn code(&self) -> Option<&str> {
        match self {
            ArmError::Api { code, .. }
            | ArmError::RetriesExhausted { code, .. }
            | ArmError::OperationFailed { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status, when the error came from an HTTP answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            ArmError::Api { status, .. } | ArmError::RetriesExhausted { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }
}

/// `(code, message)` from an ARM error body: `{"error":{"code","message"}}` or the same
/// fields at the top level; falls back to the raw text.
pub fn parse_error_body(body: &[u8]) -> (String, String) {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let obj = parsed
        .as_ref()
        .map(|v| v.get("error").unwrap_or(v))
        .filter(|v| v.is_object());
    let field = |name: &str| {
        obj.and_then(|o| o.get(name))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    match (field("code"), field("message")) {
        (None, None) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            let text: String = text.chars().take(500).collect();
            (
                String::new(),
                if text.is_empty() {
                    "(no error body)".to_string()
                } else {
                    text
                },
            )
        }
        (code, message) => (code.unwrap_or_default(), message.unwrap_or_default()),
    }
}

/// A URL without its query (operation URLs carry signatures).
pub(crate) fn redact(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    if u.query().is_some() {
        u.set_query(Some("…"));
    }
    u.to_string()
}

pub(crate) fn redact_str(url: &str) -> String {
    reqwest::Url::parse(url)
        .map(|u| redact(&u))
        .unwrap_or_else(|_| "<invalid url>".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_arm_error_shapes() {
        assert_eq!(
            parse_error_body(
                br#"{"error":{"code":"OperationNotAllowed","message":"busy","details":[]}}"#
            ),
            ("OperationNotAllowed".into(), "busy".into())
        );
        assert_eq!(
            parse_error_body(br#"{"code":"EtagMismatch","message":"m"}"#),
            ("EtagMismatch".into(), "m".into())
        );
        assert_eq!(
            parse_error_body(b"<html>bad gateway</html>"),
            (String::new(), "<html>bad gateway</html>".into())
        );
        assert_eq!(
            parse_error_body(b""),
            (String::new(), "(no error body)".into())
        );
    }

    #[test]
    fn messages_carry_the_ids() {
        let err = ArmError::OperationFailed {
            cluster: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/aks".into(),
            operation_url: "https://management.azure.com/op/1".into(),
            status: "Failed".into(),
            code: "ResourceOperationFailure".into(),
            message: "boom".into(),
        };
        let text = err.to_string();
        assert!(
            text.contains("managedClusters/aks")
                && text.contains("op/1")
                && text.contains("ResourceOperationFailure"),
            "{text}"
        );
        assert_eq!(err.code(), Some("ResourceOperationFailure"));
    }
}
