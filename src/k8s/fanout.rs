//! How a step reads many namespaces: a bounded fan-out of one request each, unless they are
//! most of the cluster (then one list of everything costs fewer requests for the same bytes).

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, ListParams};

/// Namespaces read at once when a step looks at many (a bounded fan-out, not one at a time).
pub const NAMESPACE_FANOUT: usize = 16;

/// Whether `count` namespaces are at least half of the cluster's; not when the namespaces
/// cannot be listed (then each is read on its own, which needs no cluster-wide right). A
/// gate asks on every poll, so the count is read from a one-item page's `remainingItemCount`
/// (the whole list only from an API server that leaves it out).
pub async fn most_of_the_cluster(client: &Client, count: usize) -> bool {
    let api = Api::<Namespace>::all(client.clone());
    let Ok(page) = api.list(&ListParams::default().limit(1)).await else {
        return false;
    };
    let more = page
        .metadata
        .continue_
        .as_deref()
        .is_some_and(|c| !c.is_empty());
    let total = match (more, page.metadata.remaining_item_count) {
        (false, _) => page.items.len(),
        (true, Some(rest)) => page.items.len() + usize::try_from(rest).unwrap_or(0),
        (true, None) => match api.list(&ListParams::default()).await {
            Ok(all) => all.items.len(),
            Err(_) => return false,
        },
    };
    count * 2 >= total
}
