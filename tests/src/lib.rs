//! Harness for Ferry's end-to-end tests: real servers started on loopback ports.
