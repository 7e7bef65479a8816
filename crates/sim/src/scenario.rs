//! Scenarios: the cluster's starting shape, the time scale, and the faults to inject.
//!
//! A scenario is either built in (`healthy`, `arm-throttling`, …) or a YAML file whose keys
//! are the fields below; every field has a default, so a file names only what it changes.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use crate::kube::scenario::KubeScenario;

/// The names `--scenario` accepts besides a file path.
pub const BUILTIN: &[&str] = &[
    "healthy",
    "stale-proxies",
    "crashloop-istiod",
    "arm-throttling",
    "lro-failure",
    "slow-rollout",
    "stuck-rollout",
    "legacy-labels",
    "native-sidecars",
    "large",
    "bad-canary",
    "slow-canary",
    "patch-rolled",
    "registry-only",
];

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    /// Real seconds per simulated second.
    pub time_scale: f64,
    pub cluster: ClusterShape,
    pub arm: ArmFaults,
    pub kube: KubeScenario,
}

/// The managed cluster as ARM describes it, and the identity that may reach it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterShape {
    pub subscription: String,
    pub resource_group: String,
    pub name: String,
    pub location: String,
    pub kubernetes_version: String,
    pub current_kubernetes_version: String,
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    /// Installed mesh revisions at start.
    pub revisions: Vec<String>,
    /// Enabled ingress gateway modes at start (`External`, `Internal`).
    pub ingress_gateways: Vec<String>,
    /// The region's mesh revision profile: revision → upgrades and compatible Kubernetes versions.
    pub mesh_revisions: Vec<MeshRevisionShape>,
    /// Show `serviceMeshProfile.istio.certificateAuthority.plugin` (a Key Vault plug-in CA).
    pub plugin_ca: bool,
    /// The cluster's ARM tags at start.
    pub tags: std::collections::BTreeMap<String, String>,
    /// `properties.provisioningState` at start: `Succeeded`, or `Failed` / `Canceled` for a
    /// cluster whose last operation went wrong.
    pub provisioning_state: String,
}

/// ARM and Entra ID behaviour: durations and faults. Durations marked "simulated" are scaled
/// by `time_scale`; `Retry-After` and token lifetimes are real seconds, because clients read
/// them off the wire and wait that long themselves.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArmFaults {
    /// Simulated seconds an update of the cluster (a PUT) runs before it ends.
    pub lro_seconds: f64,
    /// Fraction of `lro_seconds` after which the add-on applies the new revisions.
    pub apply_at: f64,
    /// Lifetime of issued access tokens, in real seconds (`expires_in`).
    pub token_lifetime_secs: u64,
    /// Every Nth ARM request (1st, N+1th, …) answers 429; 0 = never.
    pub throttle_every: u32,
    /// `Retry-After` on a 429, in real seconds.
    pub retry_after_secs: u64,
    /// Every Nth PUT (1st, N+1th, …) answers 409 `OperationNotAllowed` although no
    /// operation runs (a transient conflict, as from an agent-pool operation); 0 = never.
    pub conflict_every: u32,
    /// Every Nth ARM request, counted from the second (2nd, N+2th, …), answers 500
    /// `InternalServerError` (a transient ARM failure, retryable); 0 = never.
    pub server_error_every: u32,
    /// Operations that end Failed or Canceled instead of Succeeded.
    pub lro_failures: Vec<LroFailure>,
    /// Answer an `If-Match` mismatch with 409 `EtagMismatch` (seen from AKS) instead of the
    /// documented 412.
    pub etag_mismatch_409: bool,
}

impl Default for ArmFaults {
    fn default() -> Self {
        Self {
            lro_seconds: 60.0,
            apply_at: 0.3,
            token_lifetime_secs: 3599,
            throttle_every: 0,
            retry_after_secs: 1,
            conflict_every: 0,
            server_error_every: 0,
            lro_failures: Vec::new(),
            etag_mismatch_409: false,
        }
    }
}

impl ArmFaults {
    /// The ARM side of a built-in scenario.
    pub fn builtin(name: &str) -> Self {
        match name {
            "arm-throttling" => Self {
                throttle_every: 3,
                conflict_every: 2,
                ..Self::default()
            },
            "lro-failure" => Self {
                lro_failures: vec![LroFailure::default()],
                ..Self::default()
            },
            _ => Self::default(),
        }
    }
}

/// Which update operations a failure applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OperationKind {
    /// A PUT that adds a revision (the canary start).
    Start,
    /// A PUT that removes a revision (complete or rollback).
    Remove,
    /// Any update.
    Any,
}

/// Terminal status of a failing operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailStatus {
    Failed,
    Canceled,
}

/// An operation that ends badly: the revisions it asked for are rolled back.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LroFailure {
    pub on: OperationKind,
    /// How many matching operations fail before later ones succeed (0 = all of them).
    pub times: u32,
    pub status: FailStatus,
    /// The inner error (`error.details[0]`) of the operation.
    pub code: String,
    pub message: String,
}

impl Default for LroFailure {
    fn default() -> Self {
        Self {
            on: OperationKind::Start,
            times: 1,
            status: FailStatus::Failed,
            code: "ServiceMeshRevisionInstallFailed".into(),
            message: "The control plane of the new revision did not become ready in time; the service mesh add-on rolled the change back.".into(),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MeshRevisionShape {
    pub revision: String,
    pub upgrades: Vec<String>,
    pub kubernetes: Vec<String>,
}

impl Default for ClusterShape {
    fn default() -> Self {
        let k8s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Self {
            subscription: "00000000-0000-0000-0000-000000000000".into(),
            resource_group: "rg-sim".into(),
            name: "aks-sim".into(),
            location: "eastus2".into(),
            kubernetes_version: "1.33".into(),
            current_kubernetes_version: "1.33.5".into(),
            tenant_id: "11111111-1111-1111-1111-111111111111".into(),
            client_id: "22222222-2222-2222-2222-222222222222".into(),
            client_secret: "sim-client-secret".into(),
            revisions: vec!["asm-1-27".into()],
            ingress_gateways: vec!["External".into(), "Internal".into()],
            mesh_revisions: vec![
                MeshRevisionShape {
                    revision: "asm-1-27".into(),
                    upgrades: vec!["asm-1-28".into(), "asm-1-29".into()],
                    kubernetes: k8s(&["1.31", "1.32", "1.33"]),
                },
                MeshRevisionShape {
                    revision: "asm-1-28".into(),
                    upgrades: vec!["asm-1-29".into()],
                    kubernetes: k8s(&["1.32", "1.33", "1.34"]),
                },
                MeshRevisionShape {
                    revision: "asm-1-29".into(),
                    upgrades: vec![],
                    kubernetes: k8s(&["1.33", "1.34", "1.35"]),
                },
            ],
            plugin_ca: true,
            tags: [("environment".to_string(), "sim".to_string())].into(),
            provisioning_state: "Succeeded".into(),
        }
    }
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            name: "healthy".into(),
            description: "A healthy cluster on asm-1-27 with asm-1-28 and asm-1-29 offered.".into(),
            time_scale: 0.02,
            cluster: ClusterShape::default(),
            arm: ArmFaults::default(),
            kube: KubeScenario::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error(
        "unknown scenario {name:?}: use one of {} or the path of a scenario YAML file",
        BUILTIN.join(", ")
    )]
    Unknown { name: String },
    #[error("cannot read scenario file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: String,
        line: u64,
        column: u64,
        message: String,
    },
}

impl Scenario {
    /// A built-in scenario by name.
    pub fn builtin(name: &str) -> Result<Self, ScenarioError> {
        if !BUILTIN.contains(&name) {
            return Err(ScenarioError::Unknown {
                name: name.to_string(),
            });
        }
        Ok(Self {
            name: name.to_string(),
            description: describe(name).to_string(),
            arm: ArmFaults::builtin(name),
            kube: KubeScenario::builtin(name),
            ..Self::default()
        })
    }

    /// A built-in name, or else a path to a YAML file.
    pub fn load(name_or_path: &str) -> Result<Self, ScenarioError> {
        if BUILTIN.contains(&name_or_path) {
            return Self::builtin(name_or_path);
        }
        let path = Path::new(name_or_path);
        if !path.exists() {
            return Err(ScenarioError::Unknown {
                name: name_or_path.to_string(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: name_or_path.to_string(),
            source,
        })?;
        Self::from_yaml(name_or_path, &text)
    }

    /// Parses a scenario YAML document; `origin` names it in errors. A value out of range
    /// is refused at its `file:line:column`, as a syntax error is.
    pub fn from_yaml(origin: &str, text: &str) -> Result<Self, ScenarioError> {
        let at = |err: &serde_saphyr::Error| {
            err.location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0))
        };
        let scenario: Scenario = serde_saphyr::from_str(text).map_err(|err| {
            let (line, column) = at(&err);
            ScenarioError::Parse {
                path: origin.to_string(),
                line,
                column,
                message: first_line(&err.to_string()),
            }
        })?;
        if let Err((field, message)) = scenario.validate() {
            // The document parsed once; its spans are read only to point at the bad value.
            // (A value the untyped read refuses, such as `.nan`, is located by that refusal.)
            let (line, column) = match serde_saphyr::from_str::<Spanned<Tree>>(text) {
                Ok(tree) => locate(&tree, &field),
                Err(e) => at(&e),
            };
            return Err(ScenarioError::Parse {
                path: origin.to_string(),
                line,
                column,
                message,
            });
        }
        Ok(scenario)
    }

    /// The first value out of range: where it is (a path of keys and indexes) and why.
    fn validate(&self) -> Result<(), (Vec<Seg>, String)> {
        use Seg::{Index as I, Key as K};
        let bad = |path: Vec<Seg>, message: String| Err((path, message));
        if !(self.time_scale.is_finite()
            && self.time_scale > 0.0
            && self.time_scale <= MAX_TIME_SCALE)
        {
            return bad(
                vec![K("time_scale")],
                format!(
                    "time_scale must be above 0 and at most {MAX_TIME_SCALE} (real seconds per simulated second), not {}",
                    self.time_scale
                ),
            );
        }
        let arm = &self.arm;
        for (key, secs) in [
            ("lro_seconds", arm.lro_seconds),
            ("token_lifetime_secs", arm.token_lifetime_secs as f64),
            ("retry_after_secs", arm.retry_after_secs as f64),
        ] {
            check_seconds(&format!("arm.{key}"), secs)
                .or_else(|m| bad(vec![K("arm"), K(key)], m))?;
        }
        if !(arm.apply_at.is_finite() && (0.0..=1.0).contains(&arm.apply_at)) {
            return bad(
                vec![K("arm"), K("apply_at")],
                format!("arm.apply_at must be between 0 and 1, not {}", arm.apply_at),
            );
        }
        let kube = &self.kube;
        for (key, secs) in [
            ("pod_ready_seconds", kube.pod_ready_seconds),
            ("istiod_ready_seconds", kube.istiod_ready_seconds),
            ("proxy_ack_seconds", kube.proxy_ack_seconds),
        ] {
            check_seconds(&format!("kube.{key}"), secs)
                .or_else(|m| bad(vec![K("kube"), K(key)], m))?;
        }
        let cluster = &self.cluster;
        if !PROVISIONING_STATES.contains(&cluster.provisioning_state.as_str()) {
            return bad(
                vec![K("cluster"), K("provisioning_state")],
                format!(
                    "cluster.provisioning_state must be one of {}, not {:?}",
                    PROVISIONING_STATES.join(", "),
                    cluster.provisioning_state
                ),
            );
        }
        if cluster.revisions.len() > 2 {
            return bad(
                vec![K("cluster"), K("revisions")],
                "cluster.revisions may name at most two revisions".into(),
            );
        }
        if cluster.revisions.is_empty() {
            return bad(
                vec![K("cluster"), K("revisions")],
                "cluster.revisions must name at least one installed revision".into(),
            );
        }
        let list = |path: &[Seg], items: &[String]| -> Vec<(Vec<Seg>, String)> {
            let at = |i: usize| path.iter().copied().chain([I(i)]).collect();
            items
                .iter()
                .enumerate()
                .map(|(i, r)| (at(i), r.clone()))
                .collect()
        };
        let mut named = list(&[K("cluster"), K("revisions")], &cluster.revisions);
        for (i, m) in cluster.mesh_revisions.iter().enumerate() {
            let base = [K("cluster"), K("mesh_revisions"), I(i)];
            named.push((
                base.iter().copied().chain([K("revision")]).collect(),
                m.revision.clone(),
            ));
            let ups: Vec<Seg> = base.iter().copied().chain([K("upgrades")]).collect();
            named.extend(list(&ups, &m.upgrades));
        }
        for (i, t) in kube.tags.iter().enumerate() {
            named.push((
                vec![K("kube"), K("tags"), I(i), K("revision")],
                t.revision.clone(),
            ));
        }
        check_shape(kube)?;
        named.extend(check_traffic(&kube.traffic)?);
        for (key, items) in [
            ("crashloop_revisions", &kube.crashloop_revisions),
            ("stale_revisions", &kube.stale_revisions),
            ("native_sidecar_revisions", &kube.native_sidecar_revisions),
            ("never_ready_revisions", &kube.never_ready_revisions),
        ] {
            named.extend(list(&[K("kube"), K(key)], items));
        }
        for (i, f) in kube.cluster_wide_forbidden.iter().enumerate() {
            if let Err(message) = check_forbidden(f) {
                return bad(vec![K("kube"), K("cluster_wide_forbidden"), I(i)], message);
            }
        }
        for (i, obj) in kube.objects.iter().enumerate() {
            if let Err(message) = check_object(obj) {
                return bad(vec![K("kube"), K("objects"), I(i)], message);
            }
        }
        if let Some((path, r)) = named.into_iter().find(|(_, r)| !is_revision(r)) {
            return bad(
                path,
                format!("{r:?} is not a mesh revision name (asm-<major>-<minor>, e.g. asm-1-27)"),
            );
        }
        Ok(())
    }
}

/// The provisioning states a scenario may start a cluster in (an operation in progress is
/// only ever started by a PUT).
pub const PROVISIONING_STATES: &[&str] = &["Succeeded", "Failed", "Canceled"];

/// The largest `time_scale`: a simulated second may last this many real seconds. Above it,
/// scaled durations overflow the clock.
pub const MAX_TIME_SCALE: f64 = 1000.0;
/// The longest duration a scenario may give (30 days), in simulated or real seconds.
pub const MAX_SECONDS: f64 = 30.0 * 24.0 * 3600.0;

/// A value where it is in the scenario: a path of keys and indexes, and the value or why it
/// is out of range.
type Named = (Vec<Seg>, String);

/// The most pods a scenario may hold: ten times `large` (10,000), about 2.5 GB of simulator.
pub const MAX_PODS: u64 = 100_000;

/// The cluster's shape fits one machine (at most [`MAX_PODS`] pods, generated and listed
/// together: a scenario of 4 billion namespaces ran the simulator out of memory) and names
/// each namespace once (a second `payments` was dropped without a word).
fn check_shape(kube: &KubeScenario) -> Result<(), Named> {
    use Seg::{Index as I, Key as K};
    let mut seen = std::collections::BTreeSet::new();
    let mut pods: u64 = 0;
    for (i, ns) in kube.namespaces.iter().enumerate() {
        if !seen.insert(ns.name.as_str()) {
            return Err((
                vec![K("kube"), K("namespaces"), I(i), K("name")],
                format!(
                    "namespace {:?} is listed twice; give each namespace once, with all its workloads",
                    ns.name
                ),
            ));
        }
        for w in ns.deployments.iter().chain(&ns.statefulsets) {
            pods = pods.saturating_add(u64::from(w.replicas));
        }
    }
    if let Some(g) = &kube.generated {
        let generated = u64::from(g.namespaces)
            .saturating_mul(u64::from(g.deployments_per_namespace))
            .saturating_mul(u64::from(g.replicas).max(1));
        pods = pods.saturating_add(generated);
    }
    if pods > MAX_PODS {
        return Err((
            vec![K("kube")],
            format!(
                "the scenario holds {pods} pods; the simulator runs at most {MAX_PODS} (large is 10000: 200 namespaces × 10 Deployments × 5 replicas)"
            ),
        ));
    }
    Ok(())
}

/// The traffic model's shares and factors in range; the revisions its faults name, with
/// where each is, for the revision-name check.
fn check_traffic(traffic: &crate::kube::traffic::TrafficShape) -> Result<Vec<Named>, Named> {
    use Seg::{Index as I, Key as K};
    let bad = |path: Vec<Seg>, message: String| Err((path, message));
    let mut named = Vec::new();
    if !(traffic.rps_per_pod.is_finite() && (0.0..=1e6).contains(&traffic.rps_per_pod)) {
        return bad(
            vec![K("kube"), K("traffic"), K("rps_per_pod")],
            format!(
                "kube.traffic.rps_per_pod must be between 0 and 1000000, not {}",
                traffic.rps_per_pod
            ),
        );
    }
    let share_ok = |x: f64| x.is_finite() && (0.0..=1.0).contains(&x);
    if !share_ok(traffic.error_rate) {
        return bad(
            vec![K("kube"), K("traffic"), K("error_rate")],
            format!(
                "kube.traffic.error_rate must be between 0 and 1, not {}",
                traffic.error_rate
            ),
        );
    }
    for (i, f) in traffic.faults.iter().enumerate() {
        let at = |k: &'static str| vec![K("kube"), K("traffic"), K("faults"), I(i), K(k)];
        if !share_ok(f.error_rate) {
            return bad(
                at("error_rate"),
                format!("error_rate must be between 0 and 1, not {}", f.error_rate),
            );
        }
        if !(f.latency_factor.is_finite() && f.latency_factor > 0.0 && f.latency_factor <= 1e4) {
            return bad(
                at("latency_factor"),
                format!(
                    "latency_factor must be above 0 and at most 10000, not {}",
                    f.latency_factor
                ),
            );
        }
        for (j, r) in f.revisions.iter().enumerate() {
            named.push((
                at("revisions").into_iter().chain([I(j)]).collect(),
                r.clone(),
            ));
        }
    }
    Ok(named)
}

/// A [`ClusterWideForbidden`](crate::kube::scenario::ClusterWideForbidden) names a
/// namespaced resource the simulator serves and only the verbs a cluster-wide read has.
fn check_forbidden(f: &crate::kube::scenario::ClusterWideForbidden) -> Result<(), String> {
    use crate::kube::scenario::FORBIDDEN_VERBS;
    let known = crate::kube::resources::RESOURCES
        .iter()
        .any(|r| r.namespaced && r.plural == f.resource);
    if !known {
        return Err(format!(
            "resource must be the plural of a namespaced resource (e.g. deployments), not {:?}",
            f.resource
        ));
    }
    match f
        .verbs
        .iter()
        .find(|v| !FORBIDDEN_VERBS.contains(&v.as_str()))
    {
        Some(v) => Err(format!(
            "verbs may be {}, not {v:?}",
            FORBIDDEN_VERBS.join(", ")
        )),
        None => Ok(()),
    }
}

fn check_seconds(name: &str, secs: f64) -> Result<(), String> {
    if secs.is_finite() && (0.0..=MAX_SECONDS).contains(&secs) {
        Ok(())
    } else {
        Err(format!(
            "{name} must be between 0 and {MAX_SECONDS} seconds, not {secs}"
        ))
    }
}

/// A scenario object names a type the API server serves, and a name.
fn check_object(obj: &serde_json::Value) -> Result<(), String> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    let Some(rt) = crate::kube::resources::by_kind(api_version, kind) else {
        return Err(format!(
            "kube.objects: apiVersion {api_version:?} kind {kind:?} is not a type the simulator serves"
        ));
    };
    if obj["metadata"]["name"].as_str().is_none_or(str::is_empty) {
        return Err(format!("kube.objects: a {kind} needs metadata.name"));
    }
    if rt.namespaced
        && obj["metadata"]["namespace"]
            .as_str()
            .is_none_or(str::is_empty)
    {
        return Err(format!(
            "kube.objects: {kind} {} needs metadata.namespace",
            obj["metadata"]["name"].as_str().unwrap_or_default()
        ));
    }
    Ok(())
}

/// `asm-<major>-<minor>`, as the add-on names its revisions.
pub fn is_revision(name: &str) -> bool {
    let numbers = |s: &str| !s.is_empty() && s.len() <= 4 && s.bytes().all(|b| b.is_ascii_digit());
    name.strip_prefix("asm-")
        .and_then(|rest| rest.split_once('-'))
        .is_some_and(|(major, minor)| numbers(major) && numbers(minor))
}

/// A step of a path into the document: a mapping key or a sequence index.
#[derive(Clone, Copy, Debug)]
enum Seg {
    Key(&'static str),
    Index(usize),
}

/// Where each node of a YAML document is: the tree of its mappings and sequences, with spans.
#[derive(Debug)]
enum Tree {
    Map(Vec<(String, Spanned<Tree>)>),
    Seq(Vec<Spanned<Tree>>),
    Leaf,
}

/// The line and column of the node at `path`, or of the deepest node on the way to it (a
/// value left to its default is pointed at by its parent).
fn locate(root: &Spanned<Tree>, path: &[Seg]) -> (u64, u64) {
    let mut node = root;
    for seg in path {
        let next = match (seg, &node.value) {
            (Seg::Key(k), Tree::Map(entries)) => {
                entries.iter().find(|(name, _)| name == k).map(|(_, v)| v)
            }
            (Seg::Index(i), Tree::Seq(items)) => items.get(*i),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => break,
        }
    }
    (node.referenced.line(), node.referenced.column())
}

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TreeVisitor)
    }
}

struct TreeVisitor;

impl<'de> serde::de::Visitor<'de> for TreeVisitor {
    type Value = Tree;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Tree, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<serde_json::Value>()? {
            let key = match key {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            entries.push((key, map.next_value::<Spanned<Tree>>()?));
        }
        Ok(Tree::Map(entries))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Tree, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Tree>>()? {
            items.push(item);
        }
        Ok(Tree::Seq(items))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_i128<E>(self, _: i128) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_u128<E>(self, _: u128) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_str<E>(self, _: &str) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_unit<E>(self) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_none<E>(self) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Tree, D::Error> {
        d.deserialize_any(TreeVisitor)
    }
}

/// The parser's message without its own "error: line L column C: " prefix (the location is
/// already in front of it).
pub(crate) fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or(s);
    let trimmed = line.strip_prefix("error: ").unwrap_or(line);
    match trimmed
        .strip_prefix("line ")
        .and_then(|rest| rest.split_once(": "))
    {
        Some((location, message)) if location.contains("column") => message.to_string(),
        _ => trimmed.to_string(),
    }
}

fn describe(name: &str) -> &'static str {
    match name {
        "healthy" => "A healthy cluster on asm-1-27 with asm-1-28 and asm-1-29 offered.",
        "stale-proxies" => "Proxies on the new revision never acknowledge their configuration.",
        "crashloop-istiod" => "The new revision's istiod never becomes ready.",
        "arm-throttling" => {
            "ARM answers 429 with Retry-After and transient 409 OperationNotAllowed."
        }
        "lro-failure" => "The start operation ends Failed with an error body.",
        "slow-rollout" => "Pods take a long time to become ready.",
        "stuck-rollout" => {
            "A Deployment never finishes rolling out and hits its progress deadline."
        }
        "legacy-labels" => {
            "Namespaces labelled istio-injection=enabled, with a revision that is not installed, or for the tag but never restarted; leftovers of asm-1-25 (a tag, its shared ConfigMap and gateway Leases); a PeerAuthentication in istio-system; sidecars OOMKilled."
        }
        "native-sidecars" => "Proxies are injected as native sidecars (init containers).",
        "large" => "200 namespaces, 2,000 Deployments, 10,000 pods.",
        "bad-canary" => {
            "Pods of payments/api injected by a new revision answer 5% of requests with 503; payments is labelled asm-canary/canary=true."
        }
        "slow-canary" => {
            "Pods of payments/api injected by a new revision answer five times slower (p99 ×5); payments is labelled asm-canary/canary=true."
        }
        "patch-rolled" => {
            "AKS rolled asm-1-27 from 1.27.3 to 1.27.4 (istiod, injector, gateways); the sidecars still run 1.27.3."
        }
        "registry-only" => {
            "Egress locked down (outboundTrafficPolicy REGISTRY_ONLY in the shared ConfigMap): payments/api calls api.stripe.com, which no ServiceEntry lists (its proxy sends it to BlackHoleCluster: 502); orders/web calls api.partner.example.com, which a ServiceEntry lists."
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_set_their_arm_faults() {
        assert_eq!(Scenario::builtin("healthy").unwrap().arm.throttle_every, 0);
        let throttling = Scenario::builtin("arm-throttling").unwrap();
        assert!(throttling.arm.throttle_every > 1 && throttling.arm.conflict_every > 1);
        let failing = Scenario::builtin("lro-failure").unwrap();
        assert_eq!(failing.arm.lro_failures.len(), 1);
        assert_eq!(failing.arm.lro_failures[0].on, OperationKind::Start);
        for name in BUILTIN {
            assert_eq!(Scenario::builtin(name).unwrap().name, *name);
        }
        assert!(matches!(
            Scenario::builtin("nope"),
            Err(ScenarioError::Unknown { .. })
        ));
    }

    #[test]
    fn a_yaml_file_sets_every_arm_knob() {
        let yaml = "name: custom\ntime_scale: 0.001\narm:\n  lro_seconds: 10\n  apply_at: 0.5\n  token_lifetime_secs: 2\n  throttle_every: 4\n  retry_after_secs: 3\n  conflict_every: 5\n  lro_failures:\n    - on: remove\n      times: 0\n      status: Canceled\n      code: X\n      message: y\ncluster:\n  revisions: [asm-1-28]\n  plugin_ca: false\n";
        let s = Scenario::from_yaml("t.yaml", yaml).unwrap();
        assert_eq!(s.arm.lro_seconds, 10.0);
        assert_eq!(s.arm.token_lifetime_secs, 2);
        assert_eq!(s.arm.throttle_every, 4);
        assert_eq!(s.arm.conflict_every, 5);
        assert_eq!(s.arm.lro_failures[0].on, OperationKind::Remove);
        assert_eq!(s.arm.lro_failures[0].status, FailStatus::Canceled);
        assert_eq!(s.cluster.revisions, vec!["asm-1-28".to_string()]);
        assert!(!s.cluster.plugin_ca);
        // unspecified fields keep their defaults
        assert_eq!(s.cluster.name, "aks-sim");
    }

    #[test]
    fn a_bad_yaml_file_names_line_and_column() {
        let yaml = "name: x\narm:\n  throttle_evry: 3\n";
        match Scenario::from_yaml("bad.yaml", yaml) {
            Err(ScenarioError::Parse {
                line,
                column,
                message,
                ..
            }) => {
                assert_eq!((line, column), (3, 3));
                assert!(
                    message.starts_with("unknown field `throttle_evry`"),
                    "{message}"
                );
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
        let err = Scenario::from_yaml("bad.yaml", "arm:\n  apply_at: 2\n").unwrap_err();
        assert!(err.to_string().contains("apply_at"), "{err}");
    }

    fn refused_at(yaml: &str) -> String {
        match Scenario::from_yaml("s.yaml", yaml) {
            Err(e @ ScenarioError::Parse { .. }) => e.to_string(),
            other => panic!("expected an error at a position, got {other:?}"),
        }
    }

    /// A generated shape of 4294967295³ pods aborted the simulator out of memory, and a
    /// namespace listed twice kept the first and dropped the second without a word: both are
    /// refused where they are written.
    #[test]
    fn a_scenario_too_large_for_the_machine_or_naming_a_namespace_twice_is_refused() {
        let err = refused_at(
            "name: x\nkube:\n  generated: {namespaces: 4294967295, deployments_per_namespace: 4294967295, replicas: 4294967295}\n",
        );
        assert!(
            err.starts_with("s.yaml:3:3: the scenario holds 18446744073709551615 pods; the simulator runs at most 100000"),
            "{err}"
        );
        let err = refused_at(
            "name: x\nkube:\n  namespaces:\n    - {name: payments}\n    - {name: orders}\n    - {name: payments}\n",
        );
        assert!(
            err.starts_with("s.yaml:6:14: namespace \"payments\" is listed twice"),
            "{err}"
        );
        let ok = "name: x\nkube:\n  generated: {namespaces: 1000, deployments_per_namespace: 10, replicas: 5}\n";
        if let Err(e) = Scenario::from_yaml("s.yaml", ok) {
            panic!("{e}");
        }
    }

    #[test]
    fn huge_time_scale_is_refused_at_file_line_column_not_a_panic() {
        let err = refused_at("name: x\ntime_scale: 1e308\n");
        assert!(
            err.starts_with("s.yaml:2:13: time_scale must be above 0 and at most 1000"),
            "{err}"
        );
        let err = refused_at("time_scale: .nan\n");
        assert!(err.starts_with("s.yaml:1:13: time_scale"), "{err}");
    }

    #[test]
    fn negative_and_huge_seconds_are_refused_where_written() {
        let err = refused_at("kube:\n  proxy_ack_seconds: -1\n");
        assert!(
            err.starts_with("s.yaml:2:22: kube.proxy_ack_seconds must be between 0 and"),
            "{err}"
        );
        let err = refused_at("arm: { lro_seconds: -0.5 }\n");
        assert!(err.starts_with("s.yaml:1:21: arm.lro_seconds"), "{err}");
        let err = refused_at("kube:\n  pod_ready_seconds: 1e300\n");
        assert!(
            err.starts_with("s.yaml:2:22: kube.pod_ready_seconds"),
            "{err}"
        );
    }

    #[test]
    fn scenario_objects_are_read_from_yaml_and_unserved_kinds_refused_where_written() {
        let yaml = "kube:\n  pending_load_balancers: [Internal]\n  unready_workloads: [aks-istio-ingress/gw]\n  sidecar_restarts:\n    - workload: orders/web\n  objects:\n    - apiVersion: security.istio.io/v1\n      kind: PeerAuthentication\n      metadata: {name: default, namespace: istio-system}\n      spec: {mtls: {mode: STRICT}}\n";
        let s = Scenario::from_yaml("s.yaml", yaml).unwrap();
        assert_eq!(s.kube.objects[0]["spec"]["mtls"]["mode"], "STRICT");
        assert_eq!(s.kube.pending_load_balancers, vec!["Internal".to_string()]);
        assert_eq!(s.kube.sidecar_restarts[0].reason, "OOMKilled");
        let err = refused_at(
            "kube:\n  objects:\n    - apiVersion: networking.istio.io/v1\n      kind: VirtualService\n      metadata: {name: x, namespace: y}\n",
        );
        assert!(err.starts_with("s.yaml:3:7: kube.objects: apiVersion \"networking.istio.io/v1\" kind \"VirtualService\" is not a type"), "{err}");
        let err = refused_at(
            "kube:\n  objects:\n    - {apiVersion: coordination.k8s.io/v1, kind: Lease, metadata: {name: l}}\n",
        );
        assert!(err.contains("Lease l needs metadata.namespace"), "{err}");
    }

    #[test]
    fn a_cluster_starts_with_the_tags_and_provisioning_state_written() {
        let s = Scenario::from_yaml(
            "s.yaml",
            "cluster:\n  provisioning_state: Failed\n  tags: {asm-canary/ring: early}\n",
        )
        .unwrap();
        assert_eq!(s.cluster.provisioning_state, "Failed");
        assert_eq!(s.cluster.tags["asm-canary/ring"], "early");
        assert_eq!(Scenario::default().cluster.tags["environment"], "sim");
        let err = refused_at("cluster:\n  provisioning_state: Updating\n");
        assert!(
            err.starts_with("s.yaml:2:23: cluster.provisioning_state must be one of"),
            "{err}"
        );
    }

    #[test]
    fn invalid_revision_names_are_refused_where_written() {
        let err = refused_at("cluster:\n  revisions:\n    - asm-1-27\n    - istio-1.28\n");
        assert!(
            err.starts_with("s.yaml:4:7: \"istio-1.28\" is not a mesh revision name"),
            "{err}"
        );
        let err = refused_at("kube:\n  tags:\n    - name: prod\n      revision: asm-1\n");
        assert!(err.starts_with("s.yaml:4:17: \"asm-1\""), "{err}");
        let err = refused_at(
            "cluster:\n  mesh_revisions:\n    - revision: asm-1-27\n      upgrades: [asm-1-x]\n",
        );
        assert!(err.starts_with("s.yaml:4:18: \"asm-1-x\""), "{err}");
        for good in ["asm-1-27", "asm-10-0"] {
            assert!(is_revision(good), "{good}");
        }
        for bad in [
            "",
            "asm-",
            "asm-1-",
            "asm--1",
            "ASM-1-27",
            "asm-1-27-1",
            "asm-1-2x",
        ] {
            assert!(!is_revision(bad), "{bad}");
        }
    }
}
