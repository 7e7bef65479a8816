//! The AKS Istio add-on: it follows the mesh spec ARM publishes (`Shared::mesh`) and keeps,
//! per installed revision, istiod (Deployment, Service, HPA; the controllers run its pods),
//! the injector and validating webhook configurations, the ingress gateway Deployments
//! behind the shared Services and their leader-election Leases. Beside that controller it
//! plays two servers: istiod's webhooks, which admission calls (sidecar injection, so
//! revision, tag and legacy-label behaviour follow from the webhook configurations' selectors,
//! and a webhook whose istiod is gone fails pod creation) with AKS's MeshConfig allowlist of
//! `istio-shared-configmap-<rev>`; and istiod's monitoring port (`/debug/syncz`), which
//! port-forwarding reaches.
//!
//! ```text
//!  Shared::mesh ─▶ run ─▶ manifests ─▶ Client (create if missing, delete cascade)
//!  admission ─▶ webhooks::Webhooks (inject, validate)
//!  portforward ─▶ istiod::http (syncz, version, metrics)
//! ```

mod istiod;
mod manifests;
mod patch;
pub(crate) mod versions;
mod webhooks;

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::watch;

pub use istiod::http as istiod_http;
pub use manifests::tag_webhook;
pub use patch::roll_patch;
pub use versions::Patches;
pub use webhooks::Webhooks;

use super::client::Client;
use super::object::{name_of, ns_of};
use super::resources::by_plural;
use super::state::KubeState;
use crate::Shared;

/// The add-on's field manager.
const MANAGER: &str = "aks-addon";

fn create_if_missing(client: &Client, plural: &str, obj: Value) {
    let rt = by_plural(plural);
    let ns = if rt.namespaced {
        ns_of(&obj).to_string()
    } else {
        String::new()
    };
    if client.get(rt, &ns, name_of(&obj)).is_some() {
        return;
    }
    let _ = client.create(rt, obj);
}

/// Writes `status` into an object the add-on created (as the kubelet and the cloud
/// controller would).
fn set_status(client: &Client, plural: &str, ns: &str, name: &str, status: Value) {
    let _ = client.update(by_plural(plural), ns, name, |cur| {
        let mut n = cur.clone();
        n["status"] = status;
        Ok(Some(n))
    });
}

/// Creates the cluster's fixed objects and the installed revisions' control planes.
pub fn seed(kube: &KubeState, revisions: &[String], gateways: &[String]) {
    let client = kube.client(MANAGER);
    for ns in manifests::namespaces() {
        create_if_missing(&client, "namespaces", ns);
    }
    for i in 0..kube.scenario.nodes.max(1) {
        let (node, status) = manifests::node(i);
        let name = name_of(&node).to_string();
        create_if_missing(&client, "nodes", node);
        set_status(&client, "nodes", "", &name, status);
    }
    ensure_gateway_services(kube, &client, gateways);
    for rev in revisions {
        ensure_revision(kube, &client, rev, gateways);
        if let Some(mesh) = &kube.scenario.shared_mesh_config {
            create_if_missing(
                &client,
                "configmaps",
                manifests::shared_configmap(rev, mesh),
            );
        }
    }
    for tag in &kube.scenario.tags {
        create_if_missing(
            &client,
            "mutatingwebhookconfigurations",
            tag_webhook(&tag.name, &tag.revision),
        );
    }
}

fn ensure_gateway_services(kube: &KubeState, client: &Client, gateways: &[String]) {
    let pending = &kube.scenario.pending_load_balancers;
    for (i, mode) in manifests::gateway_modes(gateways).into_iter().enumerate() {
        let (service, mut status) = manifests::gateway_service(i, mode);
        if pending.iter().any(|p| p.eq_ignore_ascii_case(mode)) {
            // the cloud never assigned an address: the Service shows none
            status = serde_json::json!({"loadBalancer": {}});
        }
        let name = name_of(&service).to_string();
        let ns = ns_of(&service).to_string();
        create_if_missing(client, "services", service);
        set_status(client, "services", &ns, &name, status);
    }
}

/// Creates what a revision brings (idempotent).
fn ensure_revision(kube: &KubeState, client: &Client, rev: &str, gateways: &[String]) {
    let version = kube.patches.version(rev);
    for (plural, obj) in manifests::revision(&kube.scenario, rev, &version, gateways) {
        create_if_missing(client, plural, obj);
    }
}

/// Removes what a revision brought, except the gateway Leases (AKS leaves them behind) and
/// the user's shared ConfigMap.
fn remove_revision(client: &Client, rev: &str) {
    for (plural, ns, name) in manifests::revision_removals(rev) {
        let _ = client.delete_cascade(by_plural(plural), ns, &name);
    }
}

/// Follows the mesh spec ARM publishes.
pub async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut mesh = shared.mesh.subscribe();
    let mut applied: Vec<String> = shared.kube.initial_revisions.clone();
    loop {
        let spec = mesh.borrow_and_update().clone();
        let kube = &shared.kube;
        let client = kube.client(MANAGER);
        ensure_gateway_services(kube, &client, &spec.ingress_gateways);
        for rev in &spec.revisions {
            ensure_revision(kube, &client, rev, &spec.ingress_gateways);
        }
        for rev in applied.iter().filter(|r| !spec.revisions.contains(r)) {
            remove_revision(&client, rev);
        }
        applied = spec.revisions.clone();
        tokio::select! {
            changed = mesh.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}
