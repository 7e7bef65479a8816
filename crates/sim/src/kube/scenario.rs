//! The Kubernetes side of a scenario: the cluster's starting workloads and the faults of the
//! add-on and the workload controllers. Every field has a default (the `healthy` cluster).

use serde::{Deserialize, Serialize};

/// Namespaces, workloads, tags and faults. Times are simulated seconds.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubeScenario {
    /// Application namespaces and their workloads.
    pub namespaces: Vec<NamespaceShape>,
    /// Extra generated namespaces (the `large` scenario).
    pub generated: Option<GeneratedShape>,
    /// Revision tags at start, written as `istioctl tag set` writes them.
    pub tags: Vec<TagShape>,
    /// `data.mesh` of `istio-shared-configmap-<rev>` for the installed revisions (`None`: no ConfigMap).
    pub shared_mesh_config: Option<String>,
    /// Number of nodes (one DaemonSet pod per node).
    pub nodes: u32,
    /// Seconds from a pod's creation to Ready.
    pub pod_ready_seconds: f64,
    /// Seconds from an istiod pod's creation to Ready.
    pub istiod_ready_seconds: f64,
    /// Seconds from a proxy's connection to its first ACK of every type.
    pub proxy_ack_seconds: f64,
    /// Revisions whose istiod never becomes ready (CrashLoopBackOff).
    pub crashloop_revisions: Vec<String>,
    /// Revisions whose proxies never acknowledge what istiod sends.
    pub stale_revisions: Vec<String>,
    /// Revisions that inject `istio-proxy` as a native sidecar (an init container).
    pub native_sidecar_revisions: Vec<String>,
    /// Workloads (`namespace/name`) whose pods created after start never become ready.
    pub never_ready: Vec<String>,
    /// Only pods injected by these revisions get stuck (empty: every new pod).
    pub never_ready_revisions: Vec<String>,
    /// istiod replicas per revision.
    pub istiod_replicas: u32,
    /// The application traffic the sidecars report (the metrics a Prometheus scrapes).
    pub traffic: super::traffic::TrafficShape,
    /// Patches AKS rolled after the workloads started, per revision (`asm-1-27: 1`: istiod,
    /// the injector and the gateways at 1.27.4, the sidecars still at 1.27.3).
    pub rolled_patches: std::collections::BTreeMap<String, u32>,
    /// Objects the cluster holds at start besides the workloads (Istio policy, Leases,
    /// ConfigMaps, webhooks, namespaces), each with `apiVersion`, `kind` and `metadata`.
    /// Stored as given once the cluster has settled, without admission: as objects created
    /// before a webhook existed (a shared ConfigMap the add-on would now reject).
    pub objects: Vec<serde_json::Value>,
    /// Ingress gateway modes (`External`, `Internal`) whose LoadBalancer the cloud never
    /// gives an address (`status.loadBalancer` stays empty).
    pub pending_load_balancers: Vec<String>,
    /// Workloads (`namespace/name`, a Deployment's name for its pods) whose pods never turn
    /// ready, from the start on (the starting cluster's pods included).
    pub unready_workloads: Vec<String>,
    /// Sidecars that were killed and restarted before the start: their pods' `istio-proxy`
    /// status shows the restarts and the last termination's reason.
    pub sidecar_restarts: Vec<SidecarRestart>,
    /// Cluster-wide requests the caller's RBAC refuses (`403 Forbidden`, as for a user whose
    /// Roles are all namespaced): a list or watch of a namespaced resource across all
    /// namespaces. The same request in one namespace is answered.
    pub cluster_wide_forbidden: Vec<ClusterWideForbidden>,
}

/// The cluster-wide `verbs` (`list`, `watch`) refused on `resource` (a plural, e.g.
/// `deployments`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterWideForbidden {
    pub resource: String,
    pub verbs: Vec<String>,
}

impl Default for ClusterWideForbidden {
    fn default() -> Self {
        Self {
            resource: String::new(),
            verbs: vec!["list".into(), "watch".into()],
        }
    }
}

/// The verbs [`ClusterWideForbidden`] may name.
pub const FORBIDDEN_VERBS: &[&str] = &["list", "watch"];

impl KubeScenario {
    /// Whether the caller may not `verb` the namespaced resource `plural` cluster-wide.
    pub fn forbids_cluster_wide(&self, plural: &str, verb: &str) -> bool {
        self.cluster_wide_forbidden
            .iter()
            .any(|f| f.resource == plural && f.verbs.iter().any(|v| v == verb))
    }
}

/// The `istio-proxy` containers of a workload's pods restarted `restarts` times, last for
/// `reason` (`OOMKilled`, `Error`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SidecarRestart {
    /// `namespace/name` of the workload (a Deployment's name for its pods).
    pub workload: String,
    pub reason: String,
    pub restarts: u32,
}

impl Default for SidecarRestart {
    fn default() -> Self {
        Self {
            workload: String::new(),
            reason: "OOMKilled".into(),
            restarts: 3,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NamespaceShape {
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    /// Labels put on the namespace only after its pods exist, as `kubectl label ns` run on a
    /// live namespace: `istio.io/rev` here leaves the pods without a sidecar until they are
    /// recreated (the "labelled but never restarted" namespace).
    pub late_labels: std::collections::BTreeMap<String, String>,
    pub deployments: Vec<WorkloadShape>,
    pub statefulsets: Vec<WorkloadShape>,
    pub daemonsets: Vec<WorkloadShape>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkloadShape {
    pub name: String,
    pub replicas: u32,
    pub image: String,
    /// `progressDeadlineSeconds` for Deployments.
    pub progress_deadline_seconds: Option<u32>,
    /// StatefulSet/DaemonSet `updateStrategy.type` (`RollingUpdate` or `OnDelete`).
    pub update_strategy: Option<String>,
    pub paused: bool,
}

impl Default for WorkloadShape {
    fn default() -> Self {
        Self {
            name: String::new(),
            replicas: 2,
            image: "mcr.microsoft.com/azurelinux/base/nginx:1.25".into(),
            progress_deadline_seconds: None,
            update_strategy: None,
            paused: false,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GeneratedShape {
    pub namespaces: u32,
    pub deployments_per_namespace: u32,
    pub replicas: u32,
    /// The `istio.io/rev` label of the generated namespaces.
    pub revision_label: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TagShape {
    pub name: String,
    pub revision: String,
}

fn ns(name: &str, rev: &str) -> NamespaceShape {
    let mut labels = std::collections::BTreeMap::new();
    if !rev.is_empty() {
        labels.insert("istio.io/rev".to_string(), rev.to_string());
    }
    NamespaceShape {
        name: name.into(),
        labels,
        ..Default::default()
    }
}

fn wl(name: &str, replicas: u32) -> WorkloadShape {
    WorkloadShape {
        name: name.into(),
        replicas,
        ..Default::default()
    }
}

impl Default for KubeScenario {
    fn default() -> Self {
        let mut payments = ns("payments", "prod");
        payments.deployments = vec![wl("api", 3), wl("worker", 2)];
        let mut orders = ns("orders", "prod");
        orders.deployments = vec![wl("web", 2)];
        orders.statefulsets = vec![WorkloadShape {
            image: "mcr.microsoft.com/azurelinux/base/postgres:16".into(),
            ..wl("db", 2)
        }];
        let mut frontend = ns("frontend", "prod");
        frontend.deployments = vec![wl("web", 3)];
        let mut logging = ns("logging", "prod");
        logging.daemonsets = vec![WorkloadShape {
            image: "mcr.microsoft.com/oss/fluent/fluent-bit:3.1".into(),
            ..wl("node-agent", 0)
        }];
        Self {
            namespaces: vec![payments, orders, frontend, logging],
            generated: None,
            tags: vec![TagShape {
                name: "prod".into(),
                revision: "asm-1-27".into(),
            }],
            shared_mesh_config: Some(
                "accessLogFile: /dev/stdout\noutboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n"
                    .into(),
            ),
            nodes: 3,
            pod_ready_seconds: 3.0,
            istiod_ready_seconds: 5.0,
            proxy_ack_seconds: 2.0,
            crashloop_revisions: Vec::new(),
            stale_revisions: Vec::new(),
            native_sidecar_revisions: vec!["asm-1-29".into()],
            never_ready: Vec::new(),
            never_ready_revisions: Vec::new(),
            istiod_replicas: 2,
            traffic: Default::default(),
            rolled_patches: Default::default(),
            objects: Vec::new(),
            pending_load_balancers: Vec::new(),
            unready_workloads: Vec::new(),
            sidecar_restarts: Vec::new(),
            cluster_wide_forbidden: Vec::new(),
        }
    }
}

impl KubeScenario {
    /// The team marks `namespace` as its canary with the namespace label
    /// `asm-canary/canary=true` (a label like any other to the API server).
    fn mark_canary(&mut self, namespace: &str) {
        if let Some(n) = self.namespaces.iter_mut().find(|n| n.name == namespace) {
            n.labels.insert("asm-canary/canary".into(), "true".into());
        }
    }

    /// What a cluster that once ran asm-1-25 and followed upstream Istio's docs keeps (the
    /// rest of `legacy-labels`): a namespace labelled for the tag but never restarted, a tag
    /// still on asm-1-25, that revision's shared ConfigMap and gateway Leases, a mesh-wide
    /// PeerAuthentication in `istio-system`, and sidecars of orders/web killed for memory.
    fn legacy_leftovers(&mut self) {
        let mut billing = NamespaceShape {
            name: "billing".into(),
            ..Default::default()
        };
        billing
            .late_labels
            .insert("istio.io/rev".into(), "prod".into());
        billing.deployments = vec![wl("invoices", 1)];
        self.namespaces.push(billing);
        self.tags.push(TagShape {
            name: "canary".into(),
            revision: "asm-1-25".into(),
        });
        let sys = "aks-istio-system";
        let lease = |name: String| {
            serde_json::json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": sys},
                "spec": {"holderIdentity": "istiod-asm-1-25-0", "leaseDurationSeconds": 30, "leaseTransitions": 0}})
        };
        self.objects.extend([
            lease("istio-gateway-deployment-asm-1-25".into()),
            lease("istio-gateway-status-leader-asm-1-25".into()),
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "istio-shared-configmap-asm-1-25", "namespace": sys},
                "data": {"mesh": "accessLogFile: /dev/stdout\n"}}),
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": "istio-system", "labels": {"kubernetes.io/metadata.name": "istio-system"}}}),
            serde_json::json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                "metadata": {"name": "default", "namespace": "istio-system"},
                "spec": {"mtls": {"mode": "STRICT"}}}),
        ]);
        self.sidecar_restarts.push(SidecarRestart {
            workload: "orders/web".into(),
            reason: "OOMKilled".into(),
            restarts: 3,
        });
    }

    /// Egress locked down: `REGISTRY_ONLY` in the shared ConfigMap; payments/api calls
    /// api.stripe.com with no ServiceEntry (blackholed), orders/web a host a ServiceEntry in
    /// orders lists.
    fn registry_only(&mut self) {
        self.shared_mesh_config = Some(
            "accessLogFile: /dev/stdout\noutboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n".into(),
        );
        let call = |workload: &str, host: &str| super::egress::calls::EgressCall {
            workload: workload.into(),
            host: host.into(),
            ..Default::default()
        };
        self.traffic.egress = vec![
            call("payments/api", "api.stripe.com"),
            call("orders/web", "api.partner.example.com"),
        ];
        self.objects.push(serde_json::json!({
            "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
            "metadata": {"name": "partner-api", "namespace": "orders"},
            "spec": {"hosts": ["api.partner.example.com"], "location": "MESH_EXTERNAL", "resolution": "DNS",
                     "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}]}}));
    }

    /// The Kubernetes side of a built-in scenario (`healthy` for names that only concern ARM).
    pub fn builtin(name: &str) -> Self {
        let mut s = Self::default();
        let new_revisions = vec!["asm-1-28".to_string(), "asm-1-29".to_string()];
        match name {
            "stale-proxies" => s.stale_revisions = new_revisions,
            "crashloop-istiod" => s.crashloop_revisions = new_revisions,
            "slow-rollout" => s.pod_ready_seconds = 30.0,
            "stuck-rollout" => {
                // payments/api's new pods never turn ready; its deadline is short
                s.never_ready = vec!["payments/api".into()];
                s.never_ready_revisions = new_revisions;
                if let Some(d) = s.namespaces[0].deployments.first_mut() {
                    d.progress_deadline_seconds = Some(60);
                }
            }
            "legacy-labels" => {
                let mut legacy = NamespaceShape {
                    name: "legacy".into(),
                    ..Default::default()
                };
                legacy
                    .labels
                    .insert("istio-injection".into(), "enabled".into());
                legacy.deployments = vec![wl("app", 1)];
                let mut orphan = ns("inventory", "asm-1-25");
                orphan.deployments = vec![wl("app", 1)];
                s.namespaces.push(legacy);
                s.namespaces.push(orphan);
                s.legacy_leftovers();
            }
            // payments/api's pods injected by a new revision answer 5 % 503s …
            "bad-canary" => {
                s.traffic.faults.push(super::traffic::TrafficFault {
                    workload: "payments/api".into(),
                    error_rate: 0.05,
                    ..Default::default()
                });
                s.mark_canary("payments");
            }
            // … or take five times as long (p99 600 ms instead of 120 ms).
            "slow-canary" => {
                s.traffic.faults.push(super::traffic::TrafficFault {
                    workload: "payments/api".into(),
                    latency_factor: 5.0,
                    ..Default::default()
                });
                s.mark_canary("payments");
            }
            "patch-rolled" => {
                s.rolled_patches.insert("asm-1-27".into(), 1);
            }
            "registry-only" => s.registry_only(),
            "native-sidecars" => {
                s.native_sidecar_revisions =
                    vec!["asm-1-27".into(), "asm-1-28".into(), "asm-1-29".into()];
            }
            "large" => {
                s.generated = Some(GeneratedShape {
                    namespaces: 200,
                    deployments_per_namespace: 10,
                    replicas: 5,
                    revision_label: "prod".into(),
                });
                s.namespaces.clear();
            }
            _ => {}
        }
        s
    }
}
