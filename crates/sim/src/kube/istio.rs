//! What the whole cluster knows of the Istio add-on, below the add-on itself: its two
//! namespaces, which pods are istiod, and which revision a pod's proxy belongs to (the store
//! indexes it for istiod's syncz; the controllers and `/_sim/state` read it).

use serde_json::Value;

use super::object::{annotation, label, ns_of};

pub const ISTIO_NS: &str = "aks-istio-system";
pub const INGRESS_NS: &str = "aks-istio-ingress";

/// An istiod pod (or Deployment): `app=istiod` in the add-on's namespace.
pub fn is_istiod(obj: &Value) -> bool {
    ns_of(obj) == ISTIO_NS && label(obj, "app") == Some("istiod")
}

/// The revision that injected a pod (`sidecar.istio.io/status`), or for a gateway pod its label.
pub fn pod_revision(pod: &Value) -> Option<String> {
    if let Some(s) = annotation(pod, "sidecar.istio.io/status")
        && let Ok(v) = serde_json::from_str::<Value>(s)
        && let Some(r) = v["revision"].as_str()
    {
        return Some(r.to_string());
    }
    if ns_of(pod) == INGRESS_NS {
        return label(pod, "istio.io/rev").map(str::to_string);
    }
    None
}
