#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU32, Ordering};

use ferry_api::contract::{Shard, Stage};
use ferry_api::status::Progress;
use futures::FutureExt;

use super::*;

const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn job(uid: &str) -> JobIdentity {
    JobIdentity { namespace: "ns".into(), name: "copy".into(), uid: uid.into() }
}

fn report(uid: &str, attempt: u32, sequence: u64) -> ProgressReport {
    ProgressReport {
        job_uid: uid.into(),
        attempt,
        shard: Shard::WHOLE,
        sequence,
        stage: Stage::Copying,
        progress: Progress { objects_verified: sequence, ..Default::default() },
        recent_failures: Vec::new(),
        outcome: None,
        deletions: None,
        report_objects: None,
    }
}

fn registered(attempt: u32, token: &str) -> ProgressHub {
    let hub = ProgressHub::without_lookup();
    hub.register_attempt(&job("u1"), attempt, vec![token_hash(token)]);
    hub
}

#[tokio::test]
async fn keeps_the_newest_report_and_ignores_stale_and_duplicate_ones() {
    let hub = registered(1, "t1");
    assert_eq!(hub.accept(CLIENT, "ns", "copy", "t1", report("u1", 1, 2)).await, Ok(Accepted::Applied));
    assert_eq!(hub.accept(CLIENT, "ns", "copy", "t1", report("u1", 1, 2)).await, Ok(Accepted::Stale));
    assert_eq!(hub.accept(CLIENT, "ns", "copy", "t1", report("u1", 1, 1)).await, Ok(Accepted::Stale));
    let latest = hub.latest("u1").unwrap();
    assert_eq!(latest.attempt, 1);
    assert_eq!(latest.shards[&0].sequence, 2);
    assert!(latest.last_report_at.is_some());
    assert_eq!(hub.take_dirty(), vec!["u1".to_owned()]);
    assert!(hub.take_dirty().is_empty());
}

#[tokio::test]
async fn rejects_wrong_tokens_jobs_and_attempts() {
    let hub = registered(1, "t1");
    assert_eq!(hub.accept(CLIENT, "ns", "copy", "nope", report("u1", 1, 1)).await, Err(Rejection::Unauthorized));
    assert_eq!(hub.accept(CLIENT, "ns", "copy", "t1", report("u2", 1, 1)).await, Err(Rejection::WrongJob));
    assert_eq!(hub.accept(CLIENT, "ns", "copy", "t1", report("u1", 2, 1)).await, Err(Rejection::WrongAttempt));
    assert_eq!(hub.accept(CLIENT, "ns", "other", "t1", report("u1", 1, 1)).await, Err(Rejection::UnknownJob));
    // Without a lookup, a claim of a newer attempt with an unknown token is just a wrong token.
    assert_eq!(hub.accept(CLIENT, "ns", "copy", "t9", report("u1", 9, 1)).await, Err(Rejection::Unauthorized));

    hub.register_attempt(&job("u1"), 2, vec![token_hash("t2")]);
    assert_eq!(hub.accept(CLIENT, "ns", "copy", "t1", report("u1", 1, 5)).await, Err(Rejection::WrongAttempt));
    assert_eq!(hub.accept(CLIENT, "ns", "copy", "t2", report("u1", 2, 1)).await, Ok(Accepted::Applied));
    // An older attempt registered late never replaces the newer one.
    hub.register_attempt(&job("u1"), 1, vec![token_hash("t1")]);
    assert_eq!(hub.latest("u1").unwrap().attempt, 2);
}

#[tokio::test]
async fn shards_must_be_consistent() {
    let hub = registered(1, "t1");
    let mut bad = report("u1", 1, 1);
    bad.shard = Shard { index: 3, count: 2 };
    assert!(matches!(hub.accept(CLIENT, "ns", "copy", "t1", bad).await, Err(Rejection::InvalidShard(_))));
}

#[tokio::test]
async fn a_shards_token_speaks_for_that_shard_only() {
    let hub = ProgressHub::without_lookup();
    let hashes = ["s0", "s1", "s2"].map(token_hash).to_vec();
    hub.register_attempt(&job("u1"), 1, hashes);
    let shard = |index, count| {
        let mut report = report("u1", 1, 1);
        report.shard = Shard { index, count };
        report
    };
    assert_eq!(hub.accept(CLIENT, "ns", "copy", "s1", shard(1, 3)).await, Ok(Accepted::Applied));
    // Shard 1's token cannot report for shard 2, nor claim another shard count.
    assert!(matches!(hub.accept(CLIENT, "ns", "copy", "s1", shard(2, 3)).await, Err(Rejection::InvalidShard(_))));
    assert!(matches!(hub.accept(CLIENT, "ns", "copy", "s2", shard(2, 4)).await, Err(Rejection::InvalidShard(_))));
    assert!(matches!(hub.accept(CLIENT, "ns", "copy", "s0", shard(5, 3)).await, Err(Rejection::InvalidShard(_))));
    assert_eq!(hub.accept(CLIENT, "ns", "copy", "s2", shard(2, 3)).await, Ok(Accepted::Applied));
    assert_eq!(hub.latest("u1").unwrap().shards.len(), 2);
}

#[tokio::test]
async fn a_recreated_job_replaces_the_old_one_and_forget_drops_it() {
    let hub = registered(1, "t1");
    hub.accept(CLIENT, "ns", "copy", "t1", report("u1", 1, 1)).await.unwrap();
    hub.register_attempt(&job("u2"), 1, vec![token_hash("t2")]);
    assert!(hub.latest("u1").is_none());
    assert_eq!(hub.take_dirty(), vec!["u1".to_owned()], "the writer hears that u1 is gone");
    assert_eq!(hub.accept(CLIENT, "ns", "copy", "t1", report("u1", 1, 2)).await, Err(Rejection::Unauthorized));
    assert_eq!(hub.latest("u2").unwrap().shards.len(), 0);
    hub.forget_job("u2");
    assert!(hub.latest("u2").is_none());
    assert_eq!(hub.accept(CLIENT, "ns", "copy", "t2", report("u2", 1, 1)).await, Err(Rejection::UnknownJob));
}

fn counting_lookup(calls: Arc<AtomicU32>, current: u32, token: &'static str) -> AttemptLookup {
    Arc::new(move |key: JobKey| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            let known = key.name == "copy";
            Ok(known.then(|| CurrentAttempt {
                job: job("u1"),
                attempt: current,
                token_hashes: vec![token_hash(token)],
                max_delete: None,
            }))
        }
        .boxed()
    })
}

#[tokio::test]
async fn recovers_an_unknown_attempt_through_the_lookup() {
    let calls = Arc::new(AtomicU32::new(0));
    let hub = ProgressHub::new(counting_lookup(calls.clone(), 3, "t3"));
    assert_eq!(hub.accept(CLIENT, "ns", "copy", "t3", report("u1", 3, 7)).await, Ok(Accepted::Applied));
    assert_eq!(hub.latest("u1").unwrap().attempt, 3);
    // Once known, the lookup is not asked again.
    assert_eq!(hub.accept(CLIENT, "ns", "copy", "t3", report("u1", 3, 8)).await, Ok(Accepted::Applied));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // A stale attempt is not recovered; a wrong token for a recovered job stays wrong.
    assert_eq!(hub.accept(CLIENT, "ns", "gone", "t3", report("u1", 3, 1)).await, Err(Rejection::UnknownJob));
    assert_eq!(hub.accept(CLIENT, "ns", "copy", "bad", report("u1", 4, 1)).await, Err(Rejection::Unauthorized));
}

#[tokio::test]
async fn a_newer_attempt_found_by_the_lookup_replaces_the_registered_one() {
    let calls = Arc::new(AtomicU32::new(0));
    let hub = ProgressHub::new(counting_lookup(calls, 2, "t2"));
    hub.register_attempt(&job("u1"), 1, vec![token_hash("t1")]);
    assert_eq!(hub.accept(CLIENT, "ns", "copy", "t2", report("u1", 2, 1)).await, Ok(Accepted::Applied));
    assert_eq!(hub.latest("u1").unwrap().attempt, 2);
    assert_eq!(hub.accept(CLIENT, "ns", "copy", "t1", report("u1", 1, 9)).await, Err(Rejection::WrongAttempt));
}

#[tokio::test]
async fn a_failing_lookup_asks_the_runner_to_retry() {
    let lookup: AttemptLookup = Arc::new(|_| async { Err(LookupError("API server unreachable".into())) }.boxed());
    let hub = ProgressHub::new(lookup);
    assert_eq!(hub.accept(CLIENT, "ns", "copy", "t1", report("u1", 1, 1)).await, Err(Rejection::Unavailable));
}

#[tokio::test]
async fn made_up_jobs_cannot_make_the_hub_hammer_the_api_server() {
    let calls = Arc::new(AtomicU32::new(0));
    let hub = ProgressHub::new(counting_lookup(calls.clone(), 1, "t1"));
    let mut retry = 0;
    for attempt in 0..(LOOKUP_BURST * 4) {
        match hub.accept(CLIENT, "ns", &format!("made-up-{attempt}"), "guess", report("u9", attempt, 1)).await {
            Err(Rejection::UnknownJob) => {}
            Err(Rejection::Unavailable) => retry += 1,
            other => panic!("{other:?}"),
        }
    }
    // Within one burst (and what refilled meanwhile), no more lookups than the quota allows.
    let looked_up = calls.load(Ordering::SeqCst);
    assert!((LOOKUP_BURST..LOOKUP_BURST + 3).contains(&looked_up), "{looked_up} lookups");
    assert_eq!(retry + looked_up, LOOKUP_BURST * 4);

    // Another client, such as a runner whose registration an operator restart lost, still
    // gets its lookup: the noisy client used up only its own quota.
    let runner = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 7));
    assert_eq!(hub.accept(runner, "ns", "copy", "t1", report("u1", 1, 1)).await, Ok(Accepted::Applied));
}

#[tokio::test]
async fn the_token_is_checked_before_anything_the_sender_wrote() {
    let hub = registered(1, "t1");
    let credential = hub.authenticate(CLIENT, "ns", "copy", "t1").await.unwrap();
    assert_eq!(credential.shard, Shard::WHOLE);
    assert_eq!(credential.attempt, 1);
    assert_eq!(hub.authenticate(CLIENT, "ns", "copy", "wrong").await, Err(Rejection::Unauthorized));
    // A forged counter status could never hold is refused, not summed into status.
    let mut huge = report("u1", 1, 1);
    huge.progress.bytes_verified = u64::MAX;
    assert!(matches!(hub.apply(&credential, huge), Err(Rejection::InvalidReport(_))));
    assert_eq!(hub.apply(&credential, report("u1", 1, 1)), Ok(Accepted::Applied));
}

#[tokio::test]
async fn the_deletion_verdict_waits_for_every_shard_and_holds_for_the_job() {
    let hub = ProgressHub::without_lookup();
    hub.register_attempt_with_limit(&job("u1"), 1, ["s0", "s1"].map(token_hash).to_vec(), Some(10));
    let awaiting = |index, extraneous| {
        let mut report = report("u1", 1, 1);
        report.shard = Shard { index, count: 2 };
        report.stage = Stage::AwaitingDeletion;
        report.deletions = Some(ferry_api::contract::PendingDeletions { extraneous, source_objects: 9 });
        report
    };
    let first = hub.authenticate(CLIENT, "ns", "copy", "s0").await.unwrap();
    hub.apply(&first, awaiting(0, 6)).unwrap();
    assert_eq!(hub.deletion_verdict(&first), None, "shard 1 has not counted yet");
    let second = hub.authenticate(CLIENT, "ns", "copy", "s1").await.unwrap();
    hub.apply(&second, awaiting(1, 6)).unwrap();
    // 6 + 6 = 12 > maxDelete 10, although each shard's 6 is within it.
    assert!(matches!(hub.deletion_verdict(&first), Some(DeletionVerdict::Refused { .. })));
    assert_eq!(hub.deletion_verdict(&first), hub.deletion_verdict(&second));
}

#[tokio::test]
async fn a_failed_shard_releases_the_shards_waiting_to_delete() {
    let hub = ProgressHub::without_lookup();
    hub.register_attempt_with_limit(&job("u1"), 1, ["s0", "s1"].map(token_hash).to_vec(), None);
    let waiting = hub.authenticate(CLIENT, "ns", "copy", "s0").await.unwrap();
    let mut report = report("u1", 1, 1);
    report.shard = Shard { index: 0, count: 2 };
    report.stage = Stage::AwaitingDeletion;
    report.deletions = Some(ferry_api::contract::PendingDeletions { extraneous: 1, source_objects: 1 });
    hub.apply(&waiting, report).unwrap();
    assert_eq!(hub.deletion_verdict(&waiting), None, "shard 1 is still copying");
    // Shard 1's pod died without a final report: shard 0 hears "no" instead of waiting forever.
    hub.refuse_deletions("u1", 1, "shard 1: the runner pod disappeared");
    assert!(matches!(hub.deletion_verdict(&waiting), Some(DeletionVerdict::Refused { .. })));
}
