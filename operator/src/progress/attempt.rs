//! What the hub knows about the current attempt of one job: the latest report of each shard.

use std::collections::BTreeMap;

use ferry_api::contract::{Outcome, ProgressReport};
use ferry_api::status::{ObjectFailure, Progress};
use jiff::Timestamp;

/// The latest report of every shard of one attempt that has reported so far.
#[derive(Clone, Debug, PartialEq)]
pub struct AttemptProgress {
    /// The attempt number, from 1.
    pub attempt: u32,
    /// The latest report per shard index.
    pub shards: BTreeMap<u32, ProgressReport>,
    /// When the operator last applied a report of this attempt.
    pub last_report_at: Option<Timestamp>,
}

impl AttemptProgress {
    /// An attempt nobody has reported on yet.
    pub fn new(attempt: u32) -> Self {
        Self { attempt, shards: BTreeMap::new(), last_report_at: None }
    }

    /// Counters summed over the shards that reported.
    pub fn combined(&self) -> Progress {
        let mut total = Progress::default();
        for report in self.shards.values() {
            total.accumulate(&report.progress);
        }
        total
    }

    /// The shards' recent failures, shard by shard.
    pub fn recent_failures(&self) -> Vec<ObjectFailure> {
        self.shards.values().flat_map(|report| report.recent_failures.iter().cloned()).collect()
    }

    /// Each reporting shard's outcome; `None` while that shard is still running.
    pub fn outcomes(&self) -> BTreeMap<u32, Option<&Outcome>> {
        self.shards.iter().map(|(index, report)| (*index, report.outcome.as_ref())).collect()
    }

    /// Whether `report` is newer than what this shard already sent (pure: sequence numbers only).
    pub fn is_newer(&self, report: &ProgressReport) -> bool {
        self.shards.get(&report.shard.index).is_none_or(|known| report.sequence > known.sequence)
    }

    /// Whether `report`'s shard fits with the shards seen so far: a valid index below a count
    /// that every shard of the attempt agrees on.
    pub fn shard_fits(&self, report: &ProgressReport) -> Result<(), String> {
        let shard = report.shard;
        if shard.count == 0 || shard.count > 256 || shard.index >= shard.count {
            return Err(format!("shard {shard} is not a valid INDEX/COUNT"));
        }
        match self.shards.values().next() {
            Some(other) if other.shard.count != shard.count => {
                Err(format!("shard {shard} disagrees with shard {} on the count", other.shard))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use ferry_api::contract::{Shard, Stage};

    use super::*;

    fn report(index: u32, sequence: u64, verified: u64) -> ProgressReport {
        ProgressReport {
            job_uid: "uid".into(),
            attempt: 1,
            shard: Shard { index, count: 2 },
            sequence,
            stage: Stage::Copying,
            progress: Progress { objects_verified: verified, objects_total: 10, ..Default::default() },
            recent_failures: vec![ObjectFailure { path: format!("p{index}"), reason: "r".into() }],
            outcome: (index == 1).then_some(Outcome::Succeeded),
            deletions: None,
            report_objects: None,
        }
    }

    #[test]
    fn combines_shards_and_lists_their_outcomes() {
        let mut attempt = AttemptProgress::new(1);
        attempt.shards.insert(0, report(0, 3, 4));
        attempt.shards.insert(1, report(1, 9, 5));
        assert_eq!(attempt.combined().objects_verified, 9);
        assert_eq!(attempt.combined().objects_total, 20);
        assert_eq!(attempt.recent_failures().len(), 2);
        assert_eq!(attempt.outcomes(), BTreeMap::from([(0, None), (1, Some(&Outcome::Succeeded))]));
    }

    #[test]
    fn only_higher_sequences_are_newer() {
        let mut attempt = AttemptProgress::new(1);
        assert!(attempt.is_newer(&report(0, 1, 0)));
        attempt.shards.insert(0, report(0, 5, 0));
        assert!(!attempt.is_newer(&report(0, 5, 0)));
        assert!(!attempt.is_newer(&report(0, 4, 0)));
        assert!(attempt.is_newer(&report(0, 6, 0)));
        assert!(attempt.is_newer(&report(1, 1, 0)));
    }

    #[test]
    fn shards_must_agree_on_the_count() {
        let mut attempt = AttemptProgress::new(1);
        attempt.shards.insert(0, report(0, 1, 0));
        let mut odd = report(1, 1, 0);
        odd.shard.count = 3;
        assert!(attempt.shard_fits(&odd).is_err());
        odd.shard = Shard { index: 2, count: 2 };
        assert!(attempt.shard_fits(&odd).is_err());
        assert!(attempt.shard_fits(&report(1, 1, 0)).is_ok());
    }
}
