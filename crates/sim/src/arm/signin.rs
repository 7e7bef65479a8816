//! What Azure tooling reads from ARM at sign-in, before any resource: the cloud metadata
//! document (`GET /metadata/endpoints`, what `az cloud register --endpoint-resource-manager`
//! reads: the sign-in host and the token audience), the tenants the signed-in principal sees
//! (`GET /tenants`) and its subscriptions (`GET /subscriptions[/{id}]`, what `az login` lists).
//! Every endpoint in the document points at the simulator.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::errors::ArmError;
use crate::Shared;

/// The name the metadata document gives the simulated cloud.
pub const CLOUD_NAME: &str = "AsmCanarySim";

/// `GET /metadata/endpoints?api-version=…`: the document for this cloud (one object, as
/// api-version 2022-09-01 answers and az 2.5x+ reads), or a list of it for the older
/// `2019-05-01` form. No sign-in needed: it says where to sign in.
pub fn metadata(shared: &Shared, api_version: Option<&str>) -> Response {
    let doc = metadata_document(shared);
    let body = if api_version == Some("2019-05-01") {
        json!([doc])
    } else {
        doc
    };
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// The cloud metadata document, every endpoint the simulator's ARM listener.
pub fn metadata_document(shared: &Shared) -> Value {
    let info = &shared.info;
    let arm = format!("{}/", info.arm_endpoint.trim_end_matches('/'));
    json!({
        "name": CLOUD_NAME,
        "portal": arm,
        "authentication": {
            "loginEndpoint": info.authority_host.trim_end_matches('/'),
            "audiences": [arm, arm],
            "tenant": "common",
            "identityProvider": "AAD",
        },
        "media": arm,
        "graphAudience": arm,
        "graph": arm,
        "microsoftGraphResourceId": arm,
        "resourceManager": arm,
        "sqlManagement": arm,
        "batch": arm,
        "gallery": arm,
        "vmImageAliasDoc": format!("{arm}vmImageAliasDoc.json"),
        "activeDirectoryDataLake": arm,
        "appInsightsResourceId": arm,
        "appInsightsTelemetryChannelResourceId": arm,
        "attestationResourceId": arm,
        "synapseAnalyticsResourceId": arm,
        "logAnalyticsResourceId": arm,
        "ossrdbmsResourceId": arm,
        "suffixes": {
            "acrLoginServer": "azurecr.sim.localhost",
            "azureDataLakeAnalyticsCatalogAndJob": "azuredatalakeanalytics.sim.localhost",
            "azureDataLakeStoreFileSystem": "azuredatalakestore.sim.localhost",
            "keyVaultDns": "vault.sim.localhost",
            "mhsmDns": "managedhsm.sim.localhost",
            "sqlServerHostname": "database.sim.localhost",
            "storage": "core.sim.localhost",
            "storageSyncEndpointSuffix": "afs.sim.localhost",
            "synapseAnalytics": "dev.azuresynapse.sim.localhost",
            "attestationEndpoint": "attest.sim.localhost",
        },
    })
}

/// `GET /tenants`: the simulator's one tenant.
pub fn tenants(shared: &Shared) -> Response {
    let t = &shared.info.tenant_id;
    let body = json!({"value": [{
        "id": format!("/tenants/{t}"),
        "tenantId": t,
        "tenantCategory": "Home",
        "countryCode": "US",
        "displayName": "Simulated tenant",
        "domains": ["sim.onmicrosoft.com"],
        "defaultDomain": "sim.onmicrosoft.com",
        "tenantType": "AAD",
    }]});
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// The simulator's one subscription as ARM describes it.
pub fn subscription(shared: &Shared) -> Value {
    let info = &shared.info;
    json!({
        "id": format!("/subscriptions/{}", info.subscription),
        "authorizationSource": "RoleBased",
        "managedByTenants": [],
        "subscriptionId": info.subscription,
        "tenantId": info.tenant_id,
        "displayName": "Simulated subscription",
        "state": "Enabled",
        "subscriptionPolicies": {
            "locationPlacementId": "Public_2014-09-01",
            "quotaId": "PayAsYouGo_2014-09-01",
            "spendingLimit": "Off",
        },
    })
}

/// `GET /subscriptions` (the list) or `GET /subscriptions/{id}`.
pub fn subscriptions(shared: &Shared, id: Option<&str>) -> Result<Response, ArmError> {
    let body = match id {
        None => json!({"value": [subscription(shared)], "count": {"type": "Total", "value": 1}}),
        Some(id) if id.eq_ignore_ascii_case(&shared.info.subscription) => subscription(shared),
        Some(id) => return Err(ArmError::subscription_not_found(id)),
    };
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}
