//! The JSON Lines event stream, snapshotted: a change in what pipelines read is a reviewed change.

mod common;

use std::sync::Arc;

use asm_canary_engine::*;
use common::*;

fn json_lines(sink: &MemorySink) -> String {
    sink.records()
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(start_paused = true)]
async fn completed_run_event_stream() {
    let yaml = three_steps("rollback", true);
    let f = Fakes::new();
    f.gate.set(
        "b",
        vec![
            GateStatus::waiting_progress("1 of 2 workloads rolled out", 1, Some(2)),
            GateStatus::passed(),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let ev = Arc::new(MemorySink::new());
    let r = executor(&yaml, &f, &dir.path().join("s.json"), &ev)
        .with_approver(Arc::new(PreApproved::new(["c"])))
        .run(request())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Completed);
    let out = json_lines(&ev);
    // Every line carries the envelope; the last is run_finished.
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["schema"], EVENTS_SCHEMA);
        assert_eq!(v["run_id"], "run-1");
        assert!(v["ts"].is_string() && v["event"].is_string());
    }
    let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "run_finished");
    assert_eq!(last["outcome"], "completed");
    insta::assert_snapshot!(out);
}

#[tokio::test(start_paused = true)]
async fn rolled_back_run_event_stream() {
    let yaml = three_steps("rollback", false);
    let f = Fakes::new();
    f.gate
        .set("c", vec![GateStatus::failed("2 proxies STALE in payments")]);
    let dir = tempfile::tempdir().unwrap();
    let ev = Arc::new(MemorySink::new());
    let r = executor(&yaml, &f, &dir.path().join("s.json"), &ev)
        .run(request())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::RolledBack);
    insta::assert_snapshot!(json_lines(&ev));
}

#[tokio::test(start_paused = true)]
async fn paused_for_approval_event_stream() {
    let yaml = three_steps("halt", true);
    let f = Fakes::new();
    let dir = tempfile::tempdir().unwrap();
    let ev = Arc::new(MemorySink::new());
    let r = executor(&yaml, &f, &dir.path().join("s.json"), &ev)
        .run(request())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Paused);
    insta::assert_snapshot!(json_lines(&ev));
}

#[test]
fn events_round_trip_through_json() {
    let sink = MemorySink::new();
    let e = Emitter::new("r", Arc::new(sink.clone()), Arc::new(fixed_clock()));
    e.emit(Event::RunFinished {
        outcome: Outcome::Paused,
        reason: Some("step \"complete\" awaits approval".into()),
        exit_code: 4,
        summary: serde_json::json!({"source": "asm-1-27", "target": "asm-1-28"})
            .as_object()
            .unwrap()
            .clone(),
    });
    let rec = &sink.records()[0];
    let line = serde_json::to_string(rec).unwrap();
    assert_eq!(
        line,
        r#"{"schema":"asm-canary.events/1.1","ts":"2026-01-01T00:00:00Z","run_id":"r","event":"run_finished","outcome":"paused","reason":"step \"complete\" awaits approval","exit_code":4,"source":"asm-1-27","target":"asm-1-28"}"#
    );
    let back: EventRecord = serde_json::from_str(&line).unwrap();
    assert_eq!(&back, rec);
}
