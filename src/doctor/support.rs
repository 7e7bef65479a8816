//! The installed revision's support window, from the region's revision profile
//! (`meshRevisionProfiles/istio`), and the upgrade `plan` would pick.
//!
//! The profile lists the revisions AKS supports and the Kubernetes versions each runs on; it
//! carries no dates. What it does tell: a revision missing from it is out of support; the
//! oldest of three (n-2) leaves support about six weeks after the next one rolls out (AKS
//! `istio-support-policy.md`), so that is when to have upgraded.

use super::observe::Observed;
use crate::contract::doctor::Finding;
use crate::istio::Revision;

pub fn support_window(o: &Observed) -> Vec<Finding> {
    let mut out = Vec::new();
    match &o.support.profile {
        None => {}
        Some(Err(e)) => out.push(Finding::warning(
            format!("cannot read the revision profile (meshRevisionProfiles/istio): {e}"),
            vec![],
            "retry; az aks mesh get-revisions --location <location> shows the same profile",
        )),
        Some(Ok(profile)) => {
            let mut offered: Vec<Revision> = profile
                .properties
                .mesh_revisions
                .iter()
                .filter_map(|r| r.revision.as_deref()?.parse().ok())
                .collect();
            offered.sort();
            for rev in &o.installed {
                out.push(revision_support(o, profile, &offered, rev));
            }
        }
    }
    out.extend(next_upgrade(o));
    out
}

fn revision_support(
    o: &Observed,
    profile: &crate::azure::profiles::MeshRevisionProfile,
    offered: &[Revision],
    rev: &str,
) -> Finding {
    let list: Vec<String> = offered.iter().map(|r| r.to_string()).collect();
    let Some(entry) = profile.revision(rev) else {
        let lowest = list.first().cloned().unwrap_or_else(|| "<revision>".into());
        return Finding::broken(
            format!(
                "{rev} is out of support: the region supports {} only",
                list.join(", ")
            ),
            vec![rev.to_string()],
            format!(
                "asm-canary upgrade --to {lowest} (an unsupported revision must move to the lowest supported one)"
            ),
        );
    };
    if let Some(k8s) = &o.kubernetes_version
        && !entry.supports_kubernetes(k8s)
    {
        return Finding::broken(
            format!(
                "{rev} does not support Kubernetes {k8s} (it runs on {})",
                entry.kubernetes_versions().join(", ")
            ),
            vec![rev.to_string()],
            "asm-canary plan shows the upgrades offered; upgrade the mesh to one that supports this Kubernetes version",
        );
    }
    let newer = rev
        .parse::<Revision>()
        .map(|r| offered.iter().filter(|o| **o > r).count())
        .unwrap_or(0);
    Finding::ok(if newer >= 2 {
        format!(
            "{rev} is supported, as the oldest of the supported revisions ({}): it leaves support about six weeks after the next revision rolls out (the profile gives no date); upgrade before then",
            list.join(", ")
        )
    } else {
        format!(
            "{rev} is supported ({newer} newer revision(s): {})",
            list.join(", ")
        )
    })
}

/// What `plan` would pick, or why there is nothing to pick.
fn next_upgrade(o: &Observed) -> Option<Finding> {
    match &o.support.upgrade {
        None if o.installed.len() > 1 => Some(Finding::ok(format!(
            "a canary upgrade is in progress ({}): asm-canary status, or asm-canary rollback --from-cluster",
            o.installed.join(", ")
        ))),
        None => None,
        Some(Ok(choice)) => Some(Finding::ok(match &choice.target {
            Ok(t) => format!(
                "asm-canary plan would upgrade to {t} ({}; offered: {})",
                choice.reason(),
                choice.offered.join(", ")
            ),
            Err(e) => format!("no upgrade to plan: {e}"),
        })),
        Some(Err(e)) => Some(Finding::warning(
            format!("cannot read the upgrades offered (meshUpgradeProfiles/istio): {e}"),
            vec![],
            "asm-canary plan",
        )),
    }
}
