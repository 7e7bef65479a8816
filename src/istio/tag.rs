//! The revision-tag webhook, rendered the way `istioctl tag set <tag> --revision <rev>
//! --istioNamespace aks-istio-system --overwrite` renders it (istio `istioctl/pkg/tag/generate.go`
//! and the chart template `revision-tags-mwc.yaml`), so istioctl and istiod keep working with
//! a tag this tool wrote:
//!
//! - name `istio-revision-tag-<tag>-aks-istio-system` (no suffix only in `istio-system`);
//! - labels from the template (`istio.io/tag`, `istio.io/rev=<rev>` so istiod of `<rev>` keeps
//!   the caBundle fresh, `app: sidecar-injector`, `app.kubernetes.io/name: istiod`), then every
//!   label of the canonical revision webhook except `app`, then labels containing
//!   `operator.istio.io` removed (istioctl's user-managed mode); annotations copied;
//! - two webhooks, `rev.namespace.` and `rev.object.sidecar-injector.istio.io`, pointing at
//!   Service `istiod-<rev>` port 443 with the canonical webhook's path and caBundle (or its
//!   `url` when it uses one), `failurePolicy: Fail`, `sideEffects: None`, reinvocation
//!   policy copied.
//!
//! The `default` tag (which also needs a validating webhook and deactivates legacy injectors)
//! is not supported: AKS does not support `istio-injection=enabled`.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};

use super::{INJECT_LABEL, INJECTION_LABEL, REV_LABEL, Revision, TAG_LABEL};

const INJECTOR_SUFFIX: &str = "sidecar-injector.istio.io";
const OPERATOR_LABEL_PART: &str = "operator.istio.io";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    #[error(
        "tag name {tag:?} is not a valid label value (1-63 characters of [A-Za-z0-9._-], starting and ending alphanumeric)"
    )]
    InvalidName { tag: String },
    #[error(
        "tag {tag:?} looks like a revision name; a tag must not collide with a revision (istioctl refuses it too)"
    )]
    CollidesWithRevision { tag: String },
    #[error(
        "the \"default\" tag is not supported on the AKS add-on (it needs istio-injection=enabled); pick another --tag"
    )]
    DefaultTag,
    #[error(
        "webhook {webhook} has no webhook named *{INJECTOR_SUFFIX}; it is not an Istio injector, so a tag cannot be based on it"
    )]
    NoInjector { webhook: String },
}

/// `istio-revision-tag-<tag>` in `istio-system`, else `istio-revision-tag-<tag>-<namespace>`.
pub fn tag_webhook_name(tag: &str, istio_namespace: &str) -> String {
    if istio_namespace == "istio-system" {
        format!("istio-revision-tag-{tag}")
    } else {
        format!("istio-revision-tag-{tag}-{istio_namespace}")
    }
}

fn validate_tag(tag: &str) -> Result<(), TagError> {
    let ok = !tag.is_empty()
        && tag.len() <= 63
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && tag.as_bytes()[0].is_ascii_alphanumeric()
        && tag.as_bytes()[tag.len() - 1].is_ascii_alphanumeric();
    if !ok {
        return Err(TagError::InvalidName {
            tag: tag.to_string(),
        });
    }
    if tag == "default" {
        return Err(TagError::DefaultTag);
    }
    if tag.parse::<Revision>().is_ok() {
        return Err(TagError::CollidesWithRevision {
            tag: tag.to_string(),
        });
    }
    Ok(())
}

fn requirement(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.to_string(),
        operator: operator.to_string(),
        values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
    }
}

fn selector(reqs: Vec<LabelSelectorRequirement>) -> Option<LabelSelector> {
    Some(LabelSelector {
        match_expressions: Some(reqs),
        match_labels: None,
    })
}

/// Renders the tag webhook for `tag` → `revision`, based on the revision's canonical
/// injector webhook (found with `istio.io/rev=<rev>,!istio.io/tag`).
pub fn render_tag_webhook(
    tag: &str,
    revision: &str,
    canonical: &MutatingWebhookConfiguration,
    istio_namespace: &str,
) -> Result<MutatingWebhookConfiguration, TagError> {
    validate_tag(tag)?;
    let canonical_name = canonical.metadata.name.clone().unwrap_or_default();
    let injector = canonical
        .webhooks
        .iter()
        .flatten()
        .find(|w| w.name.ends_with(INJECTOR_SUFFIX))
        .ok_or_else(|| TagError::NoInjector {
            webhook: canonical_name.clone(),
        })?;
    Ok(MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(tag_webhook_name(tag, istio_namespace)),
            labels: Some(tag_labels(tag, revision, canonical)),
            annotations: canonical
                .metadata
                .annotations
                .clone()
                .filter(|a| !a.is_empty()),
            ..Default::default()
        },
        webhooks: Some(tag_injectors(tag, revision, injector, istio_namespace)),
    })
}

/// The template's labels, then the canonical webhook's (but its `app`), the tag and revision
/// winning, and nothing of the operator's.
fn tag_labels(
    tag: &str,
    revision: &str,
    canonical: &MutatingWebhookConfiguration,
) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = [
        (TAG_LABEL, tag),
        (REV_LABEL, revision),
        ("app", "sidecar-injector"),
        ("release", "istio"),
        ("app.kubernetes.io/name", "istiod"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in canonical.metadata.labels.iter().flatten() {
        if k != "app" {
            labels.insert(k.clone(), v.clone());
        }
    }
    // The canonical webhook carries no tag label, but be explicit about what wins.
    labels.insert(TAG_LABEL.to_string(), tag.to_string());
    labels.insert(REV_LABEL.to_string(), revision.to_string());
    labels.retain(|k, _| !k.contains(OPERATOR_LABEL_PART));
    labels
}

/// The two injector webhooks of a tag, calling what the canonical `injector` calls: the
/// namespace one (`istio.io/rev=<tag>` on the namespace) and the object one (on the pod).
fn tag_injectors(
    tag: &str,
    revision: &str,
    injector: &MutatingWebhook,
    istio_namespace: &str,
) -> Vec<MutatingWebhook> {
    let client_config = WebhookClientConfig {
        ca_bundle: injector.client_config.ca_bundle.clone(),
        service: match &injector.client_config.url {
            Some(_) => None,
            None => Some(ServiceReference {
                name: super::istiod_name(revision),
                namespace: istio_namespace.to_string(),
                path: injector
                    .client_config
                    .service
                    .as_ref()
                    .and_then(|s| s.path.clone()),
                port: Some(443),
            }),
        },
        url: injector.client_config.url.clone(),
    };
    let reinvocation = injector
        .reinvocation_policy
        .clone()
        .unwrap_or_else(|| "Never".to_string());
    let core = |name: &str, ns: Option<LabelSelector>, obj: Option<LabelSelector>| {
        pod_injector(name, &client_config, &reinvocation, ns, obj)
    };
    vec![
        core(
            "rev.namespace.sidecar-injector.istio.io",
            selector(vec![
                requirement(REV_LABEL, "In", &[tag]),
                requirement(INJECTION_LABEL, "DoesNotExist", &[]),
            ]),
            selector(vec![requirement(INJECT_LABEL, "NotIn", &["false"])]),
        ),
        core(
            "rev.object.sidecar-injector.istio.io",
            selector(vec![
                requirement(REV_LABEL, "DoesNotExist", &[]),
                requirement(INJECTION_LABEL, "DoesNotExist", &[]),
            ]),
            selector(vec![
                requirement(INJECT_LABEL, "NotIn", &["false"]),
                requirement(REV_LABEL, "In", &[tag]),
            ]),
        ),
    ]
}

/// A webhook that injects pods on CREATE, failing closed.
fn pod_injector(
    name: &str,
    client_config: &WebhookClientConfig,
    reinvocation: &str,
    namespace_selector: Option<LabelSelector>,
    object_selector: Option<LabelSelector>,
) -> MutatingWebhook {
    MutatingWebhook {
        admission_review_versions: vec!["v1".to_string()],
        client_config: client_config.clone(),
        failure_policy: Some("Fail".to_string()),
        name: name.to_string(),
        namespace_selector,
        object_selector,
        reinvocation_policy: Some(reinvocation.to_string()),
        rules: Some(vec![RuleWithOperations {
            api_groups: Some(vec![String::new()]),
            api_versions: Some(vec!["v1".to_string()]),
            operations: Some(vec!["CREATE".to_string()]),
            resources: Some(vec!["pods".to_string()]),
            scope: None,
        }]),
        side_effects: "None".to_string(),
        ..Default::default()
    }
}

/// The revision a tag webhook sends pods to: the `istiod-<rev>` Service its injector webhooks
/// call (all must agree), else its `istio.io/rev` label. `None` when it names no revision or
/// its webhooks disagree.
pub fn tag_revision(webhook: &MutatingWebhookConfiguration) -> Option<String> {
    let mut services = webhook
        .webhooks
        .iter()
        .flatten()
        .filter(|w| w.name.ends_with(INJECTOR_SUFFIX))
        .filter_map(|w| w.client_config.service.as_ref())
        .map(|s| s.name.strip_prefix("istiod-").map(str::to_string));
    match services.next() {
        Some(first) => {
            if services.all(|s| s == first) {
                first
            } else {
                None
            }
        }
        None => webhook.metadata.labels.as_ref()?.get(REV_LABEL).cloned(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    pub(crate) fn mk_canonical(revision: &str) -> MutatingWebhookConfiguration {
        let webhook = |name: &str| MutatingWebhook {
            name: name.to_string(),
            admission_review_versions: vec!["v1".into()],
            side_effects: "None".into(),
            client_config: WebhookClientConfig {
                ca_bundle: Some(ByteString(b"-----BEGIN CERTIFICATE-----\nCA\n".to_vec())),
                service: Some(ServiceReference {
                    name: format!("istiod-{revision}"),
                    namespace: "aks-istio-system".into(),
                    path: Some("/inject".into()),
                    port: Some(443),
                }),
                url: None,
            },
            reinvocation_policy: Some("Never".into()),
            ..Default::default()
        };
        MutatingWebhookConfiguration {
            metadata: ObjectMeta {
                name: Some(format!(
                    "istio-sidecar-injector-{revision}-aks-istio-system"
                )),
                labels: Some(
                    [
                        ("app", "sidecar-injector"),
                        ("istio.io/rev", revision),
                        ("admissions.enforcer/disabled", "true"),
                        ("app.kubernetes.io/managed-by", "Helm"),
                        ("release", "azure-service-mesh-istio-discovery"),
                        ("operator.istio.io/component", "Pilot"),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ),
                annotations: Some(
                    [("meta.helm.sh/release-name".to_string(), "asm".to_string())].into(),
                ),
                ..Default::default()
            },
            webhooks: Some(vec![
                webhook("rev.namespace.sidecar-injector.istio.io"),
                webhook("rev.object.sidecar-injector.istio.io"),
            ]),
        }
    }

    #[test]
    fn golden_shape_matches_istioctl_on_aks() {
        let wh = render_tag_webhook(
            "prod",
            "asm-1-28",
            &mk_canonical("asm-1-28"),
            "aks-istio-system",
        )
        .unwrap();
        let got = serde_json::to_value(&wh).unwrap();
        let ca = serde_json::to_value(ByteString(b"-----BEGIN CERTIFICATE-----\nCA\n".to_vec()))
            .unwrap();
        let client = serde_json::json!({
            "caBundle": ca,
            "service": {"name": "istiod-asm-1-28", "namespace": "aks-istio-system", "path": "/inject", "port": 443}
        });
        let rules = serde_json::json!([{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}]);
        let expected = serde_json::json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {
                "name": "istio-revision-tag-prod-aks-istio-system",
                "labels": {
                    "admissions.enforcer/disabled": "true",
                    "app": "sidecar-injector",
                    "app.kubernetes.io/managed-by": "Helm",
                    "app.kubernetes.io/name": "istiod",
                    "istio.io/rev": "asm-1-28",
                    "istio.io/tag": "prod",
                    "release": "azure-service-mesh-istio-discovery"
                },
                "annotations": {"meta.helm.sh/release-name": "asm"}
            },
            "webhooks": [
                {
                    "admissionReviewVersions": ["v1"],
                    "clientConfig": client,
                    "failurePolicy": "Fail",
                    "name": "rev.namespace.sidecar-injector.istio.io",
                    "namespaceSelector": {"matchExpressions": [
                        {"key": "istio.io/rev", "operator": "In", "values": ["prod"]},
                        {"key": "istio-injection", "operator": "DoesNotExist"}
                    ]},
                    "objectSelector": {"matchExpressions": [
                        {"key": "sidecar.istio.io/inject", "operator": "NotIn", "values": ["false"]}
                    ]},
                    "reinvocationPolicy": "Never",
                    "rules": rules,
                    "sideEffects": "None"
                },
                {
                    "admissionReviewVersions": ["v1"],
                    "clientConfig": client,
                    "failurePolicy": "Fail",
                    "name": "rev.object.sidecar-injector.istio.io",
                    "namespaceSelector": {"matchExpressions": [
                        {"key": "istio.io/rev", "operator": "DoesNotExist"},
                        {"key": "istio-injection", "operator": "DoesNotExist"}
                    ]},
                    "objectSelector": {"matchExpressions": [
                        {"key": "sidecar.istio.io/inject", "operator": "NotIn", "values": ["false"]},
                        {"key": "istio.io/rev", "operator": "In", "values": ["prod"]}
                    ]},
                    "reinvocationPolicy": "Never",
                    "rules": rules,
                    "sideEffects": "None"
                }
            ]
        });
        assert_eq!(
            got,
            expected,
            "{}",
            serde_json::to_string_pretty(&got).unwrap()
        );
        assert_eq!(tag_revision(&wh).as_deref(), Some("asm-1-28"));
    }

    #[test]
    fn istio_system_has_no_suffix() {
        assert_eq!(
            tag_webhook_name("prod", "istio-system"),
            "istio-revision-tag-prod"
        );
        assert_eq!(
            tag_webhook_name("prod-stable", "aks-istio-system"),
            "istio-revision-tag-prod-stable-aks-istio-system"
        );
    }

    #[test]
    fn url_webhooks_keep_the_url() {
        let mut canonical = mk_canonical("asm-1-28");
        for w in canonical.webhooks.iter_mut().flatten() {
            w.client_config.service = None;
            w.client_config.url = Some("https://istiod.example:15017/inject".into());
        }
        let wh = render_tag_webhook("prod", "asm-1-28", &canonical, "aks-istio-system").unwrap();
        let first = &wh.webhooks.as_ref().unwrap()[0];
        assert_eq!(
            first.client_config.url.as_deref(),
            Some("https://istiod.example:15017/inject")
        );
        assert!(first.client_config.service.is_none());
        // No service to read: fall back to the label.
        assert_eq!(tag_revision(&wh).as_deref(), Some("asm-1-28"));
    }

    #[test]
    fn refuses_bad_tags_and_non_injectors() {
        let c = mk_canonical("asm-1-28");
        assert_eq!(
            render_tag_webhook("default", "asm-1-28", &c, "aks-istio-system").unwrap_err(),
            TagError::DefaultTag
        );
        assert!(matches!(
            render_tag_webhook("asm-1-27", "asm-1-28", &c, "aks-istio-system"),
            Err(TagError::CollidesWithRevision { .. })
        ));
        assert!(matches!(
            render_tag_webhook("-x", "asm-1-28", &c, "aks-istio-system"),
            Err(TagError::InvalidName { .. })
        ));
        let mut other = c.clone();
        for w in other.webhooks.iter_mut().flatten() {
            w.name = "validation.example.com".into();
        }
        assert!(matches!(
            render_tag_webhook("prod", "asm-1-28", &other, "aks-istio-system"),
            Err(TagError::NoInjector { .. })
        ));
    }

    #[test]
    fn tag_revision_detects_disagreement() {
        let mut wh = render_tag_webhook(
            "prod",
            "asm-1-28",
            &mk_canonical("asm-1-28"),
            "aks-istio-system",
        )
        .unwrap();
        wh.webhooks.as_mut().unwrap()[1]
            .client_config
            .service
            .as_mut()
            .unwrap()
            .name = "istiod-asm-1-27".into();
        assert_eq!(tag_revision(&wh), None);
    }
}
