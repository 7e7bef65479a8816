//! Figures for the `large` scenario (200 namespaces, 2,000 Deployments, 10,000 pods):
//! start-up time, list-all-pods latency through kube-rs, resident memory, and how long a
//! watch takes to deliver an event after the change.
//!
//! Run: `cargo run --release -p asm-canary-sim --example large_bench`
//! Targets (issue 3): list < 1 s, RSS < 500 MB, watch event < 50 ms.
//!
//! It runs with mimalloc, the allocator of the `asm-canary` binary that embeds the simulator.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use asm_canary_sim::{Scenario, SimOptions};
use base64::Engine;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(mut v: Vec<Duration>) -> String {
    v.sort();
    format!(
        "min {:.1} ms, median {:.1} ms, max {:.1} ms (n={})",
        ms(v[0]),
        ms(v[v.len() / 2]),
        ms(v[v.len() - 1]),
        v.len()
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    let sim = asm_canary_sim::start(SimOptions::new(Scenario::builtin("large")?)).await?;
    println!(
        "start-up (seed + settle): {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    println!("resident memory after start: {:.0} MB", rss_mb());

    let ca = base64::engine::general_purpose::STANDARD.encode(sim.info.ca_pem.as_bytes());
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: sim\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\ncontexts:\n- name: sim\n  context: {{cluster: sim, user: sim}}\ncurrent-context: sim\nusers:\n- name: sim\n  user:\n    token: {}\n",
        sim.info.kube_server, sim.info.sim_token
    );
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(&kubeconfig)?,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    let client = kube::Client::try_from(config)?;

    let pods: Api<Pod> = Api::all(client.clone());
    let mut lists = Vec::new();
    let mut count = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let l = pods.list(&ListParams::default()).await?;
        lists.push(t.elapsed());
        count = l.items.len();
    }
    println!(
        "list all pods ({count} pods, kube-rs typed): {}",
        summary(lists)
    );
    let mut raw = Vec::new();
    let mut bytes = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let text = client
            .request_text(http::Request::get("/api/v1/pods").body(vec![])?)
            .await?;
        raw.push(t.elapsed());
        bytes = text.len();
    }
    println!(
        "list all pods, raw body ({:.1} MB, {:.1} KB per pod): {}",
        bytes as f64 / 1e6,
        bytes as f64 / count as f64 / 1e3,
        summary(raw)
    );
    let mut paged = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let mut lp = ListParams::default().limit(500);
        let mut n = 0;
        loop {
            let page = pods.list(&lp).await?;
            n += page.items.len();
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(c) => lp = ListParams::default().limit(500).continue_token(&c),
                None => break,
            }
        }
        assert_eq!(n, count);
        paged.push(t.elapsed());
    }
    println!("list all pods in pages of 500: {}", summary(paged));
    // The same pages as raw bodies: the server's share of a paged list.
    let mut raw_paged = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let mut path = "/api/v1/pods?limit=500".to_string();
        loop {
            let text = client
                .request_text(http::Request::get(path.as_str()).body(vec![])?)
                .await?;
            // the list's metadata comes first: no need to parse the items
            let head = &text[..text.len().min(2048)];
            let token = head
                .split_once("\"continue\":\"")
                .and_then(|(_, rest)| rest.split_once('"'))
                .map(|(t, _)| t.to_string());
            match token.filter(|c| !c.is_empty()) {
                Some(c) => path = format!("/api/v1/pods?limit=500&continue={c}"),
                None => break,
            }
        }
        raw_paged.push(t.elapsed());
    }
    println!(
        "list all pods in pages of 500, raw bodies: {}",
        summary(raw_paged)
    );
    println!("resident memory after listing: {:.0} MB", rss_mb());

    // watch latency: a pod watch across all namespaces, a label patched on one pod
    let one = pods
        .list(&ListParams::default().limit(1))
        .await?
        .items
        .remove(0);
    let (ns, name) = (one.metadata.namespace.unwrap(), one.metadata.name.unwrap());
    let ns_pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let rv = pods
        .list(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .unwrap();
    let mut stream = pods
        .watch(&WatchParams::default().timeout(60), &rv)
        .await?
        .boxed();
    let mut lat = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        ns_pods
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"bench": i.to_string()}}})),
            )
            .await?;
        loop {
            match stream.try_next().await? {
                Some(WatchEvent::Modified(p))
                    if p.metadata.name.as_deref() == Some(name.as_str())
                        && p.metadata.labels.as_ref().and_then(|l| l.get("bench"))
                            == Some(&i.to_string()) =>
                {
                    lat.push(t.elapsed());
                    break;
                }
                Some(_) => continue,
                None => return Err("watch ended".into()),
            }
        }
    }
    println!(
        "watch event latency, pods across all namespaces (from the PATCH being sent): {}",
        summary(lat)
    );

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let rv = cms
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .unwrap();
    let mut stream = cms
        .watch(&WatchParams::default().timeout(60), &rv)
        .await?
        .boxed();
    let mut lat = Vec::new();
    for i in 0..20 {
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": format!("bench-{i}")}}))?;
        let t = Instant::now();
        cms.create(&PostParams::default(), &cm).await?;
        loop {
            match stream.try_next().await? {
                Some(WatchEvent::Added(c))
                    if c.metadata.name.as_deref() == Some(&format!("bench-{i}")) =>
                {
                    lat.push(t.elapsed());
                    break;
                }
                Some(_) => continue,
                None => return Err("watch ended".into()),
            }
        }
    }
    println!(
        "watch event latency, configmaps in one namespace (from the POST being sent): {}",
        summary(lat)
    );
    println!("resident memory at the end: {:.0} MB", rss_mb());
    sim.shutdown().await;
    Ok(())
}
