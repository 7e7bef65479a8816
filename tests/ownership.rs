//! Who owns an upgrade (issue 12): the owner record in the cluster outlives a paused run, a
//! second run is refused while it stands, `--take-over` adopts it on purpose, and no run
//! adopts or removes a canary it did not install; refusals that no resume can help exit 2, and
//! nothing changes before the first approval.

mod common;

use common::{TestSim, events, last_event, stderr};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;

const OWNER: &str = "asm-canary-owner";

fn code(out: &std::process::Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

async fn owner_run_id(sim: &TestSim) -> Option<String> {
    let cms = Api::<ConfigMap>::namespaced(sim.kube().await, "aks-istio-system");
    let cm = cms.get_opt(OWNER).await.expect("read the owner record")?;
    cm.data.unwrap_or_default().get("run-id").cloned()
}

/// A run paused at its `start` approval (exit 4), and its run id.
async fn paused_at_start(sim: &TestSim) -> String {
    let out = sim.upgrade(&[]).await;
    assert_eq!(code(&out), 4, "paused at start: {}", stderr(&out));
    last_event(&out)["run_id"].as_str().unwrap().to_string()
}

/// `upgrade` with its own checkpoint file `name` in the test's folder.
async fn other_upgrade(sim: &TestSim, name: &str, extra: &[&str]) -> std::process::Output {
    let state = sim.dir.path().join(name);
    let mut args = vec![
        "upgrade",
        "--unattended",
        "--output",
        "json",
        "--state",
        state.to_str().unwrap(),
    ];
    args.extend_from_slice(common::FAST);
    args.extend_from_slice(extra);
    sim.run(&args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_is_refused_while_a_paused_run_owns_the_cluster() {
    let sim = TestSim::start("healthy").await;
    let a = paused_at_start(&sim).await;
    assert_eq!(owner_run_id(&sim).await.as_deref(), Some(a.as_str()));

    let out = other_upgrade(
        &sim,
        "b.json",
        &["--approve", "start", "--approve", "complete"],
    )
    .await;
    assert_eq!(code(&out), 5, "refused: {}", stderr(&out));
    let err = stderr(&out);
    let a_state = std::path::absolute(sim.state_file()).unwrap();
    for want in [
        format!("run {a}"),
        format!("asm-canary resume --state {}", a_state.display()),
        "--take-over".to_string(),
    ] {
        assert!(err.contains(&want), "{want:?} missing: {err}");
    }
    assert_eq!(sim.revisions().await, vec!["asm-1-27"], "B changed nothing");
    assert!(
        !sim.dir.path().join("b.json").exists(),
        "B left no checkpoint"
    );

    let out = sim.resume(&["--approve", "start"]).await;
    assert_eq!(code(&out), 4, "A paused before complete: {}", stderr(&out));
    // A's canary is installed: B is still refused as owned (5), not as a canary no run owns.
    let out = other_upgrade(&sim, "b.json", &["--approve", "start"]).await;
    assert_eq!(code(&out), 5, "refused: {}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("run {a}")),
        "{}",
        stderr(&out)
    );

    let out = sim.resume(&["--approve", "complete"]).await;
    assert_eq!(code(&out), 0, "A resumes to completion: {}", stderr(&out));
    assert_eq!(sim.revisions().await, vec!["asm-1-29"]);
    assert_eq!(
        owner_run_id(&sim).await,
        None,
        "a finished run gives the cluster up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn take_over_adopts_an_unfinished_run_only_when_confirmed_and_says_so() {
    let sim = TestSim::start("healthy").await;
    let a = paused_at_start(&sim).await;

    let out = other_upgrade(&sim, "b.json", &["--take-over"]).await;
    assert_eq!(code(&out), 5, "not confirmed: {}", stderr(&out));
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
    assert_eq!(owner_run_id(&sim).await.as_deref(), Some(a.as_str()));

    let out = other_upgrade(
        &sim,
        "b.json",
        &["--take-over", "--yes", "--approve", "start"],
    )
    .await;
    assert_eq!(code(&out), 4, "B paused at complete: {}", stderr(&out));
    let b = last_event(&out)["run_id"].as_str().unwrap().to_string();
    let said = events(&out).iter().any(|e| {
        e["event"] == "message"
            && e["text"]
                .as_str()
                .is_some_and(|t| t.contains("took over") && t.contains(&a))
    });
    assert!(
        said,
        "the take-over is in the events: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let report = std::fs::read_to_string(sim.dir.path().join("b.json.report.md")).unwrap();
    assert!(
        report.contains("took over the upgrade of run"),
        "the report says so: {report}"
    );
    assert_eq!(owner_run_id(&sim).await.as_deref(), Some(b.as_str()));

    // A's checkpoint is no longer the run of record.
    let out = sim.resume(&["--approve", "start"]).await;
    assert_eq!(code(&out), 5, "A is refused: {}", stderr(&out));
    assert!(stderr(&out).contains(&b), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_refuses_a_canary_this_run_did_not_install_and_changes_nothing() {
    let sim = TestSim::start("healthy").await;
    paused_at_start(&sim).await;
    // Meanwhile a person starts the canary by hand.
    sim.arm_put_revisions(&["asm-1-27", "asm-1-29"]).await;
    let before = sim.pods_by_revision().await;

    let out = sim
        .resume(&["--approve", "start", "--approve", "complete"])
        .await;
    assert_eq!(code(&out), 2, "refused: {}", stderr(&out));
    let last = last_event(&out);
    assert_eq!(last["outcome"], "refused");
    assert!(
        last["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("did not install asm-1-29"),
        "{last}"
    );
    assert_eq!(sim.revisions().await, vec!["asm-1-27", "asm-1-29"]);
    assert_eq!(
        sim.pods_by_revision().await,
        before,
        "no workload restarted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_never_reports_success_while_a_canary_it_did_not_install_remains() {
    let sim = TestSim::start("healthy").await;
    paused_at_start(&sim).await;
    sim.arm_put_revisions(&["asm-1-27", "asm-1-29"]).await;

    let state = sim.state_file();
    let out = sim
        .run(&[
            "rollback",
            "--state",
            state.to_str().unwrap(),
            "--unattended",
        ])
        .await;
    assert_eq!(code(&out), 6, "a person must look: {}", stderr(&out));
    assert!(
        stderr(&out).contains("still runs [asm-1-27, asm-1-29]"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        sim.revisions().await,
        vec!["asm-1-27", "asm-1-29"],
        "the canary this run did not install was left alone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_no_run_owns_is_refused_with_exit_2_and_no_resume_hint() {
    let sim = TestSim::start("healthy").await;
    sim.arm_put_revisions(&["asm-1-27", "asm-1-28"]).await;
    // `--to` the newer one resumes that canary, `--to` a newer one consolidates it
    // (tests/recovery.rs); `--to` the older one, or one older still, cannot start.
    for to in ["asm-1-27", "asm-1-26"] {
        let out = sim.upgrade(&["--to", to]).await;
        assert_eq!(code(&out), 2, "--to {to}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("asm-canary rollback --from-cluster"),
            "says how to roll it back: {err}"
        );
        assert!(
            !err.contains("resume"),
            "no resume hint that cannot help: {err}"
        );
        assert!(
            !sim.state_file().exists(),
            "no checkpoint for a refused run"
        );
    }
    assert_eq!(sim.revisions().await, vec!["asm-1-27", "asm-1-28"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_if_not_ready_exits_0_when_the_target_is_not_offered() {
    let sim = TestSim::start("healthy").await;
    let out = sim
        .upgrade(&["--to", "asm-1-31", "--skip-if-not-ready"])
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("skipped, nothing changed"),
        "{}",
        stderr(&out)
    );
    assert!(!sim.state_file().exists());
    let out = sim.upgrade(&["--to", "asm-1-31"]).await;
    assert_eq!(
        code(&out),
        2,
        "without the flag it is refused: {}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_approval_is_asked_before_the_shared_configmap_is_copied() {
    let sim = TestSim::start("healthy").await;
    paused_at_start(&sim).await;
    let cms = Api::<ConfigMap>::namespaced(sim.kube().await, "aks-istio-system");
    assert!(
        cms.get_opt("istio-shared-configmap-asm-1-27")
            .await
            .unwrap()
            .is_some(),
        "the scenario has a source ConfigMap to copy"
    );
    assert!(
        cms.get_opt("istio-shared-configmap-asm-1-29")
            .await
            .unwrap()
            .is_none(),
        "nothing copied before the approval"
    );
    let out = sim.resume(&["--approve", "start"]).await;
    assert_eq!(code(&out), 4, "paused at complete: {}", stderr(&out));
    assert!(
        cms.get_opt("istio-shared-configmap-asm-1-29")
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_refused_before_its_checkpoint_leaves_no_owner_record() {
    let sim = TestSim::start("healthy").await;
    let out = sim.upgrade(&["--param", "no_such_param=1"]).await;
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert_eq!(owner_run_id(&sim).await, None, "nothing owns the cluster");
    paused_at_start(&sim).await;
}

/// A run stopped between its owner claim and its first checkpoint left a record no command
/// could continue (`resume` has no checkpoint), and every later run exited 5 until someone
/// passed `--take-over`. A record whose checkpoint is provably gone is taken over, and said so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_whose_checkpoint_is_gone_does_not_block_the_next_run() {
    let sim = TestSim::start("healthy").await;
    let a = paused_at_start(&sim).await;
    // Another host's record is never judged: its checkpoint may well exist there.
    let cms = Api::<ConfigMap>::namespaced(sim.kube().await, "aks-istio-system");
    let elsewhere = serde_json::json!({"data": {"host": "build-agent-7"}});
    let patch = kube::api::Patch::Merge(&elsewhere);
    cms.patch(OWNER, &kube::api::PatchParams::default(), &patch)
        .await
        .unwrap();
    std::fs::remove_file(sim.state_file()).unwrap();
    let out = other_upgrade(&sim, "b.json", &["--approve", "start"]).await;
    assert_eq!(code(&out), 5, "another host's record: {}", stderr(&out));

    // This host's record, its checkpoint file gone: taken over, with the reason.
    let here = serde_json::json!({"data": {"host": asm_canary::k8s::lock::Holder::this_process("x").host}});
    cms.patch(
        OWNER,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&here),
    )
    .await
    .unwrap();
    let out = other_upgrade(
        &sim,
        "b.json",
        &["--approve", "start", "--approve", "complete"],
    )
    .await;
    assert_eq!(code(&out), 0, "B runs: {}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("took over the upgrade of run {a}"))
            && err.contains("does not exist"),
        "{err}"
    );
    assert!(
        events(&out).iter().any(|e| e["text"]
            .as_str()
            .is_some_and(|t| t.contains("does not exist"))),
        "the take-over is in the events"
    );
    assert_eq!(sim.revisions().await, vec!["asm-1-29"]);
    assert_eq!(owner_run_id(&sim).await, None);
}

/// `state archive` set a kubernetes-backend checkpoint aside but left its run's owner record,
/// so the next run was refused (exit 5) for a run nothing could continue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archiving_a_checkpoint_releases_its_runs_owner_record() {
    let sim = TestSim::start("healthy").await;
    let k8s = ["--state-backend", "kubernetes"];
    let out = other_upgrade(&sim, "a.log", &k8s).await;
    assert_eq!(code(&out), 4, "paused at start: {}", stderr(&out));
    let a = last_event(&out)["run_id"].as_str().unwrap().to_string();
    assert_eq!(owner_run_id(&sim).await.as_deref(), Some(a.as_str()));

    let out = sim
        .run(&[&["state", "archive", "--yes"][..], &k8s].concat())
        .await;
    assert_eq!(code(&out), 0, "archived: {}", stderr(&out));
    assert!(stderr(&out).contains(&format!("released the owner record of run {a}")));
    assert_eq!(owner_run_id(&sim).await, None);

    let out = other_upgrade(&sim, "b.log", &k8s).await;
    assert_eq!(code(&out), 4, "a new run starts: {}", stderr(&out));
}

/// The tag moved to the target by hand while the run was paused after its canary: the
/// resumed `repoint-tag` found its work "already done" without having done it, journaled
/// nothing, and a later rollback would have left the tag on the removed revision. It refuses
/// now (exit 2), changing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repoint_tag_refuses_a_tag_moved_by_someone_else() {
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    let sim = TestSim::start("healthy").await;
    let out = sim
        .upgrade(&["--approve", "start", "--promote-approval"])
        .await;
    assert_eq!(code(&out), 4, "paused at promote: {}", stderr(&out));
    // Someone points the tag at the canary by hand.
    let webhooks = Api::<MutatingWebhookConfiguration>::all(sim.kube().await);
    let name = "istio-revision-tag-prod-aks-istio-system";
    let mut wh = webhooks.get(name).await.unwrap();
    for w in wh.webhooks.iter_mut().flatten() {
        if let Some(svc) = w.client_config.service.as_mut() {
            svc.name = svc.name.replace("asm-1-27", "asm-1-29");
        }
    }
    webhooks
        .replace(name, &Default::default(), &wh)
        .await
        .unwrap();
    let out = sim
        .resume(&["--approve", "promote", "--approve", "complete"])
        .await;
    assert_eq!(code(&out), 2, "refused: {}", stderr(&out));
    assert!(
        stderr(&out).contains("this run did not move it"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        sim.revisions().await,
        vec!["asm-1-27", "asm-1-29"],
        "nothing removed"
    );
}

/// `onboard --take-over --yes` during a paused upgrade adopted that upgrade, onboarded, then
/// gave the cluster up as finished: the half-done canary had no owner, the upgrade's checkpoint
/// resumed as if nothing happened, and the onboarded pods on the canary's revision blocked its
/// rollback. A day-2 run never adopts another kind of run: refused (exit 5), nothing changed,
/// the upgrade still the owner and still resumable to completion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_onboarding_never_takes_over_a_paused_upgrade() {
    use asm_canary_sim::kube::{NamespaceShape, WorkloadShape};
    let mut scenario = asm_canary_sim::Scenario::builtin("healthy").unwrap();
    scenario.kube.namespaces.push(NamespaceShape {
        name: "shop".into(),
        deployments: vec![WorkloadShape {
            name: "web".into(),
            replicas: 1,
            ..Default::default()
        }],
        ..Default::default()
    });
    let sim = TestSim::start_with(scenario).await;
    let out = sim.upgrade(&["--approve", "start"]).await;
    assert_eq!(code(&out), 4, "paused before complete: {}", stderr(&out));
    let a = last_event(&out)["run_id"].as_str().unwrap().to_string();
    let state = sim.dir.path().join("onboard.json");
    let mut args = vec![
        "onboard",
        "-n",
        "shop",
        "--take-over",
        "--yes",
        "--unattended",
        "--output",
        "json",
        "--state",
        state.to_str().unwrap(),
    ];
    args.extend(common::fast_day2());
    let out = sim.run(&args).await;
    assert_eq!(code(&out), 5, "refused: {}", stderr(&out));
    assert!(
        stderr(&out).contains("never takes over a run of asm-canary-upgrade"),
        "{}",
        stderr(&out)
    );
    assert_eq!(owner_run_id(&sim).await.as_deref(), Some(a.as_str()));
    let labels = Api::<k8s_openapi::api::core::v1::Namespace>::all(sim.kube().await)
        .get("shop")
        .await
        .unwrap()
        .metadata
        .labels
        .unwrap_or_default();
    assert!(!labels.contains_key("istio.io/rev"), "shop not labelled");
    assert!(!state.exists(), "the onboarding left no checkpoint");
    let out = sim.resume(&["--approve", "complete"]).await;
    assert_eq!(code(&out), 0, "the upgrade completes: {}", stderr(&out));
    assert_eq!(sim.revisions().await, vec!["asm-1-29"]);
}

/// `rollback --from-cluster --take-over` without `--yes` (unattended) while a paused run owns
/// the canary was refused (exit 5) only after it had written its adoption's checkpoint; the
/// retry with `--yes` was then refused as "checkpoint already exists". The unconfirmed
/// take-over is refused before anything is written, and the retry goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_take_over_from_the_cluster_writes_nothing() {
    let sim = TestSim::start("healthy").await;
    let out = sim.upgrade(&["--approve", "start"]).await;
    assert_eq!(code(&out), 4, "paused before complete: {}", stderr(&out));
    let a = last_event(&out)["run_id"].as_str().unwrap().to_string();
    let fc = sim.dir.path().join("fc.json");
    let rollback = |extra: &'static [&'static str]| {
        let mut args = vec![
            "rollback",
            "--from-cluster",
            "--take-over",
            "--unattended",
            "--state",
            fc.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(common::FAST);
        args.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let args = rollback(&[]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = sim.run(&argv).await;
    assert_eq!(code(&out), 5, "unconfirmed: {}", stderr(&out));
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
    assert!(!fc.exists(), "no checkpoint written by a refused command");
    assert_eq!(owner_run_id(&sim).await.as_deref(), Some(a.as_str()));
    assert_eq!(sim.revisions().await, vec!["asm-1-27", "asm-1-29"]);

    let args = rollback(&["--yes"]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = sim.run(&argv).await;
    assert_eq!(code(&out), 0, "confirmed: {}", stderr(&out));
    assert_eq!(sim.revisions().await, vec!["asm-1-27"]);
}
