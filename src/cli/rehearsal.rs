//! `asm-canary sim serve --rehearsal DIR`: what a person needs to rehearse the runbook by hand
//! against the simulator with the Azure CLI and kubectl, unchanged, after one `source
//! DIR/env`: the simulator's CA, a kubeconfig, and an Azure CLI configuration folder with the
//! simulated cloud registered (from the simulator's cloud metadata document) and its service
//! principal signed in.

use std::path::{Path, PathBuf};

use asm_canary_sim::ConnectionInfo as SimInfo;

/// The name the simulated cloud is registered under in the Azure CLI.
pub const CLOUD: &str = "asm-canary-sim";

/// Writes the rehearsal folder; answers the path of its env file.
pub fn write(dir: &Path, info: &SimInfo) -> std::io::Result<PathBuf> {
    let dir = std::path::absolute(dir)?;
    let az = dir.join("azure");
    std::fs::create_dir_all(&az)?;
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &info.ca_pem)?;
    let kubeconfig = dir.join("kubeconfig");
    asm_canary_sim::write_private(&kubeconfig, kubeconfig_text(info, &ca).as_bytes())?;
    std::fs::write(az.join("config"), az_config())?;
    std::fs::write(az.join("clouds.config"), clouds_config(info))?;
    std::fs::write(az.join("azureProfile.json"), azure_profile(info))?;
    asm_canary_sim::write_private(
        &az.join("service_principal_entries.json"),
        serde_json::json!([{
            "client_id": info.client_id,
            "tenant": info.tenant_id,
            "client_secret": info.client_secret,
        }])
        .to_string()
        .as_bytes(),
    )?;
    let mut env = String::from("# source this file: az and kubectl then talk to the simulator\n");
    for (k, v) in info.env_lines() {
        env.push_str(&format!("export {k}={}\n", shell_quote(&v)));
    }
    for (k, v) in [
        ("AZURE_CONFIG_DIR", az.display().to_string()),
        ("REQUESTS_CA_BUNDLE", ca.display().to_string()),
        ("KUBECONFIG", kubeconfig.display().to_string()),
        ("AZURE_CORE_COLLECT_TELEMETRY", "false".into()),
    ] {
        env.push_str(&format!("export {k}={}\n", shell_quote(&v)));
    }
    let env_file = dir.join("env");
    asm_canary_sim::write_private(&env_file, env.as_bytes())?;
    Ok(env_file)
}

fn shell_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', r"'\''"))
}

fn kubeconfig_text(info: &SimInfo, ca: &Path) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {c}\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\ncontexts:\n- name: {c}\n  context:\n    cluster: {c}\n    user: {c}\ncurrent-context: {c}\nusers:\n- name: {c}\n  user:\n    token: {token}\n",
        c = info.cluster,
        server = info.kube_server,
        ca = ca.display(),
        token = info.sim_token
    )
}

/// The Azure CLI's `config`: the simulated cloud active, MSAL's instance discovery (a call to
/// the public Entra host) off, as for Azure Stack.
fn az_config() -> String {
    format!(
        "[cloud]\nname = {CLOUD}\n\n[core]\ninstance_discovery = false\ncollect_telemetry = false\n"
    )
}

/// `clouds.config`: the simulated cloud as `az cloud register --endpoint-resource-manager`
/// records it from the metadata document.
fn clouds_config(info: &SimInfo) -> String {
    let arm = info.arm_endpoint.trim_end_matches('/');
    let login = info.authority_host.trim_end_matches('/');
    format!(
        "[{CLOUD}]\nendpoint_resource_manager = {arm}\nendpoint_management = {arm}/\nendpoint_active_directory = {login}\nendpoint_active_directory_resource_id = {arm}/\nendpoint_active_directory_graph_resource_id = {arm}/\nendpoint_microsoft_graph_resource_id = {arm}/\nendpoint_gallery = {arm}/\nendpoint_portal = {arm}/\nprofile = latest\nsubscription = {sub}\n",
        sub = info.subscription
    )
}

/// `azureProfile.json`: the service principal signed in to the simulated subscription.
fn azure_profile(info: &SimInfo) -> String {
    serde_json::json!({"subscriptions": [{
        "id": info.subscription,
        "name": "Simulated subscription",
        "state": "Enabled",
        "user": {"name": info.client_id, "type": "servicePrincipal"},
        "isDefault": true,
        "tenantId": info.tenant_id,
        "environmentName": CLOUD,
        "homeTenantId": info.tenant_id,
        "managedByTenants": [],
    }]})
    .to_string()
}
