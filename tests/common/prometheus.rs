//! A real Prometheus (`prometheus` on PATH: Debian's package, installed here when missing)
//! scraping the simulator's sidecar metrics every second. A test that needs it fails, never
//! skips, when it cannot start.

use std::time::Duration;

use asm_canary::analysis::local::LocalPrometheus;
use asm_canary::analysis::{PrometheusAuth, PrometheusClient};

/// Makes sure `prometheus` is on PATH (installing it when missing); panics (the test fails)
/// when it cannot be.
pub async fn require() {
    if let Err(e) = tokio::task::spawn_blocking(ensure_installed).await.unwrap() {
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

/// Makes sure a `prometheus` binary is on PATH: when it is missing, installs Debian's package
/// (`apt-get`, as root or through sudo), once for all test processes (`flock` on a file in the
/// temp folder). The error says what to install by hand.
fn ensure_installed() -> Result<(), String> {
    let on_path = || {
        std::process::Command::new("sh")
            .args(["-c", "command -v prometheus"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if on_path() {
        return Ok(());
    }
    let sudo = if is_root() { "" } else { "sudo " };
    let script = format!(
        "command -v prometheus >/dev/null || {{ {sudo}apt-get install -y prometheus || {{ {sudo}apt-get update && {sudo}apt-get install -y prometheus; }}; }}"
    );
    let lock = std::env::temp_dir().join("asm-canary-prometheus-install.lock");
    let out = std::process::Command::new("flock")
        .arg(&lock)
        .args(["sh", "-c", &script])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .map_err(|e| format!("cannot run flock/apt-get: {e}"))?;
    if on_path() {
        return Ok(());
    }
    Err(format!(
        "prometheus is not on PATH and installing Debian's package failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
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
