//! The command line as a pipeline and a person meet it: the real binary against the simulated
//! cluster. Plan (snapshot), JSON Lines on stdout only, every exit code, status on finished,
//! paused and rolled-back runs, the report, completions, and the non-TTY fallback.

mod common;

use std::process::Output;

use common::{FAST, TestSim, events, last_event, stderr};
use serde_json::Value;

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_shows_cluster_target_configmap_tag_waves_gates_and_changes_nothing() {
    let sim = TestSim::start("healthy").await;
    let out = sim
        .run(&["plan", "--canary-namespaces", "payments", "--soak", "45s"])
        .await;
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    insta::assert_snapshot!("plan_text", stdout(&out));
    let out = sim
        .run(&[
            "plan",
            "--canary-namespaces",
            "payments",
            "--output",
            "json",
        ])
        .await;
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    let doc: Value =
        serde_json::from_slice(&out.stdout).expect("plan --output json is one JSON document");
    assert_eq!(doc["schema"], "asm-canary.plan/1.1");
    assert_eq!(doc["source"], "asm-1-27");
    assert_eq!(doc["target"], "asm-1-29");
    assert_eq!(doc["waves"][0]["namespaces"][0]["namespace"], "payments");
    insta::assert_json_snapshot!("plan_json", doc);
    // Nothing changed: one revision, no mutating request at all.
    assert_eq!(sim.revisions().await, vec!["asm-1-27"]);
    let state = sim.sim_state().await;
    assert_eq!(sim.handle.info.cluster, "aks-sim");
    let puts = state.to_string().matches("\"PUT\"").count();
    assert_eq!(puts, 0, "plan made a PUT: {state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unattended_json_lines_only_on_stdout_text_on_stderr_and_a_report_next_to_the_state() {
    let sim = TestSim::start("healthy").await;
    let out = sim
        .upgrade(&["--approve", "start", "--approve", "complete"])
        .await;
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.ends_with('\n'));
    for line in text.lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
        assert_eq!(v["schema"], "asm-canary.events/1.1", "{line}");
        assert!(v["ts"].as_str().is_some_and(|t| t.contains('T')), "{line}");
        assert!(v["run_id"].as_str().is_some_and(|r| !r.is_empty()));
        assert!(v["event"].as_str().is_some());
    }
    let evs = events(&out);
    for e in &evs {
        check_event_schema(e);
    }
    let kinds: Vec<&str> = evs.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(kinds.first(), Some(&"run_started"));
    assert_eq!(kinds.last(), Some(&"run_finished"));
    assert!(kinds.contains(&"step_progress"), "{kinds:?}");
    assert!(kinds.contains(&"gate_passed"));
    let err = stderr(&out);
    assert!(err.contains("completed: asm-1-27 → asm-1-29"), "{err}");
    // A skipped step's `when ${…}` is text; a JSON object is a line that starts with `{`.
    assert!(
        !err.lines().any(|l| l.trim_start().starts_with('{')),
        "JSON leaked onto stderr: {err}"
    );
    // The report is written next to the checkpoint and named on stderr.
    let state = sim.state_file();
    let report = asm_canary::report::report_path(&state);
    assert!(
        err.contains(&format!("report: {}", report.display())),
        "{err}"
    );
    let md = std::fs::read_to_string(&report).expect("report written");
    assert!(md.contains("| Outcome | completed |"), "{md}");
    assert!(md.contains("| Upgrade | asm-1-27 → asm-1-29 |"));
    for step in ["preflight", "start", "restart", "verify", "complete"] {
        assert!(
            md.contains(&format!("| {step} | forward | succeeded")),
            "{step}: {md}"
        );
    }
    assert!(md.contains("| verify | forward | succeeded"));
    assert!(md.contains("proxies-synced"));
    assert!(
        md.lines()
            .any(|l| l.contains("restart-wave `wave-1`") && l.contains("Deployment frontend/web")),
        "{md}"
    );
    assert!(md.contains("`complete` approved by --approve"));
    // The HTML report embeds the SVG timeline: well-formed, one bar per step that ran.
    let out = sim
        .run(&[
            "report",
            "--state",
            state.to_str().unwrap(),
            "--format",
            "html",
        ])
        .await;
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    let html = stdout(&out);
    for external in ["src=", "href=", "<link", "<script", "url("] {
        assert!(
            !html.contains(external),
            "the HTML loads something: {external}"
        );
    }
    let svg_start = html.find("<svg").expect("inline svg");
    let svg_end = html.find("</svg>").expect("svg end") + "</svg>".len();
    let svg = &html[svg_start..svg_end];
    well_formed(svg);
    assert_eq!(svg.matches("<rect class=\"step").count(), 10, "{svg}");
    for step in [
        "preflight",
        "get-upgrades",
        "copy-configmap",
        "start",
        "canary",
        "repoint-tag",
        "restart",
        "verify",
        "analysis",
        "complete",
    ] {
        assert!(svg.contains(&format!("data-step=\"{step}\"")), "{step}");
    }
}

/// The required fields of each event, as docs/events.md lists them (`asm-canary.events/1.1`).
fn check_event_schema(e: &Value) {
    let required: &[&str] = match e["event"].as_str().unwrap_or_default() {
        "run_started" => &[
            "runbook",
            "runbook_sha256",
            "target",
            "resumed",
            "params",
            "steps",
        ],
        "step_started" => &["step", "phase", "attempt"],
        "step_skipped" => &["step", "phase", "reason"],
        "action_finished" => &["step", "phase", "already_done"],
        "step_progress" => &["step", "detail"],
        "side_effect" => &["step", "kind", "target", "done"],
        "gate_started" => &["step", "check", "timeout_ms", "stable_for_ms"],
        "gate_progress" => &["step", "check", "detail"],
        "gate_passed" => &["step", "check"],
        "gate_failed" => &["step", "check", "reason", "timed_out"],
        "gate_inconclusive" => &["step", "check", "reason"],
        "measurement" => &["step", "check", "name", "query", "value", "verdict", "at"],
        "step_succeeded" => &["step", "phase", "already_done"],
        "step_failed" => &["step", "phase", "error"],
        "step_interrupted" => &["step", "phase"],
        "approval_needed" => &["step"],
        "approval_given" => &["step", "by"],
        "approval_denied" => &["step", "reason"],
        "rollback_started" => &["reason"],
        "rollback_finished" => &["ok"],
        "message" => &["level", "text"],
        "run_finished" => &["outcome", "exit_code", "source", "target"],
        other => panic!("event {other:?} is not in docs/events.md: {e}"),
    };
    for field in required {
        assert!(e.get(field).is_some(), "{field} missing in {e}");
    }
    if let Some(p) = e.get("phase") {
        assert!(p == "forward" || p == "rollback", "{e}");
    }
}

/// A small XML well-formedness check: tags balance, attributes are quoted, only the five
/// predefined entities are used.
fn well_formed(xml: &str) {
    let mut stack: Vec<String> = vec![];
    let mut rest = xml;
    while let Some(i) = rest.find('<') {
        let text = &rest[..i];
        check_text(text);
        let end = rest[i..].find('>').expect("unclosed tag") + i;
        let tag = &rest[i + 1..end];
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(
                stack.pop().as_deref(),
                Some(name.trim()),
                "mismatched </{name}>"
            );
        } else {
            let self_closing = tag.ends_with('/');
            let body = tag.trim_end_matches('/');
            let name = body
                .split_whitespace()
                .next()
                .expect("tag name")
                .to_string();
            let attrs = &body[name.len()..];
            assert_eq!(
                attrs.matches('"').count() % 2,
                0,
                "unbalanced quotes in <{tag}>"
            );
            check_text(attrs);
            if !self_closing {
                stack.push(name);
            }
        }
        rest = &rest[end + 1..];
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
}

fn check_text(text: &str) {
    let mut t = text;
    while let Some(i) = t.find('&') {
        let ent = &t[i..t[i..].find(';').map(|j| i + j + 1).unwrap_or(t.len())];
        assert!(
            ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].contains(&ent),
            "bad entity {ent}"
        );
        t = &t[i + 1..];
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_flags_exit_2_with_a_sentence_and_nothing_on_stdout() {
    let sim = TestSim::start("healthy").await;
    for args in [
        vec!["upgrade", "--unattended", "--to", "banana"],
        vec!["upgrade", "--unattended", "--no-such-flag"],
        vec!["upgrade", "--unattended", "--param", "novalue"],
        // Accepted before, then a panic (exit 101) in verify with the canary installed.
        vec![
            "upgrade",
            "--unattended",
            "--approve",
            "start",
            "--param",
            "poll_interval=18446744073709551615s",
        ],
        vec!["resume", "--unattended"],
        vec!["status", "--state", "/nonexistent/run.json"],
        vec!["report", "--state", "/nonexistent/run.json"],
    ] {
        let out = sim.run(&args).await;
        assert_eq!(code(&out), 2, "{args:?}: stderr: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{args:?}: {}", stdout(&out));
        assert!(!stderr(&out).trim().is_empty(), "{args:?}: no message");
    }
    let out = sim
        .run(&["upgrade", "--unattended", "--to", "banana"])
        .await;
    assert!(stderr(&out).contains("--to \"banana\""), "{}", stderr(&out));
    assert_eq!(sim.revisions().await, vec!["asm-1-27"]);
    // A mistyped --approve was accepted silently, and the run paused at start (exit 4).
    let state = sim.state_file();
    let state = state.to_str().unwrap();
    let out = sim
        .run(&[
            "upgrade",
            "--unattended",
            "--approve",
            "strat",
            "--state",
            state,
        ])
        .await;
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--approve \"strat\"")
            && stderr(&out).contains("approvable steps: consolidate, start, promote, complete"),
        "{}",
        stderr(&out)
    );
    assert!(
        !sim.state_file().exists(),
        "no checkpoint for a refused run"
    );
    assert_eq!(sim.revisions().await, vec!["asm-1-27"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_proxies_roll_back_with_exit_3_and_status_names_what_happened() {
    let sim = TestSim::start("stale-proxies").await;
    let out = sim
        .upgrade(&[
            "--approve",
            "start",
            "--approve",
            "complete",
            "--param",
            "verify_timeout=4s",
        ])
        .await;
    assert_eq!(code(&out), 3, "stderr: {}", stderr(&out));
    for e in events(&out) {
        check_event_schema(&e);
    }
    let last = last_event(&out);
    assert_eq!(last["outcome"], "rolled_back");
    assert_eq!(last["exit_code"], 3);
    assert_eq!(sim.revisions().await, vec!["asm-1-27"]);
    let state = sim.state_file();
    let s = state.to_str().unwrap();

    let out = sim.run(&["status", "--state", s]).await;
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("rolled back"), "{text}");
    assert!(
        text.contains("canary"),
        "the canary wave's gate failed: {text}"
    );
    assert!(text.contains("revisions [asm-1-27]"), "{text}");
    assert!(text.contains("Next"), "{text}");
    assert!(text.contains("asm-canary upgrade"), "next command: {text}");

    let out = sim.run(&["status", "--state", s, "--output", "json"]).await;
    let doc: Value = serde_json::from_slice(&out.stdout).expect("status json");
    assert_eq!(doc["state"], "rolled_back");
    assert_eq!(doc["failed_step"], "canary");
    assert_eq!(
        doc["cluster_now"]["revisions"],
        serde_json::json!(["asm-1-27"])
    );
    assert!(
        doc["next"]["command"]
            .as_str()
            .unwrap()
            .starts_with("asm-canary upgrade")
    );

    let md = std::fs::read_to_string(asm_canary::report::report_path(&state)).unwrap();
    assert!(md.contains("| Outcome | rolled_back |"), "{md}");
    assert!(md.contains("| canary | forward | failed"), "{md}");
    assert!(
        md.contains("STALE"),
        "the report says what the gate waited for: {md}"
    );
    assert!(
        md.contains("| rollback-remove-canary | rollback | succeeded"),
        "{md}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_run_status_names_the_approve_command_then_resume_completes_and_status_says_done() {
    let sim = TestSim::start("healthy").await;
    let out = sim.upgrade(&["--approve", "start"]).await;
    assert_eq!(code(&out), 4, "stderr: {}", stderr(&out));
    let state = sim.state_file();
    let s = state.to_str().unwrap();
    let out = sim.run(&["status", "--state", s]).await;
    let text = stdout(&out);
    assert!(text.contains("paused"), "{text}");
    assert!(
        text.contains(&format!("asm-canary resume --state {s} --approve complete")),
        "{text}"
    );
    assert!(text.contains("revisions [asm-1-27, asm-1-29]"), "{text}");
    let out = sim.run(&["status", "--state", s, "--output", "json"]).await;
    let doc: Value = serde_json::from_slice(&out.stdout).expect("status json");
    assert_eq!(doc["state"], "paused");
    assert_eq!(doc["awaiting_approval"], "complete");
    assert_eq!(
        doc["next"]["command"],
        format!("asm-canary resume --state {s} --approve complete")
    );

    let args = [
        "resume",
        "--state",
        s,
        "--unattended",
        "--output",
        "json",
        "--approve",
        "complete",
    ];
    let out = sim.run(&args).await;
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(sim.revisions().await, vec!["asm-1-29"]);

    let out = sim.run(&["status", "--state", s, "--output", "json"]).await;
    let doc: Value = serde_json::from_slice(&out.stdout).expect("status json");
    assert_eq!(doc["state"], "completed");
    assert_eq!(doc["next"]["command"], Value::Null);
    let out = sim.run(&["status", "--state", s]).await;
    let text = stdout(&out);
    assert!(text.contains("completed"), "{text}");
    assert!(text.contains("nothing: the run completed"), "{text}");
    // The report covers both invocations: the approval given at resume is in it.
    let md = std::fs::read_to_string(asm_canary::report::report_path(&state)).unwrap();
    assert!(md.contains("| complete | forward | succeeded"), "{md}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_on_the_same_checkpoint_exits_5_while_the_first_holds_the_lock() {
    let sim = TestSim::start("healthy").await;
    let state = sim.state_file();
    let s = state.to_str().unwrap().to_string();
    let mut first = sim.command(&{
        let mut a = vec![
            "upgrade",
            "--unattended",
            "--output",
            "json",
            "--state",
            &s,
            "--approve",
            "start",
        ];
        a.extend_from_slice(FAST);
        a
    });
    first
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let first = first.spawn().expect("first run starts");
    // Wait until the first run has written its checkpoint (it holds the lock from then on).
    for _ in 0..200 {
        if state.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(state.exists(), "the first run never wrote its checkpoint");
    let out = sim
        .run(&["resume", "--state", &s, "--unattended", "--output", "json"])
        .await;
    assert_eq!(code(&out), 5, "stderr: {}", stderr(&out));
    assert!(out.stdout.is_empty() || events(&out).iter().all(|e| e["event"] != "step_started"));
    let first = first.wait_with_output().await.unwrap();
    assert_eq!(code(&first), 4, "stderr: {}", stderr(&first));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_terminal_upgrade_behaves_as_unattended_and_pauses_instead_of_prompting() {
    let sim = TestSim::start("healthy").await;
    let state = sim.state_file();
    let mut args = vec!["upgrade", "--state", state.to_str().unwrap()];
    args.extend_from_slice(FAST);
    let out = sim.run(&args).await;
    assert_eq!(code(&out), 4, "stderr: {}", stderr(&out));
    let err = stderr(&out);
    assert!(!err.contains("[y/N]"), "prompted without a terminal: {err}");
    assert!(err.contains("--approve start"), "{err}");
    assert_eq!(
        sim.revisions().await,
        vec!["asm-1-27"],
        "nothing changed before approval"
    );
    assert!(out.stdout.is_empty(), "text mode writes nothing on stdout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_for_bash_zsh_and_fish_name_the_subcommands() {
    let sim = TestSim::start("healthy").await;
    for shell in ["bash", "zsh", "fish"] {
        let out = sim.run(&["completions", shell]).await;
        assert_eq!(code(&out), 0, "{shell}");
        let text = stdout(&out);
        for word in [
            "upgrade", "resume", "rollback", "status", "report", "state", "approve",
        ] {
            assert!(text.contains(word), "{shell} completions lack {word}");
        }
    }
    let out = sim.run(&["completions", "bash"]).await;
    assert!(
        stdout(&out).contains("complete -F"),
        "a bash completion function"
    );
    let out = sim.run(&["completions", "zsh"]).await;
    assert!(stdout(&out).starts_with("#compdef asm-canary"));
    let out = sim.run(&["completions", "fish"]).await;
    assert!(stdout(&out).contains("complete -c asm-canary"));
}

/// Regression: `plan` showed the built-in runbook's gates whatever `--runbook` said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_shows_the_gates_of_the_runbook_given_with_runbook() {
    let sim = TestSim::start("healthy").await;
    let embedded = asm_canary::cli::request::EMBEDDED_RUNBOOK;
    let preflight_timeout = "      timeout: 5m\n      poll_interval: ${params.poll_interval}\n    on_failure: halt\n\n  # Already at the target";
    assert!(embedded.contains(preflight_timeout), "the runbook changed");
    let custom = embedded.replacen(
        preflight_timeout,
        &preflight_timeout.replace("timeout: 5m", "timeout: 7m"),
        1,
    );
    let runbook = sim.dir.path().join("custom.yaml");
    std::fs::write(&runbook, custom).unwrap();
    let out = sim
        .run(&[
            "plan",
            "--runbook",
            runbook.to_str().unwrap(),
            "--output",
            "json",
        ])
        .await;
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["gates"][0]["step"], "preflight");
    assert_eq!(doc["gates"][0]["timeout"], "7m", "{doc:#}");
}

/// The plan document of an upgrade refused before it starts (a downgrade) keeps its shape:
/// the state and the verdict say why, and nothing is planned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_json_of_a_downgrade_names_the_state_and_plans_nothing() {
    let sim = TestSim::start("healthy").await;
    let out = sim
        .run(&["plan", "--to", "asm-1-26", "--output", "json"])
        .await;
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(doc["state"]["state"], "downgrade");
    insta::assert_json_snapshot!("plan_json_downgrade", doc);
}

/// A checkpoint file of a run of the simulator's cluster paused before `complete`, in `dir`.
fn paused_checkpoint(dir: &std::path::Path) -> std::path::PathBuf {
    let state = dir.join("run.json");
    let checkpoint = serde_json::json!({
        "schema_version": "1.0", "kind": "asm-canary/checkpoint", "run_id": "r-1",
        "target": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-sim/providers/Microsoft.ContainerService/managedClusters/aks-sim",
        "runbook": {"name": "asm-canary-upgrade", "sha256": "abc"},
        "params": {}, "state": "paused",
        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
        "steps": [{"id": "complete", "status": "awaiting_approval"}],
        "rollback": [], "journal": [], "summary": {}
    });
    std::fs::write(&state, checkpoint.to_string()).unwrap();
    state
}

/// `status --offline --state F | head -1` panicked (exit 101): `println!` on a closed pipe.
/// Every command's stdout is a reader that may go away; the command still exits as it would.
#[test]
fn a_closed_stdout_is_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let state = paused_checkpoint(dir.path());
    for output in ["text", "json"] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader); // every write to stdout now fails with EPIPE
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_asm-canary"))
            .args(["status", "--offline", "--output", output, "--state"])
            .arg(&state)
            .stdout(writer)
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "--output {output}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    }
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_asm-canary"))
        .args(["completions", "bash"])
        .stdout(writer)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

/// `--arm-endpoint http://…` was accepted (the bearer token then travels in plain text), and
/// `--arm-poll-interval 0s` polled ARM back to back: both are bad input, refused before any
/// request (exit 2; port 1 on loopback would otherwise be a connection error, exit 1).
#[test]
fn a_plain_http_arm_endpoint_and_a_zero_poll_interval_are_refused() {
    let cluster = [
        "--subscription",
        "00000000-0000-0000-0000-000000000000",
        "--resource-group",
        "rg",
        "--cluster",
        "c",
        "--auth",
        "client-secret",
    ];
    let run = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_asm-canary"))
            .arg("plan")
            .args(cluster)
            .args(extra)
            .env("AZURE_TENANT_ID", "t")
            .env("AZURE_CLIENT_ID", "c")
            .env("AZURE_CLIENT_SECRET", "s")
            .output()
            .unwrap()
    };
    let out = run(&["--arm-endpoint", "http://127.0.0.1:1"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("https only"), "{}", stderr(&out));
    for interval in ["0s", "1ms", "2h"] {
        let out = run(&[
            "--arm-endpoint",
            "https://127.0.0.1:1",
            "--arm-poll-interval",
            interval,
        ]);
        assert_eq!(code(&out), 2, "{interval}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("from 100ms to 10m"),
            "{interval}: {}",
            stderr(&out)
        );
    }
}

/// `status --state other-cluster.json` with `ASM_CANARY_*` naming another cluster printed that
/// cluster's live revisions under the checkpoint's cluster name (exit 0). The flags are now held
/// against the checkpoint: a mismatch is bad input, refused before any request.
#[test]
fn cluster_flags_naming_another_cluster_than_the_checkpoint_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = paused_checkpoint(dir.path());
    let before = std::fs::read(&state).unwrap();
    for command in ["status", "resume", "rollback"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_asm-canary"))
            .args([command, "--state"])
            .arg(&state)
            .env(
                "ASM_CANARY_SUBSCRIPTION",
                "00000000-0000-0000-0000-000000000000",
            )
            .env("ASM_CANARY_RESOURCE_GROUP", "rg-prod")
            .env("ASM_CANARY_CLUSTER", "aks-prod")
            .env_remove("ASM_CANARY_CLUSTER_ID")
            .output()
            .unwrap();
        assert_eq!(code(&out), 2, "{command}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("managedClusters/aks-sim") && err.contains("managedClusters/aks-prod"),
            "{command}: names both clusters: {err}"
        );
        assert!(
            !err.contains("Azure credential"),
            "{command}: no sign-in attempted: {err}"
        );
    }
    assert_eq!(
        std::fs::read(&state).unwrap(),
        before,
        "the checkpoint is untouched"
    );
}

/// `--parallelism 0`, `--param parallelism=-1` and huge counts were accepted; a negative one
/// stored in the checkpoint then failed restart-back, making the rollback impossible. Integer
/// params are bounded when parsed: exit 2 naming the param and the allowed range; so are the
/// timeouts and the poll interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_integer_params_are_refused_naming_the_param_and_range() {
    let sim = TestSim::start("healthy").await;
    let state = sim.state_file();
    let s = state.to_str().unwrap();
    for (extra, says) in [
        (&["--parallelism", "0"][..], "allowed 1..=10000"),
        // clap took -1 for a flag: "unexpected argument '-1' found"
        (&["--parallelism", "-1"][..], "allowed 1..=10000"),
        (&["--param", "parallelism=-1"], "allowed 1..=10000"),
        (
            &["--param", "parallelism=9223372036854775807"],
            "allowed 1..=10000",
        ),
        // A zero timeout failed every gate at once, the rollback's too: the cluster stayed
        // on two revisions with a rollback that could never pass.
        (
            &["--param", "verify_timeout=0s"],
            "0s is shorter than the minimum, 1s",
        ),
        (
            &["--param", "poll_interval=0ms"],
            "0ms is shorter than the minimum, 50ms",
        ),
    ] {
        let mut args = vec![
            "upgrade",
            "--unattended",
            "--approve",
            "start",
            "--state",
            s,
        ];
        args.extend_from_slice(extra);
        let out = sim.run(&args).await;
        assert_eq!(code(&out), 2, "{extra:?}: {}", stderr(&out));
        let err = stderr(&out);
        let name = match extra[0] {
            "--param" => extra[1].split('=').next().unwrap(),
            flag => flag.trim_start_matches("--"),
        };
        assert!(
            err.contains(&format!("param \"{name}\"")) && err.contains(says),
            "{extra:?}: {err}"
        );
        assert!(
            !state.exists(),
            "{extra:?}: no checkpoint for a refused run"
        );
    }
    assert_eq!(sim.revisions().await, vec!["asm-1-27"]);
}

/// `plan --tag nope` showed "tag nope: asm-1-27 → asm-1-29", and the run created a new tag
/// webhook and restarted nothing. A tag no webhook and no namespace uses is refused (exit 2
/// for a run) unless `--create-tag` asks for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mistyped_tag_is_refused_unless_create_tag_asks_for_it() {
    let sim = TestSim::start("healthy").await;
    let state = sim.state_file();
    let s = state.to_str().unwrap();
    let out = sim
        .run(&[
            "upgrade",
            "--unattended",
            "--approve",
            "start",
            "--tag",
            "nope",
            "--state",
            s,
        ])
        .await;
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("--tag nope")
            && err.contains("tags in use: prod")
            && err.contains("--create-tag"),
        "{err}"
    );
    assert!(!state.exists(), "no checkpoint for a refused run");
    assert_eq!(sim.revisions().await, vec!["asm-1-27"]);

    let out = sim.run(&["plan", "--tag", "nope"]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("--create-tag"), "{}", stdout(&out));
    let out = sim.run(&["plan", "--tag", "nope", "--create-tag"]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("tag nope: asm-1-27 → asm-1-29")
            && !stdout(&out).contains("--create-tag"),
        "{}",
        stdout(&out)
    );
    // The default tag is in use: the plan shows no refusal.
    let out = sim.run(&["plan"]).await;
    assert!(!stdout(&out).contains("--create-tag"), "{}", stdout(&out));
    // --help documents the flag.
    let out = sim.run(&["upgrade", "--help"]).await;
    assert!(stdout(&out).contains("--create-tag"), "{}", stdout(&out));
}

/// `ln -s victim.txt run.json.lock; asm-canary rollback --state run.json` overwrote
/// `victim.txt` (with the lock holder's pid) although the command exited 2, and the event log
/// was appended through a link the same way. Neither is written through a link now: the lock
/// refuses it by name (exit 2), the event log is skipped with a warning naming it.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_at_the_lock_and_event_log_paths_are_not_followed() {
    let sim = TestSim::start("healthy").await;
    let state = sim.state_file();
    let victim = sim.dir.path().join("victim.txt");
    std::fs::write(&victim, "precious").unwrap();
    let beside = |suffix: &str| {
        let mut p = state.clone().into_os_string();
        p.push(suffix);
        std::path::PathBuf::from(p)
    };
    std::os::unix::fs::symlink(&victim, beside(".lock")).unwrap();
    std::os::unix::fs::symlink(&victim, beside(".events.jsonl")).unwrap();
    let out = sim
        .run(&[
            "rollback",
            "--unattended",
            "--state",
            state.to_str().unwrap(),
        ])
        .await;
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    let out = sim.upgrade(&["--approve", "start"]).await;
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("run.json.lock is a symbolic link"),
        "names the lock: {err}"
    );
    assert!(
        err.contains("run.json.events.jsonl is a symbolic link"),
        "names the event log: {err}"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert_eq!(sim.revisions().await, vec!["asm-1-27"], "nothing changed");
}

/// `plan --kubeconfig bad.yaml` printed the parser's message, which quoted the offending lines:
/// `user: "SUPERSECRETTOKEN-abc123"` on stderr. The error names the file, line and column only.
#[test]
fn kubeconfig_parse_error_does_not_print_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: Config\nusers:\n- name: u\n  user: \"SUPERSECRETTOKEN-abc123\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_asm-canary"))
        .args([
            "plan",
            "--subscription",
            "00000000-0000-0000-0000-000000000000",
            "--resource-group",
            "rg",
            "--cluster",
            "c",
            "--auth",
            "client-secret",
            "--arm-endpoint",
            "https://127.0.0.1:1",
            "--kubeconfig",
        ])
        .arg(&bad)
        .env("AZURE_TENANT_ID", "t")
        .env("AZURE_CLIENT_ID", "c")
        .env("AZURE_CLIENT_SECRET", "s")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    assert!(
        !err.contains("SUPERSECRET"),
        "the secret was printed: {err}"
    );
    assert!(
        err.contains(&format!("{}:5:", bad.display())),
        "names the file and position: {err}"
    );
}

/// Regression: `proxy-status` against a crash-looping istiod (its pods running, never ready)
/// waited forever on the port-forward to /debug/syncz; now it gives up after the same bound
/// the doctor uses (15 s) and says which istiod did not answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_status_gives_up_on_an_istiod_that_never_answers_syncz() {
    let mut s = asm_canary_sim::Scenario::builtin("healthy").unwrap();
    s.kube.crashloop_revisions = vec!["asm-1-27".into()];
    let sim = TestSim::start_with(s).await;
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        sim.run(&["proxy-status"]),
    )
    .await
    .expect("proxy-status finishes within a minute");
    assert_ne!(code(&out), 0, "stdout: {}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("did not answer /debug/syncz within 15s") && err.contains("istiod"),
        "{err}"
    );
}

/// Regression: `proxy-status --namespace` naming no namespace (a typo) printed an empty table
/// and exited 0, as if every proxy there were SYNCED; it is bad input (exit 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_status_refuses_a_namespace_that_does_not_exist() {
    let sim = TestSim::start("healthy").await;
    let out = sim.run(&["proxy-status", "--namespace", "paymnets"]).await;
    assert_eq!(code(&out), 2, "stdout: {}", stdout(&out));
    assert!(
        stderr(&out).contains("--namespace paymnets: no such namespace in aks-sim"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "");
    let out = sim.run(&["proxy-status", "--namespace", "payments"]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("payments"), "{}", stdout(&out));
}

/// Regression: `proxy-status --revision` with a revision not installed (`asm-1-28`) or not a
/// revision at all (`ASM-1-27`, `prod`) exited 1 asking whether that control plane was
/// healthy; `-n ''` or `-n Payments` exited 1 from the client library. Bad input: exit 2,
/// naming what is installed, nothing on stdout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_status_refuses_a_revision_that_is_not_installed_or_no_revision() {
    let sim = TestSim::start("healthy").await;
    for (args, says) in [
        (
            &["--revision", "asm-1-28"][..],
            "--revision asm-1-28: not installed in aks-sim (installed: asm-1-27)",
        ),
        (&["--revision", "ASM-1-27"][..], "--revision \"ASM-1-27\""),
        (&["--revision", "prod"][..], "--revision \"prod\""),
        (&["-n", ""][..], "is not a namespace name"),
        (&["-n", "Payments"][..], "is not a namespace name"),
    ] {
        let mut argv = vec!["proxy-status"];
        argv.extend_from_slice(args);
        let out = sim.run(&argv).await;
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), "", "{args:?}");
    }
    let out = sim.run(&["proxy-status", "--revision", "asm-1-27"]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

/// Regression: `report --state run.json --out run.json` replaced the paused run's checkpoint
/// with Markdown (exit 0): the run could no longer be resumed or rolled back. `--out` naming
/// the run's checkpoint, event log or lock, or any file holding JSON, is refused (exit 2) and
/// left as it was; a report over an earlier report is fine.
#[test]
fn report_out_never_replaces_a_checkpoint_or_an_event_log() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("run.json");
    let checkpoint = serde_json::json!({
        "schema_version": "1.0", "kind": "asm-canary/checkpoint", "run_id": "r-1",
        "target": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-sim/providers/Microsoft.ContainerService/managedClusters/aks-sim",
        "runbook": {"name": "asm-canary-upgrade", "sha256": "abc"},
        "params": {}, "state": "paused", "reason": "awaiting approval of complete",
        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
        "steps": [], "rollback": [], "journal": [], "summary": {}
    });
    let bytes = serde_json::to_vec_pretty(&checkpoint).unwrap();
    std::fs::write(&state, &bytes).unwrap();
    let events = dir.path().join("run.json.events.jsonl");
    std::fs::write(&events, "{\"event\":\"run_started\"}\n").unwrap();
    let copy = dir.path().join("copy.json");
    std::fs::write(&copy, &bytes).unwrap();
    let report = |out: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_asm-canary"))
            .arg("report")
            .arg("--state")
            .arg(&state)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap()
    };
    for (out, says) in [
        (&state, "is a file of the run itself"),
        (&events, "is a file of the run itself"),
        (&copy, "holds JSON"),
    ] {
        let before = std::fs::read(out).unwrap();
        let res = report(out);
        let err = String::from_utf8_lossy(&res.stderr);
        assert_eq!(res.status.code(), Some(2), "{}: {err}", out.display());
        assert!(err.contains(says), "{err}");
        assert_eq!(
            std::fs::read(out).unwrap(),
            before,
            "{} changed",
            out.display()
        );
    }
    let md = dir.path().join("run.md");
    for _ in 0..2 {
        let res = report(&md);
        assert_eq!(
            res.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&res.stderr)
        );
    }
    assert!(
        std::fs::read_to_string(&md)
            .unwrap()
            .starts_with("# asm-canary run r-1")
    );
}

/// Regression: `resume --state link.json` (a symlink to the real checkpoint) replaced the link
/// with a new file at the first checkpoint write: the real checkpoint stayed behind as a stale
/// copy, and the two paths had two locks. A symbolic link, a socket or a FIFO as `--state` is
/// refused (exit 2) before anything is read, taken or written.
#[cfg(unix)]
#[test]
fn a_state_path_that_is_a_link_or_no_regular_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.json");
    std::fs::write(&real, "{}").unwrap();
    let link = dir.path().join("link.json");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let socket = dir.path().join("run.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    for (command, path, says) in [
        ("upgrade", &link, "is a symbolic link to"),
        ("resume", &link, "is a symbolic link to"),
        ("rollback", &link, "is a symbolic link to"),
        ("upgrade", &socket, "is not a regular file"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_asm-canary"))
            .args([command, "--unattended", "--state"])
            .arg(path)
            .env_remove("ASM_CANARY_LOG")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{command} {}: {err}",
            path.display()
        );
        assert!(err.contains(says), "{command}: {err}");
    }
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read_to_string(&real).unwrap(), "{}");
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["link.json", "real.json", "run.sock"],
        "nothing created"
    );
}

/// Regression: `--lock-duration 0` became a 1 s Lease and `--lock-duration
/// 18446744073709551615` one of 68 years (a dead run's lock that never expires, exit 5 for
/// every later run). The flag (or `ASM_CANARY_LOCK_DURATION`) takes 1 to 3600 s; else exit 2.
#[test]
fn a_lock_duration_out_of_range_is_refused() {
    let run = |args: &[&str], env: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_asm-canary"));
        cmd.args(args).env_remove("ASM_CANARY_LOCK_DURATION");
        if let Some(v) = env {
            cmd.env("ASM_CANARY_LOCK_DURATION", v);
        }
        cmd.output().unwrap()
    };
    for (args, env) in [
        (&["upgrade", "--lock-duration", "0"][..], None),
        (&["upgrade", "--lock-duration", "3601"], None),
        (&["resume", "--lock-duration", "18446744073709551615"], None),
        (&["upgrade"], Some("0")),
        (
            &["fleet", "run", "--fleet", "f.yaml", "--lock-duration", "0"],
            None,
        ),
    ] {
        let out = run(args, env);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {err}");
        assert!(err.contains("--lock-duration"), "{args:?}: {err}");
        assert!(err.contains("1..=3600"), "{args:?}: {err}");
    }
}

/// Regression: `plan --cluster nope` exited 1 ("cannot get a kubeconfig … 404
/// ResourceNotFound; pass --kubeconfig to use your own"), as if Azure were unreachable and
/// another kubeconfig could help. A cluster ARM does not know is bad input: exit 2, the flags
/// to check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_does_not_exist_is_bad_input() {
    let sim = TestSim::start("healthy").await;
    for command in ["plan", "doctor", "proxy-status"] {
        let out = sim.run(&[command, "--cluster", "nope"]).await;
        let err = stderr(&out);
        assert_eq!(code(&out), 2, "{command}: {err}");
        assert!(err.contains("aks") || err.contains("nope"), "{err}");
        assert!(
            err.contains("does not exist (ARM answered 404"),
            "{command}: {err}"
        );
        assert!(!err.contains("--kubeconfig"), "{command}: {err}");
    }
}

/// Regression: `rollback --from-cluster --param nosuch=1` (or `soak=-1s`) on a cluster with one
/// revision said "nothing to roll back" and exited 0: the params were never checked. They are
/// checked first (exit 2), as every run's are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_from_the_cluster_checks_its_params_first() {
    let sim = TestSim::start("healthy").await;
    let state = sim.state_file();
    for (param, says) in [
        ("nosuch=1", "unknown param \"nosuch\""),
        ("soak=-1s", "param \"soak\""),
    ] {
        let out = sim
            .run(&[
                "rollback",
                "--from-cluster",
                "--unattended",
                "--state",
                state.to_str().unwrap(),
                "--param",
                param,
            ])
            .await;
        assert_eq!(code(&out), 2, "{param}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{param}: {}", stderr(&out));
        assert!(!state.exists());
    }
}
