//! Deleting the gateway leader-election Leases AKS leaves behind for a removed revision.

use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::{Api, DeleteParams};
use serde::Serialize;

use super::{K8sError, target};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LeaseDeletion {
    pub name: String,
    /// False when the Lease was already gone.
    pub deleted: bool,
}

/// Deletes each named Lease in `namespace`; a missing one is not an error.
pub async fn delete_leases(
    client: &Client,
    namespace: &str,
    names: &[String],
) -> Result<Vec<LeaseDeletion>, K8sError> {
    let api = Api::<Lease>::namespaced(client.clone(), namespace);
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {
                tracing::info!(namespace, lease = %name, "deleted Lease");
                out.push(LeaseDeletion {
                    name: name.clone(),
                    deleted: true,
                });
            }
            Err(kube::Error::Api(status)) if status.code == 404 => out.push(LeaseDeletion {
                name: name.clone(),
                deleted: false,
            }),
            Err(source) => {
                return Err(K8sError::Api {
                    action: "delete",
                    kind: "Lease",
                    target: target(namespace, name),
                    source,
                });
            }
        }
    }
    Ok(out)
}
