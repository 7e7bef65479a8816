//! The ARM client: GET/PUT of the managed cluster with eTags and long-running operations,
//! the mesh profiles, and the user kubeconfig.
//!
//! Changing the revisions is split so a caller can journal between the halves:
//!
//! ```text
//! begin_set_revisions  GET → validate (caller's check) → PUT If-Match: <eTag>
//!                      (412 / 409 EtagMismatch → GET again, validate again, PUT again;
//!                       409 OperationNotAllowed → wait until the cluster is idle, then the same)
//!                      → PutAccepted { operation_url, … }          ← journal this
//! poll_operation       GET <Azure-AsyncOperation> verbatim until Succeeded | Failed | Canceled
//! confirm_revisions    GET until provisioningState is terminal; require Succeeded and the revisions
//! set_revisions        all three
//! ```
//!
//! Every request retries 429 and 5xx (Retry-After honoured, else exponential backoff),
//! bounded by the [`RetryPolicy`]. Bearer tokens are only ever sent to the ARM endpoint's
//! own origin (an operation URL elsewhere is refused).

mod list;

use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, Method};
use reqwest::Url;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;

use super::cluster::same_revisions;
use super::error::{parse_error_body, redact, redact_str};
use super::http::{
    ARM_BODY_LIMIT, ARM_ERROR_BODY_LIMIT, LimitedBodyError, read_limited, tls_problem,
};
use super::profiles::{MeshRevisionProfile, MeshUpgradeProfile};
use super::retry::{Decision, RetryPolicy, decide, retry_after};
use super::{ArmError, ClusterDoc, ClusterId};

pub use list::{MAX_LIST_PAGES, ManagedClusterSummary};

/// Stable api-version used by default; `az aks mesh` talks 2026-06-01 (azure-mgmt-containerservice 41.6).
pub const DEFAULT_API_VERSION: &str = "2026-06-01";
/// Public-cloud ARM.
pub const DEFAULT_ARM_ENDPOINT: &str = "https://management.azure.com";

/// Pacing of long-running operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PollOptions {
    /// Interval when the server sends no Retry-After.
    pub default_interval: Duration,
    /// Floor and ceiling applied to any interval (server-sent or default).
    pub min_interval: Duration,
    pub max_interval: Duration,
    /// Give up polling (the operation may go on) after this long.
    pub timeout: Duration,
}

impl Default for PollOptions {
    fn default() -> Self {
        Self {
            default_interval: Duration::from_secs(15),
            min_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(60),
            timeout: Duration::from_secs(30 * 60),
        }
    }
}

impl PollOptions {
    fn interval(&self, asked: Option<Duration>) -> Duration {
        asked
            .unwrap_or(self.default_interval)
            .clamp(self.min_interval, self.max_interval.max(self.min_interval))
    }
}

/// How to reach ARM.
#[derive(Clone, Debug)]
pub struct ArmClientOptions {
    /// e.g. `https://management.azure.com`, `https://management.usgovcloudapi.net`.
    /// Plain `http` is accepted only for loopback hosts (tests).
    pub endpoint: String,
    pub api_version: String,
    /// Token scope; default `<endpoint origin>/.default`.
    pub scope: Option<String>,
    pub retry: RetryPolicy,
    pub poll: PollOptions,
}

impl Default for ArmClientOptions {
    fn default() -> Self {
        Self {
            endpoint: DEFAULT_ARM_ENDPOINT.to_string(),
            api_version: DEFAULT_API_VERSION.to_string(),
            scope: None,
            retry: RetryPolicy::default(),
            poll: PollOptions::default(),
        }
    }
}

/// A PUT that ARM accepted: what a caller journals before polling.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutAccepted {
    pub cluster: ClusterId,
    pub revisions: Vec<String>,
    /// The `Azure-AsyncOperation` URL, verbatim (`None` when ARM answered synchronously or
    /// nothing had to be PUT).
    pub operation_url: Option<String>,
    /// The cluster already had these revisions and was idle: nothing was PUT.
    pub already_applied: bool,
    /// HTTP status of the PUT (0 when nothing was PUT).
    pub status: u16,
    /// The eTag sent as If-Match.
    pub if_match: Option<String>,
}

/// Body of an `Azure-AsyncOperation` status URL.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationStatus {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub start_time: Option<String>,
    #[serde(default)]
    pub end_time: Option<String>,
    #[serde(default)]
    pub error: Option<OperationErrorBody>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationErrorBody {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
    /// Inner errors; AKS puts the real cause here under a generic outer code.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<OperationErrorBody>,
}

impl OperationErrorBody {
    /// The message with the first inner error appended: `outer (InnerCode: inner message)`.
    pub fn full_message(&self) -> String {
        match self.details.first() {
            Some(inner) if !inner.code.is_empty() || !inner.message.is_empty() => {
                format!("{} ({}: {})", self.message, inner.code, inner.message)
            }
            _ => self.message.clone(),
        }
    }
}

impl OperationStatus {
    pub fn is_terminal(&self) -> bool {
        ["Succeeded", "Failed", "Canceled"]
            .iter()
            .any(|t| t.eq_ignore_ascii_case(&self.status))
    }
}

/// The caller's check of the cluster before each PUT; `Err` carries the reason.
pub type Expectation<'a> = &'a (dyn Fn(&ClusterDoc) -> Result<(), String> + Send + Sync);

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn error(&self) -> (String, String) {
        parse_error_body(&self.body)
    }

    fn decision(&self) -> Decision {
        if (200..300).contains(&self.status) {
            return Decision::Success;
        }
        let (code, message) = self.error();
        decide(self.status, Some(&code), Some(&message))
    }
}

/// ARM accepted the PUT of `revisions` (sent with `If-Match: etag`).
fn put_accepted(
    id: &ClusterId,
    revisions: &[String],
    answer: &Answer,
    etag: String,
) -> PutAccepted {
    let operation_url = answer
        .headers
        .get("azure-asyncoperation")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let cluster = id.to_string();
    tracing::info!(
        cluster,
        status = answer.status,
        ?revisions,
        operation = operation_url.as_deref().map(redact_str),
        "PUT accepted"
    );
    PutAccepted {
        cluster: id.clone(),
        revisions: revisions.to_vec(),
        operation_url,
        already_applied: false,
        status: answer.status,
        if_match: Some(etag),
    }
}

/// What a request is about, for errors and logs.
struct Ctx<'a> {
    cluster: &'a str,
    what: &'a str,
}

/// The ARM client.
#[derive(Clone)]
pub struct ArmClient {
    endpoint: Url,
    api_version: String,
    scope: String,
    credential: Arc<dyn TokenCredential>,
    http: reqwest::Client,
    retry: RetryPolicy,
    poll: PollOptions,
}

impl std::fmt::Debug for ArmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArmClient")
            .field("endpoint", &self.endpoint.as_str())
            .field("api_version", &self.api_version)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

fn is_loopback(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "[::1]" | "::1")
}

impl ArmClient {
    /// A client for `options.endpoint`, authenticating with `credential`, sending through
    /// `http` (the client from [`super::build_http_client`], shared with the credential).
    pub fn new(
        options: ArmClientOptions,
        credential: Arc<dyn TokenCredential>,
        http: reqwest::Client,
    ) -> Result<Self, ArmError> {
        let bad = |message: &str| ArmError::Endpoint {
            endpoint: options.endpoint.clone(),
            message: message.to_string(),
        };
        let endpoint = Url::parse(&options.endpoint).map_err(|e| bad(&e.to_string()))?;
        let host = endpoint.host_str().ok_or_else(|| bad("it has no host"))?;
        match endpoint.scheme() {
            "https" => {}
            "http" if is_loopback(host) => {}
            _ => return Err(bad("it must be an https:// URL")),
        }
        if endpoint.path() != "/" || endpoint.query().is_some() {
            return Err(bad(
                "it must be an origin only, like https://management.azure.com",
            ));
        }
        let origin = endpoint.origin().ascii_serialization();
        let scope = options
            .scope
            .unwrap_or_else(|| format!("{origin}/.default"));
        Ok(Self {
            endpoint,
            api_version: options.api_version,
            scope,
            credential,
            http,
            retry: options.retry,
            poll: options.poll,
        })
    }

    /// Everything from settings: the shared HTTPS client (with `extra_ca` as `(origin, PEM)`),
    /// the credential (resolving `--auth auto` by `env`), and the client. Returns which
    /// credential was chosen and why, for the caller to show.
    pub fn connect(
        options: ArmClientOptions,
        auth: &super::AuthSettings,
        extra_ca: Option<(&str, &[u8])>,
        env: super::auth::EnvLookup<'_>,
    ) -> Result<(Self, super::CredentialChoice), ArmError> {
        let http = super::build_http_client(extra_ca)?;
        let (credential, choice) = super::build_credential(auth, &http, env)?;
        Ok((Self::new(options, credential, http)?, choice))
    }

    pub fn endpoint(&self) -> &str {
        self.endpoint.as_str().trim_end_matches('/')
    }

    /// The credential ARM's tokens come from (the analysis gate's Azure Monitor provider asks
    /// it for its own scope).
    pub fn credential(&self) -> Arc<dyn TokenCredential> {
        self.credential.clone()
    }

    /// The HTTPS client (extra CA included) ARM's requests go through.
    pub fn http(&self) -> reqwest::Client {
        self.http.clone()
    }

    pub fn api_version(&self) -> &str {
        &self.api_version
    }

    fn url(&self, path: &str) -> Result<Url, ArmError> {
        let text = format!(
            "{}{}?api-version={}",
            self.endpoint(),
            path,
            self.api_version
        );
        Url::parse(&text).map_err(|e| ArmError::Endpoint {
            endpoint: text,
            message: e.to_string(),
        })
    }

    async fn token(&self) -> Result<String, ArmError> {
        let token = self
            .credential
            .get_token(&[self.scope.as_str()], None)
            .await
            .map_err(|source| match tls_problem(&source) {
                Some(problem) => ArmError::Tls {
                    peer: format!("the Azure token endpoint (for {})", self.scope),
                    problem,
                },
                None => ArmError::Token {
                    scope: self.scope.clone(),
                    source,
                },
            })?;
        Ok(token.token.secret().to_string())
    }

    /// The request as ARM takes it: JSON, a bearer token, an empty body on a bodiless POST,
    /// and `If-Match` when given.
    fn request(
        &self,
        method: &Method,
        url: &Url,
        token: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let req = self
            .http
            .request(method.clone(), url.clone())
            .bearer_auth(token)
            .header(http::header::ACCEPT, "application/json");
        let req = match body {
            Some(b) => req.json(b),
            None if *method == Method::POST => req.body(Vec::new()),
            None => req,
        };
        match if_match {
            Some(etag) => req.header(http::header::IF_MATCH, etag),
            None => req,
        }
    }

    /// One request with transient retries (429, 5xx, connect errors and timeouts).
    async fn send(
        &self,
        method: Method,
        url: &Url,
        body: Option<&Value>,
        if_match: Option<&str>,
        ctx: &Ctx<'_>,
    ) -> Result<Answer, ArmError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let token = self.token().await?;
            let req = self.request(&method, url, &token, body, if_match);
            // reqwest's errors print the full URL, signed query included: drop it, as `url`
            // is named redacted.
            let resp = match req.send().await.map_err(reqwest::Error::without_url) {
                Ok(resp) => resp,
                Err(err)
                    if (err.is_connect() || err.is_timeout())
                        && tls_problem(&err).is_none()
                        && attempt < self.retry.max_attempts =>
                {
                    let delay = self.retry.backoff(attempt);
                    tracing::warn!(method = %method, what = ctx.what, cluster = ctx.cluster, %err, attempt, ?delay, "ARM unreachable; retrying");
                    tokio::time::sleep(delay).await;
                    continue;
                }
                Err(source) => return Err(transport_error(ctx, url, source)),
            };
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let limit = if status >= 400 {
                ARM_ERROR_BODY_LIMIT
            } else {
                ARM_BODY_LIMIT
            };
            let body = read_limited(resp, limit).await.map_err(|e| match e {
                LimitedBodyError::TooLarge { limit } => ArmError::BodyTooLarge {
                    what: ctx.what.to_string(),
                    url: redact(url),
                    limit,
                },
                LimitedBodyError::Read(source) => transport_error(ctx, url, source.without_url()),
            })?;
            let answer = Answer {
                status,
                headers,
                body,
            };
            let request_id = answer
                .headers
                .get("x-ms-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            tracing::debug!(method = %method, what = ctx.what, status, request_id, "ARM answered");
            if answer.decision() != Decision::Transient {
                return Ok(answer);
            }
            let (code, message) = answer.error();
            if attempt >= self.retry.max_attempts {
                return Err(ArmError::RetriesExhausted {
                    cluster: ctx.cluster.to_string(),
                    method: method.to_string(),
                    what: ctx.what.to_string(),
                    status,
                    code,
                    message,
                    attempts: attempt,
                });
            }
            let delay = self.retry.delay(attempt, retry_after(&answer.headers));
            tracing::warn!(method = %method, what = ctx.what, cluster = ctx.cluster, status, code, attempt, ?delay, request_id, "ARM asked to retry");
            tokio::time::sleep(delay).await;
        }
    }

    fn api_error(method: &Method, answer: &Answer, ctx: &Ctx<'_>) -> ArmError {
        let (code, message) = answer.error();
        ArmError::Api {
            cluster: ctx.cluster.to_string(),
            method: method.to_string(),
            what: ctx.what.to_string(),
            status: answer.status,
            code,
            message,
        }
    }

    fn json<T: serde::de::DeserializeOwned>(answer: &Answer, ctx: &Ctx<'_>) -> Result<T, ArmError> {
        serde_json::from_slice(&answer.body).map_err(|e| ArmError::Decode {
            what: ctx.what.to_string(),
            message: format!("the body is not the expected JSON: {e}"),
        })
    }

    /// GET the managed cluster.
    pub async fn get_cluster(&self, id: &ClusterId) -> Result<ClusterDoc, ArmError> {
        let cluster = id.to_string();
        let ctx = Ctx {
            cluster: &cluster,
            what: "managed cluster",
        };
        let url = self.url(&id.path())?;
        let answer = self.send(Method::GET, &url, None, None, &ctx).await?;
        if answer.status != 200 {
            return Err(Self::api_error(&Method::GET, &answer, &ctx));
        }
        let body: Value = Self::json(&answer, &ctx)?;
        let header_etag = answer
            .headers
            .get(http::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.to_string());
        Ok(ClusterDoc::new(id.clone(), body, header_etag))
    }

    /// GETs the cluster until its `provisioningState` is terminal (another operation ended).
    pub async fn wait_idle(&self, id: &ClusterId) -> Result<ClusterDoc, ArmError> {
        let started = Instant::now();
        loop {
            let doc = self.get_cluster(id).await?;
            if doc.is_idle() {
                return Ok(doc);
            }
            let state = doc.provisioning_state().unwrap_or("").to_string();
            if started.elapsed() >= self.poll.timeout {
                return Err(ArmError::BusyTimeout {
                    cluster: id.to_string(),
                    state,
                    waited: started.elapsed(),
                });
            }
            let delay = self.poll.interval(None);
            tracing::info!(cluster = %id, state, ?delay, "cluster busy; waiting");
            tokio::time::sleep(delay).await;
        }
    }

    /// GET → `expected` → PUT with only the revisions changed and `If-Match`, re-reading on
    /// eTag conflicts and waiting out other operations. Returns once ARM accepted the PUT.
    /// When the cluster already has `revisions` and is idle (a resumed run), nothing is PUT.
    pub async fn begin_set_revisions(
        &self,
        id: &ClusterId,
        revisions: &[String],
        expected: Expectation<'_>,
    ) -> Result<PutAccepted, ArmError> {
        let cluster = id.to_string();
        let ctx = Ctx {
            cluster: &cluster,
            what: "managed cluster",
        };
        let url = self.url(&id.path())?;
        let mut round = 0;
        loop {
            round += 1;
            let doc = self.get_cluster(id).await?;
            expected(&doc).map_err(|message| ArmError::Precondition {
                cluster: cluster.clone(),
                message,
            })?;
            if doc.is_idle()
                && doc.provisioning_state() == Some("Succeeded")
                && same_revisions(&doc.revisions(), revisions)
            {
                tracing::info!(
                    cluster,
                    ?revisions,
                    "revisions already applied; nothing to PUT"
                );
                return Ok(PutAccepted {
                    cluster: id.clone(),
                    revisions: revisions.to_vec(),
                    operation_url: None,
                    already_applied: true,
                    status: 0,
                    if_match: doc.etag.clone(),
                });
            }
            let etag = doc.etag.clone().ok_or_else(|| ArmError::MissingEtag {
                cluster: cluster.clone(),
            })?;
            let body = doc
                .with_revisions(revisions)
                .map_err(|source| ArmError::Body {
                    cluster: cluster.clone(),
                    source,
                })?;
            let answer = self
                .send(Method::PUT, &url, Some(&body), Some(&etag), &ctx)
                .await?;
            match answer.decision() {
                Decision::Success => return Ok(put_accepted(id, revisions, &answer, etag)),
                decision @ (Decision::Reread | Decision::WaitForIdle)
                    if round < self.retry.max_attempts =>
                {
                    self.before_next_put(id, decision, &answer).await?;
                }
                Decision::Reread | Decision::WaitForIdle => {
                    let (code, message) = answer.error();
                    return Err(ArmError::RetriesExhausted {
                        cluster,
                        method: "PUT".into(),
                        what: "managed cluster".into(),
                        status: answer.status,
                        code,
                        message,
                        attempts: round,
                    });
                }
                Decision::Transient | Decision::Fail => {
                    return Err(Self::api_error(&Method::PUT, &answer, &ctx));
                }
            }
        }
    }

    /// After a PUT ARM refused for now: wait for the other operation to end, or (an eTag
    /// conflict) just re-read.
    async fn before_next_put(
        &self,
        id: &ClusterId,
        decision: Decision,
        answer: &Answer,
    ) -> Result<(), ArmError> {
        let cluster = id.to_string();
        let (code, message) = answer.error();
        if decision == Decision::WaitForIdle {
            tracing::warn!(
                cluster,
                code,
                message,
                "another operation is running; waiting for it"
            );
            self.wait_idle(id).await?;
        } else {
            tracing::warn!(
                cluster,
                status = answer.status,
                code,
                "eTag conflict; re-reading the cluster"
            );
        }
        Ok(())
    }

    fn check_same_origin(&self, url: &Url, cluster: &str) -> Result<(), ArmError> {
        if url.origin() != self.endpoint.origin() {
            return Err(ArmError::Decode {
                what: format!("the operation URL of {cluster}"),
                message: format!(
                    "{} is not on the ARM endpoint {}; refusing to send a token there",
                    redact(url),
                    self.endpoint()
                ),
            });
        }
        Ok(())
    }

    /// Polls an `Azure-AsyncOperation` URL (verbatim) until the operation is terminal.
    /// `Succeeded` returns the status; `Failed`/`Canceled` is [`ArmError::OperationFailed`].
    pub async fn poll_operation(
        &self,
        id: &ClusterId,
        operation_url: &str,
    ) -> Result<OperationStatus, ArmError> {
        let cluster = id.to_string();
        let ctx = Ctx {
            cluster: &cluster,
            what: "operation status",
        };
        let url = Url::parse(operation_url).map_err(|e| ArmError::Decode {
            what: "the operation URL".into(),
            message: e.to_string(),
        })?;
        self.check_same_origin(&url, &cluster)?;
        let started = Instant::now();
        loop {
            let answer = self.send(Method::GET, &url, None, None, &ctx).await?;
            if answer.status != 200 {
                return Err(Self::api_error(&Method::GET, &answer, &ctx));
            }
            let status: OperationStatus = Self::json(&answer, &ctx)?;
            if status.is_terminal() {
                if status.status.eq_ignore_ascii_case("Succeeded") {
                    if let Some(err) = &status.error {
                        // AKS has reported Succeeded with NotLatestOperation; the re-GET decides.
                        tracing::warn!(
                            cluster,
                            code = err.code,
                            message = err.message,
                            "operation Succeeded with an error attached"
                        );
                    }
                    return Ok(status);
                }
                let err = status.error.clone().unwrap_or_default();
                return Err(ArmError::OperationFailed {
                    cluster,
                    operation_url: operation_url.to_string(),
                    status: status.status,
                    message: err.full_message(),
                    code: err.code,
                });
            }
            if started.elapsed() >= self.poll.timeout {
                return Err(ArmError::PollTimeout {
                    cluster,
                    operation_url: operation_url.to_string(),
                    waited: started.elapsed(),
                });
            }
            let delay = self.poll.interval(retry_after(&answer.headers));
            tracing::debug!(cluster, status = status.status, ?delay, "operation running");
            tokio::time::sleep(delay).await;
        }
    }

    /// Re-reads the cluster (waiting while it is busy) and requires `Succeeded` with exactly
    /// `revisions`.
    pub async fn confirm_revisions(
        &self,
        id: &ClusterId,
        revisions: &[String],
    ) -> Result<ClusterDoc, ArmError> {
        let doc = self.wait_idle(id).await?;
        let actual = doc.revisions();
        if doc.provisioning_state() == Some("Succeeded") && same_revisions(&actual, revisions) {
            return Ok(doc);
        }
        Err(ArmError::RevisionsMismatch {
            cluster: id.to_string(),
            state: doc.provisioning_state().unwrap_or("").to_string(),
            actual,
            expected: revisions.to_vec(),
            detail: doc
                .provisioning_error()
                .map(|(c, m)| format!(": {c}: {m}"))
                .unwrap_or_default(),
        })
    }

    /// Sets the revisions end to end: [`Self::begin_set_revisions`], [`Self::poll_operation`],
    /// [`Self::confirm_revisions`].
    pub async fn set_revisions(
        &self,
        id: &ClusterId,
        revisions: &[String],
        expected: Expectation<'_>,
    ) -> Result<ClusterDoc, ArmError> {
        let accepted = self.begin_set_revisions(id, revisions, expected).await?;
        if let Some(url) = &accepted.operation_url {
            self.poll_operation(id, url).await?;
        }
        self.confirm_revisions(id, revisions).await
    }

    /// `GET …/meshUpgradeProfiles/istio`. While two revisions are installed ARM answers 409
    /// `ServiceMeshUpgradeInProgress`: that is [`ArmError::UpgradeInProgress`].
    pub async fn mesh_upgrade_profile(
        &self,
        id: &ClusterId,
    ) -> Result<MeshUpgradeProfile, ArmError> {
        let cluster = id.to_string();
        let ctx = Ctx {
            cluster: &cluster,
            what: "meshUpgradeProfiles/istio",
        };
        let url = self.url(&format!("{}/meshUpgradeProfiles/istio", id.path()))?;
        let answer = self.send(Method::GET, &url, None, None, &ctx).await?;
        if answer.status == 200 {
            return Self::json(&answer, &ctx);
        }
        let (code, message) = answer.error();
        if answer.status == 409 && code.contains("ServiceMeshUpgradeInProgress") {
            return Err(ArmError::UpgradeInProgress { cluster, message });
        }
        Err(Self::api_error(&Method::GET, &answer, &ctx))
    }

    /// `GET /subscriptions/{sub}/providers/Microsoft.ContainerService/locations/{location}/meshRevisionProfiles/istio`.
    pub async fn mesh_revision_profile(
        &self,
        subscription: &str,
        location: &str,
    ) -> Result<MeshRevisionProfile, ArmError> {
        let scope = format!("/subscriptions/{subscription} in {location}");
        let ctx = Ctx {
            cluster: &scope,
            what: "meshRevisionProfiles/istio",
        };
        let url = self.url(&format!(
            "/subscriptions/{subscription}/providers/Microsoft.ContainerService/locations/{location}/meshRevisionProfiles/istio"
        ))?;
        let answer = self.send(Method::GET, &url, None, None, &ctx).await?;
        if answer.status != 200 {
            return Err(Self::api_error(&Method::GET, &answer, &ctx));
        }
        Self::json(&answer, &ctx)
    }

    /// `POST …/listClusterUserCredential`: the first kubeconfig, base64-decoded.
    pub async fn list_cluster_user_kubeconfig(&self, id: &ClusterId) -> Result<Vec<u8>, ArmError> {
        let cluster = id.to_string();
        let ctx = Ctx {
            cluster: &cluster,
            what: "listClusterUserCredential",
        };
        let url = self.url(&format!("{}/listClusterUserCredential", id.path()))?;
        let answer = self.send(Method::POST, &url, None, None, &ctx).await?;
        if answer.status != 200 {
            return Err(Self::api_error(&Method::POST, &answer, &ctx));
        }
        #[derive(Deserialize)]
        struct Creds {
            #[serde(default)]
            kubeconfigs: Vec<Kubeconfig>,
        }
        #[derive(Deserialize)]
        struct Kubeconfig {
            #[serde(default)]
            name: String,
            #[serde(default)]
            value: String,
        }
        let creds: Creds = Self::json(&answer, &ctx)?;
        let first = creds
            .kubeconfigs
            .into_iter()
            .next()
            .ok_or_else(|| ArmError::Decode {
                what: ctx.what.to_string(),
                message: "no kubeconfig in the answer".into(),
            })?;
        base64::engine::general_purpose::STANDARD
            .decode(first.value.trim())
            .map_err(|e| ArmError::Decode {
                what: ctx.what.to_string(),
                message: format!("kubeconfig {:?} is not base64: {e}", first.name),
            })
    }
}

/// A request that got no answer: a TLS failure says its cause and fix; anything else is
/// [`ArmError::Transport`]. `source` must come without its URL (`without_url`).
fn transport_error(ctx: &Ctx<'_>, url: &Url, source: reqwest::Error) -> ArmError {
    match tls_problem(&source) {
        Some(problem) => ArmError::Tls {
            peer: format!("ARM for {} at {}", ctx.what, redact(url)),
            problem,
        },
        None => ArmError::Transport {
            what: ctx.what.to_string(),
            url: redact(url),
            source,
        },
    }
}
