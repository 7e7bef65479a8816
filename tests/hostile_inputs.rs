//! Hostile and careless inputs, generated: valid checkpoints, runbooks, scenario files and
//! kubeconfigs, mutated (truncated, bytes flipped, lines dropped or duplicated, numbers out of
//! range, deep nesting), fed to the parsers the commands use. For every case: no panic; a
//! refused input is the typed error naming the file (and, for a syntax error, the position).
//! A few refused cases also go through the real binary: exit 2, the file named, nothing
//! created or changed.
//!
//! Seeded, so every run tries the same cases. CI runs `CASES` per input type; the soak is
//! `ASM_CANARY_SOAK_CASES=20000 cargo test --test hostile_inputs -- --ignored --nocapture`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use asm_canary_engine::{Access, Checkpoint, Registry, Runbook};
use asm_canary_sim::{Scenario, ScenarioError};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// Cases per input type in CI (about a second each on a laptop).
const CASES: u32 = 256;
const SEED: [u8; 32] = *b"asm-canary hostile inputs seed 1";

/// Numbers a careless or hostile edit puts where a small one was.
const OUT_OF_RANGE: &[&str] = &[
    "-1",
    "0",
    "-0",
    "1e308",
    "-1e308",
    ".nan",
    ".inf",
    "18446744073709551616",
    "9223372036854775807",
    "-9223372036854775808",
    "99999999999999999999999999999",
    "4294967296",
];

#[derive(Clone, Debug)]
enum Mutation {
    Truncate(usize),
    FlipByte(usize, u8),
    DropLine(usize),
    DuplicateLine(usize),
    /// Replace the n-th number with one of [`OUT_OF_RANGE`].
    Number(usize, usize),
    /// Nest a value `depth` levels deep in front of line n.
    Nest(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 1u8..=255).prop_map(|(i, m)| Mutation::FlipByte(i, m)),
        any::<usize>().prop_map(Mutation::DropLine),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), 0..OUT_OF_RANGE.len()).prop_map(|(n, v)| Mutation::Number(n, v)),
        (any::<usize>(), prop_oneof![1usize..64, 100usize..3000])
            .prop_map(|(n, d)| Mutation::Nest(n, d)),
    ]
}

fn apply(seed: &[u8], mutations: &[Mutation], json: bool) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for m in mutations {
        bytes = apply_one(bytes, m, json);
    }
    bytes
}

fn apply_one(mut bytes: Vec<u8>, m: &Mutation, json: bool) -> Vec<u8> {
    let lines =
        |b: &[u8]| -> Vec<Vec<u8>> { b.split(|c| *c == b'\n').map(<[u8]>::to_vec).collect() };
    match *m {
        Mutation::Truncate(i) => {
            let at = i % (bytes.len() + 1);
            bytes.truncate(at);
            bytes
        }
        Mutation::FlipByte(i, mask) => {
            if !bytes.is_empty() {
                let at = i % bytes.len();
                bytes[at] ^= mask;
            }
            bytes
        }
        Mutation::DropLine(i) | Mutation::DuplicateLine(i) => {
            let mut ls = lines(&bytes);
            let at = i % ls.len();
            if matches!(m, Mutation::DropLine(_)) {
                ls.remove(at);
            } else {
                let line = ls[at].clone();
                ls.insert(at, line);
            }
            ls.join(&b'\n')
        }
        Mutation::Number(n, v) => {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let spans: Vec<(usize, usize)> = number_spans(&text);
            if spans.is_empty() {
                return bytes;
            }
            let (start, end) = spans[n % spans.len()];
            let mut value = OUT_OF_RANGE[v].to_string();
            if json && value.starts_with('.') {
                value = format!("\"{value}\"");
            }
            format!("{}{value}{}", &text[..start], &text[end..]).into_bytes()
        }
        Mutation::Nest(n, depth) => {
            let mut ls = lines(&bytes);
            let at = n % ls.len();
            let nested = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
            let line = if json {
                format!("\"deep\": {nested},")
            } else {
                format!("deep: {nested}")
            };
            ls.insert(at, line.into_bytes());
            ls.join(&b'\n')
        }
    }
}

/// Byte spans of the decimal numbers in `text`.
fn number_spans(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() && (i == 0 || !b[i - 1].is_ascii_alphanumeric()) {
            let start = i;
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                i += 1;
            }
            if i == b.len() || !b[i].is_ascii_alphabetic() && b[i] != b'-' {
                out.push((start, i));
            }
        }
        i += 1;
    }
    out
}

/// What one parse did with one case.
enum Verdict {
    Accepted,
    Refused,
}

#[derive(Default)]
struct Tally {
    tried: u64,
    accepted: u64,
    refused: u64,
    panics: Vec<String>,
    /// Refusals that did not name the file or (syntax) position.
    unnamed: Vec<String>,
    /// Some refused inputs, for the real binary.
    refused_samples: Vec<Vec<u8>>,
}

impl Tally {
    fn print(&self, what: &str) {
        println!(
            "hostile inputs: {what}: {} cases tried, {} refused, {} accepted, panics = {}",
            self.tried,
            self.refused,
            self.accepted,
            self.panics.len()
        );
    }
    fn check(&self, what: &str) {
        assert!(
            self.panics.is_empty(),
            "{what}: {} panics; first input:\n{}",
            self.panics.len(),
            self.panics[0]
        );
        assert!(
            self.unnamed.is_empty(),
            "{what}: {} refusals without file or position; first:\n{}",
            self.unnamed.len(),
            self.unnamed[0]
        );
    }
}

/// Runs `cases` mutations of each seed through `parse` (`Err(message)` = a refusal whose
/// message is not as it should be).
fn fuzz(
    what: &str,
    seeds: &[Vec<u8>],
    cases: u32,
    json: bool,
    parse: impl Fn(&[u8]) -> Result<Verdict, String>,
) -> Tally {
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &SEED));
    let strategy = (0..seeds.len(), prop::collection::vec(mutation(), 1..4));
    let mut tally = Tally::default();
    // Seeds themselves must be accepted: else the mutations test nothing.
    for s in seeds {
        assert!(
            matches!(parse(s), Ok(Verdict::Accepted)),
            "{what}: a seed is refused:\n{}",
            String::from_utf8_lossy(s)
        );
    }
    for _ in 0..cases {
        let (seed, mutations) = strategy.new_tree(&mut runner).expect("a case").current();
        let input = apply(&seeds[seed], &mutations, json);
        tally.tried += 1;
        let shown = || {
            format!(
                "{mutations:?}\n---\n{}",
                String::from_utf8_lossy(&input[..input.len().min(4000)])
            )
        };
        match catch_unwind(AssertUnwindSafe(|| parse(&input))) {
            Ok(Ok(Verdict::Accepted)) => tally.accepted += 1,
            Ok(Ok(Verdict::Refused)) => {
                tally.refused += 1;
                if tally.refused_samples.len() < 4 {
                    tally.refused_samples.push(input.clone());
                }
            }
            Ok(Err(message)) => {
                tally.refused += 1;
                tally.unnamed.push(format!("{message}\n{}", shown()));
            }
            Err(_) => tally.panics.push(shown()),
        }
    }
    tally.print(what);
    tally
}

fn checkpoint_seeds() -> Vec<Vec<u8>> {
    let target = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-sim/providers/Microsoft.ContainerService/managedClusters/aks-sim";
    let full = serde_json::json!({
        "schema_version": "1.0", "kind": "asm-canary/checkpoint", "run_id": "r-1",
        "target": target,
        "runbook": {"name": "asm-canary-upgrade", "sha256": "abc", "origin": "runbooks/asm-canary-upgrade.yaml"},
        "params": {"tag": "prod", "parallelism": 4, "soak": "2m", "canary_namespaces": ["payments"], "force": false},
        "state": "paused", "reason": "awaiting approval of complete",
        "rollback_requested": false,
        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:10:00Z",
        "steps": [
            {"id": "preflight", "status": "succeeded", "attempts": 1, "action_done": true,
             "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:00:05Z",
             "outputs": {"source": "asm-1-27", "upgrade_needed": true}},
            {"id": "restart", "status": "succeeded", "attempts": 2, "action_done": true},
            {"id": "complete", "status": "awaiting_approval"}
        ],
        "rollback": [{"id": "restore-tag", "status": "pending"}],
        "journal": [{
            "seq": 1, "step": "restart", "phase": "forward", "attempt": 1,
            "kind": "restart-workload", "target": "apps/v1/Deployment/payments/api",
            "details": {"old": "2026-01-01T00:00:00Z", "replicas": 3},
            "status": "done", "result": {"generation": 7},
            "recorded_at": "2026-01-01T00:01:00Z", "done_at": "2026-01-01T00:02:00Z"
        }],
        "approvals": [{"step": "start", "by": "terminal:ops", "at": "2026-01-01T00:00:30Z"}],
        "summary": {}
    });
    let minimal = serde_json::json!({
        "schema_version": "1.0", "kind": "asm-canary/checkpoint", "run_id": "r-2",
        "target": target, "runbook": {"name": "asm-canary-upgrade", "sha256": "abc"},
        "params": {}, "state": "running",
        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
        "steps": [], "rollback": [], "journal": [], "summary": {}
    });
    vec![
        serde_json::to_vec_pretty(&full).unwrap(),
        serde_json::to_vec_pretty(&minimal).unwrap(),
    ]
}

fn parse_checkpoint(bytes: &[u8]) -> Result<Verdict, String> {
    match Checkpoint::from_json(bytes, "run.json", Access::ReadWrite) {
        Ok(_) => Ok(Verdict::Accepted),
        Err(e) => {
            let text = e.to_string();
            let syntax = serde_json::from_slice::<serde_json::Value>(bytes).is_err();
            if e.exit_code() != 2 || !text.contains("run.json") {
                Err(format!("not a named bad-input refusal: {text}"))
            } else if syntax && !text.contains("line ") {
                Err(format!("a syntax error without its position: {text}"))
            } else {
                Ok(Verdict::Refused)
            }
        }
    }
}

fn canary_registry() -> Registry {
    asm_canary::steps::names_only()
}

fn runbook_seeds() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert!(!seeds.is_empty(), "runbooks/*.yaml");
    seeds.sort();
    seeds
}

fn parse_runbook(registry: &Registry, bytes: &[u8]) -> Result<Verdict, String> {
    let text = String::from_utf8_lossy(bytes);
    match Runbook::parse(&text, "rb.yaml", registry) {
        Ok(rb) => {
            // Its defaults bind: an accepted runbook's params are in range.
            rb.bind_params(&serde_json::Map::new())
                .map(|_| Verdict::Accepted)
                .or_else(|e| {
                    if e.contains("is required") {
                        Ok(Verdict::Accepted)
                    } else {
                        Err(format!("accepted, but its defaults do not bind: {e}"))
                    }
                })
        }
        Err(e) => {
            let text = e.to_string();
            let positioned = !e.problems().is_empty()
                && e.problems()
                    .iter()
                    .all(|p| p.pos.line > 0 && p.pos.column > 0);
            if text.contains("rb.yaml:") && positioned {
                Ok(Verdict::Refused)
            } else {
                Err(format!("refused without file:line:column: {text}"))
            }
        }
    }
}

fn scenario_seeds() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/scenarios");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    seeds.sort();
    seeds.push(
        b"name: custom\ntime_scale: 0.001\narm:\n  lro_seconds: 10\n  apply_at: 0.5\n  token_lifetime_secs: 2\n  throttle_every: 4\n  retry_after_secs: 3\n  conflict_every: 5\n  lro_failures:\n    - on: remove\n      times: 0\n      status: Canceled\n      code: X\n      message: y\ncluster:\n  revisions: [asm-1-28]\n  plugin_ca: false\n  mesh_revisions:\n    - revision: asm-1-28\n      upgrades: [asm-1-29]\n      kubernetes: [\"1.33\"]\nkube:\n  proxy_ack_seconds: 2\n  istiod_ready_seconds: 3\n  tags:\n    - {name: prod, revision: asm-1-28}\n  stale_revisions: [asm-1-29]\n"
            .to_vec(),
    );
    seeds
}

fn parse_scenario(bytes: &[u8]) -> Result<Verdict, String> {
    let text = String::from_utf8_lossy(bytes);
    match Scenario::from_yaml("s.yaml", &text) {
        Ok(_) => Ok(Verdict::Accepted),
        Err(ScenarioError::Parse { line, column, .. }) if line > 0 && column > 0 => {
            Ok(Verdict::Refused)
        }
        Err(e) => Err(format!("refused without file:line:column: {e}")),
    }
}

fn kubeconfig_seeds() -> Vec<Vec<u8>> {
    let one = "apiVersion: v1\nkind: Config\nclusters:\n- name: sim\n  cluster:\n    server: https://127.0.0.1:6443\n    insecure-skip-tls-verify: false\ncontexts:\n- name: sim\n  context: {cluster: sim, user: sim, namespace: default}\ncurrent-context: sim\nusers:\n- name: sim\n  user:\n    token: SUPERSECRETTOKEN-abc123\npreferences: {}\n";
    let two = "apiVersion: v1\nkind: Config\nclusters:\n- name: a\n  cluster:\n    server: https://10.0.0.1:443\n    tls-server-name: kubernetes\n- name: b\n  cluster:\n    server: https://10.0.0.2:443\ncontexts:\n- name: a\n  context:\n    cluster: a\n    user: u\n- name: b\n  context:\n    cluster: b\n    user: u\ncurrent-context: b\nusers:\n- name: u\n  user:\n    username: admin\n    password: hunter2\n";
    vec![one.as_bytes().to_vec(), two.as_bytes().to_vec()]
}

/// Kubeconfig parse errors are another item's (their text); here: no panic, and the verdict.
fn parse_kubeconfig(rt: &tokio::runtime::Runtime, bytes: &[u8]) -> Result<Verdict, String> {
    let _guard = rt.enter();
    match rt.block_on(asm_canary::k8s::client_from_kubeconfig_bytes(bytes, None)) {
        Ok(_) => Ok(Verdict::Accepted),
        Err(_) => Ok(Verdict::Refused),
    }
}

fn fuzz_all(cases: u32) -> Vec<(&'static str, Tally)> {
    let registry = canary_registry();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    asm_canary::azure::ensure_ring_provider();
    vec![
        (
            "checkpoints",
            fuzz(
                "checkpoints",
                &checkpoint_seeds(),
                cases,
                true,
                parse_checkpoint,
            ),
        ),
        (
            "runbooks",
            fuzz("runbooks", &runbook_seeds(), cases, false, |b| {
                parse_runbook(&registry, b)
            }),
        ),
        (
            "scenarios",
            fuzz("scenarios", &scenario_seeds(), cases, false, parse_scenario),
        ),
        (
            "kubeconfigs",
            fuzz("kubeconfigs", &kubeconfig_seeds(), cases, false, |b| {
                parse_kubeconfig(&rt, b)
            }),
        ),
    ]
}

fn check_all(tallies: &[(&str, Tally)]) {
    let tried: u64 = tallies.iter().map(|(_, t)| t.tried).sum();
    let refused: u64 = tallies.iter().map(|(_, t)| t.refused).sum();
    let accepted: u64 = tallies.iter().map(|(_, t)| t.accepted).sum();
    let panics: usize = tallies.iter().map(|(_, t)| t.panics.len()).sum();
    println!(
        "hostile inputs: all: {tried} cases tried, {refused} refused, {accepted} accepted, panics = {panics}"
    );
    for (what, t) in tallies {
        t.check(what);
    }
}

#[test]
fn mutated_inputs_never_panic_and_are_refused_with_file_and_position() {
    let tallies = fuzz_all(CASES);
    check_all(&tallies);
    // The real binary on a few refused cases: exit 2, the file named, nothing changed.
    let by_name = |n: &str| &tallies.iter().find(|(w, _)| *w == n).unwrap().1;
    binary_refuses_checkpoints(&by_name("checkpoints").refused_samples);
    binary_refuses_scenarios(&by_name("scenarios").refused_samples);
}

/// The soak: `ASM_CANARY_SOAK_CASES=20000 cargo test --test hostile_inputs -- --ignored --nocapture`.
#[test]
#[ignore = "the soak: minutes; run it with --ignored"]
fn soak_mutated_inputs() {
    let cases = std::env::var("ASM_CANARY_SOAK_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    check_all(&fuzz_all(cases));
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn binary_refuses_checkpoints(samples: &[Vec<u8>]) {
    assert!(!samples.is_empty(), "no refused checkpoint to try");
    for bytes in samples {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("run.json");
        std::fs::write(&state, bytes).unwrap();
        for args in [&["status", "--offline"][..], &["report"]] {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_asm-canary"))
                .args(args)
                .arg("--state")
                .arg(&state)
                .env_remove("ASM_CANARY_LOG")
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            assert!(
                err.contains(&state.display().to_string()),
                "{args:?}: {err}"
            );
            assert!(!err.contains("panicked"), "{args:?}: {err}");
            assert_eq!(std::fs::read(&state).unwrap(), *bytes, "{args:?}: changed");
            assert_eq!(listing(dir.path()), vec!["run.json"], "{args:?}: created");
        }
    }
}

fn binary_refuses_scenarios(samples: &[Vec<u8>]) {
    assert!(!samples.is_empty(), "no refused scenario to try");
    for bytes in samples {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.yaml");
        std::fs::write(&file, bytes).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_asm-canary"))
            .args(["sim", "serve", "--scenario"])
            .arg(&file)
            .env_remove("ASM_CANARY_LOG")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        let shown = file.display().to_string();
        let positioned = err.split(&format!("{shown}:")).nth(1).is_some_and(|rest| {
            let mut parts = rest.splitn(3, ':');
            let line = parts.next().unwrap_or("");
            let col = parts.next().unwrap_or("");
            line.parse::<u64>().is_ok() && col.parse::<u64>().is_ok()
        });
        assert!(positioned, "names {shown}:line:column: {err}");
        assert_eq!(std::fs::read(&file).unwrap(), *bytes, "changed");
        assert_eq!(listing(dir.path()), vec!["s.yaml"], "created");
    }
}
