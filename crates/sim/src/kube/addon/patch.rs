//! Patch versions inside a revision. AKS moves a revision's istiod, its injector and its
//! ingress gateways to a newer Istio patch (1.27.3 → 1.27.4) by itself; the sidecars keep the
//! proxy image they were injected with until their pods are recreated. [`Patches`] is the
//! version each revision's injector injects now; [`roll_patch`] is AKS rolling one, written
//! where a real cluster shows it: the istiod Deployment's image, the injector ConfigMap's
//! `values` (hub, tag), the gateway Deployments' image. Scenario `patch-rolled` rolls one
//! after the cluster settled; `POST /_sim/patch?revision=REV` rolls one mid-run.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::MANAGER;
use super::manifests::{self, istio_version};
use crate::kube::istio::{INGRESS_NS, ISTIO_NS};
use crate::kube::object::name_of;
use crate::kube::resources::by_plural;
use crate::kube::state::KubeState;

/// Patches rolled per revision since the start (shared by the add-on and its injector).
#[derive(Clone, Default, Debug)]
pub struct Patches(Arc<Mutex<BTreeMap<String, u32>>>);

impl Patches {
    /// The Istio version `rev` runs now: AKS's shipped patch plus the patches rolled since.
    pub fn version(&self, rev: &str) -> String {
        let rolled = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(rev)
            .copied()
            .unwrap_or(0);
        bump(&istio_version(rev), rolled)
    }

    /// The proxy image the injector of `rev` injects now.
    pub fn proxy_image(&self, rev: &str) -> String {
        manifests::proxy_image_of(&self.version(rev))
    }

    fn roll(&self, rev: &str) -> String {
        *self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(rev.to_string())
            .or_default() += 1;
        self.version(rev)
    }
}

/// `1.27.3` with `by` more patches: `1.27.4`.
fn bump(version: &str, by: u32) -> String {
    match version.rsplit_once('.') {
        Some((head, patch)) if by > 0 => {
            let p: u32 = patch.parse().unwrap_or(0);
            format!("{head}.{}", p + by)
        }
        _ => version.to_string(),
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rolled_patch_raises_only_the_patch_number() {
        assert_eq!(bump("1.27.3", 0), "1.27.3");
        assert_eq!(bump("1.27.3", 2), "1.27.5");
        let p = Patches::default();
        assert_eq!(p.version("asm-1-27"), "1.27.3");
        assert_eq!(p.roll("asm-1-27"), "1.27.4");
        assert_eq!(
            p.proxy_image("asm-1-27"),
            "mcr.microsoft.com/oss/istio/proxyv2:1.27.4-distroless"
        );
        assert_eq!(p.version("asm-1-28"), "1.28.1");
    }
}
