//! The simulated ARM, token endpoint and `/_sim` API, driven over real HTTPS with the
//! simulator's CA trusted, the way asm-canary (and azure_identity) talk to them.
//! (`asm-canary sim serve`, the binary, is tested in the root crate's `tests/sim_serve.rs`.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use asm_canary_sim::{Scenario, SimHandle, SimOptions};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

const API: &str = "2025-10-01";
const BUSY: &str = "Operation is not allowed: Another operation (Updating) is in progress, please wait for it to finish before starting a new operation. See https://aka.ms/aks-pending-operation";

/// A scenario fast enough for tests: an LRO of 60 simulated seconds takes 0.12 s.
fn fast(name: &str) -> Scenario {
    let mut s = Scenario::builtin(name).expect("builtin scenario");
    s.time_scale = 0.002;
    s
}

fn http_client(ca_pem: &str) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("add CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .build()
        .expect("reqwest client")
}

struct Sim {
    handle: SimHandle,
    http: reqwest::Client,
    token: String,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
    fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

impl Sim {
    async fn start(scenario: Scenario) -> Self {
        let handle = asm_canary_sim::start(SimOptions::new(scenario))
            .await
            .expect("simulator starts");
        let http = http_client(&handle.info.ca_pem);
        let mut sim = Self {
            handle,
            http,
            token: String::new(),
        };
        let reply = sim
            .token_request(&sim.handle.info.client_secret.clone())
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        sim.token = reply.body["access_token"].as_str().unwrap().to_string();
        sim
    }

    async fn token_request(&self, secret: &str) -> Reply {
        let info = &self.handle.info;
        let response = self
            .http
            .post(format!(
                "{}/{}/oauth2/v2.0/token",
                info.authority_host, info.tenant_id
            ))
            .form(&[
                ("client_id", info.client_id.as_str()),
                ("client_secret", secret),
                ("grant_type", "client_credentials"),
                ("scope", "https://management.azure.com/.default"),
            ])
            .send()
            .await
            .expect("token request");
        reply(response).await
    }

    fn cluster_url(&self, suffix: &str) -> String {
        format!(
            "{}{}{suffix}?api-version={API}",
            self.handle.info.arm_endpoint,
            self.handle.info.cluster_id()
        )
    }

    fn revision_profiles_url(&self, suffix: &str) -> String {
        let info = &self.handle.info;
        format!(
            "{}/subscriptions/{}/providers/Microsoft.ContainerService/locations/{}/meshRevisionProfiles{suffix}?api-version={API}",
            info.arm_endpoint, info.subscription, info.location
        )
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        reply(req.send().await.expect("request")).await
    }

    async fn get(&self, url: &str) -> Reply {
        self.send(self.http.get(url).bearer_auth(&self.token)).await
    }

    async fn post(&self, url: &str) -> Reply {
        self.send(self.http.post(url).bearer_auth(&self.token))
            .await
    }

    async fn put(&self, url: &str, body: &Value, if_match: Option<&str>) -> Reply {
        let mut req = self.http.put(url).bearer_auth(&self.token).json(body);
        if let Some(etag) = if_match {
            req = req.header("If-Match", etag);
        }
        self.send(req).await
    }

    async fn cluster(&self) -> Value {
        let r = self.get(&self.cluster_url("")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body
    }

    /// GET the cluster, set its revisions, PUT it back with the eTag just read.
    async fn put_revisions(&self, revisions: &[&str]) -> Reply {
        let mut doc = self.cluster().await;
        let etag = doc["eTag"].as_str().unwrap().to_string();
        doc["properties"]["serviceMeshProfile"]["istio"]["revisions"] = json!(revisions);
        self.put(&self.cluster_url(""), &doc, Some(&etag)).await
    }

    /// Polls an Azure-AsyncOperation URL verbatim until a terminal status.
    async fn wait_operation(&self, url: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = self.get(url).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            let status = r.body["status"].as_str().unwrap_or("").to_string();
            if ["Succeeded", "Failed", "Canceled"].contains(&status.as_str()) {
                return r.body;
            }
            assert_eq!(status, "InProgress", "{}", r.body);
            assert!(Instant::now() < deadline, "operation never ended");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn sim_get(&self, path: &str) -> Reply {
        let url = format!("{}{path}", self.handle.info.arm_endpoint);
        self.send(self.http.get(url).bearer_auth(&self.handle.info.sim_token))
            .await
    }
}

async fn reply(response: reqwest::Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)))
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn revisions(doc: &Value) -> Vec<String> {
    serde_json::from_value(doc["properties"]["serviceMeshProfile"]["istio"]["revisions"].clone())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Entra ID token endpoint

fn credential(sim: &Sim, secret: &str) -> Arc<azure_identity::ClientSecretCredential> {
    use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
    use azure_core::http::{ClientOptions, Transport};
    let info = &sim.handle.info;
    let mut custom = CustomConfiguration::default();
    custom.authority_host = info.authority_host.clone();
    let client_options = ClientOptions {
        cloud: Some(Arc::new(CloudConfiguration::Custom(custom))),
        transport: Some(Transport::new(Arc::new(http_client(&info.ca_pem)))),
        ..Default::default()
    };
    azure_identity::ClientSecretCredential::new(
        &info.tenant_id,
        info.client_id.clone(),
        secret.to_string().into(),
        Some(azure_identity::ClientSecretCredentialOptions { client_options }),
    )
    .expect("credential")
}

#[tokio::test]
async fn azure_identity_gets_a_token_that_arm_accepts() {
    use azure_core::credentials::TokenCredential;
    let sim = Sim::start(fast("healthy")).await;
    let cred = credential(&sim, &sim.handle.info.client_secret);
    let token = cred
        .get_token(&["https://management.azure.com/.default"], None)
        .await
        .expect("token from the simulated Entra ID");
    let remaining = token.expires_on - azure_core::time::OffsetDateTime::now_utc();
    assert!(
        remaining > azure_core::time::Duration::minutes(50),
        "{remaining}"
    );
    let r = sim
        .send(
            sim.http
                .get(sim.cluster_url(""))
                .bearer_auth(token.token.secret()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["name"], "aks-sim");

    // The token endpoint's POST is in the request log as api "token".
    let log = sim.sim_get("/_sim/requests").await;
    let tokens: Vec<&Value> = log.body["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["api"] == "token")
        .collect();
    assert!(tokens.len() >= 2, "{}", log.body);
    assert!(
        tokens
            .iter()
            .all(|r| r["status"] == 200 && r["method"] == "POST")
    );
}

#[tokio::test]
async fn a_wrong_secret_is_invalid_client_aadsts7000215() {
    use azure_core::credentials::TokenCredential;
    let sim = Sim::start(fast("healthy")).await;
    let cred = credential(&sim, "not-the-secret");
    let err = cred
        .get_token(&["https://management.azure.com/.default"], None)
        .await
        .expect_err("a wrong secret must fail");
    let text = format!("{err:?} {err}");
    assert!(text.contains("7000215"), "{text}");

    let r = sim.token_request("not-the-secret").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.body["error"], "invalid_client");
    assert_eq!(r.body["error_codes"], json!([7000215]));
    assert!(
        r.body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS7000215: Invalid client secret provided.")
    );

    // The success shape: numbers, not strings, for expires_in (v2 endpoint).
    let ok = sim.token_request(&sim.handle.info.client_secret).await;
    assert_eq!(ok.body["token_type"], "Bearer");
    assert!(ok.body["expires_in"].is_u64(), "{}", ok.body);
    assert_eq!(ok.header("cache-control"), "no-store, no-cache");
    assert_eq!(
        ok.body["access_token"].as_str().unwrap().split('.').count(),
        3
    );
}

#[tokio::test]
async fn an_expired_or_missing_token_gets_401_with_www_authenticate() {
    let mut scenario = fast("healthy");
    scenario.arm.token_lifetime_secs = 0;
    let sim = Sim::start(scenario).await;
    assert_eq!(
        sim.token_request(&sim.handle.info.client_secret).await.body["expires_in"],
        0
    );
    let r = sim.get(&sim.cluster_url("")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "ExpiredAuthenticationToken");
    assert!(r.message().starts_with("The access token expiry UTC time"));
    assert!(
        r.header("www-authenticate").starts_with("Bearer "),
        "{:?}",
        r.headers
    );
    assert!(
        r.header("www-authenticate")
            .contains("error=\"invalid_token\"")
    );

    let r = sim.send(sim.http.get(sim.cluster_url(""))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "AuthenticationFailed");
    assert!(r.header("www-authenticate").starts_with("Bearer "));

    let r = sim
        .send(sim.http.get(sim.cluster_url("")).bearer_auth("forged"))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "InvalidAuthenticationToken");

    // /_sim needs a token too; the sim token works there but not on ARM.
    let url = format!("{}/_sim/state", sim.handle.info.arm_endpoint);
    assert_eq!(
        sim.send(sim.http.get(&url)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let r = sim
        .send(
            sim.http
                .get(sim.cluster_url(""))
                .bearer_auth(&sim.handle.info.sim_token),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

// ---------------------------------------------------------------------------------------
// managedClusters GET / PUT, eTag, LRO

#[tokio::test]
async fn get_shows_a_full_cluster_with_its_mesh_profile() {
    let sim = Sim::start(fast("healthy")).await;
    let doc = sim.cluster().await;
    let props = &doc["properties"];
    assert_eq!(doc["type"], "Microsoft.ContainerService/ManagedClusters");
    assert_eq!(doc["location"], "eastus2");
    assert!(doc["eTag"].as_str().is_some_and(|e| e.len() == 36));
    assert_eq!(props["provisioningState"], "Succeeded");
    assert_eq!(props["kubernetesVersion"], "1.33");
    assert!(
        props["currentKubernetesVersion"]
            .as_str()
            .unwrap()
            .starts_with("1.33.")
    );
    assert!(
        props["agentPoolProfiles"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    );
    let mesh = &props["serviceMeshProfile"];
    assert_eq!(mesh["mode"], "Istio");
    assert_eq!(mesh["istio"]["revisions"], json!(["asm-1-27"]));
    assert_eq!(
        mesh["istio"]["components"]["ingressGateways"],
        json!([{"mode": "External", "enabled": true}, {"mode": "Internal", "enabled": true}])
    );
    assert!(mesh["istio"]["certificateAuthority"]["plugin"]["keyVaultId"].is_string());
    // ARM paths are case-insensitive.
    let lower = sim
        .cluster_url("")
        .replace("resourceGroups", "resourcegroups");
    assert_eq!(sim.get(&lower).await.status, StatusCode::OK);
    // every supported stable api-version
    for v in asm_canary_sim::arm::SUPPORTED_API_VERSIONS {
        let url = sim.cluster_url("").replace(API, v);
        assert_eq!(sim.get(&url).await.status, StatusCode::OK, "{v}");
    }
}

#[tokio::test]
async fn put_with_a_stale_etag_is_412_and_the_body_round_trips() {
    let sim = Sim::start(fast("healthy")).await;
    let mut doc = sim.cluster().await;
    let etag = doc["eTag"].as_str().unwrap().to_string();
    doc["properties"]["someFutureField"] = json!({"kept": true});
    doc["tags"]["owner"] = json!("sre");

    let r = sim
        .put(
            &sim.cluster_url(""),
            &doc,
            Some("00000000-1111-2222-3333-444444444444"),
        )
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(r.code(), "PreconditionFailed");
    let r = sim
        .send(
            sim.http
                .put(sim.cluster_url(""))
                .bearer_auth(&sim.token)
                .header("If-None-Match", "*")
                .json(&doc),
        )
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);

    let r = sim.put(&sim.cluster_url(""), &doc, Some(&etag)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["properties"]["provisioningState"], "Updating");
    assert_ne!(r.body["eTag"].as_str().unwrap(), etag);
    let op = sim.wait_operation(r.header("azure-asyncoperation")).await;
    assert_eq!(op["status"], "Succeeded");

    let after = sim.cluster().await;
    assert_eq!(
        after["properties"]["someFutureField"],
        json!({"kept": true})
    );
    assert_eq!(after["tags"]["owner"], "sre");
    assert_eq!(after["properties"]["provisioningState"], "Succeeded");
    // the old eTag no longer works
    let r = sim.put(&sim.cluster_url(""), &after, Some(&etag)).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);

    let log = sim.sim_get("/_sim/requests").await;
    let puts: Vec<u64> = log.body["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["method"] == "PUT")
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(puts, vec![412, 412, 200, 412]);
}

#[tokio::test]
async fn the_start_operation_runs_to_succeeded_and_publishes_the_mesh() {
    let mut scenario = fast("healthy");
    // 0.6 s real, applied at 0.3 s: the checks right after the PUT land well before that,
    // even on a loaded machine.
    scenario.arm.lro_seconds = 300.0;
    scenario.arm.apply_at = 0.5;
    let sim = Sim::start(scenario).await;
    let mut mesh = sim.handle.shared.mesh.subscribe();
    assert_eq!(mesh.borrow_and_update().revisions, vec!["asm-1-27"]);

    let r = sim.put_revisions(&["asm-1-27", "asm-1-28"]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["properties"]["provisioningState"], "Updating");
    assert_eq!(revisions(&r.body), vec!["asm-1-27", "asm-1-28"]);
    let op_url = r.header("azure-asyncoperation").to_string();
    let parsed = reqwest::Url::parse(&op_url).expect("absolute URL");
    let q: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
    assert!(
        q.contains(&("api-version".into(), "2016-03-30".into())),
        "{op_url}"
    );
    for key in ["t", "c", "s", "h"] {
        assert!(q.iter().any(|(k, _)| k == key), "{op_url} lacks {key}");
    }
    assert!(
        parsed
            .path()
            .contains("/providers/Microsoft.ContainerService/locations/eastus2/operations/")
    );

    // Right after the PUT: running, and the add-on has not been told yet.
    let first = sim.get(&op_url).await;
    assert_eq!(first.body["status"], "InProgress");
    assert!(first.body["startTime"].is_string() && first.body["endTime"].is_null());
    assert!(!mesh.has_changed().unwrap());
    assert_eq!(
        sim.cluster().await["properties"]["provisioningState"],
        "Updating"
    );

    let done = sim.wait_operation(&op_url).await;
    assert_eq!(done["status"], "Succeeded", "{done}");
    assert!(done["endTime"].is_string() && done["error"].is_null());
    assert_eq!(
        mesh.borrow_and_update().revisions,
        vec!["asm-1-27", "asm-1-28"]
    );
    let doc = sim.cluster().await;
    assert_eq!(doc["properties"]["provisioningState"], "Succeeded");
    assert_eq!(revisions(&doc), vec!["asm-1-27", "asm-1-28"]);

    let state = sim.sim_get("/_sim/state").await;
    assert_eq!(state.status, StatusCode::OK);
    let arm = &state.body["arm"];
    assert_eq!(arm["revisions"], json!(["asm-1-27", "asm-1-28"]));
    assert_eq!(arm["provisioningState"], "Succeeded");
    assert_eq!(arm["operations"][0]["status"], "Succeeded");
    assert_eq!(arm["operations"][0]["kind"], "start");
    assert_eq!(arm["counters"]["operations_succeeded"], 1);
    assert!(state.body.as_object().unwrap().contains_key("kube"));

    // complete: back to one revision, the add-on follows
    let r = sim.put_revisions(&["asm-1-28"]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let done = sim.wait_operation(r.header("azure-asyncoperation")).await;
    assert_eq!(done["status"], "Succeeded");
    assert_eq!(mesh.borrow_and_update().revisions, vec!["asm-1-28"]);
}

#[tokio::test]
async fn a_second_put_while_one_runs_is_409_operation_not_allowed() {
    let mut scenario = fast("healthy");
    scenario.arm.lro_seconds = 500.0; // 1 s real: the second PUT lands well inside it
    let sim = Sim::start(scenario).await;
    let r = sim.put_revisions(&["asm-1-27", "asm-1-28"]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let busy = sim.put_revisions(&["asm-1-27", "asm-1-28"]).await;
    assert_eq!(busy.status, StatusCode::CONFLICT, "{}", busy.body);
    assert_eq!(busy.code(), "OperationNotAllowed");
    assert_eq!(busy.message(), BUSY);
    // abort cancels it and puts the cluster back
    let abort = sim.post(&sim.cluster_url("/abort")).await;
    assert_eq!(abort.status, StatusCode::NO_CONTENT, "{}", abort.body);
    let op = sim.wait_operation(r.header("azure-asyncoperation")).await;
    assert_eq!(op["status"], "Canceled");
    assert!(op["error"]["code"].is_string());
    let doc = sim.cluster().await;
    assert_eq!(revisions(&doc), vec!["asm-1-27"]);
    assert_eq!(doc["properties"]["provisioningState"], "Canceled");
    assert_eq!(sim.handle.shared.mesh.borrow().revisions, vec!["asm-1-27"]);
}

#[tokio::test]
async fn lro_failure_ends_failed_and_leaves_the_mesh_unchanged() {
    let sim = Sim::start(fast("lro-failure")).await;
    let mut mesh = sim.handle.shared.mesh.subscribe();
    mesh.borrow_and_update();
    let r = sim.put_revisions(&["asm-1-27", "asm-1-28"]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(revisions(&r.body), vec!["asm-1-27", "asm-1-28"]);
    let op = sim.wait_operation(r.header("azure-asyncoperation")).await;
    assert_eq!(op["status"], "Failed", "{op}");
    assert_eq!(op["error"]["code"], "ResourceOperationFailure");
    assert!(
        op["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'Failed'")
    );
    assert!(op["error"]["details"][0]["code"].is_string());

    let doc = sim.cluster().await;
    assert_eq!(doc["properties"]["provisioningState"], "Failed");
    assert_eq!(revisions(&doc), vec!["asm-1-27"]);
    assert_eq!(
        doc["properties"]["status"]["provisioningError"]["code"],
        "ResourceOperationFailure"
    );
    assert!(
        !mesh.has_changed().unwrap(),
        "the add-on must not have been told"
    );
    let state = sim.sim_get("/_sim/state").await;
    assert_eq!(state.body["arm"]["counters"]["operations_failed"], 1);

    // The fault fires once: a retried start succeeds.
    let r = sim.put_revisions(&["asm-1-27", "asm-1-28"]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let op = sim.wait_operation(r.header("azure-asyncoperation")).await;
    assert_eq!(op["status"], "Succeeded");
    assert_eq!(
        mesh.borrow_and_update().revisions,
        vec!["asm-1-27", "asm-1-28"]
    );
}

#[tokio::test]
async fn arm_throttling_answers_429_and_409_yet_the_upgrade_gets_through() {
    let mut scenario = fast("arm-throttling");
    let sim = Sim::start(scenario.clone()).await;
    // The first ARM request is throttled with the builtin's Retry-After.
    let r = sim.get(&sim.cluster_url("")).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.code(), "SubscriptionRequestsThrottled");
    assert_eq!(r.header("retry-after"), "1");
    assert_eq!(r.header("x-ms-ratelimit-remaining-subscription-reads"), "0");
    drop(sim);

    // With Retry-After 0, a client that retries 429 and 409 finishes the upgrade.
    scenario.arm.retry_after_secs = 0;
    let sim = Sim::start(scenario).await;
    let mut seen = (0, 0);
    let mut op_url = None;
    for _ in 0..20 {
        let g = sim.get(&sim.cluster_url("")).await;
        if g.status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(g.header("retry-after"), "0");
            seen.0 += 1;
            continue;
        }
        let mut doc = g.body;
        let etag = doc["eTag"].as_str().unwrap().to_string();
        doc["properties"]["serviceMeshProfile"]["istio"]["revisions"] =
            json!(["asm-1-27", "asm-1-28"]);
        let r = sim.put(&sim.cluster_url(""), &doc, Some(&etag)).await;
        match r.status {
            StatusCode::OK => {
                op_url = Some(r.header("azure-asyncoperation").to_string());
                break;
            }
            StatusCode::TOO_MANY_REQUESTS => seen.0 += 1,
            StatusCode::CONFLICT => {
                assert_eq!(r.code(), "OperationNotAllowed");
                seen.1 += 1;
            }
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert!(seen.0 >= 1 && seen.1 >= 1, "saw 429s and 409s: {seen:?}");
    let op_url = op_url.expect("the PUT got through");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = sim.get(&op_url).await;
        if r.status == StatusCode::OK && r.body["status"] == "Succeeded" {
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        sim.handle.shared.mesh.borrow().revisions,
        vec!["asm-1-27", "asm-1-28"]
    );
    let state = sim.sim_get("/_sim/state").await;
    assert!(state.body["arm"]["counters"]["throttled"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn each_revision_rule_is_enforced_with_the_services_error() {
    let mut scenario = fast("healthy");
    scenario
        .cluster
        .mesh_revisions
        .push(asm_canary_sim::scenario::MeshRevisionShape {
            revision: "asm-1-30".into(),
            upgrades: vec![],
            kubernetes: vec!["1.33".into(), "1.34".into()],
        });
    let sim = Sim::start(scenario).await;
    let before = sim.cluster().await["eTag"].clone();
    let cases: &[(&[&str], &str)] = &[
        (
            &["asm-1-27", "asm-1-28", "asm-1-29"],
            "at most two revisions",
        ),
        (&["asm-1-27", "asm-1-27"], "listed more than once"),
        (&["asm-1-27", "1.28"], "is not a valid revision"),
        (
            &["asm-1-27", "asm-1-17"],
            "Revision asm-1-17 is not supported by the service mesh add-on.",
        ),
        (
            &["asm-1-27", "asm-1-30"],
            "not an available upgrade from asm-1-27",
        ),
        (&[], "at least one revision"),
    ];
    for (revs, want) in cases {
        let r = sim.put_revisions(revs).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{revs:?}: {}", r.body);
        assert_eq!(r.code(), "BadRequest", "{revs:?}");
        assert!(
            r.message()
                .starts_with("Requested change in revisions is not allowed. Reason: "),
            "{}",
            r.message()
        );
        assert!(r.message().contains(want), "{revs:?}: {}", r.message());
    }
    // Nothing changed, nothing started.
    let doc = sim.cluster().await;
    assert_eq!(doc["eTag"], before);
    assert_eq!(revisions(&doc), vec!["asm-1-27"]);

    // A skip of one minor is allowed, as the profile offers it; then a third is refused.
    let r = sim.put_revisions(&["asm-1-27", "asm-1-29"]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    sim.wait_operation(r.header("azure-asyncoperation")).await;
    let r = sim.put_revisions(&["asm-1-29", "asm-1-28"]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.message().contains("already in progress"),
        "{}",
        r.message()
    );
}

#[tokio::test]
async fn a_put_whose_body_is_not_json_is_400_even_while_an_operation_runs() {
    let mut scenario = fast("healthy");
    scenario.arm.lro_seconds = 500.0; // 1 s real: the bad PUT lands well inside it
    let sim = Sim::start(scenario).await;
    let r = sim.put_revisions(&["asm-1-27", "asm-1-28"]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    for body in ["not json", "[1, 2]", "{\"location\": "] {
        let bad = sim
            .send(
                sim.http
                    .put(sim.cluster_url(""))
                    .bearer_auth(&sim.token)
                    .header("Content-Type", "application/json")
                    .body(body),
            )
            .await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{body}: {}", bad.body);
        assert_eq!(bad.code(), "InvalidRequestContent", "{body}");
    }
    let busy = sim.put_revisions(&["asm-1-27", "asm-1-28"]).await;
    assert_eq!(busy.status, StatusCode::CONFLICT, "{}", busy.body);
}

#[tokio::test]
async fn malformed_json_unknown_api_version_and_unknown_resources() {
    let sim = Sim::start(fast("healthy")).await;
    let doc = sim.cluster().await;
    let etag = doc["eTag"].as_str().unwrap();

    let r = sim
        .send(
            sim.http
                .put(sim.cluster_url(""))
                .bearer_auth(&sim.token)
                .header("If-Match", etag)
                .header("Content-Type", "application/json")
                .body("{\"location\": "),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "InvalidRequestContent");
    assert!(
        r.message()
            .starts_with("The request content was invalid and could not be deserialized")
    );

    let mut no_location = doc.clone();
    no_location.as_object_mut().unwrap().remove("location");
    let r = sim
        .put(&sim.cluster_url(""), &no_location, Some(etag))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "LocationRequired");

    let r = sim
        .get(&sim.cluster_url("").replace(API, "2019-01-01"))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "InvalidApiVersionParameter");
    assert_eq!(
        r.message(),
        "The api-version '2019-01-01' is invalid. The supported versions are '2026-10-01,2026-08-01,2026-06-01,2026-01-01,2025-10-01'."
    );
    let r = sim
        .get(
            &sim.cluster_url("")
                .replace(&format!("?api-version={API}"), ""),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "MissingApiVersionParameter");

    let r = sim.get(&sim.cluster_url("/fooBars")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "InvalidResourceType");
    assert!(r.message().contains("'managedClusters/fooBars'"));

    let info = &sim.handle.info;
    let other = sim
        .cluster_url("")
        .replace("/managedClusters/aks-sim", "/managedClusters/nope");
    let r = sim.get(&other).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "ResourceNotFound");
    let r = sim
        .get(&sim.cluster_url("").replace("/rg-sim/", "/rg-other/"))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "ResourceGroupNotFound");
    let r = sim
        .get(
            &sim.cluster_url("")
                .replace(&info.subscription, "99999999-0000-0000-0000-000000000000"),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "SubscriptionNotFound");
    // every error is the ARM shape and nothing else
    assert_eq!(r.body.as_object().unwrap().len(), 1);
}

// ---------------------------------------------------------------------------------------
// Profiles and credentials

#[tokio::test]
async fn upgrade_profiles_offer_targets_and_409_while_two_revisions() {
    let sim = Sim::start(fast("healthy")).await;
    let r = sim
        .get(&sim.cluster_url("/meshUpgradeProfiles/istio"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["name"], "istio");
    assert_eq!(
        r.body["type"],
        "Microsoft.ContainerService/managedClusters/meshUpgradeProfiles"
    );
    assert_eq!(r.body["properties"]["revision"], "asm-1-27");
    assert_eq!(
        r.body["properties"]["upgrades"],
        json!(["asm-1-28", "asm-1-29"])
    );
    assert_eq!(
        r.body["properties"]["compatibleWith"][0]["name"],
        "kubernetes"
    );
    let list = sim.get(&sim.cluster_url("/meshUpgradeProfiles")).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.body["value"][0], r.body);

    let rev = sim.get(&sim.revision_profiles_url("/istio")).await;
    assert_eq!(rev.status, StatusCode::OK, "{}", rev.body);
    assert_eq!(
        rev.body["type"],
        "Microsoft.ContainerService/locations/meshRevisionProfiles"
    );
    let revs = rev.body["properties"]["meshRevisions"].as_array().unwrap();
    assert_eq!(revs.len(), 3);
    assert_eq!(revs[0]["revision"], "asm-1-27");
    // the newest has no upgrades key at all, as the real service answers
    assert!(revs[2].as_object().unwrap().get("upgrades").is_none());
    let rev_list = sim.get(&sim.revision_profiles_url("")).await;
    assert_eq!(rev_list.body["value"][0], rev.body);

    let r = sim.put_revisions(&["asm-1-27", "asm-1-28"]).await;
    assert_eq!(r.status, StatusCode::OK);
    sim.wait_operation(r.header("azure-asyncoperation")).await;
    for url in [
        sim.cluster_url("/meshUpgradeProfiles/istio"),
        sim.cluster_url("/meshUpgradeProfiles"),
    ] {
        let r = sim.get(&url).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{url}: {}", r.body);
        assert_eq!(r.code(), "ServiceMeshUpgradeInProgress");
    }
    // region profiles do not depend on the cluster
    assert_eq!(
        sim.get(&sim.revision_profiles_url("/istio")).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn list_cluster_user_credential_gives_a_kubeconfig_for_the_sim() {
    let sim = Sim::start(fast("healthy")).await;
    let r = sim
        .post(&sim.cluster_url("/listClusterUserCredential"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["kubeconfigs"][0]["name"], "clusterUser");
    let raw = STANDARD
        .decode(r.body["kubeconfigs"][0]["value"].as_str().unwrap())
        .expect("base64");
    let kubeconfig: Value = serde_saphyr::from_slice(&raw).expect("kubeconfig is YAML");
    let info = &sim.handle.info;
    assert_eq!(kubeconfig["kind"], "Config");
    assert_eq!(
        kubeconfig["clusters"][0]["cluster"]["server"],
        info.kube_server.as_str()
    );
    let ca = STANDARD
        .decode(
            kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    assert_eq!(String::from_utf8(ca).unwrap(), info.ca_pem);
    assert_eq!(
        kubeconfig["users"][0]["user"]["token"],
        info.sim_token.as_str()
    );
    assert_eq!(
        kubeconfig["current-context"],
        kubeconfig["contexts"][0]["name"]
    );
    // a POST: logged as a mutating request
    let log = sim.sim_get("/_sim/requests").await;
    assert!(log.body["requests"].as_array().unwrap().iter().any(|r| {
        r["api"] == "arm"
            && r["method"] == "POST"
            && r["status"] == 200
            && r["path"]
                .as_str()
                .unwrap()
                .ends_with("/listClusterUserCredential")
    }));
    // GET is not allowed on it
    let r = sim
        .get(&sim.cluster_url("/listClusterUserCredential"))
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn token_endpoint_rejects_unknown_tenant_client_grant_and_scope() {
    let sim = Sim::start(fast("healthy")).await;
    let info = &sim.handle.info;
    let post = |tenant: &str, fields: Vec<(&'static str, String)>| {
        sim.http
            .post(format!(
                "{}/{tenant}/oauth2/v2.0/token",
                info.authority_host
            ))
            .form(&fields)
    };
    let good = |k: &'static str, v: &str| {
        let mut f = vec![
            ("client_id", info.client_id.clone()),
            ("client_secret", info.client_secret.clone()),
            ("grant_type", "client_credentials".to_string()),
            ("scope", "https://management.azure.com/.default".to_string()),
        ];
        for (key, value) in f.iter_mut() {
            if *key == k {
                *value = v.to_string();
            }
        }
        f
    };
    let cases = [
        (
            post("not-our-tenant", good("", "")),
            400,
            "invalid_request",
            90002,
        ),
        (
            post(&info.tenant_id, good("client_id", "someone-else")),
            400,
            "unauthorized_client",
            700016,
        ),
        (
            post(&info.tenant_id, good("grant_type", "password")),
            400,
            "unsupported_grant_type",
            70003,
        ),
        (
            post(
                &info.tenant_id,
                good("scope", "https://management.azure.com/user_impersonation"),
            ),
            400,
            "invalid_scope",
            70011,
        ),
    ];
    for (req, status, error, code) in cases {
        let r = sim.send(req).await;
        assert_eq!(r.status.as_u16(), status, "{}", r.body);
        assert_eq!(r.body["error"], error);
        assert_eq!(r.body["error_codes"], json!([code]));
        assert!(
            r.body["error_description"]
                .as_str()
                .unwrap()
                .starts_with(&format!("AADSTS{code}: "))
        );
    }
    let state = sim.sim_get("/_sim/state").await;
    assert_eq!(state.body["arm"]["counters"]["token_errors"], 4);
}

#[tokio::test]
async fn patch_updates_tags_only_and_requests_can_be_read_since_a_seq() {
    let mut scenario = fast("healthy");
    scenario.arm.etag_mismatch_409 = true;
    let sim = Sim::start(scenario).await;
    let doc = sim.cluster().await;
    let etag = doc["eTag"].as_str().unwrap();
    let r = sim
        .send(
            sim.http
                .patch(sim.cluster_url(""))
                .bearer_auth(&sim.token)
                .json(&json!({"tags": {"team": "mesh"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["tags"], json!({"team": "mesh"}));
    assert_ne!(r.body["eTag"].as_str().unwrap(), etag);
    let r = sim
        .send(
            sim.http
                .patch(sim.cluster_url(""))
                .bearer_auth(&sim.token)
                .json(&json!({"properties": {}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // This scenario answers a stale eTag the way AKS has been seen to: 409 EtagMismatch.
    let r = sim.put(&sim.cluster_url(""), &doc, Some(etag)).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.code(), "EtagMismatch");

    let all = sim.sim_get("/_sim/requests").await.body["requests"].clone();
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 4, "token, 2 PATCH, PUT: {all:?}");
    let statuses: Vec<u64> = all.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, vec![200, 200, 400, 409]);
    let since = all[1]["seq"].as_u64().unwrap();
    let later = sim.sim_get(&format!("/_sim/requests?since={since}")).await;
    assert_eq!(later.body["requests"].as_array().unwrap().len(), 2);
    assert!(
        all.iter()
            .all(|r| r["time"].as_str().is_some_and(|t| t.ends_with('Z')))
    );
}

#[tokio::test]
async fn az_sign_in_documents_metadata_tenants_and_subscriptions() {
    let sim = Sim::start(fast("healthy")).await;
    let info = sim.handle.info.clone();
    // the cloud metadata document `az cloud register --endpoint-resource-manager` reads: no
    // token, every endpoint the simulator
    let r = reply(
        sim.http
            .get(format!(
                "{}/metadata/endpoints?api-version=2022-09-01",
                info.arm_endpoint
            ))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let arm = format!("{}/", info.arm_endpoint);
    assert_eq!(r.body["resourceManager"], arm.as_str());
    assert_eq!(
        r.body["authentication"]["loginEndpoint"],
        info.authority_host.as_str()
    );
    assert_eq!(r.body["authentication"]["audiences"][0], arm.as_str());
    assert!(r.body["name"].is_string() && r.body["suffixes"]["storage"].is_string());
    let old = reply(
        sim.http
            .get(format!(
                "{}/metadata/endpoints?api-version=2019-05-01",
                info.arm_endpoint
            ))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(old.body[0], r.body, "the older form is a list of clouds");

    // what `az login --service-principal` lists, with the token it got
    let get = |path: &str| {
        sim.send(
            sim.http
                .get(format!("{}{path}", info.arm_endpoint))
                .bearer_auth(&sim.token),
        )
    };
    let t = get("/tenants?api-version=2022-12-01").await;
    assert_eq!(t.status, StatusCode::OK);
    assert_eq!(t.body["value"][0]["tenantId"], info.tenant_id.as_str());
    let s = get("/subscriptions?api-version=2022-12-01").await;
    assert_eq!(
        s.body["value"][0]["subscriptionId"],
        info.subscription.as_str()
    );
    assert_eq!(s.body["value"][0]["tenantId"], info.tenant_id.as_str());
    assert_eq!(s.body["value"][0]["state"], "Enabled");
    let one = get(&format!(
        "/subscriptions/{}?api-version=2022-12-01",
        info.subscription
    ))
    .await;
    assert_eq!(one.body, s.body["value"][0]);
    let other =
        get("/subscriptions/99999999-0000-0000-0000-000000000000?api-version=2022-12-01").await;
    assert_eq!(
        (other.status, other.code()),
        (StatusCode::NOT_FOUND, "SubscriptionNotFound")
    );
    // without a token: 401, as ARM
    let anon = reply(
        sim.http
            .get(format!(
                "{}/subscriptions?api-version=2022-12-01",
                info.arm_endpoint
            ))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(anon.status, StatusCode::UNAUTHORIZED);
}
