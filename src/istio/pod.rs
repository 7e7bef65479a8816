//! Which revision injected a pod.
//!
//! Best first: the injector's `sidecar.istio.io/status` JSON (`revision` is the injecting
//! istiod's own revision, never a tag); then the `istio.io/rev` *annotation* (Istio ≥ 1.18);
//! then the `istio-proxy` image tag. A pod `istio.io/rev` *label* is the user's and may be a
//! tag, so it is never read as the injecting revision. With native sidecars `istio-proxy` is
//! an init container (and `containers` in the status JSON may be `null`), so both lists are
//! searched.

use k8s_openapi::api::core::v1::{Container, Pod};
use serde::{Deserialize, Serialize};

use super::{PROXY_CONTAINER, REV_ANNOTATION, Revision, SIDECAR_STATUS_ANNOTATION};

/// The injector's status annotation. Every list may be `null`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SidecarStatus {
    #[serde(default)]
    pub init_containers: Option<Vec<String>>,
    #[serde(default)]
    pub containers: Option<Vec<String>>,
    #[serde(default)]
    pub volumes: Option<Vec<String>>,
    #[serde(default)]
    pub image_pull_secrets: Option<Vec<String>>,
    #[serde(default)]
    pub revision: Option<String>,
}

/// Where the injected proxy runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SidecarPlacement {
    /// `istio-proxy` in `spec.containers` (classic sidecar).
    Container,
    /// `istio-proxy` in `spec.initContainers` (native sidecar, restartPolicy Always).
    NativeSidecar,
}

/// Which evidence named the revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RevisionSource {
    StatusAnnotation,
    RevAnnotation,
    ProxyImage,
}

/// What a pod says about its mesh membership.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum PodRevision {
    /// No injection status and no `istio-proxy` container: not in the mesh.
    NotInjected,
    /// Injected; `revision` is a string because it can be `default` outside AKS.
    Injected {
        revision: String,
        source: RevisionSource,
        placement: Option<SidecarPlacement>,
        proxy_image: Option<String>,
    },
    /// Something says the pod is injected but no revision can be read from it.
    Unknown { reason: String },
}

impl PodRevision {
    /// The injecting revision, if known.
    pub fn revision(&self) -> Option<&str> {
        match self {
            PodRevision::Injected { revision, .. } => Some(revision),
            _ => None,
        }
    }

    /// The injecting revision parsed as `asm-X-Y`, if known and well-formed.
    pub fn parsed(&self) -> Option<Revision> {
        self.revision().and_then(|r| r.parse().ok())
    }

    pub fn is_injected(&self) -> bool {
        !matches!(self, PodRevision::NotInjected)
    }
}

/// Finds `istio-proxy` in the containers, then in the init containers.
pub fn proxy_container(pod: &Pod) -> Option<(&Container, SidecarPlacement)> {
    let spec = pod.spec.as_ref()?;
    if let Some(c) = spec.containers.iter().find(|c| c.name == PROXY_CONTAINER) {
        return Some((c, SidecarPlacement::Container));
    }
    spec.init_containers
        .as_ref()?
        .iter()
        .find(|c| c.name == PROXY_CONTAINER)
        .map(|c| (c, SidecarPlacement::NativeSidecar))
}

/// Parses the `sidecar.istio.io/status` annotation, if present and well-formed.
pub fn sidecar_status(pod: &Pod) -> Option<Result<SidecarStatus, serde_json::Error>> {
    let raw = pod
        .metadata
        .annotations
        .as_ref()?
        .get(SIDECAR_STATUS_ANNOTATION)?;
    Some(serde_json::from_str(raw))
}

/// The revision that injected `pod`, by the rules in the module docs.
pub fn pod_revision(pod: &Pod) -> PodRevision {
    let proxy = proxy_container(pod);
    let placement = proxy.map(|(_, p)| p);
    let proxy_image = proxy.and_then(|(c, _)| c.image.clone());
    let status = sidecar_status(pod);
    let annotations = pod.metadata.annotations.as_ref();

    let mut bad_status = None;
    match &status {
        Some(Ok(st)) => {
            if let Some(rev) = st.revision.as_deref().filter(|r| !r.is_empty()) {
                return PodRevision::Injected {
                    revision: rev.to_string(),
                    source: RevisionSource::StatusAnnotation,
                    placement,
                    proxy_image,
                };
            }
        }
        Some(Err(err)) => bad_status = Some(err.to_string()),
        None => {}
    }
    if status.is_none() && proxy.is_none() {
        return PodRevision::NotInjected;
    }
    if let Some(rev) = annotations
        .and_then(|a| a.get(REV_ANNOTATION))
        .filter(|r| !r.is_empty())
    {
        return PodRevision::Injected {
            revision: rev.clone(),
            source: RevisionSource::RevAnnotation,
            placement,
            proxy_image,
        };
    }
    if let Some(rev) = proxy_image.as_deref().and_then(image_revision) {
        return PodRevision::Injected {
            revision: rev.to_string(),
            source: RevisionSource::ProxyImage,
            placement,
            proxy_image,
        };
    }
    PodRevision::Unknown {
        reason: match bad_status {
            Some(err) => format!("{SIDECAR_STATUS_ANNOTATION} is not valid JSON ({err})"),
            None => format!(
                "injected, but neither {SIDECAR_STATUS_ANNOTATION}, the {REV_ANNOTATION} annotation nor the proxy image names a revision"
            ),
        },
    }
}

/// `mcr.microsoft.com/oss/istio/proxyv2:1.27.3-distroless` → `asm-1-27`.
pub fn image_revision(image: &str) -> Option<Revision> {
    let (_, tag) = image.rsplit_once(':')?;
    // A registry port ("host:5000/img") leaves a '/' in what follows the last ':'.
    if tag.contains('/') {
        return None;
    }
    Revision::from_istio_version(tag)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    pub(crate) fn mk_container(name: &str, image: &str) -> Container {
        Container {
            name: name.to_string(),
            image: Some(image.to_string()),
            ..Default::default()
        }
    }

    pub(crate) fn mk_pod(
        annotations: &[(&str, &str)],
        containers: Vec<Container>,
        init_containers: Vec<Container>,
    ) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-1".into()),
                namespace: Some("shop".into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect::<BTreeMap<_, _>>(),
                ),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers,
                init_containers: (!init_containers.is_empty()).then_some(init_containers),
                ..Default::default()
            }),
            status: None,
        }
    }

    const PROXY: &str = "mcr.microsoft.com/oss/istio/proxyv2:1.27.3-distroless";

    #[test]
    fn classic_sidecar_reads_status_revision() {
        let pod = mk_pod(
            &[(
                SIDECAR_STATUS_ANNOTATION,
                r#"{"initContainers":["istio-init"],"containers":["istio-proxy"],"volumes":["istio-envoy"],"imagePullSecrets":null,"revision":"asm-1-27"}"#,
            )],
            vec![
                mk_container("app", "app:1"),
                mk_container("istio-proxy", PROXY),
            ],
            vec![mk_container("istio-init", PROXY)],
        );
        assert_eq!(
            pod_revision(&pod),
            PodRevision::Injected {
                revision: "asm-1-27".into(),
                source: RevisionSource::StatusAnnotation,
                placement: Some(SidecarPlacement::Container),
                proxy_image: Some(PROXY.into()),
            }
        );
    }

    #[test]
    fn native_sidecar_is_found_in_init_containers() {
        let pod = mk_pod(
            &[(
                SIDECAR_STATUS_ANNOTATION,
                r#"{"initContainers":["istio-init","istio-proxy"],"containers":null,"volumes":null,"imagePullSecrets":null,"revision":"asm-1-29"}"#,
            )],
            vec![mk_container("app", "app:1")],
            vec![
                mk_container("istio-init", PROXY),
                mk_container("istio-proxy", PROXY),
            ],
        );
        let got = pod_revision(&pod);
        assert_eq!(got.revision(), Some("asm-1-29"));
        assert!(matches!(
            got,
            PodRevision::Injected {
                placement: Some(SidecarPlacement::NativeSidecar),
                ..
            }
        ));
        let st = sidecar_status(&pod).unwrap().unwrap();
        assert_eq!(st.containers, None);
    }

    #[test]
    fn falls_back_to_rev_annotation_then_image() {
        let pod = mk_pod(
            &[(REV_ANNOTATION, "asm-1-28")],
            vec![mk_container("istio-proxy", PROXY)],
            vec![],
        );
        let got = pod_revision(&pod);
        assert_eq!(got.revision(), Some("asm-1-28"));
        assert!(matches!(
            got,
            PodRevision::Injected {
                source: RevisionSource::RevAnnotation,
                ..
            }
        ));

        let pod = mk_pod(&[], vec![], vec![mk_container("istio-proxy", PROXY)]);
        let got = pod_revision(&pod);
        assert_eq!(got.parsed(), Some(Revision::new(1, 27)));
        assert!(matches!(
            got,
            PodRevision::Injected {
                source: RevisionSource::ProxyImage,
                ..
            }
        ));
    }

    #[test]
    fn a_rev_label_alone_is_not_injection() {
        let mut pod = mk_pod(&[], vec![mk_container("app", "app:1")], vec![]);
        pod.metadata.labels = Some([("istio.io/rev".to_string(), "prod".to_string())].into());
        assert_eq!(pod_revision(&pod), PodRevision::NotInjected);
        assert!(!pod_revision(&pod).is_injected());
    }

    #[test]
    fn broken_status_without_other_evidence_is_unknown() {
        let pod = mk_pod(
            &[(SIDECAR_STATUS_ANNOTATION, "{not json")],
            vec![mk_container("istio-proxy", "example/proxy:latest")],
            vec![],
        );
        match pod_revision(&pod) {
            PodRevision::Unknown { reason } => {
                assert!(reason.contains("not valid JSON"), "{reason}")
            }
            other => panic!("expected Unknown, got {other:?}"),
        }
    }

    #[test]
    fn image_revision_handles_registry_ports() {
        assert_eq!(image_revision(PROXY), Some(Revision::new(1, 27)));
        assert_eq!(image_revision("localhost:5000/proxyv2"), None);
        assert_eq!(image_revision("proxyv2"), None);
    }
}
