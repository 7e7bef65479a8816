//! The seed's runbook by hand, with the Azure CLI and kubectl unchanged, against the simulated
//! cluster: `az cloud register` (the simulator's cloud metadata document), `az login
//! --service-principal` (its token endpoint), `az aks mesh get-upgrades`, `az aks
//! get-credentials`, the shared ConfigMap copied with kubectl, `az aks mesh upgrade start`,
//! namespaces relabelled, `kubectl rollout restart`, `kubectl get pods` at 2/2 on the new
//! revision, `az aks mesh upgrade complete`; then the cluster is on the target.
//!
//! Ignored by default (installing the Azure CLI takes minutes). Run it with
//! `cargo test --test az_runbook -- --ignored`; it uses `$AZ` when set, else installs
//! `azure-cli` from PyPI into a virtual environment in the temp folder (once; needs python3
//! with venv and pip), and needs kubectl (`$KUBECTL` or on PATH).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::TestSim;
use common::kubectl::{self, rows};

/// The `az` to run: `$AZ`, or one installed from PyPI into a throwaway virtual environment.
fn az_binary() -> PathBuf {
    if let Ok(az) = std::env::var("AZ") {
        return PathBuf::from(az);
    }
    let venv = std::env::temp_dir().join("asm-canary-azure-cli-venv");
    let az = venv.join("bin").join("az");
    if az.exists() {
        return az;
    }
    let lock = std::env::temp_dir().join("asm-canary-azure-cli.lock");
    let script = format!(
        "test -x {az} || {{ python3 -m venv {venv} && {venv}/bin/pip install -q azure-cli; }}",
        az = az.display(),
        venv = venv.display()
    );
    let out = Command::new("flock")
        .arg(&lock)
        .args(["sh", "-c", &script])
        .output()
        .expect("run flock/python3");
    assert!(
        az.exists(),
        "this test needs the Azure CLI: installing azure-cli from PyPI into {} failed: {}\n\
         install it by hand (python3 -m venv DIR && DIR/bin/pip install azure-cli) and set $AZ",
        venv.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    az
}

/// Runs `az ARGS` with its own config folder and the simulator's CA; panics with its output
/// when it fails. Answers stdout.
fn az(bin: &Path, config: &Path, ca: &Path, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args(args)
        .env("AZURE_CONFIG_DIR", config)
        .env("REQUESTS_CA_BUNDLE", ca)
        .env("AZURE_CORE_COLLECT_TELEMETRY", "false")
        .env("AZURE_CORE_NO_COLOR", "true")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run az");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "az {}: {}\n{stdout}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "installs the Azure CLI from PyPI (minutes): cargo test --test az_runbook -- --ignored"]
async fn the_runbook_by_hand_with_az_and_kubectl_upgrades_the_simulated_cluster() {
    let azb = az_binary();
    let kubectl_bin = kubectl::binary();
    let mut scenario = asm_canary_sim::Scenario::builtin("healthy").unwrap();
    scenario.time_scale = 0.05;
    let sim = TestSim::start_with(scenario).await;
    let info = sim.handle.info.clone();
    let dir = sim.dir.path().to_path_buf();
    let (config, ca) = (dir.join("azure"), sim.ca_file.clone());
    let az = |args: &[&str]| az(&azb, &config, &ca, args);
    let (rg, name) = (info.resource_group.as_str(), info.cluster.as_str());

    // sign in to the simulated cloud
    az(&["config", "set", "core.instance_discovery=false"]);
    az(&[
        "cloud",
        "register",
        "-n",
        "asm-sim",
        "--endpoint-resource-manager",
        &info.arm_endpoint,
    ]);
    az(&["cloud", "set", "-n", "asm-sim"]);
    let login = az(&[
        "login",
        "--service-principal",
        "-u",
        &info.client_id,
        "-p",
        &info.client_secret,
        "--tenant",
        &info.tenant_id,
        "-o",
        "tsv",
        "--query",
        "[0].id",
    ]);
    assert_eq!(login.trim(), info.subscription);

    // the runbook
    let current = az(&[
        "aks",
        "show",
        "-g",
        rg,
        "-n",
        name,
        "-o",
        "tsv",
        "--query",
        "serviceMeshProfile.istio.revisions[0]",
    ]);
    let current = current.trim().to_string();
    let upgrades = az(&[
        "aks",
        "mesh",
        "get-upgrades",
        "-g",
        rg,
        "-n",
        name,
        "-o",
        "tsv",
        "--query",
        "upgrades[0]",
    ]);
    let target = upgrades.trim().to_string();
    assert!(target.starts_with("asm-") && target != current, "{target}");
    let location = az(&[
        "aks", "show", "-g", rg, "-n", name, "-o", "tsv", "--query", "location",
    ]);
    let revs = az(&[
        "aks",
        "mesh",
        "get-revisions",
        "-l",
        location.trim(),
        "-o",
        "table",
    ]);
    assert!(revs.contains(&target), "{revs}");
    let kc = dir.join("kubeconfig-az");
    az(&[
        "aks",
        "get-credentials",
        "-g",
        rg,
        "-n",
        name,
        "-f",
        kc.to_str().unwrap(),
        "--overwrite-existing",
    ]);
    let k = |args: Vec<String>| {
        let (bin, kc) = (kubectl_bin.clone(), kc.clone());
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            kubectl::run(&bin, &kc, &args).await
        }
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();

    // the shared ConfigMap, copied for the new revision
    let shared = format!("istio-shared-configmap-{current}");
    let mesh = k(s(&[
        "get",
        "configmap",
        &shared,
        "-n",
        "aks-istio-system",
        "-o",
        "jsonpath={.data.mesh}",
    ]))
    .await;
    let mesh_file = dir.join("mesh.yaml");
    std::fs::write(&mesh_file, &mesh).unwrap();
    k(s(&[
        "create",
        "configmap",
        &format!("istio-shared-configmap-{target}"),
        "-n",
        "aks-istio-system",
        &format!("--from-file=mesh={}", mesh_file.display()),
    ]))
    .await;

    az(&[
        "aks",
        "mesh",
        "upgrade",
        "start",
        "-g",
        rg,
        "-n",
        name,
        "--revision",
        &target,
        "-o",
        "none",
    ]);
    k(s(&[
        "rollout",
        "status",
        "deployment",
        &format!("istiod-{target}"),
        "-n",
        "aks-istio-system",
        "--timeout=120s",
    ]))
    .await;

    // relabel every meshed namespace, restart its workloads
    let namespaces = rows(
        &k(s(&[
            "get",
            "namespaces",
            "-l",
            "istio.io/rev",
            "-L",
            "istio.io/rev",
        ]))
        .await,
    );
    assert!(!namespaces.is_empty());
    for ns in &namespaces {
        let ns = ns["NAME"].clone();
        k(s(&[
            "label",
            "namespace",
            &ns,
            &format!("istio.io/rev={target}"),
            "--overwrite",
        ]))
        .await;
        let kinds = "deployment,statefulset,daemonset";
        k(s(&["rollout", "restart", kinds, "-n", &ns])).await;
        // One workload at a time: kubectl before 1.23 (Debian's kubernetes-client is 1.20)
        // waits for a type without a name forever.
        let workloads = k(s(&["get", kinds, "-n", &ns, "-o", "name"])).await;
        for w in workloads.lines().filter(|l| !l.trim().is_empty()) {
            k(s(&["rollout", "status", w, "-n", &ns, "--timeout=120s"])).await;
        }
    }
    let mut pods = vec![];
    for _ in 0..100 {
        pods = rows(&k(s(&["get", "pods", "-n", "payments"])).await);
        if !pods.is_empty()
            && pods
                .iter()
                .all(|p| p["READY"] == "2/2" && p["STATUS"] == "Running")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(
        !pods.is_empty() && pods.iter().all(|p| p["READY"] == "2/2"),
        "{pods:?}"
    );

    az(&[
        "aks", "mesh", "upgrade", "complete", "-g", rg, "-n", name, "--yes", "-o", "none",
    ]);

    // what `asm-canary status` reads agrees: one revision, the target; every pod on it
    assert_eq!(sim.revisions().await, vec![target.clone()]);
    let by_rev = sim.pods_by_revision().await;
    assert_eq!(
        by_rev.keys().collect::<Vec<_>>(),
        vec![&target],
        "{by_rev:?}"
    );
}
