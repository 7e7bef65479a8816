//! istiod's `/debug/syncz` (HTTP, port 15014) turned into the `istioctl proxy-status` table.
//!
//! The body is a JSON array of `SyncStatus` (istio `pilot/pkg/xds/debug.go`): per proxy the
//! nonce last sent and last acknowledged for each xDS type, plus (newer istiod) a `resources`
//! map keyed by type URL with `sent`/`acked`/`lastError`. The per-type status is computed as
//! istioctl's HTTP client did (`xdsStatus(sent, acked)`): nothing sent → `NOT SENT`; sent ==
//! acked → `SYNCED`; never acked → `STALE (Never Acknowledged)`; else `STALE`; and a
//! `lastError` → `ERROR`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub const TYPE_CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const TYPE_LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const TYPE_RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const TYPE_EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const TYPE_ECDS: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";

/// One entry of the syncz array, as istiod writes it (all fields omitted when empty).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStatusEntry {
    #[serde(default)]
    pub cluster_id: String,
    #[serde(default)]
    pub proxy: String,
    #[serde(default)]
    pub proxy_type: String,
    #[serde(default)]
    pub proxy_version: String,
    #[serde(default)]
    pub istio_version: String,
    #[serde(default)]
    pub cluster_sent: String,
    #[serde(default)]
    pub cluster_acked: String,
    #[serde(default)]
    pub listener_sent: String,
    #[serde(default)]
    pub listener_acked: String,
    #[serde(default)]
    pub route_sent: String,
    #[serde(default)]
    pub route_acked: String,
    #[serde(default)]
    pub endpoint_sent: String,
    #[serde(default)]
    pub endpoint_acked: String,
    #[serde(default)]
    pub extensionconfig_sent: String,
    #[serde(default)]
    pub extensionconfig_acked: String,
    #[serde(default)]
    pub resources: BTreeMap<String, ResourceStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    #[serde(default)]
    pub sent: String,
    #[serde(default)]
    pub acked: String,
    #[serde(default)]
    pub sent_time: Option<String>,
    #[serde(default)]
    pub last_error: String,
}

/// The sync state of one xDS type for one proxy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum XdsStatus {
    Synced,
    NotSent,
    Stale,
    StaleNeverAcknowledged,
    Error(String),
}

impl XdsStatus {
    /// istioctl's HTTP-era rule.
    pub fn from_nonces(sent: &str, acked: &str) -> Self {
        if sent.is_empty() {
            XdsStatus::NotSent
        } else if sent == acked {
            XdsStatus::Synced
        } else if acked.is_empty() {
            XdsStatus::StaleNeverAcknowledged
        } else {
            XdsStatus::Stale
        }
    }

    pub fn is_synced(&self) -> bool {
        matches!(self, XdsStatus::Synced)
    }
}

impl fmt::Display for XdsStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XdsStatus::Synced => f.write_str("SYNCED"),
            XdsStatus::NotSent => f.write_str("NOT SENT"),
            XdsStatus::Stale => f.write_str("STALE"),
            XdsStatus::StaleNeverAcknowledged => f.write_str("STALE (Never Acknowledged)"),
            XdsStatus::Error(_) => f.write_str("ERROR"),
        }
    }
}

/// One row of the proxy-status table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProxyStatus {
    /// `<pod>.<namespace>` as istiod names the proxy.
    pub proxy: String,
    /// Pod name and namespace split from `proxy` (namespace empty when there is no dot).
    pub pod: String,
    pub namespace: String,
    pub cluster: String,
    pub proxy_type: String,
    pub cds: XdsStatus,
    pub lds: XdsStatus,
    pub eds: XdsStatus,
    pub rds: XdsStatus,
    pub ecds: XdsStatus,
    /// The istiod pod that answered.
    pub istiod: String,
    /// That istiod's revision, when the caller knows it.
    pub istiod_revision: Option<String>,
    /// The proxy's Istio version (`istio_version`, else `proxy_version`).
    pub version: String,
}

impl ProxyStatus {
    /// SYNCED for all of CDS, LDS, EDS and RDS (ECDS is not part of the gate).
    pub fn is_synced(&self) -> bool {
        self.cds.is_synced() && self.lds.is_synced() && self.eds.is_synced() && self.rds.is_synced()
    }

    /// The gated types that are not SYNCED, e.g. `["EDS: STALE"]`.
    pub fn unsynced(&self) -> Vec<String> {
        [
            ("CDS", &self.cds),
            ("LDS", &self.lds),
            ("EDS", &self.eds),
            ("RDS", &self.rds),
        ]
        .into_iter()
        .filter(|(_, s)| !s.is_synced())
        .map(|(name, s)| format!("{name}: {s}"))
        .collect()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("istiod {istiod}: /debug/syncz is not the expected JSON array: {source}")]
pub struct SynczError {
    pub istiod: String,
    #[source]
    pub source: serde_json::Error,
}

fn status_of(entry: &SyncStatusEntry, type_url: &str, sent: &str, acked: &str) -> XdsStatus {
    if let Some(res) = entry.resources.get(type_url) {
        if !res.last_error.is_empty() {
            return XdsStatus::Error(res.last_error.clone());
        }
        if sent.is_empty() && acked.is_empty() {
            return XdsStatus::from_nonces(&res.sent, &res.acked);
        }
    }
    XdsStatus::from_nonces(sent, acked)
}

/// Parses one istiod's syncz body into rows, sorted by proxy name.
pub fn parse_syncz(
    body: &[u8],
    istiod_pod: &str,
    istiod_revision: Option<&str>,
) -> Result<Vec<ProxyStatus>, SynczError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    rows_from(&mut de, istiod_pod, istiod_revision)
}

/// [`parse_syncz`] from a reader. Either way each entry of the array becomes its row as soon
/// as it is read: the full entries are never held all at once (the syncz of ten thousand
/// proxies is about 8 MB of JSON and more than that again as entries).
pub fn parse_syncz_from(
    body: impl std::io::Read,
    istiod_pod: &str,
    istiod_revision: Option<&str>,
) -> Result<Vec<ProxyStatus>, SynczError> {
    let mut de = serde_json::Deserializer::from_reader(body);
    rows_from(&mut de, istiod_pod, istiod_revision)
}

fn rows_from<'de, R: serde_json::de::Read<'de>>(
    de: &mut serde_json::Deserializer<R>,
    istiod_pod: &str,
    istiod_revision: Option<&str>,
) -> Result<Vec<ProxyStatus>, SynczError> {
    use serde::de::DeserializeSeed;
    let seed = Rows {
        istiod: istiod_pod,
        revision: istiod_revision,
    };
    let mut rows = seed
        .deserialize(&mut *de)
        .and_then(|rows| de.end().map(|()| rows))
        .map_err(|source| SynczError {
            istiod: istiod_pod.to_string(),
            source,
        })?;
    rows.sort_by(|a, b| a.proxy.cmp(&b.proxy));
    Ok(rows)
}

/// The syncz array (or `null`: istiod answers it when nothing is connected), read entry by
/// entry into rows.
#[derive(Clone, Copy)]
struct Rows<'a> {
    istiod: &'a str,
    revision: Option<&'a str>,
}

impl<'de> serde::de::DeserializeSeed<'de> for Rows<'_> {
    type Value = Vec<ProxyStatus>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Rows<'_> {
    type Value = Vec<ProxyStatus>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a sequence")
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut rows = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(entry) = seq.next_element::<SyncStatusEntry>()? {
            rows.push(row_of(entry, self.istiod, self.revision));
        }
        Ok(rows)
    }
}

/// One entry as its row of the table.
fn row_of(e: SyncStatusEntry, istiod_pod: &str, istiod_revision: Option<&str>) -> ProxyStatus {
    let (pod, namespace) = match e.proxy.rsplit_once('.') {
        Some((p, n)) => (p.to_string(), n.to_string()),
        None => (e.proxy.clone(), String::new()),
    };
    ProxyStatus {
        cds: status_of(&e, TYPE_CDS, &e.cluster_sent, &e.cluster_acked),
        lds: status_of(&e, TYPE_LDS, &e.listener_sent, &e.listener_acked),
        eds: status_of(&e, TYPE_EDS, &e.endpoint_sent, &e.endpoint_acked),
        rds: status_of(&e, TYPE_RDS, &e.route_sent, &e.route_acked),
        ecds: status_of(
            &e,
            TYPE_ECDS,
            &e.extensionconfig_sent,
            &e.extensionconfig_acked,
        ),
        version: if e.istio_version.is_empty() {
            e.proxy_version
        } else {
            e.istio_version
        },
        proxy: e.proxy,
        pod,
        namespace,
        cluster: e.cluster_id,
        proxy_type: e.proxy_type,
        istiod: istiod_pod.to_string(),
        istiod_revision: istiod_revision.map(str::to_string),
    }
}

/// The table as istioctl's pre-1.27 default layout prints it (columns
/// `NAME CLUSTER CDS LDS EDS RDS ECDS ISTIOD VERSION`), left-aligned with 3-space gaps.
pub fn render_table(rows: &[ProxyStatus]) -> String {
    let header = [
        "NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "ECDS", "ISTIOD", "VERSION",
    ];
    let cells: Vec<[String; 9]> = rows
        .iter()
        .map(|r| {
            [
                r.proxy.clone(),
                r.cluster.clone(),
                r.cds.to_string(),
                r.lds.to_string(),
                r.eds.to_string(),
                r.rds.to_string(),
                r.ecds.to_string(),
                r.istiod.clone(),
                r.version.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    let mut line = |cols: &[&str]| {
        let mut s = String::new();
        for (i, c) in cols.iter().enumerate() {
            if i + 1 == cols.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &cells {
        let cols: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&cols);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_entry(proxy: &str, cds: (&str, &str), eds: (&str, &str)) -> serde_json::Value {
        serde_json::json!({
            "cluster_id": "Kubernetes",
            "proxy": proxy,
            "proxy_type": "sidecar",
            "istio_version": "1.28.1",
            "cluster_sent": cds.0, "cluster_acked": cds.1,
            "listener_sent": "l1", "listener_acked": "l1",
            "route_sent": "r1", "route_acked": "r1",
            "endpoint_sent": eds.0, "endpoint_acked": eds.1,
        })
    }

    #[test]
    fn computes_each_status_like_istioctl() {
        assert_eq!(XdsStatus::from_nonces("", ""), XdsStatus::NotSent);
        assert_eq!(XdsStatus::from_nonces("", "a"), XdsStatus::NotSent);
        assert_eq!(XdsStatus::from_nonces("a", "a"), XdsStatus::Synced);
        assert_eq!(
            XdsStatus::from_nonces("a", ""),
            XdsStatus::StaleNeverAcknowledged
        );
        assert_eq!(XdsStatus::from_nonces("b", "a"), XdsStatus::Stale);
        assert_eq!(
            XdsStatus::StaleNeverAcknowledged.to_string(),
            "STALE (Never Acknowledged)"
        );
        assert_eq!(XdsStatus::NotSent.to_string(), "NOT SENT");
    }

    #[test]
    fn syncz_to_rows() {
        let body = serde_json::to_vec(&serde_json::json!([
            mk_entry("web-7c9.shop", ("c1", "c1"), ("e2", "e1")),
            mk_entry("api-1.pay", ("c1", "c1"), ("e1", "e1")),
        ]))
        .unwrap();
        let rows = parse_syncz(&body, "istiod-asm-1-28-abc", Some("asm-1-28")).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].proxy, "api-1.pay");
        assert_eq!(rows[0].pod, "api-1");
        assert_eq!(rows[0].namespace, "pay");
        assert!(rows[0].is_synced());
        assert_eq!(rows[0].ecds, XdsStatus::NotSent);
        assert_eq!(rows[0].istiod_revision.as_deref(), Some("asm-1-28"));
        assert_eq!(rows[1].eds, XdsStatus::Stale);
        assert!(!rows[1].is_synced());
        assert_eq!(rows[1].unsynced(), vec!["EDS: STALE".to_string()]);
        assert_eq!(rows[1].version, "1.28.1");
    }

    #[test]
    fn resources_map_fills_in_and_reports_errors() {
        let body = br#"[{"proxy":"a.b","proxy_version":"1.27.0",
            "cluster_sent":"c","cluster_acked":"c","listener_sent":"l","listener_acked":"l",
            "route_sent":"r","route_acked":"r",
            "resources":{
              "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment":{"sent":"e","acked":"e"},
              "type.googleapis.com/envoy.config.route.v3.RouteConfiguration":{"sent":"r","acked":"q","lastError":"NACK: bad route"}
            }}]"#;
        let rows = parse_syncz(body, "istiod-x", None).unwrap();
        assert_eq!(rows[0].eds, XdsStatus::Synced);
        assert_eq!(rows[0].rds, XdsStatus::Error("NACK: bad route".into()));
        assert_eq!(rows[0].version, "1.27.0");
        assert!(!rows[0].is_synced());
    }

    #[test]
    fn null_and_empty_bodies_mean_no_proxies() {
        assert!(parse_syncz(b"null", "i", None).unwrap().is_empty());
        assert!(parse_syncz(b"[]", "i", None).unwrap().is_empty());
        let err = parse_syncz(b"<html>", "istiod-x", None).unwrap_err();
        assert!(err.to_string().contains("istiod istiod-x"));
    }

    /// A reader that gives at most `step` bytes a call, as a body arriving in pieces.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.step).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_body_read_in_pieces_gives_the_same_rows_and_errors_as_a_whole_one() {
        let body = serde_json::to_vec(&serde_json::json!([
            mk_entry("web-7c9.shop", ("c1", "c1"), ("e2", "e1")),
            mk_entry("api-1.pay", ("c1", "c1"), ("e1", "e1")),
        ]))
        .unwrap();
        let bodies: [&[u8]; 8] = [
            &body,
            b"null",
            b" [ ] ",
            b"<html>",
            b"{}",
            br#"[{"proxy":"a.b"},"#,
            br#"[{"proxy":"a.b"}] x"#,
            br#"[{"proxy":7}]"#,
        ];
        for body in bodies {
            let whole = parse_syncz(body, "istiod-x", Some("asm-1-28"));
            for step in [1, 3, 4096] {
                let pieces =
                    parse_syncz_from(Trickle { data: body, step }, "istiod-x", Some("asm-1-28"));
                match (&whole, &pieces) {
                    (Ok(a), Ok(b)) => assert_eq!(a, b),
                    // serde_json's reader may place an error one column off its slice's.
                    (Err(a), Err(b)) => {
                        let what = |e: &SynczError| {
                            e.to_string().split(" at line").next().map(str::to_string)
                        };
                        assert_eq!(what(a), what(b));
                    }
                    _ => panic!("{}: {whole:?} vs {pieces:?}", String::from_utf8_lossy(body)),
                }
            }
        }
        let rows = parse_syncz_from(
            Trickle {
                data: &body,
                step: 5,
            },
            "i",
            None,
        )
        .unwrap();
        assert_eq!(rows[0].proxy, "api-1.pay");
        assert!(parse_syncz(b"<html>", "i", None).is_err());
        assert!(parse_syncz(br#"[{"proxy":"a.b"}] x"#, "i", None).is_err());
    }

    #[test]
    fn unknown_fields_are_tolerated() {
        let body =
            br#"[{"proxy":"a.b","future_field":{"x":1},"cluster_sent":"c","cluster_acked":"c"}]"#;
        let rows = parse_syncz(body, "i", None).unwrap();
        assert_eq!(rows[0].cds, XdsStatus::Synced);
        assert_eq!(rows[0].lds, XdsStatus::NotSent);
    }

    #[test]
    fn renders_the_table() {
        let body = serde_json::to_vec(&serde_json::json!([mk_entry(
            "web-1.shop",
            ("c", "c"),
            ("e", "")
        )]))
        .unwrap();
        let rows = parse_syncz(&body, "istiod-asm-1-28-x", None).unwrap();
        let table = render_table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with("NAME         CLUSTER      CDS      LDS      EDS"),
            "{table}"
        );
        assert!(lines[1].contains("STALE (Never Acknowledged)"), "{table}");
        assert!(lines[1].ends_with("istiod-asm-1-28-x   1.28.1"), "{table}");
    }
}
