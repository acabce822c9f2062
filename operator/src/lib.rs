//! Ferry's operator: the MigrationJob and CredentialBinding controllers, the Vault client
//! that wraps credentials for runners, and the progress API runners report to.

pub mod bindings;
pub mod children;
pub mod conditions;
pub mod lifecycle;
pub mod names;
pub mod progress;
pub mod vault;
