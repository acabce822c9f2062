//! Ferry's runner: the transfer engine and the `ferry-runner` command line.

pub mod spool;
