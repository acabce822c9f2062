//! `/healthz` and `/readyz`: alive while the process serves; ready when this replica can do
//! its part. The leader is ready once every controller's cache has synced and Vault (when
//! configured) answers; a standby is ready when Vault answers, so it can take over at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::vault::Vault;

/// How often Vault's health is asked.
const VAULT_CHECK_EVERY: Duration = Duration::from_secs(10);

/// What readiness depends on, shared by the tasks that learn it.
#[derive(Debug, Default)]
pub struct Health {
    /// This replica holds the Lease (or runs without leader election).
    leading: AtomicBool,
    /// Controllers whose caches have not synced yet.
    unsynced: AtomicUsize,
    /// Vault answered its last health check (or none is configured).
    vault_answers: AtomicBool,
}

/// A snapshot of [`Health`], for [`readiness`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signals {
    /// This replica leads.
    pub leading: bool,
    /// Controllers still listing.
    pub unsynced: usize,
    /// Vault answers.
    pub vault_answers: bool,
}

/// Whether a replica in this state should take traffic; `Err` says why not.
pub fn readiness(signals: Signals) -> Result<(), &'static str> {
    if !signals.vault_answers {
        return Err("Vault does not answer");
    }
    if signals.leading && signals.unsynced > 0 {
        return Err("the controllers' caches have not synced yet");
    }
    Ok(())
}

impl Health {
    /// Health for a replica whose Vault is `vault` (none: nothing to wait for).
    pub fn new(vault: Option<&Vault>) -> Arc<Self> {
        Arc::new(Self { vault_answers: AtomicBool::new(vault.is_none()), ..Self::default() })
    }

    /// The replica leads from now on, with `controllers` caches to sync.
    pub fn lead(&self, controllers: usize) {
        self.unsynced.store(controllers, Ordering::SeqCst);
        self.leading.store(true, Ordering::SeqCst);
    }

    /// One controller's cache has synced.
    pub fn synced(&self) {
        let _ = self.unsynced.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(1));
    }

    /// The current signals.
    pub fn signals(&self) -> Signals {
        Signals {
            leading: self.leading.load(Ordering::SeqCst),
            unsynced: self.unsynced.load(Ordering::SeqCst),
            vault_answers: self.vault_answers.load(Ordering::SeqCst),
        }
    }

    /// Asks Vault for its health every few seconds, for as long as the task runs.
    pub fn watch_vault(self: &Arc<Self>, vault: Vault) -> tokio::task::JoinHandle<()> {
        let health = self.clone();
        tokio::spawn(async move {
            loop {
                let answers = vault.answers().await;
                if answers != health.vault_answers.swap(answers, Ordering::SeqCst) {
                    tracing::info!(answers, "Vault's health changed");
                }
                tokio::time::sleep(VAULT_CHECK_EVERY).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_waits_for_its_caches_and_everyone_for_vault() {
        let ready = |leading, unsynced, vault_answers| readiness(Signals { leading, unsynced, vault_answers });
        assert_eq!(ready(false, 0, true), Ok(()), "a standby can take over");
        assert!(ready(false, 0, false).is_err());
        assert!(ready(true, 1, true).unwrap_err().contains("synced"));
        assert_eq!(ready(true, 0, true), Ok(()));
        let health = Health::default();
        health.lead(2);
        health.synced();
        health.synced();
        health.synced();
        assert_eq!(health.signals().unsynced, 0, "never below zero");
    }
}
