//! Azure Resource Manager: credentials, the managed cluster, and its mesh profiles.
//!
//! ```text
//!   auth      --auth auto|cli|… → Arc<dyn TokenCredential> (+ which one and why)
//!   http      one reqwest client (ring, extra CA) for token requests and ARM calls
//!   id        ClusterId ⇄ /subscriptions/…/managedClusters/<name>
//!   cluster   ClusterDoc: the cluster as untyped JSON; only the revisions change
//!   client    ArmClient: GET, PUT with If-Match + LRO, mesh profiles, user kubeconfig,
//!             the paged list of managed clusters (client/list)
//!   retry     pure retry decisions (429/5xx/412/409) and Retry-After parsing
//!   profiles  meshUpgradeProfiles / meshRevisionProfiles models
//! ```
//!
//! No terminal output here: functions return data and log with `tracing`.

pub mod auth;
pub mod client;
pub mod cluster;
pub mod error;
pub mod http;
pub mod id;
pub mod profiles;
pub mod retry;

pub use auth::{
    AuthError, AuthMode, AuthSettings, CredentialChoice, build_credential, resolve_auth_mode,
};
pub use client::{
    ArmClient, ArmClientOptions, DEFAULT_API_VERSION, DEFAULT_ARM_ENDPOINT, Expectation,
    MAX_LIST_PAGES, ManagedClusterSummary, OperationStatus, PollOptions, PutAccepted,
};
pub use cluster::{BodyError, ClusterDoc, same_revisions};
pub use error::ArmError;
pub use http::{HttpSetupError, build_http_client, ensure_ring_provider};
pub use id::{ClusterId, ClusterIdError};
pub use profiles::{MeshRevision, MeshRevisionProfile, MeshUpgradeProfile};
pub use retry::RetryPolicy;
