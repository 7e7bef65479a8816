//! The managed cluster's JSON document: as a fresh GET shows it, and what the service
//! reads and writes in it (eTag, provisioning state, revisions, and the mesh the add-on must
//! run).

use serde_json::{Value, json};

use crate::MeshSpec;
use crate::scenario::ClusterShape;
use crate::scenario::Scenario;

/// The cluster as a fresh GET shows it: the fields a real AKS cluster carries.
pub(crate) fn initial_document(scenario: &Scenario) -> Value {
    let c = &scenario.cluster;
    let id = format!(
        "/subscriptions/{}/resourcegroups/{}/providers/Microsoft.ContainerService/managedClusters/{}",
        c.subscription, c.resource_group, c.name
    );
    let dns_prefix = format!("{}-dns", c.name);
    let fqdn = format!("{dns_prefix}-a1b2c3d4.hcp.{}.azmk8s.io", c.location);
    let portal_fqdn = format!("{dns_prefix}-a1b2c3d4.portal.hcp.{}.azmk8s.io", c.location);
    let node_rg = format!("MC_{}_{}_{}", c.resource_group, c.name, c.location);
    let ingress: Vec<Value> = ["External", "Internal"]
        .iter()
        .map(|mode| {
            json!({"mode": mode, "enabled": c.ingress_gateways.iter().any(|g| g.eq_ignore_ascii_case(mode))})
        })
        .collect();
    let mut istio = json!({
        "components": {"ingressGateways": ingress},
        "revisions": c.revisions,
    });
    if c.plugin_ca {
        istio["certificateAuthority"] = json!({
            "plugin": {
                "keyVaultId": format!(
                    "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.KeyVault/vaults/kv-{}",
                    c.subscription, c.resource_group, c.name
                ),
                "certObjectName": "ca-cert",
                "keyObjectName": "ca-key",
                "rootCertObjectName": "root-cert",
                "certChainObjectName": "cert-chain"
            }
        });
    }
    json!({
        "id": id,
        "location": c.location,
        "name": c.name,
        "tags": c.tags,
        "type": "Microsoft.ContainerService/ManagedClusters",
        "eTag": new_etag(),
        "sku": {"name": "Base", "tier": "Standard"},
        "kind": "Base",
        "identity": {
            "type": "SystemAssigned",
            "principalId": "33333333-3333-3333-3333-333333333333",
            "tenantId": c.tenant_id,
        },
        "properties": {
            "provisioningState": c.provisioning_state,
            "powerState": {"code": "Running"},
            "kubernetesVersion": c.kubernetes_version,
            "currentKubernetesVersion": c.current_kubernetes_version,
            "dnsPrefix": dns_prefix,
            "fqdn": fqdn,
            "azurePortalFQDN": portal_fqdn,
            "agentPoolProfiles": [agent_pool(c)],
            "nodeResourceGroup": node_rg,
            "enableRBAC": true,
            "supportPlan": "KubernetesOfficial",
            "networkProfile": network_profile(),
            "maxAgentPools": 100,
            "autoUpgradeProfile": {"upgradeChannel": "none", "nodeOSUpgradeChannel": "NodeImage"},
            "disableLocalAccounts": false,
            "securityProfile": {},
            "storageProfile": {
                "diskCSIDriver": {"enabled": true},
                "fileCSIDriver": {"enabled": true},
                "snapshotController": {"enabled": true},
            },
            "oidcIssuerProfile": {"enabled": true, "issuerURL": format!("https://{}.oic.prod-aks.azure.com/{}/", c.location, c.tenant_id)},
            "workloadAutoScalerProfile": {},
            "serviceMeshProfile": {"mode": "Istio", "istio": istio},
            "resourceUID": "6745a3d2c1b0a9f8e7d6c5b4",
        }
    })
}

/// The system node pool, as a GET of the cluster shows it.
fn agent_pool(c: &ClusterShape) -> Value {
    json!({
        "name": "system",
        "count": 3,
        "vmSize": "Standard_D4ds_v5",
        "osDiskSizeGB": 128,
        "osDiskType": "Ephemeral",
        "kubeletDiskType": "OS",
        "maxPods": 110,
        "type": "VirtualMachineScaleSets",
        "enableAutoScaling": false,
        "scaleDownMode": "Delete",
        "provisioningState": "Succeeded",
        "powerState": {"code": "Running"},
        "orchestratorVersion": c.kubernetes_version,
        "currentOrchestratorVersion": c.current_kubernetes_version,
        "mode": "System",
        "osType": "Linux",
        "osSKU": "AzureLinux",
        "nodeImageVersion": "AKSAzureLinux-V3gen2-202611.10.0",
        "upgradeSettings": {"maxSurge": "10%"},
        "enableFIPS": false,
        "eTag": new_etag(),
    })
}

fn network_profile() -> Value {
    json!({
        "networkPlugin": "azure",
        "networkPluginMode": "overlay",
        "networkPolicy": "none",
        "networkDataplane": "azure",
        "loadBalancerSku": "standard",
        "podCidr": "10.244.0.0/16",
        "serviceCidr": "10.0.0.0/16",
        "dnsServiceIP": "10.0.0.10",
        "outboundType": "loadBalancer",
        "podCidrs": ["10.244.0.0/16"],
        "serviceCidrs": ["10.0.0.0/16"],
        "ipFamilies": ["IPv4"],
    })
}

pub(crate) fn new_etag() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub(crate) fn revisions_of(doc: &Value) -> Vec<String> {
    doc.pointer("/properties/serviceMeshProfile/istio/revisions")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn provisioning_state(doc: &Value) -> String {
    doc.pointer("/properties/provisioningState")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

pub(crate) fn set_provisioning_state(doc: &mut Value, state: &str) {
    if let Some(props) = doc.get_mut("properties").and_then(Value::as_object_mut) {
        props.insert("provisioningState".into(), json!(state));
    }
}

pub(crate) fn etag(doc: &Value) -> String {
    doc.get("eTag")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The mesh the add-on must run for this document.
pub(crate) fn mesh_spec(doc: &Value) -> MeshSpec {
    let enabled = doc
        .pointer("/properties/serviceMeshProfile/mode")
        .and_then(Value::as_str)
        .is_some_and(|m| m.eq_ignore_ascii_case("Istio"));
    if !enabled {
        return MeshSpec::default();
    }
    let ingress_gateways = doc
        .pointer("/properties/serviceMeshProfile/istio/components/ingressGateways")
        .and_then(Value::as_array)
        .map(|gws| {
            gws.iter()
                .filter(|g| g.get("enabled").and_then(Value::as_bool).unwrap_or(false))
                .filter_map(|g| g.get("mode").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    MeshSpec {
        revisions: revisions_of(doc),
        ingress_gateways,
    }
}
