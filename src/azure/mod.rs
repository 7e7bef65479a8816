//! ARM client (placeholder).
