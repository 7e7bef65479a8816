//! The terminal renderer: a line per step, a bar for gates that report a known total, a spinner
//! otherwise (indicatif, on stderr). When stderr is not a terminal (CI logs, `--output json`) it
//! writes the same sentences as plain lines instead.
//!
//! [`TerminalApprover`] asks for approvals at the terminal, and [`TerminalDecider`] what to do
//! when a step fails, pausing the bars while they ask.

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use asm_canary_engine::{
    ApprovalDecision, ApprovalRequest, Approver, Event, EventRecord, EventSink, FailureDecider,
    FailureDecision, FailureRequest, OnFailure, Progress,
};
use async_trait::async_trait;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::text;

/// Where the terminal renderer draws.
enum Target {
    Bars {
        multi: MultiProgress,
        bars: Mutex<HashMap<String, ProgressBar>>,
    },
    Plain(Mutex<Plain>),
}

/// Plain lines, with counted progress thinned out: a wave of two thousand workloads is not
/// two thousand lines in a CI log.
struct Plain {
    out: Box<dyn Write + Send>,
    /// Per step: when its last counted progress line was written, and its tenth then.
    progress: HashMap<String, (Instant, u64)>,
}

/// Counted progress with at least this many items is thinned out.
const THIN_FROM: u64 = 20;
/// A thinned-out progress line still appears at least this often.
const THIN_EVERY: Duration = Duration::from_secs(5);

impl Plain {
    /// Whether a progress line is worth a line: the first and the last, each tenth of the
    /// way, and at least every [`THIN_EVERY`].
    fn wants(&mut self, event: &Event) -> bool {
        let Event::StepProgress {
            step,
            progress: Some(p),
            ..
        } = event
        else {
            return true;
        };
        let Some(total) = p.total.filter(|t| *t >= THIN_FROM) else {
            return true;
        };
        let tenth = p.done.min(total) * 10 / total;
        let now = Instant::now();
        let show = match self.progress.get(step) {
            None => true,
            Some((at, last_tenth)) => {
                p.done >= total || tenth > *last_tenth || now.duration_since(*at) >= THIN_EVERY
            }
        };
        if show {
            self.progress.insert(step.clone(), (now, tenth));
        }
        show
    }
}

/// Renders events for a person.
pub struct Terminal {
    target: Target,
    state_hint: Option<String>,
    /// A person answers prompts here: the approval prompt itself says what needs approval,
    /// so the `approval_needed` line is not drawn.
    prompting: bool,
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {wide_msg} {elapsed:.dim}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
        .tick_strings(&["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏", "·"])
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {wide_msg} [{bar:30}] {pos}/{len} {elapsed:.dim}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Terminal {
    /// Bars on stderr if it is a terminal, plain lines otherwise.
    pub fn stderr(state_hint: Option<String>) -> Self {
        if std::io::stderr().is_terminal() {
            Terminal::bars(ProgressDrawTarget::stderr(), state_hint)
        } else {
            Terminal::plain_stderr(state_hint)
        }
    }

    /// Bars drawn to `target` (tests use a hidden target).
    pub fn bars(target: ProgressDrawTarget, state_hint: Option<String>) -> Self {
        Terminal {
            target: Target::Bars {
                multi: MultiProgress::with_draw_target(target),
                bars: Mutex::new(HashMap::new()),
            },
            state_hint,
            prompting: false,
        }
    }

    /// Plain lines on stderr (used next to JSON Lines).
    pub fn plain_stderr(state_hint: Option<String>) -> Self {
        Terminal::plain(Box::new(std::io::stderr()), state_hint)
    }

    /// Plain lines into any writer (tests, logs).
    pub fn plain(out: Box<dyn Write + Send>, state_hint: Option<String>) -> Self {
        Terminal {
            target: Target::Plain(Mutex::new(Plain {
                out,
                progress: HashMap::new(),
            })),
            state_hint,
            prompting: false,
        }
    }

    /// An approver that prompts on this terminal (pausing the bars while it asks).
    /// A person answers this terminal's prompts (guided mode).
    pub fn prompting(mut self) -> Self {
        self.prompting = true;
        self
    }

    /// The failure decider that asks at this terminal.
    pub fn decider(&self) -> TerminalDecider {
        TerminalDecider {
            multi: match &self.target {
                Target::Bars { multi, .. } => Some(multi.clone()),
                Target::Plain(_) => None,
            },
            state_hint: self.state_hint.clone(),
        }
    }

    pub fn approver(&self) -> TerminalApprover {
        TerminalApprover {
            multi: match &self.target {
                Target::Bars { multi, .. } => Some(multi.clone()),
                Target::Plain(_) => None,
            },
        }
    }

    fn bars_event(
        &self,
        multi: &MultiProgress,
        bars: &Mutex<HashMap<String, ProgressBar>>,
        event: &Event,
    ) {
        let hint = self.state_hint.as_deref();
        let Ok(mut bars) = bars.lock() else { return };
        match event {
            Event::StepStarted { step, .. } => {
                let line = text::line(event, hint).unwrap_or_else(|| step.clone());
                start_step(multi, &mut bars, step, line);
            }
            Event::StepProgress {
                step,
                detail,
                progress: Some(p),
            } if p.total.is_some() && wave_of(detail).is_some() => {
                wave_progress(multi, &mut bars, step, detail, *p);
            }
            Event::GateStarted { step, .. }
            | Event::GateProgress { step, .. }
            | Event::StepProgress { step, .. } => match bars.get(step) {
                Some(pb) => show_progress(pb, event, hint),
                None => {
                    let _ = multi.println(text::line(event, hint).unwrap_or_default());
                }
            },
            Event::StepSucceeded { step, .. }
            | Event::StepFailed { step, .. }
            | Event::StepSkipped { step, .. }
            | Event::StepInterrupted { step, .. } => {
                let line = text::line(event, hint).unwrap_or_default();
                finish_step(multi, &mut bars, step, line);
            }
            Event::RunFinished { .. } => {
                for (_, pb) in bars.drain() {
                    pb.abandon();
                }
                if let Some(line) = text::line(event, hint) {
                    let _ = multi.println(line);
                }
            }
            other => {
                if let Some(line) = text::line(other, hint) {
                    let _ = multi.println(line);
                }
            }
        }
    }
}

/// A spinner for a step that starts (replacing one left from an earlier attempt).
fn start_step(
    multi: &MultiProgress,
    bars: &mut HashMap<String, ProgressBar>,
    step: &str,
    line: String,
) {
    let pb = multi.add(ProgressBar::new_spinner());
    pb.set_style(spinner_style());
    pb.set_message(line);
    pb.enable_steady_tick(Duration::from_millis(120));
    if let Some(old) = bars.insert(step.to_string(), pb) {
        old.finish_and_clear();
    }
}

/// A bar per wave under the step's line: pods/workloads moved out of the total.
fn wave_progress(
    multi: &MultiProgress,
    bars: &mut HashMap<String, ProgressBar>,
    step: &str,
    detail: &str,
    p: Progress,
) {
    let key = format!("{step}#{}", wave_of(detail).unwrap_or_default());
    let pb = bars.entry(key).or_insert_with(|| {
        let pb = multi.add(ProgressBar::new(p.total.unwrap_or(0)));
        pb.set_style(bar_style());
        pb.enable_steady_tick(Duration::from_millis(120));
        pb
    });
    pb.set_length(p.total.unwrap_or(0));
    pb.set_position(p.done);
    pb.set_message(format!("  {detail}"));
}

/// A step's bar follows its gate or action: counted progress as a bar, anything else as a
/// spinner, with the event's sentence as its message.
fn show_progress(pb: &ProgressBar, event: &Event, hint: Option<&str>) {
    let p = match event {
        Event::GateProgress { progress, .. } | Event::StepProgress { progress, .. } => *progress,
        _ => None,
    };
    if let Some(p) = p
        && let Some(total) = p.total
    {
        pb.set_style(bar_style());
        pb.set_length(total);
        pb.set_position(p.done);
    } else {
        pb.set_style(spinner_style());
    }
    pb.set_message(
        text::line(event, hint)
            .map(|l| l.trim_start().to_string())
            .unwrap_or_default(),
    );
}

/// A step ended: its wave bars go, and its line, final state and how long it took, goes into
/// the scrollback above the live bars.
fn finish_step(
    multi: &MultiProgress,
    bars: &mut HashMap<String, ProgressBar>,
    step: &str,
    line: String,
) {
    let prefix = format!("{step}#");
    let waves: Vec<String> = bars
        .keys()
        .filter(|k| k.starts_with(&prefix))
        .cloned()
        .collect();
    for k in waves {
        if let Some(pb) = bars.remove(&k) {
            pb.finish_and_clear();
            multi.remove(&pb);
        }
    }
    match bars.remove(step) {
        Some(pb) => {
            let took = pb.elapsed();
            pb.finish_and_clear();
            multi.remove(&pb);
            let _ = multi.println(format!(
                "{line} ({})",
                asm_canary_engine::duration::format_duration(Duration::from_millis(
                    took.as_millis() as u64
                ))
            ));
        }
        None => {
            let _ = multi.println(line);
        }
    }
}

impl EventSink for Terminal {
    fn emit(&self, record: &EventRecord) {
        if self.prompting && matches!(record.event, Event::ApprovalNeeded { .. }) {
            return;
        }
        match &self.target {
            Target::Bars { multi, bars } => self.bars_event(multi, bars, &record.event),
            Target::Plain(plain) => {
                if let Some(line) = text::line(&record.event, self.state_hint.as_deref())
                    && let Ok(mut plain) = plain.lock()
                    && plain.wants(&record.event)
                {
                    let _ = writeln!(plain.out, "{line}");
                    let _ = plain.out.flush();
                }
            }
        }
    }
}

/// The wave a progress detail is about (`"wave 2/3: …"` → `"2/3"`).
fn wave_of(detail: &str) -> Option<&str> {
    let rest = detail.strip_prefix("wave ")?;
    let end = rest.find(':').unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Asks `Approve step …? [y/N]` on stderr and reads the answer from stdin. `y`/`yes` approves
/// (recorded as `terminal:$USER`); anything else denies; no terminal or end of input defers
/// (the run pauses, resumable with `--approve`).
#[derive(Clone, Default)]
pub struct TerminalApprover {
    multi: Option<MultiProgress>,
}

impl TerminalApprover {
    pub fn new() -> Self {
        Self::default()
    }
}

fn ask(request: &ApprovalRequest) -> ApprovalDecision {
    if !std::io::stdin().is_terminal() {
        return ApprovalDecision::Defer;
    }
    let mut err = std::io::stderr();
    let what = request
        .prompt
        .clone()
        .or_else(|| request.description.clone())
        .unwrap_or_default();
    let _ = write!(err, "? Approve step {:?}? {what} [y/N] ", request.step);
    let _ = err.flush();
    let mut answer = String::new();
    match std::io::stdin().lock().read_line(&mut answer) {
        Ok(0) | Err(_) => ApprovalDecision::Defer,
        Ok(_) => match answer.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" => ApprovalDecision::Approved {
                by: format!(
                    "terminal:{}",
                    approver_name(&crate::azure::auth::process_env, effective_user)
                ),
            },
            _ => ApprovalDecision::Denied {
                reason: "declined at the terminal".into(),
            },
        },
    }
}

/// Who answered at the terminal: `$USER`, else `$LOGNAME`, else the name the operating
/// system's user database gives the effective user (root in a container has no `$USER`),
/// else `uid:<n>` for a uid the database does not know. `env` and `user_db` are injected for
/// tests; `user_db` answers the effective uid and its name, if any.
pub fn approver_name(
    env: &dyn Fn(&str) -> Option<String>,
    user_db: impl FnOnce() -> (u32, Option<String>),
) -> String {
    if let Some(name) = env("USER").or_else(|| env("LOGNAME")) {
        return name;
    }
    match user_db() {
        (_, Some(name)) if !name.is_empty() => name,
        (uid, _) => format!("uid:{uid}"),
    }
}

/// The effective uid and its name in the user database (`getpwuid_r`, so NSS sources too).
#[cfg(unix)]
pub fn effective_user() -> (u32, Option<String>) {
    let uid = nix::unistd::Uid::effective();
    let name = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name);
    (uid.as_raw(), name)
}

#[cfg(not(unix))]
pub fn effective_user() -> (u32, Option<String>) {
    (0, None)
}

#[async_trait]
impl Approver for TerminalApprover {
    async fn decide(&self, request: &ApprovalRequest) -> ApprovalDecision {
        let request = request.clone();
        let multi = self.multi.clone();
        let answer = tokio::task::spawn_blocking(move || match multi {
            Some(m) => m.suspend(|| ask(&request)),
            None => ask(&request),
        })
        .await;
        answer.unwrap_or(ApprovalDecision::Defer)
    }
}

/// Asks the person at the terminal what to do when a step fails: `[r]ollback`, `re[t]ry`,
/// `[h]alt`, pausing the bars while it asks. Only steps whose runbook policy is `rollback` are
/// put to the person; a `halt` step halts as the runbook says. End of input, or no terminal on
/// stdin, halts: the run stays paused and nothing more changes.
pub struct TerminalDecider {
    multi: Option<MultiProgress>,
    /// How commands name the checkpoint (`--state FILE`), for the line after a halt.
    state_hint: Option<String>,
}

#[async_trait]
impl FailureDecider for TerminalDecider {
    async fn decide(&self, request: &FailureRequest) -> FailureDecision {
        if request.policy != OnFailure::Rollback {
            return request.policy.into();
        }
        let request = request.clone();
        let multi = self.multi.clone();
        let hint = self.state_hint.clone();
        let answer = tokio::task::spawn_blocking(move || {
            let choice = match multi {
                Some(m) => m.suspend(|| ask_after_failure(&request.step, &request.error)),
                None => ask_after_failure(&request.step, &request.error),
            };
            if choice == FailureDecision::Halt {
                let s = hint.as_deref().unwrap_or("--state FILE");
                crate::say!(
                    "halted: step {:?} failed and nothing more was changed (exit 4); retry it with: asm-canary resume {s}   or roll back with: asm-canary rollback {s}",
                    request.step
                );
            }
            choice
        })
        .await;
        answer.unwrap_or(FailureDecision::Halt)
    }
}

fn ask_after_failure(step: &str, error: &str) -> FailureDecision {
    if !std::io::stdin().is_terminal() {
        return FailureDecision::Halt;
    }
    let mut err = std::io::stderr();
    let _ = writeln!(err, "✘ step {step:?} failed: {error}");
    loop {
        let _ = write!(
            err,
            "? What now: [r]ollback to the source revision, re[t]ry step {step:?}, or [h]alt (resumable)? [r/t/h] "
        );
        let _ = err.flush();
        let mut answer = String::new();
        match std::io::stdin().lock().read_line(&mut answer) {
            Ok(0) | Err(_) => return FailureDecision::Halt,
            Ok(_) => match answer.trim().to_ascii_lowercase().as_str() {
                "r" | "rollback" => return FailureDecision::Rollback,
                "t" | "retry" => return FailureDecision::Retry,
                "h" | "halt" => return FailureDecision::Halt,
                other => {
                    let _ = writeln!(err, "  {other:?}: answer r, t or h");
                }
            },
        }
    }
}

/// A writer that appends into shared memory (tests of the plain renderer).
#[derive(Clone, Default)]
pub struct SharedBuf(pub Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SharedBuf {
    pub fn text(&self) -> String {
        self.0
            .lock()
            .map(|v| String::from_utf8_lossy(&v).to_string())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With no `$USER` (root in a container) a guided approval was recorded as
    /// `terminal:unknown`; the name now comes from the user database, and a uid it does not
    /// know is recorded as `uid:<n>`.
    #[test]
    fn approval_without_user_env_names_the_os_user() {
        let none = |_: &str| None;
        assert_eq!(approver_name(&none, || (0, Some("root".into()))), "root");
        assert_eq!(approver_name(&none, || (4242, None)), "uid:4242");
        assert_eq!(
            approver_name(&none, || (4242, Some(String::new()))),
            "uid:4242"
        );
        let env = |k: &str| (k == "LOGNAME").then(|| "alice".to_string());
        assert_eq!(approver_name(&env, || unreachable!()), "alice");
        let env = |k: &str| (k == "USER").then(|| "bob".to_string());
        assert_eq!(approver_name(&env, || unreachable!()), "bob");
        // The real database knows the user these tests run as.
        let (uid, name) = effective_user();
        let name = name.unwrap_or_else(|| panic!("uid {uid} has no name in the user database"));
        assert_eq!(approver_name(&none, effective_user), name);
        assert_ne!(name, "unknown");
    }
    use asm_canary_engine::{EVENTS_SCHEMA, Level, Outcome, Phase, Progress};
    use serde_json::json;

    fn rec(event: Event) -> EventRecord {
        EventRecord {
            schema: EVENTS_SCHEMA.into(),
            ts: chrono::DateTime::UNIX_EPOCH,
            run_id: "r1".into(),
            event,
        }
    }

    fn summary() -> serde_json::Map<String, serde_json::Value> {
        json!({"source": "asm-1-27", "target": "asm-1-28"})
            .as_object()
            .cloned()
            .unwrap_or_default()
    }

    fn s(x: &str) -> String {
        x.to_string()
    }

    fn run_started() -> Event {
        Event::RunStarted {
            runbook: s("asm-canary-upgrade"),
            runbook_sha256: s("abc"),
            target: s(
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/aks-sim",
            ),
            resumed: false,
            params: Default::default(),
            steps: vec![s("start"), s("restart")],
        }
    }

    /// A step that changes something (only the intent is a line) and passes its gate.
    fn start_succeeds() -> Vec<Event> {
        vec![
            Event::StepStarted {
                step: s("start"),
                phase: Phase::Forward,
                attempt: 1,
                description: Some(s("add the target revision")),
            },
            Event::SideEffect {
                step: s("start"),
                kind: s("arm-put-revisions"),
                target: s("asm-1-27,asm-1-28"),
                done: false,
            },
            Event::SideEffect {
                step: s("start"),
                kind: s("arm-put-revisions"),
                target: s("asm-1-27,asm-1-28"),
                done: true,
            },
            Event::ActionFinished {
                step: s("start"),
                phase: Phase::Forward,
                already_done: false,
                detail: None,
            },
            Event::GateStarted {
                step: s("start"),
                check: s("control-planes-ready"),
                timeout_ms: 900_000,
                stable_for_ms: 0,
            },
            Event::GateProgress {
                step: s("start"),
                check: s("control-planes-ready"),
                detail: s("istiod-asm-1-28 1/2 available"),
                progress: Some(Progress::of(1, 2)),
            },
            Event::GatePassed {
                step: s("start"),
                check: s("control-planes-ready"),
                detail: None,
            },
            Event::StepSucceeded {
                step: s("start"),
                phase: Phase::Forward,
                already_done: false,
            },
        ]
    }

    /// A second attempt whose action was already done, with a warning, and whose gate times out.
    fn restart_fails() -> Vec<Event> {
        vec![
            Event::StepStarted {
                step: s("restart"),
                phase: Phase::Forward,
                attempt: 2,
                description: None,
            },
            Event::ActionFinished {
                step: s("restart"),
                phase: Phase::Forward,
                already_done: true,
                detail: Some(s("12 workloads already on asm-1-28")),
            },
            Event::Message {
                step: Some(s("restart")),
                level: Level::Warn,
                text: s("namespace legacy uses istio-injection=enabled"),
            },
            Event::GateStarted {
                step: s("restart"),
                check: s("workloads-on-revision"),
                timeout_ms: 1_200_000,
                stable_for_ms: 30_000,
            },
            Event::GateFailed {
                step: s("restart"),
                check: s("workloads-on-revision"),
                reason: s("timed out after 20m: 3 pods in payments still run asm-1-27"),
                timed_out: true,
            },
            Event::StepFailed {
                step: s("restart"),
                phase: Phase::Forward,
                error: s(
                    "gate \"workloads-on-revision\" failed: timed out after 20m: 3 pods in payments still run asm-1-27",
                ),
                on_failure: Some(s("rollback")),
            },
        ]
    }

    /// The rollback after it, and the run's last line.
    fn rolled_back() -> Vec<Event> {
        vec![
            Event::RollbackStarted {
                reason: s("step \"restart\" failed"),
                failed_step: Some(s("restart")),
            },
            Event::StepSkipped {
                step: s("rollback-configmap"),
                phase: Phase::Rollback,
                reason: s("nothing to undo"),
            },
            Event::RollbackFinished {
                ok: true,
                error: None,
            },
            Event::RunFinished {
                outcome: Outcome::RolledBack,
                reason: Some(s("step \"restart\" failed")),
                exit_code: 3,
                summary: summary(),
            },
        ]
    }

    #[test]
    fn plain_lines_tell_the_story_of_a_rolled_back_run() {
        let buf = SharedBuf::default();
        let t = Terminal::plain(Box::new(buf.clone()), Some("--state run.json".into()));
        let story = [
            vec![run_started()],
            start_succeeds(),
            restart_fails(),
            rolled_back(),
        ];
        for e in story.into_iter().flatten() {
            t.emit(&rec(e));
        }
        insta::assert_snapshot!(buf.text());
    }

    #[test]
    fn final_sentences_for_each_outcome() {
        let s = |o: Outcome, code: u8, reason: Option<&str>| {
            text::line(
                &Event::RunFinished {
                    outcome: o,
                    reason: reason.map(str::to_string),
                    exit_code: code,
                    summary: summary(),
                },
                Some("--state run.json"),
            )
            .unwrap_or_default()
        };
        assert_eq!(
            s(Outcome::Completed, 0, None),
            "completed: asm-1-27 → asm-1-28"
        );
        assert_eq!(
            s(
                Outcome::Paused,
                4,
                Some(
                    "step \"complete\" awaits approval; resume with --approve complete to continue"
                )
            ),
            "paused: step \"complete\" awaits approval; resume with --approve complete to continue (exit 4); continue with: asm-canary resume --state run.json"
        );
        assert_eq!(
            s(
                Outcome::Failed,
                6,
                Some("rollback step \"rollback-remove-canary\" failed: x")
            ),
            "FAILED: rollback step \"rollback-remove-canary\" failed: x (exit 6); see: asm-canary status --state run.json"
        );
        assert_eq!(
            s(Outcome::RolledBack, 0, Some("rollback requested")),
            "rolled back to asm-1-27: rollback requested (exit 0)"
        );
        // a checkpoint kept in the cluster is named by its backend
        let paused = text::line(
            &Event::RunFinished {
                outcome: Outcome::Paused,
                reason: None,
                exit_code: 4,
                summary: summary(),
            },
            Some("--state-backend kubernetes"),
        )
        .unwrap_or_default();
        assert!(
            paused.ends_with("continue with: asm-canary resume --state-backend kubernetes"),
            "{paused}"
        );
    }

    #[test]
    fn bars_follow_steps_and_gates_and_are_finished_at_the_end() {
        let t = Terminal::bars(ProgressDrawTarget::hidden(), None);
        let s = |x: &str| x.to_string();
        let open = |t: &Terminal| match &t.target {
            Target::Bars { bars, .. } => bars.lock().map(|b| b.len()).unwrap_or(99),
            Target::Plain(_) => 99,
        };
        t.emit(&rec(Event::StepStarted {
            step: s("restart"),
            phase: Phase::Forward,
            attempt: 1,
            description: None,
        }));
        assert_eq!(open(&t), 1);
        t.emit(&rec(Event::GateProgress {
            step: s("restart"),
            check: s("w"),
            detail: s("3 of 7 rolled out"),
            progress: Some(Progress::of(3, 7)),
        }));
        if let Target::Bars { bars, .. } = &t.target {
            let b = bars.lock().unwrap();
            let pb = b.get("restart").unwrap();
            assert_eq!((pb.position(), pb.length()), (3, Some(7)));
        }
        t.emit(&rec(Event::GateProgress {
            step: s("restart"),
            check: s("w"),
            detail: s("waiting"),
            progress: None,
        }));
        t.emit(&rec(Event::StepSucceeded {
            step: s("restart"),
            phase: Phase::Forward,
            already_done: false,
        }));
        assert_eq!(open(&t), 0);
        t.emit(&rec(Event::StepStarted {
            step: s("verify"),
            phase: Phase::Forward,
            attempt: 1,
            description: None,
        }));
        t.emit(&rec(Event::RunFinished {
            outcome: Outcome::Paused,
            reason: None,
            exit_code: 4,
            summary: summary(),
        }));
        assert_eq!(open(&t), 0);
    }

    #[test]
    fn a_bar_per_wave_under_the_step_and_gone_when_the_step_ends() {
        let t = Terminal::bars(ProgressDrawTarget::hidden(), None);
        let s = |x: &str| x.to_string();
        let keys = |t: &Terminal| match &t.target {
            Target::Bars { bars, .. } => {
                let b = bars.lock().unwrap();
                let mut k: Vec<(String, (u64, Option<u64>))> = b
                    .iter()
                    .map(|(k, pb)| (k.clone(), (pb.position(), pb.length())))
                    .collect();
                k.sort();
                k
            }
            Target::Plain(_) => vec![],
        };
        t.emit(&rec(Event::StepStarted {
            step: s("restart"),
            phase: Phase::Forward,
            attempt: 1,
            description: None,
        }));
        for (detail, done, total) in [
            ("wave 1/2: 1/2 workloads rolled out", 1, 2),
            ("wave 1/2: 2/2 workloads rolled out", 2, 2),
            ("wave 2/2: 1/4 workloads rolled out", 1, 4),
        ] {
            t.emit(&rec(Event::StepProgress {
                step: s("restart"),
                detail: s(detail),
                progress: Some(Progress::of(done, total)),
            }));
        }
        let k = keys(&t);
        assert_eq!(
            k.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["restart", "restart#1/2", "restart#2/2"]
        );
        assert_eq!(k[1].1, (2, Some(2)));
        assert_eq!(k[2].1, (1, Some(4)));
        t.emit(&rec(Event::StepSucceeded {
            step: s("restart"),
            phase: Phase::Forward,
            already_done: false,
        }));
        assert!(keys(&t).is_empty());
    }

    #[test]
    fn plain_progress_of_a_big_wave_is_thinned_to_tenths() {
        let buf = SharedBuf::default();
        let t = Terminal::plain(Box::new(buf.clone()), None);
        let s = |x: &str| x.to_string();
        let lines = |buf: &SharedBuf| {
            String::from_utf8(buf.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        for done in 1..=200u64 {
            t.emit(&rec(Event::StepProgress {
                step: s("restart"),
                detail: format!("wave 1/1: {done}/200 workloads rolled out"),
                progress: Some(Progress::of(done, 200)),
            }));
        }
        let big = lines(&buf);
        // the first, then one at each tenth (20, 40, … 200)
        assert_eq!(big.len(), 11, "{big:#?}");
        assert!(big[0].contains("1/200"), "{}", big[0]);
        assert!(big[1].contains("20/200"), "{}", big[1]);
        assert!(big[10].contains("200/200"), "{}", big[10]);
        // a small count is shown in full, and so is anything that is not counted progress
        for done in 1..=3u64 {
            t.emit(&rec(Event::StepProgress {
                step: s("verify"),
                detail: format!("{done}/3 proxies SYNCED"),
                progress: Some(Progress::of(done, 3)),
            }));
        }
        t.emit(&rec(Event::StepProgress {
            step: s("restart"),
            detail: s("wave 1/1: planning"),
            progress: None,
        }));
        assert_eq!(lines(&buf).len(), 11 + 3 + 1);
    }

    #[tokio::test]
    async fn approver_without_a_terminal_defers() {
        // Tests run with stdin not a terminal: the run must pause, not hang or approve.
        if std::io::stdin().is_terminal() {
            return;
        }
        let a = TerminalApprover::new();
        let d = a
            .decide(&ApprovalRequest {
                run_id: "r".into(),
                target: "t".into(),
                step: "complete".into(),
                description: None,
                prompt: None,
            })
            .await;
        assert_eq!(d, ApprovalDecision::Defer);
    }
}
