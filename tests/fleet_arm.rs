//! Cluster discovery against the simulated fleet: ARM's list of managed clusters followed
//! across pages (per subscription and per resource group), a nextLink loop refused, and the
//! existing connect path (ARM → kubeconfig → Kubernetes) reaching each member's own cluster.

use std::time::Duration;

use asm_canary::azure::{
    ArmClient, ArmClientOptions, ArmError, AuthMode, AuthSettings, PollOptions, RetryPolicy,
    build_credential, build_http_client,
};
use asm_canary::cli::args::ClusterArgs;
use asm_canary::cli::connect::{Pace, connect_with_secret};
use asm_canary_sim::{FleetHandle, FleetOptions, FleetScenario};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{ListParams, PostParams};

async fn start(mut scenario: FleetScenario, ca_file: Option<std::path::PathBuf>) -> FleetHandle {
    for m in &mut scenario.members {
        m.scenario.time_scale = 0.002;
    }
    let mut opts = FleetOptions::new(scenario);
    opts.ca_file = ca_file;
    asm_canary_sim::start_fleet(opts)
        .await
        .expect("the fleet starts")
}

fn client(fleet: &FleetHandle) -> ArmClient {
    let info = &fleet.info;
    let http = build_http_client(Some(("fleet CA", info.ca_pem.as_bytes()))).unwrap();
    let auth = AuthSettings {
        mode: AuthMode::Auto,
        tenant_id: Some(info.tenant_id.clone()),
        client_id: Some(info.client_id.clone()),
        client_secret: Some(info.client_secret.clone()),
        authority_host: Some(info.authority_host.clone()),
    };
    let no_env = |_: &str| None;
    let (credential, _) = build_credential(&auth, &http, &no_env).unwrap();
    let options = ArmClientOptions {
        endpoint: info.arm_endpoint.clone(),
        retry: RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(100),
        },
        poll: PollOptions {
            default_interval: Duration::from_millis(20),
            min_interval: Duration::from_millis(5),
            max_interval: Duration::from_millis(50),
            timeout: Duration::from_secs(20),
        },
        ..Default::default()
    };
    ArmClient::new(options, credential, http).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_managed_clusters_follows_next_link_across_pages() {
    let fleet = start(FleetScenario::healthy(12), None).await;
    let arm = client(&fleet);
    let sub = &fleet.info.subscriptions[0];
    let clusters = arm.list_managed_clusters(sub, None).await.unwrap();
    assert_eq!(
        clusters.len(),
        12,
        "three pages of five, every cluster once"
    );
    let mut names: Vec<&str> = clusters.iter().map(|c| c.id.name.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 12);
    let first = &clusters[0];
    assert_eq!(first.id.subscription, *sub);
    assert_eq!(first.location, "eastus2");
    assert_eq!(
        first.tags.get("asm-canary/ring").map(String::as_str),
        Some("prod")
    );
    assert_eq!(first.provisioning_state.as_deref(), Some("Succeeded"));
    assert_eq!(first.revisions, vec!["asm-1-27"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_managed_clusters_by_subscription_and_resource_group_on_the_builtin_fleet() {
    let fleet = start(FleetScenario::builtin("fleet").unwrap(), None).await;
    let arm = client(&fleet);
    let mut all = Vec::new();
    for sub in &fleet.info.subscriptions {
        all.extend(arm.list_managed_clusters(sub, None).await.unwrap());
    }
    assert_eq!(all.len(), 12);
    let by_name = |n: &str| all.iter().find(|c| c.id.name == n).unwrap();
    assert_eq!(
        by_name("aks-prod-4").revisions,
        vec!["asm-1-27", "asm-1-28"]
    );
    assert_eq!(
        by_name("aks-early-4").provisioning_state.as_deref(),
        Some("Failed")
    );
    assert_eq!(by_name("aks-canary-3").revisions, vec!["asm-1-29"]);
    assert_eq!(
        by_name("aks-early-2")
            .tags
            .get("asm-canary/ring")
            .map(String::as_str),
        Some("early")
    );
    let sub = &by_name("aks-early-2").id.subscription;
    let early = arm
        .list_managed_clusters(sub, Some("rg-early"))
        .await
        .unwrap();
    assert!(
        early.iter().all(|c| c.id.resource_group == "rg-early"),
        "{early:?}"
    );
    assert_eq!(early.len(), 2);
    // an unknown subscription is ARM's 404
    match arm
        .list_managed_clusters("deadbeef-0000-0000-0000-000000000000", None)
        .await
    {
        Err(e @ ArmError::Api { status: 404, .. }) => {
            assert_eq!(e.code(), Some("SubscriptionNotFound"), "{e}")
        }
        other => panic!("expected SubscriptionNotFound, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_managed_clusters_refuses_a_next_link_loop() {
    let mut scenario = FleetScenario::healthy(12);
    scenario.next_link_loop = true;
    let fleet = start(scenario, None).await;
    let arm = client(&fleet);
    let err = arm
        .list_managed_clusters(&fleet.info.subscriptions[0], None)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("nextLink") && text.contains("a second time"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connect_path_reaches_each_member_through_the_fleet_arm() {
    let dir = std::env::temp_dir().join(format!("asm-canary-fleet-arm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    let fleet = start(FleetScenario::healthy(2), Some(ca.clone())).await;
    let info = &fleet.info;
    let mut clients = Vec::new();
    for member in &info.members {
        let args = ClusterArgs {
            cluster_id: Some(member.cluster_id.clone()),
            arm_endpoint: info.arm_endpoint.clone(),
            authority_host: Some(info.authority_host.clone()),
            ca_file: Some(ca.clone()),
            ..Default::default()
        };
        let connected = connect_with_secret(
            &args,
            Pace::Simulated,
            &info.tenant_id,
            &info.client_id,
            &info.client_secret,
        )
        .await
        .expect("connects");
        clients.push(connected.env.kube.clone());
    }
    let namespaces = |c: &kube::Client| Api::<Namespace>::all(c.clone());
    let mut only_a = Namespace::default();
    only_a.metadata.name = Some("only-on-a".into());
    namespaces(&clients[0])
        .create(&PostParams::default(), &only_a)
        .await
        .unwrap();
    let names = |list: kube::core::ObjectList<Namespace>| -> Vec<String> {
        list.items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect()
    };
    let on_a = names(
        namespaces(&clients[0])
            .list(&ListParams::default())
            .await
            .unwrap(),
    );
    let on_b = names(
        namespaces(&clients[1])
            .list(&ListParams::default())
            .await
            .unwrap(),
    );
    assert!(on_a.contains(&"only-on-a".to_string()), "{on_a:?}");
    assert!(!on_b.contains(&"only-on-a".to_string()), "{on_b:?}");
    assert!(on_b.contains(&"payments".to_string()), "{on_b:?}");
    let _ = std::fs::remove_dir_all(dir);
}
