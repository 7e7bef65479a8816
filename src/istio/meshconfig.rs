//! The AKS add-on's MeshConfig allowlist for `istio-shared-configmap-<rev>` (`data.mesh`):
//! fields not listed are refused by the add-on's admission control, and a ConfigMap that got in
//! before (or around) it is ignored. Source: AKS docs `istio-meshconfig.md`, "Allowed,
//! supported, and blocked MeshConfig values" (the supported and the allowed-but-unsupported
//! fields are both accepted).

/// MeshConfig fields the add-on accepts (supported, then allowed).
pub const MESH_FIELDS: &[&str] = &[
    "defaultConfig",
    "outboundTrafficPolicy",
    "accessLogFile",
    "accessLogFormat",
    "accessLogEncoding",
    "enableEnvoyAccessLogService",
    "disableEnvoyListenerLog",
    "discoverySelectors",
    "proxyListenPort",
    "proxyInboundListenPort",
    "proxyHttpPort",
    "connectTimeout",
    "tcpKeepalive",
    "extensionProviders",
    "defaultProviders",
    "enableTracing",
    "trustDomain",
    "trustDomainAliases",
    "caCertificates",
    "defaultServiceExportTo",
    "defaultVirtualServiceExportTo",
    "defaultDestinationRuleExportTo",
    "localityLbSetting",
    "dnsRefreshRate",
    "h2UpgradePolicy",
    "enablePrometheusMerge",
    "pathNormalization",
    "defaultHttpRetryPolicy",
    "serviceSettings",
    "meshMTLS",
    "tlsDefaults",
    "ingressService",
    "ingressSelector",
];

/// ProxyConfig fields (`defaultConfig.*`) the add-on accepts.
pub const PROXY_FIELDS: &[&str] = &[
    "drainDuration",
    "concurrency",
    "terminationDrainDuration",
    "holdApplicationUntilProxyStarts",
    "tracingServiceName",
    "statsUdpAddress",
    "proxyAdminPort",
    "tracing",
    "envoyAccessLogService",
    "envoyMetricsService",
    "proxyMetadata",
    "statusPort",
    "extraStatTags",
    "gatewayTopology",
    "proxyStatsMatcher",
    "meshId",
    "caCertificatesPem",
    "privateKeyProvider",
    "proxyHeaders",
];

/// `outboundTrafficPolicy.mode` of a `data.mesh` document (`REGISTRY_ONLY`, `ALLOW_ANY`);
/// `None` when it does not say (or cannot be read): Istio's default, `ALLOW_ANY`.
pub fn outbound_traffic_mode(mesh: &str) -> Option<String> {
    let parsed: serde_json::Value = serde_saphyr::from_str(mesh).ok()?;
    parsed["outboundTrafficPolicy"]["mode"]
        .as_str()
        .map(str::to_string)
}

/// What is wrong with a `data.mesh` document for the add-on: each refused field (`configSources`,
/// `defaultConfig.image`), or why it cannot be read at all. Empty: the add-on accepts it.
pub fn rejected_fields(mesh: &str) -> Vec<String> {
    if mesh.contains('\t') {
        return vec!["a tab character (MeshConfig must be indented with spaces)".to_string()];
    }
    let parsed: serde_json::Value = match serde_saphyr::from_str(mesh) {
        Ok(v) => v,
        Err(e) => return vec![format!("not valid YAML ({e})")],
    };
    let Some(map) = parsed.as_object() else {
        return if parsed.is_null() {
            Vec::new()
        } else {
            vec!["not a MeshConfig mapping".to_string()]
        };
    };
    let mut out = Vec::new();
    for (key, value) in map {
        if !MESH_FIELDS.contains(&key.as_str()) {
            out.push(key.clone());
        } else if key == "defaultConfig"
            && let Some(proxy) = value.as_object()
        {
            out.extend(
                proxy
                    .keys()
                    .filter(|k| !PROXY_FIELDS.contains(&k.as_str()))
                    .map(|k| format!("defaultConfig.{k}")),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outbound_traffic_mode_is_read_or_absent() {
        assert_eq!(
            outbound_traffic_mode("outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n").as_deref(),
            Some("REGISTRY_ONLY")
        );
        assert_eq!(outbound_traffic_mode("accessLogFile: /dev/stdout\n"), None);
        assert_eq!(outbound_traffic_mode(""), None);
    }

    #[test]
    fn the_allowlist_accepts_the_documented_fields_and_names_the_rest() {
        let ok = "accessLogFile: /dev/stdout\noutboundTrafficPolicy:\n  mode: REGISTRY_ONLY\ndefaultConfig:\n  holdApplicationUntilProxyStarts: true\n";
        assert!(rejected_fields(ok).is_empty());
        assert!(rejected_fields("").is_empty());
        let bad = "configSources:\n- address: x\ndefaultConfig:\n  image: {}\n  concurrency: 2\n";
        assert_eq!(
            rejected_fields(bad),
            vec![
                "configSources".to_string(),
                "defaultConfig.image".to_string()
            ]
        );
        assert_eq!(rejected_fields("a:\n\tb: 1\n").len(), 1);
        assert_eq!(rejected_fields("- a\n"), vec!["not a MeshConfig mapping"]);
    }
}
