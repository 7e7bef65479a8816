//! A real Prometheus (`prometheus` on PATH: Debian's package, installed here when missing)
//! scraping the simulator's sidecar metrics every second. A test that needs it fails, never
//! skips, when it cannot start.

use std::time::Duration;

use asm_canary::analysis::local::LocalPrometheus;
use asm_canary::analysis::{PrometheusAuth, PrometheusClient};

/// Makes sure `prometheus` is on PATH (installing it when missing); panics (the test fails)
/// when it cannot be.
pub async fn require() {
    if let Err(e) = tokio::task::spawn_blocking(|| super::apt::ensure("prometheus", "prometheus"))
        .await
        .unwrap()
    {
        panic!(
            "this test needs a real Prometheus: {e}\ninstall the `prometheus` package (apt-get install -y prometheus)"
        );
    }
}

/// Starts a Prometheus scraping `scrape_url`; panics (the test fails) when there is none.
pub async fn start(scrape_url: &str) -> LocalPrometheus {
    require().await;
    match LocalPrometheus::start(scrape_url).await {
        Ok(p) => p,
        Err(e) => panic!(
            "this test needs a real Prometheus and none could be started: {e}\n\
             install the `prometheus` package (apt-get install -y prometheus; .ci/run does)"
        ),
    }
}

/// A client of `prom` without auth.
pub fn client(prom: &LocalPrometheus) -> PrometheusClient {
    PrometheusClient::new(
        &prom.url,
        PrometheusAuth::None,
        asm_canary::azure::build_http_client(None).expect("http client"),
    )
    .expect("local Prometheus URL")
}

/// Waits until `query` has at least one finite sample (the scrapes have data).
pub async fn wait_for(prom: &LocalPrometheus, query: &str, within: Duration) {
    if let Err(e) = prom.wait_for_data(query, within).await {
        panic!("Prometheus at {}: {e}", prom.url);
    }
}
