//! Test support shared by the operator's integration tests.

pub mod fake_api;
