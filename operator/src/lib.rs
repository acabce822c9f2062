//! Ferry's operator: reconciles `MigrationJob` and `CredentialBinding` resources.
//!
//! The controllers, the Vault client and the progress API arrive with the operator issue;
//! this crate already depends on `ferry-api` so the shared types stay in one place.

pub use ferry_api as api;
