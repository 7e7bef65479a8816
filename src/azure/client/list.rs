//! ARM's list of managed clusters (`ManagedClusters_List`, `ManagedClusters_ListByResourceGroup`):
//! `{"value": [cluster…], "nextLink": "…"}` pages, followed until `nextLink` is absent.

use std::collections::{BTreeMap, HashSet};

use http::Method;
use reqwest::Url;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ArmClient, Ctx};
use crate::azure::error::redact;
use crate::azure::{ArmError, ClusterId};

/// The most pages one list may take: far beyond any subscription (ARM pages hold many
/// clusters), and a stop for a server that never ends.
pub const MAX_LIST_PAGES: usize = 1000;

/// One managed cluster as ARM's list shows it: what a fleet needs to select and plan it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ManagedClusterSummary {
    pub id: ClusterId,
    pub location: String,
    /// ARM tags (`asm-canary/ring`, …); empty when the cluster has none.
    pub tags: BTreeMap<String, String>,
    /// `properties.provisioningState`.
    pub provisioning_state: Option<String>,
    /// `properties.serviceMeshProfile.istio.revisions`; empty when the mesh is not enabled.
    pub revisions: Vec<String>,
}

/// One page of the list.
#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    value: Vec<Value>,
    #[serde(default, rename = "nextLink")]
    next_link: Option<String>,
}

impl ManagedClusterSummary {
    /// From one element of `value`.
    fn from_document(doc: &Value, ctx: &Ctx<'_>) -> Result<Self, ArmError> {
        let id_text = doc.get("id").and_then(Value::as_str).unwrap_or_default();
        let id: ClusterId = id_text.parse().map_err(|e| ArmError::Decode {
            what: ctx.what.to_string(),
            message: format!("a listed cluster has no usable id: {e}"),
        })?;
        let text = |pointer: &str| {
            doc.pointer(pointer)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let tags = doc
            .get("tags")
            .and_then(Value::as_object)
            .map(|t| {
                t.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let revisions = doc
            .pointer("/properties/serviceMeshProfile/istio/revisions")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|r| r.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            id,
            location: text("/location").unwrap_or_default(),
            tags,
            provisioning_state: text("/properties/provisioningState"),
            revisions,
        })
    }
}

impl ArmClient {
    /// Every managed cluster in `subscription` (or in one of its resource groups), following
    /// `nextLink` until it is absent. Each page goes through the same retries as any GET; a
    /// `nextLink` seen before (a loop), one off the ARM endpoint, or more than
    /// [`MAX_LIST_PAGES`] pages are refused.
    pub async fn list_managed_clusters(
        &self,
        subscription: &str,
        resource_group: Option<&str>,
    ) -> Result<Vec<ManagedClusterSummary>, ArmError> {
        let path = match resource_group {
            Some(rg) => format!(
                "/subscriptions/{subscription}/resourceGroups/{rg}/providers/Microsoft.ContainerService/managedClusters"
            ),
            None => format!(
                "/subscriptions/{subscription}/providers/Microsoft.ContainerService/managedClusters"
            ),
        };
        let ctx = Ctx {
            cluster: &path,
            what: "the list of managed clusters",
        };
        let mut url = self.url(&path)?;
        let mut followed: HashSet<String> = HashSet::from([url.to_string()]);
        let mut clusters = Vec::new();
        for _ in 0..MAX_LIST_PAGES {
            let answer = self.send(Method::GET, &url, None, None, &ctx).await?;
            if answer.status != 200 {
                return Err(Self::api_error(&Method::GET, &answer, &ctx));
            }
            let page: Page = Self::json(&answer, &ctx)?;
            for doc in &page.value {
                clusters.push(ManagedClusterSummary::from_document(doc, &ctx)?);
            }
            match page.next_link.filter(|l| !l.trim().is_empty()) {
                None => return Ok(clusters),
                Some(next) => url = self.next_page(&next, &mut followed, &ctx)?,
            }
        }
        Err(ArmError::Decode {
            what: ctx.what.to_string(),
            message: format!(
                "ARM was still sending a nextLink after {MAX_LIST_PAGES} pages; refusing to follow more"
            ),
        })
    }

    /// The `nextLink` to follow: on the ARM endpoint, and not one followed before.
    fn next_page(
        &self,
        link: &str,
        followed: &mut HashSet<String>,
        ctx: &Ctx<'_>,
    ) -> Result<Url, ArmError> {
        let bad = |message: String| ArmError::Decode {
            what: ctx.what.to_string(),
            message,
        };
        let url = Url::parse(link).map_err(|e| bad(format!("its nextLink is not a URL: {e}")))?;
        if url.origin() != self.endpoint.origin() {
            return Err(bad(format!(
                "its nextLink {} is not on the ARM endpoint {}; refusing to send a token there",
                redact(&url),
                self.endpoint()
            )));
        }
        if !followed.insert(url.to_string()) {
            return Err(bad(format!(
                "its nextLink {} came back a second time (a page loop); refusing to follow it again",
                redact(&url)
            )));
        }
        Ok(url)
    }
}
