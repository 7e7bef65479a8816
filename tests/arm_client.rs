//! The ARM client against the simulated AKS cluster over real HTTPS: a client-secret token
//! from the simulator's Entra endpoint (its CA trusted through `--ca-file`'s code path), GET
//! and PUT with the LRO, eTag conflicts, throttling and busy answers, a failing LRO, and the
//! profiles and kubeconfig.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use asm_canary::azure::{
    ArmClient, ArmClientOptions, ArmError, AuthMode, AuthSettings, ClusterDoc, ClusterId,
    PollOptions, RetryPolicy, build_credential, build_http_client,
};
use asm_canary_sim::{Scenario, SimHandle, SimOptions};
use azure_core::credentials::TokenCredential;
use serde_json::{Value, json};

/// LROs of 60 simulated seconds take 0.12 s.
fn fast(name: &str) -> Scenario {
    let mut s = Scenario::builtin(name).expect("builtin scenario");
    s.time_scale = 0.002;
    s
}

fn auth(handle: &SimHandle) -> AuthSettings {
    let info = &handle.info;
    AuthSettings {
        mode: AuthMode::Auto,
        tenant_id: Some(info.tenant_id.clone()),
        client_id: Some(info.client_id.clone()),
        client_secret: Some(info.client_secret.clone()),
        authority_host: Some(info.authority_host.clone()),
    }
}

fn options(handle: &SimHandle) -> ArmClientOptions {
    ArmClientOptions {
        endpoint: handle.info.arm_endpoint.clone(),
        retry: RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_secs(3),
        },
        poll: PollOptions {
            default_interval: Duration::from_millis(20),
            min_interval: Duration::from_millis(5),
            max_interval: Duration::from_millis(50),
            timeout: Duration::from_secs(20),
        },
        ..Default::default()
    }
}

struct Setup {
    handle: SimHandle,
    client: ArmClient,
    credential: Arc<dyn TokenCredential>,
    http: reqwest::Client,
    id: ClusterId,
}

async fn setup(scenario: Scenario) -> Setup {
    let handle = asm_canary_sim::start(SimOptions::new(scenario))
        .await
        .expect("simulator starts");
    let http = build_http_client(Some(("sim CA", handle.info.ca_pem.as_bytes()))).unwrap();
    let no_env = |_: &str| None;
    let (credential, choice) = build_credential(&auth(&handle), &http, &no_env).unwrap();
    assert_eq!(choice.mode, AuthMode::ClientSecret, "{}", choice.reason);
    let client = ArmClient::new(options(&handle), credential.clone(), http.clone()).unwrap();
    let id: ClusterId = handle.info.cluster_id().parse().unwrap();
    Setup {
        handle,
        client,
        credential,
        http,
        id,
    }
}

fn revs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn exactly(
    want: &'static [&'static str],
) -> impl Fn(&ClusterDoc) -> Result<(), String> + Send + Sync {
    move |doc: &ClusterDoc| {
        if doc.revisions() == revs(want) {
            Ok(())
        } else {
            Err(format!("expected {want:?}, found {:?}", doc.revisions()))
        }
    }
}

/// Mutating ARM requests the simulator logged: (method, path suffix, status).
fn arm_writes(handle: &SimHandle) -> Vec<(String, u16)> {
    handle
        .shared
        .requests
        .snapshot()
        .into_iter()
        .filter(|r| r.api == "arm")
        .map(|r| (r.method, r.status))
        .collect()
}

async fn sim_state(s: &Setup) -> Value {
    s.http
        .get(format!("{}/_sim/state", s.handle.info.arm_endpoint))
        .bearer_auth(&s.handle.info.sim_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn connect_resolves_auto_to_client_secret_and_reads_the_cluster() {
    let handle = asm_canary_sim::start(SimOptions::new(fast("healthy")))
        .await
        .unwrap();
    let no_env = |_: &str| None;
    let (client, choice) = ArmClient::connect(
        options(&handle),
        &auth(&handle),
        Some(("sim CA", handle.info.ca_pem.as_bytes())),
        &no_env,
    )
    .unwrap();
    assert_eq!(choice.mode, AuthMode::ClientSecret);
    let id: ClusterId = handle.info.cluster_id().parse().unwrap();
    let doc = client.get_cluster(&id).await.unwrap();
    assert_eq!(doc.revisions(), revs(&["asm-1-27"]));
    assert_eq!(doc.provisioning_state(), Some("Succeeded"));
    assert_eq!(doc.location(), Some("eastus2"));
    assert!(doc.kubernetes_version().unwrap().starts_with("1.33"));
    assert!(doc.etag.is_some());

    // Without the simulator's CA the TLS handshake fails: the CA really is what lets us in.
    let s = setup(fast("healthy")).await;
    let untrusting = ArmClient::new(
        options(&s.handle),
        s.credential.clone(),
        build_http_client(None).unwrap(),
    )
    .unwrap();
    let err = untrusting.get_cluster(&s.id).await.unwrap_err();
    // Named as the TLS failure it is, with the fix (#13 item 8), not "error sending request".
    assert!(matches!(err, ArmError::Tls { .. }), "{err}");
    assert!(err.to_string().contains("--ca-file"), "{err}");
}

#[tokio::test]
async fn start_and_complete_with_the_lro_over_https() {
    let s = setup(fast("healthy")).await;
    let before = s.client.get_cluster(&s.id).await.unwrap();
    let start = revs(&["asm-1-27", "asm-1-28"]);
    let doc = s
        .client
        .set_revisions(&s.id, &start, &exactly(&["asm-1-27"]))
        .await
        .unwrap();
    assert_eq!(doc.revisions(), start);
    assert_eq!(doc.provisioning_state(), Some("Succeeded"));
    assert_ne!(doc.etag, before.etag);
    assert_eq!(
        s.handle.shared.mesh.borrow().revisions,
        start,
        "the add-on follows ARM"
    );
    // Everything this tool does not model survived the round trip.
    let mut expected = before.body.clone();
    let mut got = doc.body.clone();
    for v in [&mut expected, &mut got] {
        v.as_object_mut().unwrap().remove("eTag");
        v["properties"]["serviceMeshProfile"]["istio"]
            .as_object_mut()
            .unwrap()
            .remove("revisions");
    }
    assert_eq!(got, expected);

    let err = s.client.mesh_upgrade_profile(&s.id).await.unwrap_err();
    assert!(matches!(err, ArmError::UpgradeInProgress { .. }), "{err}");

    let complete = revs(&["asm-1-28"]);
    let doc = s
        .client
        .set_revisions(&s.id, &complete, &exactly(&["asm-1-27", "asm-1-28"]))
        .await
        .unwrap();
    assert_eq!(doc.revisions(), complete);
    assert_eq!(
        arm_writes(&s.handle),
        vec![("PUT".to_string(), 200), ("PUT".to_string(), 200)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precondition_failed_is_reread_and_revalidated() {
    let s = setup(fast("healthy")).await;
    let checks = Arc::new(Mutex::new(0u32));
    let token = s
        .credential
        .get_token(&[&format!("{}/.default", s.handle.info.arm_endpoint)], None)
        .await
        .unwrap()
        .token
        .secret()
        .to_string();
    let (http, url) = (
        s.http.clone(),
        format!(
            "{}{}?api-version=2026-06-01",
            s.handle.info.arm_endpoint,
            s.handle.info.cluster_id()
        ),
    );
    let counter = checks.clone();
    let expected = move |doc: &ClusterDoc| {
        let mut n = counter.lock().unwrap();
        *n += 1;
        if *n == 1 {
            // Someone else writes between our GET and our PUT: the eTag moves.
            let (http, url, token) = (http.clone(), url.clone(), token.clone());
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(async move {
                    let r = http
                        .patch(url)
                        .bearer_auth(token)
                        .json(&json!({"tags": {"changed-by": "someone-else"}}))
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success(), "PATCH tags: {}", r.status());
                })
            });
        }
        exactly(&["asm-1-27"])(doc)
    };
    let start = revs(&["asm-1-27", "asm-1-28"]);
    let doc = s
        .client
        .set_revisions(&s.id, &start, &expected)
        .await
        .unwrap();
    assert_eq!(doc.revisions(), start);
    assert_eq!(*checks.lock().unwrap(), 2, "validated again after the 412");
    assert_eq!(
        doc.body["tags"]["changed-by"], "someone-else",
        "the other write is kept"
    );
    assert_eq!(
        arm_writes(&s.handle),
        vec![
            ("PATCH".to_string(), 200),
            ("PUT".to_string(), 412),
            ("PUT".to_string(), 200)
        ]
    );
}

#[tokio::test]
async fn throttling_and_busy_answers_are_retried() {
    let mut scenario = fast("arm-throttling");
    scenario.arm.retry_after_secs = 1;
    let s = setup(scenario).await;
    let started = Instant::now();
    let start = revs(&["asm-1-27", "asm-1-28"]);
    let doc = s
        .client
        .set_revisions(&s.id, &start, &exactly(&["asm-1-27"]))
        .await
        .unwrap();
    assert_eq!(doc.revisions(), start);
    let state = sim_state(&s).await;
    let throttled = state
        .pointer("/arm/counters/throttled")
        .and_then(Value::as_u64);
    assert!(
        throttled.unwrap_or(0) >= 1,
        "the scenario throttled us: {state}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was honoured"
    );
    let writes = arm_writes(&s.handle);
    assert!(
        writes.contains(&("PUT".to_string(), 409)),
        "busy answer seen: {writes:?}"
    );
    assert_eq!(writes.last(), Some(&("PUT".to_string(), 200)));
}

#[tokio::test]
async fn failed_lro_is_a_typed_error_and_the_cluster_keeps_its_revision() {
    let s = setup(fast("lro-failure")).await;
    let accepted = s
        .client
        .begin_set_revisions(
            &s.id,
            &revs(&["asm-1-27", "asm-1-28"]),
            &exactly(&["asm-1-27"]),
        )
        .await
        .unwrap();
    let url = accepted.operation_url.expect("an Azure-AsyncOperation URL");
    assert!(url.starts_with(&s.handle.info.arm_endpoint), "{url}");
    let err = s.client.poll_operation(&s.id, &url).await.unwrap_err();
    match &err {
        ArmError::OperationFailed {
            status,
            code,
            message,
            operation_url,
            cluster,
        } => {
            assert_eq!(status, "Failed");
            assert_eq!(code, "ResourceOperationFailure");
            assert!(
                message.contains("ServiceMeshRevisionInstallFailed"),
                "{message}"
            );
            assert_eq!(operation_url, &url);
            assert_eq!(cluster, &s.id.to_string());
        }
        other => panic!("expected OperationFailed, got {other}"),
    }
    let after = s.client.wait_idle(&s.id).await.unwrap();
    assert_eq!(after.revisions(), revs(&["asm-1-27"]));
    let err = s
        .client
        .confirm_revisions(&s.id, &revs(&["asm-1-27", "asm-1-28"]))
        .await
        .unwrap_err();
    assert!(matches!(err, ArmError::RevisionsMismatch { .. }), "{err}");
}

#[tokio::test]
async fn profiles_and_user_kubeconfig() {
    let s = setup(fast("healthy")).await;
    let up = s.client.mesh_upgrade_profile(&s.id).await.unwrap();
    assert_eq!(up.properties.revision.as_deref(), Some("asm-1-27"));
    assert_eq!(up.properties.upgrades, revs(&["asm-1-28", "asm-1-29"]));
    let rp = s
        .client
        .mesh_revision_profile(&s.id.subscription, "eastus2")
        .await
        .unwrap();
    assert!(rp.revision("asm-1-28").is_some(), "{rp:?}");
    let kubeconfig = s.client.list_cluster_user_kubeconfig(&s.id).await.unwrap();
    let text = String::from_utf8(kubeconfig.clone()).unwrap();
    assert!(text.contains(&s.handle.info.kube_server), "{text}");
    asm_canary::k8s::client_from_kubeconfig_bytes(
        &kubeconfig,
        Some(s.handle.info.ca_pem.as_bytes()),
    )
    .await
    .map(|_| ())
    .expect("the kubeconfig builds a client");
}
