//! Shared by the end-to-end tests: a simulated cluster in the test process and the real
//! `asm-canary` binary pointed at it, the way a pipeline would run it.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Output;

pub mod apt;
pub mod kubectl;
pub mod prometheus;

use asm_canary_sim::{Scenario, SimHandle, SimOptions};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use serde_json::Value;

pub struct TestSim {
    pub handle: SimHandle,
    pub dir: tempfile::TempDir,
    pub ca_file: PathBuf,
}

/// Gate timings for the simulator's scaled clock.
pub const FAST: &[&str] = &[
    "--param",
    "soak=1s",
    "--param",
    "wave_soak=500ms",
    "--param",
    "poll_interval=200ms",
    "--param",
    "control_plane_timeout=30s",
    "--param",
    "rollout_timeout=60s",
    "--param",
    "verify_timeout=20s",
];

/// [`FAST`] without the params a day-2 runbook does not declare (no control plane to start).
pub fn fast_day2() -> Vec<&'static str> {
    FAST.chunks(2)
        .filter(|kv| !kv[1].starts_with("control_plane_timeout="))
        .flatten()
        .copied()
        .collect()
}

/// The binary with `args`, a simulator's (or a fleet's) settings in its environment, its CA
/// trusted, signing in with the service principal, ARM polled every 100 ms; stdin closed.
pub fn binary_for(
    args: &[&str],
    env: Vec<(String, String)>,
    ca_file: &std::path::Path,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_asm-canary"));
    cmd.args(args)
        .envs(env)
        .env("ASM_CANARY_CA_FILE", ca_file)
        .env("ASM_CANARY_AUTH", "client-secret")
        .env("ASM_CANARY_ARM_POLL_INTERVAL", "100ms")
        .env_remove("ASM_CANARY_LOG")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    cmd
}

impl TestSim {
    pub async fn start(scenario: &str) -> Self {
        let scenario = Scenario::builtin(scenario).expect("built-in scenario");
        Self::start_with(scenario).await
    }

    pub async fn start_with(scenario: Scenario) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_file = dir.path().join("ca.pem");
        let mut opts = SimOptions::new(scenario);
        opts.ca_file = Some(ca_file.clone());
        let handle = asm_canary_sim::start(opts).await.expect("sim starts");
        TestSim {
            handle,
            dir,
            ca_file,
        }
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir.path().join("run.json")
    }

    /// The binary with the simulator's connection settings in its environment.
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        binary_for(args, self.handle.info.env_lines(), &self.ca_file)
    }

    pub async fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().await.expect("binary runs")
    }

    /// `upgrade --unattended --output json` with fast gates and the given extra flags.
    pub async fn upgrade(&self, extra: &[&str]) -> Output {
        let state = self.state_file();
        let mut args = vec![
            "upgrade",
            "--unattended",
            "--output",
            "json",
            "--state",
            state.to_str().unwrap(),
        ];
        args.extend_from_slice(FAST);
        args.extend_from_slice(extra);
        self.run(&args).await
    }

    /// `resume --unattended --output json` of this test's run, with extra flags.
    pub async fn resume(&self, extra: &[&str]) -> Output {
        let state = self.state_file();
        let mut args = vec![
            "resume",
            "--state",
            state.to_str().unwrap(),
            "--unattended",
            "--output",
            "json",
        ];
        args.extend_from_slice(extra);
        self.run(&args).await
    }

    /// An HTTP client that trusts the simulator's CA (for `/_sim/*`).
    fn sim_http(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.handle.info.ca_pem.as_bytes()).unwrap();
        asm_canary::azure::ensure_ring_provider();
        reqwest::Client::builder()
            .tls_certs_only([ca])
            .build()
            .unwrap()
    }

    pub async fn sim_state(&self) -> Value {
        self.sim_http()
            .get(format!("{}/_sim/state", self.handle.info.arm_endpoint))
            .bearer_auth(&self.handle.info.sim_token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `POST /_sim/patch?revision=REV`: AKS rolls the next Istio patch of `rev` (istiod, the
    /// injector, the gateways); the answer's JSON (`version`, `proxyImage`).
    pub async fn roll_patch(&self, rev: &str) -> Value {
        let resp = self
            .sim_http()
            .post(format!(
                "{}/_sim/patch?revision={rev}",
                self.handle.info.arm_endpoint
            ))
            .bearer_auth(&self.handle.info.sim_token)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "roll patch: {}", resp.status());
        resp.json().await.unwrap()
    }

    pub async fn revisions(&self) -> Vec<String> {
        let s = self.sim_state().await;
        serde_json::from_value(s["arm"]["revisions"].clone()).unwrap()
    }

    /// An ARM client of the simulated cluster, signed in as its service principal, and the
    /// cluster's id.
    pub fn arm(&self) -> (asm_canary::azure::ArmClient, asm_canary::azure::ClusterId) {
        use asm_canary::azure::{
            ArmClient, ArmClientOptions, AuthMode, AuthSettings, build_credential,
            build_http_client,
        };
        let info = &self.handle.info;
        let http = build_http_client(Some(("sim CA", info.ca_pem.as_bytes()))).unwrap();
        let auth = AuthSettings {
            mode: AuthMode::ClientSecret,
            tenant_id: Some(info.tenant_id.clone()),
            client_id: Some(info.client_id.clone()),
            client_secret: Some(info.client_secret.clone()),
            authority_host: Some(info.authority_host.clone()),
        };
        let (credential, _) = build_credential(&auth, &http, &|_: &str| None).unwrap();
        let options = ArmClientOptions {
            endpoint: info.arm_endpoint.clone(),
            ..Default::default()
        };
        let client = ArmClient::new(options, credential, http).unwrap();
        (client, info.cluster_id().parse().unwrap())
    }

    /// Sets the cluster's revisions with a plain ARM PUT (LRO to the end), as
    /// `az aks mesh upgrade start|complete|rollback` would: no asm-canary run involved.
    pub async fn arm_put_revisions(&self, revisions: &[&str]) {
        let (client, id) = self.arm();
        let want: Vec<String> = revisions.iter().map(|s| s.to_string()).collect();
        client
            .set_revisions(&id, &want, &|_: &asm_canary::azure::ClusterDoc| Ok(()))
            .await
            .expect("plain ARM PUT of the revisions");
    }

    /// Begins that PUT and returns while its operation runs (the cluster is `Updating`), as
    /// `az aks mesh upgrade start --no-wait` would.
    pub async fn arm_begin_revisions(&self, revisions: &[&str]) {
        let (client, id) = self.arm();
        let want: Vec<String> = revisions.iter().map(|s| s.to_string()).collect();
        client
            .begin_set_revisions(&id, &want, &|_: &asm_canary::azure::ClusterDoc| Ok(()))
            .await
            .expect("plain ARM PUT of the revisions, begun");
    }

    pub async fn kube(&self) -> kube::Client {
        use base64::Engine;
        let info = &self.handle.info;
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: sim\n  cluster:\n    server: {}\n    certificate-authority-data: {}\ncontexts:\n- name: sim\n  context: {{cluster: sim, user: sim}}\ncurrent-context: sim\nusers:\n- name: sim\n  user:\n    token: {}\n",
            info.kube_server,
            base64::engine::general_purpose::STANDARD.encode(&info.ca_pem),
            info.sim_token
        );
        asm_canary::k8s::client_from_kubeconfig_bytes(kubeconfig.as_bytes(), None)
            .await
            .expect("kube client")
    }

    /// Application pods (outside aks-istio-* and kube-*) by the revision that injected them.
    pub async fn pods_by_revision(&self) -> BTreeMap<String, usize> {
        let pods = Api::<Pod>::all(self.kube().await)
            .list(&ListParams::default())
            .await
            .expect("list pods");
        let mut out = BTreeMap::new();
        for p in &pods.items {
            let ns = p.metadata.namespace.as_deref().unwrap_or_default();
            if ns.starts_with("aks-istio-")
                || ns.starts_with("kube-")
                || p.metadata.deletion_timestamp.is_some()
            {
                continue;
            }
            let rev = asm_canary::istio::pod_revision(p)
                .revision()
                .unwrap_or("none")
                .to_string();
            *out.entry(rev).or_default() += 1;
        }
        out
    }
}

/// The JSON Lines of stdout, each parsed; panics on a line that is not a JSON object.
pub fn events(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

pub fn last_event(out: &Output) -> Value {
    events(out).pop().unwrap_or(Value::Null)
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
