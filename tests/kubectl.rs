//! The real kubectl against the simulated cluster, the commands of the runbook by hand:
//! `kubectl create namespace|configmap|deployment` (sent in protobuf), `kubectl label`,
//! `kubectl rollout restart`, and `kubectl get` printing the API server's columns (READY 2/2
//! once the sidecar is injected). Needs kubectl (`$KUBECTL` or on PATH): fails without it.

mod common;

use common::TestSim;
use common::kubectl::{binary, kubeconfig, rows, run};

#[tokio::test]
async fn kubectl_create_namespace_configmap_deployment_then_get_pods_shows_2_of_2() {
    let bin = binary();
    let sim = TestSim::start("healthy").await;
    let kc = kubeconfig(&sim.handle, sim.dir.path());
    let k = |args: &'static [&'static str]| run(&bin, &kc, args);
    assert!(
        k(&["create", "namespace", "rehearsal"])
            .await
            .contains("namespace/rehearsal created")
    );
    assert!(
        k(&[
            "create",
            "configmap",
            "shared",
            "-n",
            "rehearsal",
            "--from-literal=mesh=x"
        ])
        .await
        .contains("configmap/shared created")
    );
    assert!(
        k(&[
            "create",
            "deployment",
            "web",
            "-n",
            "rehearsal",
            "--image=nginx",
            "--replicas=2"
        ])
        .await
        .contains("deployment.apps/web created")
    );
    let ns = rows(&k(&["get", "namespace", "rehearsal"]).await);
    assert_eq!(ns[0]["STATUS"], "Active", "{ns:?}");
    let cm = rows(&k(&["get", "configmap", "shared", "-n", "rehearsal"]).await);
    assert_eq!(cm[0]["DATA"], "1", "{cm:?}");
    k(&[
        "rollout",
        "status",
        "deployment/web",
        "-n",
        "rehearsal",
        "--timeout=60s",
    ])
    .await;
    let d = rows(&k(&["get", "deployment", "web", "-n", "rehearsal"]).await);
    assert_eq!(
        (d[0]["READY"].as_str(), d[0]["UP-TO-DATE"].as_str()),
        ("2/2", "2"),
        "{d:?}"
    );
    let pods = rows(&k(&["get", "pods", "-n", "rehearsal"]).await);
    assert_eq!(pods.len(), 2, "{pods:?}");
    assert!(
        pods.iter().all(|p| p["READY"] == "1/1"),
        "not injected yet: {pods:?}"
    );

    // into the mesh: the revision label, a restart, the sidecar in every new pod
    let rev = sim.revisions().await[0].clone();
    let label = format!("istio.io/rev={rev}");
    run(
        &bin,
        &kc,
        &["label", "namespace", "rehearsal", &label, "--overwrite"],
    )
    .await;
    k(&["rollout", "restart", "deployment/web", "-n", "rehearsal"]).await;
    k(&[
        "rollout",
        "status",
        "deployment/web",
        "-n",
        "rehearsal",
        "--timeout=60s",
    ])
    .await;
    let mut pods = vec![];
    for _ in 0..100 {
        pods = rows(&k(&["get", "pods", "-n", "rehearsal", "-o", "wide"]).await);
        if pods.len() == 2 && pods.iter().all(|p| p["READY"] == "2/2") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(pods.len(), 2, "{pods:?}");
    for p in &pods {
        assert_eq!(
            (p["READY"].as_str(), p["STATUS"].as_str()),
            ("2/2", "Running"),
            "{p:?}"
        );
        assert_eq!(p["RESTARTS"], "0");
        assert!(p["IP"].starts_with("10."), "{p:?}");
        assert!(p["NODE"].starts_with("aks-"), "{p:?}");
        assert_eq!(p["NOMINATED NODE"], "<none>");
    }
    // the seed's own pods: injected, 2/2
    let payments = rows(&k(&["get", "pods", "-n", "payments"]).await);
    assert!(
        !payments.is_empty() && payments.iter().all(|p| p["READY"] == "2/2"),
        "{payments:?}"
    );
}

/// `sim serve --rehearsal DIR`: one `source DIR/env` points kubectl (and the Azure CLI, when
/// `$AZ` names one) at the simulator.
#[tokio::test]
async fn sim_serve_rehearsal_folder_points_kubectl_and_az_at_the_simulator() {
    let bin = binary();
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("rehearsal");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_asm-canary"))
        .args(["sim", "serve", "--rehearsal"])
        .arg(&folder)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn asm-canary sim serve");
    let env_file = folder.join("env");
    for _ in 0..200 {
        if env_file.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let text = std::fs::read_to_string(&env_file).expect("the rehearsal env file");
    let vars: std::collections::HashMap<String, String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect();
    let kc = std::path::PathBuf::from(&vars["KUBECONFIG"]);
    let ns = rows(&run(&bin, &kc, &["get", "namespace", "payments"]).await);
    assert_eq!(ns[0]["STATUS"], "Active");
    let az_dir = std::path::PathBuf::from(&vars["AZURE_CONFIG_DIR"]);
    let config = std::fs::read_to_string(az_dir.join("config")).unwrap();
    assert!(
        config.contains("name = asm-canary-sim") && config.contains("instance_discovery = false")
    );
    let clouds = std::fs::read_to_string(az_dir.join("clouds.config")).unwrap();
    assert!(
        clouds.contains(&format!(
            "endpoint_resource_manager = {}",
            vars["ASM_CANARY_ARM_ENDPOINT"]
        )),
        "{clouds}"
    );
    assert!(std::path::Path::new(&vars["REQUESTS_CA_BUNDLE"]).exists());
    if let Ok(az) = std::env::var("AZ") {
        let out = std::process::Command::new(az)
            .args([
                "aks",
                "show",
                "-g",
                &vars["ASM_CANARY_RESOURCE_GROUP"],
                "-n",
                &vars["ASM_CANARY_CLUSTER"],
                "--query",
                "name",
                "-o",
                "tsv",
            ])
            .envs(&vars)
            .output()
            .expect("run az");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            vars["ASM_CANARY_CLUSTER"]
        );
    }
    child.kill().await.ok();
}
