//! Revision names (`asm-X-Y`) and the choice of an upgrade target.
//!
//! Order is numeric: `asm-1-9 < asm-1-28` (string order would say the opposite, a bug early
//! aks-preview code had). Targets come only from what ARM offers
//! (`meshUpgradeProfiles/istio.properties.upgrades`), never computed as "the next one".

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An add-on revision, `asm-<major>-<minor>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Revision {
    pub major: u32,
    pub minor: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not an add-on revision: expected asm-<major>-<minor>, e.g. asm-1-28")]
pub struct RevisionError {
    pub input: String,
}

impl Revision {
    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }

    /// The Istio minor version this revision ships, e.g. `1.28` for `asm-1-28`.
    pub fn istio_version(&self) -> String {
        format!("{}.{}", self.major, self.minor)
    }

    /// The revision of an Istio version string such as a proxy image tag
    /// (`1.27.3-distroless` or `1.27.3` → `asm-1-27`).
    pub fn from_istio_version(version: &str) -> Option<Self> {
        let mut parts = version.split(['.', '-']);
        let major = parse_num(parts.next()?)?;
        let minor = parse_num(parts.next()?)?;
        Some(Self { major, minor })
    }
}

fn parse_num(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl FromStr for Revision {
    type Err = RevisionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || RevisionError {
            input: s.to_string(),
        };
        let rest = s.strip_prefix("asm-").ok_or_else(err)?;
        let (major, minor) = rest.split_once('-').ok_or_else(err)?;
        Ok(Self {
            major: parse_num(major).ok_or_else(err)?,
            minor: parse_num(minor).ok_or_else(err)?,
        })
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "asm-{}-{}", self.major, self.minor)
    }
}

impl Serialize for Revision {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Revision {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Sorts revision names numerically; names that do not parse go last, in string order.
pub fn sort_revisions(names: &mut [String]) {
    names.sort_by(
        |a, b| match (a.parse::<Revision>(), b.parse::<Revision>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            (Ok(_), Err(_)) => std::cmp::Ordering::Less,
            (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
            (Err(_), Err(_)) => a.cmp(b),
        },
    );
}

/// Why no target could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error(
        "{requested} is not offered as an upgrade from {current} (offered: {}); pick one of those with --to",
        list(.offered)
    )]
    NotOffered {
        current: Revision,
        requested: Revision,
        offered: Vec<Revision>,
    },
    #[error(
        "{requested} is not newer than the installed {current}: downgrades are only possible as the rollback of a canary"
    )]
    NotNewer {
        current: Revision,
        requested: Revision,
    },
    #[error(
        "no upgrade is offered from {current}: it is the newest revision for this cluster's Kubernetes version"
    )]
    NoUpgrades { current: Revision },
}

fn list(revs: &[Revision]) -> String {
    if revs.is_empty() {
        return "none".to_string();
    }
    revs.iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Picks the upgrade target: the requested one if ARM offers it, else the newest offered.
/// Offered names that are not `asm-X-Y` are ignored (and logged).
pub fn choose_target(
    current: Revision,
    offered: &[String],
    requested: Option<Revision>,
) -> Result<Revision, TargetError> {
    let mut parsed: Vec<Revision> = offered
        .iter()
        .filter_map(|name| match name.parse::<Revision>() {
            Ok(rev) => Some(rev),
            Err(err) => {
                tracing::warn!(%err, "ignoring an offered upgrade that is not a revision name");
                None
            }
        })
        .collect();
    parsed.sort();
    parsed.dedup();
    match requested {
        Some(req) if req <= current => Err(TargetError::NotNewer {
            current,
            requested: req,
        }),
        Some(req) if parsed.contains(&req) => Ok(req),
        Some(req) => Err(TargetError::NotOffered {
            current,
            requested: req,
            offered: parsed,
        }),
        None => parsed
            .into_iter()
            .rev()
            .find(|r| *r > current)
            .ok_or(TargetError::NoUpgrades { current }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(s: &str) -> Revision {
        s.parse().expect("test revision")
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_and_displays() {
        assert_eq!(rev("asm-1-27"), Revision::new(1, 27));
        assert_eq!(Revision::new(1, 9).to_string(), "asm-1-9");
        assert_eq!(rev("asm-2-0").istio_version(), "2.0");
    }

    #[test]
    fn rejects_what_is_not_a_revision() {
        for bad in [
            "",
            "asm",
            "asm-1",
            "asm-1-",
            "asm--1",
            "asm-1-x",
            "ASM-1-27",
            "asm-1-27-1",
            "1-27",
            "asm-+1-2",
            "default",
            "prod",
        ] {
            let err = bad.parse::<Revision>().expect_err(bad);
            assert_eq!(err.input, bad);
            assert!(err.to_string().contains("asm-<major>-<minor>"));
        }
    }

    #[test]
    fn orders_numerically_not_lexically() {
        assert!(rev("asm-1-9") < rev("asm-1-28"));
        assert!(rev("asm-1-28") < rev("asm-2-0"));
        let mut v = names(&["asm-1-28", "weird", "asm-1-9", "asm-1-10"]);
        sort_revisions(&mut v);
        assert_eq!(v, names(&["asm-1-9", "asm-1-10", "asm-1-28", "weird"]));
    }

    #[test]
    fn serde_as_string() {
        let json = serde_json::to_string(&rev("asm-1-28")).unwrap();
        assert_eq!(json, "\"asm-1-28\"");
        let back: Revision = serde_json::from_str(&json).unwrap();
        assert_eq!(back, rev("asm-1-28"));
        assert!(serde_json::from_str::<Revision>("\"1.28\"").is_err());
    }

    #[test]
    fn from_istio_version_reads_image_tags() {
        assert_eq!(
            Revision::from_istio_version("1.27.3-distroless"),
            Some(rev("asm-1-27"))
        );
        assert_eq!(Revision::from_istio_version("1.28"), Some(rev("asm-1-28")));
        assert_eq!(Revision::from_istio_version("latest"), None);
    }

    #[test]
    fn newest_offered_is_the_default_target() {
        let offered = names(&["asm-1-28", "asm-1-29"]);
        assert_eq!(
            choose_target(rev("asm-1-27"), &offered, None),
            Ok(rev("asm-1-29"))
        );
        // Order in the response does not matter, nor does lexical order.
        let offered = names(&["asm-1-10", "asm-1-9"]);
        assert_eq!(
            choose_target(rev("asm-1-8"), &offered, None),
            Ok(rev("asm-1-10"))
        );
    }

    #[test]
    fn requested_target_must_be_offered_and_newer() {
        let offered = names(&["asm-1-28", "asm-1-29"]);
        assert_eq!(
            choose_target(rev("asm-1-27"), &offered, Some(rev("asm-1-28"))),
            Ok(rev("asm-1-28"))
        );
        let err = choose_target(rev("asm-1-27"), &offered, Some(rev("asm-1-30"))).unwrap_err();
        assert!(matches!(err, TargetError::NotOffered { .. }));
        assert!(
            err.to_string().contains("offered: asm-1-28, asm-1-29"),
            "{err}"
        );
        assert!(matches!(
            choose_target(rev("asm-1-27"), &offered, Some(rev("asm-1-26"))),
            Err(TargetError::NotNewer { .. })
        ));
        assert!(matches!(
            choose_target(rev("asm-1-27"), &offered, Some(rev("asm-1-27"))),
            Err(TargetError::NotNewer { .. })
        ));
    }

    #[test]
    fn nothing_offered_is_an_error() {
        assert_eq!(
            choose_target(rev("asm-1-29"), &[], None),
            Err(TargetError::NoUpgrades {
                current: rev("asm-1-29")
            })
        );
        // Garbage and older entries are not targets.
        let offered = names(&["nonsense", "asm-1-20"]);
        assert!(matches!(
            choose_target(rev("asm-1-29"), &offered, None),
            Err(TargetError::NoUpgrades { .. })
        ));
    }
}
