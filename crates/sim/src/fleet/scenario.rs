//! Fleet scenarios: the managed clusters of a simulated fleet, each with its ARM identity,
//! its tags and a single-cluster [`Scenario`].
//!
//! A fleet file is YAML with a top-level `fleet:` key (that is how it is told from a cluster
//! scenario file):
//!
//! ```yaml
//! fleet:
//!   name: two-rings
//!   page_size: 5            # clusters per page of ARM's list (nextLink beyond)
//!   members:
//!     - subscription: 5ca1ab1e-0000-4000-8000-000000000001
//!       resource_group: rg-canary
//!       name: aks-canary-1
//!       location: eastus2     # default
//!       tags: {asm-canary/ring: canary}
//!       scenario: healthy     # a built-in, a member built-in, or a file next to this one
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::scenario::{ClusterShape, Scenario, ScenarioError};

/// The names of built-in fleets.
pub const FLEET_BUILTIN: &[&str] = &["fleet"];
/// Scenario names a fleet member may use besides the cluster built-ins.
pub const MEMBER_BUILTIN: &[&str] = &["stale-canary", "at-newest", "not-ready"];
/// The tag that puts a cluster in a ring.
pub const RING_TAG: &str = "asm-canary/ring";

/// The builtin fleet's two subscriptions.
const SUB_A: &str = "5ca1ab1e-0000-4000-8000-00000000000a";
const SUB_B: &str = "5ca1ab1e-0000-4000-8000-00000000000b";

/// A simulated fleet.
#[derive(Clone, Debug)]
pub struct FleetScenario {
    pub name: String,
    pub description: String,
    /// Clusters per page of ARM's list answers (at least 1).
    pub page_size: usize,
    /// A fault: from the second page on, `nextLink` points at the page itself (a client must
    /// notice the loop).
    pub next_link_loop: bool,
    /// The one identity that may reach every cluster (overrides each member scenario's).
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    pub members: Vec<FleetMember>,
}

/// One managed cluster of a fleet.
#[derive(Clone, Debug)]
pub struct FleetMember {
    pub subscription: String,
    pub resource_group: String,
    pub name: String,
    pub location: String,
    /// ARM tags, e.g. `asm-canary/ring: canary` (added to the scenario's own tags).
    pub tags: BTreeMap<String, String>,
    /// The cluster's shape and behaviour; its ARM identity and tags come from the member.
    pub scenario: Scenario,
}

/// A scenario by name or file: one cluster, or a fleet.
#[derive(Clone, Debug)]
pub enum AnyScenario {
    Cluster(Box<Scenario>),
    Fleet(FleetScenario),
}

impl FleetMember {
    /// A member in `eastus2` with no tags.
    pub fn new(subscription: &str, resource_group: &str, name: &str, scenario: Scenario) -> Self {
        Self {
            subscription: subscription.to_string(),
            resource_group: resource_group.to_string(),
            name: name.to_string(),
            location: "eastus2".into(),
            tags: BTreeMap::new(),
            scenario,
        }
    }

    /// The member tagged `asm-canary/ring: ring`.
    pub fn in_ring(mut self, ring: &str) -> Self {
        self.tags.insert(RING_TAG.into(), ring.into());
        self
    }

    /// The cluster's ARM resource id.
    pub fn cluster_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.ContainerService/managedClusters/{}",
            self.subscription, self.resource_group, self.name
        )
    }

    /// The `asm-canary/ring` tag.
    pub fn ring(&self) -> Option<&str> {
        self.tags.get(RING_TAG).map(String::as_str)
    }

    /// What the member starts as, for a person: its revisions and what is special about it.
    pub fn state(&self) -> String {
        let shape = &self.scenario.cluster;
        let revisions = shape.revisions.join(", ");
        if shape.provisioning_state != "Succeeded" {
            return format!(
                "not ready: provisioningState {} ({revisions})",
                shape.provisioning_state
            );
        }
        if shape.revisions.len() > 1 {
            return format!("stale canary: {revisions} installed");
        }
        let offered = shape
            .mesh_revisions
            .iter()
            .find(|m| shape.revisions.contains(&m.revision))
            .is_some_and(|m| !m.upgrades.is_empty());
        if !offered {
            return format!("at the newest revision: {revisions}, no upgrade offered");
        }
        match self.scenario.name.as_str() {
            "healthy" => format!("healthy on {revisions}"),
            "bad-canary" => format!("on {revisions}; a new revision's canary fails its gates"),
            "crashloop-istiod" => format!(
                "on {revisions}; a new revision's istiod never becomes ready: its canary fails its gates"
            ),
            other => format!("{other} on {revisions}"),
        }
    }

    /// The member's scenario with its ARM identity, tags and the fleet's identity applied.
    pub(crate) fn bound_scenario(&self, fleet: &FleetScenario) -> Scenario {
        let mut scenario = self.scenario.clone();
        let c: &mut ClusterShape = &mut scenario.cluster;
        c.subscription = self.subscription.clone();
        c.resource_group = self.resource_group.clone();
        c.name = self.name.clone();
        c.location = self.location.clone();
        c.tags.extend(self.tags.clone());
        c.tenant_id = fleet.tenant_id.clone();
        c.client_id = fleet.client_id.clone();
        c.client_secret = fleet.client_secret.clone();
        scenario
    }
}

/// A single-cluster scenario a member may name: a cluster built-in or a member built-in
/// (`stale-canary`, `at-newest`, `not-ready`).
pub fn member_scenario(name: &str) -> Result<Scenario, ScenarioError> {
    let healthy = || Scenario::builtin("healthy");
    let mut s = match name {
        "stale-canary" => {
            let mut s = healthy()?;
            s.cluster.revisions = vec!["asm-1-27".into(), "asm-1-28".into()];
            s.description = "A canary asm-1-28 left next to asm-1-27 that no run owns.".into();
            s
        }
        "at-newest" => {
            let mut s = healthy()?;
            s.cluster.revisions = vec!["asm-1-29".into()];
            for tag in &mut s.kube.tags {
                tag.revision = "asm-1-29".into();
            }
            s.description = "On asm-1-29, the newest revision: no upgrade is offered.".into();
            s
        }
        "not-ready" => {
            let mut s = healthy()?;
            s.cluster.provisioning_state = "Failed".into();
            s.description =
                "The cluster's last operation failed (provisioningState Failed).".into();
            s
        }
        other => return Scenario::builtin(other),
    };
    s.name = name.to_string();
    Ok(s)
}

impl Default for FleetScenario {
    fn default() -> Self {
        let identity = ClusterShape::default();
        Self {
            name: "fleet".into(),
            description: String::new(),
            page_size: 5,
            next_link_loop: false,
            tenant_id: identity.tenant_id,
            client_id: identity.client_id,
            client_secret: identity.client_secret,
            members: Vec::new(),
        }
    }
}

impl FleetScenario {
    /// A built-in fleet by name (`fleet`).
    pub fn builtin(name: &str) -> Result<Self, ScenarioError> {
        if name != "fleet" {
            return Err(ScenarioError::Unknown {
                name: name.to_string(),
            });
        }
        let m = |sub: &str, ring: &str, n: u32, scenario: &str| {
            let rg = format!("rg-{ring}");
            let name = format!("aks-{ring}-{n}");
            member_scenario(scenario).map(|s| FleetMember::new(sub, &rg, &name, s).in_ring(ring))
        };
        let members = vec![
            m(SUB_A, "canary", 1, "healthy")?,
            m(SUB_B, "canary", 2, "healthy")?,
            m(SUB_A, "canary", 3, "at-newest")?,
            m(SUB_A, "early", 1, "healthy")?,
            m(SUB_A, "early", 2, "crashloop-istiod")?,
            m(SUB_B, "early", 3, "healthy")?,
            m(SUB_B, "early", 4, "not-ready")?,
            m(SUB_A, "prod", 1, "healthy")?,
            m(SUB_A, "prod", 2, "healthy")?,
            m(SUB_B, "prod", 3, "healthy")?,
            m(SUB_B, "prod", 4, "stale-canary")?,
            m(SUB_B, "prod", 5, "healthy")?,
        ];
        Ok(Self {
            description: "Twelve clusters in two subscriptions, tagged asm-canary/ring canary, early and prod: most healthy on asm-1-27; one already on the newest revision (canary), one whose canary fails its gates and one not ready (early), one with a stale canary (prod).".into(),
            members,
            ..Self::default()
        })
    }

    /// `n` identical healthy clusters on asm-1-27, in one subscription and resource group
    /// (`rg-fleet`), named `aks-001`…, all tagged `asm-canary/ring: prod`.
    pub fn healthy(n: usize) -> Self {
        let healthy = Scenario::builtin("healthy").expect("healthy is built in");
        let members = (1..=n)
            .map(|i| {
                FleetMember::new(SUB_A, "rg-fleet", &format!("aks-{i:03}"), healthy.clone())
                    .in_ring("prod")
            })
            .collect();
        Self {
            name: format!("healthy-{n}"),
            description: format!("{n} healthy clusters on asm-1-27."),
            members,
            ..Self::default()
        }
    }

    /// A built-in fleet name, or else a fleet file.
    pub fn load(name_or_path: &str) -> Result<Self, ScenarioError> {
        if FLEET_BUILTIN.contains(&name_or_path) {
            return Self::builtin(name_or_path);
        }
        let text = read(name_or_path)?;
        Self::from_yaml(name_or_path, &text)
    }

    /// Parses a fleet file; `origin` names it in errors and its directory anchors the member
    /// scenario files it names.
    pub fn from_yaml(origin: &str, text: &str) -> Result<Self, ScenarioError> {
        let file: FleetFile = serde_saphyr::from_str(text).map_err(|err| {
            let (line, column) = err
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            ScenarioError::Parse {
                path: origin.to_string(),
                line,
                column,
                message: crate::scenario::first_line(&err.to_string()),
            }
        })?;
        let dir = Path::new(origin).parent().unwrap_or(Path::new(""));
        file.fleet.build(origin, dir)
    }
}

fn read(path: &str) -> Result<String, ScenarioError> {
    if !Path::new(path).exists() {
        return Err(ScenarioError::Unknown {
            name: path.to_string(),
        });
    }
    std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
        path: path.to_string(),
        source,
    })
}

/// `fleet` or a cluster built-in by name, else a file: a fleet file when it has a top-level
/// `fleet:` key, else a cluster scenario file.
pub fn load_any(name_or_path: &str) -> Result<AnyScenario, ScenarioError> {
    if FLEET_BUILTIN.contains(&name_or_path) {
        return FleetScenario::builtin(name_or_path).map(AnyScenario::Fleet);
    }
    if crate::scenario::BUILTIN.contains(&name_or_path) || !Path::new(name_or_path).exists() {
        return Scenario::load(name_or_path).map(|s| AnyScenario::Cluster(Box::new(s)));
    }
    let text = read(name_or_path)?;
    if is_fleet_file(&text) {
        FleetScenario::from_yaml(name_or_path, &text).map(AnyScenario::Fleet)
    } else {
        Scenario::from_yaml(name_or_path, &text).map(|s| AnyScenario::Cluster(Box::new(s)))
    }
}

/// Whether a YAML document is a mapping with a `fleet` key.
fn is_fleet_file(text: &str) -> bool {
    #[derive(Deserialize)]
    struct Probe {
        fleet: Option<serde::de::IgnoredAny>,
    }
    serde_saphyr::from_str::<Probe>(text).is_ok_and(|p| p.fleet.is_some())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetFile {
    fleet: FleetBody,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    page_size: Option<Spanned<usize>>,
    #[serde(default)]
    next_link_loop: bool,
    #[serde(default)]
    tenant_id: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
    members: Spanned<Vec<MemberEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberEntry {
    subscription: Spanned<String>,
    resource_group: Spanned<String>,
    name: Spanned<String>,
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    scenario: Option<Spanned<String>>,
}

/// An error at a node of the fleet file.
fn at<T>(origin: &str, node: &Spanned<T>, message: String) -> ScenarioError {
    ScenarioError::Parse {
        path: origin.to_string(),
        line: node.referenced.line(),
        column: node.referenced.column(),
        message,
    }
}

impl FleetBody {
    fn build(self, origin: &str, dir: &Path) -> Result<FleetScenario, ScenarioError> {
        let mut fleet = FleetScenario {
            name: self.name.unwrap_or_else(|| origin.to_string()),
            description: self.description.unwrap_or_default(),
            next_link_loop: self.next_link_loop,
            ..FleetScenario::default()
        };
        if let Some(size) = &self.page_size {
            if !(1..=1000).contains(&size.value) {
                let message = format!("page_size must be 1 to 1000, not {}", size.value);
                return Err(at(origin, size, message));
            }
            fleet.page_size = size.value;
        }
        for (field, value) in [
            (&mut fleet.tenant_id, self.tenant_id),
            (&mut fleet.client_id, self.client_id),
            (&mut fleet.client_secret, self.client_secret),
        ] {
            if let Some(v) = value {
                *field = v;
            }
        }
        if self.members.value.is_empty() {
            let message = "members must name at least one cluster".to_string();
            return Err(at(origin, &self.members, message));
        }
        for entry in &self.members.value {
            let member = entry.build(origin, dir)?;
            if fleet
                .members
                .iter()
                .any(|m| m.cluster_id().eq_ignore_ascii_case(&member.cluster_id()))
            {
                let message = format!("{} is listed twice", member.cluster_id());
                return Err(at(origin, &entry.name, message));
            }
            fleet.members.push(member);
        }
        Ok(fleet)
    }
}

impl MemberEntry {
    fn build(&self, origin: &str, dir: &Path) -> Result<FleetMember, ScenarioError> {
        for (node, check) in [
            (
                &self.subscription,
                check_subscription as fn(&str) -> Result<(), String>,
            ),
            (&self.resource_group, check_group),
            (&self.name, check_name),
        ] {
            check(&node.value).map_err(|m| at(origin, node, m))?;
        }
        let scenario = match &self.scenario {
            None => member_scenario("healthy")?,
            Some(node) => member_scenario_at(&node.value, dir)
                .map_err(|e| at(origin, node, format!("scenario {:?}: {e}", node.value)))?,
        };
        let mut member = FleetMember::new(
            &self.subscription.value,
            &self.resource_group.value,
            &self.name.value,
            scenario,
        );
        if let Some(location) = &self.location {
            member.location = location.clone();
        }
        member.tags = self.tags.clone();
        Ok(member)
    }
}

/// A member's scenario: a built-in name, or a cluster scenario file relative to `dir`.
fn member_scenario_at(name: &str, dir: &Path) -> Result<Scenario, ScenarioError> {
    if crate::scenario::BUILTIN.contains(&name) || MEMBER_BUILTIN.contains(&name) {
        return member_scenario(name);
    }
    let path = dir.join(name);
    Scenario::load(&path.to_string_lossy())
}

fn check_subscription(v: &str) -> Result<(), String> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return Err(format!(
            "subscription {v:?} is not a subscription id (a GUID: hex digits and dashes)"
        ));
    }
    Ok(())
}

fn check_group(v: &str) -> Result<(), String> {
    let ok = (1..=90).contains(&v.len())
        && !v.ends_with('.')
        && v.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')'));
    if !ok {
        return Err(format!(
            "resource_group {v:?} is not a resource group name (1 to 90 letters, digits, '-', '_', '.', '(' and ')', not ending with '.')"
        ));
    }
    Ok(())
}

fn check_name(v: &str) -> Result<(), String> {
    let b = v.as_bytes();
    let ok = (1..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric();
    if !ok {
        return Err(format!(
            "name {v:?} is not a managed cluster name (1 to 63 letters, digits, '-' and '_', starting and ending with a letter or digit)"
        ));
    }
    Ok(())
}
