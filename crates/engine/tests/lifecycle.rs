//! Every lifecycle path of the executor, with fake actions and gates, on paused tokio time
//! (gate timeouts of minutes take no wall time).

mod common;

use std::sync::{Arc, Mutex};

use asm_canary_engine::*;
use async_trait::async_trait;
use common::*;
use serde_json::json;

fn setup(
    yaml: &str,
) -> (
    Fakes,
    tempfile::TempDir,
    std::path::PathBuf,
    Arc<MemorySink>,
) {
    let _ = yaml;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("run.json");
    (Fakes::new(), dir, state, Arc::new(MemorySink::new()))
}

use StepStatus::*;

#[tokio::test(start_paused = true)]
async fn happy_path_runs_every_step_once_and_completes() {
    let yaml = three_steps("rollback", false);
    let (f, _d, state, ev) = setup(&yaml);
    let ex = executor(&yaml, &f, &state, &ev);
    let r = ex.run(request()).await.unwrap();
    assert_eq!(r.outcome, Outcome::Completed);
    assert_eq!(r.exit_code(), 0);
    assert_eq!(r.summary["last"], json!("c"));
    assert_eq!(f.world.count("a"), 1);
    assert_eq!(f.world.count("b-prod"), 1);
    assert_eq!(f.world.count("c"), 1);
    let cp = load(&state);
    assert_eq!(cp.state, RunState::Completed);
    assert_eq!(
        statuses(&cp),
        [
            ("a".into(), Succeeded),
            ("b".into(), Succeeded),
            ("c".into(), Succeeded),
            ("undo-all".into(), Pending)
        ]
    );
    assert_eq!(cp.journal.len(), 3);
    assert!(cp.journal.iter().all(|e| e.is_done()));
    assert_eq!(
        cp.steps[1].outputs.as_ref().unwrap()["effect"],
        json!("b-prod")
    );
    assert_eq!(cp.steps[0].attempts, 1);
    assert_eq!(
        names(&ev.events()),
        [
            "run_started",
            "step_started:a",
            "action_finished:a",
            "gate_started:a",
            "gate_passed:a",
            "step_succeeded:a",
            "step_started:b",
            "action_finished:b",
            "gate_started:b",
            "gate_passed:b",
            "step_succeeded:b",
            "step_started:c",
            "action_finished:c",
            "gate_started:c",
            "gate_passed:c",
            "step_succeeded:c",
            "run_finished"
        ]
    );
    // A resumed completed run does nothing more.
    let r = executor(&yaml, &f, &state, &ev)
        .resume(ResumeOptions::default())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Completed);
    assert_eq!(f.effect.calls("a"), 1);
}

#[tokio::test(start_paused = true)]
async fn already_done_is_recorded_and_skips_are_skipped() {
    let yaml = r#"apiVersion: asm-canary.runbook/v1
name: t
params:
  enabled: { type: boolean, default: false }
steps:
  - id: a
    action: effect
    gate: { check: scripted, timeout: 1m }
  - id: maybe
    action: effect
    when: ${params.enabled}
  - id: copy
    action: skip
    gate: { check: scripted, timeout: 1m }
  - id: d
    action: echo
    inputs: { from_a: "${steps.a.outputs.effect}", from_copy: "${steps.copy.outputs}" }
"#;
    let (f, _d, state, ev) = setup(yaml);
    f.world.0.lock().unwrap().insert("a".into(), 1);
    let r = executor(yaml, &f, &state, &ev).run(request()).await;
    // `copy` was skipped, so it has no outputs: d's input cannot resolve → d fails → rollback
    // (nothing journaled → nothing to undo; the runbook has no rollback steps).
    let r = r.unwrap();
    assert_eq!(r.outcome, Outcome::RolledBack);
    assert!(
        r.reason
            .as_deref()
            .unwrap()
            .contains("step \"copy\" has recorded no outputs"),
        "{r:?}"
    );
    let cp = load(&state);
    assert_eq!(cp.steps[0].status, Succeeded);
    assert!(cp.steps[0].already_done);
    assert_eq!(cp.steps[1].status, Skipped);
    assert_eq!(
        cp.steps[1].skip_reason.as_deref(),
        Some("when params.enabled is false")
    );
    assert_eq!(cp.steps[2].status, Skipped);
    assert_eq!(cp.steps[2].skip_reason.as_deref(), Some("nothing to copy"));
    assert_eq!(f.world.count("a"), 1, "already applied: not applied again");
    assert!(cp.journal.is_empty());
    assert_eq!(
        f.gate.checks("copy"),
        0,
        "a skipped step's gate does not run"
    );
    let evs = ev.events();
    assert!(evs.contains(&Event::StepSucceeded {
        step: "a".into(),
        phase: Phase::Forward,
        already_done: true
    }));
    assert!(evs.contains(&Event::ActionFinished {
        step: "a".into(),
        phase: Phase::Forward,
        already_done: true,
        detail: Some("a already applied".into())
    }));
}

#[tokio::test(start_paused = true)]
async fn action_failure_with_rollback_undoes_what_the_journal_says() {
    let yaml = three_steps("rollback", false);
    let (f, _d, state, ev) = setup(&yaml);
    f.effect.fail_step("c", "boom on c");
    let r = executor(&yaml, &f, &state, &ev)
        .run(request())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::RolledBack);
    assert_eq!(r.exit_code(), 3);
    assert_eq!(r.failed_step.as_deref(), Some("c"));
    assert_eq!(r.reason.as_deref(), Some("step \"c\" failed: boom on c"));
    assert_eq!(f.world.count("undo:a"), 1);
    assert_eq!(f.world.count("undo:b-prod"), 1);
    assert_eq!(f.world.count("undo:c"), 0);
    let cp = load(&state);
    assert_eq!(cp.state, RunState::RolledBack);
    assert_eq!(
        statuses(&cp),
        [
            ("a".into(), Succeeded),
            ("b".into(), Succeeded),
            ("c".into(), Failed),
            ("undo-all".into(), Succeeded)
        ]
    );
    assert_eq!(cp.steps[2].error.as_deref(), Some("boom on c"));
    let n = names(&ev.events());
    let tail: Vec<&str> = n
        .iter()
        .map(String::as_str)
        .skip_while(|s| *s != "step_failed:c")
        .collect();
    assert_eq!(
        tail,
        [
            "step_failed:c",
            "rollback_started",
            "step_started:undo-all",
            "action_finished:undo-all",
            "gate_started:undo-all",
            "gate_passed:undo-all",
            "step_succeeded:undo-all",
            "rollback_finished",
            "run_finished"
        ]
    );
    match ev.events().last().unwrap() {
        Event::RunFinished {
            outcome, exit_code, ..
        } => {
            assert_eq!((*outcome, *exit_code), (Outcome::RolledBack, 3))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn action_failure_with_halt_pauses_and_resume_retries_the_step() {
    let yaml = three_steps("halt", false);
    let (f, _d, state, ev) = setup(&yaml);
    f.effect.fail_step("b", "b is unhappy");
    let r = executor(&yaml, &f, &state, &ev)
        .run(request())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Paused);
    assert_eq!(r.exit_code(), 4);
    assert!(
        r.reason
            .as_deref()
            .unwrap()
            .contains("step \"b\" failed: b is unhappy; halted"),
        "{r:?}"
    );
    assert_eq!(f.world.count("undo:a"), 0, "halt does not roll back");
    let cp = load(&state);
    assert_eq!(cp.state, RunState::Paused);
    assert_eq!(cp.steps[1].status, Failed);

    f.effect.heal("b");
    let r = executor(&yaml, &f, &state, &ev)
        .resume(ResumeOptions::default())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Completed);
    let cp = load(&state);
    assert_eq!(cp.steps[1].attempts, 2);
    assert_eq!(cp.steps[1].status, Succeeded);
    assert_eq!(cp.steps[1].error, None);
    assert_eq!(f.effect.calls("a"), 1, "a succeeded before: not run again");
    assert_eq!(
        (
            f.world.count("a"),
            f.world.count("b-prod"),
            f.world.count("c")
        ),
        (1, 1, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn gate_failure_rolls_back_and_names_the_gate() {
    let yaml = three_steps("rollback", false);
    let (f, _d, state, ev) = setup(&yaml);
    f.gate.set(
        "b",
        vec![
            GateStatus::waiting("1 of 3"),
            GateStatus::failed("pods crashloop"),
        ],
    );
    let r = executor(&yaml, &f, &state, &ev)
        .run(request())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::RolledBack);
    assert_eq!(
        r.reason.as_deref(),
        Some("step \"b\" failed: gate \"scripted\" failed: pods crashloop")
    );
    assert_eq!(f.gate.checks("b"), 2);
    assert_eq!(f.world.count("undo:b-prod"), 1);
    assert!(ev.events().contains(&Event::GateFailed {
        step: "b".into(),
        check: "scripted".into(),
        reason: "pods crashloop".into(),
        timed_out: false
    }));
}

#[tokio::test(start_paused = true)]
async fn inconclusive_gate_pauses_without_rollback_and_resume_judges_again() {
    let yaml = three_steps("rollback", false);
    let (f, _d, state, ev) = setup(&yaml);
    f.gate.set(
        "b",
        vec![
            GateStatus::inconclusive("no data for request-success-rate"),
            GateStatus::passed(),
        ],
    );
    let r = executor(&yaml, &f, &state, &ev)
        .run(request())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Paused);
    assert_eq!(r.exit_code(), 4);
    let reason = r.reason.clone().unwrap();
    assert!(
        reason.contains("inconclusive: no data for request-success-rate"),
        "{reason}"
    );
    assert_eq!(
        f.world.count("undo:b-prod"),
        0,
        "no rollback on inconclusive"
    );
    assert!(ev.events().contains(&Event::GateInconclusive {
        step: "b".into(),
        check: "scripted".into(),
        reason: "no data for request-success-rate".into(),
    }));
    let cp = load(&state);
    assert_eq!(cp.state, RunState::Paused);
    assert_eq!(statuses(&cp)[1], ("b".into(), Gating));
    // A resume runs only the gate again (the action is not repeated).
    let r = executor(&yaml, &f, &state, &ev)
        .resume(ResumeOptions::default())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Completed);
    assert_eq!(f.world.count("b-prod"), 1);
    assert_eq!(f.gate.checks("b"), 2);
}

#[tokio::test(start_paused = true)]
async fn gate_timeout_is_a_failure_with_the_last_detail() {
    let yaml = three_steps("rollback", false);
    let (f, _d, state, ev) = setup(&yaml);
    f.gate.set(
        "a",
        vec![GateStatus::waiting_progress(
            "2 of 5 pods ready",
            2,
            Some(5),
        )],
    );
    let started = tokio::time::Instant::now();
    let r = executor(&yaml, &f, &state, &ev)
        .run(request())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::RolledBack);
    assert_eq!(
        r.reason.as_deref(),
        Some("step \"a\" failed: gate \"scripted\" failed: timed out after 10m: 2 of 5 pods ready")
    );
    assert_eq!(started.elapsed(), std::time::Duration::from_secs(600));
    // Checks at 0, 5s, …, 595s and a last one at the deadline: 121; progress emitted once.
    assert_eq!(f.gate.checks("a"), 121);
    let progress: Vec<_> = ev
        .events()
        .into_iter()
        .filter(|e| matches!(e, Event::GateProgress { .. }))
        .collect();
    assert_eq!(
        progress,
        [Event::GateProgress {
            step: "a".into(),
            check: "scripted".into(),
            detail: "2 of 5 pods ready".into(),
            progress: Some(Progress::of(2, 5))
        }]
    );
    assert!(ev.events().iter().any(|e| matches!(
        e,
        Event::GateFailed {
            timed_out: true,
            ..
        }
    )));
}

#[tokio::test(start_paused = true)]
async fn stable_for_needs_continuous_passes() {
    let yaml = r#"apiVersion: asm-canary.runbook/v1
name: t
steps:
  - id: v
    action: echo
    gate: { check: scripted, timeout: 10m, poll_interval: 5s, stable_for: 12s }
"#;
    let (f, _d, state, ev) = setup(yaml);
    let p = GateStatus::passed();
    let w = GateStatus::waiting("1 stale proxy");
    // passes at 0s, drops at 5s, passes from 10s: stable since 10s → passes at 22s (10+12).
    f.gate.set("v", vec![p.clone(), w, p]);
    let started = tokio::time::Instant::now();
    let r = executor(yaml, &f, &state, &ev)
        .run(request())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Completed);
    assert_eq!(started.elapsed(), std::time::Duration::from_secs(22));
    assert_eq!(f.gate.checks("v"), 6, "0s, 5s, 10s, 15s, 20s, 22s");
}

/// A gate whose check errors twice (network), then passes.
struct Flaky(Mutex<u32>);

#[async_trait]
impl Gate for Flaky {
    async fn check(&self, _ctx: &mut GateCtx) -> Result<GateStatus, StepError> {
        let mut n = self.0.lock().unwrap();
        *n += 1;
        if *n <= 2 {
            Err(StepError::msg("connection refused"))
        } else {
            Ok(GateStatus::passed())
        }
    }
}

#[tokio::test(start_paused = true)]
async fn gate_errors_are_warnings_and_retried() {
    let yaml = r#"apiVersion: asm-canary.runbook/v1
name: t
steps:
  - id: v
    action: echo
    gate: { check: flaky, timeout: 1m, poll_interval: 1s }
"#;
    let f = Fakes::new();
    let reg = f.registry().gate("flaky", Flaky(Mutex::new(0)));
    let dir = tempfile::tempdir().unwrap();
    let ev = Arc::new(MemorySink::new());
    let rb = Runbook::parse(yaml, "t.yaml", &reg).unwrap();
    let r = Executor::new(rb, reg, FileStore::new(dir.path().join("s.json")))
        .with_events(ev.clone())
        .run(request())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Completed);
    let warns: Vec<_> = ev
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Message {
                level: Level::Warn,
                text,
                ..
            } => Some(text),
            _ => None,
        })
        .collect();
    assert_eq!(warns.len(), 2);
    assert_eq!(
        warns[0],
        "gate \"flaky\" could not check: connection refused; retrying"
    );
}

#[tokio::test(start_paused = true)]
async fn watch_gate_is_woken_early_by_wait_for_change() {
    /// Passes on the second check; `wait_for_change` returns at once (a watch event).
    struct Watchy(Mutex<u32>);
    #[async_trait]
    impl Gate for Watchy {
        async fn check(&self, _ctx: &mut GateCtx) -> Result<GateStatus, StepError> {
            let mut n = self.0.lock().unwrap();
            *n += 1;
            Ok(if *n >= 2 {
                GateStatus::passed()
            } else {
                GateStatus::waiting("not yet")
            })
        }
        async fn wait_for_change(&self, ctx: &mut GateCtx) {
            let seen = ctx.scratch(|| 0u32);
            *seen += 1;
        }
    }
    let yaml = r#"apiVersion: asm-canary.runbook/v1
name: t
steps:
  - id: v
    action: echo
    gate: { check: watchy, timeout: 10m, poll_interval: 1m, watch: true }
"#;
    let f = Fakes::new();
    let reg = f.registry().gate("watchy", Watchy(Mutex::new(0)));
    let dir = tempfile::tempdir().unwrap();
    let rb = Runbook::parse(yaml, "t.yaml", &reg).unwrap();
    let started = tokio::time::Instant::now();
    let r = Executor::new(rb, reg, FileStore::new(dir.path().join("s.json")))
        .run(request())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Completed);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "woken by the watch, not the 1m poll"
    );
}

#[tokio::test(start_paused = true)]
async fn unattended_approval_pauses_until_resumed_with_approve() {
    let yaml = three_steps("rollback", true);
    let (f, _d, state, ev) = setup(&yaml);
    let r = executor(&yaml, &f, &state, &ev)
        .run(request())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Paused);
    assert_eq!(r.exit_code(), 4);
    assert_eq!(
        r.reason.as_deref(),
        Some("step \"c\" awaits approval; resume with --approve c to continue")
    );
    let cp = load(&state);
    assert_eq!(cp.steps[2].status, AwaitingApproval);
    assert_eq!(
        f.effect.calls("c"),
        0,
        "the action does not run before approval"
    );
    assert!(ev.events().contains(&Event::ApprovalNeeded {
        step: "c".into(),
        prompt: None
    }));

    // Resume without --approve: still paused, nothing re-run.
    let r = executor(&yaml, &f, &state, &ev)
        .resume(ResumeOptions::default())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Paused);
    assert_eq!(
        (
            f.effect.calls("a"),
            f.effect.calls("b"),
            f.effect.calls("c")
        ),
        (1, 1, 0)
    );

    // Resume with --approve c.
    let r = executor(&yaml, &f, &state, &ev)
        .with_approver(Arc::new(PreApproved::new(["c"])))
        .resume(ResumeOptions::default())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Completed);
    let cp = load(&state);
    assert_eq!(cp.approvals.len(), 1);
    assert_eq!(
        (cp.approvals[0].step.as_str(), cp.approvals[0].by.as_str()),
        ("c", "--approve")
    );
    assert_eq!(f.world.count("c"), 1);
}

#[tokio::test(start_paused = true)]
async fn pre_approved_run_does_not_pause() {
    let yaml = three_steps("rollback", true);
    let (f, _d, state, ev) = setup(&yaml);
    let r = executor(&yaml, &f, &state, &ev)
        .with_approver(Arc::new(PreApproved::new(["c"])))
        .run(request())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Completed);
    assert!(ev.events().contains(&Event::ApprovalGiven {
        step: "c".into(),
        by: "--approve".into()
    }));
}

/// Guided mode: an approver that answers like a person at a terminal.
struct Person(ApprovalDecision, Mutex<Vec<ApprovalRequest>>);

#[async_trait]
impl Approver for Person {
    async fn decide(&self, request: &ApprovalRequest) -> ApprovalDecision {
        self.1.lock().unwrap().push(request.clone());
        self.0.clone()
    }
}

#[tokio::test(start_paused = true)]
async fn guided_approval_yes_continues_and_no_pauses() {
    let yaml = three_steps("rollback", true).replace(
        "    approval: required\n",
        "    approval: required\n    approval_prompt: \"apply ${steps.b.outputs.effect}?\"\n",
    );
    let (f, _d, state, ev) = setup(&yaml);
    let no = Arc::new(Person(
        ApprovalDecision::Denied {
            reason: "not now".into(),
        },
        Mutex::new(vec![]),
    ));
    let r = executor(&yaml, &f, &state, &ev)
        .with_approver(no.clone())
        .run(request())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Paused);
    assert_eq!(
        r.reason.as_deref(),
        Some(
            "approval for step \"c\" was denied (not now); resume to be asked again, or roll back"
        )
    );
    let asked = no.1.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].prompt.as_deref(), Some("apply b-prod?"));
    assert_eq!(asked[0].step, "c");

    let yes = Arc::new(Person(
        ApprovalDecision::Approved {
            by: "terminal:alice".into(),
        },
        Mutex::new(vec![]),
    ));
    let r = executor(&yaml, &f, &state, &ev)
        .with_approver(yes.clone())
        .resume(ResumeOptions::default())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Completed);
    assert_eq!(load(&state).approvals[0].by, "terminal:alice");
}

#[tokio::test(start_paused = true)]
async fn failed_rollback_exits_6_and_rollback_command_finishes_it() {
    let yaml = three_steps("rollback", false);
    let (f, _d, state, ev) = setup(&yaml);
    f.effect.fail_step("c", "boom");
    f.gate.set(
        "undo-all",
        vec![GateStatus::failed("source istiod not ready")],
    );
    let r = executor(&yaml, &f, &state, &ev)
        .run(request())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Failed);
    assert_eq!(r.exit_code(), 6);
    assert!(r.reason.as_deref().unwrap().starts_with(
        "rollback step \"undo-all\" failed: gate \"scripted\" failed: source istiod not ready; a person must look"
    ));
    assert_eq!(load(&state).state, RunState::Failed);
    assert!(ev.events().contains(&Event::RollbackFinished {
        ok: false,
        error: Some("gate \"scripted\" failed: source istiod not ready".into())
    }));

    f.gate.set("undo-all", vec![GateStatus::passed()]);
    let r = executor(&yaml, &f, &state, &ev)
        .rollback(ResumeOptions::default())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::RolledBack);
    assert_eq!(
        r.exit_code(),
        0,
        "a rollback that was asked for and finished exits 0"
    );
    // The undo action ran again but undid each effect once.
    assert_eq!(
        (f.world.count("undo:a"), f.world.count("undo:b-prod")),
        (1, 1)
    );
    assert_eq!(load(&state).rollback[0].attempts, 2);
}

#[tokio::test(start_paused = true)]
async fn explicit_rollback_of_a_paused_run_and_refusal_of_a_completed_one() {
    let yaml = three_steps("rollback", true);
    let (f, _d, state, ev) = setup(&yaml);
    let r = executor(&yaml, &f, &state, &ev)
        .run(request())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Paused);
    let r = executor(&yaml, &f, &state, &ev)
        .rollback(ResumeOptions::default())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::RolledBack);
    assert_eq!(r.exit_code(), 0);
    assert_eq!(r.reason.as_deref(), Some("rollback requested"));
    assert_eq!(
        (
            f.world.count("undo:a"),
            f.world.count("undo:b-prod"),
            f.world.count("undo:c")
        ),
        (1, 1, 0)
    );
    // Again: nothing more to do.
    let r = executor(&yaml, &f, &state, &ev)
        .rollback(ResumeOptions::default())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::RolledBack);
    assert_eq!(f.world.count("undo:a"), 1);

    let yaml = three_steps("rollback", false);
    let (f, _d, state, ev) = setup(&yaml);
    executor(&yaml, &f, &state, &ev)
        .run(request())
        .await
        .unwrap();
    let err = executor(&yaml, &f, &state, &ev)
        .rollback(ResumeOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::AlreadyCompleted { .. }), "{err}");
    assert_eq!(err.exit_code(), 2);
}

#[tokio::test(start_paused = true)]
async fn rollback_with_an_empty_journal_skips_its_steps() {
    let yaml = three_steps("rollback", false);
    let (f, _d, state, ev) = setup(&yaml);
    f.effect.fail_step("a", "preflight says no");
    let r = executor(&yaml, &f, &state, &ev)
        .run(request())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::RolledBack);
    let cp = load(&state);
    assert_eq!(cp.rollback[0].status, Skipped);
    assert_eq!(
        cp.rollback[0].skip_reason.as_deref(),
        Some("nothing to undo: the journal records no side effect")
    );
    assert_eq!(f.gate.checks("undo-all"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_second_run_on_the_same_checkpoint_is_refused() {
    let yaml = three_steps("rollback", true);
    let (f, _d, state, ev) = setup(&yaml);
    executor(&yaml, &f, &state, &ev)
        .run(request())
        .await
        .unwrap();
    let before = std::fs::read(&state).unwrap();
    let err = executor(&yaml, &f, &state, &ev)
        .run(request())
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(
        err.to_string()
            .contains("already exists (run run-1); resume it"),
        "{err}"
    );
    assert_eq!(std::fs::read(&state).unwrap(), before, "never overwritten");
}

#[tokio::test(start_paused = true)]
async fn bad_params_are_refused_before_anything_is_written() {
    let yaml = three_steps("rollback", false);
    let (f, _d, state, ev) = setup(&yaml);
    let mut req = request();
    req.params.insert("tga".into(), json!("x"));
    let err = executor(&yaml, &f, &state, &ev).run(req).await.unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains("unknown param \"tga\""), "{err}");
    assert!(!state.exists());
    assert!(ev.events().is_empty());
}

// ---- interruption (Ctrl-C) at every step boundary and inside actions ----

/// Cancels the run's token from inside a gate check, then passes: the step succeeds and the
/// run stops at the boundary before the next step.
struct CancelOnPass(CancellationToken);

#[async_trait]
impl Gate for CancelOnPass {
    async fn check(&self, _ctx: &mut GateCtx) -> Result<GateStatus, StepError> {
        self.0.cancel();
        Ok(GateStatus::passed())
    }
}

/// Cancels from inside a gate check and keeps waiting: the run stops mid-gate.
struct CancelWhileWaiting(CancellationToken);

#[async_trait]
impl Gate for CancelWhileWaiting {
    async fn check(&self, _ctx: &mut GateCtx) -> Result<GateStatus, StepError> {
        self.0.cancel();
        Ok(GateStatus::waiting("still rolling"))
    }
}

/// The three-step runbook with step `gate_step`'s gate replaced by `gate`.
fn boundary_runbook(gate_step: &str, gate: &str) -> String {
    let index = ["a", "b", "c"]
        .iter()
        .position(|s| *s == gate_step)
        .unwrap();
    let line = "    gate: { check: scripted, timeout: 10m, poll_interval: 5s }";
    let text = three_steps("rollback", false);
    let mut parts: Vec<&str> = text.split(line).collect();
    let tail = parts.split_off(index + 1);
    let mut out = parts.join(line);
    out.push_str(&format!("    gate: {{ check: {gate}, timeout: 1m }}"));
    out.push_str(&tail.join(line));
    out
}

async fn resume_to_completion(yaml: &str, f: &Fakes, state: &std::path::Path) {
    let ev = Arc::new(MemorySink::new());
    let r = executor(yaml, f, state, &ev)
        .resume(ResumeOptions::default())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Completed, "{r:?}");
    assert_eq!(
        (
            f.world.count("a"),
            f.world.count("b-prod"),
            f.world.count("c")
        ),
        (1, 1, 1),
        "each side effect exactly once"
    );
    let cp = load(state);
    assert!(cp.journal.iter().all(|e| e.is_done()), "{:#?}", cp.journal);
    assert_eq!(cp.journal.len(), 3, "{:#?}", cp.journal);
}

#[tokio::test(start_paused = true)]
async fn interrupted_at_each_step_boundary_resumes_without_repeating() {
    for (i, step) in ["a", "b", "c"].into_iter().enumerate() {
        for (gname, mid_gate) in [("cancel-on-pass", false), ("cancel-waiting", true)] {
            let yaml = boundary_runbook(step, gname);
            let f = Fakes::new();
            let token = CancellationToken::new();
            let reg = f
                .registry()
                .gate("cancel-on-pass", CancelOnPass(token.clone()))
                .gate("cancel-waiting", CancelWhileWaiting(token.clone()));
            let dir = tempfile::tempdir().unwrap();
            let state = dir.path().join("s.json");
            let rb =
                Runbook::parse(&yaml, "t.yaml", &reg).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
            let ev = Arc::new(MemorySink::new());
            let r = Executor::new(rb, reg, FileStore::new(&state))
                .with_events(ev.clone())
                .with_cancellation(token)
                .run(request())
                .await
                .unwrap();
            if step == "c" && !mid_gate {
                // Ctrl-C after the last gate passed: nothing is left, the run completed.
                assert_eq!(r.outcome, Outcome::Completed);
                continue;
            }
            assert_eq!(r.outcome, Outcome::Paused, "{step} {gname}");
            assert_eq!(r.exit_code(), 4);
            let cp = load(&state);
            if mid_gate {
                assert_eq!(cp.steps[i].status, Interrupted, "{step}");
                assert!(cp.steps[i].action_done);
                assert!(ev.events().contains(&Event::StepInterrupted {
                    step: step.into(),
                    phase: Phase::Forward
                }));
            } else {
                assert_eq!(cp.steps[i].status, Succeeded, "{step}");
                if i < 2 {
                    assert_eq!(cp.steps[i + 1].status, Pending);
                    assert_eq!(
                        r.reason.as_deref(),
                        Some(
                            format!(
                                "interrupted before step {:?}; resume to continue",
                                ["a", "b", "c"][i + 1]
                            )
                            .as_str()
                        )
                    );
                }
            }
            // Resume: the same runbook, the cancelling gates now plain passing gates.
            let reg = f
                .registry()
                .gate("cancel-on-pass", f.gate.clone())
                .gate("cancel-waiting", f.gate.clone());
            let rb = Runbook::parse(&yaml, "t.yaml", &reg).unwrap();
            let r = Executor::new(rb, reg, FileStore::new(&state))
                .resume(ResumeOptions::default())
                .await
                .unwrap();
            assert_eq!(r.outcome, Outcome::Completed, "{step} {gname}");
            assert_eq!(
                (
                    f.world.count("a"),
                    f.world.count("b-prod"),
                    f.world.count("c")
                ),
                (1, 1, 1),
                "{step} {gname}: each side effect exactly once"
            );
            assert_eq!(
                f.effect.calls(step),
                1,
                "{step} {gname}: the action is not re-run"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn interrupted_inside_an_action_resumes_and_makes_each_effect_once() {
    for step in ["a", "b", "c"] {
        for point in [
            Point::BeforeIntent,
            Point::AfterIntent,
            Point::AfterEffect,
            Point::AfterDone,
        ] {
            let yaml = three_steps("rollback", false);
            let f = Fakes::new();
            let token = CancellationToken::new();
            f.effect.interrupt_at(step, point, &token);
            let dir = tempfile::tempdir().unwrap();
            let state = dir.path().join("s.json");
            let ev = Arc::new(MemorySink::new());
            let r = executor(&yaml, &f, &state, &ev)
                .with_cancellation(token)
                .run(request())
                .await
                .unwrap();
            assert_eq!(r.outcome, Outcome::Paused, "{step} {point:?}");
            assert_eq!(
                r.reason.as_deref(),
                Some(format!("interrupted during step {step:?}; resume to continue").as_str())
            );
            let cp = load(&state);
            let rec = cp.step(step).unwrap();
            assert_eq!(rec.status, Interrupted, "{step} {point:?}");
            let in_flight = cp.journal.iter().filter(|e| !e.is_done()).count();
            let expect_in_flight =
                matches!(point, Point::AfterIntent | Point::AfterEffect) as usize;
            assert_eq!(
                in_flight, expect_in_flight,
                "{step} {point:?}: {:#?}",
                cp.journal
            );
            f.effect.clear_interrupt();
            resume_to_completion(&yaml, &f, &state).await;
            let cp = load(&state);
            assert_eq!(cp.step(step).unwrap().attempts, 2, "{step} {point:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn interrupted_during_rollback_resume_continues_the_rollback() {
    let yaml = three_steps("rollback", false).replace(
        "rollback:\n  - id: undo-all\n    action: undo\n    gate: { check: scripted, timeout: 1m }\n",
        "rollback:\n  - id: undo-all\n    action: undo\n    gate: { check: scripted, timeout: 1m }\n  - id: undo-more\n    action: effect\n    inputs: { effect: cleanup }\n",
    );
    let f = Fakes::new();
    f.effect.fail_step("c", "boom");
    let token = CancellationToken::new();
    f.effect
        .interrupt_at("undo-more", Point::AfterIntent, &token);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s.json");
    let ev = Arc::new(MemorySink::new());
    let r = executor(&yaml, &f, &state, &ev)
        .with_cancellation(token)
        .run(request())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Paused);
    assert_eq!(load(&state).state, RunState::RollingBack);
    assert!(
        r.reason
            .as_deref()
            .is_some_and(|t| t.starts_with("rollback interrupted at step \"undo-more\"")),
        "{r:?}"
    );
    f.effect.clear_interrupt();
    let r = executor(&yaml, &f, &state, &ev)
        .resume(ResumeOptions::default())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::RolledBack);
    assert_eq!(r.exit_code(), 3);
    // The finished rollback says why it was made, not what interrupted it on the way (the
    // report and `status` showed "rollback interrupted" for a clean rollback).
    assert_eq!(r.reason.as_deref(), Some("step \"c\" failed: boom"));
    assert_eq!(
        load(&state).reason.as_deref(),
        Some("step \"c\" failed: boom")
    );
    assert_eq!(
        (
            f.world.count("undo:a"),
            f.world.count("undo:b-prod"),
            f.world.count("cleanup")
        ),
        (1, 1, 1)
    );
    assert_eq!(f.effect.calls("undo-more"), 2);
}

#[tokio::test(start_paused = true)]
async fn crash_between_a_failed_step_and_the_rollback_starts_the_rollback_on_resume() {
    let yaml = three_steps("rollback", false);
    let (f, _d, state, ev) = setup(&yaml);
    f.effect.fail_step("c", "boom");
    executor(&yaml, &f, &state, &ev)
        .run(request())
        .await
        .unwrap();
    // Rewind the checkpoint to the moment after `c` was recorded failed, before the rollback.
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    v["state"] = json!("running");
    v["reason"] = serde_json::Value::Null;
    v["failed_step"] = serde_json::Value::Null;
    v["rollback"][0] = json!({"id": "undo-all", "status": "pending"});
    std::fs::write(&state, serde_json::to_vec(&v).unwrap()).unwrap();
    let r = executor(&yaml, &f, &state, &ev)
        .resume(ResumeOptions::default())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::RolledBack);
    assert_eq!(r.failed_step.as_deref(), Some("c"));
    assert_eq!(r.reason.as_deref(), Some("step \"c\" failed: boom"));
    assert_eq!(f.effect.calls("c"), 1, "the failed step is not retried");
    assert_eq!(f.world.count("undo:a"), 1);
}

#[tokio::test(start_paused = true)]
async fn summary_is_kept_current_in_the_checkpoint_and_actions_report_progress() {
    struct Waves;
    #[async_trait]
    impl Action for Waves {
        async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
            for i in 1..=3 {
                ctx.events.progress(format!("wave {i} of 3"), i, Some(3));
            }
            Ok(ActionOutcome::done(
                json!({"target": "asm-1-28"}).as_object().unwrap().clone(),
            ))
        }
    }
    let yaml = r#"apiVersion: asm-canary.runbook/v1
name: t
summary:
  target: ${steps.pick.outputs.target}
  never: ${steps.later.outputs.x}
steps:
  - id: pick
    action: waves
  - id: later
    action: echo
    approval: required
"#;
    let f = Fakes::new();
    let reg = f.registry().action("waves", Waves);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s.json");
    let ev = Arc::new(MemorySink::new());
    let rb = Runbook::parse(yaml, "t.yaml", &reg).unwrap();
    let r = Executor::new(rb, reg, FileStore::new(&state))
        .with_events(ev.clone())
        .run(request())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Paused);
    assert_eq!(
        serde_json::Value::Object(r.summary),
        json!({"never": null, "target": "asm-1-28"})
    );
    assert_eq!(load(&state).summary["target"], "asm-1-28");
    let progress: Vec<_> = ev
        .events()
        .into_iter()
        .filter(|e| matches!(e, Event::StepProgress { .. }))
        .collect();
    assert_eq!(progress.len(), 3);
    assert_eq!(
        progress[2],
        Event::StepProgress {
            step: "pick".into(),
            detail: "wave 3 of 3".into(),
            progress: Some(Progress::of(3, 3))
        }
    );
}

#[tokio::test]
async fn concurrent_journaling_from_parallel_tasks_is_complete_and_durable() {
    struct Parallel;
    #[async_trait]
    impl Action for Parallel {
        async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..40 {
                let journal = ctx.journal.clone();
                tasks.spawn(async move {
                    let id = journal
                        .intent("restart", &format!("ns/w{i}"), json!({"i": i}))
                        .await?;
                    tokio::task::yield_now().await;
                    journal.done(id, Some(json!({"ok": i}))).await
                });
            }
            while let Some(r) = tasks.join_next().await {
                r.map_err(|e| StepError::msg(e.to_string()))??;
            }
            Ok(ActionOutcome::done(Outputs::new()))
        }
    }
    let yaml =
        "apiVersion: asm-canary.runbook/v1\nname: p\nsteps:\n  - id: wave\n    action: parallel\n";
    let reg = Registry::new().action("parallel", Parallel);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s.json");
    let rb = Runbook::parse(yaml, "p.yaml", &reg).unwrap();
    let r = Executor::new(rb, reg, FileStore::new(&state))
        .run(request())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Completed);
    let cp = load(&state);
    assert_eq!(cp.journal.len(), 40);
    let mut seqs: Vec<u64> = cp.journal.iter().map(|e| e.seq).collect();
    seqs.sort();
    assert_eq!(seqs, (1..=40).collect::<Vec<_>>());
    assert!(cp.journal.iter().all(|e| e.is_done() && e.result.is_some()));
    let mut targets: Vec<&str> = cp.journal.iter().map(|e| e.target.as_str()).collect();
    targets.sort();
    targets.dedup();
    assert_eq!(targets.len(), 40);
}

#[tokio::test]
async fn actions_and_gates_can_be_unit_tested_with_standalone_contexts() {
    let f = Fakes::new();
    let sink = Arc::new(MemorySink::new());
    let events = Emitter::to_sink("r", sink.clone());
    // A resumed action sees its in-flight entry and finishes it without a second intent.
    let prior = vec![JournalEntry {
        seq: 7,
        step: "a".into(),
        phase: Phase::Forward,
        attempt: 1,
        kind: "effect".into(),
        target: "a".into(),
        details: json!({}),
        status: EntryStatus::Intent,
        result: None,
        recorded_at: chrono::Utc::now(),
        done_at: None,
    }];
    let ctx = ActionCtx::standalone("a", Default::default(), prior, events.for_step("a"));
    assert!(ctx.resumed);
    let out = f.effect.run(&ctx).await.unwrap();
    assert!(matches!(out, ActionOutcome::Done { .. }));
    assert_eq!(f.world.count("a"), 1);
    let entries = ctx.journal.all();
    assert_eq!(entries.len(), 1);
    assert!(entries[0].is_done());

    let mut gctx = GateCtx::standalone(
        "a",
        "scripted",
        Default::default(),
        Default::default(),
        events,
    );
    assert_eq!(f.gate.check(&mut gctx).await.unwrap(), GateStatus::passed());
}

/// Reads its input `n` as a count, as the canary's restart-back reads `parallelism`.
struct Counted(Arc<Mutex<Vec<usize>>>);

#[async_trait]
impl Action for Counted {
    async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
        let n: usize = ctx.input("n")?;
        self.0.lock().unwrap().push(n);
        Ok(ActionOutcome::done(Outputs::new()))
    }
}

#[tokio::test(start_paused = true)]
async fn out_of_range_param_in_a_checkpoint_does_not_make_the_rollback_impossible() {
    let yaml = r#"apiVersion: asm-canary.runbook/v1
name: counted
params:
  par: { type: integer, default: 4, min: 1, max: 10 }
steps:
  - id: a
    action: effect
  - id: b
    action: effect
    on_failure: halt
rollback:
  - id: back
    action: counted
    inputs: { n: "${params.par}" }
"#;
    let (f, _d, state, ev) = setup(yaml);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let registry = f.registry().action("counted", Counted(seen.clone()));
    let exec = || {
        let rb = Runbook::parse(yaml, "test.yaml", &registry).expect("runbook loads");
        Executor::new(rb, registry.clone(), FileStore::new(&state))
            .with_events(ev.clone())
            .with_clock(fixed_clock())
    };
    f.effect.fail_step("b", "b is unhappy");
    let r = exec().run(request()).await.unwrap();
    assert_eq!(r.outcome, Outcome::Paused);
    // An edited (or older) checkpoint: a value the runbook refuses now.
    let mut cp: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    cp["params"]["par"] = json!(-1);
    std::fs::write(&state, serde_json::to_vec_pretty(&cp).unwrap()).unwrap();
    let r = exec().rollback(ResumeOptions::default()).await.unwrap();
    assert_eq!(r.outcome, Outcome::RolledBack, "{r:?}");
    assert_eq!(
        *seen.lock().unwrap(),
        vec![4],
        "the runbook's default is used"
    );
    let warned = ev.events().iter().any(|e| {
        matches!(e, Event::Message { text, .. } if text.contains("param \"par\" is unusable") && text.contains("1..=10"))
    });
    assert!(warned, "{:?}", names(&ev.events()));
}
