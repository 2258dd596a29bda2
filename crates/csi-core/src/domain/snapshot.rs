//! Snapshots.

use std::fmt;
use std::time::SystemTime;

use crate::error::Result;

/// A snapshot id; like volume ids, backends give it meaning.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SnapshotId(String);

impl SnapshotId {
    /// Validates a raw id with the CSI id rules.
    pub fn parse(raw: &str) -> Result<Self> {
        super::volume::check_id("snapshot_id", raw)?;
        Ok(Self(raw.to_string()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// A snapshot as reported to the CO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The snapshot id.
    pub id: SnapshotId,
    /// The volume it was cut from.
    pub source_volume_id: String,
    /// When it was requested.
    pub creation_time: SystemTime,
    /// Archive size in bytes (0 while it is being cut).
    pub size_bytes: u64,
    /// False while the archive is still being written in the background.
    pub ready_to_use: bool,
}
