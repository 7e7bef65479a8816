//! The managed cluster's ARM resource id, from `--cluster-id` or from its three parts.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.ContainerService/managedClusters/{name}`
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClusterId {
    pub subscription: String,
    pub resource_group: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterIdError {
    #[error(
        "{input:?} is not a managed cluster id: expected /subscriptions/<subscription>/resourceGroups/<group>/providers/Microsoft.ContainerService/managedClusters/<name> ({reason})"
    )]
    Malformed { input: String, reason: String },
    #[error("the {part} {value:?} is not valid: {reason}")]
    BadPart {
        part: &'static str,
        value: String,
        reason: &'static str,
    },
}

pub(crate) fn check_subscription(v: &str) -> Result<(), ClusterIdError> {
    let bad = |reason| ClusterIdError::BadPart {
        part: "subscription",
        value: v.to_string(),
        reason,
    };
    if v.is_empty() {
        return Err(bad("it is empty"));
    }
    if !v.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return Err(bad("a subscription id is a GUID (hex digits and dashes)"));
    }
    Ok(())
}

pub(crate) fn check_group(v: &str) -> Result<(), ClusterIdError> {
    let bad = |reason| ClusterIdError::BadPart {
        part: "resource group",
        value: v.to_string(),
        reason,
    };
    if v.is_empty() || v.len() > 90 {
        return Err(bad("it must be 1 to 90 characters"));
    }
    if v.ends_with('.') {
        return Err(bad("it must not end with a period"));
    }
    if !v
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')'))
    {
        return Err(bad(
            "only letters, digits, '-', '_', '.', '(' and ')' are allowed",
        ));
    }
    Ok(())
}

pub(crate) fn check_name(v: &str) -> Result<(), ClusterIdError> {
    let bad = |reason| ClusterIdError::BadPart {
        part: "cluster name",
        value: v.to_string(),
        reason,
    };
    let b = v.as_bytes();
    if b.is_empty() || b.len() > 63 {
        return Err(bad("it must be 1 to 63 characters"));
    }
    let ok_inner = b
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_');
    if !ok_inner || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return Err(bad(
            "letters, digits, '-' and '_', starting and ending with a letter or digit",
        ));
    }
    Ok(())
}

impl ClusterId {
    /// Builds an id from its parts, validating each.
    pub fn new(
        subscription: impl Into<String>,
        resource_group: impl Into<String>,
        name: impl Into<String>,
    ) -> Result<Self, ClusterIdError> {
        let id = Self {
            subscription: subscription.into(),
            resource_group: resource_group.into(),
            name: name.into(),
        };
        check_subscription(&id.subscription)?;
        check_group(&id.resource_group)?;
        check_name(&id.name)?;
        Ok(id)
    }

    /// The resource path, e.g. for `{endpoint}{path}?api-version=…`.
    pub fn path(&self) -> String {
        self.to_string()
    }
}

impl FromStr for ClusterId {
    type Err = ClusterIdError;

    /// Segment names are matched case-insensitively, as ARM does (`resourcegroups` appears in
    /// ids ARM itself returns).
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let malformed = |reason: &str| ClusterIdError::Malformed {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = input.trim();
        let Some(rest) = trimmed.strip_prefix('/') else {
            return Err(malformed("it must start with '/'"));
        };
        let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
        if parts.len() != 8 {
            return Err(malformed(&format!(
                "it has {} path segments, not 8",
                parts.len()
            )));
        }
        let expect = [
            (0, "subscriptions"),
            (2, "resourceGroups"),
            (4, "providers"),
            (5, "Microsoft.ContainerService"),
            (6, "managedClusters"),
        ];
        for (i, want) in expect {
            if !parts[i].eq_ignore_ascii_case(want) {
                return Err(malformed(&format!(
                    "segment {} is {:?}, expected {want:?}",
                    i + 1,
                    parts[i]
                )));
            }
        }
        ClusterId::new(parts[1], parts[3], parts[7])
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.ContainerService/managedClusters/{}",
            self.subscription, self.resource_group, self.name
        )
    }
}

impl Serialize for ClusterId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ClusterId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-sim/providers/Microsoft.ContainerService/managedClusters/aks-sim";

    #[test]
    fn round_trips() {
        let id: ClusterId = ID.parse().unwrap();
        assert_eq!(id.subscription, "00000000-0000-0000-0000-000000000000");
        assert_eq!(id.resource_group, "rg-sim");
        assert_eq!(id.name, "aks-sim");
        assert_eq!(id.to_string(), ID);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<ClusterId>(&json).unwrap(), id);
    }

    #[test]
    fn tolerates_case_and_trailing_slash() {
        let lower = ID.replace("resourceGroups", "resourcegroups").replace(
            "Microsoft.ContainerService/managedClusters",
            "microsoft.containerservice/ManagedClusters",
        );
        let id: ClusterId = format!("{lower}/").parse().unwrap();
        assert_eq!(id.to_string(), ID);
    }

    #[test]
    fn from_parts_validates() {
        assert_eq!(
            ClusterId::new("00000000-0000-0000-0000-000000000000", "rg-sim", "aks-sim")
                .unwrap()
                .to_string(),
            ID
        );
        let err = ClusterId::new("not a guid", "rg", "aks").unwrap_err();
        assert!(err.to_string().contains("subscription"), "{err}");
        let err = ClusterId::new("0000", "rg.", "aks").unwrap_err();
        assert!(err.to_string().contains("resource group"), "{err}");
        let err = ClusterId::new("0000", "rg", "-aks").unwrap_err();
        assert!(err.to_string().contains("cluster name"), "{err}");
        assert!(ClusterId::new("0000", "rg", "a".repeat(64)).is_err());
    }

    #[test]
    fn malformed_ids_say_what_is_wrong() {
        for (input, needle) in [
            ("subscriptions/x", "must start with '/'"),
            ("/subscriptions/0/resourceGroups/rg", "4 path segments"),
            (
                "/subscriptions/0/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm",
                "Microsoft.ContainerService",
            ),
        ] {
            let err = input.parse::<ClusterId>().unwrap_err();
            assert!(err.to_string().contains(needle), "{input}: {err}");
        }
    }
}
