//! Starting a simulator and a kube-rs client for it, the way the tool will: a kubeconfig with
//! the simulator's CA and bearer token.

#![allow(dead_code)]

use asm_canary_sim::{Scenario, SimHandle, SimOptions};
use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub async fn start(name: &str) -> (SimHandle, kube::Client) {
    start_with(Scenario::builtin(name).expect("builtin scenario")).await
}

pub async fn start_with(mut scenario: Scenario) -> (SimHandle, kube::Client) {
    scenario.time_scale = scenario.time_scale.min(0.01);
    let sim = asm_canary_sim::start(SimOptions::new(scenario))
        .await
        .expect("start the simulator");
    let client = client_for(&sim, &sim.info.sim_token.clone()).await;
    (sim, client)
}

pub fn kubeconfig(sim: &SimHandle, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(sim.info.ca_pem.as_bytes());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: sim\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\ncontexts:\n- name: sim\n  context:\n    cluster: sim\n    user: sim\ncurrent-context: sim\nusers:\n- name: sim\n  user:\n    token: {token}\n",
        sim.info.kube_server
    )
}

pub async fn client_for(sim: &SimHandle, token: &str) -> kube::Client {
    let kc = kube::config::Kubeconfig::from_yaml(&kubeconfig(sim, token)).expect("kubeconfig");
    let mut config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .expect("config");
    config.default_retry = false;
    kube::Client::try_from(config).expect("client")
}

/// Polls `f` until it returns `Some`, for up to `secs` real seconds.
pub async fn eventually<T, F, Fut>(secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if std::time::Instant::now() > deadline {
            panic!("condition not met within {secs}s");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// GET `path` on an istiod pod's port 15014 through `pods/portforward`.
pub async fn istiod_get(client: &kube::Client, pod: &str, path: &str) -> (u16, String) {
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(client.clone(), "aks-istio-system");
    let mut pf = pods.portforward(pod, &[15014]).await.unwrap();
    let mut stream = pf.take_stream(15014).unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let (head_end, length) = loop {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before the response");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..pos]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            break (pos + 4, len);
        }
    };
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let code: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).to_string();
    drop(stream);
    pf.abort();
    (code, body)
}
