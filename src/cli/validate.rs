//! Refusals before a new run starts: input that can never succeed is bad input (exit 2), and
//! is refused before anything is written — no checkpoint, no lock, no cluster change.
//!
//! Checked here, read-only: `--to` older than (or equal to) the installed revision, a `--to`
//! that ARM does not offer, and a shared ConfigMap the add-on's admission would reject when
//! copied to the target (a server-side dry-run create, so the real webhook decides).
//! Everything else (cluster not ready, mid-upgrade, …) is preflight's, with its own outcome.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, PostParams};

use super::error::CliError;
use crate::istio::{Revision, choose_target, shared_configmap_name};
use crate::steps::Env;
use crate::steps::cluster::{MeshState, classify};

const NS: &str = "aks-istio-system";

/// Refuses a new upgrade that cannot succeed; `Ok` when preflight should decide.
pub async fn validate_new_run(env: &Env, to: Option<&str>) -> Result<(), CliError> {
    let doc = env
        .arm
        .get_cluster(&env.cluster)
        .await
        .map_err(|e| CliError::connect("cannot read the cluster", e))?;
    let state = classify(&doc, to);
    if let MeshState::Downgrade { .. } = state {
        return Err(CliError::bad(format!(
            "{}; nothing was changed",
            state.explain(&env.cluster.name)
        )));
    }
    if !state.is_ready() {
        return Ok(());
    }
    let installed = doc.revisions();
    let Some(source) = installed.first() else {
        return Ok(());
    };
    let Ok(current) = source.parse::<Revision>() else {
        return Ok(());
    };
    let profile = env
        .arm
        .mesh_upgrade_profile(&env.cluster)
        .await
        .map_err(|e| CliError::connect("cannot read the cluster", e))?;
    let requested = to
        .map(str::parse::<Revision>)
        .transpose()
        .map_err(|e| CliError::bad(format!("--to: {e}")))?;
    let target = choose_target(current, &profile.properties.upgrades, requested)
        .map_err(|e| CliError::bad(format!("{e}; nothing was changed")))?;
    check_shared_configmap(env, source, &target.to_string()).await
}

/// Dry-runs the copy of the source's shared ConfigMap to the target's name: the add-on's
/// admission webhook rejects MeshConfig fields it does not allow.
async fn check_shared_configmap(env: &Env, source: &str, target: &str) -> Result<(), CliError> {
    let api = Api::<ConfigMap>::namespaced(env.kube.clone(), NS);
    let src_name = shared_configmap_name(source);
    let Some(src) = api
        .get_opt(&src_name)
        .await
        .map_err(|e| CliError::connect(format!("cannot read ConfigMap {NS}/{src_name}: {e}"), e))?
    else {
        return Ok(());
    };
    let copy = ConfigMap {
        metadata: ObjectMeta {
            name: Some(shared_configmap_name(target)),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        data: src.data.clone(),
        binary_data: src.binary_data.clone(),
        ..Default::default()
    };
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    match api.create(&dry, &copy).await {
        Ok(_) => Ok(()),
        // The target exists already: the copy step decides (same data, or --force).
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 400 || s.code == 422 || s.code == 403 => {
            Err(CliError::bad(format!(
                "ConfigMap {NS}/{src_name} cannot be copied to {}: {}; fix {src_name} (remove the field the add-on does not allow) and run again; nothing was changed",
                shared_configmap_name(target),
                s.message
            )))
        }
        Err(e) => Err(CliError::connect(
            format!("cannot check the copy of ConfigMap {NS}/{src_name}: {e}"),
            e,
        )),
    }
}
