//! `asm-canary sim serve` as a child process: the settings it prints and writes, a client
//! that trusts only the CA file it wrote, a clean stop on SIGTERM, and exit code 2 on a bad
//! scenario or a port in use. (The simulator itself is tested in `crates/sim/tests`.)

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;

const API: &str = "2025-10-01";

fn http_client(ca_pem: &str) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("add CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .build()
        .expect("reqwest client")
}

fn serve_command() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_asm-canary"));
    cmd.args(["sim", "serve"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd
}

#[tokio::test]
async fn sim_serve_prints_and_writes_the_settings_and_stops_on_sigterm() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("sim.env");
    // An env file left from before, readable by all: it keeps the secrets of this run, so it
    // is made 0600 too (it kept 0644).
    std::fs::write(&env_file, "OLD=1\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let mut child = serve_command()
        .args(["--scenario", "healthy", "--env-file"])
        .arg(&env_file)
        .spawn()
        .expect("spawn asm-canary sim serve");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let last = line.starts_with("ASM_CANARY_SIM_TOKEN=");
            printed.push(line);
            if last {
                break;
            }
        }
    })
    .await
    .expect("sim serve prints its settings");

    let written = std::fs::read_to_string(&env_file).expect("env file written");
    assert_eq!(written.lines().collect::<Vec<_>>(), printed);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&env_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let vars: std::collections::HashMap<&str, &str> =
        printed.iter().filter_map(|l| l.split_once('=')).collect();
    for key in [
        "ASM_CANARY_SUBSCRIPTION",
        "ASM_CANARY_RESOURCE_GROUP",
        "ASM_CANARY_CLUSTER",
        "ASM_CANARY_ARM_ENDPOINT",
        "AZURE_AUTHORITY_HOST",
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_ID",
        "AZURE_CLIENT_SECRET",
        "ASM_CANARY_CA_FILE",
        "ASM_CANARY_ARM_POLL_INTERVAL",
    ] {
        assert!(vars.contains_key(key), "{key} missing from {printed:?}");
    }
    // a real client's 15 s on the healthy scenario's clock (0.02 real s per simulated s)
    assert_eq!(vars["ASM_CANARY_ARM_POLL_INTERVAL"], "300ms");
    let ca_file = std::path::Path::new(vars["ASM_CANARY_CA_FILE"]);
    assert!(
        ca_file.is_absolute() && ca_file.starts_with(dir.path()),
        "{ca_file:?}"
    );
    let ca = std::fs::read_to_string(ca_file).expect("CA file");

    // A client that trusts only that CA file gets a token and reaches ARM.
    let http = http_client(&ca);
    let token: Value = http
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            vars["AZURE_AUTHORITY_HOST"], vars["AZURE_TENANT_ID"]
        ))
        .form(&[
            ("client_id", vars["AZURE_CLIENT_ID"]),
            ("client_secret", vars["AZURE_CLIENT_SECRET"]),
            ("grant_type", "client_credentials"),
            ("scope", "https://management.azure.com/.default"),
        ])
        .send()
        .await
        .expect("token over HTTPS")
        .json()
        .await
        .unwrap();
    let url = format!(
        "{}/subscriptions/{}/resourceGroups/{}/providers/Microsoft.ContainerService/managedClusters/{}?api-version={API}",
        vars["ASM_CANARY_ARM_ENDPOINT"],
        vars["ASM_CANARY_SUBSCRIPTION"],
        vars["ASM_CANARY_RESOURCE_GROUP"],
        vars["ASM_CANARY_CLUSTER"]
    );
    let r = http
        .get(url)
        .bearer_auth(token["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let pid = child.id().expect("child pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("send SIGTERM");
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("sim serve stops on SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0), "clean stop");
}

#[tokio::test]
async fn sim_serve_exits_2_on_a_bad_scenario_file_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "name: bad\narm:\n  throttle_evry: 3\n").unwrap();
    let out = serve_command()
        .arg("--scenario")
        .arg(&path)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:3:", path.display())),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());

    let out = serve_command()
        .args(["--scenario", "no-such-scenario"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown scenario"));
}

#[tokio::test]
async fn sim_serve_exits_2_when_the_port_is_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = serve_command()
        .args(["--listen", &addr])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}

#[tokio::test]
async fn sim_serve_fleet_prints_the_shared_settings_and_the_member_table() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
    let mut child = serve_command()
        .args(["--scenario", "fleet"])
        .spawn()
        .expect("spawn asm-canary sim serve --scenario fleet");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let last = line.starts_with("ASM_CANARY_SIM_TOKEN=");
            printed.push(line);
            if last {
                break;
            }
        }
    })
    .await
    .expect("sim serve prints the fleet's settings");
    let vars: std::collections::HashMap<&str, &str> =
        printed.iter().filter_map(|l| l.split_once('=')).collect();
    for key in [
        "ASM_CANARY_ARM_ENDPOINT",
        "AZURE_AUTHORITY_HOST",
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_ID",
        "AZURE_CLIENT_SECRET",
        "ASM_CANARY_CA_FILE",
    ] {
        assert!(vars.contains_key(key), "{key} missing from {printed:?}");
    }
    for key in ["ASM_CANARY_SUBSCRIPTION", "ASM_CANARY_CLUSTER"] {
        assert!(
            !vars.contains_key(key),
            "{key} is one cluster's: {printed:?}"
        );
    }
    let pid = child.id().expect("child pid").to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("stops on SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("12 clusters in 2 subscriptions"),
        "{stderr}"
    );
    let early = stderr
        .lines()
        .find(|l| l.contains("managedClusters/aks-early-2"))
        .expect("the member table names each cluster");
    assert!(
        early.starts_with("early") && early.contains("fails its gates"),
        "{early}"
    );
}

/// `--env-file` in a folder that does not exist, or naming a folder, exited 1 blaming the CA
/// certificate, after writing `<name>-ca.pem` beside a folder. Bad input: exit 2, the reason,
/// nothing written.
#[tokio::test]
async fn an_env_file_in_a_missing_folder_or_naming_a_folder_is_refused_before_anything_is_written()
{
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("folder");
    std::fs::create_dir(&folder).unwrap();
    for (env_file, says) in [
        (dir.path().join("missing").join("sim.env"), "does not exist"),
        (folder.clone(), "is a directory"),
    ] {
        let out = serve_command()
            .args(["--scenario", "healthy", "--env-file"])
            .arg(&env_file)
            .output()
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {err}", env_file.display());
        assert!(err.contains(says), "{err}");
        assert!(out.stdout.is_empty());
    }
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        [std::ffi::OsString::from("folder")],
        "nothing written"
    );
    assert_eq!(std::fs::read_dir(&folder).unwrap().count(), 0);
}
