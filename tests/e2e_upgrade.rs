//! The canary upgrade end to end: the real binary against the simulated cluster over HTTPS.
//! Each test asserts on the cluster's final state, read back from the simulator.

mod common;

use common::{TestSim, events, last_event, stderr};

fn code(out: &std::process::Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_upgrade_completes_on_the_newest_revision() {
    let sim = TestSim::start("healthy").await;
    let out = sim
        .upgrade(&["--approve", "start", "--approve", "complete"])
        .await;
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    let last = last_event(&out);
    assert_eq!(last["event"], "run_finished");
    assert_eq!(last["outcome"], "completed");
    assert_eq!(last["source"], "asm-1-27");
    assert_eq!(last["target"], "asm-1-29");
    assert_eq!(sim.revisions().await, vec!["asm-1-29"]);
    let pods = sim.pods_by_revision().await;
    assert!(pods.get("asm-1-29").copied().unwrap_or(0) > 0, "{pods:?}");
    assert_eq!(
        pods.get("asm-1-27"),
        None,
        "no pod left on the source: {pods:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stdout_line_is_a_json_event_with_the_contract_fields() {
    let sim = TestSim::start("healthy").await;
    let out = sim
        .upgrade(&[
            "--to",
            "asm-1-28",
            "--approve",
            "start",
            "--approve",
            "complete",
        ])
        .await;
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    let evs = events(&out);
    assert!(evs.len() > 10);
    for e in &evs {
        for key in ["schema", "ts", "run_id", "event"] {
            assert!(e.get(key).is_some(), "{key} missing in {e}");
        }
    }
    assert_eq!(evs.last().unwrap()["target"], "asm-1-28");
    assert_eq!(sim.revisions().await, vec!["asm-1-28"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unattended_run_pauses_for_approval_and_resumes_in_a_later_job() {
    let sim = TestSim::start("healthy").await;
    let out = sim.upgrade(&["--approve", "start"]).await;
    assert_eq!(code(&out), 4, "stderr: {}", stderr(&out));
    assert_eq!(last_event(&out)["outcome"], "paused");
    // Both control planes run while the run waits for a person.
    assert_eq!(sim.revisions().await, vec!["asm-1-27", "asm-1-29"]);
    let out = sim.resume(&["--approve", "complete"]).await;
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(last_event(&out)["outcome"], "completed");
    assert_eq!(sim.revisions().await, vec!["asm-1-29"]);
}

/// Rewrites the paused run's checkpoint as another asm-canary version would have written it:
/// the built-in runbook `older`, its sha256, and as the kept copy `older` — or, `edited`, that
/// copy edited by hand afterwards (no longer the text its sha256 names).
fn as_if_started_by_another_version(sim: &TestSim, older: &str, edited: bool) {
    use sha2::Digest;
    let path = sim.state_file();
    let mut cp: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    cp["runbook"]["sha256"] = format!("{:x}", sha2::Sha256::digest(older.as_bytes())).into();
    cp["runbook"]["text"] = match edited {
        true => format!("{older}# edited by hand\n"),
        false => older.to_string(),
    }
    .into();
    std::fs::write(&path, serde_json::to_vec_pretty(&cp).unwrap()).unwrap();
}

/// Regression: a run paused under one asm-canary version could be neither resumed nor rolled
/// back by a version whose built-in runbook differs (the checkpoint's sha256 no longer matched
/// the built-in one), short of `--force`, which swaps the run's steps mid-run. The checkpoint
/// now keeps the runbook's text, and the run goes on with the runbook it started with. A kept
/// copy that does not match its sha256 is not trusted, and one this build cannot run (an action
/// it no longer has) is not run: both refused as before, with `--force` offered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_paused_under_another_built_in_runbook_resumes_with_the_runbook_it_started_with() {
    let sim = TestSim::start("healthy").await;
    let out = sim.upgrade(&["--approve", "start"]).await;
    assert_eq!(code(&out), 4, "stderr: {}", stderr(&out));
    let cp: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sim.state_file()).unwrap()).unwrap();
    let this = cp["runbook"]["text"]
        .as_str()
        .expect("the checkpoint keeps the runbook text")
        .to_string();
    let older = format!("# as shipped by an earlier asm-canary\n{this}");
    // An action this build no longer has: the kept copy cannot run here.
    let retired = this.replacen("action: preflight", "action: preflight-v0", 1);
    for (text, edited, why) in [
        (&older, true, "--force"),
        (&retired, false, "this asm-canary cannot run it"),
    ] {
        as_if_started_by_another_version(&sim, text, edited);
        let before = std::fs::read(sim.state_file()).unwrap();
        let out = sim.resume(&["--approve", "complete"]).await;
        assert_eq!(code(&out), 2, "refused: {}", stderr(&out));
        assert!(stderr(&out).contains(why), "{}", stderr(&out));
        assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
        assert_eq!(
            std::fs::read(sim.state_file()).unwrap(),
            before,
            "checkpoint untouched"
        );
        assert_eq!(sim.revisions().await, vec!["asm-1-27", "asm-1-29"]);
    }

    as_if_started_by_another_version(&sim, &older, false);
    let kept: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sim.state_file()).unwrap()).unwrap();
    let out = sim.resume(&["--approve", "complete"]).await;
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert!(
        stderr(&out).contains("goes on with that one, kept in its checkpoint"),
        "{}",
        stderr(&out)
    );
    assert_eq!(last_event(&out)["outcome"], "completed");
    assert_eq!(sim.revisions().await, vec!["asm-1-29"]);
    let after: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sim.state_file()).unwrap()).unwrap();
    assert_eq!(
        after["runbook"], kept["runbook"],
        "still the runbook it started with"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_status_prints_every_proxy_synced_and_says_which_credential() {
    let sim = TestSim::start("healthy").await;
    let out = sim.run(&["proxy-status"]).await;
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    let header = table.lines().next().unwrap_or_default();
    for col in ["NAME", "CDS", "LDS", "EDS", "RDS", "ISTIOD"] {
        assert!(header.contains(col), "{header}");
    }
    let rows: Vec<&str> = table
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(rows.len() >= 10, "{table}");
    assert!(rows.iter().any(|r| r.contains("payments")), "{table}");
    assert!(rows.iter().all(|r| !r.contains("STALE")), "{table}");
    assert!(
        stderr(&out).contains("Azure credential: client-secret"),
        "{}",
        stderr(&out)
    );

    // JSON: one object per proxy with its sync states.
    let out = sim
        .run(&["proxy-status", "--output", "json", "-n", "payments"])
        .await;
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert!(!rows.is_empty());
    assert!(
        rows.iter().all(|r| r["namespace"] == "payments"),
        "{rows:?}"
    );
}

/// More namespaces and workloads than the per-namespace fan-out (16): pods are read as one
/// paged cluster-wide list and workloads as one list per kind, forward and back.
fn many_namespaces(base: &str) -> asm_canary_sim::Scenario {
    let mut scenario = asm_canary_sim::Scenario::builtin(base).unwrap();
    scenario.kube.generated = Some(asm_canary_sim::kube::GeneratedShape {
        namespaces: 20,
        deployments_per_namespace: 2,
        replicas: 1,
        revision_label: "prod".into(),
    });
    scenario
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_namespaces_upgrade_moves_every_pod() {
    let sim = TestSim::start_with(many_namespaces("healthy")).await;
    let before = sim.pods_by_revision().await;
    let total: usize = before.values().sum();
    assert!(before["asm-1-27"] >= 40, "{before:?}");
    let out = sim
        .upgrade(&[
            "--approve",
            "start",
            "--approve",
            "complete",
            "--param",
            "parallelism=16",
        ])
        .await;
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(sim.revisions().await, vec!["asm-1-29"]);
    let after = sim.pods_by_revision().await;
    assert_eq!(after.get("asm-1-29").copied(), Some(total), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_namespaces_rollback_moves_every_pod_back() {
    let sim = TestSim::start_with(many_namespaces("stale-proxies")).await;
    let before = sim.pods_by_revision().await;
    let out = sim
        .upgrade(&[
            "--approve",
            "start",
            "--approve",
            "complete",
            "--param",
            "parallelism=16",
        ])
        .await;
    assert_eq!(code(&out), 3, "rolled back; stderr: {}", stderr(&out));
    assert_eq!(last_event(&out)["outcome"], "rolled_back");
    assert_eq!(sim.revisions().await, vec!["asm-1-27"]);
    assert_eq!(sim.pods_by_revision().await, before);
}
