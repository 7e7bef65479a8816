//! How a step reads many namespaces: a bounded fan-out of one request each, unless they are
//! most of the cluster (then one list of everything costs fewer requests for the same bytes).

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, ListParams};

/// Namespaces read at once when a step looks at many (a bounded fan-out, not one at a time).
pub const NAMESPACE_FANOUT: usize = 16;

/// Whether `count` namespaces are at least half of the cluster's; not when the namespaces
/// cannot be listed (then each is read on its own, which needs no cluster-wide right).
pub async fn most_of_the_cluster(client: &Client, count: usize) -> bool {
    Api::<Namespace>::all(client.clone())
        .list(&ListParams::default())
        .await
        .is_ok_and(|all| count * 2 >= all.items.len())
}
