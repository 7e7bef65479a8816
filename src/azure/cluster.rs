//! The managed cluster as ARM returns it, kept as untyped JSON so a PUT sends back every
//! field this tool does not model (including ones only newer api-versions have), with only
//! `properties.serviceMeshProfile.istio.revisions` changed.
//!
//! The PUT body is what GET returned, read-only fields included: that is what Microsoft's
//! Go tooling (ARO-Tools, via the Go SDK) sends, and ARM RPC requires a resource provider to
//! ignore read-only values that match its own. azure-cli strips them instead; either works,
//! and sending back exactly what was read changes the least.

use serde::Serialize;
use serde_json::Value;

use super::ClusterId;

/// Terminal `provisioningState` values (ARM RPC).
pub const TERMINAL_STATES: [&str; 3] = ["Succeeded", "Failed", "Canceled"];

/// A managed cluster document and its eTag.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClusterDoc {
    pub id: ClusterId,
    pub body: Value,
    /// `eTag` from the body, else the `ETag` response header.
    pub etag: Option<String>,
}

/// Why the revisions could not be written into the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the cluster has no serviceMeshProfile: the Istio add-on is not enabled")]
    NoMeshProfile,
    #[error("serviceMeshProfile.mode is {mode:?}, not \"Istio\": the Istio add-on is not enabled")]
    NotIstio { mode: String },
    #[error("the cluster document is not a JSON object with properties")]
    NotAnObject,
}

impl ClusterDoc {
    pub fn new(id: ClusterId, body: Value, header_etag: Option<String>) -> Self {
        let etag = body
            .get("eTag")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or(header_etag);
        Self { id, body, etag }
    }

    fn props(&self) -> Option<&Value> {
        self.body.get("properties")
    }

    /// `properties.serviceMeshProfile.istio.revisions` (empty when absent).
    pub fn revisions(&self) -> Vec<String> {
        self.props()
            .and_then(|p| p.pointer("/serviceMeshProfile/istio/revisions"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn provisioning_state(&self) -> Option<&str> {
        self.props()?.get("provisioningState")?.as_str()
    }

    /// True when `provisioningState` is Succeeded, Failed or Canceled (or absent).
    pub fn is_idle(&self) -> bool {
        self.provisioning_state()
            .is_none_or(|s| TERMINAL_STATES.iter().any(|t| t.eq_ignore_ascii_case(s)))
    }

    /// The running version (`currentKubernetesVersion`), else the requested one.
    pub fn kubernetes_version(&self) -> Option<&str> {
        let p = self.props()?;
        p.get("currentKubernetesVersion")
            .and_then(Value::as_str)
            .or_else(|| p.get("kubernetesVersion").and_then(Value::as_str))
    }

    pub fn location(&self) -> Option<&str> {
        self.body.get("location")?.as_str()
    }

    /// `serviceMeshProfile.mode` (`Istio` or `Disabled`).
    pub fn mesh_mode(&self) -> Option<&str> {
        self.props()?.pointer("/serviceMeshProfile/mode")?.as_str()
    }

    /// `properties.powerState.code` (`Running` or `Stopped`).
    pub fn power_state(&self) -> Option<&str> {
        self.props()?.pointer("/powerState/code")?.as_str()
    }

    /// `properties.status.provisioningError` as (code, message), present after failures.
    pub fn provisioning_error(&self) -> Option<(String, String)> {
        let e = self.props()?.pointer("/status/provisioningError")?;
        Some((
            e.get("code")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            e.get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        ))
    }

    /// The body to PUT: everything as read, with only the revisions replaced.
    pub fn with_revisions(&self, revisions: &[String]) -> Result<Value, BodyError> {
        let mut body = self.body.clone();
        let profile = body
            .get_mut("properties")
            .and_then(Value::as_object_mut)
            .ok_or(BodyError::NotAnObject)?
            .get_mut("serviceMeshProfile")
            .and_then(Value::as_object_mut)
            .ok_or(BodyError::NoMeshProfile)?;
        let mode = profile.get("mode").and_then(Value::as_str).unwrap_or("");
        if !mode.eq_ignore_ascii_case("Istio") {
            return Err(BodyError::NotIstio {
                mode: mode.to_string(),
            });
        }
        let istio = profile
            .entry("istio")
            .or_insert_with(|| Value::Object(Default::default()));
        let istio = istio.as_object_mut().ok_or(BodyError::NoMeshProfile)?;
        istio.insert(
            "revisions".to_string(),
            Value::Array(revisions.iter().cloned().map(Value::String).collect()),
        );
        Ok(body)
    }
}

/// Same revisions, ignoring order (ARM does not promise an order).
pub fn same_revisions(a: &[String], b: &[String]) -> bool {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort();
    b.sort();
    a == b
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn mk_cluster_body(revisions: &[&str], state: &str) -> Value {
        serde_json::json!({
            "id": "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/rg-sim/providers/Microsoft.ContainerService/managedClusters/aks-sim",
            "name": "aks-sim",
            "type": "Microsoft.ContainerService/ManagedClusters",
            "location": "eastus2",
            "eTag": "etag-1",
            "tags": {"team": "mesh"},
            "sku": {"name": "Base", "tier": "Standard"},
            "properties": {
                "provisioningState": state,
                "powerState": {"code": "Running"},
                "kubernetesVersion": "1.33",
                "currentKubernetesVersion": "1.33.2",
                "fqdn": "aks-sim-dns.hcp.eastus2.azmk8s.io",
                "agentPoolProfiles": [{"name": "system", "count": 3, "eTag": "pool-etag", "futureKnob": {"x": [1, 2]}}],
                "serviceMeshProfile": {
                    "mode": "Istio",
                    "istio": {
                        "components": {"ingressGateways": [{"mode": "External", "enabled": true}], "proxyRedirectionMechanism": "CNIChaining"},
                        "revisions": revisions
                    }
                },
                "someNewerApiField": {"nested": true}
            }
        })
    }

    fn mk_doc(revisions: &[&str], state: &str) -> ClusterDoc {
        ClusterDoc::new(
            "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-sim/providers/Microsoft.ContainerService/managedClusters/aks-sim"
                .parse()
                .unwrap(),
            mk_cluster_body(revisions, state),
            Some("header-etag".into()),
        )
    }

    #[test]
    fn accessors() {
        let doc = mk_doc(&["asm-1-27"], "Succeeded");
        assert_eq!(doc.revisions(), vec!["asm-1-27".to_string()]);
        assert_eq!(doc.provisioning_state(), Some("Succeeded"));
        assert!(doc.is_idle());
        assert_eq!(doc.kubernetes_version(), Some("1.33.2"));
        assert_eq!(doc.location(), Some("eastus2"));
        assert_eq!(doc.mesh_mode(), Some("Istio"));
        assert_eq!(doc.power_state(), Some("Running"));
        assert_eq!(doc.etag.as_deref(), Some("etag-1"), "the body's eTag wins");
        assert!(!mk_doc(&[], "Updating").is_idle());
        assert!(mk_doc(&[], "Canceled").is_idle());
    }

    #[test]
    fn header_etag_when_the_body_has_none() {
        let mut body = mk_cluster_body(&["asm-1-27"], "Succeeded");
        body.as_object_mut().unwrap().remove("eTag");
        let doc = ClusterDoc::new(mk_doc(&[], "Succeeded").id, body, Some("h".into()));
        assert_eq!(doc.etag.as_deref(), Some("h"));
    }

    #[test]
    fn put_body_changes_only_the_revisions_and_keeps_unknown_fields() {
        let doc = mk_doc(&["asm-1-27"], "Succeeded");
        let revs = vec!["asm-1-27".to_string(), "asm-1-28".to_string()];
        let body = doc.with_revisions(&revs).unwrap();
        let mut expected = doc.body.clone();
        expected["properties"]["serviceMeshProfile"]["istio"]["revisions"] =
            serde_json::json!(["asm-1-27", "asm-1-28"]);
        assert_eq!(body, expected);
        // Round trip through text keeps key order and unknown fields.
        let text = serde_json::to_string(&body).unwrap();
        assert!(text.contains("someNewerApiField") && text.contains("futureKnob"));
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, body);
        let doc2 = ClusterDoc::new(doc.id.clone(), back, None);
        assert_eq!(doc2.revisions(), revs);
    }

    #[test]
    fn refuses_a_cluster_without_istio() {
        let mut body = mk_cluster_body(&[], "Succeeded");
        body["properties"]["serviceMeshProfile"]["mode"] = "Disabled".into();
        let doc = ClusterDoc::new(mk_doc(&[], "Succeeded").id, body.clone(), None);
        assert_eq!(
            doc.with_revisions(&["asm-1-28".into()]).unwrap_err(),
            BodyError::NotIstio {
                mode: "Disabled".into()
            }
        );
        body["properties"]
            .as_object_mut()
            .unwrap()
            .remove("serviceMeshProfile");
        let doc = ClusterDoc::new(doc.id, body, None);
        assert_eq!(
            doc.with_revisions(&["asm-1-28".into()]).unwrap_err(),
            BodyError::NoMeshProfile
        );
    }

    #[test]
    fn revisions_compare_as_sets() {
        let a = vec!["asm-1-27".to_string(), "asm-1-28".to_string()];
        let b = vec!["asm-1-28".to_string(), "asm-1-27".to_string()];
        assert!(same_revisions(&a, &b));
        assert!(!same_revisions(&a, &b[..1]));
    }
}
