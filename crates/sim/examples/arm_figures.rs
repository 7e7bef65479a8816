//! Prints how fast the simulated ARM answers: start-up (CA + certificates), a token, GETs of
//! the cluster, and a whole canary-start PUT with its LRO at the default time scale.
//!
//! `cargo run -p asm-canary-sim --example arm_figures --release`

use std::sync::Arc;
use std::time::Instant;

use asm_canary_sim::{Scenario, SimOptions};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let t = Instant::now();
    let sim = asm_canary_sim::start(SimOptions::new(Scenario::builtin("healthy")?)).await?;
    println!("start (CA, certificates, listeners): {:?}", t.elapsed());
    let info = sim.info.clone();

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(info.ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .build()?;

    let t = Instant::now();
    let token: Value = http
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
        .await?
        .json()
        .await?;
    println!(
        "token (first request, TLS handshake included): {:?}",
        t.elapsed()
    );
    let token = token["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let url = format!(
        "{}{}?api-version=2026-06-01",
        info.arm_endpoint,
        info.cluster_id()
    );

    let n = 500;
    let t = Instant::now();
    for _ in 0..n {
        http.get(&url)
            .bearer_auth(&token)
            .send()
            .await?
            .bytes()
            .await?;
    }
    println!("GET cluster: {:?} per request over {n}", t.elapsed() / n);

    let mut doc: Value = http
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    let etag = doc["eTag"].as_str().unwrap_or_default().to_string();
    doc["properties"]["serviceMeshProfile"]["istio"]["revisions"] = json!(["asm-1-27", "asm-1-28"]);
    let t = Instant::now();
    let put = http
        .put(&url)
        .bearer_auth(&token)
        .header("If-Match", etag)
        .json(&doc)
        .send()
        .await?;
    let op_url = put
        .headers()
        .get("azure-asyncoperation")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let mut polls = 0;
    loop {
        polls += 1;
        let op: Value = http
            .get(&op_url)
            .bearer_auth(&token)
            .send()
            .await?
            .json()
            .await?;
        if op["status"] != "InProgress" {
            println!(
                "canary start LRO ({} simulated s at time_scale {}): {:?}, {polls} polls, status {}",
                sim.shared.scenario.arm.lro_seconds,
                sim.shared.scenario.time_scale,
                t.elapsed(),
                op["status"]
            );
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    sim.shutdown().await;
    Ok(())
}
