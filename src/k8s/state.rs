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
/// The binaryData key holding the checkpoint JSON gzipped, once its text outgrows a ConfigMap.
pub const STATE_KEY_GZ: &str = "checkpoint.json.gz";
/// What the API server lets a ConfigMap's values hold in all (`core.MaxSecretSize`).
pub const CONFIGMAP_MAX_BYTES: usize = 1024 * 1024;
/// A stored checkpoint that unpacks to more than this is refused (asm-canary writes none so
/// large; a gzip bomb in the cluster does not fill this process's memory).
const MAX_UNPACKED_BYTES: u64 = 256 * 1024 * 1024;

/// The checkpoint text a ConfigMap holds: `data[checkpoint.json]`, else
/// `binaryData[checkpoint.json.gz]` unpacked; `Ok(None)` when it holds neither. `Err` says why
/// what it holds is not a checkpoint's text.
pub fn stored_text(cm: &ConfigMap) -> Result<Option<String>, String> {
    use std::io::Read;
    if let Some(text) = cm.data.as_ref().and_then(|d| d.get(STATE_KEY)) {
        return Ok(Some(text.clone()));
    }
    let Some(packed) = cm.binary_data.as_ref().and_then(|d| d.get(STATE_KEY_GZ)) else {
        return Ok(None);
    };
    let mut text = String::new();
    flate2::read::GzDecoder::new(packed.0.as_slice())
        .take(MAX_UNPACKED_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("{STATE_KEY_GZ} does not unpack: {e}"))?;
    if text.len() as u64 > MAX_UNPACKED_BYTES {
        return Err(format!(
            "{STATE_KEY_GZ} unpacks to more than {} MiB",
            MAX_UNPACKED_BYTES >> 20
        ));
    }
    Ok(Some(text))
}

/// The ConfigMap's `data` or `binaryData` for checkpoint `text`: as text while it fits, gzipped
/// beyond (a run over thousands of workloads journals more than 1 MiB). `Err`: not even
/// gzipped does it fit.
fn packed(text: String) -> Result<ConfigMap, String> {
    use std::io::Write;
    if text.len() <= CONFIGMAP_MAX_BYTES {
        return Ok(ConfigMap {
            data: Some([(STATE_KEY.to_string(), text)].into()),
            ..Default::default()
        });
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let gz = gz
        .write_all(text.as_bytes())
        .and_then(|()| gz.finish())
        .map_err(|e| format!("cannot gzip the checkpoint: {e}"))?;
    if gz.len() > CONFIGMAP_MAX_BYTES {
        return Err(format!(
            "the checkpoint is {} bytes ({} gzipped), more than a ConfigMap holds ({CONFIGMAP_MAX_BYTES} bytes); run with --state-backend file",
            text.len(),
            gz.len()
        ));
    }
    Ok(ConfigMap {
        binary_data: Some([(STATE_KEY_GZ.to_string(), k8s_openapi::ByteString(gz))].into()),
        ..Default::default()
    })
}

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
                let text = stored_text(&cm).map_err(|e| CheckpointError::Io {
                    path: self.location(),
                    op: "unpack",
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                })?;
                Ok(text.map(String::into_bytes))
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
        let mut cm = packed(text).map_err(|e| CheckpointError::Io {
            path: self.location(),
            op: "encode",
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?;
        let mut seen = self.seen.lock().await;
        cm.metadata = ObjectMeta {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_is_kept_as_text_while_it_fits_and_gzipped_beyond() {
        let small = "{\"run_id\":\"r\"}".to_string();
        let cm = packed(small.clone()).unwrap();
        assert!(cm.binary_data.is_none());
        assert_eq!(stored_text(&cm), Ok(Some(small)));

        let big = format!("[{}]", vec!["{\"kind\":\"Deployment\"}"; 80_000].join(","));
        assert!(big.len() > CONFIGMAP_MAX_BYTES);
        let cm = packed(big.clone()).unwrap();
        assert!(cm.data.is_none());
        let gz = &cm.binary_data.as_ref().unwrap()[STATE_KEY_GZ].0;
        assert!(gz.len() < CONFIGMAP_MAX_BYTES / 10, "{} bytes", gz.len());
        assert_eq!(stored_text(&cm), Ok(Some(big)));
    }

    #[test]
    fn a_stored_checkpoint_that_does_not_unpack_says_so() {
        let cm = ConfigMap {
            binary_data: Some(
                [(
                    STATE_KEY_GZ.to_string(),
                    k8s_openapi::ByteString(b"not gzip".to_vec()),
                )]
                .into(),
            ),
            ..Default::default()
        };
        let e = stored_text(&cm).unwrap_err();
        assert!(e.starts_with("checkpoint.json.gz does not unpack"), "{e}");
        assert_eq!(stored_text(&ConfigMap::default()), Ok(None));
    }
}
