//! The Istio patch version each revision's injector injects now (data only, shared by the
//! add-on, its injector and the state; [`super::patch`] rolls one as AKS does).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::manifests::{self, istio_version};

/// Patches rolled per revision since the start (shared by the add-on and its injector).
#[derive(Clone, Default, Debug)]
pub struct Patches(Arc<Mutex<BTreeMap<String, u32>>>);

impl Patches {
    /// The Istio version `rev` runs now: AKS's shipped patch plus the patches rolled since.
    pub fn version(&self, rev: &str) -> String {
        let rolled = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(rev)
            .copied()
            .unwrap_or(0);
        bump(&istio_version(rev), rolled)
    }

    /// The proxy image the injector of `rev` injects now.
    pub fn proxy_image(&self, rev: &str) -> String {
        manifests::proxy_image_of(&self.version(rev))
    }

    pub(super) fn roll(&self, rev: &str) -> String {
        *self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(rev.to_string())
            .or_default() += 1;
        self.version(rev)
    }
}

/// `1.27.3` with `by` more patches: `1.27.4`.
fn bump(version: &str, by: u32) -> String {
    match version.rsplit_once('.') {
        Some((head, patch)) if by > 0 => {
            let p: u32 = patch.parse().unwrap_or(0);
            format!("{head}.{}", p + by)
        }
        _ => version.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rolled_patch_raises_only_the_patch_number() {
        assert_eq!(bump("1.27.3", 0), "1.27.3");
        assert_eq!(bump("1.27.3", 2), "1.27.5");
        let p = Patches::default();
        assert_eq!(p.version("asm-1-27"), "1.27.3");
        assert_eq!(p.roll("asm-1-27"), "1.27.4");
        assert_eq!(
            p.proxy_image("asm-1-27"),
            "mcr.microsoft.com/oss/istio/proxyv2:1.27.4-distroless"
        );
        assert_eq!(p.version("asm-1-28"), "1.28.1");
    }
}
