//! `--state-backend kubernetes`: the checkpoint lives in the cluster, in the ConfigMap
//! `asm-canary-run-<cluster>` in `aks-istio-system` (next to the lock's Lease), so a pipeline
//! re-run on a fresh agent resumes without a file.
//!
//! Every write is guarded by the resourceVersion last read or written: a write that races
//! another writer fails (409) instead of overwriting it. The store's own lock is a no-op —
//! the cluster Lease ([`super::lock`]) is what keeps a second run out.

use asm_canary_engine::checkpoint::StoreLock;
use asm_canary_engine::{CheckpointError, CheckpointStore};
use async_trait::async_trait;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use tokio::sync::Mutex;

pub const STATE_NAMESPACE: &str = crate::istio::ISTIO_NAMESPACE;
/// The data key holding the checkpoint JSON.
pub const STATE_KEY: &str = "checkpoint.json";

/// The ConfigMap name for a cluster: `asm-canary-run-<cluster>`, lower-cased and cut to a
/// valid object name.
pub fn state_configmap_name(cluster: &str) -> String {
    let clean: String = cluster
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut name = format!("asm-canary-run-{clean}");
    name.truncate(253);
    name.trim_end_matches('-').to_string()
}

/// A checkpoint in a ConfigMap.
pub struct ConfigMapStore {
    api: Api<ConfigMap>,
    name: String,
    /// resourceVersion of the ConfigMap as last read or written; `None` = not seen yet.
    seen: Mutex<Option<String>>,
}

/// Why [`ConfigMapStore::archive`] did not set the checkpoint aside.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("cannot create the copy {0}: {1}")]
    Copy(String, #[source] kube::Error),
    #[error(
        "cannot delete the checkpoint (it changed since it was shown, or is gone): {0}; the copy was removed again"
    )]
    Delete(#[source] kube::Error),
}

#[derive(Debug)]
struct NoLock;
impl StoreLock for NoLock {}

impl ConfigMapStore {
    pub fn new(client: Client, cluster: &str) -> Self {
        ConfigMapStore {
            api: Api::namespaced(client, STATE_NAMESPACE),
            name: state_configmap_name(cluster),
            seen: Mutex::new(None),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stored ConfigMap as it is, `None` when there is none.
    pub async fn stored(&self) -> Result<Option<ConfigMap>, kube::Error> {
        self.api.get_opt(&self.name).await
    }

    /// Sets the stored checkpoint aside: copies `stored` (as [`Self::stored`] returned it) to
    /// `<name>-archived-<time>`, then deletes the original on condition that its
    /// resourceVersion is still `stored`'s (a run that wrote since keeps it; the copy is then
    /// removed again). The archive's name.
    pub async fn archive(
        &self,
        stored: &ConfigMap,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<String, ArchiveError> {
        let suffix = format!("-archived-{}", now.format("%Y%m%d-%H%M%S"));
        let mut base = self.name.clone();
        base.truncate(253 - suffix.len());
        let archived = format!("{}{suffix}", base.trim_end_matches('-'));
        let mut annotations = stored.metadata.annotations.clone().unwrap_or_default();
        annotations.insert("asm-canary.io/archived-from".into(), self.name.clone());
        let copy = ConfigMap {
            metadata: ObjectMeta {
                name: Some(archived.clone()),
                namespace: Some(STATE_NAMESPACE.into()),
                labels: stored.metadata.labels.clone(),
                annotations: Some(annotations),
                ..Default::default()
            },
            data: stored.data.clone(),
            binary_data: stored.binary_data.clone(),
            ..Default::default()
        };
        self.api
            .create(&PostParams::default(), &copy)
            .await
            .map_err(|e| ArchiveError::Copy(archived.clone(), e))?;
        let guarded = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: stored.metadata.resource_version.clone(),
                uid: stored.metadata.uid.clone(),
            }),
            ..Default::default()
        };
        if let Err(e) = self.api.delete(&self.name, &guarded).await {
            let _ = self.api.delete(&archived, &DeleteParams::default()).await;
            return Err(ArchiveError::Delete(e));
        }
        Ok(archived)
    }

    fn err(&self, op: &'static str, e: kube::Error) -> CheckpointError {
        CheckpointError::Io {
            path: self.location(),
            op,
            source: std::io::Error::other(e),
        }
    }
}

#[async_trait]
impl CheckpointStore for ConfigMapStore {
    fn location(&self) -> String {
        format!("configmap {STATE_NAMESPACE}/{}", self.name)
    }

    fn unusable_advice(&self) -> Option<String> {
        Some(format!(
            "see it with `asm-canary state show --state-backend kubernetes`, and set it aside with `asm-canary state archive --state-backend kubernetes` (it is copied to {}-archived-<time>, then removed) to start a new run",
            self.name
        ))
    }

    async fn lock(&self) -> Result<Box<dyn StoreLock>, CheckpointError> {
        Ok(Box::new(NoLock))
    }

    async fn read(&self) -> Result<Option<Vec<u8>>, CheckpointError> {
        let mut seen = self.seen.lock().await;
        match self.api.get_opt(&self.name).await {
            Ok(Some(cm)) => {
                *seen = cm.metadata.resource_version.clone();
                Ok(cm
                    .data
                    .and_then(|mut d| d.remove(STATE_KEY))
                    .map(String::into_bytes))
            }
            Ok(None) => {
                *seen = None;
                Ok(None)
            }
            Err(e) => Err(self.err("read", e)),
        }
    }

    async fn write(&self, bytes: &[u8]) -> Result<(), CheckpointError> {
        let text = String::from_utf8(bytes.to_vec()).map_err(|e| CheckpointError::Io {
            path: self.location(),
            op: "encode",
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?;
        let mut seen = self.seen.lock().await;
        let mut cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(STATE_NAMESPACE.into()),
                labels: Some(
                    [(
                        "app.kubernetes.io/managed-by".to_string(),
                        "asm-canary".to_string(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            data: Some([(STATE_KEY.to_string(), text)].into()),
            ..Default::default()
        };
        let written = match seen.clone() {
            None => self
                .api
                .create(&PostParams::default(), &cm)
                .await
                .map_err(|e| self.err("create", e))?,
            Some(rv) => {
                cm.metadata.resource_version = Some(rv);
                self.api
                    .replace(&self.name, &PostParams::default(), &cm)
                    .await
                    .map_err(|e| self.err("write (resourceVersion-guarded)", e))?
            }
        };
        *seen = written.metadata.resource_version;
        Ok(())
    }
}
