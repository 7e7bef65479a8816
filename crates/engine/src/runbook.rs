//! Runbook files: the model, the YAML loader and the up-front validation.
//!
//! ```yaml
//! apiVersion: asm-canary.runbook/v1
//! name: example
//! description: what it does
//! params:
//!   tag: { type: string, default: prod, description: the revision tag to move }
//! summary:                      # values copied into run_finished (and the checkpoint)
//!   target: ${steps.pick.outputs.target}
//! steps:
//!   - id: pick
//!     action: pick-target       # a name in the Registry
//!     inputs: { tag: "${params.tag}" }
//!     gate:
//!       check: target-ok        # a gate name in the Registry
//!       inputs: { target: "${steps.pick.outputs.target}" }
//!       timeout: 10m
//!       poll_interval: 5s       # default 5s
//!       watch: false            # true: the gate's wait_for_change may wake it early
//!       stable_for: 30s         # default 0s
//!     approval: required        # or none (default)
//!     approve_before: prepare   # optional: ask it when an earlier step is about to run
//!     on_failure: rollback      # or halt (default rollback)
//!     when: ${params.enabled}   # optional: skipped when false
//! rollback:                     # run in order when a failure is decided rollback, or on `rollback`
//!   - id: undo
//!     action: undo-pick
//! ```
//!
//! Steps form a list and references only point backwards, so there are no cycles to detect.
//! Every problem found is reported at once, each as `file:line:column: message`.

use std::collections::{BTreeMap, HashMap};
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};
use serde_saphyr::Spanned;

use crate::checkpoint::{RunbookRef, sha256_hex};
use crate::duration::parse_duration;
use crate::step::Registry;
use crate::template::{self, Ref};

/// The `apiVersion` a runbook must declare.
pub const RUNBOOK_API_VERSION: &str = "asm-canary.runbook/v1";

const DEFAULT_POLL: Duration = Duration::from_secs(5);

/// A 1-based position in the runbook file (0 when unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
}

impl<T> From<&Spanned<T>> for Pos {
    fn from(s: &Spanned<T>) -> Self {
        Pos {
            line: s.referenced.line() as u32,
            column: s.referenced.column() as u32,
        }
    }
}

/// A validated runbook.
#[derive(Debug, Clone)]
pub struct Runbook {
    pub name: String,
    pub description: Option<String>,
    pub params: Vec<ParamSpec>,
    pub steps: Vec<StepSpec>,
    pub rollback: Vec<StepSpec>,
    /// Values (with references) resolved at the end of a run into `run_finished`.
    pub summary: Vec<(String, Value)>,
    /// Where it was loaded from (file path or a label).
    pub origin: String,
    /// sha256 of the file's bytes, hex.
    pub sha256: String,
    /// The file's text, as parsed (a checkpoint keeps it, so that a run can be continued with
    /// the runbook it started with).
    pub text: String,
}

/// A typed parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub kind: ParamType,
    /// `None` and `required: false` → the param is `null` unless given.
    pub default: Option<Value>,
    pub required: bool,
    pub description: Option<String>,
    /// The values an integer param may take (`min`/`max` in the runbook, else
    /// [`DEFAULT_INTEGER_RANGE`]); `None` for the other types.
    pub range: Option<RangeInclusive<i64>>,
    /// The durations a duration param may take (`min`/`max` in the runbook, e.g. `min: 1s` for
    /// a timeout: `0s` made every gate fail at once, the rollback's too); `None`: any.
    pub durations: Option<RangeInclusive<std::time::Duration>>,
}

/// The range of an integer param whose runbook declares no `min`/`max`: integers in a runbook
/// count things (workloads at once, waves, retries), and one near `i64::MAX` is a typo.
pub const DEFAULT_INTEGER_RANGE: RangeInclusive<i64> = 0..=1_000_000;

impl ParamSpec {
    /// Checks `v` against the type and the range, converting strings given on a command line.
    pub fn check(&self, v: &Value) -> Result<Value, String> {
        let v = self.kind.coerce(v)?;
        if let (Some(range), Value::String(text)) = (&self.durations, &v) {
            let d = crate::duration::parse_duration(text)?;
            if !range.contains(&d) {
                let min = crate::duration::format_duration(*range.start());
                return Err(match *range.end() {
                    std::time::Duration::MAX => {
                        format!("{text} is shorter than the minimum, {min}")
                    }
                    max => format!(
                        "{text} is out of range: allowed {min}..={}",
                        crate::duration::format_duration(max)
                    ),
                });
            }
        }
        if let (Some(range), Value::Number(n)) = (&self.range, &v) {
            let inside = n.as_i64().is_some_and(|i| range.contains(&i));
            if !inside {
                return Err(format!(
                    "{n} is out of range: allowed {}..={}",
                    range.start(),
                    range.end()
                ));
            }
        }
        Ok(v)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    String,
    Integer,
    Boolean,
    /// A string such as `10m`, validated.
    Duration,
    /// A list of strings (`--set x=a,b` gives `["a","b"]`).
    StringList,
    /// A count (an integer, bounded like [`ParamType::Integer`]) or a percentage of something
    /// the step knows (`"25%"`, 1 to 100): parallelism as a number or a share of a wave.
    CountOrPercent,
    /// A list of objects (e.g. the analysis gate's custom checks), given in JSON on a command
    /// line; what each object holds is the step's to check.
    ObjectList,
}

impl ParamType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "string" => ParamType::String,
            "integer" | "int" => ParamType::Integer,
            "boolean" | "bool" => ParamType::Boolean,
            "duration" => ParamType::Duration,
            "string_list" | "list" => ParamType::StringList,
            "count_or_percent" => ParamType::CountOrPercent,
            "object_list" => ParamType::ObjectList,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Integer => "integer",
            ParamType::Boolean => "boolean",
            ParamType::Duration => "duration",
            ParamType::StringList => "string_list",
            ParamType::CountOrPercent => "count or percentage",
            ParamType::ObjectList => "list of objects",
        }
    }

    /// Checks `v` against the type, converting strings given on a command line.
    pub fn coerce(self, v: &Value) -> Result<Value, String> {
        match (self, v) {
            (_, Value::Null) => Ok(Value::Null),
            (ParamType::String, Value::String(_)) => Ok(v.clone()),
            (ParamType::Integer | ParamType::CountOrPercent, Value::Number(n))
                if n.is_i64() || n.is_u64() =>
            {
                Ok(v.clone())
            }
            (ParamType::CountOrPercent, Value::String(s)) if s.trim().ends_with('%') => {
                let p = s.trim().trim_end_matches('%').trim();
                match p.parse::<u32>() {
                    Ok(n) if (1..=100).contains(&n) => Ok(Value::String(format!("{n}%"))),
                    _ => Err(format!(
                        "{s:?} is not a percentage from 1% to 100% (or a count)"
                    )),
                }
            }
            (ParamType::Integer | ParamType::CountOrPercent, Value::String(s)) => s
                .trim()
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| format!("{s:?} is not an integer")),
            (ParamType::Boolean, Value::Bool(_)) => Ok(v.clone()),
            (ParamType::Boolean, Value::String(s)) => match s.as_str() {
                "true" | "yes" => Ok(Value::Bool(true)),
                "false" | "no" => Ok(Value::Bool(false)),
                _ => Err(format!("{s:?} is not a boolean (true or false)")),
            },
            (ParamType::Duration, Value::String(s)) => parse_duration(s)
                .map(|_| v.clone())
                .map_err(|e| e.to_string()),
            (ParamType::StringList, Value::Array(a)) if a.iter().all(Value::is_string) => {
                Ok(v.clone())
            }
            (ParamType::StringList, Value::String(s)) => Ok(Value::Array(
                s.split(',')
                    .map(str::trim)
                    .filter(|x| !x.is_empty())
                    .map(|x| Value::String(x.to_string()))
                    .collect(),
            )),
            (ParamType::ObjectList, Value::Array(a)) if a.iter().all(Value::is_object) => {
                Ok(v.clone())
            }
            (ParamType::ObjectList, Value::String(s)) => match serde_json::from_str::<Value>(s) {
                Ok(parsed @ Value::Array(_)) => ParamType::ObjectList.coerce(&parsed),
                _ => Err(format!(
                    "{s:?} is not a list of objects (give a JSON array such as [{{\"name\": \"x\"}}])"
                )),
            },
            (t, other) => Err(format!("{other} is not a {}", t.name())),
        }
    }
}

/// Does a step need approval before its action runs?
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApprovalMode {
    #[default]
    None,
    Required,
}

/// What a failed forward step does, unattended: the answer of [`crate::RunbookPolicy`]. A
/// driver's [`crate::FailureDecider`] may decide otherwise (e.g. a person retries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFailure {
    /// Run the runbook's rollback sequence (exit 3 when it finishes, 6 when it fails).
    #[default]
    Rollback,
    /// Pause, resumable (exit 4).
    Halt,
}

impl OnFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::Rollback => "rollback",
            OnFailure::Halt => "halt",
        }
    }
}

/// One step of the forward or rollback sequence.
#[derive(Debug, Clone)]
pub struct StepSpec {
    pub id: String,
    pub description: Option<String>,
    pub action: String,
    /// Inputs with references (resolved when the step runs).
    pub inputs: Map<String, Value>,
    pub gate: Option<GateSpec>,
    pub approval: ApprovalMode,
    pub approval_prompt: Option<String>,
    /// `approve_before: STEP`: ask this step's approval when the earlier step `STEP` is about
    /// to run, so that nothing the approval covers changes the cluster before a person (or
    /// `--approve`) agreed. The approval keeps this step's name.
    pub approve_before: Option<String>,
    pub on_failure: OnFailure,
    pub when: Option<Value>,
    pub pos: Pos,
}

/// A step's gate.
#[derive(Debug, Clone)]
pub struct GateSpec {
    pub check: String,
    pub inputs: Map<String, Value>,
    pub timeout: DurationSpec,
    pub poll_interval: DurationSpec,
    pub watch: bool,
    pub stable_for: DurationSpec,
}

/// A duration in a runbook: literal (`10m`) or a `duration` param (`${params.soak}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DurationSpec {
    Fixed(Duration),
    Param(String),
}

impl DurationSpec {
    /// The duration, reading a param from the run's `params`.
    pub fn resolve(&self, params: &Map<String, Value>) -> Result<Duration, String> {
        match self {
            DurationSpec::Fixed(d) => Ok(*d),
            DurationSpec::Param(p) => match params.get(p) {
                Some(Value::String(s)) => {
                    parse_duration(s).map_err(|e| format!("param {p:?}: {e}"))
                }
                other => Err(format!(
                    "param {p:?} must be a duration such as 10m, not {}",
                    other
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "missing".into())
                )),
            },
        }
    }
}

/// One problem in a runbook, at a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub pos: Pos,
    pub message: String,
}

/// Why a runbook could not be loaded. Maps to exit 2.
#[derive(Debug, thiserror::Error)]
pub enum RunbookError {
    #[error("cannot read runbook {path}: {source}; check the path")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", render_problems(origin, problems))]
    Invalid {
        origin: String,
        problems: Vec<Problem>,
    },
}

fn render_problems(origin: &str, problems: &[Problem]) -> String {
    let mut lines = Vec::new();
    for p in problems {
        lines.push(format!(
            "{origin}:{}:{}: {}",
            p.pos.line, p.pos.column, p.message
        ));
    }
    if problems.len() > 1 {
        format!(
            "runbook {origin} has {} problems:\n{}",
            problems.len(),
            lines.join("\n")
        )
    } else {
        lines.join("\n")
    }
}

impl RunbookError {
    /// The problems found (empty for a read error).
    pub fn problems(&self) -> &[Problem] {
        match self {
            RunbookError::Invalid { problems, .. } => problems,
            RunbookError::Read { .. } => &[],
        }
    }
}

// ---- raw YAML shape ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRunbook {
    api_version: Spanned<String>,
    name: Spanned<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    params: BTreeMap<String, Spanned<RawParam>>,
    #[serde(default)]
    summary: BTreeMap<String, Spanned<Value>>,
    steps: Spanned<Vec<Spanned<RawStep>>>,
    #[serde(default)]
    rollback: Vec<Spanned<RawStep>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParam {
    #[serde(rename = "type")]
    kind: Spanned<String>,
    #[serde(default)]
    default: Option<Spanned<Value>>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    description: Option<String>,
    /// Integer params: the smallest and largest value allowed; duration params: the shortest
    /// and longest (`1s`).
    #[serde(default)]
    min: Option<Spanned<Value>>,
    #[serde(default)]
    max: Option<Spanned<Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    id: Spanned<String>,
    #[serde(default)]
    description: Option<String>,
    action: Spanned<String>,
    #[serde(default)]
    inputs: BTreeMap<String, Spanned<Value>>,
    #[serde(default)]
    gate: Option<Spanned<RawGate>>,
    #[serde(default)]
    approval: Option<Spanned<String>>,
    #[serde(default)]
    approval_prompt: Option<Spanned<String>>,
    #[serde(default)]
    approve_before: Option<Spanned<String>>,
    #[serde(default)]
    on_failure: Option<Spanned<String>>,
    #[serde(default)]
    when: Option<Spanned<Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGate {
    check: Spanned<String>,
    #[serde(default)]
    inputs: BTreeMap<String, Spanned<Value>>,
    timeout: Spanned<String>,
    #[serde(default)]
    poll_interval: Option<Spanned<String>>,
    #[serde(default)]
    watch: bool,
    #[serde(default)]
    stable_for: Option<Spanned<String>>,
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && id.chars().next().is_some_and(|c| c.is_ascii_lowercase())
}

impl Runbook {
    /// What a checkpoint records of this runbook: name, sha256, origin and text.
    pub fn reference(&self) -> RunbookRef {
        RunbookRef {
            name: self.name.clone(),
            sha256: self.sha256.clone(),
            origin: Some(self.origin.clone()),
            text: Some(self.text.clone()),
        }
    }

    /// Reads and validates the runbook at `path` against `registry`.
    pub fn load(path: &Path, registry: &Registry) -> Result<Runbook, RunbookError> {
        let text = std::fs::read_to_string(path).map_err(|source| RunbookError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Runbook::parse(&text, &path.display().to_string(), registry)
    }

    /// Parses and validates runbook text; `origin` names it in errors (a file path).
    pub fn parse(text: &str, origin: &str, registry: &Registry) -> Result<Runbook, RunbookError> {
        let raw = raw_runbook(text, origin)?;
        let mut v = Validator {
            problems: Vec::new(),
            registry,
            param_types: HashMap::new(),
        };
        let mut rb = v.build(raw, origin, sha256_hex(text.as_bytes()));
        rb.text = text.to_string();
        v.finish(rb, origin)
    }

    /// The runbook's name and params alone, its steps left out (their actions and gates are
    /// not looked up, so no registry is needed): to check param values (`--param`, a fleet
    /// file's settings) before anything is connected. [`Runbook::bind_params`] on it checks
    /// exactly as on the whole runbook.
    pub fn parse_params(text: &str, origin: &str) -> Result<Runbook, RunbookError> {
        let raw = raw_runbook(text, origin)?;
        let registry = Registry::new();
        let mut v = Validator {
            problems: Vec::new(),
            registry: &registry,
            param_types: HashMap::new(),
        };
        let params = (raw.params.iter())
            .map(|(name, p)| v.param(name, p))
            .collect();
        let rb = Runbook {
            name: raw.name.value,
            description: raw.description,
            params,
            steps: Vec::new(),
            rollback: Vec::new(),
            summary: Vec::new(),
            origin: origin.to_string(),
            sha256: sha256_hex(text.as_bytes()),
            text: text.to_string(),
        };
        v.finish(rb, origin)
    }

    /// Forward steps, then rollback steps.
    pub fn all_steps(&self) -> impl Iterator<Item = &StepSpec> {
        self.steps.iter().chain(self.rollback.iter())
    }

    pub fn step(&self, id: &str) -> Option<&StepSpec> {
        self.all_steps().find(|s| s.id == id)
    }

    /// Every action and gate name the runbook uses (for registry coverage checks).
    pub fn action_names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.all_steps().map(|s| s.action.as_str()).collect();
        v.sort();
        v.dedup();
        v
    }

    pub fn gate_names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .all_steps()
            .filter_map(|s| s.gate.as_ref().map(|g| g.check.as_str()))
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Checks `given` against the declared params: unknown names and type errors are refused,
    /// defaults fill the rest, strings are converted to the declared type. Errors map to exit 2.
    pub fn bind_params(&self, given: &Map<String, Value>) -> Result<Map<String, Value>, String> {
        let mut problems = Vec::new();
        for k in given.keys() {
            if !self.params.iter().any(|p| &p.name == k) {
                problems.push(format!(
                    "unknown param {k:?} (runbook {} has: {})",
                    self.name,
                    self.params
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        let mut out = Map::new();
        for p in &self.params {
            let v = match given.get(&p.name) {
                Some(v) => match p.check(v) {
                    Ok(v) => v,
                    Err(e) => {
                        problems.push(format!("param {:?}: {e}", p.name));
                        continue;
                    }
                },
                None => p.default.clone().unwrap_or(Value::Null),
            };
            if p.required && v.is_null() {
                problems.push(format!(
                    "param {:?} is required: give it a value ({})",
                    p.name,
                    p.description.as_deref().unwrap_or(p.kind.name())
                ));
            }
            out.insert(p.name.clone(), v);
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(problems.join("; "))
        }
    }
}

/// The runbook's YAML, parsed into its raw shape; a syntax error at its position.
fn raw_runbook(text: &str, origin: &str) -> Result<RawRunbook, RunbookError> {
    serde_saphyr::from_str(text).map_err(|e| {
        let pos = e
            .location()
            .map(|l| Pos {
                line: l.line() as u32,
                column: l.column() as u32,
            })
            .unwrap_or_default();
        RunbookError::Invalid {
            origin: origin.to_string(),
            problems: vec![Problem {
                pos,
                message: first_line(&e.to_string()),
            }],
        }
    })
}

/// The first line of a YAML error, without the `error: line L column C:` prefix (the
/// position is rendered by [`RunbookError`]).
fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or(s).trim();
    let rest = line.strip_prefix("error: ").unwrap_or(line);
    if let Some(after) = rest.strip_prefix("line ")
        && let Some((_, msg)) = after.split_once(": ")
        && after
            .split_once(": ")
            .is_some_and(|(pos, _)| pos.contains(" column "))
    {
        return msg.to_string();
    }
    rest.to_string()
}

struct Validator<'a> {
    problems: Vec<Problem>,
    registry: &'a Registry,
    param_types: HashMap<String, ParamType>,
}

/// Where references may point, for one value.
struct RefScope<'a> {
    /// Forward step ids, in order.
    forward: &'a [String],
    /// Rollback step ids, in order.
    rollback: &'a [String],
    /// Which phase the value is in, and the index of the step it belongs to.
    in_rollback: bool,
    index: usize,
    /// Whether the step's own outputs may be referenced (its gate).
    self_ok: bool,
    params: &'a [String],
}

impl Validator<'_> {
    fn problem(&mut self, pos: Pos, message: impl Into<String>) {
        self.problems.push(Problem {
            pos,
            message: message.into(),
        });
    }

    /// A literal duration, or `${params.<name>}` naming a `duration` param.
    fn duration(&mut self, s: &Spanned<String>, what: &str) -> DurationSpec {
        let text = s.value.trim();
        if let Some(body) = text.strip_prefix("${").and_then(|t| t.strip_suffix('}')) {
            return match template::references(&Value::String(text.to_string())) {
                Ok(refs) => match refs.as_slice() {
                    [Ref::Param(p)] => match self.param_types.get(p) {
                        Some(ParamType::Duration) => DurationSpec::Param(p.clone()),
                        Some(other) => {
                            self.problem(
                                Pos::from(s),
                                format!(
                                    "{what}: param {p:?} has type {}, not duration",
                                    other.name()
                                ),
                            );
                            DurationSpec::Fixed(Duration::ZERO)
                        }
                        None => {
                            self.problem(
                                Pos::from(s),
                                format!("{what}: ${{{body}}} names an unknown param"),
                            );
                            DurationSpec::Fixed(Duration::ZERO)
                        }
                    },
                    _ => {
                        self.problem(
                            Pos::from(s),
                            format!("{what}: only a duration param (${{params.<name>}}) may stand for a duration"),
                        );
                        DurationSpec::Fixed(Duration::ZERO)
                    }
                },
                Err(e) => {
                    self.problem(Pos::from(s), format!("{what}: {e}"));
                    DurationSpec::Fixed(Duration::ZERO)
                }
            };
        }
        match parse_duration(text) {
            Ok(d) => DurationSpec::Fixed(d),
            Err(e) => {
                self.problem(Pos::from(s), format!("{what}: {e}"));
                DurationSpec::Fixed(Duration::from_secs(1))
            }
        }
    }

    fn check_refs(&mut self, value: &Value, pos: Pos, scope: &RefScope<'_>, what: &str) {
        let refs = match template::references(value) {
            Ok(r) => r,
            Err(e) => {
                self.problem(pos, format!("{what}: {e}"));
                return;
            }
        };
        for r in refs {
            match &r {
                Ref::Param(p) => {
                    if !scope.params.iter().any(|x| x == p) {
                        self.problem(
                            pos,
                            format!(
                                "{what}: {r} names an unknown param (declared: {})",
                                if scope.params.is_empty() {
                                    "none".to_string()
                                } else {
                                    scope.params.join(", ")
                                }
                            ),
                        );
                    }
                }
                Ref::StepOutput { step, .. } => {
                    let fwd = scope.forward.iter().position(|s| s == step);
                    let rb = scope.rollback.iter().position(|s| s == step);
                    let ok = match (fwd, rb, scope.in_rollback) {
                        (None, None, _) => {
                            self.problem(pos, format!("{what}: {r} names an unknown step"));
                            continue;
                        }
                        // Rollback steps may read any forward step (missing outputs → null).
                        (Some(_), _, true) => true,
                        (Some(i), _, false) => {
                            i < scope.index || (scope.self_ok && i == scope.index)
                        }
                        (None, Some(i), true) => {
                            i < scope.index || (scope.self_ok && i == scope.index)
                        }
                        (None, Some(_), false) => false,
                    };
                    if !ok {
                        self.problem(
                            pos,
                            format!(
                                "{what}: {r} refers to step {step:?}, which runs later (or is this step); a step can only use the outputs of earlier steps"
                            ),
                        );
                    }
                }
                Ref::RunId | Ref::RunTarget => {}
            }
        }
    }

    fn build(&mut self, raw: RawRunbook, origin: &str, sha256: String) -> Runbook {
        self.header(&raw);
        let params: Vec<ParamSpec> = raw
            .params
            .iter()
            .map(|(name, p)| self.param(name, p))
            .collect();
        let param_names: Vec<String> = params.iter().map(|p| p.name.clone()).collect();
        self.param_types = params.iter().map(|p| (p.name.clone(), p.kind)).collect();
        self.unique_ids(raw.steps.value.iter().chain(raw.rollback.iter()));
        let ids = |steps: &[Spanned<RawStep>]| -> Vec<String> {
            steps.iter().map(|s| s.value.id.value.clone()).collect()
        };
        let forward = ids(&raw.steps.value);
        let rollback_ids = ids(&raw.rollback);
        let scope = |in_rollback: bool, index: usize| RefScope {
            forward: &forward,
            rollback: &rollback_ids,
            in_rollback,
            index,
            self_ok: false,
            params: &param_names,
        };
        let steps = (raw.steps.value.iter().enumerate())
            .map(|(i, s)| self.step(s, &scope(false, i)))
            .collect();
        let rollback = (raw.rollback.iter().enumerate())
            .map(|(i, s)| self.rollback_step(s, &scope(true, i)))
            .collect();
        // Summary: may read any step (resolved leniently at the end of the run).
        let summary_scope = scope(true, rollback_ids.len());
        let summary = (raw.summary.iter())
            .map(|(k, v)| {
                let what = format!("summary {k:?}");
                self.check_refs(&v.value, Pos::from(v), &summary_scope, &what);
                (k.clone(), v.value.clone())
            })
            .collect();
        Runbook {
            name: raw.name.value,
            description: raw.description,
            params,
            steps,
            rollback,
            summary,
            origin: origin.to_string(),
            sha256,
            text: String::new(),
        }
    }

    /// The runbook, or every problem found, in file order.
    fn finish(mut self, rb: Runbook, origin: &str) -> Result<Runbook, RunbookError> {
        if self.problems.is_empty() {
            return Ok(rb);
        }
        self.problems.sort_by_key(|p| (p.pos.line, p.pos.column));
        Err(RunbookError::Invalid {
            origin: origin.to_string(),
            problems: self.problems,
        })
    }

    /// `apiVersion`, and at least one step.
    fn header(&mut self, raw: &RawRunbook) {
        if raw.api_version.value != RUNBOOK_API_VERSION {
            self.problem(
                Pos::from(&raw.api_version),
                format!(
                    "apiVersion {:?} is not supported; this asm-canary reads {RUNBOOK_API_VERSION:?}",
                    raw.api_version.value
                ),
            );
        }
        if raw.steps.value.is_empty() {
            self.problem(Pos::from(&raw.steps), "a runbook needs at least one step");
        }
    }

    fn param(&mut self, name: &str, p: &Spanned<RawParam>) -> ParamSpec {
        if !valid_id(name) {
            self.problem(
                Pos::from(p),
                format!("param name {name:?} must be lowercase letters, digits, - or _"),
            );
        }
        let kind = ParamType::parse(&p.value.kind.value).unwrap_or_else(|| {
            self.problem(
                Pos::from(&p.value.kind),
                format!(
                    "param {name:?}: unknown type {:?} (use string, integer, boolean, duration, string_list, count_or_percent or object_list)",
                    p.value.kind.value
                ),
            );
            ParamType::String
        });
        let mut spec = ParamSpec {
            name: name.to_string(),
            kind,
            default: None,
            required: p.value.required,
            description: p.value.description.clone(),
            range: self.param_range(name, kind, &p.value),
            durations: self.duration_range(name, kind, &p.value),
        };
        spec.default = p.value.default.as_ref().and_then(|d| {
            spec.check(&d.value)
                .map_err(|e| self.problem(Pos::from(d), format!("param {name:?}: default {e}")))
                .ok()
        });
        spec
    }

    /// An integer param's `min`/`max` (else [`DEFAULT_INTEGER_RANGE`]); other types take none.
    fn param_range(
        &mut self,
        name: &str,
        kind: ParamType,
        p: &RawParam,
    ) -> Option<RangeInclusive<i64>> {
        if !matches!(kind, ParamType::Integer | ParamType::CountOrPercent) {
            if kind != ParamType::Duration {
                for bound in [&p.min, &p.max].into_iter().flatten() {
                    self.problem(
                        Pos::from(bound),
                        format!(
                            "param {name:?}: min and max apply to integer, count_or_percent and duration params only"
                        ),
                    );
                }
            }
            return None;
        }
        let mut bound = |b: &Option<Spanned<Value>>, default: i64| match b {
            None => default,
            Some(v) => v.value.as_i64().unwrap_or_else(|| {
                self.problem(
                    Pos::from(v),
                    format!("param {name:?}: min and max of an integer param are integers"),
                );
                default
            }),
        };
        let min = bound(&p.min, *DEFAULT_INTEGER_RANGE.start());
        let max = bound(&p.max, *DEFAULT_INTEGER_RANGE.end());
        if min > max {
            let at = p.max.as_ref().or(p.min.as_ref()).map(Pos::from);
            self.problem(
                at.unwrap_or_default(),
                format!("param {name:?}: min {min} is greater than max {max}"),
            );
        }
        Some(min..=max)
    }

    /// A duration param's `min`/`max` (durations such as `1s`); `None` when it declares none.
    fn duration_range(
        &mut self,
        name: &str,
        kind: ParamType,
        p: &RawParam,
    ) -> Option<RangeInclusive<std::time::Duration>> {
        if kind != ParamType::Duration || (p.min.is_none() && p.max.is_none()) {
            return None;
        }
        let mut bound = |b: &Option<Spanned<Value>>, default: std::time::Duration| match b {
            None => default,
            Some(v) => match v.value.as_str().map(crate::duration::parse_duration) {
                Some(Ok(d)) => d,
                _ => {
                    self.problem(
                        Pos::from(v),
                        format!(
                            "param {name:?}: min and max of a duration param are durations such as 1s"
                        ),
                    );
                    default
                }
            },
        };
        let min = bound(&p.min, std::time::Duration::ZERO);
        let max = bound(&p.max, std::time::Duration::MAX);
        if min > max {
            let at = p.max.as_ref().or(p.min.as_ref()).map(Pos::from);
            self.problem(
                at.unwrap_or_default(),
                format!("param {name:?}: min is longer than max"),
            );
        }
        Some(min..=max)
    }

    /// Step ids: well formed, and unique across both sequences.
    fn unique_ids<'s>(&mut self, steps: impl Iterator<Item = &'s Spanned<RawStep>>) {
        let mut seen: HashMap<String, Pos> = HashMap::new();
        for s in steps {
            let id = &s.value.id;
            if !valid_id(&id.value) {
                self.problem(
                    Pos::from(id),
                    format!(
                        "step id {:?} must start with a lowercase letter and use only lowercase letters, digits, - or _",
                        id.value
                    ),
                );
            }
            if let Some(first) = seen.get(&id.value) {
                self.problem(
                    Pos::from(id),
                    format!(
                        "duplicate step id {:?} (first defined at line {}, column {})",
                        id.value, first.line, first.column
                    ),
                );
            } else {
                seen.insert(id.value.clone(), Pos::from(id));
            }
        }
    }

    /// A step of the rollback sequence: a step, minus approval and `on_failure`.
    fn rollback_step(&mut self, s: &Spanned<RawStep>, scope: &RefScope<'_>) -> StepSpec {
        let spec = self.step(s, scope);
        if let Some(a) = &s.value.approval
            && spec.approval == ApprovalMode::Required
        {
            self.problem(
                Pos::from(a),
                "rollback steps cannot require approval: a rollback must be able to run unattended",
            );
        }
        if let Some(f) = &s.value.on_failure {
            self.problem(
                Pos::from(f),
                "on_failure has no meaning in the rollback sequence (a failed rollback step stops the rollback, exit 6)",
            );
        }
        spec
    }

    fn step(&mut self, s: &Spanned<RawStep>, scope: &RefScope<'_>) -> StepSpec {
        let raw = &s.value;
        let id = raw.id.value.clone();
        if self.registry.get_action(&raw.action.value).is_none() {
            self.problem(
                Pos::from(&raw.action),
                format!(
                    "step {id:?}: unknown action {:?} (known: {})",
                    raw.action.value,
                    join_or_none(self.registry.action_names())
                ),
            );
        }
        let inputs = self.inputs(&raw.inputs, scope, &format!("step {id:?} input"));
        let when = raw.when.as_ref().map(|w| {
            self.check_refs(&w.value, Pos::from(w), scope, &format!("step {id:?} when"));
            w.value.clone()
        });
        let gate = raw.gate.as_ref().map(|g| self.gate(&id, &g.value, scope));
        let approval = self.approval(&id, raw.approval.as_ref());
        let approval_prompt = raw.approval_prompt.as_ref().map(|p| {
            self.check_refs(
                &Value::String(p.value.clone()),
                Pos::from(p),
                scope,
                &format!("step {id:?} approval_prompt"),
            );
            p.value.clone()
        });
        let on_failure = self.on_failure(&id, raw.on_failure.as_ref());
        let approve_before = raw.approve_before.as_ref().map(|b| {
            self.approve_before(&id, b, approval, scope);
            b.value.clone()
        });
        StepSpec {
            id,
            description: raw.description.clone(),
            action: raw.action.value.clone(),
            inputs,
            gate,
            approval,
            approval_prompt,
            approve_before,
            on_failure,
            when,
            pos: Pos::from(s),
        }
    }

    /// Inputs (of a step or a gate), their references checked; `what` names them in problems.
    fn inputs(
        &mut self,
        raw: &BTreeMap<String, Spanned<Value>>,
        scope: &RefScope<'_>,
        what: &str,
    ) -> Map<String, Value> {
        let mut inputs = Map::new();
        for (k, v) in raw {
            self.check_refs(&v.value, Pos::from(v), scope, &format!("{what} {k:?}"));
            inputs.insert(k.clone(), v.value.clone());
        }
        inputs
    }

    fn gate(&mut self, id: &str, gr: &RawGate, scope: &RefScope<'_>) -> GateSpec {
        if self.registry.get_gate(&gr.check.value).is_none() {
            self.problem(
                Pos::from(&gr.check),
                format!(
                    "step {id:?}: unknown gate {:?} (known: {})",
                    gr.check.value,
                    join_or_none(self.registry.gate_names())
                ),
            );
        }
        // A gate may also read its own step's outputs.
        let gate_scope = RefScope {
            self_ok: true,
            ..*scope
        };
        let inputs = self.inputs(&gr.inputs, &gate_scope, &format!("step {id:?} gate input"));
        let timeout = self.duration(&gr.timeout, &format!("step {id:?} gate timeout"));
        if timeout == DurationSpec::Fixed(Duration::ZERO) {
            self.problem(
                Pos::from(&gr.timeout),
                format!("step {id:?} gate timeout must be more than 0s"),
            );
        }
        let poll_interval = match &gr.poll_interval {
            Some(p) => {
                let d = self.duration(p, &format!("step {id:?} gate poll_interval"));
                if d == DurationSpec::Fixed(Duration::ZERO) {
                    self.problem(
                        Pos::from(p),
                        format!("step {id:?} gate poll_interval must be more than 0s"),
                    );
                }
                d
            }
            None => DurationSpec::Fixed(DEFAULT_POLL),
        };
        let stable_for = match &gr.stable_for {
            Some(sf) => self.stable_for(id, sf, &timeout),
            None => DurationSpec::Fixed(Duration::ZERO),
        };
        GateSpec {
            check: gr.check.value.clone(),
            inputs,
            timeout,
            poll_interval,
            watch: gr.watch,
            stable_for,
        }
    }

    /// `stable_for`: a duration shorter than the gate's timeout (when both are literal).
    fn stable_for(
        &mut self,
        id: &str,
        sf: &Spanned<String>,
        timeout: &DurationSpec,
    ) -> DurationSpec {
        let d = self.duration(sf, &format!("step {id:?} gate stable_for"));
        if let (DurationSpec::Fixed(s), DurationSpec::Fixed(t)) = (&d, timeout)
            && s >= t
            && !t.is_zero()
        {
            self.problem(
                Pos::from(sf),
                format!("step {id:?} gate stable_for must be shorter than its timeout"),
            );
        }
        d
    }

    fn approval(&mut self, id: &str, raw: Option<&Spanned<String>>) -> ApprovalMode {
        let Some(a) = raw else {
            return ApprovalMode::None;
        };
        match a.value.as_str() {
            "required" => ApprovalMode::Required,
            "none" => ApprovalMode::None,
            other => {
                self.problem(
                    Pos::from(a),
                    format!("step {id:?}: approval {other:?} must be \"required\" or \"none\""),
                );
                ApprovalMode::None
            }
        }
    }

    /// `approve_before` names an earlier forward step, on a step that requires approval.
    fn approve_before(
        &mut self,
        id: &str,
        before: &Spanned<String>,
        approval: ApprovalMode,
        scope: &RefScope<'_>,
    ) {
        let earlier = &scope.forward[..scope.index.min(scope.forward.len())];
        let problem = if scope.in_rollback {
            Some("approve_before has no meaning in the rollback sequence".to_string())
        } else if approval != ApprovalMode::Required {
            Some(format!(
                "step {id:?}: approve_before needs approval: required"
            ))
        } else if !earlier.contains(&before.value) {
            Some(format!(
                "step {id:?}: approve_before {:?} must name an earlier step (earlier: {})",
                before.value,
                join_or_none(earlier.iter().map(String::as_str))
            ))
        } else {
            None
        };
        if let Some(p) = problem {
            self.problem(Pos::from(before), p);
        }
    }

    fn on_failure(&mut self, id: &str, raw: Option<&Spanned<String>>) -> OnFailure {
        let Some(f) = raw else {
            return OnFailure::Rollback;
        };
        match f.value.as_str() {
            "rollback" => OnFailure::Rollback,
            "halt" => OnFailure::Halt,
            other => {
                self.problem(
                    Pos::from(f),
                    format!("step {id:?}: on_failure {other:?} must be \"rollback\" or \"halt\""),
                );
                OnFailure::Rollback
            }
        }
    }
}

fn join_or_none<'a>(it: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = it.collect();
    if v.is_empty() {
        "none registered".into()
    } else {
        v.join(", ")
    }
}
