//! The sidecars' metrics page (`GET /metrics`, for a Prometheus to scrape): every Ready,
//! injected application pod serves traffic between scrapes ([`super::traffic`]) and calls its
//! external hosts on the routes the mesh gives them ([`super::egress`]).

use super::egress;
use super::istio::{INGRESS_NS, ISTIO_NS};
use super::resources::by_plural;
use super::state::KubeState;
use super::traffic::{Serving, workload_of};

/// The page, as of now.
pub fn page(kube: &KubeState) -> String {
    let (pods, _) = kube.store.list_raw(by_plural("pods"), None);
    let serving: Vec<Serving> = pods
        .iter()
        .filter_map(|pod| {
            let facts = pod.pod.as_ref()?;
            let app = ![ISTIO_NS, INGRESS_NS].contains(&&*pod.namespace);
            if !facts.ready || pod.deleting || !app {
                return None;
            }
            let revision = facts.revision.clone()?;
            let workload = workload_of(&pod.controller, &pod.name);
            // routes only for the pods that serve: each reads the mesh config and ServiceEntries
            let egress = egress::calls_of(kube, &pod.namespace, &workload)
                .map(|c| {
                    let route = egress::route(kube, &pod.namespace, &revision, c);
                    (c.clone(), route)
                })
                .collect();
            Some(Serving {
                namespace: pod.namespace.clone(),
                workload,
                revision,
                egress,
            })
        })
        .collect();
    kube.traffic.scrape(
        &serving,
        &kube.scenario.traffic,
        &kube.initial_revisions,
        kube.clock.scale(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Scenario;

    #[test]
    fn blackholed_egress_is_on_the_page_in_its_family_block() {
        let kube = KubeState::new(&Scenario::builtin("registry-only").unwrap());
        let page = page(&kube);
        assert!(
            page.lines().any(|l| l
                .starts_with("istio_requests_total{reporter=\"source\",source_workload=\"api\"")
                && l.contains("BlackHoleCluster")),
            "{page}"
        );
        // … in istio_requests_total's block: a metric family's series stay together
        let family: Vec<usize> = page
            .lines()
            .enumerate()
            .filter(|(_, l)| l.starts_with("istio_requests_total{"))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(
            family.last().unwrap() - family[0] + 1,
            family.len(),
            "{page}"
        );
    }
}
