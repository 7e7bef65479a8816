//! A real Prometheus (`prometheus` on PATH: Debian's package) scraping the simulator's sidecar
//! metrics every second. A test that needs it fails, never skips, when it cannot start.

use std::time::{Duration, Instant};

use asm_canary::analysis::local::LocalPrometheus;
use asm_canary::analysis::{PrometheusAuth, PrometheusClient};

/// Starts a Prometheus scraping `scrape_url`; panics (the test fails) when there is none.
pub async fn start(scrape_url: &str) -> LocalPrometheus {
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
    let c = client(prom);
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(s) = c.query(query, chrono::Utc::now()).await
            && s.iter().any(|s| s.value.is_finite())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!(
        "Prometheus at {} had no data for {query} within {within:?}; its log:\n{}",
        prom.url,
        prom.log()
    );
}
