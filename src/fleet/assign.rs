//! Which stage each cluster belongs to: pure, so `fleet plan`, `fleet run` and `fleet pipeline`
//! decide it the same way.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::file::{FleetFile, Stage, same_id};
use crate::azure::ClusterId;

/// A cluster of the fleet as discovered: its id and ARM tags. Also the shape of one entry of
/// `fleet pipeline --clusters FILE` (a JSON list).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: ClusterId,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// One stage with its clusters.
#[derive(Debug, Clone, PartialEq)]
pub struct Ring {
    pub stage: Stage,
    /// Sorted by id (without case), for the same plan on every run.
    pub clusters: Vec<Member>,
    /// How many of them run at once: the stage's `max_concurrency` resolved against its size.
    pub concurrency: usize,
}

/// The fleet's stages in order, each with its clusters.
#[derive(Debug, Clone, PartialEq)]
pub struct Rings {
    pub rings: Vec<Ring>,
    /// Clusters of the fleet's sources no stage selects: shown, never upgraded.
    pub unassigned: Vec<Member>,
}

impl Rings {
    /// The stages no cluster matched (allowed, and worth saying).
    pub fn empty_stages(&self) -> Vec<&str> {
        self.rings
            .iter()
            .filter(|r| r.clusters.is_empty())
            .map(|r| r.stage.name.as_str())
            .collect()
    }
}

/// A cluster two stages select: it would run twice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignError {
    #[error(
        "cluster {cluster} is selected by stage {first:?} and by stage {second:?}: a cluster runs in one stage only; narrow one of the selectors"
    )]
    TwoStages {
        cluster: ClusterId,
        first: String,
        second: String,
    },
}

/// The fleet's clusters from a list of known ones (ARM's, or `--clusters`): those the fleet's
/// sources cover, and every cluster the file names one by one (tags from the list when it has
/// them, else none).
pub fn members_of(fleet: &FleetFile, listed: &[Member]) -> Vec<Member> {
    let mut members: Vec<Member> = listed
        .iter()
        .filter(|m| fleet.covers(&m.id))
        .cloned()
        .collect();
    for id in fleet.explicit_clusters() {
        if !members.iter().any(|m| same_id(&m.id, &id)) {
            members.push(Member {
                id,
                tags: BTreeMap::new(),
            });
        }
    }
    members
}

fn sort_key(m: &Member) -> String {
    m.id.to_string().to_ascii_lowercase()
}

/// Puts each of `clusters` into the one stage whose selector matches it. A cluster listed
/// twice counts once; a cluster no stage selects is listed in [`Rings::unassigned`]; a cluster
/// two stages select is an error naming both.
pub fn assign(fleet: &FleetFile, clusters: &[Member]) -> Result<Rings, AssignError> {
    let mut members: Vec<Member> = Vec::with_capacity(clusters.len());
    for m in clusters {
        if !members.iter().any(|seen| same_id(&seen.id, &m.id)) {
            members.push(m.clone());
        }
    }
    members.sort_by_key(sort_key);
    let mut by_stage: Vec<Vec<Member>> = vec![Vec::new(); fleet.stages.len()];
    let mut unassigned = Vec::new();
    for m in members {
        let mut hits = fleet
            .stages
            .iter()
            .enumerate()
            .filter(|(_, s)| s.selector.matches(&m.id, &m.tags));
        match (hits.next(), hits.next()) {
            (Some((i, _)), None) => by_stage[i].push(m),
            (Some((_, first)), Some((_, second))) => {
                return Err(AssignError::TwoStages {
                    cluster: m.id.clone(),
                    first: first.name.clone(),
                    second: second.name.clone(),
                });
            }
            (None, _) => unassigned.push(m),
        }
    }
    let rings = fleet
        .stages
        .iter()
        .zip(by_stage)
        .map(|(stage, clusters)| Ring {
            concurrency: stage.max_concurrency.resolve(clusters.len()),
            stage: stage.clone(),
            clusters,
        })
        .collect();
    Ok(Rings { rings, unassigned })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "00000000-0000-0000-0000-000000000000";

    fn mk_member(name: &str, ring: &str) -> Member {
        Member {
            id: ClusterId::new(SUB, "rg", name).unwrap(),
            tags: BTreeMap::from([("asm-canary/ring".to_string(), ring.to_string())]),
        }
    }

    fn mk_fleet(stages: &str) -> FleetFile {
        let text = format!(
            "apiVersion: asm-canary.fleet/1\nclusters:\n  - subscription: {SUB}\nstages:\n{stages}"
        );
        FleetFile::parse(&text, "fleet.yaml").unwrap()
    }

    #[test]
    fn clusters_go_to_their_stage_sorted_and_unmatched_ones_are_listed() {
        let fleet = mk_fleet(
            "  - {name: canary, selector: {tags: {asm-canary/ring: canary}}}\n  - {name: prod, selector: {tags: {asm-canary/ring: prod}}, max_concurrency: \"25%\"}\n  - {name: empty, selector: {names: [nothing]}}\n",
        );
        let clusters = [
            mk_member("aks-c", "prod"),
            mk_member("aks-a", "prod"),
            mk_member("aks-x", "canary"),
            mk_member("aks-lab", "lab"),
            mk_member("aks-a", "prod"),
        ];
        let rings = assign(&fleet, &clusters).unwrap();
        let names = |i: usize| -> Vec<&str> {
            rings.rings[i]
                .clusters
                .iter()
                .map(|m| m.id.name.as_str())
                .collect()
        };
        assert_eq!(names(0), ["aks-x"]);
        assert_eq!(names(1), ["aks-a", "aks-c"]);
        assert_eq!(rings.rings[1].concurrency, 1);
        assert_eq!(rings.unassigned.len(), 1);
        assert_eq!(rings.unassigned[0].id.name, "aks-lab");
        assert_eq!(rings.empty_stages(), ["empty"]);
        assert_eq!(rings.rings[2].concurrency, 1, "an empty stage still says 1");
    }

    #[test]
    fn a_cluster_two_stages_select_is_an_error_naming_both() {
        let fleet = mk_fleet(
            "  - {name: canary, selector: {names: [aks-1]}}\n  - {name: prod, selector: {tags: {asm-canary/ring: prod}}}\n",
        );
        let err = assign(&fleet, &[mk_member("aks-1", "prod")]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("\"canary\"") && msg.contains("\"prod\""),
            "{msg}"
        );
        assert!(msg.contains("managedClusters/aks-1"), "{msg}");
    }

    #[test]
    fn members_are_the_listed_clusters_the_sources_cover_plus_the_named_ones() {
        let text = format!(
            "apiVersion: asm-canary.fleet/1\nclusters:\n  - {{subscription: {SUB}, resource_group: rg}}\n  - id: /subscriptions/{SUB}/resourceGroups/other/providers/Microsoft.ContainerService/managedClusters/aks-named\nstages:\n  - {{name: all, selector: {{names: [x]}}}}\n"
        );
        let fleet = FleetFile::parse(&text, "fleet.yaml").unwrap();
        let outside = Member {
            id: ClusterId::new(SUB, "elsewhere", "aks-out").unwrap(),
            tags: BTreeMap::new(),
        };
        let named = Member {
            id: ClusterId::new(SUB, "OTHER", "aks-named").unwrap(),
            tags: BTreeMap::from([("t".to_string(), "v".to_string())]),
        };
        let members = members_of(
            &fleet,
            &[mk_member("aks-in", "prod"), outside, named.clone()],
        );
        let names: Vec<&str> = members.iter().map(|m| m.id.name.as_str()).collect();
        assert_eq!(
            names,
            ["aks-in", "aks-named"],
            "outside the sources: dropped"
        );
        assert_eq!(
            members[1].tags, named.tags,
            "a named cluster keeps its listed tags"
        );
        let alone = members_of(&fleet, &[]);
        assert_eq!(alone.len(), 1, "a named cluster is a member without a list");
    }

    #[test]
    fn percentage_concurrency_rounds_up_and_is_at_least_one() {
        use crate::fleet::Concurrency::{Count, Percent};
        assert_eq!(Percent(25).resolve(5), 2);
        assert_eq!(Percent(25).resolve(4), 1);
        assert_eq!(Percent(1).resolve(3), 1);
        assert_eq!(Percent(100).resolve(7), 7);
        assert_eq!(Percent(50).resolve(0), 1);
        assert_eq!(Count(10).resolve(3), 3, "never more than the stage holds");
        assert_eq!(Count(2).resolve(5), 2);
    }

    #[test]
    fn selectors_compare_names_ids_and_tag_keys_without_case() {
        let id = ClusterId::new(SUB, "RG", "AKS-1").unwrap();
        let tags = BTreeMap::from([("Asm-Canary/Ring".to_string(), "canary".to_string())]);
        use crate::fleet::Selector;
        assert!(Selector::Names(vec!["aks-1".into()]).matches(&id, &tags));
        assert!(
            Selector::Ids(vec![ClusterId::new(SUB, "rg", "aks-1").unwrap()]).matches(&id, &tags)
        );
        let want =
            |v: &str| Selector::Tags(BTreeMap::from([("asm-canary/ring".into(), v.to_string())]));
        assert!(want("canary").matches(&id, &tags));
        assert!(!want("Canary").matches(&id, &tags), "values match exactly");
    }
}
