//! Azure Resource Manager (`Microsoft.ContainerService/managedClusters` and its mesh
//! profiles), the Entra ID token endpoint, and the `/_sim/*` introspection API, all on the
//! ARM listener (`authority_host == arm_endpoint`).
//!
//! ```text
//!   request ─▶ dispatch ─┬─ /{tenant}/oauth2/v2.0/token ──────────▶ token
//!                        ├─ /_sim/state, /_sim/requests ─────────▶ introspect
//!                        └─ /subscriptions/… ─ auth ─ throttle ─ api-version
//!                             ├─ managedClusters/{name} GET/PUT/PATCH ▶ cluster ─▶ lro (scaled time)
//!                             ├─ …/meshUpgradeProfiles[/istio], locations/…/meshRevisionProfiles ▶ profiles
//!                             ├─ …/listClusterUserCredential ─────▶ cluster (kubeconfig)
//!                             └─ locations/…/operations/{id} ─────▶ lro (Azure-AsyncOperation)
//!   every mutating request ─▶ shared.requests (with its final status)
//!   lro ─▶ shared.mesh (the revisions the add-on must run)
//! ```
//!
//! Wire facts (paths, codes, messages, headers) follow `reference/arm-api.md`.

mod cluster;
mod document;
pub mod errors;
mod introspect;
mod lro;
mod profiles;
mod signin;
pub mod token;

use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub use crate::scenario::{ArmFaults, FailStatus, LroFailure, OperationKind};
use crate::{Scenario, Shared};
pub use errors::{ArmError, SUPPORTED_API_VERSIONS};
pub use lro::Operation;
use token::{IssuedToken, TokenCheck};

/// Counters `/_sim/state` reports.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counters {
    /// ARM requests (not token or introspection requests).
    pub requests: u64,
    pub reads: u64,
    pub writes: u64,
    pub throttled: u64,
    /// 409 `OperationNotAllowed` answers (busy or transient).
    pub conflicts: u64,
    /// 412 answers.
    pub precondition_failed: u64,
    pub unauthorized: u64,
    /// Other 4xx answers from ARM.
    pub rejected: u64,
    pub tokens_issued: u64,
    pub token_errors: u64,
    pub operations_started: u64,
    pub operations_succeeded: u64,
    pub operations_failed: u64,
    pub operations_canceled: u64,
    /// 5xx answers (the `server_error_every` storm).
    pub server_errors: u64,
}

/// ARM's mutable state: the cluster document, operations, tokens.
pub struct ArmState {
    inner: Mutex<ArmInner>,
    /// Issued access tokens (shared by the members of a fleet).
    tokens: Arc<token::TokenStore>,
}

pub(crate) struct ArmInner {
    /// The managed cluster exactly as GET returns it.
    pub cluster: serde_json::Value,
    pub operations: Vec<Operation>,
    /// The operation in progress, if any.
    pub running: Option<String>,
    pub counters: Counters,
    /// PUTs that reached the conflict check (for `conflict_every`).
    pub puts_seen: u64,
    /// How many times each `lro_failures` entry has fired.
    pub failures_fired: Vec<u32>,
}

impl ArmState {
    pub fn new(scenario: &Scenario) -> Self {
        Self::with_tokens(scenario, Arc::default())
    }

    /// ARM state whose tokens live in `tokens` (a fleet's store, shared by its members).
    pub(crate) fn with_tokens(scenario: &Scenario, tokens: Arc<token::TokenStore>) -> Self {
        Self {
            tokens,
            inner: Mutex::new(ArmInner {
                cluster: document::initial_document(scenario),
                operations: Vec::new(),
                running: None,
                counters: Counters::default(),
                puts_seen: 0,
                failures_fired: vec![0; scenario.arm.lro_failures.len()],
            }),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, ArmInner> {
        // A panic while holding the lock leaves consistent JSON behind (every update is a
        // whole-value replace), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn register_token(&self, token: String, issued: IssuedToken) {
        self.tokens.register(token, issued);
    }

    fn check_token(&self, token: &str) -> TokenCheck {
        self.tokens.check(token)
    }

    /// Whether this cluster started the operation `id`.
    pub fn has_operation(&self, id: &str) -> bool {
        self.lock().operations.iter().any(|o| o.id == id)
    }

    /// Installed revisions as the cluster document shows them now.
    pub fn revisions(&self) -> Vec<String> {
        document::revisions_of(&self.lock().cluster)
    }

    /// `properties.provisioningState` now.
    pub fn provisioning_state(&self) -> String {
        document::provisioning_state(&self.lock().cluster)
    }

    /// A copy of the cluster document.
    pub fn cluster_document(&self) -> serde_json::Value {
        self.lock().cluster.clone()
    }
}

pub fn router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new().fallback(dispatch).with_state(shared)
}

/// Which API a request belongs to, for the request log.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    Arm,
    Token,
    Sim,
}

async fn dispatch(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let (api, mut response) = route(&shared, &method, &uri, &headers, &body);
    let status = response.status();
    if api == Api::Arm {
        let request_id = uuid::Uuid::new_v4().to_string();
        let h = response.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            h.insert("x-ms-request-id", v.clone());
            h.insert("x-ms-correlation-request-id", v);
        }
        let (name, remaining) = if method == Method::GET {
            ("x-ms-ratelimit-remaining-subscription-reads", 11999)
        } else {
            ("x-ms-ratelimit-remaining-subscription-writes", 1199)
        };
        let remaining = if status == StatusCode::TOO_MANY_REQUESTS {
            0
        } else {
            remaining
        };
        h.insert(name, HeaderValue::from(remaining));
        count_status(&shared, &method, status);
    }
    if api == Api::Token {
        let mut inner = shared.arm.lock();
        if status.is_success() {
            inner.counters.tokens_issued += 1;
        } else {
            inner.counters.token_errors += 1;
        }
    }
    let mutating = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    if api != Api::Sim {
        let name = if api == Api::Token { "token" } else { "arm" };
        shared.requests.count(name, method.as_str());
    }
    if mutating && api != Api::Sim {
        let name = if api == Api::Token { "token" } else { "arm" };
        shared
            .requests
            .record(name, method.as_str(), &path, status.as_u16());
    }
    tracing::debug!(%method, %path, status = status.as_u16(), "sim arm");
    response
}

fn count_status(shared: &Shared, method: &Method, status: StatusCode) {
    let mut inner = shared.arm.lock();
    let c = &mut inner.counters;
    c.requests += 1;
    if method == Method::GET {
        c.reads += 1;
    } else {
        c.writes += 1;
    }
    match status {
        StatusCode::TOO_MANY_REQUESTS => c.throttled += 1,
        StatusCode::CONFLICT => c.conflicts += 1,
        StatusCode::PRECONDITION_FAILED => c.precondition_failed += 1,
        StatusCode::UNAUTHORIZED => c.unauthorized += 1,
        s if s.is_client_error() => c.rejected += 1,
        s if s.is_server_error() => c.server_errors += 1,
        _ => {}
    }
}

fn route(
    shared: &Arc<Shared>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> (Api, Response) {
    let segs: Vec<&str> = uri
        .path()
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let is = |i: usize, lit: &str| segs.get(i).is_some_and(|s| s.eq_ignore_ascii_case(lit));

    if is(0, "_sim") {
        return (
            Api::Sim,
            introspect::handle(shared, method, &segs, uri, headers),
        );
    }
    if let Some(response) = token_request(shared, method, uri, body, &segs) {
        return (Api::Token, response);
    }
    if let Some(response) = signin_request(shared, method, uri, headers, &segs) {
        return (Api::Arm, response);
    }
    if !is(0, "subscriptions") {
        return (
            Api::Arm,
            ArmError::no_route(method.as_str(), uri.path()).into_response(),
        );
    }
    let response = match arm_request(shared, method, uri, headers, body, &segs) {
        Ok(response) => response,
        Err(err) => err.into_response(),
    };
    (Api::Arm, response)
}

/// The Entra ID token endpoint and its OpenID configuration, or `None` for another path.
fn token_request(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    body: &Bytes,
    segs: &[&str],
) -> Option<Response> {
    let is = |i: usize, lit: &str| segs.get(i).is_some_and(|s| s.eq_ignore_ascii_case(lit));
    if segs.len() == 4 && is(1, "oauth2") && is(2, "v2.0") && is(3, "token") {
        return Some(if method == Method::POST {
            token::issue(shared, segs[0], body)
        } else {
            ArmError::method_not_allowed(method.as_str(), uri.path()).into_response()
        });
    }
    if segs.len() == 4 && is(1, "v2.0") && is(2, ".well-known") && is(3, "openid-configuration") {
        return Some(token::openid_configuration(shared, segs[0]));
    }
    None
}

/// The token endpoint and what Azure tooling reads at sign-in, as this cluster's ARM
/// listener serves them (a fleet serves them for all its members); `None` for another path.
pub(crate) fn identity_request(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    segs: &[&str],
) -> Option<Response> {
    token_request(shared, method, uri, body, segs)
        .or_else(|| signin_request(shared, method, uri, headers, segs))
}

/// The subscription as `GET /subscriptions` lists it.
pub(crate) fn signin_subscription(shared: &Shared) -> serde_json::Value {
    signin::subscription(shared)
}

/// What `/_sim/state` reports.
pub(crate) fn introspect_state(shared: &Shared) -> serde_json::Value {
    introspect::state(shared)
}

/// What Azure tooling reads at sign-in (`/metadata/endpoints`, `/tenants`, `/subscriptions`,
/// `/subscriptions/{id}`), or `None` for any other request. The metadata document needs no
/// token; the others do, and any `api-version` (the subscriptions API's, not AKS's).
fn signin_request(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    segs: &[&str],
) -> Option<Response> {
    let is = |i: usize, lit: &str| segs.get(i).is_some_and(|s| s.eq_ignore_ascii_case(lit));
    let metadata = segs.len() == 2 && is(0, "metadata") && is(1, "endpoints");
    let tenants = segs.len() == 1 && is(0, "tenants");
    let subscriptions = (1..=2).contains(&segs.len()) && is(0, "subscriptions");
    if !(metadata || tenants || subscriptions) {
        return None;
    }
    if *method != Method::GET {
        return Some(ArmError::method_not_allowed(method.as_str(), uri.path()).into_response());
    }
    let version = api_version(uri);
    if metadata {
        return Some(signin::metadata(shared, version.as_deref()));
    }
    let answer = authenticate(shared, headers)
        .and_then(|()| {
            version
                .map(|_| ())
                .ok_or_else(ArmError::missing_api_version)
        })
        .and_then(|()| {
            if tenants {
                Ok(signin::tenants(shared))
            } else {
                signin::subscriptions(shared, segs.get(1).copied())
            }
        });
    Some(answer.unwrap_or_else(IntoResponse::into_response))
}

/// The query's `api-version`, matched case-insensitively as ARM does.
fn api_version(uri: &Uri) -> Option<String> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(uri.query().unwrap_or("")).unwrap_or_default();
    pairs
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("api-version"))
        .map(|(_, v)| v)
}

fn bearer(headers: &HeaderMap) -> Option<Result<&str, ()>> {
    let value = headers.get(header::AUTHORIZATION)?;
    let Ok(value) = value.to_str() else {
        return Some(Err(()));
    };
    let mut parts = value.splitn(2, ' ');
    let scheme = parts.next().unwrap_or("");
    let token = parts.next().unwrap_or("").trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Some(Err(()));
    }
    Some(Ok(token))
}

/// ARM's authentication: a token the simulator's token endpoint issued and that has not expired.
pub(crate) fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<(), ArmError> {
    match bearer(headers) {
        None => Err(ArmError::missing_token()),
        Some(Err(())) => Err(ArmError::invalid_token()),
        Some(Ok(token)) => match shared.arm.check_token(token) {
            TokenCheck::Valid => Ok(()),
            TokenCheck::Expired(at) => Err(ArmError::expired_token(at)),
            TokenCheck::Unknown => Err(ArmError::invalid_token()),
        },
    }
}

/// The scenario's throttling: every Nth ARM request (counting from the first) answers 429.
fn throttle(shared: &Shared, method: &Method) -> Result<(), ArmError> {
    let faults = &shared.scenario.arm;
    if faults.throttle_every == 0 {
        return Ok(());
    }
    let seen = shared.arm.lock().counters.requests;
    if seen.is_multiple_of(u64::from(faults.throttle_every)) {
        let kind = if method == Method::GET {
            "read"
        } else {
            "write"
        };
        return Err(ArmError::throttled(
            &shared.info.subscription,
            kind,
            faults.retry_after_secs,
        ));
    }
    Ok(())
}

/// The scenario's transient server errors: every Nth ARM request, counted from the second,
/// answers 500 (offset from `throttle_every` so the two storms interleave).
fn server_error(shared: &Shared) -> Result<(), ArmError> {
    let every = shared.scenario.arm.server_error_every;
    if every == 0 {
        return Ok(());
    }
    let seen = shared.arm.lock().counters.requests;
    if seen >= 2 && (seen - 2).is_multiple_of(u64::from(every)) {
        return Err(ArmError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "An internal server error occurred; retry the request (simulated transient ARM failure).",
        ));
    }
    Ok(())
}

fn arm_request(
    shared: &Arc<Shared>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    segs: &[&str],
) -> Result<Response, ArmError> {
    authenticate(shared, headers)?;
    throttle(shared, method)?;
    server_error(shared)?;
    let req = SubscriptionRequest {
        shared,
        method,
        uri,
        headers,
        body,
        segs,
        version: checked_api_version(uri, segs)?,
    };
    let Some(sub) = segs.get(1) else {
        return Err(req.no_route());
    };
    if !sub.eq_ignore_ascii_case(&shared.info.subscription) {
        return Err(ArmError::subscription_not_found(sub));
    }
    if req.is(2, "providers") {
        location_request(&req)
    } else {
        cluster_request(&req)
    }
}

/// An authenticated ARM request under `/subscriptions/…`, its path split at `/`.
struct SubscriptionRequest<'a> {
    shared: &'a Arc<Shared>,
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    body: &'a Bytes,
    segs: &'a [&'a str],
    /// Its `api-version`, one the route accepts.
    version: String,
}

impl SubscriptionRequest<'_> {
    /// Path segment `i` is `lit` (ARM paths are case-insensitive).
    fn is(&self, i: usize, lit: &str) -> bool {
        self.segs
            .get(i)
            .is_some_and(|s| s.eq_ignore_ascii_case(lit))
    }

    fn no_route(&self) -> ArmError {
        ArmError::no_route(self.method.as_str(), self.uri.path())
    }

    fn method_not_allowed(&self) -> ArmError {
        ArmError::method_not_allowed(self.method.as_str(), self.uri.path())
    }

    fn require(&self, method: Method) -> Result<(), ArmError> {
        if *self.method == method {
            Ok(())
        } else {
            Err(self.method_not_allowed())
        }
    }
}

/// The request's `api-version`, when its route accepts it. The Azure-AsyncOperation URL
/// carries its own api-version; it is checked before the managedClusters versions.
pub(crate) fn checked_api_version(uri: &Uri, segs: &[&str]) -> Result<String, ArmError> {
    let is = |i: usize, lit: &str| segs.get(i).is_some_and(|s| s.eq_ignore_ascii_case(lit));
    let is_operation = segs.len() == 8
        && is(2, "providers")
        && is(3, "Microsoft.ContainerService")
        && is(4, "locations")
        && is(6, "operations");
    let version = api_version(uri).ok_or_else(ArmError::missing_api_version)?;
    if is_operation {
        if version != errors::OPERATIONS_API_VERSION
            && !SUPPORTED_API_VERSIONS.contains(&version.as_str())
        {
            return Err(ArmError::invalid_api_version(&version));
        }
    } else if !SUPPORTED_API_VERSIONS.contains(&version.as_str()) {
        return Err(ArmError::invalid_api_version(&version));
    }
    Ok(version)
}

/// `/subscriptions/{s}/providers/Microsoft.ContainerService/locations/{l}/…`: operations and
/// mesh revision profiles.
fn location_request(req: &SubscriptionRequest) -> Result<Response, ArmError> {
    let segs = req.segs;
    if segs.len() < 4 {
        return Err(req.no_route());
    }
    if !req.is(3, "Microsoft.ContainerService") {
        return Err(ArmError::invalid_namespace(segs[3]));
    }
    if !req.is(4, "locations") || segs.len() < 7 {
        let ty = segs.get(4).copied().unwrap_or("");
        return Err(ArmError::invalid_resource_type(ty, &req.version));
    }
    let sub_type = segs[6];
    if sub_type.eq_ignore_ascii_case("operations") && segs.len() == 8 {
        req.require(Method::GET)?;
        lro::status(req.shared, segs[7])
    } else if sub_type.eq_ignore_ascii_case("meshRevisionProfiles") && segs.len() <= 8 {
        req.require(Method::GET)?;
        profiles::revision_profiles(req.shared, segs[5], segs.get(7).copied())
    } else {
        Err(ArmError::invalid_resource_type(
            &format!("locations/{sub_type}"),
            &req.version,
        ))
    }
}

/// `/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.ContainerService/
/// managedClusters/{name}[/…]`: the cluster and its actions.
fn cluster_request(req: &SubscriptionRequest) -> Result<Response, ArmError> {
    let (segs, info) = (req.segs, &req.shared.info);
    if !req.is(2, "resourceGroups") || segs.len() < 4 {
        return Err(req.no_route());
    }
    if !segs[3].eq_ignore_ascii_case(&info.resource_group) {
        return Err(ArmError::resource_group_not_found(segs[3]));
    }
    if !req.is(4, "providers") || segs.len() < 7 {
        return Err(req.no_route());
    }
    if !req.is(5, "Microsoft.ContainerService") {
        return Err(ArmError::invalid_namespace(segs[5]));
    }
    if !req.is(6, "managedClusters") {
        return Err(ArmError::invalid_resource_type(segs[6], &req.version));
    }
    let Some(name) = segs.get(7) else {
        return Err(req.method_not_allowed());
    };
    if !name.eq_ignore_ascii_case(&info.cluster) {
        if segs.len() == 8 && *req.method == Method::PUT {
            return Err(ArmError::new(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!(
                    "Creating managed cluster '{name}' is not supported: the simulator models the single cluster '{}'.",
                    info.cluster
                ),
            ));
        }
        return Err(ArmError::cluster_not_found(segs[3], name));
    }
    let rest = &segs[8..];
    let sub_is = |lit: &str| rest.first().is_some_and(|s| s.eq_ignore_ascii_case(lit));
    let shared = req.shared;
    match rest.len() {
        0 => match *req.method {
            Method::GET => Ok(cluster::get(shared)),
            Method::PUT => cluster::put(shared, req.headers, req.body),
            Method::PATCH => cluster::patch_tags(shared, req.headers, req.body),
            _ => Err(req.method_not_allowed()),
        },
        1 | 2 if sub_is("meshUpgradeProfiles") => {
            req.require(Method::GET)?;
            profiles::upgrade_profiles(shared, rest.get(1).copied())
        }
        1 if sub_is("listClusterUserCredential") || sub_is("listClusterAdminCredential") => {
            req.require(Method::POST)?;
            Ok(cluster::credentials(
                shared,
                sub_is("listClusterAdminCredential"),
            ))
        }
        1 if sub_is("abort") => {
            req.require(Method::POST)?;
            lro::abort(shared)
        }
        _ => Err(ArmError::invalid_resource_type(
            &format!("managedClusters/{}", rest[0]),
            &req.version,
        )),
    }
}
