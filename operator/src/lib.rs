//! Ferry's operator: the MigrationJob and CredentialBinding controllers, the Vault client
//! that wraps credentials for runners, and the progress API runners report to.

pub mod access;
pub mod binding_controller;
pub mod bindings;
pub mod children;
pub mod conditions;
pub mod config;
pub mod context;
pub mod error;
pub mod guard;
pub mod health;
pub mod job_controller;
pub mod leader;
pub mod lifecycle;
pub mod metrics;
pub mod names;
pub mod observe;
pub mod progress;
pub mod run;
pub mod schedule;
pub mod tenancy;
pub mod unreadable;
pub mod vault;
