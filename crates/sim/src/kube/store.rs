//! The object store: every object as compact JSON bytes (a parsed `serde_json::Value` costs
//! about ten times its text, too much for ten thousand pods), one global resourceVersion counter (as etcd's
//! revision), a bounded event history for watch resumption, and a broadcast of live events.
//!
//! Writers go through [`Store::create`], [`Store::update_with`] and [`Store::delete`], which
//! set what the real API server sets (uid, resourceVersion, generation, creationTimestamp) and
//! publish ADDED/MODIFIED/DELETED events. The API handlers and the controllers share it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, RwLock};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::istio::pod_revision;
use super::object::{
    labels_of, meta_str, metadata_mut, name_of, now_rfc3339, ns_of, pod_ready, random_suffix,
    uid_of,
};
use super::resources::{RESOURCES, ResourceType, by_plural};
use super::status::ApiError;

pub type Obj = Arc<Value>;

/// An object as stored: its JSON text, and what the store indexes without parsing it.
#[derive(Debug)]
pub struct Stored {
    pub bytes: bytes::Bytes,
    /// The uids of its ownerReferences.
    pub owner_uids: Vec<String>,
    /// Its controller owner's kind and name.
    pub controller: Option<(String, String)>,
    /// Its namespace (empty for cluster-scoped objects) and name.
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub creation_timestamp: String,
    /// It has a `deletionTimestamp`.
    pub deleting: bool,
    /// Its labels.
    pub labels: serde_json::Map<String, Value>,
    /// What the controllers and istiod read of a pod, for pods.
    pub pod: Option<PodFacts>,
}

/// A pod's facts that the ReplicaSet controller and istiod's syncz read for every pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PodFacts {
    /// Ready condition True and not deleting.
    pub ready: bool,
    /// The revision whose injector injected it (or, for a gateway, its `istio.io/rev`).
    pub revision: Option<String>,
    /// The `istio-proxy` container's image, in containers or init containers.
    pub proxy_image: Option<String>,
    pub start_time: String,
}

impl Stored {
    pub fn encode(v: &Value) -> Arc<Stored> {
        let refs = v["metadata"]["ownerReferences"].as_array();
        let owner_uids = refs
            .map(|r| {
                r.iter()
                    .filter_map(|r| r["uid"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let controller = refs.and_then(|r| {
            r.iter().find(|r| r["controller"] == true).map(|r| {
                (
                    r["kind"].as_str().unwrap_or("").to_string(),
                    r["name"].as_str().unwrap_or("").to_string(),
                )
            })
        });
        Arc::new(Stored {
            bytes: bytes::Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
            owner_uids,
            controller,
            namespace: ns_of(v).to_string(),
            name: name_of(v).to_string(),
            uid: uid_of(v).to_string(),
            creation_timestamp: meta_str(v, "creationTimestamp").to_string(),
            deleting: v["metadata"].get("deletionTimestamp").is_some(),
            labels: labels_of(v).cloned().unwrap_or_default(),
            pod: (v["kind"] == "Pod").then(|| PodFacts {
                ready: pod_ready(v),
                revision: pod_revision(v),
                proxy_image: v["spec"]["containers"]
                    .as_array()
                    .into_iter()
                    .chain(v["spec"]["initContainers"].as_array())
                    .flatten()
                    .find(|c| c["name"] == "istio-proxy")
                    .and_then(|c| c["image"].as_str())
                    .map(str::to_string),
                start_time: v["status"]["startTime"].as_str().unwrap_or("").to_string(),
            }),
        })
    }

    /// The parsed object (the store only holds JSON it wrote itself).
    pub fn decode(&self) -> Obj {
        Arc::new(serde_json::from_slice(&self.bytes).unwrap_or(Value::Null))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

#[derive(Debug)]
pub struct Event {
    pub rv: u64,
    pub kind: EventType,
    pub resource: &'static str,
    pub namespace: String,
    pub name: String,
    pub object: Arc<Stored>,
    /// The state before the change (MODIFIED only), for filtered watches.
    pub old: Option<Arc<Stored>>,
}

/// How many events the store remembers for watches that resume from a resourceVersion.
const HISTORY: usize = 10_000;

struct Inner {
    rv: u64,
    tables: HashMap<&'static str, BTreeMap<(String, String), Arc<Stored>>>,
    history: VecDeque<Arc<Event>>,
    /// Watches may resume from any resourceVersion >= this.
    oldest_resumable: u64,
    /// The resourceVersion at which the starting cluster was settled: any older version a
    /// client can hold was read after it, so a watch from one resumes from here.
    settled: u64,
    /// Until the starting cluster is settled the history is not trimmed (the controllers
    /// read it to know what changed).
    settling: bool,
    /// The resourceVersion of each table's last write.
    table_rv: HashMap<&'static str, u64>,
}

/// Remembered events after a resourceVersion, and the live subscription.
pub type Resume = (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>);

pub struct Store {
    inner: RwLock<Inner>,
    /// Every event, for the controllers and the add-on.
    tx: broadcast::Sender<Arc<Event>>,
    /// Events by resource and namespace (`""`: every namespace), for watch streams: a watch
    /// wakes only for the events of its own resource and scope, as the API server's watch
    /// cache dispatches them, so thousands of narrow watches cost no more than their events.
    /// A topic is dropped when its last watcher is gone. Locked after `inner`, never before.
    topics: std::sync::Mutex<Topics>,
    /// Parsed copies of small, rarely written tables (webhooks, nodes, namespaces), by the
    /// table's last write: admission reads them for every pod.
    cache: std::sync::Mutex<HashMap<&'static str, CachedTable>>,
    /// Real seconds per simulated second, for pods' termination grace periods.
    time_scale: f64,
    /// Pods terminating gracefully: (namespace, name, uid), each due when its grace is over.
    terminating: std::sync::Mutex<super::due::DueQueue<(String, String, String)>>,
    /// Bumped by [`Store::interrupt_watches`]: every open watch ends (`.1`: with a 410 first).
    interrupts: tokio::sync::watch::Sender<(u64, bool)>,
}

type CachedTable = (u64, Arc<Vec<Obj>>);

type Topics = HashMap<&'static str, HashMap<String, broadcast::Sender<Arc<Event>>>>;

/// Buffered events per topic before a slow watcher is told its watch fell behind (410).
const TOPIC_CAPACITY_CLUSTER: usize = 16_384;
const TOPIC_CAPACITY_NAMESPACE: usize = 2_048;

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    /// A store whose pods take their (scaled) termination grace period to go.
    pub fn with_time_scale(time_scale: f64) -> Self {
        Self {
            time_scale,
            ..Self::new()
        }
    }
}

fn set_rv(obj: &mut Value, rv: u64) {
    metadata_mut(obj).insert("resourceVersion".into(), json!(rv.to_string()));
}

impl Store {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(16_384);
        let mut tables = HashMap::new();
        for r in RESOURCES {
            tables.insert(r.plural, BTreeMap::new());
        }
        Self {
            inner: RwLock::new(Inner {
                rv: 1,
                tables,
                history: VecDeque::new(),
                oldest_resumable: 1,
                settled: 0,
                settling: true,
                table_rv: HashMap::new(),
            }),
            tx,
            topics: std::sync::Mutex::new(HashMap::new()),
            cache: std::sync::Mutex::new(HashMap::new()),
            time_scale: 0.0,
            terminating: Default::default(),
            interrupts: tokio::sync::watch::channel((0, false)).0,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn current_rv(&self) -> u64 {
        self.read().rv
    }

    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Option<Obj> {
        let inner = self.read();
        inner
            .tables
            .get(rt.plural)
            .and_then(|t| t.get(&(ns.to_string(), name.to_string())))
            .map(|s| s.decode())
    }

    /// All objects of a type (in one namespace, or all), sorted by namespace and name,
    /// with the store's current resourceVersion.
    pub fn list(&self, rt: &ResourceType, ns: Option<&str>) -> (Vec<Obj>, u64) {
        let (raw, rv) = self.list_raw(rt, ns);
        (raw.iter().map(|s| s.decode()).collect(), rv)
    }

    /// Objects of a type whose ownerReferences include `owner_uid`, parsing only those.
    pub fn list_owned(&self, rt: &ResourceType, ns: Option<&str>, owner_uid: &str) -> Vec<Obj> {
        let (raw, _) = self.list_raw(rt, ns);
        raw.iter()
            .filter(|s| s.owner_uids.iter().any(|u| u == owner_uid))
            .map(|s| s.decode())
            .collect()
    }

    /// Like [`Store::list_owned`], unparsed.
    pub fn list_owned_raw(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        owner_uid: &str,
    ) -> Vec<Arc<Stored>> {
        let (raw, _) = self.list_raw(rt, ns);
        raw.into_iter()
            .filter(|s| s.owner_uids.iter().any(|u| u == owner_uid))
            .collect()
    }

    /// Like [`Store::list`], unparsed.
    pub fn list_raw(&self, rt: &ResourceType, ns: Option<&str>) -> (Vec<Arc<Stored>>, u64) {
        let inner = self.read();
        let table = &inner.tables[rt.plural];
        let items = match ns {
            Some(ns) => table
                .range((ns.to_string(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .map(|(_, v)| v.clone())
                .collect(),
            None => table.values().cloned().collect(),
        };
        (items, inner.rv)
    }

    /// Every object of a small table, parsed once per change of the table.
    pub fn list_cached(&self, rt: &'static ResourceType) -> Arc<Vec<Obj>> {
        let (version, raw) = {
            let inner = self.read();
            let version = inner.table_rv.get(rt.plural).copied().unwrap_or(0);
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((v, list)) = cache.get(rt.plural)
                && *v == version
            {
                return list.clone();
            }
            cache.remove(rt.plural);
            let raw: Vec<Arc<Stored>> = inner.tables[rt.plural].values().cloned().collect();
            (version, raw)
        };
        let list = Arc::new(raw.iter().map(|s| s.decode()).collect::<Vec<_>>());
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(rt.plural, (version, list.clone()));
        list
    }

    /// The (namespace, name) keys of a type's objects, in order.
    pub fn keys(&self, rt: &ResourceType) -> Vec<(String, String)> {
        self.read().tables[rt.plural].keys().cloned().collect()
    }

    /// Every object of a type by its plural (`pods`), for tests and introspection.
    pub fn list_plural(&self, plural: &str) -> Vec<Obj> {
        self.read()
            .tables
            .get(plural)
            .map(|t| t.values().map(|s| s.decode()).collect())
            .unwrap_or_default()
    }

    /// Like [`Store::list`], from the key `from` (inclusive) on: a continued list.
    pub fn list_from(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        from: Option<&(String, String)>,
    ) -> (Vec<Arc<Stored>>, u64) {
        let Some(from) = from else {
            return self.list_raw(rt, ns);
        };
        let inner = self.read();
        let items = inner.tables[rt.plural]
            .range(from.clone()..)
            .take_while(|((n, _), _)| ns.is_none_or(|ns| n == ns))
            .map(|(_, v)| v.clone())
            .collect();
        (items, inner.rv)
    }

    pub fn count(&self, rt: &ResourceType) -> usize {
        self.read().tables[rt.plural].len()
    }

    fn publish(&self, inner: &mut Inner, ev: Event) {
        inner.table_rv.insert(ev.resource, ev.rv);
        let ev = Arc::new(ev);
        inner.history.push_back(ev.clone());
        while !inner.settling && inner.history.len() > HISTORY {
            if let Some(old) = inner.history.pop_front() {
                inner.oldest_resumable = old.rv;
            }
        }
        {
            let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(by_ns) = topics.get_mut(ev.resource) {
                for scope in [ev.namespace.as_str(), ""] {
                    if let Some(tx) = by_ns.get(scope)
                        && tx.send(ev.clone()).is_err()
                    {
                        by_ns.remove(scope);
                    }
                    if ev.namespace.is_empty() {
                        break;
                    }
                }
            }
        }
        let _ = self.tx.send(ev);
    }

    /// Writes a change to `key` (`new` replaces the object, or with `Deleted` is its last
    /// state as it goes) and publishes its event; returns `new` parsed.
    #[allow(clippy::too_many_arguments)]
    fn commit(
        &self,
        inner: &mut Inner,
        rt: &ResourceType,
        key: (String, String),
        rv: u64,
        kind: EventType,
        new: Value,
        old: Option<Arc<Stored>>,
    ) -> Obj {
        let stored = Stored::encode(&new);
        let table = inner.tables.get_mut(rt.plural).expect("table");
        match kind {
            EventType::Deleted => {
                table.remove(&key);
            }
            EventType::Added | EventType::Modified => {
                table.insert(key.clone(), stored.clone());
            }
        }
        let (namespace, name) = key;
        self.publish(
            inner,
            Event {
                rv,
                kind,
                resource: rt.plural,
                namespace,
                name,
                object: stored,
                old,
            },
        );
        Arc::new(new)
    }

    /// A live subscription to one resource's events in one namespace (`None`: all). Called
    /// with `inner` locked, so that no event falls between a snapshot and the subscription.
    fn subscribe_topic(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
    ) -> broadcast::Receiver<Arc<Event>> {
        let scope = ns.unwrap_or("");
        let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        let by_ns = topics.entry(rt.plural).or_default();
        if let Some(tx) = by_ns.get(scope) {
            return tx.subscribe();
        }
        let capacity = if scope.is_empty() {
            TOPIC_CAPACITY_CLUSTER
        } else {
            TOPIC_CAPACITY_NAMESPACE
        };
        let (tx, rx) = broadcast::channel(capacity);
        by_ns.insert(scope.to_string(), tx);
        rx
    }

    /// Creates an object as the API server does: name from `generateName`, uid, resourceVersion,
    /// creationTimestamp, generation 1. `quiet` skips the event (initial seeding only).
    pub fn create_inner(
        &self,
        rt: &'static ResourceType,
        mut obj: Value,
        quiet: bool,
    ) -> Result<Obj, ApiError> {
        kind_first(rt, &mut obj)?;
        let mut inner = self.write();
        let ns = if rt.namespaced {
            ns_of(&obj).to_string()
        } else {
            String::new()
        };
        let name = choose_name(&inner.tables[rt.plural], rt, &ns, &obj)?;
        validate_name(rt, &name)?;
        if inner.tables[rt.plural].contains_key(&(ns.clone(), name.clone())) {
            return Err(ApiError::already_exists(rt, &name));
        }
        inner.rv += 1;
        let rv = inner.rv;
        set_create_meta(rt, &mut obj, &name, &ns, rv);
        if quiet {
            let stored = Stored::encode(&obj);
            inner
                .tables
                .get_mut(rt.plural)
                .expect("table")
                .insert((ns, name), stored);
            inner.table_rv.insert(rt.plural, rv);
            inner.oldest_resumable = inner.rv;
            return Ok(Arc::new(obj));
        }
        Ok(self.commit(&mut inner, rt, (ns, name), rv, EventType::Added, obj, None))
    }

    pub fn create(&self, rt: &'static ResourceType, obj: Value) -> Result<Obj, ApiError> {
        self.create_inner(rt, obj, false)
    }

    /// Read-modify-write under the store's lock. `f` gets the current object and returns the
    /// new one (or `None` for "no change"). The store keeps identity fields, sets the new
    /// resourceVersion and bumps `generation` when the spec changed. A write that changes
    /// nothing does not bump the resourceVersion, as on a real server.
    pub fn update_with<F>(
        &self,
        rt: &'static ResourceType,
        ns: &str,
        name: &str,
        f: F,
    ) -> Result<Obj, ApiError>
    where
        F: FnOnce(&Value) -> Result<Option<Value>, ApiError>,
    {
        let mut inner = self.write();
        let key = (ns.to_string(), name.to_string());
        let old_stored = inner.tables[rt.plural]
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        let old = old_stored.decode();
        let Some(mut new) = f(&old)? else {
            return Ok(old);
        };
        keep_server_fields(rt, &old, &mut new);
        if new == *old {
            return Ok(old);
        }
        bump_generation(rt, &old, &mut new);
        inner.rv += 1;
        let rv = inner.rv;
        set_rv(&mut new, rv);
        // the last finalizer removed from an object being deleted: it goes
        let gone = new["metadata"].get("deletionTimestamp").is_some()
            && !has_finalizers(&new)
            && has_finalizers(&old);
        let kind = if gone {
            EventType::Deleted
        } else {
            EventType::Modified
        };
        Ok(self.commit(&mut inner, rt, key, rv, kind, new, Some(old_stored)))
    }

    /// Deletes an object. With finalizers it only gets a deletionTimestamp. Returns the
    /// deleted object (carrying the deletion's resourceVersion) and whether it is gone.
    pub fn delete(
        &self,
        rt: &'static ResourceType,
        ns: &str,
        name: &str,
        precondition_uid: Option<&str>,
        precondition_rv: Option<&str>,
    ) -> Result<(Obj, bool), ApiError> {
        self.delete_with_grace(rt, ns, name, precondition_uid, precondition_rv, None)
    }

    /// Deletes an object; a pod first terminates for its grace period (`grace`, else its
    /// `terminationGracePeriodSeconds`), scaled, unless the period is 0.
    pub fn delete_with_grace(
        &self,
        rt: &'static ResourceType,
        ns: &str,
        name: &str,
        precondition_uid: Option<&str>,
        precondition_rv: Option<&str>,
        grace: Option<i64>,
    ) -> Result<(Obj, bool), ApiError> {
        let mut inner = self.write();
        let key = (ns.to_string(), name.to_string());
        let old_stored = inner.tables[rt.plural]
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        let old = old_stored.decode();
        check_delete_preconditions(rt, name, &old, precondition_uid, precondition_rv)?;
        let already_deleting = old["metadata"].get("deletionTimestamp").is_some();
        let grace = grace.unwrap_or_else(|| {
            old["spec"]["terminationGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(30)
        });
        let graceful = rt.plural == "pods" && grace > 0 && self.time_scale > 0.0;
        if has_finalizers(&old) || graceful {
            // it stays, marked for deletion, until its finalizers or its grace period are done
            if already_deleting {
                return Ok((old, false));
            }
            let (at, period) = if has_finalizers(&old) {
                (now_rfc3339(), 0)
            } else {
                let at = chrono::Utc::now() + chrono::Duration::seconds(grace);
                (at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), grace)
            };
            let mut new = (*old).clone();
            let meta = metadata_mut(&mut new);
            meta.insert("deletionTimestamp".into(), json!(at));
            meta.insert("deletionGracePeriodSeconds".into(), json!(period));
            inner.rv += 1;
            let rv = inner.rv;
            set_rv(&mut new, rv);
            let obj = self.commit(
                &mut inner,
                rt,
                key,
                rv,
                EventType::Modified,
                new,
                Some(old_stored),
            );
            if !has_finalizers(&old) {
                self.terminate_after(grace, ns, name, uid_of(&obj));
            }
            return Ok((obj, false));
        }
        inner.rv += 1;
        let rv = inner.rv;
        let mut new = (*old).clone();
        set_rv(&mut new, rv);
        let obj = self.commit(&mut inner, rt, key, rv, EventType::Deleted, new, None);
        Ok((obj, true))
    }

    /// The pod `uid` goes when its (scaled) grace period of `grace` seconds is over.
    fn terminate_after(&self, grace: i64, ns: &str, name: &str, uid: &str) {
        let when = std::time::Instant::now()
            + std::time::Duration::from_secs_f64(grace as f64 * self.time_scale);
        self.terminating
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(when, (ns.to_string(), name.to_string(), uid.to_string()));
    }

    /// Subscribes to the live events of one resource in one namespace (`None`: all) and
    /// returns the remembered events after `since` (of every resource: the watch filters), or
    /// `Err(oldest)` when `since` is older than the history the store keeps.
    pub fn watch_from(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        since: u64,
    ) -> Result<Resume, u64> {
        let inner = self.read();
        let since = if since < inner.oldest_resumable && inner.oldest_resumable == inner.settled {
            inner.settled
        } else {
            since
        };
        if since < inner.oldest_resumable {
            return Err(inner.oldest_resumable);
        }
        let rx = self.subscribe_topic(rt, ns);
        let backlog = inner
            .history
            .iter()
            .filter(|e| e.rv > since)
            .cloned()
            .collect();
        Ok((backlog, rx))
    }

    /// A snapshot of the current objects and a live subscription, atomically.
    pub fn snapshot_and_watch(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
    ) -> (Vec<Arc<Stored>>, u64, broadcast::Receiver<Arc<Event>>) {
        let inner = self.read();
        let rx = self.subscribe_topic(rt, ns);
        let table = &inner.tables[rt.plural];
        let items = match ns {
            Some(ns) => table
                .range((ns.to_string(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .map(|(_, v)| v.clone())
                .collect(),
            None => table.values().cloned().collect(),
        };
        (items, inner.rv, rx)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// Removes the pods whose termination grace period is over; returns them.
    pub fn reap_terminated(&self) -> Vec<Obj> {
        let now = std::time::Instant::now();
        let due = self
            .terminating
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take_due(now);
        let pods = by_plural("pods");
        due.into_iter()
            .filter_map(|(ns, name, uid)| {
                self.delete_with_grace(pods, &ns, &name, Some(&uid), None, Some(0))
                    .ok()
                    .filter(|(_, gone)| *gone)
                    .map(|(o, _)| o)
            })
            .collect()
    }

    /// Forgets the history of building the starting cluster (nobody could watch it).
    pub fn mark_settled(&self) {
        let mut inner = self.write();
        inner.history.clear();
        inner.oldest_resumable = inner.rv;
        inner.settled = inner.rv;
        inner.settling = false;
    }

    /// The remembered events after `rv`.
    pub fn events_since(&self, rv: u64) -> Vec<Arc<Event>> {
        self.read()
            .history
            .iter()
            .filter(|e| e.rv > rv)
            .cloned()
            .collect()
    }

    /// Ends every open watch stream, as a load balancer or API server restart does: with
    /// `gone`, each first gets an `ERROR` event 410 Expired (history compacted, so a resumed
    /// watch gets 410 too); without, the connection just ends. Clients must re-watch.
    pub fn interrupt_watches(&self, gone: bool) {
        if gone {
            self.compact();
        }
        self.interrupts.send_modify(|(n, g)| {
            *n += 1;
            *g = gone;
        });
    }

    /// A receiver that changes when [`Store::interrupt_watches`] is called.
    pub fn watch_interrupts(&self) -> tokio::sync::watch::Receiver<(u64, bool)> {
        self.interrupts.subscribe()
    }

    /// Forgets history up to the current resourceVersion (tests use it to provoke 410).
    pub fn compact(&self) {
        let mut inner = self.write();
        inner.history.clear();
        inner.oldest_resumable = inner.rv;
    }
}

/// Sets `apiVersion` and `kind`, first, as real objects print them.
fn kind_first(rt: &ResourceType, obj: &mut Value) -> Result<(), ApiError> {
    let Some(map) = obj.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the body of the request is not an object",
        ));
    };
    let mut ordered = serde_json::Map::new();
    ordered.insert("apiVersion".into(), json!(rt.api_version()));
    ordered.insert("kind".into(), json!(rt.kind));
    for (k, v) in std::mem::take(map) {
        if k != "apiVersion" && k != "kind" {
            ordered.insert(k, v);
        }
    }
    *map = ordered;
    Ok(())
}

/// The new object's name: its own, or `generateName` and five random characters free in
/// `table`.
fn choose_name(
    table: &BTreeMap<(String, String), Arc<Stored>>,
    rt: &ResourceType,
    ns: &str,
    obj: &Value,
) -> Result<String, ApiError> {
    let name = name_of(obj);
    if !name.is_empty() {
        return Ok(name.to_string());
    }
    let prefix = meta_str(obj, "generateName");
    if prefix.is_empty() {
        return Err(ApiError::invalid(
            rt,
            "",
            "metadata.name",
            "FieldValueRequired",
            "Required value: name or generateName is required",
        ));
    }
    let prefix: String = prefix.chars().take(58).collect();
    loop {
        let candidate = format!("{prefix}{}", random_suffix(5));
        if !table.contains_key(&(ns.to_string(), candidate.clone())) {
            return Ok(candidate);
        }
    }
}

/// What the server sets on a new object's metadata.
fn set_create_meta(rt: &ResourceType, obj: &mut Value, name: &str, ns: &str, rv: u64) {
    let meta = metadata_mut(obj);
    meta.insert("name".into(), json!(name));
    if rt.namespaced {
        meta.insert("namespace".into(), json!(ns));
    } else {
        meta.remove("namespace");
    }
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("resourceVersion".into(), json!(rv.to_string()));
    if rt.generation {
        meta.insert("generation".into(), json!(1));
    } else {
        meta.remove("generation");
    }
    meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
    meta.remove("deletionTimestamp");
}

/// An update keeps the server's fields of `old`: identity, generation, deletionTimestamp,
/// resourceVersion (until the write sets the new one), apiVersion and kind.
fn keep_server_fields(rt: &ResourceType, old: &Value, new: &mut Value) {
    let old_meta = &old["metadata"];
    let meta = metadata_mut(new);
    for k in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "generation",
    ] {
        match old_meta.get(k) {
            Some(v) => {
                meta.insert(k.into(), v.clone());
            }
            None => {
                meta.remove(k);
            }
        }
    }
    if old_meta.get("deletionTimestamp").is_some() {
        meta.insert(
            "deletionTimestamp".into(),
            old_meta["deletionTimestamp"].clone(),
        );
    }
    meta.insert(
        "resourceVersion".into(),
        old_meta["resourceVersion"].clone(),
    );
    if let Some(map) = new.as_object_mut() {
        map.insert("apiVersion".into(), json!(rt.api_version()));
        map.insert("kind".into(), json!(rt.kind));
    }
}

/// `generation` moves when the spec does (for a Deployment, also its annotations but the
/// controller's own revision: a fresh Deployment reads generation 1 with revision "1").
fn bump_generation(rt: &ResourceType, old: &Value, new: &mut Value) {
    if !rt.generation {
        return;
    }
    let spec_changed = old.get("spec") != new.get("spec");
    let ann = |o: &Value| {
        let mut a = o["metadata"]
            .get("annotations")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        a.remove("deployment.kubernetes.io/revision");
        a
    };
    let ann_changed = rt.kind == "Deployment" && ann(old) != ann(new);
    if spec_changed || ann_changed {
        let g = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        metadata_mut(new).insert("generation".into(), json!(g));
    }
}

fn has_finalizers(obj: &Value) -> bool {
    obj["metadata"]
        .get("finalizers")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
}

fn check_delete_preconditions(
    rt: &ResourceType,
    name: &str,
    old: &Value,
    uid: Option<&str>,
    rv: Option<&str>,
) -> Result<(), ApiError> {
    if let Some(uid) = uid
        && uid != uid_of(old)
    {
        return Err(ApiError::conflict_msg(
            rt,
            name,
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                uid_of(old)
            ),
        ));
    }
    if let Some(rv) = rv
        && rv != meta_str(old, "resourceVersion")
    {
        return Err(ApiError::conflict_msg(
            rt,
            name,
            &format!(
                "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                meta_str(old, "resourceVersion")
            ),
        ));
    }
    Ok(())
}

fn validate_name(rt: &ResourceType, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            rt,
            name,
            "metadata.name",
            "FieldValueInvalid",
            &format!(
                "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cm(ns: &str, name: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": ns}, "data": {}})
    }

    fn drain(rx: &mut broadcast::Receiver<Arc<Event>>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            out.push(format!("{}/{}/{}", ev.resource, ev.namespace, ev.name));
        }
        out
    }

    #[test]
    fn a_watch_hears_only_its_resource_and_namespace() {
        let store = Store::new();
        store.mark_settled();
        let cms = by_plural("configmaps");
        let secrets = by_plural("secrets");
        let (_, _, mut in_a) = store.snapshot_and_watch(cms, Some("a"));
        let (_, _, mut everywhere) = store.snapshot_and_watch(cms, None);
        let mut all = store.subscribe();
        store.create(cms, cm("a", "one")).unwrap();
        store.create(cms, cm("b", "two")).unwrap();
        store
            .create(
                secrets,
                json!({"metadata": {"name": "s", "namespace": "a"}}),
            )
            .unwrap();
        assert_eq!(drain(&mut in_a), ["configmaps/a/one"]);
        assert_eq!(
            drain(&mut everywhere),
            ["configmaps/a/one", "configmaps/b/two"]
        );
        assert_eq!(drain(&mut all).len(), 3, "the controllers hear everything");
    }

    #[test]
    fn a_topic_goes_with_its_last_watcher() {
        let store = Store::new();
        store.mark_settled();
        let cms = by_plural("configmaps");
        let (_, _, rx) = store.snapshot_and_watch(cms, Some("a"));
        let topics = |s: &Store| {
            s.topics
                .lock()
                .unwrap()
                .get("configmaps")
                .map(|t| t.len())
                .unwrap_or(0)
        };
        assert_eq!(topics(&store), 1);
        drop(rx);
        store.create(cms, cm("a", "one")).unwrap();
        assert_eq!(topics(&store), 0);
        // a resumed watch subscribes the same way
        let (_, mut rx) = store
            .watch_from(cms, Some("a"), store.current_rv())
            .unwrap();
        store.create(cms, cm("a", "two")).unwrap();
        assert_eq!(drain(&mut rx), ["configmaps/a/two"]);
    }

    #[test]
    fn pods_carry_the_facts_the_controllers_read() {
        let status = r#"{"revision":"asm-1-28","containers":["istio-proxy"]}"#;
        let pod = json!({
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "shop", "uid": "u1",
                         "creationTimestamp": "2026-11-27T10:00:00Z",
                         "labels": {"app": "web"},
                         "annotations": {"sidecar.istio.io/status": status}},
            "spec": {"containers": [{"name": "web", "image": "nginx"},
                                     {"name": "istio-proxy", "image": "mcr.microsoft.com/oss/istio/proxyv2:1.28.1-distroless"}]},
            "status": {"phase": "Running", "startTime": "2026-11-27T10:00:01Z",
                       "conditions": [{"type": "Ready", "status": "True"}]}
        });
        let s = Stored::encode(&pod);
        assert_eq!(
            (s.namespace.as_str(), s.name.as_str(), s.uid.as_str()),
            ("shop", "p", "u1")
        );
        assert!(!s.deleting);
        assert_eq!(s.labels["app"], "web");
        let f = s.pod.clone().unwrap();
        assert!(f.ready);
        assert_eq!(f.revision.as_deref(), Some("asm-1-28"));
        assert_eq!(
            f.proxy_image.as_deref(),
            Some("mcr.microsoft.com/oss/istio/proxyv2:1.28.1-distroless")
        );
        assert_eq!(f.start_time, "2026-11-27T10:00:01Z");
        let mut gone = pod.clone();
        gone["metadata"]["deletionTimestamp"] = json!("2026-11-27T10:05:00Z");
        let s = Stored::encode(&gone);
        assert!(s.deleting);
        assert!(
            !s.pod.as_ref().unwrap().ready,
            "a deleting pod is not ready"
        );
        assert!(Stored::encode(&cm("a", "x")).pod.is_none());
    }
}
