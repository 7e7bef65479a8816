//! A client of Prometheus's HTTP API (`POST /api/v1/query`, form-encoded, instant queries):
//! any Prometheus (no auth, a bearer token, basic auth) or an Azure Monitor workspace's query
//! endpoint (an Entra token for `https://prometheus.monitor.azure.com/.default`, from the same
//! credential chain as ARM).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use chrono::{DateTime, Utc};
use reqwest::Url;
use serde::Deserialize;

use super::{AnalysisError, MetricSource, Sample};
use crate::azure::http::{LimitedBodyError, read_limited};

/// The Entra scope of Azure Monitor managed Prometheus's query API.
pub const AZURE_MONITOR_SCOPE: &str = "https://prometheus.monitor.azure.com/.default";

/// The most of a query answer read (an instant vector of a wave's workloads is small).
const BODY_LIMIT: usize = 16 << 20;

/// How requests to Prometheus are authenticated.
#[derive(Clone)]
pub enum PrometheusAuth {
    None,
    Bearer(String),
    Basic {
        user: String,
        password: String,
    },
    /// Azure Monitor managed Prometheus: a token for [`AZURE_MONITOR_SCOPE`] from `credential`.
    AzureMonitor(Arc<dyn TokenCredential>),
}

impl PrometheusAuth {
    /// `none`, `bearer`, `basic` or `azure-monitor`, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            PrometheusAuth::None => "none",
            PrometheusAuth::Bearer(_) => "bearer",
            PrometheusAuth::Basic { .. } => "basic",
            PrometheusAuth::AzureMonitor(_) => "azure-monitor",
        }
    }
}

impl std::fmt::Debug for PrometheusAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.write_str(self.kind())
    }
}

/// A Prometheus HTTP API endpoint.
#[derive(Clone, Debug)]
pub struct PrometheusClient {
    base: Url,
    auth: PrometheusAuth,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<AnswerData>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum AnswerData {
    Vector(Vec<VectorItem>),
    Scalar((f64, String)),
    Matrix(serde::de::IgnoredAny),
    String(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct VectorItem {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

/// Prometheus writes sample values as strings: `"0.97"`, `"NaN"`, `"+Inf"`.
fn parse_value(s: &str) -> f64 {
    match s {
        "NaN" => f64::NAN,
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().unwrap_or(f64::NAN),
    }
}

impl PrometheusClient {
    /// A client for the Prometheus at `url` (its HTTP API lives under `url`/api/v1/…): http
    /// or https; a path prefix is kept (`http://host/prometheus`).
    pub fn new(
        url: &str,
        auth: PrometheusAuth,
        http: reqwest::Client,
    ) -> Result<Self, AnalysisError> {
        let bad = |message: String| AnalysisError::Endpoint {
            url: url.to_string(),
            message,
        };
        let mut base = Url::parse(url).map_err(|e| bad(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(bad("it must be an http:// or https:// URL".into()));
        }
        if base.query().is_some() || !base.username().is_empty() || base.password().is_some() {
            return Err(bad(
                "give no query and no user:password in it (use the auth options)".into(),
            ));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Ok(Self { base, auth, http })
    }

    /// The endpoint's URL (never with a secret: the URL holds none).
    pub fn url(&self) -> &str {
        self.base.as_str()
    }

    pub fn auth(&self) -> &PrometheusAuth {
        &self.auth
    }

    async fn authorize(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, AnalysisError> {
        Ok(match &self.auth {
            PrometheusAuth::None => req,
            PrometheusAuth::Bearer(token) => req.bearer_auth(token),
            PrometheusAuth::Basic { user, password } => req.basic_auth(user, Some(password)),
            PrometheusAuth::AzureMonitor(credential) => {
                let token = credential
                    .get_token(&[AZURE_MONITOR_SCOPE], None)
                    .await
                    .map_err(|e| AnalysisError::Token {
                        scope: AZURE_MONITOR_SCOPE.into(),
                        message: e.to_string(),
                    })?;
                req.bearer_auth(token.token.secret())
            }
        })
    }

    /// The instant query `promql` evaluated at `at`: one sample per series (a scalar answer is
    /// one sample without labels).
    pub async fn query(
        &self,
        promql: &str,
        at: DateTime<Utc>,
    ) -> Result<Vec<Sample>, AnalysisError> {
        let url = self
            .base
            .join("api/v1/query")
            .map_err(|e| AnalysisError::Endpoint {
                url: self.base.to_string(),
                message: e.to_string(),
            })?;
        let time = format!("{:.3}", at.timestamp_millis() as f64 / 1000.0);
        let req = self
            .http
            .post(url)
            .form(&[("query", promql), ("time", time.as_str())]);
        let send_err = |e: reqwest::Error| AnalysisError::Http {
            url: self.url().to_string(),
            message: e.without_url().to_string(),
        };
        let resp = self.authorize(req).await?.send().await.map_err(send_err)?;
        let status = resp.status();
        let body = read_limited(resp, BODY_LIMIT).await.map_err(|e| match e {
            LimitedBodyError::Read(e) => send_err(e),
            other => AnalysisError::Http {
                url: self.url().to_string(),
                message: other.to_string(),
            },
        })?;
        let answer: Answer = serde_json::from_slice(&body).map_err(|e| AnalysisError::Http {
            url: self.url().to_string(),
            message: format!("HTTP {status}: not a Prometheus API answer ({e})"),
        })?;
        if answer.status != "success" {
            return Err(AnalysisError::Query {
                query: promql.to_string(),
                message: format!(
                    "HTTP {status}: {}: {}",
                    answer.error_type.unwrap_or_default(),
                    answer.error.unwrap_or_default()
                ),
            });
        }
        match answer.data {
            Some(AnswerData::Vector(items)) => Ok(items
                .into_iter()
                .map(|i| Sample {
                    labels: i.metric,
                    value: parse_value(&i.value.1),
                })
                .collect()),
            Some(AnswerData::Scalar((_, v))) => Ok(vec![Sample {
                labels: BTreeMap::new(),
                value: parse_value(&v),
            }]),
            _ => Err(AnalysisError::Query {
                query: promql.to_string(),
                message: "the answer is not an instant vector or a scalar".into(),
            }),
        }
    }
}

#[async_trait]
impl MetricSource for PrometheusClient {
    async fn query(&self, promql: &str, at: DateTime<Utc>) -> Result<Vec<Sample>, AnalysisError> {
        PrometheusClient::query(self, promql, at).await
    }

    fn describe(&self) -> String {
        format!("{} (auth: {})", self.url(), self.auth.kind())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_as_prometheus_writes_them() {
        assert!(parse_value("NaN").is_nan());
        assert_eq!(parse_value("+Inf"), f64::INFINITY);
        assert_eq!(parse_value("99.5"), 99.5);
    }

    #[test]
    fn urls_with_secrets_or_queries_are_refused() {
        let http = crate::azure::build_http_client(None).unwrap();
        for bad in [
            "ftp://x",
            "http://u:p@host:9090",
            "http://host:9090/?x=1",
            "nope",
        ] {
            assert!(
                PrometheusClient::new(bad, PrometheusAuth::None, http.clone()).is_err(),
                "{bad}"
            );
        }
        let c = PrometheusClient::new("http://host:9090/prom", PrometheusAuth::None, http).unwrap();
        assert_eq!(c.url(), "http://host:9090/prom/");
    }

    #[test]
    fn auth_debug_never_shows_the_secret() {
        let a = PrometheusAuth::Basic {
            user: "u".into(),
            password: "hunter2".into(),
        };
        assert_eq!(format!("{a:?}"), "basic");
    }
}
