//! The progress API's certificate, read again when its files change: cert-manager (or an
//! administrator) renews the Secret they are mounted from and the kubelet swaps the files in
//! place, so the operator presents the new certificate without a restart, before the old one
//! expires under the runners.

use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use sha2::{Digest, Sha256};

use super::server::{TlsFiles, tls_config};

/// How often the files are compared with the ones loaded.
pub const TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(60);

/// A digest of both files, so a change to either is seen without keeping the key around.
fn fingerprint(files: &TlsFiles) -> std::io::Result<[u8; 32]> {
    let mut digest = Sha256::new();
    digest.update(std::fs::read(&files.cert)?);
    digest.update(zeroize::Zeroizing::new(std::fs::read(&files.key)?).as_slice());
    Ok(digest.finalize().into())
}

/// Checks the files every `every` and loads them into `config` when they changed and form a
/// working pair. Files caught half-written (or unreadable) keep the current certificate and
/// are tried again at the next check. Runs until dropped.
pub async fn reload_when_changed(files: TlsFiles, config: RustlsConfig, every: Duration) {
    let mut loaded = fingerprint(&files).ok();
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Ok(now) = fingerprint(&files) else { continue };
        if loaded == Some(now) {
            continue;
        }
        match tls_config(&files) {
            Ok(renewed) => {
                config.reload_from_config(renewed);
                loaded = Some(now);
                tracing::info!(cert = %files.cert.display(), "progress API: loaded the renewed TLS certificate");
            }
            Err(error) => {
                tracing::warn!(%error, "progress API: the TLS files changed but do not load; keeping the current certificate");
            }
        }
    }
}
