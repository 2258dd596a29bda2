//! Usage statistics and health of a published volume.

/// Byte and inode usage of a volume (NodeGetVolumeStats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VolumeStats {
    /// Total bytes (the quota limit, else the filesystem size).
    pub bytes_total: u64,
    /// Bytes in use.
    pub bytes_used: u64,
    /// Bytes still available.
    pub bytes_available: u64,
    /// Total inodes, when known.
    pub inodes_total: Option<u64>,
    /// Inodes in use, when known.
    pub inodes_used: Option<u64>,
    /// Inodes available, when known.
    pub inodes_available: Option<u64>,
}

/// Whether a volume is healthy, with a message for the CO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeCondition {
    /// True when something is wrong with the volume.
    pub abnormal: bool,
    /// What is wrong, or that all is well.
    pub message: String,
}

impl VolumeCondition {
    /// A healthy volume.
    pub fn healthy() -> Self {
        Self {
            abnormal: false,
            message: "volume is healthy".into(),
        }
    }

    /// A volume with a problem described by `message`.
    pub fn abnormal(message: impl Into<String>) -> Self {
        Self {
            abnormal: true,
            message: message.into(),
        }
    }
}
