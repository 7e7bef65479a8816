//! The one interface the controllers and the add-on have to the cluster, as a client of the
//! API server has: a create is admitted (defaults, webhooks: pods are injected whoever
//! creates them) and records its writer's managed fields; a cascading delete collects the
//! dependents; reads come from the store's indexes, as a real controller reads its informer
//! cache; and the change feed is the store's events. Writes of status and scale go straight
//! to the store, as the controllers' own updates need no admission.
//!
//! The API server's handlers create through it too, so every create takes one path.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::admission::Admission;
use super::gc;
use super::patch;
use super::resources::ResourceType;
use super::status::ApiError;
use super::store::{Event, Obj, Store, Stored};

/// The field manager of the simulator's own controllers: they keep no managedFields (ten
/// thousand pods' worth of field sets would cost more memory than anything reads from them).
pub const CONTROLLER_MANAGER: &str = "kube-controller-manager";

/// The cluster as one writer (its field manager) sees it.
#[derive(Clone, Copy)]
pub struct Client<'a> {
    store: &'a Store,
    admission: &'a Admission,
    manager: &'a str,
}

impl<'a> Client<'a> {
    pub fn new(store: &'a Store, admission: &'a Admission, manager: &'a str) -> Self {
        Self {
            store,
            admission,
            manager,
        }
    }

    // ----- writes

    /// Creates an object as the API server does for a request: admission, then the store.
    pub fn create(&self, rt: &'static ResourceType, body: Value) -> Result<Obj, ApiError> {
        self.create_then(rt, body, |_| {})
    }

    /// [`Client::create`], with `finish` applied after admission (the controllers create the
    /// starting cluster's pods already running with it).
    pub fn create_then(
        &self,
        rt: &'static ResourceType,
        body: Value,
        finish: impl FnOnce(&mut Value),
    ) -> Result<Obj, ApiError> {
        let body = self.admit(rt, body, finish)?;
        self.store.create(rt, body)
    }

    /// What [`Client::create`] would store, without storing it (`dryRun=All`).
    pub fn dry_run_create(&self, rt: &'static ResourceType, body: Value) -> Result<Obj, ApiError> {
        self.admit(rt, body, |_| {}).map(Arc::new)
    }

    fn admit(
        &self,
        rt: &'static ResourceType,
        mut body: Value,
        finish: impl FnOnce(&mut Value),
    ) -> Result<Value, ApiError> {
        if rt.has_status
            && let Some(m) = body.as_object_mut()
        {
            m.insert("status".into(), json!({}));
        }
        self.admission.on_create(self.store, rt, &mut body)?;
        finish(&mut body);
        if self.manager != CONTROLLER_MANAGER {
            patch::record_update(None, &mut body, self.manager, rt, None);
        }
        Ok(body)
    }

    /// Read-modify-write of one object (see [`Store::update_with`]).
    pub fn update<F>(
        &self,
        rt: &'static ResourceType,
        ns: &str,
        name: &str,
        f: F,
    ) -> Result<Obj, ApiError>
    where
        F: FnOnce(&Value) -> Result<Option<Value>, ApiError>,
    {
        self.store.update_with(rt, ns, name, f)
    }

    /// Deletes one object, leaving its dependents (a pod has none). Returns the deleted
    /// object and whether it is gone (see [`Store::delete`]).
    pub fn delete(
        &self,
        rt: &'static ResourceType,
        ns: &str,
        name: &str,
    ) -> Result<(Obj, bool), ApiError> {
        self.store.delete(rt, ns, name, None, None)
    }

    /// Deletes an object and collects its dependents.
    pub fn delete_cascade(
        &self,
        rt: &'static ResourceType,
        ns: &str,
        name: &str,
    ) -> Result<(), ApiError> {
        gc::delete_cascade(self.store, rt, ns, name)
    }

    // ----- reads

    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Option<Obj> {
        self.store.get(rt, ns, name)
    }

    /// All objects of a type (in one namespace, or all) and the resourceVersion.
    pub fn list(&self, rt: &ResourceType, ns: Option<&str>) -> (Vec<Obj>, u64) {
        self.store.list(rt, ns)
    }

    /// Like [`Client::list`], unparsed: judged on what the store indexes.
    pub fn list_raw(&self, rt: &ResourceType, ns: Option<&str>) -> (Vec<Arc<Stored>>, u64) {
        self.store.list_raw(rt, ns)
    }

    /// The objects of a type whose ownerReferences include `owner_uid`.
    pub fn list_owned(&self, rt: &ResourceType, ns: Option<&str>, owner_uid: &str) -> Vec<Obj> {
        self.store.list_owned(rt, ns, owner_uid)
    }

    /// Like [`Client::list_owned`], unparsed.
    pub fn list_owned_raw(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        owner_uid: &str,
    ) -> Vec<Arc<Stored>> {
        self.store.list_owned_raw(rt, ns, owner_uid)
    }

    /// Every object of a small table, parsed once per change of the table.
    pub fn list_cached(&self, rt: &'static ResourceType) -> Arc<Vec<Obj>> {
        self.store.list_cached(rt)
    }

    /// The (namespace, name) keys of a type's objects, in order.
    pub fn keys(&self, rt: &ResourceType) -> Vec<(String, String)> {
        self.store.keys(rt)
    }

    // ----- the change feed

    pub fn current_rv(&self) -> u64 {
        self.store.current_rv()
    }

    /// Every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.store.subscribe()
    }

    /// The remembered events after `rv`.
    pub fn events_since(&self, rv: u64) -> Vec<Arc<Event>> {
        self.store.events_since(rv)
    }

    // ----- the kubelet's and the cluster's start

    /// Removes the pods whose termination grace period is over; returns them.
    pub fn reap_terminated(&self) -> Vec<Obj> {
        self.store.reap_terminated()
    }

    /// The starting cluster is built: its history is forgotten (nobody could watch it).
    pub fn mark_settled(&self) {
        self.store.mark_settled()
    }
}
