//! Vault (or OpenBao): operator authentication, binding checks and response-wrapped reads.
