//! What happens after a forward step fails: the FailureDecider (rollback, retry, halt) and the
//! actions' veto on a rollback (`may_roll_back`).

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use asm_canary_engine::*;
use async_trait::async_trait;
use common::*;
use serde_json::json;

/// Answers from a script (the last answer repeats) and records every question.
#[derive(Clone)]
struct Scripted {
    answers: Arc<Mutex<VecDeque<FailureDecision>>>,
    asked: Arc<Mutex<Vec<FailureRequest>>>,
    /// Runs on each question (e.g. heal the step, or cancel the run).
    on_ask: Arc<dyn Fn(&FailureRequest) + Send + Sync>,
}

impl Scripted {
    fn new(answers: &[FailureDecision]) -> Self {
        Scripted {
            answers: Arc::new(Mutex::new(answers.iter().copied().collect())),
            asked: Arc::default(),
            on_ask: Arc::new(|_| {}),
        }
    }
    fn on_ask(mut self, f: impl Fn(&FailureRequest) + Send + Sync + 'static) -> Self {
        self.on_ask = Arc::new(f);
        self
    }
    fn asked(&self) -> Vec<FailureRequest> {
        self.asked.lock().unwrap().clone()
    }
}

#[async_trait]
impl FailureDecider for Scripted {
    async fn decide(&self, request: &FailureRequest) -> FailureDecision {
        self.asked.lock().unwrap().push(request.clone());
        (self.on_ask)(request);
        let mut a = self.answers.lock().unwrap();
        if a.len() > 1 {
            a.pop_front().unwrap()
        } else {
            *a.front().expect("an answer")
        }
    }
}

/// A decider that cancels the run when asked and never answers (Ctrl-C at the question).
struct CancelWhenAsked(CancellationToken, Arc<Mutex<u32>>);

#[async_trait]
impl FailureDecider for CancelWhenAsked {
    async fn decide(&self, _request: &FailureRequest) -> FailureDecision {
        *self.1.lock().unwrap() += 1;
        self.0.cancel();
        std::future::pending().await
    }
}

fn step_failed(events: &[Event], step: &str) -> Vec<Option<String>> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::StepFailed {
                step: s,
                on_failure,
                ..
            } if s == step => Some(on_failure.clone()),
            _ => None,
        })
        .collect()
}

fn setup() -> (
    Fakes,
    tempfile::TempDir,
    std::path::PathBuf,
    Arc<MemorySink>,
) {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("run.json");
    (Fakes::new(), dir, state, Arc::new(MemorySink::new()))
}

use FailureDecision::*;

#[tokio::test(start_paused = true)]
async fn retry_runs_the_failed_step_again_in_the_same_run_and_completes() {
    let yaml = three_steps("rollback", false);
    let (f, _d, state, ev) = setup();
    f.effect.fail_step("b", "b is unhappy");
    let effect = f.effect.clone();
    let decider = Scripted::new(&[Retry]).on_ask(move |_| effect.heal("b"));
    let r = executor(&yaml, &f, &state, &ev)
        .with_failure_decider(Arc::new(decider.clone()))
        .run(request())
        .await
        .unwrap();
    assert_eq!((r.outcome, r.exit_code()), (Outcome::Completed, 0));
    assert_eq!(
        decider.asked(),
        [FailureRequest {
            run_id: "run-1".into(),
            target: request().target,
            step: "b".into(),
            error: "b is unhappy".into(),
            attempt: 1,
            policy: OnFailure::Rollback,
        }]
    );
    assert_eq!(f.effect.calls("b"), 2, "the step ran twice");
    assert_eq!(f.world.count("b-prod"), 1);
    assert_eq!(f.world.count("undo:a"), 0, "nothing rolled back");
    let cp = load(&state);
    assert_eq!(cp.state, RunState::Completed);
    let b = cp.step("b").unwrap();
    assert_eq!(
        (b.attempts, b.status, b.error.as_deref()),
        (2, StepStatus::Succeeded, None)
    );
    assert_eq!(cp.failed_step, None);
    let events = ev.events();
    assert_eq!(step_failed(&events, "b"), [Some("retry".to_string())]);
    let n = names(&events);
    let tail: Vec<&str> = n
        .iter()
        .map(String::as_str)
        .skip_while(|s| *s != "step_failed:b")
        .take(3)
        .collect();
    assert_eq!(
        tail,
        ["step_failed:b", "step_started:b", "action_finished:b"]
    );
    assert!(events.contains(&Event::StepStarted {
        step: "b".into(),
        phase: Phase::Forward,
        attempt: 2,
        description: None
    }));
    assert!(!n.iter().any(|e| e.starts_with("rollback")), "{n:?}");
}

#[tokio::test(start_paused = true)]
async fn a_retried_gate_failure_observes_first_and_waits_anew() {
    let yaml = three_steps("rollback", false);
    let (f, _d, state, ev) = setup();
    f.gate.set(
        "b",
        vec![GateStatus::failed("pods crashloop"), GateStatus::passed()],
    );
    let decider = Scripted::new(&[Retry]);
    let r = executor(&yaml, &f, &state, &ev)
        .with_failure_decider(Arc::new(decider.clone()))
        .run(request())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Completed);
    assert_eq!(
        decider.asked()[0].error,
        "gate \"scripted\" failed: pods crashloop"
    );
    assert_eq!(f.gate.checks("b"), 2, "the gate waited again");
    assert_eq!(f.effect.calls("b"), 2, "the action ran again…");
    assert_eq!(f.world.count("b-prod"), 1, "…and observed its effect made");
    let b = load(&state).step("b").unwrap().clone();
    assert_eq!((b.attempts, b.already_done), (2, true));
    let gates: Vec<_> = names(&ev.events())
        .into_iter()
        .filter(|e| e == "gate_started:b")
        .collect();
    assert_eq!(gates.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_step_that_fails_again_is_asked_about_again() {
    let yaml = three_steps("rollback", false);
    let (f, _d, state, ev) = setup();
    f.effect.fail_step("c", "still broken");
    let decider = Scripted::new(&[Retry, Retry, Rollback]);
    let r = executor(&yaml, &f, &state, &ev)
        .with_failure_decider(Arc::new(decider.clone()))
        .run(request())
        .await
        .unwrap();
    assert_eq!((r.outcome, r.exit_code()), (Outcome::RolledBack, 3));
    let attempts: Vec<u32> = decider.asked().iter().map(|q| q.attempt).collect();
    assert_eq!(attempts, [1, 2, 3]);
    assert_eq!(f.effect.calls("c"), 3);
    assert_eq!(load(&state).step("c").unwrap().attempts, 3);
    assert_eq!(
        step_failed(&ev.events(), "c"),
        [
            Some("retry".into()),
            Some("retry".into()),
            Some("rollback".into())
        ]
    );
    assert_eq!(f.world.count("undo:a"), 1);
}

#[tokio::test(start_paused = true)]
async fn halt_decided_on_a_rollback_step_pauses_resumably() {
    let yaml = three_steps("rollback", false);
    let (f, _d, state, ev) = setup();
    f.effect.fail_step("c", "boom on c");
    let r = executor(&yaml, &f, &state, &ev)
        .with_failure_decider(Arc::new(Scripted::new(&[Halt])))
        .run(request())
        .await
        .unwrap();
    assert_eq!((r.outcome, r.exit_code()), (Outcome::Paused, 4));
    assert_eq!(
        r.reason.as_deref(),
        Some("step \"c\" failed: boom on c; halted — fix the cause and resume, or roll back")
    );
    assert_eq!(r.failed_step.as_deref(), Some("c"));
    assert_eq!(f.world.count("undo:a"), 0, "halt does not roll back");
    assert_eq!(step_failed(&ev.events(), "c"), [Some("halt".into())]);
    let cp = load(&state);
    assert_eq!(cp.state, RunState::Paused);
    assert_eq!(cp.step("c").unwrap().status, StepStatus::Failed);

    // Resumed unattended (the runbook's policy), the halted step is retried, not rolled back.
    f.effect.heal("c");
    let ev2 = Arc::new(MemorySink::new());
    let r = executor(&yaml, &f, &state, &ev2)
        .resume(ResumeOptions::default())
        .await
        .unwrap();
    assert_eq!((r.outcome, r.exit_code()), (Outcome::Completed, 0));
    assert_eq!(f.effect.calls("c"), 2);
    assert_eq!(load(&state).step("c").unwrap().attempts, 2);
    assert_eq!(f.world.count("undo:a"), 0);
}

#[tokio::test(start_paused = true)]
async fn rollback_decided_on_a_halt_step_is_the_failures_rollback() {
    let yaml = three_steps("halt", false);
    let (f, _d, state, ev) = setup();
    f.effect.fail_step("b", "b is unhappy");
    let decider = Scripted::new(&[Rollback]);
    let r = executor(&yaml, &f, &state, &ev)
        .with_failure_decider(Arc::new(decider.clone()))
        .run(request())
        .await
        .unwrap();
    assert_eq!((r.outcome, r.exit_code()), (Outcome::RolledBack, 3));
    assert!(!r.rollback_requested);
    assert_eq!(r.failed_step.as_deref(), Some("b"));
    assert_eq!(r.reason.as_deref(), Some("step \"b\" failed: b is unhappy"));
    assert_eq!(decider.asked()[0].policy, OnFailure::Halt);
    assert_eq!(f.world.count("undo:a"), 1);
    assert_eq!(step_failed(&ev.events(), "b"), [Some("rollback".into())]);
    match ev.events().last().unwrap() {
        Event::RunFinished {
            outcome, exit_code, ..
        } => assert_eq!((*outcome, *exit_code), (Outcome::RolledBack, 3)),
        other => panic!("{other:?}"),
    }
    assert_eq!(load(&state).state, RunState::RolledBack);
}

#[tokio::test(start_paused = true)]
async fn the_decider_is_not_asked_about_an_interruption() {
    let yaml = three_steps("rollback", false);
    let (f, _d, state, ev) = setup();
    let token = CancellationToken::new();
    f.effect.interrupt_at("b", Point::AfterIntent, &token);
    let decider = Scripted::new(&[Rollback]);
    let r = executor(&yaml, &f, &state, &ev)
        .with_cancellation(token)
        .with_failure_decider(Arc::new(decider.clone()))
        .run(request())
        .await
        .unwrap();
    assert_eq!((r.outcome, r.exit_code()), (Outcome::Paused, 4));
    assert!(decider.asked().is_empty());
    assert!(step_failed(&ev.events(), "b").is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_decider_is_not_asked_about_a_failed_rollback_step() {
    let yaml = three_steps("rollback", false);
    let (f, _d, state, ev) = setup();
    f.effect.fail_step("c", "boom on c");
    f.gate
        .set("undo-all", vec![GateStatus::failed("still on the canary")]);
    let decider = Scripted::new(&[Rollback]);
    let r = executor(&yaml, &f, &state, &ev)
        .with_failure_decider(Arc::new(decider.clone()))
        .run(request())
        .await
        .unwrap();
    assert_eq!((r.outcome, r.exit_code()), (Outcome::Failed, 6));
    let asked: Vec<String> = decider.asked().into_iter().map(|q| q.step).collect();
    assert_eq!(asked, ["c"], "asked about the forward step only");
    assert_eq!(step_failed(&ev.events(), "undo-all"), [None]);
}

#[tokio::test(start_paused = true)]
async fn interrupted_while_deciding_pauses_and_resume_asks_again() {
    let yaml = three_steps("rollback", false);
    let (f, _d, state, ev) = setup();
    f.effect.fail_step("c", "boom on c");
    let token = CancellationToken::new();
    let asked = Arc::new(Mutex::new(0));
    let r = executor(&yaml, &f, &state, &ev)
        .with_cancellation(token.clone())
        .with_failure_decider(Arc::new(CancelWhenAsked(token, asked.clone())))
        .run(request())
        .await
        .unwrap();
    assert_eq!((r.outcome, r.exit_code()), (Outcome::Paused, 4));
    assert_eq!(*asked.lock().unwrap(), 1);
    assert!(
        r.reason
            .as_deref()
            .unwrap()
            .contains("interrupted before deciding"),
        "{r:?}"
    );
    assert_eq!(
        step_failed(&ev.events(), "c"),
        [None],
        "failed, nothing decided"
    );
    let cp = load(&state);
    assert_eq!(
        (cp.state, cp.failed_step.as_deref()),
        (RunState::Paused, None)
    );
    assert_eq!(f.world.count("undo:a"), 0);

    // Resumed unattended: the runbook's policy decides now (rollback), without a retry.
    let decider = Scripted::new(&[Rollback]);
    let r = executor(&yaml, &f, &state, &ev)
        .with_failure_decider(Arc::new(decider.clone()))
        .resume(ResumeOptions::default())
        .await
        .unwrap();
    assert_eq!((r.outcome, r.exit_code()), (Outcome::RolledBack, 3));
    assert_eq!(decider.asked().len(), 1);
    assert_eq!(decider.asked()[0].step, "c");
    assert_eq!(f.effect.calls("c"), 1, "the failed step is not retried");
    assert_eq!(f.world.count("undo:a"), 1);
}

/// Makes a point-of-no-return side effect (journaled `put`), and refuses a rollback once its
/// journal shows the `put` (done or in flight).
#[derive(Clone, Default)]
struct PointOfNoReturn {
    asked: Arc<Mutex<Vec<(String, u32, bool)>>>,
}

#[async_trait]
impl Action for PointOfNoReturn {
    async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
        let id = ctx.journal.intent("put", "cluster", json!({})).await?;
        ctx.journal.done(id, None).await?;
        Ok(ActionOutcome::done(Outputs::new()))
    }

    async fn may_roll_back(&self, ctx: &ActionCtx) -> Result<(), StepError> {
        self.asked
            .lock()
            .unwrap()
            .push((ctx.step.clone(), ctx.attempt, ctx.resumed));
        assert!(
            ctx.journal.intent("x", "y", json!({})).await.is_err(),
            "the journal is read-only here"
        );
        match ctx.journal.find("put", "cluster") {
            Some(e) => Err(StepError::msg(format!(
                "step {:?} sent its PUT (journal entry {}); finish the run instead",
                ctx.step, e.seq
            ))),
            None => Ok(()),
        }
    }
}

const GUARDED: &str = r#"apiVersion: asm-canary.runbook/v1
name: guarded
steps:
  - id: a
    action: effect
  - id: finish
    action: point
    approval: required
  - id: cleanup
    action: effect
    approval: required
rollback:
  - id: undo-all
    action: undo
"#;

fn guarded(
    f: &Fakes,
    point: &PointOfNoReturn,
    state: &std::path::Path,
) -> (Executor, Arc<MemorySink>) {
    let reg = f.registry().action("point", point.clone());
    let rb = Runbook::parse(GUARDED, "guarded.yaml", &reg).unwrap();
    let ev = Arc::new(MemorySink::new());
    let ex = Executor::new(rb, reg, FileStore::new(state))
        .with_events(ev.clone())
        .with_clock(fixed_clock());
    (ex, ev)
}

#[tokio::test(start_paused = true)]
async fn rollback_is_refused_once_a_step_says_it_cannot_be_undone() {
    let (f, _d, state, _) = setup();
    let point = PointOfNoReturn::default();
    let (ex, _) = guarded(&f, &point, &state);
    let ex = ex.with_approver(Arc::new(PreApproved::new(["finish"])));
    let r = ex.run(request()).await.unwrap();
    assert_eq!(r.outcome, Outcome::Paused, "awaits approval of cleanup");
    let before = std::fs::read(&state).unwrap();

    let (ex, ev) = guarded(&f, &point, &state);
    let e = ex.rollback(ResumeOptions::default()).await.unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert_eq!(
        e.to_string(),
        "cannot roll back: step \"finish\" sent its PUT (journal entry 2); finish the run instead"
    );
    assert!(matches!(
        &e,
        EngineError::RollbackRefused { run_id, step, .. } if run_id == "run-1" && step == "finish"
    ));
    assert!(
        std::error::Error::source(&e).is_some(),
        "the refusal is the source"
    );
    assert_eq!(
        std::fs::read(&state).unwrap(),
        before,
        "checkpoint untouched"
    );
    assert!(ev.events().is_empty(), "no run started");
    assert_eq!(f.world.count("undo:a"), 0);
    // Asked of the started steps only: a (default: allowed), finish; cleanup awaits approval.
    let asked = point.asked.lock().unwrap().clone();
    assert_eq!(asked, [("finish".to_string(), 1, true)]);
}

#[tokio::test(start_paused = true)]
async fn rollback_before_the_point_of_no_return_goes_ahead() {
    let (f, _d, state, _) = setup();
    let point = PointOfNoReturn::default();
    let (ex, _) = guarded(&f, &point, &state);
    let r = ex.run(request()).await.unwrap();
    assert_eq!(r.outcome, Outcome::Paused, "awaits approval of finish");
    let (ex, _) = guarded(&f, &point, &state);
    let r = ex.rollback(ResumeOptions::default()).await.unwrap();
    assert_eq!((r.outcome, r.exit_code()), (Outcome::RolledBack, 0));
    assert_eq!(f.world.count("undo:a"), 1);
    // `finish` was awaiting approval (started) and was asked; its journal had no PUT.
    assert_eq!(point.asked.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failure_past_the_point_of_no_return_halts_instead_of_rolling_back() {
    let (f, _d, state, _) = setup();
    f.effect.fail_step("cleanup", "cleanup failed");
    let point = PointOfNoReturn::default();
    let (ex, ev) = guarded(&f, &point, &state);
    let r = ex
        .with_approver(Arc::new(ApproveAll))
        .run(request())
        .await
        .unwrap();
    assert_eq!((r.outcome, r.exit_code()), (Outcome::Paused, 4));
    assert_eq!(
        r.reason.as_deref(),
        Some(
            "step \"cleanup\" failed: cleanup failed; halted because cannot roll back: step \"finish\" sent its PUT (journal entry 2); finish the run instead — fix the cause and resume"
        )
    );
    assert_eq!(step_failed(&ev.events(), "cleanup"), [Some("halt".into())]);
    assert_eq!(f.world.count("undo:a"), 0, "nothing undone");
    let cp = load(&state);
    assert_eq!(
        (cp.state, cp.failed_step.as_deref()),
        (RunState::Paused, Some("cleanup"))
    );
}

#[tokio::test(start_paused = true)]
async fn a_refusing_step_neither_rolls_back_nor_asks_and_exits_2_then_resumes() {
    let yaml = three_steps("rollback", false);
    let (f, _d, state, ev) = setup();
    f.effect
        .fail_step("b", "refuse: b's work was done by someone else");
    let decider = Scripted::new(&[Rollback]);
    let r = executor(&yaml, &f, &state, &ev)
        .with_failure_decider(Arc::new(decider.clone()))
        .run(request())
        .await
        .unwrap();
    assert_eq!((r.outcome, r.exit_code()), (Outcome::Refused, 2));
    assert!(
        decider.asked().is_empty(),
        "a refusal is not a failure to decide about"
    );
    assert_eq!(f.world.count("undo:a"), 0, "nothing rolled back");
    assert_eq!(step_failed(&ev.events(), "b"), [Some("halt".to_string())]);
    let cp = load(&state);
    assert_eq!(cp.state, RunState::Paused);
    assert_eq!(cp.failed_step.as_deref(), Some("b"));
    assert!(
        cp.reason
            .as_deref()
            .unwrap_or_default()
            .contains("someone else"),
        "{:?}",
        cp.reason
    );
    f.effect.heal("b");
    let r = executor(&yaml, &f, &state, &ev)
        .resume(ResumeOptions::default())
        .await
        .unwrap();
    assert_eq!((r.outcome, r.exit_code()), (Outcome::Completed, 0));
}

#[tokio::test(start_paused = true)]
async fn approve_before_asks_a_later_approval_before_the_earlier_step_changes_anything() {
    let yaml = three_steps("rollback", true).replacen(
        "    approval: required\n",
        "    approval: required\n    approve_before: b\n",
        1,
    );
    let (f, _d, state, ev) = setup();
    let r = executor(&yaml, &f, &state, &ev)
        .run(request())
        .await
        .unwrap();
    assert_eq!((r.outcome, r.exit_code()), (Outcome::Paused, 4));
    assert_eq!(f.effect.calls("b"), 0, "b waits for c's approval");
    assert_eq!(f.effect.calls("a"), 1);
    let cp = load(&state);
    assert!(
        cp.reason
            .as_deref()
            .unwrap_or_default()
            .contains("--approve c"),
        "{:?}",
        cp.reason
    );

    let r = executor(&yaml, &f, &state, &ev)
        .with_approver(Arc::new(PreApproved::new(["c".to_string()])))
        .resume(ResumeOptions::default())
        .await
        .unwrap();
    assert_eq!((r.outcome, r.exit_code()), (Outcome::Completed, 0));
    let asked = ev
        .events()
        .iter()
        .filter(|e| matches!(e, Event::ApprovalNeeded { step, .. } if step == "c"))
        .count();
    assert_eq!(
        asked, 2,
        "asked once per run before b, never again at c itself"
    );
    assert_eq!(load(&state).approvals.len(), 1);
}
