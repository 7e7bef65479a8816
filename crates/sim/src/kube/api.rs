//! HTTP routing of the API server: authentication, discovery, and the verbs on every
//! resource path (`/api/v1/...`, `/apis/{group}/{version}/...`), with the real Status errors.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};

use super::discovery;
use super::gc::{self, Propagation};
use super::object::{labels_of, meta_str, metadata_mut, name_of, ns_of, rv_of, uid_of};
use super::patch::{self, PatchType};
use super::proto;
use super::resources::{self, ResourceType};
use super::selectors::{FieldSelector, LabelSelector};
use super::status::{ApiError, json_response};
use super::store::{Obj, Stored};
use super::table;
use super::watch::{self, WatchRequest};
use crate::Shared;

pub fn router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(shared)
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    shared.requests.count("kube", method.as_str());
    let wants = Wants::of(&req);
    let resp = match dispatch(&shared, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    let resp = wants.answer(&method, &path, resp).await;
    if matches!(
        method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) {
        shared
            .requests
            .record("kube", method.as_str(), &path, resp.status().as_u16());
    }
    resp
}

/// What the client asked the answer to be (`Accept`): a `meta.k8s.io` Table (`kubectl get`),
/// protobuf, or the JSON every handler writes.
struct Wants {
    table: Option<&'static str>,
    include: table::Include,
    protobuf: bool,
    watch: bool,
}

impl Wants {
    fn of(req: &Request) -> Wants {
        let accept = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let q = query_map(req);
        Wants {
            table: table::wanted(accept),
            include: table::Include::parse(q.get("includeObject").map(String::as_str)),
            protobuf: proto::prefers_protobuf(accept),
            watch: q.get("watch").is_some_and(|w| w == "true" || w == "1"),
        }
    }

    /// The handler's JSON answer, rewritten as the Table or the protobuf asked for when the
    /// kind has one; anything else (errors, watches, other kinds) as it was.
    async fn answer(&self, method: &Method, path: &str, resp: Response) -> Response {
        if self.watch || (self.table.is_none() && !self.protobuf) || !resp.status().is_success() {
            return resp;
        }
        let is_json = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes() == b"application/json");
        let Ok(Some(t)) = parse_target(path.trim_end_matches('/')) else {
            return resp;
        };
        if !is_json || t.sub.is_some() {
            return resp;
        }
        let status = resp.status();
        let (parts, body) = resp.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
            return (StatusCode::INTERNAL_SERVER_ERROR, "reading the answer").into_response();
        };
        let keep = |bytes: bytes::Bytes| Response::from_parts(parts, Body::from(bytes));
        let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
            return keep(bytes);
        };
        if let Some(version) = self.table
            && *method == Method::GET
            && table::printed(t.rt)
        {
            let (objs, meta) = match v.get("items").and_then(Value::as_array) {
                Some(items) => (items.clone(), v["metadata"].clone()),
                None => (vec![v], json!({})),
            };
            if let Some(tbl) = table::table(t.rt, version, &objs, meta, self.include) {
                return json_response(status, &tbl);
            }
            return keep(bytes);
        }
        if self.protobuf
            && let Some(pb) = proto::encode(&v)
        {
            let mut r = Response::new(Body::from(pb));
            *r.status_mut() = status;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(proto::PROTOBUF),
            );
            return r;
        }
        keep(bytes)
    }
}

pub struct Target {
    pub rt: &'static ResourceType,
    pub ns: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
}

fn parse_target(path: &str) -> Result<Option<Target>, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] if !rest.is_empty() => ("", *v, rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
        _ => return Ok(None),
    };
    let (ns, rest): (Option<String>, &[&str]) = match rest {
        ["namespaces", ns, r @ ..]
            if !r.is_empty() && !(r.len() == 1 && (r[0] == "status" || r[0] == "finalize")) =>
        {
            (Some(ns.to_string()), r)
        }
        r => (None, r),
    };
    let rt = resources::find(group, version, rest[0]).ok_or_else(ApiError::no_such_path)?;
    if ns.is_some() && !rt.namespaced {
        return Err(ApiError::no_such_path());
    }
    let name = rest.get(1).map(|s| s.to_string());
    let sub = rest.get(2).map(|s| s.to_string());
    if rest.len() > 3 {
        return Err(ApiError::no_such_path());
    }
    if let Some(s) = &sub
        && !rt.subresources.contains(&s.as_str())
    {
        return Err(ApiError::no_such_path());
    }
    Ok(Some(Target { rt, ns, name, sub }))
}

pub fn query_map(req: &Request) -> HashMap<String, String> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn authorized(shared: &Shared, req: &Request) -> bool {
    let want = format!("Bearer {}", shared.info.sim_token);
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == want)
}

fn ok_json(v: &Value) -> Response {
    json_response(StatusCode::OK, v)
}

async fn dispatch(shared: &Arc<Shared>, req: Request) -> Result<Response, ApiError> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    match path.as_str() {
        "/version" => {
            return Ok(ok_json(&discovery::version(
                &shared.scenario.cluster.current_kubernetes_version,
            )));
        }
        "/healthz" | "/livez" | "/readyz" => {
            return Ok((StatusCode::OK, "ok").into_response());
        }
        _ => {}
    }
    if !authorized(shared, &req) {
        return Err(ApiError::unauthorized());
    }
    if let Some(doc) = discovery_document(shared, &path) {
        return doc.map(|d| ok_json(&d));
    }
    let Some(t) = parse_target(&path)? else {
        return Err(ApiError::no_such_path());
    };
    resource_request(shared, t, req).await
}

/// The discovery documents (`/api`, `/apis`, `/api/v1`, `/apis/{group}[/{version}]`), or
/// `None` for any other path.
fn discovery_document(shared: &Shared, path: &str) -> Option<Result<Value, ApiError>> {
    match path {
        "/api" => {
            let server = shared.info.kube_server.trim_start_matches("https://");
            return Some(Ok(discovery::api_versions(server)));
        }
        "/apis" => return Some(Ok(discovery::api_groups())),
        _ => {}
    }
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let doc = match segs.as_slice() {
        ["api", v] => discovery::resource_list("", v),
        ["apis", g, v] => discovery::resource_list(g, v),
        ["apis", g] => {
            let groups = discovery::api_groups();
            groups["groups"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["name"] == *g))
                .map(|x| {
                    let mut x = x.clone();
                    x["kind"] = json!("APIGroup");
                    x["apiVersion"] = json!("v1");
                    x
                })
        }
        _ => return None,
    };
    Some(doc.ok_or_else(ApiError::no_such_path))
}

/// A verb on a resource path.
async fn resource_request(
    shared: &Arc<Shared>,
    t: Target,
    req: Request,
) -> Result<Response, ApiError> {
    let q = query_map(&req);
    let method = req.method().clone();
    match (&method, &t.name, t.sub.as_deref()) {
        (&Method::GET, None, _) => {
            let watch = q.get("watch").is_some_and(|w| w == "true" || w == "1");
            let verb = if watch { "watch" } else { "list" };
            if t.rt.namespaced
                && t.ns.is_none()
                && shared.scenario.kube.forbids_cluster_wide(t.rt.plural, verb)
            {
                let user = &shared.info.client_id;
                return Err(ApiError::forbidden_cluster_wide(t.rt, verb, user));
            }
            if watch {
                watch_resource(shared, &t, &q)
            } else {
                list(shared, &t, &q)
            }
        }
        (&Method::GET, Some(name), Some("portforward"))
        | (&Method::POST, Some(name), Some("portforward")) => {
            let ns = t.ns.clone().unwrap_or_default();
            Ok(super::portforward::handle(shared.clone(), ns, name.clone(), q, req).await)
        }
        (&Method::GET, Some(name), Some("log")) => {
            get(shared, &t, name)?;
            Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], "").into_response())
        }
        (&Method::GET, Some(name), sub) => {
            let obj = get(shared, &t, name)?;
            Ok(object_or_scale(&obj, sub))
        }
        (&Method::POST, None, None) => {
            let body = read_json(req).await?;
            create(shared, &t, body, &q)
        }
        (&Method::PUT, Some(name), sub) => {
            let body = read_json(req).await?;
            update(shared, &t, name, sub, body, &q)
        }
        (&Method::PATCH, Some(name), sub) => {
            let ct = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let ptype = PatchType::from_content_type(&ct)
                .ok_or_else(|| ApiError::unsupported_media_type(&ct))?;
            let bytes = read_bytes(req).await?;
            patch_resource(shared, &t, name, sub, ptype, &bytes, &q)
        }
        (&Method::DELETE, Some(name), None) => {
            let bytes = read_bytes(req).await?;
            delete(shared, &t, name, &bytes, &q)
        }
        (&Method::DELETE, None, None) => {
            let bytes = read_bytes(req).await?;
            delete_collection(shared, &t, &bytes, &q)
        }
        _ => Err(ApiError::method_not_allowed(t.rt)),
    }
}

/// The object, or its `scale` subresource when that was asked for.
fn object_or_scale(obj: &Value, sub: Option<&str>) -> Response {
    if sub == Some("scale") {
        ok_json(&scale_of(obj))
    } else {
        ok_json(obj)
    }
}

async fn read_bytes(req: Request) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(req.into_body(), 64 << 20)
        .await
        .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))
}

/// The object of a create or an update: JSON, or the protobuf kubectl sends built-in kinds in.
async fn read_json(req: Request) -> Result<Value, ApiError> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = read_bytes(req).await?;
    if proto::is_protobuf(&ct) {
        return proto::decode(&bytes).map_err(|e| match e {
            proto::DecodeError::Malformed(m) => ApiError::bad_request(format!(
                "the object provided is unrecognized or malformed: {m}"
            )),
            proto::DecodeError::Unsupported(m) => ApiError {
                code: 415,
                reason: "UnsupportedMediaType",
                message: m,
                details: Value::Null,
            },
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "the object provided is unrecognized or malformed: {e}"
        ))
    })
}

fn get(shared: &Shared, t: &Target, name: &str) -> Result<Obj, ApiError> {
    let ns = t.ns.clone().unwrap_or_default();
    shared
        .kube
        .store
        .get(t.rt, &ns, name)
        .ok_or_else(|| ApiError::not_found(t.rt, name))
}

fn selectors(
    t: &Target,
    q: &HashMap<String, String>,
) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
    let fields = FieldSelector::parse(
        q.get("fieldSelector").map(String::as_str).unwrap_or(""),
        t.rt.kind,
    )
    .map_err(ApiError::bad_request)?;
    Ok((labels, fields))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    v: String,
    rv: u64,
    start: String,
}

fn list(shared: &Shared, t: &Target, q: &HashMap<String, String>) -> Result<Response, ApiError> {
    let (labels, fields) = selectors(t, q)?;
    if q.contains_key("sendInitialEvents") {
        return Err(ApiError {
            code: 422,
            reason: "Invalid",
            message: "ListOptions.meta.k8s.io \"\" is invalid: sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list".into(),
            details: json!({"group":"meta.k8s.io","kind":"ListOptions","causes":[{"reason":"FieldValueForbidden","message":"Forbidden: sendInitialEvents is forbidden for list","field":"sendInitialEvents"}]}),
        });
    }
    let limit: usize = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let start = match q.get("continue").filter(|c| !c.is_empty()) {
        Some(c) => {
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(c.trim_end_matches('='))
                .map_err(|_| {
                    ApiError::bad_request("continue key is not valid: illegal base64 data")
                })?;
            let tok: ContinueToken = serde_json::from_slice(&raw)
                .map_err(|_| ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)"))?;
            Some(tok.start)
        }
        None => None,
    };
    let from = start.as_deref().map(|s| match s.split_once('/') {
        Some((ns, name)) => (ns.to_string(), name.to_string()),
        None => (String::new(), s.to_string()),
    });
    let (items, rv) = shared
        .kube
        .store
        .list_from(t.rt, t.ns.as_deref(), from.as_ref());
    let key = |o: &Value| format!("{}/{}", ns_of(o), name_of(o));
    let filtered = !labels.is_empty() || !fields.is_empty();
    let mut out: Vec<&Stored> = Vec::new();
    let mut remaining = 0usize;
    let mut next: Option<String> = None;
    for s in &items {
        if filtered {
            // labels and name/namespace fields are indexed; other fields need the object
            let fields_ok = match fields.matches_meta(&s.namespace, &s.name) {
                Some(ok) => ok,
                None => fields.matches(&s.decode()),
            };
            if !fields_ok || !labels.matches(Some(&s.labels)) {
                continue;
            }
        }
        if out.len() < limit {
            out.push(s);
        } else {
            if next.is_none() {
                next = Some(key(&s.decode()));
            }
            remaining += 1;
        }
    }
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(n) = next {
        let tok = serde_json::to_vec(&ContinueToken {
            v: "meta.k8s.io/v1".into(),
            rv,
            start: n,
        })
        .unwrap_or_default();
        meta["continue"] = json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tok));
        if labels.is_empty() && fields.is_empty() {
            meta["remainingItemCount"] = json!(remaining);
        }
    }
    // written by hand so that ten thousand pods are not cloned to be listed
    let mut buf = Vec::with_capacity(out.iter().map(|s| s.bytes.len() + 1).sum::<usize>() + 256);
    buf.extend_from_slice(b"{\"kind\":");
    let _ = serde_json::to_writer(&mut buf, &t.rt.list_kind());
    buf.extend_from_slice(b",\"apiVersion\":");
    let _ = serde_json::to_writer(&mut buf, &t.rt.api_version());
    buf.extend_from_slice(b",\"metadata\":");
    let _ = serde_json::to_writer(&mut buf, &meta);
    buf.extend_from_slice(b",\"items\":[");
    for (i, o) in out.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(&o.bytes);
    }
    buf.extend_from_slice(b"]}");
    let mut resp = Response::new(Body::from(buf));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

fn watch_resource(
    shared: &Shared,
    t: &Target,
    q: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let (labels, fields) = selectors(t, q)?;
    let send_initial = q.get("sendInitialEvents").is_some_and(|v| v == "true");
    if send_initial && q.get("resourceVersionMatch").map(String::as_str) != Some("NotOlderThan") {
        return Err(ApiError {
            code: 422,
            reason: "Invalid",
            message: "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan".into(),
            details: json!({"group":"meta.k8s.io","kind":"ListOptions","causes":[{"reason":"FieldValueForbidden","message":"Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan","field":"resourceVersionMatch"}]}),
        });
    }
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(1800);
    Ok(watch::serve(
        &shared.kube.store,
        WatchRequest {
            rt: t.rt,
            namespace: t.ns.clone(),
            labels,
            fields,
            resource_version: q.get("resourceVersion").cloned(),
            bookmarks: q.get("allowWatchBookmarks").is_some_and(|v| v == "true"),
            send_initial_events: send_initial,
            timeout: Duration::from_secs(timeout),
            bookmark_every: shared.kube.bookmark_every,
        },
    ))
}

fn manager(q: &HashMap<String, String>) -> String {
    q.get("fieldManager")
        .filter(|m| !m.is_empty())
        .cloned()
        .unwrap_or_else(|| "unknown".into())
}

fn check_kind(t: &Target, body: &Value) -> Result<(), ApiError> {
    if let Some(k) = body.get("kind").and_then(Value::as_str)
        && !k.is_empty()
        && k != t.rt.kind
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({}) does not match the expected API version ({})",
            body["apiVersion"].as_str().unwrap_or(""),
            t.rt.api_version()
        )));
    }
    Ok(())
}

fn create(
    shared: &Shared,
    t: &Target,
    mut body: Value,
    q: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    check_kind(t, &body)?;
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request is not an object",
        ));
    }
    if t.rt.namespaced {
        let ns =
            t.ns.clone()
                .ok_or_else(|| ApiError::method_not_allowed(t.rt))?;
        let body_ns = ns_of(&body);
        if !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        metadata_mut(&mut body).insert("namespace".into(), json!(ns));
        if shared
            .kube
            .store
            .get(resources::by_plural("namespaces"), "", &ns)
            .is_none()
        {
            return Err(ApiError::not_found(resources::by_plural("namespaces"), &ns));
        }
    }
    let manager = manager(q);
    let client = shared.kube.client(&manager);
    let obj = if q.get("dryRun").is_some_and(|d| d == "All") {
        client.dry_run_create(t.rt, body)?
    } else {
        client.create(t.rt, body)?
    };
    Ok(json_response(StatusCode::CREATED, &obj))
}

fn check_rv(rt: &ResourceType, name: &str, cur: &Value, new: &Value) -> Result<(), ApiError> {
    let want = meta_str(new, "resourceVersion");
    if !want.is_empty() && want != meta_str(cur, "resourceVersion") {
        return Err(ApiError::conflict(rt, name));
    }
    Ok(())
}

/// A body's name, when it has one, is the URL's.
fn check_name(body: &Value, name: &str) -> Result<(), ApiError> {
    let body_name = name_of(body);
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    Ok(())
}

/// What a write of `sent` to `cur` stores: through `status`, only the status; through
/// `scale`, only the replicas; else all but the status (kept by a kind with a status
/// subresource).
fn written(rt: &ResourceType, cur: &Value, sent: Value, sub: Option<&str>) -> Value {
    match sub {
        Some("status") => {
            let mut n = cur.clone();
            n["status"] = sent.get("status").cloned().unwrap_or(json!({}));
            n
        }
        Some("scale") => {
            let mut n = cur.clone();
            n["spec"]["replicas"] = sent["spec"]["replicas"].clone();
            n
        }
        _ => {
            let mut n = sent;
            if rt.has_status {
                n["status"] = cur.get("status").cloned().unwrap_or(json!({}));
            }
            n
        }
    }
}

fn update(
    shared: &Shared,
    t: &Target,
    name: &str,
    sub: Option<&str>,
    body: Value,
    q: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    check_kind(t, &body).or_else(|e| if sub == Some("scale") { Ok(()) } else { Err(e) })?;
    check_name(&body, name)?;
    let ns = t.ns.clone().unwrap_or_default();
    let rt = t.rt;
    let mgr = manager(q);
    let obj = shared.kube.store.update_with(rt, &ns, name, |cur| {
        check_rv(rt, name, cur, &body)?;
        let mut new = written(rt, cur, body.clone(), sub);
        shared.kube.admission.on_update(rt, cur, &mut new)?;
        patch::record_update(
            Some(cur),
            &mut new,
            &mgr,
            rt,
            sub.filter(|s| *s == "status"),
        );
        Ok(Some(new))
    })?;
    Ok(object_or_scale(&obj, sub))
}

fn patch_resource(
    shared: &Shared,
    t: &Target,
    name: &str,
    sub: Option<&str>,
    ptype: PatchType,
    bytes: &[u8],
    q: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let (force, mgr) = patch_options(ptype, q)?;
    let body = decode_patch(ptype, bytes)?;
    let ns = t.ns.clone().unwrap_or_default();
    let rt = t.rt;
    if ptype == PatchType::Apply && sub.is_none() && shared.kube.store.get(rt, &ns, name).is_none()
    {
        return apply_create(shared, t, name, &body, &mgr, force);
    }
    let obj = shared.kube.store.update_with(rt, &ns, name, |cur| {
        let base = if sub == Some("scale") {
            scale_of(cur)
        } else {
            cur.clone()
        };
        let patched = match ptype {
            PatchType::Merge => patch::merge_patch(&base, &body),
            PatchType::Json => patch::json_patch(&base, &body)?,
            PatchType::Strategic => patch::strategic_merge(&base, &body)?,
            PatchType::Apply => patch::apply(Some(&base), &body, &mgr, force, rt)?,
        };
        check_rv(rt, name, &base, &patched)?;
        let mut new = written(rt, cur, patched, sub);
        shared.kube.admission.on_update(rt, cur, &mut new)?;
        if ptype != PatchType::Apply {
            patch::record_update(
                Some(cur),
                &mut new,
                &mgr,
                rt,
                sub.filter(|s| *s == "status"),
            );
        }
        Ok(Some(new))
    })?;
    Ok(object_or_scale(&obj, sub))
}

/// A patch's `force` and field manager, as PatchOptions validation allows them.
fn patch_options(
    ptype: PatchType,
    q: &HashMap<String, String>,
) -> Result<(bool, String), ApiError> {
    let force = q.get("force").is_some_and(|f| f == "true");
    if force && ptype != PatchType::Apply {
        return Err(ApiError {
            code: 422,
            reason: "Invalid",
            message: "PatchOptions.meta.k8s.io \"\" is invalid: force: Forbidden: may not be specified for non-apply patch".into(),
            details: json!({"group":"meta.k8s.io","kind":"PatchOptions","causes":[{"reason":"FieldValueForbidden","message":"Forbidden: may not be specified for non-apply patch","field":"force"}]}),
        });
    }
    let field_manager = q.get("fieldManager").filter(|m| !m.is_empty()).cloned();
    if ptype == PatchType::Apply && field_manager.is_none() {
        return Err(ApiError {
            code: 422,
            reason: "Invalid",
            message: "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".into(),
            details: json!({"group":"meta.k8s.io","kind":"PatchOptions","causes":[{"reason":"FieldValueRequired","message":"Required value: is required for apply patch","field":"fieldManager"}]}),
        });
    }
    Ok((force, field_manager.unwrap_or_else(|| "unknown".into())))
}

/// The patch document: JSON, or for an apply patch JSON or YAML.
fn decode_patch(ptype: PatchType, bytes: &[u8]) -> Result<Value, ApiError> {
    if ptype != PatchType::Apply {
        return serde_json::from_slice(bytes)
            .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")));
    }
    match serde_json::from_slice(bytes) {
        Ok(v) => Ok(v),
        Err(_) => {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| ApiError::bad_request("the apply patch is not UTF-8"))?;
            serde_saphyr::from_str::<Value>(text)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
        }
    }
}

/// Server-side apply of an object that does not exist yet: it is created, owned by `mgr`.
fn apply_create(
    shared: &Shared,
    t: &Target,
    name: &str,
    body: &Value,
    mgr: &str,
    force: bool,
) -> Result<Response, ApiError> {
    let rt = t.rt;
    check_kind(t, body)?;
    check_name(body, name)?;
    let mut obj = patch::apply(None, body, mgr, force, rt)?;
    {
        let meta = metadata_mut(&mut obj);
        meta.insert("name".into(), json!(name));
        if rt.namespaced {
            meta.insert("namespace".into(), json!(t.ns.clone().unwrap_or_default()));
        }
    }
    if rt.has_status
        && let Some(m) = obj.as_object_mut()
    {
        m.insert("status".into(), json!({}));
    }
    shared
        .kube
        .admission
        .on_create(&shared.kube.store, rt, &mut obj)?;
    let created = shared.kube.store.create(rt, obj)?;
    Ok(json_response(StatusCode::CREATED, &created))
}

#[derive(Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteOptions {
    propagation_policy: Option<String>,
    grace_period_seconds: Option<i64>,
    orphan_dependents: Option<bool>,
    preconditions: Option<Preconditions>,
}

#[derive(Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Preconditions {
    uid: Option<String>,
    resource_version: Option<String>,
}

fn delete_options(
    bytes: &[u8],
    q: &HashMap<String, String>,
) -> Result<(Propagation, DeleteOptions), ApiError> {
    let opts: DeleteOptions = if bytes.iter().all(u8::is_ascii_whitespace) {
        DeleteOptions::default()
    } else {
        serde_json::from_slice(bytes)
            .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?
    };
    let policy_s = opts
        .propagation_policy
        .clone()
        .or_else(|| q.get("propagationPolicy").cloned());
    let policy = match policy_s {
        Some(p) => Propagation::parse(&p).ok_or_else(|| {
            ApiError::bad_request(format!(
                "propagationPolicy: Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
            ))
        })?,
        None if opts.orphan_dependents == Some(true) => Propagation::Orphan,
        None => Propagation::Background,
    };
    Ok((policy, opts))
}

fn delete(
    shared: &Shared,
    t: &Target,
    name: &str,
    bytes: &[u8],
    q: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let (policy, opts) = delete_options(bytes, q)?;
    let ns = t.ns.clone().unwrap_or_default();
    let store = &shared.kube.store;
    if t.rt.plural == "namespaces" {
        store
            .get(t.rt, "", name)
            .ok_or_else(|| ApiError::not_found(t.rt, name))?;
        for rt in resources::RESOURCES.iter().filter(|r| r.namespaced) {
            let (items, _) = store.list(rt, Some(name));
            for o in items {
                let _ = store.delete(rt, name, name_of(&o), None, None);
            }
        }
    }
    let grace = opts.grace_period_seconds.or_else(|| {
        q.get("gracePeriodSeconds")
            .and_then(|g| g.parse::<i64>().ok())
    });
    let pre = opts.preconditions.unwrap_or_default();
    let (obj, gone) = store.delete_with_grace(
        t.rt,
        &ns,
        name,
        pre.uid.as_deref(),
        pre.resource_version.as_deref(),
        grace,
    )?;
    if gone {
        gc::collect(store, &obj, policy);
    }
    if matches!(
        t.rt.plural,
        "pods" | "services" | "serviceaccounts" | "namespaces"
    ) || !gone
    {
        return Ok(ok_json(&obj));
    }
    let mut details = json!({"name": name, "kind": t.rt.plural, "uid": uid_of(&obj)});
    if !t.rt.group.is_empty() {
        details["group"] = json!(t.rt.group);
    }
    Ok(ok_json(&json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })))
}

fn delete_collection(
    shared: &Shared,
    t: &Target,
    bytes: &[u8],
    q: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let (policy, _) = delete_options(bytes, q)?;
    let (labels, fields) = selectors(t, q)?;
    let store = &shared.kube.store;
    let (items, _) = store.list(t.rt, t.ns.as_deref());
    let mut deleted = Vec::new();
    for o in items {
        if !labels.matches(labels_of(&o)) || !fields.matches(&o) {
            continue;
        }
        if let Ok((obj, gone)) = store.delete(t.rt, ns_of(&o), name_of(&o), None, None) {
            if gone {
                gc::collect(store, &obj, policy);
            }
            deleted.push(obj);
        }
    }
    let body = json!({
        "kind": t.rt.list_kind(),
        "apiVersion": t.rt.api_version(),
        "metadata": {"resourceVersion": store.current_rv().to_string()},
        "items": deleted.iter().map(|o| (**o).clone()).collect::<Vec<_>>(),
    });
    Ok(ok_json(&body))
}

fn scale_of(obj: &Value) -> Value {
    let selector = obj["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": name_of(obj),
            "namespace": ns_of(obj),
            "uid": uid_of(obj),
            "resourceVersion": rv_of(obj).to_string(),
            "creationTimestamp": meta_str(obj, "creationTimestamp"),
        },
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}
