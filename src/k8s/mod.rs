//! Kubernetes operations (placeholder).
