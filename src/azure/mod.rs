//! Azure Resource Manager: credentials, the managed cluster, and its mesh profiles.
pub mod auth;
pub mod http;
pub mod id;
