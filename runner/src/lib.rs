//! Ferry's runner: the transfer engine and the `ferry-runner` command line.
//!
//! `storage` builds one OpenDAL operator per side; `listing` streams each side in key order;
//! `plan` decides per object (pure); `transfer` moves one object through the encrypted
//! `spool` and verifies it; `engine` drives an attempt; `accounting` and `report` record it.
//! At a filesystem destination, `destination_path` decides which keys can become paths and
//! `safe_fs` makes every change beneath the root without following a link.

pub mod accounting;
pub mod backends;
pub mod cluster;
pub mod deletion_gate;
pub mod destination_path;
pub mod durability;
pub mod engine;
pub mod extraneous;
pub mod filter;
pub mod listing;
pub mod local_copy;
pub mod metrics;
pub mod object;
pub mod plan;
pub mod predicted_etag;
pub mod progress_client;
pub mod report;
pub mod report_upload;
pub mod safe_fs;
pub mod secrets;
pub mod server_side;
pub mod shard;
pub mod spool;
pub mod storage;
pub mod throttle;
pub mod transfer;
pub mod unwrap;

pub mod display;
pub mod manifest;
pub mod run;
pub mod vault;
