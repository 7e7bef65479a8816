//! Live mesh reads that combine the `istio` rules with the cluster: the proxy-status table
//! from every running istiod of a revision, fetched through port-forwards.

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, ListParams};

use super::portforward::{Parsed, http_get_parsed_via_portforward};
use super::{K8sError, target};
use crate::istio::syncz::parse_syncz_from;
use crate::istio::{ISTIO_NAMESPACE, ISTIOD_MONITORING_PORT, ProxyStatus, istiod_selector};

/// The monitoring port of an istiod pod: its `prometheus.io/port` annotation, else 15014
/// (istioctl's `FindIstiodMonitoringPort`).
pub fn monitoring_port(pod: &Pod) -> u16 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("prometheus.io/port"))
        .and_then(|p| p.parse().ok())
        .unwrap_or(ISTIOD_MONITORING_PORT)
}

/// Whether a pod's `Ready` condition is `True`.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Running istiod pods of `revision` in `aks-istio-system`, sorted by name.
pub async fn istiod_pods(client: &Client, revision: &str) -> Result<Vec<Pod>, K8sError> {
    let selector = istiod_selector(revision);
    let list = Api::<Pod>::namespaced(client.clone(), ISTIO_NAMESPACE)
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| K8sError::Api {
            action: "list",
            kind: "Pod",
            target: target(ISTIO_NAMESPACE, &selector),
            source,
        })?;
    let mut pods: Vec<Pod> = list
        .items
        .into_iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
        .collect();
    pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    Ok(pods)
}

/// How long istiod's syncz may take to answer, per revision: an unhealthy istiod may accept
/// the port-forward and never answer.
pub const SYNCZ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// [`proxy_status`], given up after `limit` with an error that says so.
pub async fn proxy_status_within(
    client: &Client,
    revision: &str,
    namespace: Option<&str>,
    limit: std::time::Duration,
) -> Result<Vec<ProxyStatus>, K8sError> {
    match tokio::time::timeout(limit, proxy_status(client, revision, namespace)).await {
        Ok(rows) => rows,
        Err(_) => Err(K8sError::PortForward {
            target: target(ISTIO_NAMESPACE, &istiod_selector(revision)),
            port: 15014,
            message: format!(
                "istiod did not answer /debug/syncz within {}s (is it ready? kubectl get pods -n {ISTIO_NAMESPACE} -l app=istiod,istio.io/rev={revision})",
                limit.as_secs()
            ),
        }),
    }
}

/// The proxy-status rows of every running istiod of `revision` (each proxy is connected to
/// one istiod, so rows do not repeat), sorted by proxy. `namespace` narrows the syncz query
/// (`/debug/syncz?namespace=<ns>`) as istioctl does.
pub async fn proxy_status(
    client: &Client,
    revision: &str,
    namespace: Option<&str>,
) -> Result<Vec<ProxyStatus>, K8sError> {
    let pods = istiod_pods(client, revision).await?;
    if pods.is_empty() {
        return Err(K8sError::Refused {
            kind: "Pod",
            target: target(ISTIO_NAMESPACE, &istiod_selector(revision)),
            message: format!(
                "no running istiod of {revision}: is the {revision} control plane installed and healthy?"
            ),
        });
    }
    let path = match namespace {
        Some(ns) => format!("/debug/syncz?namespace={ns}"),
        None => "/debug/syncz".to_string(),
    };
    let mut rows = Vec::new();
    for pod in &pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let port = monitoring_port(pod);
        // The syncz of ten thousand proxies is megabytes of JSON: each entry becomes its row
        // as it is read, from the chunks as received (no copy into one buffer).
        let parse = |body: &mut dyn std::io::Read| {
            parse_syncz_from(std::io::BufReader::new(body), &name, Some(revision))
        };
        let answer =
            http_get_parsed_via_portforward(client, (ISTIO_NAMESPACE, &name, port), &path, parse)
                .await?;
        let fail = |message: String| K8sError::PortForward {
            target: target(ISTIO_NAMESPACE, &name),
            port,
            message,
        };
        let parsed = match answer {
            Parsed::Ok(parsed) => parsed.map_err(|e| fail(e.to_string()))?,
            Parsed::NotOk(resp) => {
                let body = String::from_utf8_lossy(&resp.body);
                let head: String = body.chars().take(300).collect();
                return Err(fail(format!("GET {path} answered {}: {head}", resp.status)));
            }
        };
        rows.extend(parsed);
    }
    rows.sort_by(|a, b| a.proxy.cmp(&b.proxy));
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn monitoring_port_follows_the_annotation() {
        let mut pod = Pod {
            metadata: ObjectMeta::default(),
            ..Default::default()
        };
        assert_eq!(monitoring_port(&pod), 15014);
        pod.metadata.annotations =
            Some([("prometheus.io/port".to_string(), "15099".to_string())].into());
        assert_eq!(monitoring_port(&pod), 15099);
        pod.metadata.annotations =
            Some([("prometheus.io/port".to_string(), "x".to_string())].into());
        assert_eq!(monitoring_port(&pod), 15014);
    }
}
