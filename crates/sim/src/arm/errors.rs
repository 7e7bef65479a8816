//! ARM error responses: `{"error":{"code":…,"message":…}}` with the status the real service uses.
//!
//! Codes and messages follow what ARM and the AKS resource provider put on the wire (see
//! `reference/arm-api.md` §3); where the real message is not on record the text says what
//! happened and what to do, in the same register.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// One ARM error answer.
#[derive(Debug, Clone)]
pub struct ArmError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub details: Vec<serde_json::Value>,
    /// Extra headers (`Retry-After`, `WWW-Authenticate`).
    pub headers: Vec<(header::HeaderName, String)>,
}

/// The message ARM gives for a busy cluster (reference §3.2).
pub const OPERATION_NOT_ALLOWED: &str = "Operation is not allowed: Another operation (Updating) is in progress, please wait for it to finish before starting a new operation. See https://aka.ms/aks-pending-operation";

/// Versions of `Microsoft.ContainerService/managedClusters` the simulator speaks (reference §1.1).
pub const SUPPORTED_API_VERSIONS: &[&str] = &[
    "2025-10-01",
    "2026-01-01",
    "2026-06-01",
    "2026-08-01",
    "2026-10-01",
];

/// The api-version ARM puts in an `Azure-AsyncOperation` URL.
pub const OPERATIONS_API_VERSION: &str = "2016-03-30";

impl ArmError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_string(),
            message: message.into(),
            details: Vec::new(),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: header::HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn body(&self) -> serde_json::Value {
        let mut error = json!({"code": self.code, "message": self.message});
        if !self.details.is_empty() {
            error["details"] = serde_json::Value::Array(self.details.clone());
        }
        json!({ "error": error })
    }

    pub fn missing_api_version() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )
    }

    pub fn invalid_api_version(given: &str) -> Self {
        let mut newest_first: Vec<&str> = SUPPORTED_API_VERSIONS.to_vec();
        newest_first.reverse();
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidApiVersionParameter",
            format!(
                "The api-version '{given}' is invalid. The supported versions are '{}'.",
                newest_first.join(",")
            ),
        )
    }

    /// 401 without an `Authorization` header.
    pub fn missing_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
        )
        .with_header(
            header::WWW_AUTHENTICATE,
            www_authenticate(
                "The authentication failed because of missing 'Authorization' header.",
            ),
        )
    }

    /// 401 for a header that is not `Bearer <token>`, or a token this tenant never issued.
    pub fn invalid_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "The access token is invalid.",
        )
        .with_header(
            header::WWW_AUTHENTICATE,
            www_authenticate("The access token is invalid."),
        )
    }

    /// 401 for a token past its expiry.
    pub fn expired_token(expired_at: chrono::DateTime<chrono::Utc>) -> Self {
        let now = chrono::Utc::now();
        let fmt = "%m/%d/%Y %-I:%M:%S %p";
        Self::new(
            StatusCode::UNAUTHORIZED,
            "ExpiredAuthenticationToken",
            format!(
                "The access token expiry UTC time '{}' is earlier than current UTC time '{}'.",
                expired_at.format(fmt),
                now.format(fmt)
            ),
        )
        .with_header(
            header::WWW_AUTHENTICATE,
            www_authenticate("The access token has expired."),
        )
    }

    pub fn subscription_not_found(sub: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "SubscriptionNotFound",
            format!("The subscription '{sub}' could not be found."),
        )
    }

    pub fn resource_group_not_found(rg: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "ResourceGroupNotFound",
            format!("Resource group '{rg}' could not be found."),
        )
    }

    pub fn cluster_not_found(rg: &str, name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!(
                "The Resource 'Microsoft.ContainerService/managedClusters/{name}' under resource group '{rg}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
            ),
        )
    }

    pub fn invalid_resource_type(resource_type: &str, api_version: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidResourceType",
            format!(
                "The resource type '{resource_type}' could not be found in the namespace 'Microsoft.ContainerService' for api version '{api_version}'."
            ),
        )
    }

    pub fn invalid_namespace(namespace: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidResourceNamespace",
            format!("The resource namespace '{namespace}' is invalid."),
        )
    }

    pub fn no_route(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "InvalidRequestUri",
            format!(
                "The request uri '{path}' is not valid for method '{method}': no such resource in the simulated cluster."
            ),
        )
    }

    pub fn method_not_allowed(method: &str, resource: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("The method '{method}' is not allowed on '{resource}'."),
        )
    }

    pub fn invalid_request_content(detail: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            format!("The request content was invalid and could not be deserialized: '{detail}'."),
        )
    }

    pub fn operation_not_allowed() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "OperationNotAllowed",
            OPERATION_NOT_ALLOWED,
        )
    }

    /// 400 for a change of `serviceMeshProfile.istio.revisions` the add-on refuses.
    pub fn revisions_not_allowed(reason: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("Requested change in revisions is not allowed. Reason: {reason}"),
        )
    }

    pub fn throttled(subscription: &str, kind: &str, retry_after_secs: u64) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "SubscriptionRequestsThrottled",
            format!(
                "Number of '{kind}' requests for subscription '{subscription}' exceeded. Please try again after '{retry_after_secs}' seconds after additional tokens are available. Refer to https://aka.ms/arm-throttling for additional information."
            ),
        )
        .with_header(header::RETRY_AFTER, retry_after_secs.to_string())
    }
}

fn www_authenticate(description: &str) -> String {
    format!(
        "Bearer authorization_uri=\"https://login.windows.net/\", error=\"invalid_token\", error_description=\"{description}\""
    )
}

impl IntoResponse for ArmError {
    fn into_response(self) -> Response {
        let body = self.body();
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
        headers.insert(
            header::HeaderName::from_static("x-ms-failure-cause"),
            HeaderValue::from_static(if self.status == StatusCode::TOO_MANY_REQUESTS {
                "gateway"
            } else {
                "service"
            }),
        );
        response
    }
}
