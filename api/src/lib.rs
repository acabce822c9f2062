//! Ferry's public API: the `MigrationJob` and `CredentialBinding` custom resources, their
//! admission rules, and the contract between the operator and its runners. No I/O.

pub mod binding;
pub mod contract;
pub mod crd;
pub mod job;
pub mod names;
pub mod quantity;
pub mod reports;
pub mod rules;
pub mod status;
pub mod validate;

pub use binding::{CredentialBinding, CredentialBindingSpec, CredentialBindingStatus, Provider};
pub use job::{Conflict, Endpoint, Filter, MigrationJob, MigrationJobSpec, Mode, RunnerSettings, VerifyMode};
pub use quantity::ByteQuantity;
pub use status::{MigrationJobStatus, ObjectFailure, Phase, Progress};

/// The API group of every Ferry resource.
pub const GROUP: &str = "ferry.dev";
/// The served (and stored) version.
pub const VERSION: &str = "v1alpha1";
