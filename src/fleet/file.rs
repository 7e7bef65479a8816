//! The fleet file: its model, the YAML loader and the up-front validation.
//!
//! ```yaml
//! apiVersion: asm-canary.fleet/1
//! clusters:                        # where the clusters come from (one or more sources)
//!   - subscription: 00000000-0000-0000-0000-000000000000   # every managed cluster of it
//!     resource_group: rg-a         # optional narrowing
//!   - id: /subscriptions/…/resourceGroups/…/providers/Microsoft.ContainerService/managedClusters/aks-1
//! stages:                          # run in order
//!   - name: canary
//!     selector: {tags: {asm-canary/ring: canary}}   # or {names: [...]} or {ids: [...]}
//!     max_concurrency: 1           # a count, or a percentage of the stage ("25%"); default 1
//!     after: {soak: 10m, approval: true}
//!   - name: prod
//!     selector: {tags: {asm-canary/ring: prod}}
//!     max_concurrency: "25%"
//! upgrade:                         # per-cluster options; a stage's `upgrade:` overrides them
//!   target: newest                 # or a pinned revision, asm-1-28
//!   canary_namespaces: [payments]
//!   analysis: {checks: checks.yaml}
//!   approve: [start, complete]     # the default
//!   params: {soak: 10m}            # runbook params (--param KEY=VALUE), a stage's over these
//! ```
//!
//! Every problem found is reported at once, each as `file:line:column: message` (the runbook
//! loader's [`Problem`] and [`Pos`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use asm_canary_engine::duration::parse_duration;
use asm_canary_engine::{Pos, Problem};
use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;

use crate::azure::ClusterId;
use crate::azure::id::{check_group, check_name, check_subscription};

/// The `apiVersion` a fleet file must declare.
pub const FLEET_API_VERSION: &str = "asm-canary.fleet/1";

/// The steps of the built-in upgrade runbook that ask for approval: what `approve:` may name.
pub const APPROVABLE_STEPS: [&str; 4] = ["consolidate", "start", "promote", "complete"];

/// The steps a fleet pre-approves on every cluster unless `approve:` says otherwise: the
/// person's decision is the stage's approval, not one prompt per cluster.
const DEFAULT_APPROVE: [&str; 2] = ["start", "complete"];

/// The longest stage name: it becomes part of job ids (GitHub allows 100 characters).
const MAX_STAGE_NAME: usize = 50;

/// A validated fleet file.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetFile {
    /// Where it was loaded from (file path or a label).
    pub origin: String,
    pub sources: Vec<Source>,
    /// In the order they run.
    pub stages: Vec<Stage>,
}

/// Where clusters come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Every managed cluster of a subscription (or of one of its resource groups): needs
    /// ARM's list of managed clusters.
    Subscription {
        subscription: String,
        resource_group: Option<String>,
    },
    /// One cluster, by id (or by subscription, resource group and name).
    Cluster(ClusterId),
}

impl Source {
    /// Whether the clusters of this source are known only after asking ARM.
    pub fn needs_discovery(&self) -> bool {
        matches!(self, Source::Subscription { .. })
    }

    /// Whether `id` is one of this source's clusters (ARM compares names without case).
    pub fn covers(&self, id: &ClusterId) -> bool {
        match self {
            Source::Cluster(c) => same_id(c, id),
            Source::Subscription {
                subscription,
                resource_group,
            } => {
                subscription.eq_ignore_ascii_case(&id.subscription)
                    && resource_group
                        .as_ref()
                        .is_none_or(|rg| rg.eq_ignore_ascii_case(&id.resource_group))
            }
        }
    }
}

/// Two cluster ids naming the same cluster (ARM ids are case-insensitive).
pub(crate) fn same_id(a: &ClusterId, b: &ClusterId) -> bool {
    a.subscription.eq_ignore_ascii_case(&b.subscription)
        && a.resource_group.eq_ignore_ascii_case(&b.resource_group)
        && a.name.eq_ignore_ascii_case(&b.name)
}

/// One ring: its clusters run together, up to `max_concurrency` at once.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// Letters, digits, `-` and `_`, starting with a letter: a job id in CI.
    pub name: String,
    pub selector: Selector,
    pub max_concurrency: Concurrency,
    /// How long to wait after the stage succeeded before the next starts.
    pub soak: Duration,
    /// Whether a person approves before the next stage starts.
    pub approval: bool,
    /// The CI environment whose required reviewers give that approval.
    pub environment: Option<String>,
    /// The file's `upgrade:` defaults with the stage's own `upgrade:` over them.
    pub upgrade: UpgradeSettings,
}

impl Stage {
    /// The environment that carries the approval after this stage (default
    /// `asm-canary-<next stage>`); `None` without `approval`.
    pub fn approval_environment(&self, next_stage: &str) -> Option<String> {
        self.approval.then(|| {
            self.environment
                .clone()
                .unwrap_or_else(|| format!("asm-canary-{next_stage}"))
        })
    }
}

/// Which clusters belong to a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// ARM tags, every one must match (keys without case, values exactly).
    Tags(BTreeMap<String, String>),
    /// Cluster names (without case).
    Names(Vec<String>),
    Ids(Vec<ClusterId>),
}

impl Selector {
    /// Whether a cluster with this id and these tags belongs to the stage.
    pub fn matches(&self, id: &ClusterId, tags: &BTreeMap<String, String>) -> bool {
        match self {
            Selector::Tags(want) => want.iter().all(|(k, v)| {
                tags.iter()
                    .any(|(tk, tv)| tk.eq_ignore_ascii_case(k) && tv == v)
            }),
            Selector::Names(names) => names.iter().any(|n| n.eq_ignore_ascii_case(&id.name)),
            Selector::Ids(ids) => ids.iter().any(|i| same_id(i, id)),
        }
    }
}

/// How many clusters of a stage run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    /// At least 1.
    Count(u32),
    /// 1 to 100 percent of the stage's clusters, rounded up.
    Percent(u8),
}

impl Concurrency {
    /// The number of clusters at once for a stage of `clusters`: a percentage rounded up, and
    /// never below 1 (nor, for a non-empty stage, above its size).
    pub fn resolve(self, clusters: usize) -> usize {
        let n = match self {
            Concurrency::Count(n) => n as usize,
            Concurrency::Percent(p) => (clusters * p as usize).div_ceil(100),
        };
        n.min(clusters).max(1)
    }
}

/// What to upgrade to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The newest upgrade ARM offers each cluster.
    Newest,
    /// One revision (`asm-1-28`) for every cluster of the stage.
    Pinned(String),
}

/// The per-cluster options of `asm-canary upgrade`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeSettings {
    pub target: Target,
    /// `--canary-namespaces`; empty: the tool picks.
    pub canary_namespaces: Vec<String>,
    /// `--analysis-checks`: relative to where asm-canary runs (the repository root in CI).
    pub analysis_checks: Option<PathBuf>,
    /// `--approve`, one per step.
    pub approve: Vec<String>,
    /// `--param KEY=VALUE`: runbook params such as `soak` or `rollout_timeout` (a stage's
    /// keys over the file's).
    pub params: BTreeMap<String, String>,
}

impl UpgradeSettings {
    /// The flags of `asm-canary upgrade` these settings stand for, in a fixed order.
    pub fn upgrade_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        if let Target::Pinned(rev) = &self.target {
            flags.extend(["--to".to_string(), rev.clone()]);
        }
        if !self.canary_namespaces.is_empty() {
            flags.push("--canary-namespaces".into());
            flags.push(self.canary_namespaces.join(","));
        }
        if let Some(path) = &self.analysis_checks {
            flags.push("--analysis-checks".into());
            flags.push(path.display().to_string());
        }
        for (key, value) in &self.params {
            flags.extend(["--param".to_string(), format!("{key}={value}")]);
        }
        for step in &self.approve {
            flags.extend(["--approve".to_string(), step.clone()]);
        }
        flags
    }
}

/// Why a fleet file could not be loaded. Maps to exit 2.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("cannot read fleet file {path}: {source}; check the path")]
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

impl FleetError {
    /// The problems found (empty for a read error).
    pub fn problems(&self) -> &[Problem] {
        match self {
            FleetError::Invalid { problems, .. } => problems,
            FleetError::Read { .. } => &[],
        }
    }
}

fn render_problems(origin: &str, problems: &[Problem]) -> String {
    let lines: Vec<String> = problems
        .iter()
        .map(|p| format!("{origin}:{}:{}: {}", p.pos.line, p.pos.column, p.message))
        .collect();
    if problems.len() > 1 {
        format!(
            "fleet file {origin} has {} problems:\n{}",
            problems.len(),
            lines.join("\n")
        )
    } else {
        lines.join("\n")
    }
}

// ---- raw YAML shape ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFleet {
    #[serde(rename = "apiVersion")]
    api_version: Option<Spanned<String>>,
    #[serde(default)]
    clusters: Option<Spanned<Vec<Spanned<RawSource>>>>,
    #[serde(default)]
    stages: Option<Spanned<Vec<Spanned<RawStage>>>>,
    #[serde(default)]
    upgrade: Option<RawUpgrade>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    #[serde(default)]
    subscription: Option<Spanned<String>>,
    #[serde(default)]
    resource_group: Option<Spanned<String>>,
    #[serde(default)]
    name: Option<Spanned<String>>,
    #[serde(default)]
    id: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    name: Spanned<String>,
    #[serde(default)]
    selector: Option<Spanned<RawSelector>>,
    #[serde(default)]
    max_concurrency: Option<Spanned<Value>>,
    #[serde(default)]
    after: Option<RawAfter>,
    #[serde(default)]
    upgrade: Option<RawUpgrade>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSelector {
    #[serde(default)]
    tags: Option<BTreeMap<String, Spanned<String>>>,
    #[serde(default)]
    names: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    ids: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAfter {
    #[serde(default)]
    soak: Option<Spanned<String>>,
    #[serde(default)]
    approval: Option<Spanned<bool>>,
    #[serde(default)]
    environment: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpgrade {
    #[serde(default)]
    target: Option<Spanned<String>>,
    #[serde(default)]
    canary_namespaces: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    analysis: Option<RawAnalysis>,
    #[serde(default)]
    approve: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    params: Option<BTreeMap<String, Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAnalysis {
    checks: Spanned<String>,
}

impl FleetFile {
    /// Reads and validates the fleet file at `path`.
    pub fn load(path: &Path) -> Result<FleetFile, FleetError> {
        let text = std::fs::read_to_string(path).map_err(|source| FleetError::Read {
            path: path.display().to_string(),
            source,
        })?;
        FleetFile::parse(&text, &path.display().to_string())
    }

    /// Parses and validates fleet file text; `origin` names it in errors (a file path).
    pub fn parse(text: &str, origin: &str) -> Result<FleetFile, FleetError> {
        let invalid = |problems| FleetError::Invalid {
            origin: origin.to_string(),
            problems,
        };
        let raw: RawFleet = serde_saphyr::from_str(text).map_err(|e| {
            let pos = e
                .location()
                .map(|l| Pos {
                    line: l.line() as u32,
                    column: l.column() as u32,
                })
                .unwrap_or_default();
            invalid(vec![Problem {
                pos,
                message: first_line(&e.to_string()),
            }])
        })?;
        let mut v = Validator::default();
        let fleet = v.build(raw, origin);
        if v.problems.is_empty() {
            Ok(fleet)
        } else {
            v.problems.sort_by_key(|p| (p.pos.line, p.pos.column));
            Err(invalid(v.problems))
        }
    }

    /// Whether `id` is a cluster of this fleet's sources.
    pub fn covers(&self, id: &ClusterId) -> bool {
        self.sources.iter().any(|s| s.covers(id))
    }

    /// The clusters named one by one (`id:`, or subscription + resource group + name).
    pub fn explicit_clusters(&self) -> Vec<ClusterId> {
        self.sources
            .iter()
            .filter_map(|s| match s {
                Source::Cluster(id) => Some(id.clone()),
                Source::Subscription { .. } => None,
            })
            .collect()
    }

    /// Whether some source lists clusters only ARM knows (a subscription or resource group).
    pub fn needs_discovery(&self) -> bool {
        self.sources.iter().any(Source::needs_discovery)
    }
}

/// The first line of a YAML error, without the `error: line L column C:` prefix (the position
/// is rendered by [`FleetError`]).
fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or(s).trim();
    let rest = line.strip_prefix("error: ").unwrap_or(line);
    if let Some(after) = rest.strip_prefix("line ")
        && let Some((pos, msg)) = after.split_once(": ")
        && pos.contains(" column ")
    {
        return msg.to_string();
    }
    rest.to_string()
}

/// Whether `name` can be a stage name: a job id in GitHub Actions (letters, digits, `-`, `_`)
/// and, with `-` read as `_`, in Azure Pipelines (letters, digits, `_`, not starting with a
/// digit).
fn valid_stage_name(name: &str) -> bool {
    name.len() <= MAX_STAGE_NAME
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A CI environment name: letters, digits, `-`, `_` and `.`.
fn valid_environment(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The key two stage names must not share: ids are compared without case, and Azure Pipelines
/// ids allow no `-` (it is written `_` there).
fn stage_key(name: &str) -> String {
    name.to_ascii_lowercase().replace('-', "_")
}

#[derive(Default)]
struct Validator {
    problems: Vec<Problem>,
}

const FILE_START: Pos = Pos { line: 1, column: 1 };

impl Validator {
    fn problem(&mut self, pos: Pos, message: impl Into<String>) {
        self.problems.push(Problem {
            pos,
            message: message.into(),
        });
    }

    fn build(&mut self, raw: RawFleet, origin: &str) -> FleetFile {
        match &raw.api_version {
            Some(v) if v.value == FLEET_API_VERSION => {}
            Some(v) => self.problem(
                Pos::from(v),
                format!(
                    "apiVersion {:?} is not supported; write apiVersion: {FLEET_API_VERSION}",
                    v.value
                ),
            ),
            None => self.problem(
                FILE_START,
                format!("apiVersion is missing; write apiVersion: {FLEET_API_VERSION}"),
            ),
        }
        let sources = match &raw.clusters {
            Some(list) if !list.value.is_empty() => {
                list.value.iter().filter_map(|s| self.source(s)).collect()
            }
            Some(list) => {
                self.problem(
                    Pos::from(list),
                    "clusters: the list is empty; name at least one subscription or cluster id",
                );
                Vec::new()
            }
            None => {
                self.problem(FILE_START, "clusters is missing: list where the clusters come from (subscription, with an optional resource_group, or id)");
                Vec::new()
            }
        };
        let defaults = self.upgrade(raw.upgrade.as_ref(), &base_settings());
        let stages = self.stages(raw.stages.as_ref(), &defaults);
        FleetFile {
            origin: origin.to_string(),
            sources,
            stages,
        }
    }

    fn source(&mut self, s: &Spanned<RawSource>) -> Option<Source> {
        let RawSource {
            subscription,
            resource_group,
            name,
            id,
        } = &s.value;
        match (subscription, id) {
            (None, Some(id)) => {
                if let Some(extra) = resource_group.as_ref().or(name.as_ref()) {
                    self.problem(
                        Pos::from(extra),
                        "a source with id: takes no resource_group or name (the id has them)",
                    );
                }
                match id.value.parse::<ClusterId>() {
                    Ok(c) => Some(Source::Cluster(c)),
                    Err(e) => {
                        self.problem(Pos::from(id), format!("id: {e}"));
                        None
                    }
                }
            }
            (Some(sub), None) => {
                self.subscription_source(sub, resource_group.as_ref(), name.as_ref())
            }
            (Some(_), Some(id)) => {
                self.problem(Pos::from(id), "a source has either subscription: (with an optional resource_group and name) or id:, not both");
                None
            }
            (None, None) => {
                self.problem(Pos::from(s), "a source needs subscription: (every cluster of it, or with resource_group and name one cluster) or id: (one cluster)");
                None
            }
        }
    }

    fn subscription_source(
        &mut self,
        sub: &Spanned<String>,
        rg: Option<&Spanned<String>>,
        name: Option<&Spanned<String>>,
    ) -> Option<Source> {
        let mut ok = true;
        if let Err(e) = check_subscription(&sub.value) {
            self.problem(Pos::from(sub), format!("subscription: {e}"));
            ok = false;
        }
        if let Some(rg) = rg
            && let Err(e) = check_group(&rg.value)
        {
            self.problem(Pos::from(rg), format!("resource_group: {e}"));
            ok = false;
        }
        if let Some(n) = name {
            if rg.is_none() {
                self.problem(Pos::from(n), "name: needs resource_group: too (a cluster is subscription + resource group + name)");
                ok = false;
            } else if let Err(e) = check_name(&n.value) {
                self.problem(Pos::from(n), format!("name: {e}"));
                ok = false;
            }
        }
        if !ok {
            return None;
        }
        Some(match (rg, name) {
            (Some(rg), Some(n)) => {
                Source::Cluster(ClusterId::new(&sub.value, &rg.value, &n.value).ok()?)
            }
            _ => Source::Subscription {
                subscription: sub.value.clone(),
                resource_group: rg.map(|r| r.value.clone()),
            },
        })
    }

    fn stages(
        &mut self,
        raw: Option<&Spanned<Vec<Spanned<RawStage>>>>,
        defaults: &UpgradeSettings,
    ) -> Vec<Stage> {
        let list = match raw {
            Some(list) if !list.value.is_empty() => list,
            Some(list) => {
                self.problem(
                    Pos::from(list),
                    "stages: the list is empty; a fleet needs at least one stage",
                );
                return Vec::new();
            }
            None => {
                self.problem(
                    FILE_START,
                    "stages is missing: a fleet needs at least one stage (name, selector)",
                );
                return Vec::new();
            }
        };
        let mut seen: HashMap<String, (String, Pos)> = HashMap::new();
        for s in &list.value {
            let name = &s.value.name;
            let pos = Pos::from(name);
            match seen.get(&stage_key(&name.value)) {
                Some((first, at)) if *first == name.value => self.problem(pos, format!(
                    "duplicate stage name {:?} (first at line {}, column {})",
                    name.value, at.line, at.column
                )),
                Some((first, at)) => self.problem(pos, format!(
                    "stage name {:?} is the same job id as {first:?} (line {}, column {}): ids are compared without case, and Azure Pipelines writes '-' as '_'",
                    name.value, at.line, at.column
                )),
                None => {
                    seen.insert(stage_key(&name.value), (name.value.clone(), pos));
                }
            }
        }
        let last = list.value.len() - 1;
        list.value
            .iter()
            .enumerate()
            .map(|(i, s)| self.stage(s, defaults, i == last))
            .collect()
    }

    fn stage(&mut self, s: &Spanned<RawStage>, defaults: &UpgradeSettings, last: bool) -> Stage {
        let RawStage {
            name,
            selector,
            max_concurrency,
            after,
            upgrade,
        } = &s.value;
        if !valid_stage_name(&name.value) {
            self.problem(Pos::from(name), format!(
                "stage name {:?}: use letters, digits, '-' and '_', starting with a letter, at most {MAX_STAGE_NAME} characters (it becomes a job id in GitHub Actions and Azure Pipelines)",
                name.value
            ));
        }
        let selector = match selector {
            Some(sel) => self.selector(sel, &name.value),
            None => {
                self.problem(
                    Pos::from(s),
                    format!(
                        "stage {:?} has no selector: give selector: with tags, names or ids",
                        name.value
                    ),
                );
                Selector::Names(Vec::new())
            }
        };
        let max_concurrency = match max_concurrency {
            Some(v) => self.concurrency(v),
            None => Concurrency::Count(1),
        };
        let (soak, approval, environment) = self.after(after.as_ref(), &name.value, last);
        Stage {
            name: name.value.clone(),
            selector,
            max_concurrency,
            soak,
            approval,
            environment,
            upgrade: self.upgrade(upgrade.as_ref(), defaults),
        }
    }

    fn selector(&mut self, sel: &Spanned<RawSelector>, stage: &str) -> Selector {
        let RawSelector { tags, names, ids } = &sel.value;
        let given = [tags.is_some(), names.is_some(), ids.is_some()]
            .iter()
            .filter(|g| **g)
            .count();
        if given != 1 {
            self.problem(Pos::from(sel), format!(
                "stage {stage:?}: a selector has exactly one of tags, names or ids (found {given})"
            ));
            return Selector::Names(Vec::new());
        }
        let empty = tags.as_ref().is_some_and(BTreeMap::is_empty)
            || names.as_ref().is_some_and(Vec::is_empty)
            || ids.as_ref().is_some_and(Vec::is_empty);
        if empty {
            self.problem(Pos::from(sel), format!(
                "stage {stage:?}: the selector is empty; it must name at least one tag, name or id"
            ));
        }
        if let Some(tags) = tags {
            return Selector::Tags(
                tags.iter()
                    .map(|(k, v)| (k.clone(), v.value.clone()))
                    .collect(),
            );
        }
        if let Some(names) = names {
            for n in names {
                if let Err(e) = check_name(&n.value) {
                    self.problem(Pos::from(n), format!("names: {e}"));
                }
            }
            return Selector::Names(names.iter().map(|n| n.value.clone()).collect());
        }
        let mut parsed = Vec::new();
        for id in ids.iter().flatten() {
            match id.value.parse::<ClusterId>() {
                Ok(c) => parsed.push(c),
                Err(e) => self.problem(Pos::from(id), format!("ids: {e}")),
            }
        }
        Selector::Ids(parsed)
    }

    fn concurrency(&mut self, v: &Spanned<Value>) -> Concurrency {
        match parse_concurrency(&v.value) {
            Ok(c) => c,
            Err(e) => {
                self.problem(Pos::from(v), format!("max_concurrency: {e}"));
                Concurrency::Count(1)
            }
        }
    }

    fn after(
        &mut self,
        after: Option<&RawAfter>,
        stage: &str,
        last: bool,
    ) -> (Duration, bool, Option<String>) {
        let Some(RawAfter {
            soak,
            approval,
            environment,
        }) = after
        else {
            return (Duration::ZERO, false, None);
        };
        let soak = match soak {
            Some(s) => parse_duration(&s.value).unwrap_or_else(|e| {
                self.problem(Pos::from(s), format!("after.soak: {e}"));
                Duration::ZERO
            }),
            None => Duration::ZERO,
        };
        let approved = approval.as_ref().is_some_and(|a| a.value);
        if let Some(a) = approval
            && a.value
            && last
        {
            self.problem(Pos::from(a), format!(
                "stage {stage:?} is the last stage: an approval after it has nothing to hold back; remove it"
            ));
        }
        if let Some(env) = environment {
            if !approved {
                self.problem(
                    Pos::from(env),
                    "after.environment is the approval's environment: it needs approval: true",
                );
            } else if !valid_environment(&env.value) {
                self.problem(
                    Pos::from(env),
                    format!(
                        "after.environment {:?}: use letters, digits, '-', '_' and '.'",
                        env.value
                    ),
                );
            }
        }
        (
            soak,
            approved,
            environment.as_ref().map(|e| e.value.clone()),
        )
    }

    /// `raw` over `defaults`, key by key.
    fn upgrade(&mut self, raw: Option<&RawUpgrade>, defaults: &UpgradeSettings) -> UpgradeSettings {
        let mut out = defaults.clone();
        let Some(raw) = raw else { return out };
        if let Some(t) = &raw.target {
            out.target =
                match t.value.as_str() {
                    "newest" => Target::Newest,
                    rev => match rev.parse::<crate::istio::Revision>() {
                        Ok(r) => Target::Pinned(r.to_string()),
                        Err(_) => {
                            self.problem(Pos::from(t), format!(
                            "target {rev:?}: write newest, or a revision name such as asm-1-28"
                        ));
                            Target::Newest
                        }
                    },
                };
        }
        if let Some(nss) = &raw.canary_namespaces {
            for ns in nss
                .iter()
                .filter(|ns| !crate::k8s::is_namespace_name(&ns.value))
            {
                self.problem(Pos::from(ns), format!(
                    "canary_namespaces: {:?} is not a namespace name (lower-case letters, digits and '-', at most 63)",
                    ns.value
                ));
            }
            out.canary_namespaces = nss.iter().map(|n| n.value.clone()).collect();
        }
        if let Some(a) = &raw.analysis {
            if a.checks.value.trim().is_empty() {
                self.problem(Pos::from(&a.checks), "analysis.checks: the path is empty");
            }
            out.analysis_checks = Some(PathBuf::from(&a.checks.value));
        }
        if let Some(steps) = &raw.approve {
            for s in steps
                .iter()
                .filter(|s| !APPROVABLE_STEPS.contains(&s.value.as_str()))
            {
                self.problem(
                    Pos::from(s),
                    format!(
                        "approve: {:?} is not a step that asks for approval; approvable steps: {}",
                        s.value,
                        APPROVABLE_STEPS.join(", ")
                    ),
                );
            }
            out.approve = steps.iter().map(|s| s.value.clone()).collect();
        }
        for (key, value) in raw.params.iter().flatten() {
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                self.problem(
                    Pos::from(value),
                    format!("params: {key:?} is not a runbook param name (letters, digits, _)"),
                );
            }
            out.params.insert(key.clone(), value.value.clone());
        }
        out
    }
}

/// The settings before the file's `upgrade:`.
fn base_settings() -> UpgradeSettings {
    UpgradeSettings {
        target: Target::Newest,
        canary_namespaces: Vec::new(),
        analysis_checks: None,
        approve: DEFAULT_APPROVE.iter().map(|s| s.to_string()).collect(),
        params: Default::default(),
    }
}

/// `3`, `"3"` or `"25%"`.
fn parse_concurrency(v: &Value) -> Result<Concurrency, String> {
    let hint =
        "write a count of at least 1 (3) or a percentage of the stage from 1% to 100% (\"25%\")";
    let count = |n: Option<u64>| match n {
        Some(n) if n >= 1 && n <= u32::MAX as u64 => Ok(Concurrency::Count(n as u32)),
        _ => Err(format!("{v} is not a whole number of at least 1; {hint}")),
    };
    match v {
        Value::Number(n) => count(n.as_u64()),
        Value::String(s) => {
            let s = s.trim();
            if let Some(p) = s.strip_suffix('%') {
                match p.trim().parse::<u8>() {
                    Ok(p) if (1..=100).contains(&p) => Ok(Concurrency::Percent(p)),
                    _ => Err(format!("{s:?} is not a percentage from 1% to 100%; {hint}")),
                }
            } else {
                count(s.parse::<u64>().ok()).map_err(|_| format!("{s:?}: {hint}"))
            }
        }
        other => Err(format!("{other}: {hint}")),
    }
}

#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;
