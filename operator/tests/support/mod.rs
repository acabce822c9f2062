//! Test support shared by the operator's integration tests.
//!
//! `cluster.rs` and `kubelet.rs` belong to the end-to-end suite (`e2e_cluster.rs`), which
//! declares them itself (with `fake_api`, which its kubelet's tests use), so the other tests do
//! not compile them.

pub mod fake_api;
