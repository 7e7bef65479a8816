//! Who owns the upgrade of a cluster: the ConfigMap `asm-canary-owner` in `aks-istio-system`.
//!
//! The cluster Lease ([`super::lock`]) says which process is acting right now; it is released
//! when the process ends, paused or not. The owner record outlives the process: a run writes
//! it before its first change and keeps it while it is unfinished — paused between pipeline
//! jobs included — and removes it when it completes or is rolled back. A run that finds
//! another run's record stops ([`OwnerError::Owned`], exit 5) unless told to take it over.
//!
//! The record is plain `data` keys, so `kubectl get configmap asm-canary-owner -n
//! aks-istio-system -o yaml` shows it. Every change is a create, or a replace or delete
//! guarded by the resourceVersion just read: two runs cannot both claim it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};

pub const OWNER_NAME: &str = "asm-canary-owner";
pub const OWNER_NAMESPACE: &str = crate::istio::ISTIO_NAMESPACE;

/// The record: which run owns the cluster's upgrade, and how to reach its checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Owner {
    pub run_id: String,
    /// The host the run last acted from.
    pub host: String,
    /// How commands name the run's checkpoint: `--state /abs/path.json` or
    /// `--state-backend kubernetes`.
    pub checkpoint: String,
    pub source: Option<String>,
    pub target: Option<String>,
    /// `running`, `paused`, `rolling-back` or `failed` (the rollback needs a person).
    pub phase: String,
    /// When the run claimed the cluster (RFC 3339).
    pub since: String,
    /// The run this one took over with `--take-over`, if any.
    pub took_over: Option<String>,
    /// The runbook's name (`asm-canary-upgrade`, `asm-canary-onboard`, …); absent from
    /// records written before it was kept.
    pub runbook: Option<String>,
}

impl Owner {
    fn to_data(&self) -> BTreeMap<String, String> {
        let mut d = BTreeMap::new();
        let mut put = |k: &str, v: &str| {
            d.insert(k.to_string(), v.to_string());
        };
        put("run-id", &self.run_id);
        put("host", &self.host);
        put("checkpoint", &self.checkpoint);
        put("phase", &self.phase);
        put("since", &self.since);
        for (k, v) in [
            ("source", &self.source),
            ("target", &self.target),
            ("took-over", &self.took_over),
            ("runbook", &self.runbook),
        ] {
            if let Some(v) = v {
                put(k, v);
            }
        }
        d
    }

    fn from_data(d: &BTreeMap<String, String>) -> Self {
        let get = |k: &str| d.get(k).cloned();
        Owner {
            run_id: get("run-id").unwrap_or_default(),
            host: get("host").unwrap_or_default(),
            checkpoint: get("checkpoint").unwrap_or_default(),
            source: get("source"),
            target: get("target"),
            phase: get("phase").unwrap_or_default(),
            since: get("since").unwrap_or_default(),
            took_over: get("took-over"),
            runbook: get("runbook"),
        }
    }

    /// `run R (host H, paused since S, asm-1-27 → asm-1-29)`.
    fn describe(&self) -> String {
        let upgrade = match (&self.source, &self.target) {
            (Some(s), Some(t)) => format!(", {s} → {t}"),
            _ => String::new(),
        };
        format!(
            "run {} (host {}, {} since {}{upgrade})",
            if self.run_id.is_empty() {
                "?"
            } else {
                &self.run_id
            },
            if self.host.is_empty() {
                "?"
            } else {
                &self.host
            },
            if self.phase.is_empty() {
                "unfinished"
            } else {
                &self.phase
            },
            self.since
        )
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error(
        "this cluster's upgrade belongs to another, unfinished {owner}: continue it with `asm-canary resume {ck}` or roll it back with `asm-canary rollback {ck}`; if that run's checkpoint is lost, `asm-canary upgrade --take-over` adopts the upgrade (ConfigMap {OWNER_NAMESPACE}/{OWNER_NAME})",
        ck = checkpoint_flags(owner)
    )]
    Owned { owner: Owner },
    #[error("cannot {action} ConfigMap {OWNER_NAMESPACE}/{OWNER_NAME}: {source}{}", super::tls_hint(.source))]
    Api {
        action: &'static str,
        #[source]
        source: kube::Error,
    },
}

fn checkpoint_flags(owner: &Owner) -> &str {
    if owner.checkpoint.is_empty() {
        "--state FILE"
    } else {
        &owner.checkpoint
    }
}

/// What claiming found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claimed {
    /// No record: this run wrote it.
    New,
    /// The record was already this run's (a resumed run).
    Own,
    /// Another run's record, replaced on `--take-over`.
    TookOver(Box<Owner>),
}

fn api(client: &Client) -> Api<ConfigMap> {
    Api::namespaced(client.clone(), OWNER_NAMESPACE)
}

fn api_err(action: &'static str) -> impl FnOnce(kube::Error) -> OwnerError {
    move |source| OwnerError::Api { action, source }
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

fn object(owner: &Owner, resource_version: Option<String>) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(OWNER_NAME.into()),
            namespace: Some(OWNER_NAMESPACE.into()),
            resource_version,
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                "asm-canary".to_string(),
            )])),
            ..Default::default()
        },
        data: Some(owner.to_data()),
        ..Default::default()
    }
}

/// The record and its resourceVersion, if there is one.
pub async fn read(client: &Client) -> Result<Option<(Owner, String)>, OwnerError> {
    let cm = api(client)
        .get_opt(OWNER_NAME)
        .await
        .map_err(api_err("read"))?;
    Ok(cm.map(|cm| {
        let rv = cm.metadata.resource_version.clone().unwrap_or_default();
        (Owner::from_data(&cm.data.unwrap_or_default()), rv)
    }))
}

/// Makes `me` the owner: creates the record, refreshes this run's own, or — with
/// `take_over` — replaces another run's. Another run's record without `take_over` is
/// [`OwnerError::Owned`]. `me.took_over` is set by a take-over.
pub async fn claim(
    client: &Client,
    me: &mut Owner,
    take_over: bool,
) -> Result<Claimed, OwnerError> {
    // A lost race (the record created, replaced or deleted between our read and write) is
    // decided again on what is there now; three rounds are plenty for two contenders.
    for _ in 0..3 {
        let Some((theirs, rv)) = read(client).await? else {
            match api(client)
                .create(&PostParams::default(), &object(me, None))
                .await
            {
                Ok(_) => return Ok(Claimed::New),
                Err(e) if is_status(&e, 409) => continue,
                Err(e) => return Err(api_err("create")(e)),
            }
        };
        let claimed = if theirs.run_id == me.run_id {
            me.since = theirs.since.clone();
            me.took_over = me.took_over.take().or(theirs.took_over.clone());
            Claimed::Own
        } else if take_over {
            me.took_over = Some(theirs.run_id.clone());
            Claimed::TookOver(Box::new(theirs))
        } else {
            return Err(OwnerError::Owned { owner: theirs });
        };
        match api(client)
            .replace(OWNER_NAME, &PostParams::default(), &object(me, Some(rv)))
            .await
        {
            Ok(_) => return Ok(claimed),
            Err(e) if is_status(&e, 409) || is_status(&e, 404) => continue,
            Err(e) => return Err(api_err("replace")(e)),
        }
    }
    Err(OwnerError::Api {
        action: "claim",
        source: kube::Error::Service("the record kept changing under this run".into()),
    })
}

/// Rewrites this run's record with `me` (phase, source, target); `Ok(false)` when the
/// record is not this run's (taken over meanwhile) or gone.
pub async fn update(client: &Client, me: &Owner) -> Result<bool, OwnerError> {
    let Some((theirs, rv)) = read(client).await? else {
        return Ok(false);
    };
    if theirs.run_id != me.run_id {
        return Ok(false);
    }
    match api(client)
        .replace(OWNER_NAME, &PostParams::default(), &object(me, Some(rv)))
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if is_status(&e, 409) || is_status(&e, 404) => Ok(false),
        Err(e) => Err(api_err("update")(e)),
    }
}

/// Removes the record if it is `run_id`'s; `Ok(false)` when it is not (or gone).
pub async fn release(client: &Client, run_id: &str) -> Result<bool, OwnerError> {
    let Some((theirs, rv)) = read(client).await? else {
        return Ok(false);
    };
    if theirs.run_id != run_id {
        return Ok(false);
    }
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: Some(rv),
            uid: None,
        }),
        ..Default::default()
    };
    match api(client).delete(OWNER_NAME, &dp).await {
        Ok(_) => Ok(true),
        Err(e) if is_status(&e, 409) || is_status(&e, 404) => Ok(false),
        Err(e) => Err(api_err("delete")(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_round_trips_through_configmap_data() {
        let o = Owner {
            run_id: "r1".into(),
            host: "agent-7".into(),
            checkpoint: "--state /tmp/a.json".into(),
            source: Some("asm-1-27".into()),
            target: None,
            phase: "paused".into(),
            since: "2026-11-30T09:00:00Z".into(),
            took_over: Some("r0".into()),
            runbook: Some("asm-canary-onboard".into()),
        };
        assert_eq!(Owner::from_data(&o.to_data()), o);
        assert!(!o.to_data().contains_key("target"), "absent stays absent");
    }

    #[test]
    fn the_owned_error_names_the_run_and_both_ways_out() {
        let o = Owner {
            run_id: "r1".into(),
            host: "agent-7".into(),
            checkpoint: "--state /tmp/a.json".into(),
            source: Some("asm-1-27".into()),
            target: Some("asm-1-29".into()),
            phase: "paused".into(),
            since: "2026-11-30T09:00:00Z".into(),
            took_over: None,
            runbook: None,
        };
        let m = OwnerError::Owned { owner: o }.to_string();
        for want in [
            "run r1 (host agent-7, paused since 2026-11-30T09:00:00Z, asm-1-27 → asm-1-29)",
            "asm-canary resume --state /tmp/a.json",
            "asm-canary rollback --state /tmp/a.json",
            "--take-over",
        ] {
            assert!(m.contains(want), "{want:?} missing from: {m}");
        }
    }
}
