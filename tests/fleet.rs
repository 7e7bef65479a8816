//! `asm-canary fleet pipeline`, the real binary: the committed example pipelines are exactly
//! what the example fleet file generates, and they hold the fleet file's rings (jobs, order,
//! concurrency); bad files and arguments exit 2; `--output` never leaves a half-written or
//! misplaced file.

use std::path::{Path, PathBuf};
use std::process::Output;

use asm_canary::fleet::{FleetFile, Member, Rings, assign, members_of};
use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn asm_canary(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_asm-canary"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run asm-canary")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const FLEET: &str = "examples/fleet.yaml";
const CLUSTERS: &str = "examples/fleet-clusters.json";

fn generate(format: &str) -> String {
    let out = asm_canary(&[
        "fleet",
        "pipeline",
        "--fleet",
        FLEET,
        "--format",
        format,
        "--clusters",
        CLUSTERS,
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    stdout(&out)
}

/// The example rings, computed by the library from the same inputs.
fn example_rings() -> Rings {
    let fleet = FleetFile::load(&root().join(FLEET)).unwrap();
    let text = std::fs::read_to_string(root().join(CLUSTERS)).unwrap();
    let listed: Vec<Member> = serde_json::from_str(&text).unwrap();
    assign(&fleet, &members_of(&fleet, &listed)).unwrap()
}

fn ids_of(ring: &asm_canary::fleet::Ring) -> Vec<String> {
    ring.clusters.iter().map(|m| m.id.to_string()).collect()
}

#[test]
fn example_pipelines_are_what_the_example_fleet_file_generates() {
    for (format, file) in [
        ("github", "examples/fleet-github.yml"),
        ("azure-pipelines", "examples/fleet-azure-pipelines.yml"),
    ] {
        let committed = std::fs::read_to_string(root().join(file)).unwrap();
        assert!(
            generate(format) == committed,
            "{file} is stale: regenerate it with the command in examples/fleet.yaml"
        );
    }
}

#[test]
fn example_github_workflow_holds_the_fleet_files_rings() {
    let rings = example_rings();
    let doc: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(root().join("examples/fleet-github.yml")).unwrap(),
    )
    .unwrap();
    let jobs = doc["jobs"].as_object().unwrap();
    let mut needs = "build".to_string();
    let mut seen = vec!["build".to_string()];
    for ring in &rings.rings {
        let id = format!("ring-{}", ring.stage.name);
        let job = &jobs[&id];
        assert_eq!(
            job["needs"],
            json!([needs]),
            "{id} runs after the ring before"
        );
        assert_eq!(
            job["strategy"]["max-parallel"],
            json!(ring.concurrency),
            "{id}"
        );
        let matrix: Vec<&str> = job["strategy"]["matrix"]["include"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(matrix, ids_of(ring), "{id}");
        seen.push(id.clone());
        needs = id;
        if !ring.stage.soak.is_zero() {
            let soak = format!("soak-{}", ring.stage.name);
            assert_eq!(jobs[&soak]["needs"], json!([needs]));
            assert_eq!(
                jobs[&soak]["steps"][0]["run"],
                format!("sleep {}", ring.stage.soak.as_secs())
            );
            seen.push(soak.clone());
            needs = soak;
        }
    }
    let order: Vec<&String> = jobs.keys().collect();
    assert_eq!(order, seen.iter().collect::<Vec<_>>());
    // Approvals after canary and early hold the next ring back.
    assert_eq!(jobs["ring-canary"].get("environment"), None);
    assert_eq!(jobs["ring-early"]["environment"], "asm-canary-early");
    assert_eq!(jobs["ring-prod"]["environment"], "fleet-prod");
    assert_eq!(
        jobs["ring-prod"]["strategy"]["max-parallel"],
        json!(2),
        "25% of 5, rounded up"
    );
}

#[test]
fn example_azure_pipeline_holds_the_fleet_files_rings() {
    let rings = example_rings();
    let doc: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(root().join("examples/fleet-azure-pipelines.yml")).unwrap(),
    )
    .unwrap();
    let stages = doc["stages"].as_array().unwrap();
    assert_eq!(stages.len(), rings.rings.len() + 1);
    let mut previous = "build".to_string();
    for (stage, ring) in stages[1..].iter().zip(&rings.rings) {
        let id = format!("ring_{}", ring.stage.name);
        assert_eq!(stage["stage"], id.as_str());
        assert_eq!(stage["dependsOn"], previous.as_str());
        let jobs = stage["jobs"].as_array().unwrap();
        let upgrade = jobs.iter().find(|j| j["job"] == "upgrade").unwrap();
        assert_eq!(
            upgrade["strategy"]["maxParallel"],
            json!(ring.concurrency),
            "{id}"
        );
        let legs: Vec<&str> = upgrade["strategy"]["matrix"]
            .as_object()
            .unwrap()
            .values()
            .map(|l| l["clusterId"].as_str().unwrap())
            .collect();
        assert_eq!(legs, ids_of(ring), "{id}");
        let soak = jobs.iter().find(|j| j["job"] == "soak");
        assert_eq!(soak.is_some(), !ring.stage.soak.is_zero(), "{id}");
        previous = id;
    }
    let approval = |i: usize| {
        stages[i]["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["deployment"] == "approval")
            .map(|j| j["environment"].as_str().unwrap().to_string())
    };
    assert_eq!(approval(1), None);
    assert_eq!(approval(2).as_deref(), Some("asm-canary-early"));
    assert_eq!(approval(3).as_deref(), Some("fleet-prod"));
}

#[test]
fn output_into_a_missing_folder_fails_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("missing").join("fleet.yml");
    let out = asm_canary(&[
        "fleet",
        "pipeline",
        "--fleet",
        FLEET,
        "--clusters",
        CLUSTERS,
        "--format",
        "github",
        "--output",
        target.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    assert!(!target.exists());
    assert!(!dir.path().join("missing").exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn output_replaces_the_file_whole_and_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("fleet.yml");
    std::fs::write(
        &target,
        "old pipeline, much longer than nothing\n".repeat(500),
    )
    .unwrap();
    let out = asm_canary(&[
        "fleet",
        "pipeline",
        "--fleet",
        FLEET,
        "--clusters",
        CLUSTERS,
        "--format",
        "azure-pipelines",
        "--output",
        target.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert!(
        stdout(&out).is_empty(),
        "the pipeline goes to the file only"
    );
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        generate("azure-pipelines")
    );
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [std::ffi::OsString::from("fleet.yml")]);
}

/// `--output /dev/null` renamed the pipeline over the device node (it became a regular file
/// for the whole machine) and `--output -` wrote a file named `-`. A socket, FIFO or device
/// and a read-only file are now refused (exit 2, left as they were); `-` is stdout.
#[cfg(unix)]
#[test]
fn output_onto_a_socket_or_a_read_only_file_is_refused_and_dash_is_stdout() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("fleet.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let protected = dir.path().join("protected.yml");
    std::fs::write(&protected, "kept").unwrap();
    std::fs::set_permissions(&protected, std::fs::Permissions::from_mode(0o444)).unwrap();
    let pipeline = |output: &str| {
        asm_canary(&[
            "fleet",
            "pipeline",
            "--fleet",
            FLEET,
            "--clusters",
            CLUSTERS,
            "--format",
            "github",
            "--output",
            output,
        ])
    };
    for (path, says) in [(&socket, "not a regular file"), (&protected, "read-only")] {
        let out = pipeline(path.to_str().unwrap());
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
    }
    let kind = std::fs::symlink_metadata(&socket).unwrap().file_type();
    assert!(kind.is_socket(), "the socket is still a socket");
    assert_eq!(std::fs::read_to_string(&protected).unwrap(), "kept");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_asm-canary"))
        .current_dir(dir.path())
        .args(["fleet", "pipeline", "--fleet"])
        .arg(std::fs::canonicalize(FLEET).unwrap())
        .arg("--clusters")
        .arg(std::fs::canonicalize(CLUSTERS).unwrap())
        .args(["--format", "github", "--output", "-"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("jobs:"), "the pipeline on stdout");
    assert!(!dir.path().join("-").exists(), "no file named -");
}

/// `fleet run … 2>&1 | head -4` crashed mid-upgrade: `eprintln!` panics once stderr is
/// closed, and a cluster's run died holding its lock. The tool's lines to a closed stderr are
/// now dropped: here `fleet pipeline --output`'s closing line, which panicked the same way
/// (exit 101).
#[test]
fn a_closed_stderr_does_not_crash_the_tool() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("fleet.yml");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_asm-canary"))
        .current_dir(root())
        .args([
            "fleet",
            "pipeline",
            "--fleet",
            FLEET,
            "--clusters",
            CLUSTERS,
        ])
        .args(["--format", "github", "--output"])
        .arg(&target)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        generate("github")
    );
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn a_bad_fleet_file_exits_2_with_every_problem_at_its_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = write(
        dir.path(),
        "fleet.yaml",
        "apiVersion: asm-canary.fleet/1
clusters:
  - id: /subscriptions/0000/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/aks-1
stages:
  - name: canary
    selector: {names: [aks-1]}
    max_concurrency: \"0%\"
  - name: canary
    selector: {names: [aks-2]}
",
    );
    let out = asm_canary(&["fleet", "pipeline", "--fleet", &fleet, "--format", "github"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{fleet}:7:22: max_concurrency")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{fleet}:8:11: duplicate stage name")),
        "{err}"
    );
    assert!(stdout(&out).is_empty());
}

#[test]
fn subscription_sources_without_a_cluster_list_are_refused() {
    let out = asm_canary(&["fleet", "pipeline", "--fleet", FLEET, "--format", "github"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("give --clusters FILE"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_cluster_two_stages_select_exits_2_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = write(
        dir.path(),
        "fleet.yaml",
        "apiVersion: asm-canary.fleet/1
clusters:
  - id: /subscriptions/0000/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/aks-1
stages:
  - {name: canary, selector: {names: [aks-1]}}
  - {name: prod, selector: {ids: [/subscriptions/0000/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/aks-1]}}
",
    );
    let out = asm_canary(&["fleet", "pipeline", "--fleet", &fleet, "--format", "github"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("\"canary\"") && err.contains("\"prod\"") && err.contains("aks-1"),
        "{err}"
    );
}

#[test]
fn a_bad_clusters_file_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let clusters = write(
        dir.path(),
        "clusters.json",
        "[{\"id\": \"/subscriptions/x\"}]",
    );
    let out = asm_canary(&[
        "fleet",
        "pipeline",
        "--fleet",
        FLEET,
        "--format",
        "github",
        "--clusters",
        &clusters,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!("--clusters {clusters}:1:")),
        "{}",
        stderr(&out)
    );
}

/// Regression: a fleet file whose upgrade settings the runbook refuses (`params:
/// {nonsense_param: 3}`, `soak: abc`) passed `fleet plan` (every cluster "ready") and `fleet
/// run` halted at its first cluster for good. Both refuse it before ARM is asked anything:
/// exit 2, the file, the stage and the runbook's words; no fleet checkpoint.
#[test]
fn upgrade_settings_the_runbook_refuses_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    for (params, says) in [
        ("{nonsense_param: 3}", "unknown param \"nonsense_param\""),
        ("{soak: abc}", "param \"soak\""),
        ("{verify_timeout: 0s}", "0s is shorter than the minimum, 1s"),
    ] {
        let fleet = write(
            dir.path(),
            "fleet.yaml",
            &format!(
                "apiVersion: asm-canary.fleet/1\nclusters:\n  - subscription: 11111111-1111-1111-1111-111111111111\nstages:\n  - name: canary\n    selector: {{tags: {{asm-canary/ring: canary}}}}\n    upgrade:\n      params: {params}\n"
            ),
        );
        let state = dir.path().join("fleet-state.json");
        for command in ["plan", "run"] {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_asm-canary"));
            cmd.args(["fleet", command, "--fleet", &fleet]);
            if command == "run" {
                cmd.arg("--state").arg(&state);
            }
            let out = cmd.env_remove("ASM_CANARY_LOG").output().unwrap();
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{command} {params}: {err}");
            assert!(err.contains("stage \"canary\""), "{command}: {err}");
            assert!(err.contains(says), "{command}: {err}");
            assert!(!state.exists(), "{command}: no fleet checkpoint");
        }
    }
}
