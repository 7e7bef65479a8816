//! The Kubernetes operations against the simulated cluster over HTTPS: kubectl's restart
//! and rollout-status wait for the three workload kinds, the ConfigMap copy, pods with their
//! revision and owner, namespaces by label, proxy status through port-forwarded syncz, and
//! the orphaned gateway Leases.

use std::time::Duration;

use asm_canary::istio::{ISTIO_NAMESPACE, XdsStatus, orphaned_lease_names, shared_configmap_name};
use asm_canary::k8s::rollout::{get_workload, patch_restart};
use asm_canary::k8s::{
    CopyOutcome, CopyPlan, K8sError, Owner, PodInfo, RestartOutcome, WorkloadKind, WorkloadRef,
    client_from_kubeconfig_bytes, delete_leases, namespaces_by_label, plan_copy, proxy_status,
    read_copy, restart_stamp, wait_rollout, write_copy,
};
use asm_canary_sim::{Scenario, SimHandle, SimOptions};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};

async fn start(mut scenario: Scenario) -> (SimHandle, kube::Client) {
    scenario.time_scale = 0.01;
    let sim = asm_canary_sim::start(SimOptions::new(scenario))
        .await
        .unwrap();
    // A token-only kubeconfig; the CA comes in as the extra CA, as --ca-file does.
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: sim\n  cluster:\n    server: {}\ncontexts:\n- name: sim\n  context:\n    cluster: sim\n    user: sim\ncurrent-context: sim\nusers:\n- name: sim\n  user:\n    token: {}\n",
        sim.info.kube_server, sim.info.sim_token
    );
    let client =
        client_from_kubeconfig_bytes(kubeconfig.as_bytes(), Some(sim.info.ca_pem.as_bytes()))
            .await
            .unwrap_or_else(|e| panic!("client: {e}"));
    (sim, client)
}

fn healthy() -> Scenario {
    Scenario::builtin("healthy").unwrap()
}

/// `healthy` and `namespaces` more, labelled for the `prod` tag, each with `deployments` of
/// `replicas` pods.
fn healthy_with(namespaces: u32, deployments: u32, replicas: u32) -> Scenario {
    let mut scenario = healthy();
    scenario.kube.generated = Some(asm_canary_sim::kube::GeneratedShape {
        namespaces,
        deployments_per_namespace: deployments,
        replicas,
        revision_label: "prod".into(),
    });
    scenario
}

/// The Kubernetes GETs (reads, lists, watches) the simulator has answered so far.
fn kube_gets(sim: &SimHandle) -> u64 {
    sim.shared
        .requests
        .totals()
        .get(&("kube".to_string(), "GET".to_string()))
        .copied()
        .unwrap_or_default()
}

fn now() -> chrono::DateTime<chrono::FixedOffset> {
    chrono::Local::now().fixed_offset()
}

/// A restart as the restart step makes it: read the workload, pick the stamp by kubectl's
/// rules, patch.
async fn restart(
    client: &kube::Client,
    w: &WorkloadRef,
    at: chrono::DateTime<chrono::FixedOffset>,
) -> RestartOutcome {
    let current = get_workload(client, w).await.unwrap();
    let stamp = restart_stamp(&current, at).expect("not paused");
    patch_restart(client, w, &stamp).await.unwrap()
}

/// The pods of `namespace` (optionally by label), as the steps see them, sorted by name.
async fn pods(client: &kube::Client, namespace: &str, selector: Option<&str>) -> Vec<PodInfo> {
    let mut out: Vec<PodInfo> = asm_canary::k8s::pods::list_pods(client, Some(namespace), selector)
        .await
        .unwrap();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

async fn restart_and_wait(client: &kube::Client, w: &WorkloadRef) -> (String, Vec<String>) {
    let outcome = restart(client, w, now()).await;
    assert!(outcome.replaces_pods);
    assert!(outcome.uid.is_some());
    let mut seen = Vec::new();
    let mut on_progress = |p: &asm_canary::k8s::RolloutProgress| seen.push(p.message.clone());
    let done = wait_rollout(
        client,
        w,
        outcome.generation,
        Duration::from_secs(30),
        &mut on_progress,
    )
    .await
    .unwrap();
    assert!(done.done);
    (done.message, seen)
}

#[tokio::test]
async fn deployment_restart_and_rollout_status() {
    // Pods that take a second (real time) to become ready: the rollout is still running when
    // the wait starts, however loaded the machine, so its progress is seen.
    let mut slow = healthy();
    slow.kube.pod_ready_seconds = 100.0;
    let (_sim, client) = start(slow).await;
    let w = WorkloadRef::new(WorkloadKind::Deployment, "payments", "api");
    let before = pods(&client, "payments", Some("app=api")).await;
    let (message, seen) = restart_and_wait(&client, &w).await;
    assert_eq!(message, "deployment \"api\" successfully rolled out");
    assert!(seen.len() >= 2, "progress was reported: {seen:?}");
    assert!(
        seen.iter().any(|m| m.starts_with("Waiting for")),
        "{seen:?}"
    );

    let after = pods(&client, "payments", None).await;
    let api: Vec<_> = after
        .iter()
        .filter(|p| p.owner == Owner::Workload(w.clone()) && !p.terminating)
        .collect();
    assert_eq!(api.len(), 3, "{after:#?}");
    for pod in &api {
        assert!(pod.ready, "{pod:?}");
        assert_eq!(pod.revision.revision(), Some("asm-1-27"));
        assert!(
            before.iter().all(|b| b.uid != pod.uid),
            "pods were replaced"
        );
    }
    // The same second twice would be a no-op patch: the second restart takes the next second.
    let t = now() + chrono::Duration::seconds(5);
    let first = restart(&client, &w, t).await;
    let second = restart(&client, &w, t).await;
    assert_ne!(first.restarted_at, second.restarted_at);
    assert!(second.generation > first.generation, "{first:?} {second:?}");
}

#[tokio::test]
async fn statefulset_and_daemonset_restarts_complete() {
    let (_sim, client) = start(healthy()).await;
    let (message, _) = restart_and_wait(
        &client,
        &WorkloadRef::new(WorkloadKind::StatefulSet, "orders", "db"),
    )
    .await;
    assert_eq!(
        message,
        "partitioned roll out complete: 2 new pods have been updated..."
    );
    let (message, _) = restart_and_wait(
        &client,
        &WorkloadRef::new(WorkloadKind::DaemonSet, "logging", "node-agent"),
    )
    .await;
    assert_eq!(message, "daemon set \"node-agent\" successfully rolled out");
}

#[tokio::test]
async fn paused_deployment_is_refused_and_a_timeout_says_where_it_stood() {
    let mut scenario = healthy();
    let payments = &mut scenario.kube.namespaces[0];
    payments.deployments[1].paused = true;
    let (_sim, client) = start(scenario).await;
    let worker = WorkloadRef::new(WorkloadKind::Deployment, "payments", "worker");
    let paused = get_workload(&client, &worker).await.unwrap();
    assert_eq!(restart_stamp(&paused, now()), None, "a paused Deployment");

    let mut scenario = healthy();
    scenario.kube.never_ready = vec!["payments/api".into()];
    let (_sim, client) = start(scenario).await;
    let w = WorkloadRef::new(WorkloadKind::Deployment, "payments", "api");
    let outcome = restart(&client, &w, now()).await;
    let mut ignore = |_: &asm_canary::k8s::RolloutProgress| {};
    let err = wait_rollout(
        &client,
        &w,
        outcome.generation,
        Duration::from_millis(500),
        &mut ignore,
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("not finished after") && text.contains("Waiting for deployment \"api\""),
        "{text}"
    );
    let missing = WorkloadRef::new(WorkloadKind::Deployment, "payments", "nope");
    let err = wait_rollout(&client, &missing, None, Duration::from_secs(5), &mut ignore)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

/// The copy as the copy step makes it: read both, decide by `plan_copy`, write.
async fn copy(
    client: &kube::Client,
    from: &str,
    to: &str,
    force: bool,
) -> Result<CopyOutcome, K8sError> {
    let (src, dst) = read_copy(client, ISTIO_NAMESPACE, from, to).await?;
    let decision = plan_copy(src.as_ref(), dst.as_ref(), to, force);
    write_copy(client, ISTIO_NAMESPACE, &decision, false).await
}

#[tokio::test]
async fn configmap_copy_observes_first() {
    let (_sim, client) = start(healthy()).await;
    let (from, to) = (
        shared_configmap_name("asm-1-27"),
        shared_configmap_name("asm-1-28"),
    );
    // A dry run checks the create without making it.
    let (src, _) = read_copy(&client, ISTIO_NAMESPACE, &from, &to)
        .await
        .unwrap();
    let decision = plan_copy(src.as_ref(), None, &to, false);
    assert!(matches!(decision, CopyPlan::Create(_)), "{decision:?}");
    write_copy(&client, ISTIO_NAMESPACE, &decision, true)
        .await
        .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ISTIO_NAMESPACE);
    assert!(
        api.get_opt(&to).await.unwrap().is_none(),
        "a dry run writes nothing"
    );

    assert_eq!(
        copy(&client, &from, &to, false).await.unwrap(),
        CopyOutcome::Created
    );
    assert_eq!(
        copy(&client, &from, &to, false).await.unwrap(),
        CopyOutcome::AlreadyIdentical
    );
    let copied = api.get(&to).await.unwrap();
    let source = api.get(&from).await.unwrap();
    assert_eq!(copied.data, source.data);
    api.patch(
        &to,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"data": {"mesh": "accessLogFile: \"\"\n"}})),
    )
    .await
    .unwrap();
    let err = copy(&client, &from, &to, false).await.unwrap_err();
    assert!(matches!(err, K8sError::Refused { .. }), "{err}");
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(
        api.get(&to).await.unwrap().data.unwrap()["mesh"],
        "accessLogFile: \"\"\n"
    );
    assert_eq!(
        copy(&client, &from, &to, true).await.unwrap(),
        CopyOutcome::Overwritten
    );
    assert_eq!(api.get(&to).await.unwrap().data, source.data);
    assert_eq!(
        copy(&client, "istio-shared-configmap-asm-9-9", &to, false)
            .await
            .unwrap(),
        CopyOutcome::SourceMissing
    );
}

#[tokio::test]
async fn namespaces_and_proxy_status() {
    let (_sim, client) = start(healthy()).await;
    let names: Vec<String> = namespaces_by_label(&client, "istio.io/rev=prod")
        .await
        .unwrap()
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert_eq!(names, ["frontend", "logging", "orders", "payments"]);

    // Proxies connect and ACK within a few simulated seconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let rows = loop {
        let rows = proxy_status(&client, "asm-1-27", None).await.unwrap();
        if !rows.is_empty() && rows.iter().all(|r| r.is_synced()) {
            break rows;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never all SYNCED: {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(rows.iter().any(|r| r.namespace == "payments"), "{rows:#?}");
    assert!(
        rows.iter()
            .all(|r| r.istiod.starts_with("istiod-asm-1-27-")),
        "{rows:#?}"
    );
    assert!(rows.iter().all(|r| r.cds == XdsStatus::Synced));
    let payments = proxy_status(&client, "asm-1-27", Some("payments"))
        .await
        .unwrap();
    assert!(
        !payments.is_empty() && payments.iter().all(|r| r.namespace == "payments"),
        "{payments:#?}"
    );

    let err = proxy_status(&client, "asm-1-28", None).await.unwrap_err();
    assert!(
        err.to_string().contains("no running istiod of asm-1-28"),
        "{err}"
    );
}

#[tokio::test]
async fn orphaned_leases_are_deleted_once() {
    let (_sim, client) = start(healthy()).await;
    let names = orphaned_lease_names("asm-1-27").to_vec();
    let first = delete_leases(&client, ISTIO_NAMESPACE, &names)
        .await
        .unwrap();
    assert!(first.iter().all(|d| d.deleted), "{first:?}");
    let second = delete_leases(&client, ISTIO_NAMESPACE, &names)
        .await
        .unwrap();
    assert!(second.iter().all(|d| !d.deleted), "{second:?}");
}

/// The slim, paged pod listing sees what a full `Api::<Pod>` list sees: every pod, each with
/// the same revision, owner, phase and readiness. More than one page, so paging is exercised.
#[tokio::test]
async fn paged_slim_pod_list_matches_the_full_list() {
    let (sim, client) = start(healthy_with(11, 10, 5)).await;
    let before = kube_gets(&sim);
    let slim = asm_canary::k8s::pods::list_pods(&client, None, None)
        .await
        .unwrap();
    let pages = kube_gets(&sim) - before;
    let full = Api::<k8s_openapi::api::core::v1::Pod>::all(client.clone())
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    assert!(full.len() > 550, "{} pods", full.len());
    assert_eq!(
        pages,
        full.len()
            .div_ceil(asm_canary::k8s::pods::LIST_PAGE as usize) as u64,
        "one request per page of {}",
        asm_canary::k8s::pods::LIST_PAGE
    );
    let sorted = |mut v: Vec<asm_canary::k8s::PodInfo>| {
        v.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        v
    };
    let full = full
        .iter()
        .map(asm_canary::k8s::PodInfo::from_pod)
        .collect();
    let (slim, full) = (sorted(slim), sorted(full));
    assert_eq!(slim.len(), full.len());
    assert!(
        slim.iter()
            .any(|p| p.revision.revision() == Some("asm-1-27"))
    );
    for (a, b) in slim.iter().zip(&full) {
        assert_eq!(a, b);
    }
}

/// Regression: the pods of more than 16 namespaces were always read as one list of every pod
/// in the cluster, so the gate after a wave of 32 of `large`'s 200 namespaces read all 10,000
/// pods on every poll. A few of the cluster's namespaces are now read one list each; most of
/// them still as one paged list of everything.
#[tokio::test]
async fn a_wave_of_a_few_namespaces_reads_their_pods_not_the_whole_clusters() {
    use asm_canary::k8s::pods::{NAMESPACE_FANOUT, pods_of_namespaces};
    let (sim, client) = start(healthy_with(60, 1, 1)).await;
    let all = namespaces_by_label(&client, "istio.io/rev=prod")
        .await
        .unwrap();
    let names: Vec<String> = all.iter().filter_map(|n| n.metadata.name.clone()).collect();
    assert!(names.len() >= 60, "{} namespaces", names.len());
    // The simulator logs GETs as counts only: one list per namespace, or one paged list of
    // every pod (under 500 here: one page), each beside one list of the namespaces.

    let few: Vec<String> = names[..NAMESPACE_FANOUT * 2].to_vec();
    let before = kube_gets(&sim);
    let read = pods_of_namespaces(&client, few.clone()).await.unwrap();
    assert!(
        kube_gets(&sim) - before > few.len() as u64,
        "a few of the cluster's namespaces: one list each ({} GETs for {})",
        kube_gets(&sim) - before,
        few.len()
    );
    assert_eq!(
        read.iter().map(|(ns, _)| ns.clone()).collect::<Vec<_>>(),
        few,
        "in the namespaces' order"
    );
    for (ns, pods) in &read {
        assert!(!pods.is_empty(), "{ns}: its pods");
        assert!(
            pods.iter().all(|p| &p.namespace == ns),
            "{ns}: only its pods"
        );
    }

    let before = kube_gets(&sim);
    let read = pods_of_namespaces(&client, names.clone()).await.unwrap();
    assert_eq!(
        kube_gets(&sim) - before,
        2,
        "most of the cluster: one list of every pod"
    );
    assert_eq!(read.len(), names.len());
    assert!(
        read.iter()
            .all(|(ns, pods)| !pods.is_empty() && pods.iter().all(|p| &p.namespace == ns))
    );
}

/// A wave's workloads are read with one list per kind of their own namespaces, not of the
/// whole cluster (each wave of `large` read all 2,000 Deployments to restart 20 of them), and
/// with one list of the cluster's when they span most of its namespaces. A workload that is gone
/// is absent from the answer.
#[tokio::test]
async fn a_waves_workloads_are_read_from_their_own_namespaces() {
    use asm_canary::k8s::rollout::read_workloads;
    let (sim, client) = start(healthy_with(30, 10, 1)).await;
    let all = Api::<k8s_openapi::api::apps::v1::Deployment>::all(client.clone())
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    let refs: Vec<WorkloadRef> = all
        .iter()
        .map(|d| {
            WorkloadRef::new(
                WorkloadKind::Deployment,
                d.metadata.namespace.as_deref().unwrap(),
                d.metadata.name.as_deref().unwrap(),
            )
        })
        .collect();
    // Two of the generated namespaces, of 10 Deployments each.
    let mut namespaces: Vec<&str> = refs
        .iter()
        .map(|w| w.namespace.as_str())
        .filter(|ns| refs.iter().filter(|w| w.namespace == *ns).count() == 10)
        .collect();
    namespaces.dedup();
    let two: Vec<WorkloadRef> = refs
        .iter()
        .filter(|w| w.namespace == namespaces[0] || w.namespace == namespaces[1])
        .cloned()
        .chain([WorkloadRef::new(
            WorkloadKind::Deployment,
            namespaces[0],
            "gone",
        )])
        .collect();
    assert!(two.len() > 16, "{} workloads", two.len());

    let before = kube_gets(&sim);
    let read = read_workloads(&client, &two).await.unwrap();
    assert_eq!(kube_gets(&sim) - before, 2, "one list per namespace");
    assert_eq!(
        read.len(),
        two.len() - 1,
        "every one but the one that is gone"
    );
    assert!(
        two[..two.len() - 1]
            .iter()
            .all(|w| read[w].reference() == *w)
    );

    let before = kube_gets(&sim);
    let read = read_workloads(&client, &refs).await.unwrap();
    assert_eq!(
        kube_gets(&sim) - before,
        2,
        "the namespaces, then one list of the cluster's"
    );
    assert_eq!(read.len(), refs.len());
}

/// The board's verdicts are `wait_rollout`'s (done, timed out with the last status, does not
/// exist, deleted while waiting), and a wave of many workloads costs one list and one watch
/// per kind, not a list and a watch per workload.
/// Regression: a cluster-wide watch the API server refuses (RBAC granting only namespaced
/// Roles: 403 on the cluster-wide watch, or on the list and the watch) left every waiter of a
/// large wave waiting out its whole rollout timeout. The board now gives that watch up, says
/// so once, and each waiter waits for its own workload with a namespaced watch.
#[tokio::test]
async fn a_failing_cluster_wide_watch_does_not_wait_out_the_rollout_timeout() {
    for verbs in [vec!["watch"], vec!["list", "watch"]] {
        let mut scenario = healthy_with(4, 5, 1);
        scenario.kube.cluster_wide_forbidden = vec![asm_canary_sim::kube::ClusterWideForbidden {
            resource: "deployments".into(),
            verbs: verbs.iter().map(|v| v.to_string()).collect(),
        }];
        let (_sim, client) = start(scenario).await;
        let wave: Vec<WorkloadRef> = (0..4)
            .flat_map(|i| {
                (0..5).map(move |j| {
                    WorkloadRef::new(
                        WorkloadKind::Deployment,
                        format!("app-{i:03}"),
                        format!("svc-{j:02}"),
                    )
                })
            })
            .collect();
        let notices = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let seen = notices.clone();
        let board = asm_canary::k8s::RolloutBoard::follow_noting(
            &client,
            wave.clone(),
            Box::new(move |kind, why| seen.lock().unwrap().push(format!("{kind}: {why}"))),
        );
        // Untouched, the first workload is rolled out: the board has read what it can.
        let first = board.wait(&wave[0], None, Duration::from_secs(20)).await;
        assert!(first.unwrap().done, "{verbs:?}");
        let started = std::time::Instant::now();
        let mut waits = Vec::new();
        for w in &wave {
            let generation = restart(&client, w, now()).await.generation;
            let board = &board;
            waits.push(async move {
                (
                    w.clone(),
                    board.wait(w, generation, Duration::from_secs(20)).await,
                )
            });
        }
        for (w, result) in futures::future::join_all(waits).await {
            assert!(
                result.as_ref().is_ok_and(|p| p.done),
                "{verbs:?} {w}: {result:?}"
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{verbs:?}: {:?}",
            started.elapsed()
        );
        let notices = notices.lock().unwrap().clone();
        assert_eq!(notices.len(), 1, "{verbs:?}: {notices:?}");
        assert!(
            notices[0].contains("403")
                && notices[0].contains("cannot ")
                && notices[0].contains("at the cluster scope")
                && notices[0].contains("with its own watch instead"),
            "{notices:?}"
        );
    }
}

#[tokio::test]
async fn one_rollout_board_watch_per_kind_gives_each_workloads_verdict() {
    let mut scenario = healthy_with(5, 6, 1);
    scenario.kube.never_ready = vec!["payments/api".into()];
    let (sim, client) = start(scenario).await;
    let listed = asm_canary::k8s::rollout::list_workloads(&client, WorkloadKind::Deployment)
        .await
        .unwrap();
    let wave: Vec<WorkloadRef> = listed
        .iter()
        .map(|w| w.reference())
        .filter(|w| w.namespace != "kube-system" && !w.namespace.starts_with("aks-istio"))
        .collect();
    assert!(wave.len() > 30, "{} workloads", wave.len());
    let missing = WorkloadRef::new(WorkloadKind::Deployment, "payments", "nope");
    let doomed = WorkloadRef::new(WorkloadKind::Deployment, "payments", "worker");
    let stuck = WorkloadRef::new(WorkloadKind::Deployment, "payments", "api");
    let before = kube_gets(&sim);
    let board = asm_canary::k8s::RolloutBoard::follow(
        &client,
        wave.iter().cloned().chain([missing.clone()]),
    );
    let mut waits = Vec::new();
    for w in wave.iter().filter(|w| **w != doomed) {
        let outcome = restart(&client, w, now()).await;
        let timeout = Duration::from_secs(if *w == stuck { 1 } else { 60 });
        let (board, generation) = (&board, outcome.generation);
        waits.push(async move { (w.clone(), board.wait(w, generation, timeout).await) });
    }
    let gone = board.wait(&doomed, Some(i64::MAX), Duration::from_secs(60));
    let delete = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), "payments")
            .delete("worker", &Default::default())
            .await
            .unwrap();
    };
    let (results, gone, _) = tokio::join!(futures::future::join_all(waits), gone, delete);
    for (w, result) in results {
        match result {
            Ok(p) if w != stuck => assert!(p.done, "{w}: {p:?}"),
            Err(e) if w == stuck => {
                let text = e.to_string();
                assert!(
                    text.contains("not finished after")
                        && text.contains("Waiting for deployment \"api\""),
                    "{text}"
                );
            }
            other => panic!("{w}: {other:?}"),
        }
    }
    assert!(gone.unwrap_err().to_string().contains("was deleted"));
    let err = board
        .wait(&missing, None, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    // Reads: the restarts' own reads (one per workload), plus one paged list and one watch.
    let reads = kube_gets(&sim) - before;
    let restarted = wave.len() as u64 - 1;
    assert!(
        reads <= restarted + 3,
        "{reads} reads for {restarted} workloads"
    );
}
