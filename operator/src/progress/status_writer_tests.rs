#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use ferry_api::contract::{JobIdentity, ProgressReport, Shard, Stage};
use tokio::sync::oneshot;

use super::*;
use crate::progress::token_hash;

/// Records every write; fails the first `failures` of them.
#[derive(Clone, Default)]
struct FakeSink {
    writes: Arc<Mutex<Vec<(Instant, JobKey, ProgressStatus)>>>,
    failures: Arc<Mutex<u32>>,
}

impl StatusSink for FakeSink {
    async fn write(&self, job: &JobKey, status: &ProgressStatus) -> Result<(), StatusSinkError> {
        let mut failures = self.failures.lock().unwrap();
        if *failures > 0 {
            *failures -= 1;
            let source = kube::Error::Api(kube::core::Status::failure("etcd is slow", "Timeout").boxed());
            return Err(StatusSinkError::Patch { job: job.clone(), source });
        }
        self.writes.lock().unwrap().push((Instant::now(), job.clone(), status.clone()));
        Ok(())
    }
}

impl FakeSink {
    fn sequences(&self) -> Vec<u64> {
        self.writes.lock().unwrap().iter().map(|(_, _, status)| status.progress.objects_verified).collect()
    }
}

fn report(sequence: u64) -> ProgressReport {
    ProgressReport {
        job_uid: "u1".into(),
        attempt: 1,
        shard: Shard::WHOLE,
        sequence,
        stage: Stage::Copying,
        progress: Progress { objects_verified: sequence, objects_total: 100, ..Default::default() },
        recent_failures: (0..15).map(|i| ObjectFailure { path: format!("f{i}"), reason: "denied".into() }).collect(),
        outcome: None,
        deletions: None,
        report_objects: None,
    }
}

fn start(sink: &FakeSink, interval: Duration) -> (ProgressHub, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let hub = ProgressHub::without_lookup();
    let job = JobIdentity { namespace: "ns".into(), name: "copy".into(), uid: "u1".into() };
    hub.register_attempt(&job, 1, vec![token_hash("t")]);
    let (stop, stopped) = oneshot::channel::<()>();
    let writer = StatusWriter::new(hub.clone(), sink.clone()).with_interval(interval);
    let task = tokio::spawn(writer.run(async move {
        stopped.await.ok();
    }));
    (hub, stop, task)
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_reports_is_written_once_per_interval_ending_with_the_latest() {
    let sink = FakeSink::default();
    let (hub, stop, task) = start(&sink, Duration::from_secs(2));
    for sequence in 1..=50 {
        hub.accept(std::net::Ipv4Addr::LOCALHOST.into(), "ns", "copy", "t", report(sequence)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(sink.sequences(), vec![1, 50], "the first report at once, then only the latest");
    let writes = sink.writes.lock().unwrap().clone();
    assert!(writes[1].0 - writes[0].0 >= Duration::from_secs(2));
    assert_eq!(writes[1].1, JobKey::new("ns", "copy"));
    assert_eq!(writes[1].2.failures.len(), MAX_STATUS_FAILURES);
    assert_eq!(writes[1].2.summary.objects, "50/100");
    assert!(writes[1].2.last_heartbeat_time.is_some());

    // A duplicate changes nothing, so nothing is written.
    hub.accept(std::net::Ipv4Addr::LOCALHOST.into(), "ns", "copy", "t", report(50)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.send(()).unwrap();
    task.await.unwrap();
    assert_eq!(sink.sequences().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn shutdown_flushes_what_the_rate_limit_held_back() {
    let sink = FakeSink::default();
    let (hub, stop, task) = start(&sink, Duration::from_secs(60));
    hub.accept(std::net::Ipv4Addr::LOCALHOST.into(), "ns", "copy", "t", report(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    hub.accept(std::net::Ipv4Addr::LOCALHOST.into(), "ns", "copy", "t", report(2)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    stop.send(()).unwrap();
    task.await.unwrap();
    assert_eq!(sink.sequences(), vec![1, 2]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_write_is_retried_after_the_interval() {
    let sink = FakeSink::default();
    *sink.failures.lock().unwrap() = 1;
    let (hub, stop, task) = start(&sink, Duration::from_secs(2));
    let started = Instant::now();
    hub.accept(std::net::Ipv4Addr::LOCALHOST.into(), "ns", "copy", "t", report(7)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.send(()).unwrap();
    task.await.unwrap();
    let writes = sink.writes.lock().unwrap().clone();
    assert_eq!(writes.len(), 1);
    assert!(writes[0].0 - started >= Duration::from_secs(2));
}

#[test]
fn the_schedule_holds_back_jobs_written_recently() {
    let now = Instant::now();
    let mut schedule = Schedule::default();
    schedule.pending.extend(["a".to_owned(), "b".to_owned()]);
    schedule.attempted("a", now, Duration::from_secs(2));
    assert_eq!(schedule.due(Some(now)), vec!["b".to_owned()]);
    assert_eq!(schedule.next_deadline(), Some(now + Duration::from_secs(2)));
    let mut all = schedule.due(None);
    all.sort();
    assert_eq!(all, vec!["a".to_owned(), "b".to_owned()]);
    schedule.forget("a");
    assert_eq!(schedule.next_deadline(), None);
}

#[test]
fn the_patch_touches_only_progress_fields() {
    let mut attempt = AttemptProgress::new(1);
    assert!(ProgressStatus::from_attempt(&attempt).is_none());
    attempt.shards.insert(0, report(3));
    let patch = ProgressStatus::from_attempt(&attempt).unwrap().merge_patch();
    let status = patch["status"].as_object().unwrap();
    let mut keys: Vec<_> = status.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["failures", "lastHeartbeatTime", "progress", "summary"]);
    assert_eq!(status["summary"]["objects"], "3/100");
}
