use std::collections::BTreeMap;

use super::*;
use crate::azure::ClusterId;
use crate::fleet::{FleetFile, Member, assign};

const SUB: &str = "00000000-0000-0000-0000-000000000000";

fn mk_member(name: &str, ring: &str) -> Member {
    Member {
        id: ClusterId::new(SUB, "rg", name).unwrap(),
        tags: BTreeMap::from([("ring".to_string(), ring.to_string())]),
    }
}

/// Three stages (the middle one empty, with the approval after it), five prod clusters at 25%.
fn mk_rings() -> (FleetFile, Rings) {
    let text = format!(
        "apiVersion: asm-canary.fleet/1
clusters:
  - subscription: {SUB}
stages:
  - name: canary
    selector: {{tags: {{ring: canary}}}}
    after: {{soak: 10m}}
  - name: early
    selector: {{tags: {{ring: early}}}}
    after: {{approval: true}}
  - name: prod-eu
    selector: {{tags: {{ring: prod}}}}
    max_concurrency: \"25%\"
    upgrade: {{target: asm-1-28, canary_namespaces: [payments, orders]}}
"
    );
    let fleet = FleetFile::parse(&text, "fleet.yaml").unwrap();
    let mut clusters = vec![
        mk_member("aks-canary", "canary"),
        mk_member("aks-lab", "lab"),
    ];
    clusters.extend((1..=5).map(|i| mk_member(&format!("aks-prod-{i}"), "prod")));
    let rings = assign(&fleet, &clusters).unwrap();
    (fleet, rings)
}

fn parse(yaml: &str) -> Value {
    serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("not YAML: {e}\n{yaml}"))
}

fn ids(ring: &Ring) -> Vec<String> {
    ring.clusters.iter().map(|m| m.id.to_string()).collect()
}

#[test]
fn github_workflow_has_a_ring_per_stage_in_order_with_its_concurrency() {
    let (_, rings) = mk_rings();
    let yaml = render(&rings, PipelineFormat::Github, "asm-canary fleet pipeline").unwrap();
    let doc = parse(&yaml);
    let jobs = doc["jobs"].as_object().unwrap();
    let order: Vec<&str> = jobs.keys().map(String::as_str).collect();
    assert_eq!(
        order,
        ["build", "ring-canary", "soak-canary", "ring-prod-eu"]
    );
    assert_eq!(jobs["ring-canary"]["needs"], json!(["build"]));
    assert_eq!(jobs["soak-canary"]["needs"], json!(["ring-canary"]));
    assert_eq!(jobs["soak-canary"]["steps"][0]["run"], "sleep 600");
    assert_eq!(jobs["ring-prod-eu"]["needs"], json!(["soak-canary"]));
    for (job, ring) in [
        ("ring-canary", &rings.rings[0]),
        ("ring-prod-eu", &rings.rings[2]),
    ] {
        let strategy = &jobs[job]["strategy"];
        assert_eq!(strategy["max-parallel"], json!(ring.concurrency), "{job}");
        assert_eq!(strategy["fail-fast"], json!(false), "{job}");
        let matrix: Vec<String> = strategy["matrix"]["include"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(matrix, ids(ring), "{job}");
    }
    assert_eq!(
        jobs["ring-prod-eu"]["strategy"]["max-parallel"],
        json!(2),
        "25% of 5"
    );
    // The approval asked after the empty `early` stage holds prod back.
    assert_eq!(jobs["ring-prod-eu"]["environment"], "asm-canary-prod-eu");
    assert!(jobs["ring-canary"].get("environment").is_none());
    let run = jobs["ring-prod-eu"]["steps"][3]["run"].as_str().unwrap();
    assert!(
        run.contains("upgrade --cluster-id \"$CLUSTER_ID\""),
        "{run}"
    );
    assert!(
        run.contains("--unattended --output json --state-backend kubernetes"),
        "{run}"
    );
    assert!(
        run.contains(
            "--to asm-1-28 --canary-namespaces payments,orders --approve start --approve complete"
        ),
        "{run}"
    );
    assert_eq!(doc["permissions"]["id-token"], "write");
    assert!(
        yaml.contains("# Stages with no cluster (left out): early"),
        "{yaml}"
    );
    assert!(
        yaml.contains("managedClusters/aks-lab"),
        "the unassigned cluster is named"
    );
}

#[test]
fn azure_pipeline_has_a_stage_per_ring_chained_with_matrix_and_approval() {
    let (_, rings) = mk_rings();
    let yaml = render(&rings, PipelineFormat::AzurePipelines, "x").unwrap();
    let doc = parse(&yaml);
    let stages = doc["stages"].as_array().unwrap();
    let names: Vec<&str> = stages
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["build", "ring_canary", "ring_prod_eu"]);
    assert_eq!(stages[1]["dependsOn"], "build");
    assert_eq!(stages[2]["dependsOn"], "ring_canary");
    let jobs = |i: usize| stages[i]["jobs"].as_array().unwrap().clone();
    let canary = jobs(1);
    assert_eq!(canary[0]["job"], "upgrade");
    assert_eq!(canary[1]["job"], "soak");
    assert_eq!(canary[1]["pool"], "server");
    assert_eq!(canary[1]["steps"][0]["inputs"]["delayForMinutes"], "10");
    let prod = jobs(2);
    assert_eq!(prod[0]["deployment"], "approval");
    assert_eq!(prod[0]["environment"], "asm-canary-prod-eu");
    assert_eq!(prod[1]["dependsOn"], "approval");
    for (stage_jobs, ring) in [(&canary, &rings.rings[0]), (&prod, &rings.rings[2])] {
        let upgrade = stage_jobs.iter().find(|j| j["job"] == "upgrade").unwrap();
        assert_eq!(upgrade["strategy"]["maxParallel"], json!(ring.concurrency));
        let legs: Vec<String> = upgrade["strategy"]["matrix"]
            .as_object()
            .unwrap()
            .values()
            .map(|l| l["clusterId"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(legs, ids(ring));
    }
    let matrix = prod[1]["strategy"]["matrix"].as_object().unwrap();
    assert!(matrix.contains_key("aks_prod_1"), "{matrix:?}");
}

#[test]
fn matrix_leg_names_stay_unique_and_valid() {
    let (fleet, _) = mk_rings();
    let a = Member {
        id: ClusterId::new(SUB, "rg-a", "aks-1").unwrap(),
        tags: BTreeMap::from([("ring".into(), "prod".into())]),
    };
    let b = Member {
        id: ClusterId::new(SUB, "rg-b", "aks_1").unwrap(),
        ..a.clone()
    };
    let c = Member {
        id: ClusterId::new(SUB, "rg-c", "1aks").unwrap(),
        ..a.clone()
    };
    let rings = assign(&fleet, &[a, b, c]).unwrap();
    let legs = azure_legs(&rings.rings[2]);
    let names: Vec<&str> = legs.keys().map(String::as_str).collect();
    assert_eq!(names, ["aks_1", "aks_1_2", "c_1aks"]);
}

#[test]
fn a_fleet_with_no_cluster_in_any_stage_has_no_pipeline() {
    let (fleet, _) = mk_rings();
    let rings = assign(&fleet, &[mk_member("aks-lab", "lab")]).unwrap();
    let err = render(&rings, PipelineFormat::Github, "x").unwrap_err();
    assert!(matches!(err, PipelineError::NoClusters), "{err}");
}

#[test]
fn a_soak_longer_than_a_github_job_is_refused() {
    let (_, mut rings) = mk_rings();
    rings.rings[0].stage.soak = Duration::from_secs(6 * 3600);
    let err = render(&rings, PipelineFormat::Github, "x").unwrap_err();
    assert!(err.to_string().contains("at most 6h"), "{err}");
    assert!(render(&rings, PipelineFormat::AzurePipelines, "x").is_ok());
}

#[test]
fn odd_words_are_shell_quoted() {
    assert_eq!(shell_quote("asm-1-28"), "asm-1-28");
    assert_eq!(shell_quote("checks/a b.yaml"), "'checks/a b.yaml'");
    assert_eq!(shell_quote("it's"), "'it'\\''s'");
}
