//! The simulated fleet: one ARM endpoint for many clusters, ARM's paged list of managed
//! clusters, requests under a cluster id reaching that cluster only, one CA and one token
//! for every listener, and the fleet-wide request log.

use std::sync::Arc;

use asm_canary_sim::{FleetHandle, FleetOptions, FleetScenario};
use reqwest::StatusCode;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

const API: &str = "2025-10-01";

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

struct Fleet {
    handle: FleetHandle,
    http: reqwest::Client,
    token: String,
}

impl Fleet {
    async fn start(mut scenario: FleetScenario) -> Self {
        for m in &mut scenario.members {
            m.scenario.time_scale = m.scenario.time_scale.min(0.01);
        }
        let handle = asm_canary_sim::start_fleet(FleetOptions::new(scenario))
            .await
            .expect("the fleet starts");
        let http = http_client(&handle.info.ca_pem);
        let info = &handle.info;
        let reply: Value = http
            .post(format!(
                "{}/{}/oauth2/v2.0/token",
                info.authority_host, info.tenant_id
            ))
            .form(&[
                ("client_id", info.client_id.as_str()),
                ("client_secret", info.client_secret.as_str()),
                ("grant_type", "client_credentials"),
                ("scope", "https://management.azure.com/.default"),
            ])
            .send()
            .await
            .expect("token request")
            .json()
            .await
            .expect("token JSON");
        let token = reply["access_token"].as_str().expect("a token").to_string();
        Self {
            handle,
            http,
            token,
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, url).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, url: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, url, None).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}?api-version={API}", self.handle.info.arm_endpoint)
    }

    /// Every page of a list, following nextLink: (pages, ids).
    async fn list_all(&self, path: &str) -> (usize, Vec<String>) {
        let mut url = self.url(path);
        let (mut pages, mut ids) = (0, Vec::new());
        loop {
            let (status, body) = self.get(&url).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            pages += 1;
            for c in body["value"].as_array().expect("value") {
                ids.push(c["id"].as_str().unwrap().to_string());
            }
            match body["nextLink"].as_str() {
                Some(next) => url = next.to_string(),
                None => return (pages, ids),
            }
            assert!(pages < 20, "too many pages");
        }
    }
}

fn list_path(sub: &str) -> String {
    format!("/subscriptions/{sub}/providers/Microsoft.ContainerService/managedClusters")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_clusters_at_five_a_page_are_three_pages_each_cluster_once() {
    let fleet = Fleet::start(FleetScenario::healthy(12)).await;
    let sub = fleet.handle.info.subscriptions[0].clone();
    let (status, first) = fleet.get(&fleet.url(&list_path(&sub))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["value"].as_array().unwrap().len(), 5);
    let next = first["nextLink"].as_str().unwrap();
    assert!(
        next.starts_with(&fleet.handle.info.arm_endpoint) && next.contains("$skipToken="),
        "{next}"
    );
    let (pages, mut ids) = fleet.list_all(&list_path(&sub)).await;
    assert_eq!(pages, 3);
    assert_eq!(ids.len(), 12);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 12, "every cluster once");
    let doc = &first["value"][0];
    assert_eq!(
        doc["properties"]["serviceMeshProfile"]["istio"]["revisions"],
        json!(["asm-1-27"])
    );
    assert_eq!(doc["tags"]["asm-canary/ring"], "prod");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builtin_fleet_lists_per_subscription_and_resource_group() {
    let fleet = Fleet::start(FleetScenario::builtin("fleet").unwrap()).await;
    let info = &fleet.handle.info;
    assert_eq!(info.members.len(), 12);
    assert_eq!(info.subscriptions.len(), 2);
    let mut total = 0;
    for sub in &info.subscriptions {
        let (_, ids) = fleet.list_all(&list_path(sub)).await;
        total += ids.len();
        assert!(ids.iter().all(|id| id.contains(sub.as_str())), "{ids:?}");
    }
    assert_eq!(total, 12);
    let early = info.member("aks-early-2").unwrap();
    let (_, ids) = fleet
        .list_all(&format!(
            "/subscriptions/{}/resourceGroups/rg-early/providers/Microsoft.ContainerService/managedClusters",
            early.subscription
        ))
        .await;
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(early.ring.as_deref(), Some("early"));
    // the states the fleet is made of
    let states: Vec<&str> = info.members.iter().map(|m| m.state.as_str()).collect();
    for want in [
        "stale canary",
        "not ready",
        "at the newest",
        "fails its gates",
        "healthy",
    ] {
        assert!(
            states.iter().any(|s| s.contains(want)),
            "{want}: {states:?}"
        );
    }
    let table = info.member_table();
    assert!(
        table.contains("aks-early-2") && table.contains("RING"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_subscription_or_group_answers_as_arm_does() {
    let fleet = Fleet::start(FleetScenario::healthy(2)).await;
    let (status, body) = fleet
        .get(&fleet.url(&list_path("deadbeef-0000-0000-0000-000000000000")))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "SubscriptionNotFound", "{body}");
    let sub = &fleet.handle.info.subscriptions[0];
    let (status, body) = fleet
        .get(&fleet.url(&format!(
            "/subscriptions/{sub}/resourceGroups/rg-none/providers/Microsoft.ContainerService/managedClusters"
        )))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "ResourceGroupNotFound", "{body}");
    // without a token: 401 before anything else
    let resp = fleet
        .http
        .get(fleet.url(&list_path(sub)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let (status, body) = fleet
        .get(&format!(
            "{}{}",
            fleet.url(&list_path(sub)),
            "&$skipToken=garbage"
        ))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_under_a_cluster_id_reaches_that_cluster_only() {
    let fleet = Fleet::start(FleetScenario::healthy(3)).await;
    let (a, b) = (&fleet.handle.info.members[0], &fleet.handle.info.members[1]);
    let (status, body) = fleet
        .send(
            reqwest::Method::PATCH,
            &fleet.url(&a.cluster_id),
            Some(json!({"tags": {"owner": "team-a"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let doc_a = fleet.handle.members[0].shared.arm.cluster_document();
    let doc_b = fleet.handle.members[1].shared.arm.cluster_document();
    assert_eq!(doc_a["tags"], json!({"owner": "team-a"}));
    assert_ne!(doc_b["tags"], doc_a["tags"]);

    // a mesh upgrade start on B: B's operation, polled through the fleet, changes B only
    let (_, mut doc) = fleet.get(&fleet.url(&b.cluster_id)).await;
    doc["properties"]["serviceMeshProfile"]["istio"]["revisions"] = json!(["asm-1-27", "asm-1-28"]);
    let resp = fleet
        .http
        .put(fleet.url(&b.cluster_id))
        .bearer_auth(&fleet.token)
        .json(&doc)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let op_url = resp.headers()["azure-asyncoperation"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        op_url.starts_with(&fleet.handle.info.arm_endpoint),
        "{op_url}"
    );
    let mut status = String::new();
    for _ in 0..500 {
        let (code, body) = fleet.get(&op_url).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        status = body["status"].as_str().unwrap().to_string();
        if status != "InProgress" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(status, "Succeeded");
    assert_eq!(
        fleet.handle.members[1].shared.arm.revisions(),
        vec!["asm-1-27", "asm-1-28"]
    );
    assert_eq!(
        fleet.handle.members[0].shared.arm.revisions(),
        vec!["asm-1-27"]
    );
    assert_eq!(
        fleet.handle.members[2].shared.arm.revisions(),
        vec!["asm-1-27"]
    );

    // the fleet log names each request's cluster, in order
    let log = fleet.handle.requests();
    let arm: Vec<_> = log.iter().filter(|r| r.record.api == "arm").collect();
    assert_eq!(arm[0].cluster.as_deref(), Some(a.cluster_id.as_str()));
    assert_eq!(arm[0].record.method, "PATCH");
    assert_eq!(arm[1].cluster.as_deref(), Some(b.cluster_id.as_str()));
    assert_eq!(arm[1].record.method, "PUT");
    assert!(log.windows(2).all(|w| w[0].order < w[1].order));
    assert!(
        log.iter()
            .any(|r| r.cluster.is_none() && r.record.api == "token")
    );
    let (status, body) = fleet
        .get(&format!("{}/_sim/requests", fleet.handle.info.arm_endpoint))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body["requests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["cluster"] == json!(b.cluster_id) && r["method"] == "PUT"),
        "{body}"
    );
    // an unknown cluster in a known group
    let missing = a.cluster_id.replace(&a.name, "aks-nope");
    let (status, body) = fleet.get(&fleet.url(&missing)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "ResourceNotFound", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_member_kubeconfig_reaches_its_own_cluster_with_the_fleet_ca() {
    let fleet = Fleet::start(FleetScenario::healthy(2)).await;
    let mut servers = Vec::new();
    for m in &fleet.handle.info.members {
        let (status, body) = fleet
            .send(
                reqwest::Method::POST,
                &fleet.url(&format!("{}/listClusterUserCredential", m.cluster_id)),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let kc = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            body["kubeconfigs"][0]["value"].as_str().unwrap(),
        )
        .unwrap();
        let kc = String::from_utf8(kc).unwrap();
        assert!(kc.contains(&m.kube_server), "{kc}");
        servers.push(m.kube_server.clone());
        // the fleet's CA signs the member's Kubernetes listener, the fleet's token opens it
        let resp = fleet
            .http
            .get(format!("{}/api/v1/namespaces", m.kube_server))
            .bearer_auth(&fleet.handle.info.sim_token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    assert_ne!(servers[0], servers[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_link_loop_knob_repeats_a_page_link() {
    let mut scenario = FleetScenario::healthy(12);
    scenario.next_link_loop = true;
    let fleet = Fleet::start(scenario).await;
    let sub = fleet.handle.info.subscriptions[0].clone();
    let (_, first) = fleet.get(&fleet.url(&list_path(&sub))).await;
    let second_url = first["nextLink"].as_str().unwrap().to_string();
    let (_, second) = fleet.get(&second_url).await;
    assert_eq!(second["nextLink"].as_str(), Some(second_url.as_str()));
}

#[test]
fn a_fleet_file_names_members_and_errors_point_at_line_and_column() {
    let dir = std::env::temp_dir().join(format!("asm-canary-fleet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("slow.yaml"), "name: slow\ntime_scale: 0.5\n").unwrap();
    let path = dir.join("fleet.yaml");
    let yaml = "fleet:\n  page_size: 2\n  members:\n    - subscription: 5ca1ab1e-0000-4000-8000-000000000001\n      resource_group: rg-a\n      name: aks-a\n      tags: {asm-canary/ring: canary}\n      scenario: stale-canary\n    - subscription: 5ca1ab1e-0000-4000-8000-000000000001\n      resource_group: rg-a\n      name: aks-b\n      scenario: slow.yaml\n";
    std::fs::write(&path, yaml).unwrap();
    let loaded = asm_canary_sim::fleet::load_any(path.to_str().unwrap()).unwrap();
    let asm_canary_sim::AnyScenario::Fleet(fleet) = loaded else {
        panic!("a fleet file")
    };
    assert_eq!(fleet.page_size, 2);
    assert_eq!(fleet.members[0].ring(), Some("canary"));
    assert_eq!(fleet.members[0].scenario.cluster.revisions.len(), 2);
    assert_eq!(fleet.members[1].scenario.time_scale, 0.5);
    // a cluster scenario file is still one
    let cluster = asm_canary_sim::fleet::load_any(dir.join("slow.yaml").to_str().unwrap()).unwrap();
    assert!(matches!(cluster, asm_canary_sim::AnyScenario::Cluster(_)));
    assert!(matches!(
        asm_canary_sim::fleet::load_any("fleet").unwrap(),
        asm_canary_sim::AnyScenario::Fleet(_)
    ));

    let err = |yaml: &str| {
        FleetScenario::from_yaml("f.yaml", yaml)
            .unwrap_err()
            .to_string()
    };
    let e = err(
        "fleet:\n  members:\n    - subscription: x-y\n      resource_group: rg\n      name: a\n",
    );
    assert!(e.starts_with("f.yaml:3:21: subscription \"x-y\""), "{e}");
    let e = err(
        "fleet:\n  members:\n    - subscription: 00000000-0000-0000-0000-000000000000\n      resource_group: rg\n      name: a\n      scenario: nope\n",
    );
    assert!(e.starts_with("f.yaml:6:17: scenario \"nope\""), "{e}");
    let e = err(
        "fleet:\n  members:\n    - subscription: 00000000-0000-0000-0000-000000000000\n      resource_group: rg\n      name: a\n      ring: x\n",
    );
    assert!(e.starts_with("f.yaml:6:7: unknown field `ring`"), "{e}");
    let e = err(
        "fleet:\n  members:\n    - {subscription: 00000000-0000-0000-0000-000000000000, resource_group: rg, name: a}\n    - {subscription: 00000000-0000-0000-0000-000000000000, resource_group: RG, name: A}\n",
    );
    assert!(
        e.starts_with("f.yaml:4:") && e.contains("listed twice"),
        "{e}"
    );
    let e = err("fleet:\n  page_size: 0\n  members: []\n");
    assert!(e.starts_with("f.yaml:2:14: page_size"), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}
