//! The fleet's ARM listener: sign-in and token endpoints, ARM's list of managed clusters
//! (paged), and everything under a member's cluster id handed to that member's own ARM
//! router (a tower service call, no HTTP in between).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use tower::ServiceExt;

use super::{FleetRequest, FleetScenario};
use crate::arm::ArmError;
use crate::{RequestLog, Shared, SimHandle};

/// One member as the fleet's router sees it.
pub(crate) struct Member {
    pub id: String,
    pub ring: Option<String>,
    pub shared: Arc<Shared>,
    pub router: axum::Router,
}

impl Member {
    fn info(&self) -> &crate::ConnectionInfo {
        &self.shared.info
    }

    fn in_subscription(&self, sub: &str) -> bool {
        self.info().subscription.eq_ignore_ascii_case(sub)
    }

    fn in_group(&self, sub: &str, rg: &str) -> bool {
        self.in_subscription(sub) && self.info().resource_group.eq_ignore_ascii_case(rg)
    }
}

/// The fleet's routing state.
pub(crate) struct FleetState {
    members: Vec<Member>,
    page_size: usize,
    next_link_loop: bool,
    sim_token: String,
    /// What the fleet answered itself (token requests), in the fleet-wide order.
    log: RequestLog,
}

impl FleetState {
    pub fn new(
        fleet: &FleetScenario,
        handles: &[SimHandle],
        sim_token: String,
        log: RequestLog,
    ) -> Self {
        let members = fleet
            .members
            .iter()
            .zip(handles)
            .map(|(m, h)| Member {
                id: m.cluster_id(),
                ring: m.ring().map(str::to_string),
                shared: h.shared.clone(),
                router: crate::arm::router(h.shared.clone()),
            })
            .collect();
        Self {
            members,
            page_size: fleet.page_size.max(1),
            next_link_loop: fleet.next_link_loop,
            sim_token,
            log,
        }
    }

    /// Every member's log and the fleet's own, merged in order.
    pub fn requests(&self) -> Vec<FleetRequest> {
        let tagged = |cluster: Option<&str>, log: &RequestLog| {
            log.snapshot()
                .into_iter()
                .map(|record| FleetRequest {
                    cluster: cluster.map(str::to_string),
                    order: record.order,
                    record,
                })
                .collect::<Vec<_>>()
        };
        let mut all = tagged(None, &self.log);
        for m in &self.members {
            all.extend(tagged(Some(&m.id), &m.shared.requests));
        }
        all.sort_by_key(|r| r.order);
        all
    }

    /// The member whose state stands for the fleet's identity (tokens, sign-in documents).
    fn first(&self) -> &Arc<Shared> {
        &self.members[0].shared
    }
}

pub(crate) fn router(state: Arc<FleetState>) -> axum::Router {
    axum::Router::new().fallback(dispatch).with_state(state)
}

/// Where a request goes.
enum Target {
    /// A member's ARM router, request untouched.
    Member(usize),
    /// ARM's list of managed clusters in a subscription, or in one of its resource groups.
    List { sub: String, rg: Option<String> },
    /// The fleet answers itself (sign-in, tokens, introspection).
    Fleet,
    /// An ARM error (after authentication).
    Error(ArmError),
}

fn segments(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

async fn dispatch(State(fleet): State<Arc<FleetState>>, req: Request) -> Response {
    let segs = segments(req.uri().path());
    let target = if segs.first().is_some_and(|s| s.eq_ignore_ascii_case("_sim")) {
        sim_target(&fleet, req.uri())
    } else {
        target(&fleet, &segs)
    };
    match target {
        Target::Member(i) => forward(&fleet.members[i].router, req).await,
        Target::List { sub, rg } => {
            let answer = authenticated(&fleet, &req)
                .and_then(|()| list(&fleet, &sub, rg.as_deref(), req.method(), req.uri()));
            with_request_id(answer.unwrap_or_else(IntoResponse::into_response))
        }
        Target::Error(err) => {
            let answer = authenticated(&fleet, &req).and(Err::<Response, _>(err));
            with_request_id(answer.unwrap_or_else(IntoResponse::into_response))
        }
        Target::Fleet => fleet_request(&fleet, req, &segs).await,
    }
}

async fn forward(router: &axum::Router, req: Request) -> Response {
    match router.clone().oneshot(req).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

fn authenticated(fleet: &FleetState, req: &Request) -> Result<(), ArmError> {
    crate::arm::authenticate(fleet.first(), req.headers())
}

fn with_request_id(mut response: Response) -> Response {
    if let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        response.headers_mut().insert("x-ms-request-id", v.clone());
        response
            .headers_mut()
            .insert("x-ms-correlation-request-id", v);
    }
    response
}

/// `/_sim/*?cluster=ID|NAME` goes to that member; `/_sim/state` and `/_sim/requests` without
/// one are the fleet's.
fn sim_target(fleet: &FleetState, uri: &Uri) -> Target {
    let cluster = query_param(uri, "cluster");
    match cluster {
        None => Target::Fleet,
        Some(c) => match fleet.members.iter().position(|m| {
            m.id.eq_ignore_ascii_case(&c) || m.info().cluster.eq_ignore_ascii_case(&c)
        }) {
            Some(i) => Target::Member(i),
            None => Target::Error(ArmError::new(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                format!("No cluster {c:?} in the simulated fleet."),
            )),
        },
    }
}

/// The value of query parameter `name` (case-insensitive), decoded.
fn query_param(uri: &Uri, name: &str) -> Option<String> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(uri.query().unwrap_or("")).unwrap_or_default();
    pairs
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// Routes an ARM path by its subscription, resource group and cluster name.
fn target(fleet: &FleetState, segs: &[String]) -> Target {
    let is = |i: usize, lit: &str| segs.get(i).is_some_and(|s| s.eq_ignore_ascii_case(lit));
    if !is(0, "subscriptions") || segs.len() <= 2 {
        return Target::Fleet;
    }
    let sub = segs[1].as_str();
    let Some(first_in_sub) = fleet.members.iter().position(|m| m.in_subscription(sub)) else {
        return Target::Error(ArmError::subscription_not_found(sub));
    };
    let provider = |i: usize| is(i, "providers") && is(i + 1, "Microsoft.ContainerService");
    if provider(2) && segs.len() == 5 && is(4, "managedClusters") {
        return Target::List {
            sub: sub.to_string(),
            rg: None,
        };
    }
    if provider(2) && is(4, "locations") {
        return Target::Member(location_member(fleet, sub, segs).unwrap_or(first_in_sub));
    }
    if !is(2, "resourceGroups") || segs.len() < 4 {
        return Target::Member(first_in_sub);
    }
    let rg = segs[3].as_str();
    let Some(first_in_group) = fleet.members.iter().position(|m| m.in_group(sub, rg)) else {
        return Target::Error(ArmError::resource_group_not_found(rg));
    };
    if !(provider(4) && is(6, "managedClusters")) {
        return Target::Member(first_in_group);
    }
    let Some(name) = segs.get(7) else {
        return Target::List {
            sub: sub.to_string(),
            rg: Some(rg.to_string()),
        };
    };
    match fleet
        .members
        .iter()
        .position(|m| m.in_group(sub, rg) && m.info().cluster.eq_ignore_ascii_case(name))
    {
        Some(i) => Target::Member(i),
        None => Target::Error(ArmError::cluster_not_found(rg, name)),
    }
}

/// `…/locations/{l}/operations/{id}` belongs to the member that started the operation;
/// other location resources (mesh revision profiles) to a member in that location.
fn location_member(fleet: &FleetState, sub: &str, segs: &[String]) -> Option<usize> {
    let in_sub = |m: &Member| m.in_subscription(sub);
    if segs.len() == 8 && segs[6].eq_ignore_ascii_case("operations") {
        let op = &segs[7];
        return fleet
            .members
            .iter()
            .position(|m| in_sub(m) && m.shared.arm.has_operation(op));
    }
    let location = segs.get(5)?;
    fleet
        .members
        .iter()
        .position(|m| in_sub(m) && m.info().location.eq_ignore_ascii_case(location))
}

/// `GET …/managedClusters`: the members' documents, `page_size` at a time, with an absolute
/// `nextLink` carrying a `$skipToken` while more remain.
fn list(
    fleet: &FleetState,
    sub: &str,
    rg: Option<&str>,
    method: &Method,
    uri: &Uri,
) -> Result<Response, ArmError> {
    if method != Method::GET {
        return Err(ArmError::method_not_allowed(method.as_str(), uri.path()));
    }
    let segs = segments(uri.path());
    let refs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let version = crate::arm::checked_api_version(uri, &refs)?;
    let matching: Vec<&Member> = fleet
        .members
        .iter()
        .filter(|m| match rg {
            Some(rg) => m.in_group(sub, rg),
            None => m.in_subscription(sub),
        })
        .collect();
    let skip = match query_param(uri, "$skipToken") {
        None => 0,
        Some(token) => decode_skip(&token).ok_or_else(|| invalid_skip_token(&token))?,
    };
    let value: Vec<serde_json::Value> = matching
        .iter()
        .skip(skip)
        .take(fleet.page_size)
        .map(|m| m.shared.arm.cluster_document())
        .collect();
    let next = if fleet.next_link_loop && skip > 0 {
        skip
    } else {
        skip + fleet.page_size
    };
    let mut body = json!({ "value": value });
    if next < matching.len() {
        let endpoint = &fleet.first().info.arm_endpoint;
        body["nextLink"] = json!(format!(
            "{endpoint}{}?api-version={version}&$skipToken={}",
            uri.path(),
            encode_skip(next)
        ));
    }
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}

fn encode_skip(skip: usize) -> String {
    URL_SAFE_NO_PAD.encode(format!("{{\"skip\":{skip}}}"))
}

fn decode_skip(token: &str) -> Option<usize> {
    let bytes = URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("skip")?.as_u64().map(|n| n as usize)
}

fn invalid_skip_token(token: &str) -> ArmError {
    ArmError::new(
        StatusCode::BAD_REQUEST,
        "InvalidSkipToken",
        format!(
            "The skip token '{token}' is not valid; follow the nextLink of the previous page verbatim."
        ),
    )
}

/// What the fleet answers itself: the token endpoint and sign-in documents (one identity for
/// every member), `/subscriptions`, and `/_sim/state` and `/_sim/requests`.
async fn fleet_request(fleet: &FleetState, req: Request, segs: &[String]) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let refs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let (method, uri, headers) = (&parts.method, &parts.uri, &parts.headers);
    if refs.first().is_some_and(|s| s.eq_ignore_ascii_case("_sim")) {
        return introspect(fleet, method, &refs, uri, headers);
    }
    if refs
        .first()
        .is_some_and(|s| s.eq_ignore_ascii_case("subscriptions"))
    {
        let answer = crate::arm::authenticate(fleet.first(), headers)
            .and_then(|()| subscriptions(fleet, method, uri, refs.get(1).copied()));
        return with_request_id(answer.unwrap_or_else(IntoResponse::into_response));
    }
    let response = identity_request(fleet.first(), method, uri, headers, &body, &refs);
    if !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        let api = if refs.len() == 4 { "token" } else { "arm" };
        fleet
            .log
            .record(api, method.as_str(), uri.path(), response.status().as_u16());
    }
    response
}

/// Token endpoint, OpenID configuration, cloud metadata and `/tenants`, as a single
/// cluster's ARM listener serves them (every member has the fleet's identity).
fn identity_request(
    first: &Arc<Shared>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    segs: &[&str],
) -> Response {
    crate::arm::identity_request(first, method, uri, headers, body, segs)
        .unwrap_or_else(|| ArmError::no_route(method.as_str(), uri.path()).into_response())
}

/// `GET /subscriptions` (every subscription of the fleet) or `GET /subscriptions/{id}`.
fn subscriptions(
    fleet: &FleetState,
    method: &Method,
    uri: &Uri,
    id: Option<&str>,
) -> Result<Response, ArmError> {
    if *method != Method::GET {
        return Err(ArmError::method_not_allowed(method.as_str(), uri.path()));
    }
    let mut subs: Vec<serde_json::Value> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for m in &fleet.members {
        let sub = m.info().subscription.as_str();
        if !seen.iter().any(|s| s.eq_ignore_ascii_case(sub)) {
            seen.push(sub);
            subs.push(crate::arm::signin_subscription(&m.shared));
        }
    }
    let body = match id {
        None => json!({"value": subs, "count": {"type": "Total", "value": subs.len()}}),
        Some(id) => subs
            .into_iter()
            .find(|s| {
                s["subscriptionId"]
                    .as_str()
                    .is_some_and(|x| x.eq_ignore_ascii_case(id))
            })
            .ok_or_else(|| ArmError::subscription_not_found(id))?,
    };
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}

/// `/_sim/requests[?since=ORDER]`: every member's mutating requests and the fleet's own, in
/// order, each naming its cluster; `/_sim/state`: each member's state.
fn introspect(
    fleet: &FleetState,
    method: &Method,
    segs: &[&str],
    uri: &Uri,
    headers: &HeaderMap,
) -> Response {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let authorized = token == Some(fleet.sim_token.as_str())
        || crate::arm::authenticate(fleet.first(), headers).is_ok();
    if !authorized {
        return ArmError::invalid_token().into_response();
    }
    if *method != Method::GET {
        return ArmError::method_not_allowed(method.as_str(), uri.path()).into_response();
    }
    let body = match segs {
        [_, "requests"] => {
            let since: u64 = query_param(uri, "since")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let requests: Vec<FleetRequest> = fleet
                .requests()
                .into_iter()
                .filter(|r| r.order > since)
                .collect();
            json!({ "requests": requests })
        }
        [_, "state"] => {
            let members: Vec<serde_json::Value> = fleet
                .members
                .iter()
                .map(|m| json!({"cluster": m.id, "ring": m.ring, "state": crate::arm::introspect_state(&m.shared)}))
                .collect();
            json!({ "members": members })
        }
        _ => return ArmError::no_route(method.as_str(), uri.path()).into_response(),
    };
    (StatusCode::OK, axum::Json(body)).into_response()
}
