//! Copying `istio-shared-configmap-<source>` to `-<target>` before the canary starts, so the
//! new control plane comes up with the same MeshConfig. Observe first: a missing source means
//! there is nothing to copy; an identical target means the copy already happened (a resumed
//! run); a *different* target is refused unless forced, so a person's edits are never lost
//! silently.
//!
//! [`plan_copy`] is the one decision (the plan, the copy step and its gate all read it);
//! [`read_copy`] reads what it decides from and [`write_copy`] carries it out (or dry-runs it).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, PostParams};
use serde::Serialize;

use super::{K8sError, target};

/// Annotation recording where a copied ConfigMap came from.
pub const COPIED_FROM_ANNOTATION: &str = "asm-canary.io/copied-from";

/// What to do, decided from what exists.
#[derive(Clone, Debug, PartialEq)]
pub enum CopyPlan {
    /// The source does not exist: nothing to copy.
    SkipNoSource,
    /// The target already holds the source's data.
    SkipIdentical,
    /// Create the target.
    Create(ConfigMap),
    /// Replace the target's data (forced); carries the target's resourceVersion.
    Overwrite(ConfigMap),
    /// The target (named) exists with other data and force is off.
    RefuseDifferent {
        name: String,
        differing_keys: Vec<String>,
    },
}

/// What a copy did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CopyOutcome {
    SourceMissing,
    AlreadyIdentical,
    Created,
    Overwritten,
}

fn same_data(a: &ConfigMap, b: &ConfigMap) -> bool {
    let empty = BTreeMap::new();
    let ebin = BTreeMap::new();
    a.data.as_ref().unwrap_or(&empty) == b.data.as_ref().unwrap_or(&empty)
        && a.binary_data.as_ref().unwrap_or(&ebin) == b.binary_data.as_ref().unwrap_or(&ebin)
}

fn differing_keys(a: &ConfigMap, b: &ConfigMap) -> Vec<String> {
    let empty = BTreeMap::new();
    let da = a.data.as_ref().unwrap_or(&empty);
    let db = b.data.as_ref().unwrap_or(&empty);
    let mut keys: Vec<String> = da
        .keys()
        .chain(db.keys())
        .filter(|k| da.get(*k) != db.get(*k))
        .cloned()
        .collect();
    let ebin = BTreeMap::new();
    let ba = a.binary_data.as_ref().unwrap_or(&ebin);
    let bb = b.binary_data.as_ref().unwrap_or(&ebin);
    keys.extend(
        ba.keys()
            .chain(bb.keys())
            .filter(|k| ba.get(*k) != bb.get(*k))
            .cloned(),
    );
    keys.sort();
    keys.dedup();
    keys
}

/// Decides the copy of `source` to a ConfigMap named `target_name` in the same namespace.
pub fn plan_copy(
    source: Option<&ConfigMap>,
    target_cm: Option<&ConfigMap>,
    target_name: &str,
    force: bool,
) -> CopyPlan {
    let Some(source) = source else {
        return CopyPlan::SkipNoSource;
    };
    let source_name = source.metadata.name.clone().unwrap_or_default();
    let mut desired = ConfigMap {
        metadata: ObjectMeta {
            name: Some(target_name.to_string()),
            namespace: source.metadata.namespace.clone(),
            labels: source.metadata.labels.clone(),
            annotations: Some([(COPIED_FROM_ANNOTATION.to_string(), source_name)].into()),
            ..Default::default()
        },
        data: source.data.clone(),
        binary_data: source.binary_data.clone(),
        immutable: None,
    };
    match target_cm {
        None => CopyPlan::Create(desired),
        Some(existing) if same_data(existing, source) => CopyPlan::SkipIdentical,
        Some(existing) if force => {
            desired.metadata.resource_version = existing.metadata.resource_version.clone();
            CopyPlan::Overwrite(desired)
        }
        Some(existing) => CopyPlan::RefuseDifferent {
            name: target_name.to_string(),
            differing_keys: differing_keys(existing, source),
        },
    }
}

/// Reads the source and the target of a copy in `namespace`: what [`plan_copy`] decides from.
pub async fn read_copy(
    client: &Client,
    namespace: &str,
    from: &str,
    to: &str,
) -> Result<(Option<ConfigMap>, Option<ConfigMap>), K8sError> {
    let api = Api::<ConfigMap>::namespaced(client.clone(), namespace);
    let read = |name: &str| {
        let api = api.clone();
        let name = name.to_string();
        async move {
            api.get_opt(&name).await.map_err(|source| K8sError::Api {
                action: "read",
                kind: "ConfigMap",
                target: target(namespace, &name),
                source,
            })
        }
    };
    futures::try_join!(read(from), read(to))
}

/// Carries out a [`CopyPlan`] in `namespace`: creates or replaces the target; the skips write
/// nothing and a refusal is an error. With `dry_run` the API server checks the write (its
/// admission webhooks included) without making it.
pub async fn write_copy(
    client: &Client,
    namespace: &str,
    plan: &CopyPlan,
    dry_run: bool,
) -> Result<CopyOutcome, K8sError> {
    let api = Api::<ConfigMap>::namespaced(client.clone(), namespace);
    let params = PostParams {
        dry_run,
        ..Default::default()
    };
    let failed = |action: &'static str, cm: &ConfigMap| {
        let name = cm.metadata.name.clone().unwrap_or_default();
        move |source| K8sError::Api {
            action,
            kind: "ConfigMap",
            target: target(namespace, &name),
            source,
        }
    };
    match plan {
        CopyPlan::SkipNoSource => Ok(CopyOutcome::SourceMissing),
        CopyPlan::SkipIdentical => Ok(CopyOutcome::AlreadyIdentical),
        CopyPlan::Create(cm) => {
            api.create(&params, cm)
                .await
                .map_err(failed("create", cm))?;
            Ok(CopyOutcome::Created)
        }
        CopyPlan::Overwrite(cm) => {
            let name = cm.metadata.name.clone().unwrap_or_default();
            api.replace(&name, &params, cm)
                .await
                .map_err(failed("replace", cm))?;
            Ok(CopyOutcome::Overwritten)
        }
        CopyPlan::RefuseDifferent {
            name,
            differing_keys,
        } => Err(K8sError::Refused {
            kind: "ConfigMap",
            target: target(namespace, name),
            message: format!(
                "already exists with different data (keys {}); compare them and delete it, or pass --force to overwrite it",
                differing_keys.join(", ")
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_cm(name: &str, data: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(crate::istio::ISTIO_NAMESPACE.into()),
                resource_version: Some("42".into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    const MESH: &str =
        "accessLogFile: /dev/stdout\noutboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n";

    #[test]
    fn no_data_and_an_empty_map_are_the_same_data() {
        let mut src = mk_cm("a", &[]);
        let mut dst = mk_cm("b", &[]);
        dst.data = None;
        assert_eq!(
            plan_copy(Some(&src), Some(&dst), "b", false),
            CopyPlan::SkipIdentical
        );
        src.binary_data = Some(BTreeMap::new());
        assert_eq!(
            plan_copy(Some(&dst), Some(&src), "a", false),
            CopyPlan::SkipIdentical
        );
    }

    #[test]
    fn no_source_nothing_to_do() {
        assert_eq!(plan_copy(None, None, "t", false), CopyPlan::SkipNoSource);
    }

    #[test]
    fn creates_with_the_source_data() {
        let src = mk_cm("istio-shared-configmap-asm-1-27", &[("mesh", MESH)]);
        match plan_copy(Some(&src), None, "istio-shared-configmap-asm-1-28", false) {
            CopyPlan::Create(cm) => {
                assert_eq!(
                    cm.metadata.name.as_deref(),
                    Some("istio-shared-configmap-asm-1-28")
                );
                assert_eq!(
                    cm.metadata.namespace.as_deref(),
                    Some(crate::istio::ISTIO_NAMESPACE)
                );
                assert_eq!(cm.metadata.resource_version, None);
                assert_eq!(cm.data, src.data);
                assert_eq!(
                    cm.metadata.annotations.unwrap()[COPIED_FROM_ANNOTATION],
                    "istio-shared-configmap-asm-1-27"
                );
            }
            other => panic!("expected Create, got {other:?}"),
        }
    }

    #[test]
    fn identical_target_is_left_alone() {
        let src = mk_cm("a", &[("mesh", MESH)]);
        let dst = mk_cm("b", &[("mesh", MESH)]);
        assert_eq!(
            plan_copy(Some(&src), Some(&dst), "b", false),
            CopyPlan::SkipIdentical
        );
        assert_eq!(
            plan_copy(Some(&src), Some(&dst), "b", true),
            CopyPlan::SkipIdentical
        );
    }

    #[test]
    fn different_target_is_refused_unless_forced() {
        let src = mk_cm("a", &[("mesh", MESH)]);
        let dst = mk_cm("b", &[("mesh", "accessLogFile: \"\"\n"), ("extra", "1")]);
        assert_eq!(
            plan_copy(Some(&src), Some(&dst), "b", false),
            CopyPlan::RefuseDifferent {
                name: "b".into(),
                differing_keys: vec!["extra".into(), "mesh".into()]
            }
        );
        match plan_copy(Some(&src), Some(&dst), "b", true) {
            CopyPlan::Overwrite(cm) => {
                assert_eq!(cm.data, src.data);
                assert_eq!(cm.metadata.resource_version.as_deref(), Some("42"));
            }
            other => panic!("expected Overwrite, got {other:?}"),
        }
    }
}
