//! What a run is asked to do, shared by `plan`, `upgrade` and `demo`: the upgrade options
//! (target, tag, injection mode, waves, soak, force, params) and the runbook they run.

use std::path::Path;
use std::sync::Arc;

use asm_canary_engine::checkpoint::RunbookRef;
use asm_canary_engine::{Registry, Runbook};
use clap::Args;
use serde_json::{Map, Value, json};

use super::error::CliError;
use crate::steps::Env;

/// The canary runbook, compiled in; `--runbook FILE` replaces it.
pub const EMBEDDED_RUNBOOK: &str = include_str!("../../runbooks/asm-canary-upgrade.yaml");
const EMBEDDED_RUNBOOK_NAME: &str = "runbooks/asm-canary-upgrade.yaml";

/// The runbooks compiled in: the upgrade and the day-2 jobs. A checkpoint names its
/// runbook, so `resume` and `rollback` pick the one the run was started with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Builtin {
    #[default]
    Upgrade,
    PatchRestart,
    Onboard,
}

impl Builtin {
    const ALL: [Builtin; 3] = [Builtin::Upgrade, Builtin::PatchRestart, Builtin::Onboard];

    /// The runbook's text and file name.
    pub fn source(self) -> (&'static str, &'static str) {
        match self {
            Builtin::Upgrade => (EMBEDDED_RUNBOOK, EMBEDDED_RUNBOOK_NAME),
            Builtin::PatchRestart => (
                include_str!("../../runbooks/asm-canary-patch-restart.yaml"),
                "runbooks/asm-canary-patch-restart.yaml",
            ),
            Builtin::Onboard => (
                include_str!("../../runbooks/asm-canary-onboard.yaml"),
                "runbooks/asm-canary-onboard.yaml",
            ),
        }
    }

    /// The runbook's `name:`.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Upgrade => "asm-canary-upgrade",
            Builtin::PatchRestart => "asm-canary-patch-restart",
            Builtin::Onboard => "asm-canary-onboard",
        }
    }

    /// Checks `params` against this runbook's declared params (names, types, ranges) without
    /// connecting: a bad value is refused (exit 2) before Azure is asked anything, with the
    /// engine's words.
    pub fn check_params(self, params: &Map<String, Value>) -> Result<(), CliError> {
        let (text, origin) = self.source();
        let rb = asm_canary_engine::Runbook::parse_params(text, origin)
            .map_err(|e| CliError::internal("the built-in runbook", e))?;
        rb.bind_params(params).map(drop).map_err(|detail| {
            CliError::bad(format!("bad params for runbook {}: {detail}", rb.name))
        })
    }

    /// The built-in runbook called `name`.
    pub fn named(name: &str) -> Option<Builtin> {
        Self::ALL.into_iter().find(|b| b.name() == name)
    }
}

/// What to upgrade to and how.
#[derive(Debug, Clone, Args)]
pub struct UpgradeOptions {
    /// Target revision (asm-X-Y); default: the newest upgrade ARM offers.
    #[arg(long, value_name = "REV")]
    pub to: Option<String>,
    /// The revision tag to move (istioctl tag set compatible).
    #[arg(long, default_value = "prod")]
    pub tag: String,
    /// Create the `--tag` revision tag although no tag webhook and no namespace uses it yet
    /// (without it, such a tag is refused as a likely typo).
    #[arg(long)]
    pub create_tag: bool,
    /// `tag`: move the revision tag; `label`: relabel namespaces istio.io/rev=<target>.
    #[arg(long, default_value = "tag", value_parser = ["tag", "label"])]
    pub mode: String,
    /// The canary wave's namespaces (comma-separated or repeated): relabelled to the target
    /// and restarted while the tag still names the source; default: the namespace with the
    /// fewest workloads to move.
    #[arg(long, value_delimiter = ',', value_name = "NS", value_parser = super::args::canary_namespace_name)]
    pub canary_namespaces: Vec<String>,
    /// Workloads restarted at once within a wave: a count (4) or a percentage of the wave
    /// (25%); default: the runbook's (100%: the wave is the blast radius, its gate the check).
    #[arg(long, value_name = "N|P%", allow_hyphen_values = true)]
    pub parallelism: Option<String>,
    /// How the waves after the canary grow: a factor (x2, the default) or cumulative
    /// percentages of the remaining workloads (10%,30%,100%).
    #[arg(long, value_name = "xN|P%,…")]
    pub waves: Option<String>,
    /// Ask for approval after the canary wave passed, before the tag moves (step `promote`:
    /// a prompt, or `--approve promote` when unattended).
    #[arg(long)]
    pub promote_approval: bool,
    /// How long every proxy must stay SYNCED before verify passes (e.g. 2m).
    #[arg(long)]
    pub soak: Option<String>,
    /// Overwrite a different existing shared ConfigMap of the target revision.
    #[arg(long)]
    pub force: bool,
    /// Restart the pods of `OnDelete` StatefulSets and DaemonSets one at a time (delete a pod,
    /// wait for its replacement ready and injected by the new revision, then the next). Without
    /// it, a run that would have to move such pods is refused before any change (exit 2): a
    /// rollout restart does not replace them. Paused Deployments are always refused up front:
    /// resume them (`kubectl rollout resume`) or take their namespace out of the mesh first.
    #[arg(long)]
    pub restart_ondelete: bool,
    /// Custom analysis checks, judged instead of Flagger's two on every wave and at the end
    /// (with --prometheus): a YAML list of `name`, `query` (PromQL with {{ namespace }},
    /// {{ workloads }}, {{ interval }}), `min` and/or `max`, `relative`.
    #[arg(long, value_name = "FILE")]
    pub analysis_checks: Option<std::path::PathBuf>,
    /// Set any runbook param: KEY=VALUE (repeatable).
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
}

impl UpgradeOptions {
    /// The tag a tag-mode run moves, and whether it may be created; `None` in label mode.
    pub fn tag_request(&self) -> Option<crate::steps::plan::TagRequest> {
        (self.mode == "tag").then(|| crate::steps::plan::TagRequest {
            name: self.tag.clone(),
            create: self.create_tag,
        })
    }

    pub fn params(&self) -> Result<Map<String, Value>, CliError> {
        let UpgradeOptions {
            to,
            tag,
            create_tag: _,
            mode,
            canary_namespaces,
            parallelism,
            waves,
            promote_approval,
            soak,
            force,
            restart_ondelete,
            analysis_checks,
            params,
        } = self;
        let mut map = Map::new();
        if let Some(to) = to {
            to.parse::<crate::istio::Revision>()
                .map_err(|e| CliError::bad_because(format!("--to {to:?}: {e}"), e))?;
            map.insert("to".into(), json!(to));
        }
        map.insert("tag".into(), json!(tag));
        map.insert("injection_mode".into(), json!(mode));
        // `--canary-namespaces ""` (an empty pipeline variable) is no choice: the tool picks
        let canary_namespaces: Vec<&str> = (canary_namespaces.iter())
            .map(|n| n.trim())
            .filter(|n| !n.is_empty())
            .collect();
        map.insert("canary_namespaces".into(), json!(canary_namespaces));
        // Only when given: the runbook's defaults otherwise (a --runbook need not declare them).
        if let Some(p) = parallelism {
            map.insert("parallelism".into(), json!(p));
        }
        if let Some(w) = waves {
            map.insert("waves".into(), json!(w));
        }
        if *promote_approval {
            map.insert("promote_approval".into(), json!(true));
        }
        if let Some(soak) = soak {
            map.insert("soak".into(), json!(soak));
        }
        map.insert("force".into(), json!(force));
        // Only when asked: a runbook given with --runbook need not declare it.
        if *restart_ondelete {
            map.insert("restart_ondelete".into(), json!(true));
        }
        map.extend(param_pairs(params)?);
        if let Some(path) = analysis_checks {
            map.insert("analysis_checks".into(), read_checks(path)?);
        }
        // Strings to the runbook, so checked here, before anything else happens.
        if let Some(w) = map.get("waves").and_then(Value::as_str) {
            crate::steps::wave::Growth::parse(w).map_err(CliError::bad)?;
        }
        if let Some(v) = map.get("analysis_checks") {
            crate::analysis::checks_from_value(v)
                .map_err(|e| CliError::bad(format!("analysis checks: {e}")))?;
        }
        Ok(map)
    }
}

/// The checks of `--analysis-checks FILE` as the param's value; a YAML error says where.
fn read_checks(path: &Path) -> Result<Value, CliError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::bad_because(format!("--analysis-checks {shown}: {e}"), e))?;
    let checks: Vec<crate::analysis::Check> = serde_saphyr::from_str(&text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!(":{}:{}", l.line(), l.column()))
            .unwrap_or_default();
        let first = e.to_string();
        let first = first.lines().next().unwrap_or_default().to_string();
        CliError::bad(format!(
            "--analysis-checks {shown}{at}: {first} (a list of checks: name, query, min and/or max, relative)"
        ))
    })?;
    crate::analysis::validate_checks(&checks)
        .map_err(|e| CliError::bad(format!("--analysis-checks {shown}: {e}")))?;
    Ok(json!(checks))
}

/// `--param KEY=VALUE` flags as runbook params (string values; the runbook checks their type).
pub fn param_pairs(params: &[String]) -> Result<Map<String, Value>, CliError> {
    let mut map = Map::new();
    for p in params {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| CliError::bad(format!("--param {p:?}: expected KEY=VALUE")))?;
        map.insert(k.trim().to_string(), json!(v));
    }
    Ok(map)
}

/// Loads the runbook (embedded or `--runbook`) against the canary registry.
pub fn load_runbook(path: Option<&Path>, env: Arc<Env>) -> Result<(Runbook, Registry), CliError> {
    load_builtin_or(path, Builtin::Upgrade, env)
}

/// Loads `--runbook` when given, else the built-in runbook `builtin`.
pub fn load_builtin_or(
    path: Option<&Path>,
    builtin: Builtin,
    env: Arc<Env>,
) -> Result<(Runbook, Registry), CliError> {
    let registry = crate::steps::registry(env);
    let runbook = match path {
        Some(p) => {
            Runbook::load(p, &registry).map_err(|e| CliError::bad_because(e.to_string(), e))?
        }
        None => {
            let (text, name) = builtin.source();
            Runbook::parse(text, name, &registry)
                .map_err(|e| CliError::internal("the built-in runbook does not load", e))?
        }
    };
    Ok((runbook, registry))
}

/// The runbook a resumed run goes on with, and a note to say when it is not this build's:
/// `--runbook FILE`, else the built-in `builtin` — unless `kept` (the checkpoint's runbook) is
/// another version of that built-in runbook. Then the copy the checkpoint kept: a run paused
/// under one asm-canary version finishes under the next with the steps it started with. A
/// checkpoint without a copy (written before 1.1) is left to the executor, which refuses it
/// unless `--force`.
pub fn load_for_resume(
    path: Option<&Path>,
    builtin: Builtin,
    kept: Option<&RunbookRef>,
    env: Arc<Env>,
) -> Result<(Runbook, Registry, Option<String>), CliError> {
    let (runbook, registry) = load_builtin_or(path, builtin, env)?;
    let Some((kept, text)) = kept
        .filter(|k| path.is_none() && k.name == builtin.name() && k.sha256 != runbook.sha256)
        .and_then(|k| Some((k, k.kept_text()?)))
    else {
        return Ok((runbook, registry, None));
    };
    let short = |sha: &str| sha.get(..12).unwrap_or(sha).to_string();
    let origin = format!("{} (the copy kept in the checkpoint)", builtin.source().1);
    let started = Runbook::parse(text, &origin, &registry).map_err(|e| {
        CliError::bad_because(
            format!(
                "this run started with another version of the built-in runbook {} (sha256 {}), kept in its checkpoint, and this asm-canary cannot run it: {e}; continue the run with the asm-canary version that started it, or pass --force to go on with this version's runbook (sha256 {}; steps are matched by id)",
                kept.name,
                short(&kept.sha256),
                short(&runbook.sha256)
            ),
            e,
        )
    })?;
    let note = format!(
        "this run started with another version of the built-in runbook {} (sha256 {}; this asm-canary's is {}): it goes on with that one, kept in its checkpoint",
        kept.name,
        short(&kept.sha256),
        short(&runbook.sha256)
    );
    Ok((started, registry, Some(note)))
}

/// Refuses `--approve` names that are not steps of `runbook` asking for approval: a typo would
/// otherwise be accepted silently, and the run would pause where the person meant to approve.
pub fn check_approvals(runbook: &Runbook, approve: &[String]) -> Result<(), CliError> {
    let approvable: Vec<&str> = runbook
        .steps
        .iter()
        .filter(|s| s.approval == asm_canary_engine::ApprovalMode::Required)
        .map(|s| s.id.as_str())
        .collect();
    match approve.iter().find(|a| !approvable.contains(&a.as_str())) {
        None => Ok(()),
        Some(wrong) => Err(CliError::bad(format!(
            "--approve {wrong:?}: not a step of runbook {} that asks for approval; approvable steps: {}; nothing was changed",
            runbook.name,
            if approvable.is_empty() {
                "none".to_string()
            } else {
                approvable.join(", ")
            }
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        upgrade: UpgradeOptions,
    }

    fn canaries(args: &[&str]) -> Value {
        let cmd = Cmd::try_parse_from(std::iter::once("upgrade").chain(args.iter().copied()))
            .expect("parses");
        cmd.upgrade.params().expect("params")["canary_namespaces"].clone()
    }

    /// Regression: `--canary-namespaces ""` (an empty pipeline variable) asked for a canary
    /// named "", which a new run refuses; it is no choice, as `--param canary_namespaces=`.
    #[test]
    fn empty_canary_namespaces_are_no_choice() {
        assert_eq!(canaries(&["--canary-namespaces", ""]), json!([]));
        assert_eq!(canaries(&["--canary-namespaces", ",,"]), json!([]));
        assert_eq!(
            canaries(&["--canary-namespaces", " payments, ,orders"]),
            json!(["payments", "orders"])
        );
        assert_eq!(canaries(&[]), json!([]));
    }
}
