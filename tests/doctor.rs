//! `asm-canary doctor` through the real binary against the simulated cluster: each check
//! tripped by a scenario that has its trap, the healthy cluster all ✓ (exit 0), the exit codes
//! (3 broken, 4 warnings only), the JSON document, and not one write request.

mod common;

use asm_canary_sim::Scenario;
use asm_canary_sim::kube::{NamespaceShape, SidecarRestart, TagShape, WorkloadShape};
use common::{TestSim, stderr};
use serde_json::{Value, json};

fn code(out: &std::process::Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn healthy() -> Scenario {
    Scenario::builtin("healthy").unwrap()
}

/// `doctor --output json` against `scenario`: the exit code and the document.
async fn doctor(scenario: Scenario) -> (i32, Value) {
    let sim = TestSim::start_with(scenario).await;
    let out = sim.run(&["doctor", "--output", "json"]).await;
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}); stderr: {}", stderr(&out)));
    assert_eq!(
        doc["exit_code"],
        code(&out),
        "the document says the exit code"
    );
    (code(&out), doc)
}

/// The check `id` of a doctor document.
fn check<'a>(doc: &'a Value, id: &str) -> &'a Value {
    doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {doc:#}"))
}

/// The check's findings of `severity`, as (message, objects, fix).
fn findings(doc: &Value, id: &str, severity: &str) -> Vec<(String, Vec<String>, String)> {
    check(doc, id)["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == severity)
        .map(|f| {
            (
                f["message"].as_str().unwrap_or_default().to_string(),
                serde_json::from_value(f["objects"].clone()).unwrap(),
                f["fix"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The checks that are not ✓.
fn not_ok(doc: &Value) -> Vec<(String, String)> {
    doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] != "ok")
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

const CHECK_IDS: &[&str] = &[
    "sidecars",
    "namespace-labels",
    "tags",
    "webhook-endpoints",
    "shared-configmap",
    "proxy-sync",
    "patch-drift",
    "policy-namespace",
    "mtls",
    "egress",
    "ingress-gateways",
    "sidecar-restarts",
    "orphaned-leases",
    "support",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_cluster_exits_0_with_every_check_ok() {
    let sim = TestSim::start("healthy").await;
    let out = sim.run(&["doctor"]).await;
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("[✓]").count(), CHECK_IDS.len(), "{text}");
    assert!(!text.contains("[!]") && !text.contains("[✗]"), "{text}");
    assert!(text.contains("No issues found"), "{text}");
    assert!(
        text.contains("asm-canary plan would upgrade to asm-1-29"),
        "{text}"
    );

    let out = sim.run(&["doctor", "--output", "json"]).await;
    assert_eq!(code(&out), 0);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["schema"], "asm-canary.doctor/1.0");
    assert_eq!(doc["revisions"], json!(["asm-1-27"]));
    assert_eq!(doc["status"], "ok");
    assert_eq!(doc["exit_code"], 0);
    assert_eq!(
        doc["summary"],
        json!({"ok": CHECK_IDS.len(), "warning": 0, "broken": 0})
    );
    let ids: Vec<&str> = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, CHECK_IDS);
    // healthy runs REGISTRY_ONLY: the egress check read the proxies and found nothing dropped
    assert!(
        check(&doc, "egress")["findings"][0]["message"]
            .as_str()
            .is_some_and(|m| m
                .starts_with("outboundTrafficPolicy is REGISTRY_ONLY (asm-1-27): no proxy of the")),
        "{doc:#}"
    );
    for c in doc["checks"].as_array().unwrap() {
        assert_eq!(c["status"], "ok", "{c:#}");
        assert!(c["title"].as_str().is_some_and(|t| !t.is_empty()));
    }
}

/// The doctor changes nothing: no lock, no owner record, no write of any kind. The only
/// non-GET requests are the sign-in, the kubeconfig ARM hands out, and istiod's port-forward.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_makes_no_write_requests() {
    let sim = TestSim::start("legacy-labels").await;
    let before = sim.handle.shared.requests.snapshot().len();
    let out = sim.run(&["doctor"]).await;
    assert_eq!(code(&out), 3, "stderr: {}", stderr(&out));
    let writes: Vec<String> = sim.handle.shared.requests.snapshot()[before..]
        .iter()
        .filter(|r| {
            r.api != "token"
                && !r.path.ends_with("/listClusterUserCredential")
                && !r.path.ends_with("/portforward")
        })
        .map(|r| format!("{} {} {}", r.api, r.method, r.path))
        .collect();
    assert!(writes.is_empty(), "doctor wrote: {writes:?}");
}

/// `legacy-labels` against the doctor: each of its traps named, exit 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_labels_names_every_problem() {
    let sim = TestSim::start("legacy-labels").await;
    let out = sim.run(&["doctor"]).await;
    assert_eq!(code(&out), 3, "stderr: {}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "[✗] Namespace labels the add-on honours",
        "namespace legacy is labelled istio-injection=enabled",
        "namespace inventory is labelled istio.io/rev=asm-1-25",
        "[!] Meshed namespaces: every pod has its sidecar",
        "fix: kubectl rollout restart deployment/invoices -n billing",
        "tag canary points at asm-1-25, which is not installed",
        "istio-shared-configmap-asm-1-25 is named for asm-1-25",
        "PeerAuthentication istio-system/default",
        "last because OOMKilled",
        "kubectl delete lease istio-gateway-deployment-asm-1-25 -n aks-istio-system",
        "3 broken, 4 warning(s), 7 fine.",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_of_a_meshed_namespace_without_a_sidecar_are_named() {
    let mut s = healthy();
    let mut ns = NamespaceShape {
        name: "billing".into(),
        ..Default::default()
    };
    ns.late_labels.insert("istio.io/rev".into(), "prod".into());
    ns.deployments = vec![WorkloadShape {
        name: "invoices".into(),
        replicas: 2,
        ..Default::default()
    }];
    s.kube.namespaces.push(ns);
    let (code, doc) = doctor(s).await;
    assert_eq!(code, 4, "{doc:#}");
    assert_eq!(not_ok(&doc), vec![("sidecars".into(), "warning".into())]);
    let f = findings(&doc, "sidecars", "warning");
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].1.len(), 2, "both pods named: {f:?}");
    assert!(f[0].1.iter().all(|p| p.starts_with("billing/invoices-")));
    assert_eq!(
        f[0].2,
        "kubectl rollout restart deployment/invoices -n billing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_and_unknown_revision_labels_are_named() {
    let mut s = healthy();
    let mut legacy = NamespaceShape {
        name: "legacy".into(),
        ..Default::default()
    };
    legacy
        .labels
        .insert("istio-injection".into(), "enabled".into());
    let mut orphan = NamespaceShape {
        name: "inventory".into(),
        ..Default::default()
    };
    orphan
        .labels
        .insert("istio.io/rev".into(), "asm-1-25".into());
    s.kube.namespaces.extend([legacy, orphan]);
    let (code, doc) = doctor(s).await;
    assert_eq!(code, 3, "{doc:#}");
    assert_eq!(
        not_ok(&doc),
        vec![("namespace-labels".into(), "broken".into())]
    );
    let broken = findings(&doc, "namespace-labels", "broken");
    assert_eq!(broken[0].1, vec!["inventory"]);
    assert_eq!(
        broken[0].2,
        "kubectl label ns inventory istio.io/rev=prod --overwrite, then restart its workloads"
    );
    let warned = findings(&doc, "namespace-labels", "warning");
    assert_eq!(warned[0].1, vec!["legacy"]);
}

/// The `prod` tag's webhook gone while namespaces still carry `istio.io/rev=prod`: the doctor
/// told each namespace to be relabelled to a revision and restarted (pinning it off the tag,
/// restarting pods that had their sidecars). It is one finding now, fixed by restoring the tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_labelled_for_a_missing_tag_are_fixed_by_restoring_the_tag() {
    let mut s = healthy();
    s.kube.tags.clear();
    let (code, doc) = doctor(s).await;
    assert_eq!(code, 3, "{doc:#}");
    let broken = findings(&doc, "namespace-labels", "broken");
    assert_eq!(broken.len(), 1, "{broken:?}");
    let (message, objects, fix) = &broken[0];
    assert!(message.contains("but tag prod does not exist"), "{message}");
    assert!(objects.contains(&"payments".to_string()), "{objects:?}");
    assert!(
        objects.len() >= 2,
        "every namespace of the tag: {objects:?}"
    );
    assert!(
        fix.starts_with(
            "istioctl tag set prod --revision asm-1-27 --istioNamespace aks-istio-system"
        ),
        "{fix}"
    );
    assert!(!fix.contains("kubectl label"), "{fix}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_at_a_removed_revision_is_broken() {
    let mut s = healthy();
    s.kube.tags.push(TagShape {
        name: "canary".into(),
        revision: "asm-1-25".into(),
    });
    let (code, doc) = doctor(s).await;
    assert_eq!(code, 3, "{doc:#}");
    assert_eq!(not_ok(&doc), vec![("tags".into(), "broken".into())]);
    let f = findings(&doc, "tags", "broken");
    assert_eq!(f[0].1, vec!["istio-revision-tag-canary-aks-istio-system"]);
    assert!(
        f[0].2.starts_with("istioctl tag set canary --revision asm-1-27 --istioNamespace aks-istio-system --overwrite"),
        "{f:?}"
    );
}

/// An injector webhook whose istiod Service has no ready pod (the webhook of a revision whose
/// istiod never came up): every pod it matches is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_whose_istiod_has_no_ready_endpoints_is_broken() {
    let mut s = healthy();
    let hook = json!({"name": "rev.namespace.sidecar-injector.istio.io",
        "admissionReviewVersions": ["v1"], "sideEffects": "None", "failurePolicy": "Fail",
        "clientConfig": {"service": {"name": "istiod-asm-1-28", "namespace": "aks-istio-system", "path": "/inject", "port": 443}},
        "namespaceSelector": {"matchLabels": {"istio.io/rev": "asm-1-28"}},
        "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}]});
    s.kube.objects.extend([
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
               "metadata": {"name": "istio-sidecar-injector-asm-1-28-aks-istio-system", "labels": {"istio.io/rev": "asm-1-28"}},
               "webhooks": [hook]}),
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "istiod-asm-1-28", "namespace": "aks-istio-system"},
               "spec": {"selector": {"app": "istiod", "istio.io/rev": "asm-1-28"}, "ports": [{"port": 443, "targetPort": 15017}]}}),
    ]);
    let (code, doc) = doctor(s).await;
    assert_eq!(code, 3, "{doc:#}");
    assert_eq!(
        not_ok(&doc),
        vec![("webhook-endpoints".into(), "broken".into())]
    );
    let f = findings(&doc, "webhook-endpoints", "broken");
    assert!(
        f[0].0
            .contains("aks-istio-system/istiod-asm-1-28 has no ready endpoints"),
        "{f:?}"
    );
    assert_eq!(
        f[0].1,
        vec!["istio-sidecar-injector-asm-1-28-aks-istio-system"]
    );
}

/// Regression: against a crash-looping istiod the doctor hung on its syncz (the port-forward
/// never answered); now the proxy check says it could not read it, and the doctor finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashlooping_istiod_does_not_hang_the_doctor() {
    let mut s = healthy();
    s.kube.crashloop_revisions = vec!["asm-1-27".into()];
    let (code, doc) = tokio::time::timeout(std::time::Duration::from_secs(90), doctor(s))
        .await
        .expect("the doctor finishes");
    assert_eq!(code, 3, "{doc:#}");
    assert_eq!(check(&doc, "webhook-endpoints")["status"], "broken");
    assert_ne!(check(&doc, "proxy-sync")["status"], "ok", "{doc:#}");
}

fn shared_cm(rev: &str, mesh: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": format!("istio-shared-configmap-{rev}"), "namespace": "aks-istio-system"},
           "data": {"mesh": mesh}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_configmap_named_for_another_revision_is_named() {
    let mut s = healthy();
    s.kube.shared_mesh_config = None;
    s.kube
        .objects
        .push(shared_cm("asm-1-25", "accessLogFile: /dev/stdout\n"));
    let (code, doc) = doctor(s).await;
    assert_eq!(code, 3, "{doc:#}");
    assert_eq!(
        not_ok(&doc),
        vec![("shared-configmap".into(), "broken".into())]
    );
    let missing = findings(&doc, "shared-configmap", "broken");
    assert!(
        missing[0]
            .0
            .starts_with("istio-shared-configmap-asm-1-27 is missing"),
        "{missing:?}"
    );
    assert!(
        missing[0]
            .2
            .contains("kubectl get cm istio-shared-configmap-asm-1-25"),
        "{missing:?}"
    );
    let stray = findings(&doc, "shared-configmap", "warning");
    assert_eq!(
        stray[0].1,
        vec!["aks-istio-system/istio-shared-configmap-asm-1-25"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_configmap_missing_for_the_canary_revision_is_broken() {
    let mut s = healthy();
    s.cluster.revisions = vec!["asm-1-27".into(), "asm-1-28".into()];
    s.kube.shared_mesh_config = None;
    s.kube
        .objects
        .push(shared_cm("asm-1-27", "accessLogFile: /dev/stdout\n"));
    let (code, doc) = doctor(s).await;
    assert_eq!(code, 3, "{doc:#}");
    let missing = findings(&doc, "shared-configmap", "broken");
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert_eq!(
        missing[0].1,
        vec!["aks-istio-system/istio-shared-configmap-asm-1-28"]
    );
    // mid-upgrade: the support check says so instead of planning another upgrade
    let support = findings(&doc, "support", "ok");
    assert!(
        support
            .iter()
            .any(|f| f.0.starts_with("a canary upgrade is in progress")),
        "{support:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_configmap_with_a_field_the_add_on_rejects_is_broken() {
    let mut s = healthy();
    s.kube.shared_mesh_config = None;
    s.kube.objects.push(shared_cm(
        "asm-1-27",
        "accessLogFile: /dev/stdout\nconfigSources:\n- address: xds://mcp:15010\ndefaultConfig:\n  image:\n    imageType: distroless\n",
    ));
    let (code, doc) = doctor(s).await;
    assert_eq!(code, 3, "{doc:#}");
    assert_eq!(
        not_ok(&doc),
        vec![("shared-configmap".into(), "broken".into())]
    );
    let f = findings(&doc, "shared-configmap", "broken");
    assert!(
        f[0].0.contains("configSources, defaultConfig.image"),
        "{f:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_not_synced_are_named_per_istiod() {
    let mut s = healthy();
    s.kube.stale_revisions = vec!["asm-1-27".into()];
    let (code, doc) = doctor(s).await;
    assert_eq!(code, 3, "{doc:#}");
    assert_eq!(not_ok(&doc), vec![("proxy-sync".into(), "broken".into())]);
    let f = findings(&doc, "proxy-sync", "broken");
    assert!(!f.is_empty());
    assert!(
        f.iter()
            .all(|f| f.0.contains("(asm-1-27) are not SYNCED") && f.0.contains("istiod-asm-1-27-")),
        "{f:?}"
    );
    let pods: Vec<&String> = f.iter().flat_map(|f| &f.1).collect();
    assert!(
        pods.iter().any(|p| p.starts_with("payments/api-")),
        "{pods:?}"
    );
}

fn object(api_version: &str, kind: &str, ns: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": api_version, "kind": kind,
           "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_policy_in_istio_system_is_broken() {
    let mut s = healthy();
    s.kube.objects.extend([
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}}),
        object(
            "security.istio.io/v1",
            "AuthorizationPolicy",
            "istio-system",
            "deny-all",
            json!({}),
        ),
        object(
            "networking.istio.io/v1",
            "Sidecar",
            "istio-system",
            "default",
            json!({"egress": [{"hosts": ["./*"]}]}),
        ),
        // the same policy in the add-on's root namespace is fine
        object(
            "security.istio.io/v1",
            "PeerAuthentication",
            "aks-istio-system",
            "default",
            json!({"mtls": {"mode": "STRICT"}}),
        ),
    ]);
    let (code, doc) = doctor(s).await;
    assert_eq!(code, 3, "{doc:#}");
    assert_eq!(
        not_ok(&doc),
        vec![("policy-namespace".into(), "broken".into())]
    );
    let f = findings(&doc, "policy-namespace", "broken");
    let objects: Vec<&String> = f.iter().flat_map(|f| &f.1).collect();
    assert_eq!(
        objects,
        vec!["istio-system/deny-all", "istio-system/default"]
    );
    assert!(
        f[0].2
            .contains("kubectl delete authorizationpolicy deny-all -n istio-system"),
        "{f:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_rule_disabling_tls_toward_strict_workloads_is_broken() {
    let mut s = healthy();
    let disable = |host: &str| json!({"host": host, "trafficPolicy": {"tls": {"mode": "DISABLE"}}});
    s.kube.objects.extend([
        object("security.istio.io/v1", "PeerAuthentication", "aks-istio-system", "default",
               json!({"mtls": {"mode": "STRICT"}})),
        object("security.istio.io/v1", "PeerAuthentication", "orders", "default",
               json!({"mtls": {"mode": "PERMISSIVE"}})),
        object("networking.istio.io/v1", "DestinationRule", "frontend", "to-payments",
               disable("api.payments.svc.cluster.local")),
        // PERMISSIVE accepts plain text: no conflict
        object("networking.istio.io/v1", "DestinationRule", "frontend", "to-orders",
               disable("web.orders.svc.cluster.local")),
        // outside the cluster: not a mesh workload
        object("networking.istio.io/v1", "DestinationRule", "frontend", "to-partner",
               disable("api.partner.example.com")),
        object("networking.istio.io/v1", "ServiceEntry", "frontend", "partner",
               json!({"hosts": ["api.partner.example.com"], "resolution": "DNS", "ports": [{"number": 443, "name": "https", "protocol": "TLS"}]})),
    ]);
    let (code, doc) = doctor(s).await;
    assert_eq!(code, 3, "{doc:#}");
    assert_eq!(not_ok(&doc), vec![("mtls".into(), "broken".into())]);
    let f = findings(&doc, "mtls", "broken");
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].1, vec!["frontend/to-payments"]);
    assert!(
        f[0].2
            .starts_with("kubectl patch destinationrule to-payments -n frontend"),
        "{f:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_gateways_without_an_address_or_ready_pods_are_broken() {
    let mut s = healthy();
    s.kube.pending_load_balancers = vec!["Internal".into()];
    s.kube.unready_workloads =
        vec!["aks-istio-ingress/aks-istio-ingressgateway-external-asm-1-27".into()];
    let (code, doc) = doctor(s).await;
    assert_eq!(code, 3, "{doc:#}");
    assert_eq!(
        not_ok(&doc),
        vec![("ingress-gateways".into(), "broken".into())]
    );
    let f = findings(&doc, "ingress-gateways", "broken");
    assert_eq!(f.len(), 2, "{f:?}");
    assert!(
        f.iter().any(|f| f
            .0
            .contains("aks-istio-ingressgateway-internal has no external IP")),
        "{f:?}"
    );
    assert!(
        f.iter().any(|f| f
            .0
            .contains("aks-istio-ingressgateway-external has no ready pod")),
        "{f:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oomkilled_sidecars_are_a_warning_exit_4() {
    let mut s = healthy();
    s.kube.sidecar_restarts.push(SidecarRestart {
        workload: "payments/api".into(),
        reason: "OOMKilled".into(),
        restarts: 5,
    });
    let (code, doc) = doctor(s).await;
    assert_eq!(code, 4, "warnings only: {doc:#}");
    assert_eq!(doc["status"], "warning");
    assert_eq!(
        not_ok(&doc),
        vec![("sidecar-restarts".into(), "warning".into())]
    );
    let f = findings(&doc, "sidecar-restarts", "warning");
    assert_eq!(f.len(), 1, "one finding per workload: {f:?}");
    assert_eq!(f[0].1.len(), 3, "its three pods named: {f:?}");
    assert!(
        f[0].0.contains("up to 5 time(s)") && f[0].0.contains("last because OOMKilled"),
        "{f:?}"
    );
    assert!(
        f[0].2.contains("sidecar.istio.io/proxyMemoryLimit"),
        "{f:?}"
    );
    assert!(
        f[0].2
            .contains("kubectl rollout restart deployment/api -n payments"),
        "{f:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphaned_gateway_leases_are_named() {
    let mut s = healthy();
    for name in [
        "istio-gateway-deployment-asm-1-26",
        "istio-gateway-status-leader-asm-1-26",
    ] {
        s.kube.objects.push(
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": "aks-istio-system"},
            "spec": {"holderIdentity": "gone", "leaseDurationSeconds": 30}}),
        );
    }
    let (code, doc) = doctor(s).await;
    assert_eq!(code, 4, "{doc:#}");
    assert_eq!(
        not_ok(&doc),
        vec![("orphaned-leases".into(), "warning".into())]
    );
    let fixes: Vec<String> = findings(&doc, "orphaned-leases", "warning")
        .into_iter()
        .map(|f| f.2)
        .collect();
    assert_eq!(
        fixes,
        vec![
            "kubectl delete lease istio-gateway-deployment-asm-1-26 -n aks-istio-system",
            "kubectl delete lease istio-gateway-status-leader-asm-1-26 -n aks-istio-system"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_out_of_support_is_broken() {
    let mut s = healthy();
    s.cluster
        .mesh_revisions
        .retain(|r| r.revision != "asm-1-27");
    let (code, doc) = doctor(s).await;
    assert_eq!(code, 3, "{doc:#}");
    assert_eq!(check(&doc, "support")["status"], "broken");
    let f = findings(&doc, "support", "broken");
    assert!(f[0].0.starts_with("asm-1-27 is out of support"), "{f:?}");
    assert!(
        f[0].2.starts_with("asm-canary upgrade --to asm-1-28"),
        "{f:?}"
    );
}

/// AKS rolled a patch of asm-1-27 (`patch-rolled`): every sidecar still runs the old proxy
/// image. Doctor warns, names the workloads and the patch restart that renews them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_older_than_their_injector_are_a_warning_naming_patch_restart() {
    let (code, doc) = doctor(Scenario::builtin("patch-rolled").unwrap()).await;
    assert_eq!(code, 4, "warnings only: {doc:#}");
    assert_eq!(not_ok(&doc), vec![("patch-drift".into(), "warning".into())]);
    let f = findings(&doc, "patch-drift", "warning");
    assert_eq!(f.len(), 1, "one finding for asm-1-27: {f:?}");
    assert!(f[0].0.contains("on asm-1-27"), "{f:?}");
    assert!(f[0].0.contains("1.27.4"), "the injector's image: {f:?}");
    assert!(
        f[0].1.iter().any(|o| o.contains("payments/api")),
        "the workloads named: {f:?}"
    );
    assert!(f[0].2.contains("asm-canary patch-restart"), "{f:?}");
}

/// `registry-only`: REGISTRY_ONLY in the shared ConfigMap, payments/api calls api.stripe.com
/// with no ServiceEntry (its proxy blackholes it), orders/web a host a ServiceEntry lists. The
/// doctor reads the proxies' stats and names the workload, the host and the ServiceEntry that
/// lets it out; once that ServiceEntry exists (created through the API), the check clears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_only_egress_without_a_service_entry_is_broken_until_one_is_added() {
    let sim = TestSim::start("registry-only").await;
    let out = sim.run(&["doctor", "--output", "json"]).await;
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}); stderr: {}", stderr(&out)));
    assert_eq!(code(&out), 3, "{doc:#}");
    assert_eq!(doc["exit_code"], 3);
    assert_eq!(not_ok(&doc), vec![("egress".into(), "broken".into())]);
    let f = findings(&doc, "egress", "broken");
    assert_eq!(f.len(), 1, "only payments/api: {f:?}");
    assert_eq!(f[0].1, vec!["payments/api"]);
    assert!(
        f[0].0.contains("api.stripe.com") && f[0].0.contains("BlackHoleCluster"),
        "{f:?}"
    );
    assert!(!f[0].0.contains("api.partner.example.com"), "{f:?}");
    for line in [
        "kind: ServiceEntry",
        "  namespace: payments",
        "  - api.stripe.com",
        "  location: MESH_EXTERNAL",
        "  resolution: DNS",
        "  - number: 80",
    ] {
        assert!(f[0].2.lines().any(|l| l == line), "{line:?} in {}", f[0].2);
    }

    // the table names it too
    let text = sim.run(&["doctor"]).await;
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("[✗] REGISTRY_ONLY egress") && text.contains("payments/api calls hosts"),
        "{text}"
    );

    // the fix: the ServiceEntry, created through the API server
    let se: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
        "metadata": {"name": "api-stripe-com", "namespace": "payments"},
        "spec": {"hosts": ["api.stripe.com"], "location": "MESH_EXTERNAL", "resolution": "DNS",
                 "ports": [{"number": 80, "name": "http-80", "protocol": "HTTP"}]}}))
    .unwrap();
    let ar = kube::api::ApiResource {
        group: "networking.istio.io".into(),
        version: "v1".into(),
        api_version: "networking.istio.io/v1".into(),
        kind: "ServiceEntry".into(),
        plural: "serviceentries".into(),
    };
    kube::Api::<kube::api::DynamicObject>::namespaced_with(sim.kube().await, "payments", &ar)
        .create(&Default::default(), &se)
        .await
        .expect("ServiceEntry created");
    let out = sim.run(&["doctor", "--output", "json"]).await;
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(code(&out), 0, "{doc:#}");
    assert_eq!(check(&doc, "egress")["status"], "ok");
    // the proxy's counter still holds what it dropped before: named as fixed, not broken
    let ok = findings(&doc, "egress", "ok");
    assert!(
        ok.iter().any(|f| f
            .0
            .starts_with("dropped before a ServiceEntry listed the host")
            && f.0
                .contains("payments/api → api.stripe.com (ServiceEntry payments/api-stripe-com)")),
        "{ok:?}"
    );
}

/// Under ALLOW_ANY nothing is dropped: the same calls pass through, the check is ✓ and says
/// why (it reads no proxy then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_any_egress_is_ok() {
    let mut s = Scenario::builtin("registry-only").unwrap();
    s.kube.shared_mesh_config = Some("accessLogFile: /dev/stdout\n".into());
    let (code, doc) = doctor(s).await;
    assert_eq!(code, 0, "{doc:#}");
    let ok = findings(&doc, "egress", "ok");
    assert_eq!(ok.len(), 1, "{ok:?}");
    assert!(
        ok[0].0.starts_with("outboundTrafficPolicy is ALLOW_ANY"),
        "{ok:?}"
    );
}
