//! A Prometheus of this machine's own (`prometheus` on PATH, e.g. Debian's package), started
//! with a generated configuration that scrapes one target every second: what `demo` and the
//! tests judge the simulator's traffic with. Stopped (killed) when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum LocalPrometheusError {
    #[error(
        "the prometheus binary is not on PATH: install the `prometheus` package (apt-get install -y prometheus)"
    )]
    NotInstalled,
    #[error("cannot start prometheus: {0}")]
    Start(String),
    #[error("prometheus did not become ready within {secs}s; its log:\n{log}")]
    NotReady { secs: u64, log: String },
    #[error("prometheus had no data for {query} within {secs}s; its log:\n{log}")]
    NoData {
        query: String,
        secs: u64,
        log: String,
    },
}

/// A running Prometheus; killed on drop.
pub struct LocalPrometheus {
    child: Child,
    /// `http://127.0.0.1:PORT/`
    pub url: String,
    dir: tempfile::TempDir,
}

/// `name` in a directory of PATH.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn free_port() -> Result<u16, LocalPrometheusError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| LocalPrometheusError::Start(format!("no free port: {e}")))
}

/// The configuration: scrape `target` (`http://host:port/path`) every second.
fn config(target: &reqwest::Url) -> String {
    let host = target.host_str().unwrap_or("127.0.0.1");
    let port = target.port_or_known_default().unwrap_or(80);
    format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: sidecars\n    honor_labels: true\n    scheme: {}\n    metrics_path: {}\n    static_configs:\n      - targets: ['{host}:{port}']\n",
        target.scheme(),
        target.path()
    )
}

impl LocalPrometheus {
    /// Starts `prometheus` scraping `scrape_url`, and waits until it answers ready.
    pub async fn start(scrape_url: &str) -> Result<Self, LocalPrometheusError> {
        let binary = find_on_path("prometheus").ok_or(LocalPrometheusError::NotInstalled)?;
        crate::azure::http::ensure_ring_provider();
        let target = reqwest::Url::parse(scrape_url)
            .map_err(|e| LocalPrometheusError::Start(format!("scrape URL {scrape_url:?}: {e}")))?;
        let dir = tempfile::tempdir()
            .map_err(|e| LocalPrometheusError::Start(format!("no temporary directory: {e}")))?;
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(&cfg, config(&target))
            .map_err(|e| LocalPrometheusError::Start(format!("{}: {e}", cfg.display())))?;
        let port = free_port()?;
        let log = std::fs::File::create(dir.path().join("prometheus.log"))
            .map_err(|e| LocalPrometheusError::Start(e.to_string()))?;
        let child = Command::new(&binary)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=1h")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| LocalPrometheusError::Start(format!("{}: {e}", binary.display())))?;
        let me = Self {
            child,
            url: format!("http://127.0.0.1:{port}/"),
            dir,
        };
        me.wait_ready(Duration::from_secs(30)).await?;
        Ok(me)
    }

    async fn wait_ready(&self, within: Duration) -> Result<(), LocalPrometheusError> {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + within;
        let ready = format!("{}-/ready", self.url);
        while Instant::now() < deadline {
            if let Ok(r) = http.get(&ready).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(LocalPrometheusError::NotReady {
            secs: within.as_secs(),
            log: self.log(),
        })
    }

    /// Waits until `query` has a finite sample: the first scrapes are in, so a run judged
    /// right after the start does not meet "no data".
    pub async fn wait_for_data(
        &self,
        query: &str,
        within: Duration,
    ) -> Result<(), LocalPrometheusError> {
        let start = |e: String| LocalPrometheusError::Start(e);
        let http = crate::azure::build_http_client(None).map_err(|e| start(e.to_string()))?;
        let client = super::PrometheusClient::new(&self.url, super::PrometheusAuth::None, http)
            .map_err(|e| start(e.to_string()))?;
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(samples) = client.query(query, chrono::Utc::now()).await
                && samples.iter().any(|s| s.value.is_finite())
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(LocalPrometheusError::NoData {
            query: query.to_string(),
            secs: within.as_secs(),
            log: self.log(),
        })
    }

    /// What prometheus wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Its working directory (configuration, data, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for LocalPrometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_config_scrapes_the_target_every_second() {
        let url = reqwest::Url::parse("http://127.0.0.1:4321/metrics").unwrap();
        let c = super::config(&url);
        assert!(c.contains("scrape_interval: 1s"), "{c}");
        assert!(c.contains("targets: ['127.0.0.1:4321']"), "{c}");
        assert!(c.contains("metrics_path: /metrics"), "{c}");
    }
}
