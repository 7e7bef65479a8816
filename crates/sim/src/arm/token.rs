//! The Entra ID v2 token endpoint, client-credentials flow only (reference
//! `kubernetes-wire.md` §9): `POST /{tenant}/oauth2/v2.0/token` with a form body, answering
//! `{"token_type":"Bearer","expires_in":N,…}` (numbers, as v2 does) or the AADSTS error shape.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use crate::Shared;

/// An access token the simulator issued.
#[derive(Clone, Debug)]
pub struct IssuedToken {
    pub expires_at: DateTime<Utc>,
    pub audience: String,
}

/// The access tokens issued so far; a fleet's members share one store, so a token from the
/// fleet's token endpoint is good for every cluster.
#[derive(Debug, Default)]
pub struct TokenStore {
    inner: std::sync::Mutex<std::collections::HashMap<String, IssuedToken>>,
}

impl TokenStore {
    pub(crate) fn register(&self, token: String, issued: IssuedToken) {
        let mut tokens = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = Utc::now();
        // Forget tokens that expired long ago so a long-running sim does not grow forever.
        tokens.retain(|_, t| t.expires_at + chrono::Duration::hours(1) > now);
        tokens.insert(token, issued);
    }

    pub(crate) fn check(&self, token: &str) -> TokenCheck {
        let tokens = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match tokens.get(token) {
            None => TokenCheck::Unknown,
            Some(t) if t.expires_at <= Utc::now() => TokenCheck::Expired(t.expires_at),
            Some(_) => TokenCheck::Valid,
        }
    }
}

/// What ARM concludes about a bearer token.
pub enum TokenCheck {
    Valid,
    Expired(DateTime<Utc>),
    Unknown,
}

#[derive(Debug, Default, Deserialize)]
struct TokenForm {
    #[serde(default)]
    grant_type: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    scope: Option<String>,
}

/// Handles one token request; returns the response and whether it issued a token.
pub fn issue(shared: &Shared, tenant: &str, body: &[u8]) -> Response {
    let info = &shared.info;
    let form: TokenForm = match serde_urlencoded::from_bytes(body) {
        Ok(form) => form,
        Err(_) => {
            return aad_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            );
        }
    };
    if !tenant.eq_ignore_ascii_case(&info.tenant_id) {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
            ),
        );
    }
    match form.grant_type.as_deref() {
        Some("client_credentials") => {}
        None => {
            return aad_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            );
        }
        Some(other) => {
            return aad_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                &format!(
                    "The app requested an unsupported grant type '{other}'; the simulator supports client_credentials only."
                ),
            );
        }
    }
    let client_id = form.client_id.unwrap_or_default();
    if !client_id.eq_ignore_ascii_case(&info.client_id) {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
        );
    }
    if form.client_secret.as_deref() != Some(info.client_secret.as_str()) {
        return aad_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            &format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
            ),
        );
    }
    let scope = form.scope.unwrap_or_default();
    let Some(audience) = scope
        .split_whitespace()
        .find_map(|s| s.strip_suffix("/.default"))
        .map(str::to_string)
    else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            70011,
            &format!(
                "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid: '{scope}'. The scope requested is not valid; client credentials need '<resource>/.default'."
            ),
        );
    };

    let lifetime = shared.scenario.arm.token_lifetime_secs;
    let now = Utc::now();
    let expires_at = now + chrono::Duration::seconds(lifetime as i64);
    let token = mint(&info.tenant_id, &client_id, &audience, now, expires_at);
    shared.arm.register_token(
        token.clone(),
        IssuedToken {
            expires_at,
            audience,
        },
    );
    let body = json!({
        "token_type": "Bearer",
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": token,
    });
    with_no_cache((StatusCode::OK, axum::Json(body)).into_response())
}

/// A JWT-looking token (header.payload.signature, base64url); only the simulator checks it,
/// by lookup, so the signature is random bytes.
fn mint(
    tenant: &str,
    client_id: &str,
    audience: &str,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> String {
    let header = json!({"typ": "JWT", "alg": "RS256", "kid": "asm-canary-sim"});
    let payload = json!({
        "aud": audience,
        "iss": format!("https://sts.windows.net/{tenant}/"),
        "iat": now.timestamp(),
        "nbf": now.timestamp(),
        "exp": expires_at.timestamp(),
        "appid": client_id,
        "oid": client_id,
        "sub": client_id,
        "tid": tenant,
        "ver": "1.0",
        "jti": uuid::Uuid::new_v4().to_string(),
    });
    let signature: [u8; 32] = rand::random();
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

fn aad_error(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    let now = Utc::now();
    let timestamp = now.format("%Y-%m-%d %H:%M:%SZ").to_string();
    let trace_id = uuid::Uuid::new_v4().to_string();
    let correlation_id = uuid::Uuid::new_v4().to_string();
    let body = json!({
        "error": error,
        "error_description": format!(
            "AADSTS{code}: {description}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}"
        ),
        "error_codes": [code],
        "timestamp": timestamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
    });
    with_no_cache((status, axum::Json(body)).into_response())
}

fn with_no_cache(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(header::EXPIRES, HeaderValue::from_static("-1"));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

/// `GET /{tenant}/v2.0/.well-known/openid-configuration`, every URL pointing back here.
pub fn openid_configuration(shared: &Shared, tenant: &str) -> Response {
    let base = format!("{}/{tenant}", shared.info.authority_host);
    let body = json!({
        "token_endpoint": format!("{base}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{}/{tenant}/discovery/v2.0/keys", shared.info.authority_host),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": format!("{base}/v2.0"),
        "request_uri_parameter_supported": false,
        "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{base}/oauth2/v2.0/devicecode"),
        "end_session_endpoint": format!("{base}/oauth2/v2.0/logout"),
        "tenant_region_scope": "WW",
        "cloud_instance_name": "microsoftonline.com",
    });
    let mut response = (StatusCode::OK, axum::Json(body)).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=86400, private"),
    );
    response
}
