//! Fake actions and gates for the engine's tests, and small builders.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use asm_canary_engine::*;
use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};

/// The fake world the fake actions change: counters of side effects made.
#[derive(Debug, Default, Clone)]
pub struct World(pub Arc<Mutex<BTreeMap<String, u32>>>);

impl World {
    pub fn count(&self, name: &str) -> u32 {
        self.0.lock().unwrap().get(name).copied().unwrap_or(0)
    }
    pub fn has(&self, name: &str) -> bool {
        self.count(name) > 0
    }
    fn apply(&self, name: &str) {
        *self.0.lock().unwrap().entry(name.to_string()).or_default() += 1;
    }
    pub fn snapshot(&self) -> BTreeMap<String, u32> {
        self.0.lock().unwrap().clone()
    }
}

/// Where an `Effect` action can be told to stop (cancelling the run) or fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    BeforeIntent,
    AfterIntent,
    AfterEffect,
    AfterDone,
}

/// Makes the side effect `effect` (input, default: the step id) once: observes first,
/// journals intent → applies → marks done. A resumed step re-observes in-flight entries.
#[derive(Clone, Default)]
pub struct Effect {
    pub world: World,
    /// (step, point, token): cancel `token` when `step` reaches `point`, then hang.
    pub interrupt: Arc<Mutex<Option<(String, Point, CancellationToken)>>>,
    /// Steps whose action fails with this message.
    pub fail: Arc<Mutex<BTreeMap<String, String>>>,
    /// How many times `run` was called, by step.
    pub calls: Arc<Mutex<BTreeMap<String, u32>>>,
}

impl Effect {
    pub fn new(world: &World) -> Self {
        Effect {
            world: world.clone(),
            ..Default::default()
        }
    }
    pub fn interrupt_at(&self, step: &str, point: Point, token: &CancellationToken) {
        *self.interrupt.lock().unwrap() = Some((step.to_string(), point, token.clone()));
    }
    pub fn clear_interrupt(&self) {
        *self.interrupt.lock().unwrap() = None;
    }
    pub fn fail_step(&self, step: &str, msg: &str) {
        self.fail
            .lock()
            .unwrap()
            .insert(step.to_string(), msg.to_string());
    }
    pub fn heal(&self, step: &str) {
        self.fail.lock().unwrap().remove(step);
    }
    pub fn calls(&self, step: &str) -> u32 {
        self.calls.lock().unwrap().get(step).copied().unwrap_or(0)
    }
    async fn hook(&self, step: &str, point: Point) {
        let hit = {
            let g = self.interrupt.lock().unwrap();
            match &*g {
                Some((s, p, t)) if s == step && *p == point => Some(t.clone()),
                _ => None,
            }
        };
        if let Some(t) = hit {
            t.cancel();
            std::future::pending::<()>().await;
        }
    }
}

#[async_trait]
impl Action for Effect {
    async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
        *self
            .calls
            .lock()
            .unwrap()
            .entry(ctx.step.clone())
            .or_default() += 1;
        if let Some(msg) = self.fail.lock().unwrap().get(&ctx.step).cloned() {
            // `refuse: why` refuses (StepError::Refused); anything else fails.
            if let Some(why) = msg.strip_prefix("refuse: ") {
                return Err(StepError::refused(why));
            }
            return Err(StepError::msg(msg));
        }
        let name: String = ctx.input_opt("effect")?.unwrap_or_else(|| ctx.step.clone());
        let mut out = Outputs::new();
        out.insert("effect".into(), json!(name));
        out.insert("attempt".into(), json!(ctx.attempt));
        // An entry in flight from an earlier attempt: re-observe, and finish it.
        let in_flight = ctx
            .journal
            .in_flight()
            .into_iter()
            .find(|e| e.target == name);
        if let Some(e) = &in_flight
            && self.world.has(&name)
        {
            ctx.journal
                .done(EntryId(e.seq), Some(json!("observed")))
                .await?;
            return Ok(ActionOutcome::done(out));
        }
        if in_flight.is_none() && self.world.has(&name) {
            return Ok(ActionOutcome::already_done(
                out,
                format!("{name} already applied"),
            ));
        }
        let id = match in_flight {
            Some(e) => EntryId(e.seq),
            None => {
                self.hook(&ctx.step, Point::BeforeIntent).await;
                let id = ctx.journal.intent("effect", &name, json!({"n": 1})).await?;
                self.hook(&ctx.step, Point::AfterIntent).await;
                id
            }
        };
        self.world.apply(&name);
        ctx.events.info(format!("applied {name}"));
        self.hook(&ctx.step, Point::AfterEffect).await;
        ctx.journal.done(id, None).await?;
        self.hook(&ctx.step, Point::AfterDone).await;
        Ok(ActionOutcome::done(out))
    }
}

/// Undoes, in the rollback sequence, every `effect` the journal says was done or in flight.
#[derive(Clone, Default)]
pub struct Undo {
    pub world: World,
}

#[async_trait]
impl Action for Undo {
    async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
        let mut undone = Vec::new();
        for e in ctx.journal.all() {
            if e.phase != Phase::Forward || e.kind != "effect" {
                continue;
            }
            let undo = format!("undo:{}", e.target);
            if !self.world.has(&e.target) || self.world.has(&undo) {
                continue;
            }
            let id = ctx.journal.intent("undo", &e.target, json!({})).await?;
            self.world.apply(&undo);
            ctx.journal.done(id, None).await?;
            undone.push(e.target.clone());
        }
        let mut out = Outputs::new();
        out.insert("undone".into(), json!(undone));
        Ok(ActionOutcome::done(out))
    }
}

/// Returns `Done` with its inputs as outputs; no side effect.
#[derive(Clone, Default)]
pub struct Echo;

#[async_trait]
impl Action for Echo {
    async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
        Ok(ActionOutcome::done(ctx.inputs.clone()))
    }
}

/// Returns `Skipped`.
#[derive(Clone, Default)]
pub struct SkipAction;

#[async_trait]
impl Action for SkipAction {
    async fn run(&self, _ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
        Ok(ActionOutcome::skipped("nothing to copy"))
    }
}

/// A gate driven by a script of statuses, one per check (the last one repeats).
#[derive(Clone)]
pub struct Scripted {
    pub script: Arc<Mutex<BTreeMap<String, Vec<GateStatus>>>>,
    pub checks: Arc<Mutex<BTreeMap<String, u32>>>,
}

impl Default for Scripted {
    fn default() -> Self {
        Scripted {
            script: Arc::new(Mutex::new(BTreeMap::new())),
            checks: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }
}

impl Scripted {
    pub fn set(&self, step: &str, statuses: Vec<GateStatus>) {
        self.script
            .lock()
            .unwrap()
            .insert(step.to_string(), statuses);
    }
    pub fn checks(&self, step: &str) -> u32 {
        self.checks.lock().unwrap().get(step).copied().unwrap_or(0)
    }
}

#[async_trait]
impl Gate for Scripted {
    async fn check(&self, ctx: &mut GateCtx) -> Result<GateStatus, StepError> {
        let n = {
            let mut c = self.checks.lock().unwrap();
            let e = c.entry(ctx.step.clone()).or_default();
            *e += 1;
            *e as usize
        };
        let script = self.script.lock().unwrap();
        let s = match script.get(&ctx.step) {
            Some(v) if !v.is_empty() => v[(n - 1).min(v.len() - 1)].clone(),
            _ => GateStatus::passed(),
        };
        Ok(s)
    }
}

/// A fixed clock: every timestamp is 2026-01-01T00:00:00Z (snapshots stay stable).
pub fn fixed_clock() -> impl Fn() -> DateTime<Utc> + Send + Sync + 'static {
    || Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

/// The fakes, registered under the names the test runbooks use.
pub struct Fakes {
    pub world: World,
    pub effect: Effect,
    pub gate: Scripted,
}

impl Fakes {
    pub fn new() -> Self {
        let world = World::default();
        Fakes {
            effect: Effect::new(&world),
            gate: Scripted::default(),
            world,
        }
    }
    pub fn registry(&self) -> Registry {
        Registry::new()
            .action("effect", self.effect.clone())
            .action(
                "undo",
                Undo {
                    world: self.world.clone(),
                },
            )
            .action("echo", Echo)
            .action("skip", SkipAction)
            .gate("scripted", self.gate.clone())
    }
}

/// A three-step runbook with a rollback step; `on_failure` for every step, `approval` on `c`.
pub fn three_steps(on_failure: &str, approval_on_c: bool) -> String {
    format!(
        r#"apiVersion: asm-canary.runbook/v1
name: three
params:
  tag: {{ type: string, default: prod }}
summary:
  last: ${{steps.c.outputs.effect}}
steps:
  - id: a
    action: effect
    gate: {{ check: scripted, timeout: 10m, poll_interval: 5s }}
    on_failure: {on_failure}
  - id: b
    action: effect
    inputs: {{ effect: "b-${{params.tag}}" }}
    gate: {{ check: scripted, timeout: 10m, poll_interval: 5s }}
    on_failure: {on_failure}
  - id: c
    action: effect
    approval: {approval}
    gate: {{ check: scripted, timeout: 10m, poll_interval: 5s }}
    on_failure: {on_failure}
rollback:
  - id: undo-all
    action: undo
    gate: {{ check: scripted, timeout: 1m }}
"#,
        approval = if approval_on_c { "required" } else { "none" }
    )
}

pub fn executor(text: &str, fakes: &Fakes, state: &Path, events: &Arc<MemorySink>) -> Executor {
    let rb = Runbook::parse(text, "test.yaml", &fakes.registry()).expect("runbook loads");
    Executor::new(rb, fakes.registry(), FileStore::new(state))
        .with_events(events.clone())
        .with_clock(fixed_clock())
}

pub fn request() -> RunRequest {
    RunRequest {
        target: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/c".into(),
        params: Default::default(),
        run_id: Some("run-1".into()),
    }
}

pub fn load(state: &Path) -> Checkpoint {
    let bytes = std::fs::read(state).expect("checkpoint exists");
    Checkpoint::from_json(&bytes, "state", Access::ReadOnly).expect("checkpoint parses")
}

pub fn statuses(cp: &Checkpoint) -> Vec<(String, StepStatus)> {
    cp.steps
        .iter()
        .chain(cp.rollback.iter())
        .map(|s| (s.id.clone(), s.status))
        .collect()
}

/// Event names, in order (`step_started:a`, …), for compact assertions.
pub fn names(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| {
            let v = serde_json::to_value(e).ok()?;
            let name = v.get("event")?.as_str()?.to_string();
            if name == "message" || name == "side_effect" || name == "gate_progress" {
                return None;
            }
            Some(match v.get("step").and_then(Value::as_str) {
                Some(s) => format!("{name}:{s}"),
                None => name,
            })
        })
        .collect()
}
