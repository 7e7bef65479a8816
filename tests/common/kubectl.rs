//! The real kubectl (`$KUBECTL`, or `kubectl` on PATH) against the simulated cluster. A test
//! that needs it fails, never skips, when there is none: the message says how to install it.

use std::path::{Path, PathBuf};

use asm_canary_sim::SimHandle;

/// The kubectl binary to run: `$KUBECTL`, else `kubectl` on PATH (Debian's
/// `kubernetes-client` installed when missing); panics (the test fails) when there is none.
pub fn binary() -> String {
    let bin = match std::env::var("KUBECTL") {
        Ok(b) => b,
        Err(_) => {
            if let Err(e) = super::apt::ensure("kubectl", "kubernetes-client") {
                panic!("this test needs the real kubectl: {e}");
            }
            "kubectl".into()
        }
    };
    match std::process::Command::new(&bin)
        .args(["version", "--client"])
        .output()
    {
        Ok(o) if o.status.success() => bin,
        other => panic!(
            "this test needs the real kubectl and `{bin}` does not run ({other:?}).\n\
             Install it (Debian: apt-get install kubernetes-client; or kubectl 1.32 from\n\
             pkgs.k8s.io) or point $KUBECTL at one."
        ),
    }
}

/// Writes a kubeconfig for the simulator (its CA, its bearer token) into `dir`.
pub fn kubeconfig(sim: &SimHandle, dir: &Path) -> PathBuf {
    let info = &sim.info;
    let ca = dir.join("kube-ca.pem");
    std::fs::write(&ca, &info.ca_pem).expect("write the CA");
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: sim\n  cluster:\n    server: {}\n    certificate-authority: {}\ncontexts:\n- name: sim\n  context: {{cluster: sim, user: sim}}\ncurrent-context: sim\nusers:\n- name: sim\n  user:\n    token: {}\n",
        info.kube_server,
        ca.display(),
        info.sim_token
    );
    std::fs::write(&path, text).expect("write the kubeconfig");
    path
}

/// Runs `kubectl ARGS` with `kubeconfig`; panics with its output when it fails.
pub async fn run(bin: &str, kubeconfig: &Path, args: &[&str]) -> String {
    let out = tokio::process::Command::new(bin)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .await
        .expect("run kubectl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kubectl {}: {}\n{stdout}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The rows of a `kubectl get` table as maps from column header to cell.
pub fn rows(table: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut lines = table.lines();
    let Some(header) = lines.next() else {
        return vec![];
    };
    // headers are separated by two spaces or more; a header may hold one space
    let mut starts = vec![];
    let bytes = header.as_bytes();
    for i in 0..bytes.len() {
        if bytes[i] != b' ' && (i == 0 || (i >= 2 && bytes[i - 1] == b' ' && bytes[i - 2] == b' '))
        {
            starts.push(i);
        }
    }
    let cell = |line: &str, k: usize| {
        let from = starts[k].min(line.len());
        let to = starts
            .get(k + 1)
            .copied()
            .unwrap_or(line.len())
            .min(line.len());
        line[from..to].trim().to_string()
    };
    let names: Vec<String> = (0..starts.len()).map(|k| cell(header, k)).collect();
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            names
                .iter()
                .enumerate()
                .map(|(k, n)| (n.clone(), cell(l, k)))
                .collect()
        })
        .collect()
}
