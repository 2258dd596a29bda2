//! Volumes and their ids.

use std::collections::BTreeMap;
use std::fmt;

use crate::domain::Topology;
use crate::error::{Error, Result};

/// CSI limits volume and snapshot ids to 128 bytes.
pub const MAX_ID_BYTES: usize = 128;

/// A volume id as the CO sees it. Which backend owns it, and what it means, is for the
/// backends to parse; the core only checks what CSI requires of every id.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VolumeId(String);

impl VolumeId {
    /// Validates a raw id: not empty, at most [`MAX_ID_BYTES`], no NUL or control characters.
    pub fn parse(raw: &str) -> Result<Self> {
        check_id("volume_id", raw)?;
        Ok(Self(raw.to_string()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks the rules CSI sets for every id (`field` names it in the error).
pub(crate) fn check_id(field: &str, raw: &str) -> Result<()> {
    if raw.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if raw.len() > MAX_ID_BYTES {
        return Err(Error::invalid(
            field,
            format!(
                "{} bytes is longer than the {MAX_ID_BYTES} bytes CSI allows",
                raw.len()
            ),
        ));
    }
    if raw.chars().any(char::is_control) {
        return Err(Error::invalid(
            field,
            "must not contain NUL or control characters",
        ));
    }
    Ok(())
}

impl fmt::Display for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// What a new volume is filled from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeContentSource {
    /// Restore from a snapshot id.
    Snapshot(String),
    /// Clone an existing volume id.
    Volume(String),
}

/// A provisioned volume as reported to the CO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// The volume id (the PV's `volumeHandle`).
    pub id: VolumeId,
    /// Its capacity in bytes (0 = unknown or unlimited).
    pub capacity_bytes: u64,
    /// The volume context handed back to the node (PV `volumeAttributes`).
    pub context: BTreeMap<String, String>,
    /// What the volume was filled from.
    pub content_source: Option<VolumeContentSource>,
    /// Where the volume is reachable; empty: everywhere.
    pub accessible_topology: Vec<Topology>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_follow_the_csi_rules() {
        assert!(VolumeId::parse("").is_err());
        assert!(VolumeId::parse(&"a".repeat(129)).is_err());
        assert!(VolumeId::parse("a\0b").is_err());
        assert_eq!(
            VolumeId::parse(&"a".repeat(128)).unwrap().as_str().len(),
            128
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_accepts_only_short_clean_ids(s in "\\PC{0,200}") {
            match VolumeId::parse(&s) {
                Ok(id) => prop_assert!(id.as_str().len() <= MAX_ID_BYTES && !id.as_str().is_empty()),
                Err(e) => prop_assert!(e.to_string().contains("volume_id")),
            }
        }
    }
}
