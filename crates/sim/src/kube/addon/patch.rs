//! Patch versions inside a revision. AKS moves a revision's istiod, its injector and its
//! ingress gateways to a newer Istio patch (1.27.3 → 1.27.4) by itself; the sidecars keep the
//! proxy image they were injected with until their pods are recreated. [`super::versions::Patches`] is the
//! version each revision's injector injects now; [`roll_patch`] is AKS rolling one, written
//! where a real cluster shows it: the istiod Deployment's image, the injector ConfigMap's
//! `values` (hub, tag), the gateway Deployments' image. Scenario `patch-rolled` rolls one
//! after the cluster settled; `POST /_sim/patch?revision=REV` rolls one mid-run.

use serde_json::{Value, json};

use super::MANAGER;
use super::manifests;
use crate::kube::istio::{INGRESS_NS, ISTIO_NS};
use crate::kube::object::name_of;
use crate::kube::resources::by_plural;
use crate::kube::state::KubeState;

/// Rolls the next patch of the installed revision `rev`: the injector injects the new proxy
/// image from now on, and istiod and the gateways roll to it (their Deployments' images
/// change, the Deployment controller replaces their pods). The new version; an error when
/// `rev` is not installed.
pub fn roll_patch(kube: &KubeState, rev: &str) -> Result<String, String> {
    let client = kube.client(MANAGER);
    let istiod = format!("istiod-{rev}");
    if client
        .get(by_plural("deployments"), ISTIO_NS, &istiod)
        .is_none()
    {
        return Err(format!(
            "revision {rev} is not installed (no Deployment {ISTIO_NS}/{istiod})"
        ));
    }
    let version = kube.patches.roll(rev);
    let set_image = |ns: &str, name: &str, image: String| {
        let _ = client.update(by_plural("deployments"), ns, name, |cur| {
            let mut next = cur.clone();
            if let Some(c) = next["spec"]["template"]["spec"]["containers"].get_mut(0) {
                c["image"] = json!(image);
            }
            Ok(Some(next))
        });
    };
    set_image(ISTIO_NS, &istiod, manifests::pilot_image_of(&version));
    let _ = client.update(
        by_plural("configmaps"),
        ISTIO_NS,
        &format!("istio-sidecar-injector-{rev}"),
        |cur| {
            let mut next = cur.clone();
            next["data"]["values"] = json!(manifests::injector_values(rev, &version));
            Ok(Some(next))
        },
    );
    let (gateways, _) = client.list(by_plural("deployments"), Some(INGRESS_NS));
    for g in gateways.iter().filter(|g| is_gateway_of(g, rev)) {
        set_image(INGRESS_NS, name_of(g), manifests::proxy_image_of(&version));
    }
    Ok(version)
}

fn is_gateway_of(deployment: &Value, rev: &str) -> bool {
    crate::kube::object::label(deployment, "istio.io/rev") == Some(rev)
}
