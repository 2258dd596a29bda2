//! How a volume is accessed: the CSI access modes and access types.

use crate::error::{Error, Result};

/// The CSI access modes (the numbers are the CSI enum values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AccessMode {
    /// One node, read-write (Kubernetes ReadWriteOnce).
    SingleNodeWriter = 1,
    /// One node, read-only.
    SingleNodeReaderOnly = 2,
    /// Many nodes, read-only (Kubernetes ReadOnlyMany).
    MultiNodeReaderOnly = 3,
    /// Many nodes, one of them writing.
    MultiNodeSingleWriter = 4,
    /// Many nodes, all writing (Kubernetes ReadWriteMany).
    MultiNodeMultiWriter = 5,
    /// One node and one workload (Kubernetes ReadWriteOncePod).
    SingleNodeSingleWriter = 6,
    /// One node, several workloads writing.
    SingleNodeMultiWriter = 7,
}

impl AccessMode {
    /// Parses the CSI enum value; `0` (UNKNOWN) and unknown numbers are invalid.
    pub fn from_csi(value: i32) -> Result<Self> {
        Ok(match value {
            1 => Self::SingleNodeWriter,
            2 => Self::SingleNodeReaderOnly,
            3 => Self::MultiNodeReaderOnly,
            4 => Self::MultiNodeSingleWriter,
            5 => Self::MultiNodeMultiWriter,
            6 => Self::SingleNodeSingleWriter,
            7 => Self::SingleNodeMultiWriter,
            other => {
                return Err(Error::invalid(
                    "volume_capability.access_mode",
                    format!("unknown or unset access mode {other}"),
                ));
            }
        })
    }

    /// The CSI enum value.
    pub fn to_csi(self) -> i32 {
        self as i32
    }

    /// Whether the mode forbids writes: publishes are forced read-only.
    pub fn is_read_only(self) -> bool {
        matches!(self, Self::SingleNodeReaderOnly | Self::MultiNodeReaderOnly)
    }

    /// Whether at most one publication (target path) may exist on a node.
    pub fn is_single_publication(self) -> bool {
        matches!(self, Self::SingleNodeSingleWriter)
    }
}

/// How the volume is presented to the workload.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AccessType {
    /// A mounted filesystem; `fs_type` is empty or the filesystem's own type.
    #[default]
    Mount,
    /// A raw block device: never offered by a parallel filesystem, refused on validation.
    Block,
}

/// One requested capability: access type, mount flags and access mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeCapability {
    /// Mount or block.
    pub access_type: AccessType,
    /// The requested filesystem type (empty when the CO does not care).
    pub fs_type: String,
    /// Mount options from the StorageClass `mountOptions`.
    pub mount_flags: Vec<String>,
    /// The access mode.
    pub access_mode: AccessMode,
}

impl VolumeCapability {
    /// Checks what every backend requires of a capability: a mount access type, a
    /// filesystem type that is empty or one of `fs_types`, and mount flags that only tune
    /// the filesystem ([`crate::mount_options`]). `field` names it in errors.
    pub fn check_supported(&self, field: &str, fs_types: &[&str]) -> Result<()> {
        if self.access_type == AccessType::Block {
            return Err(Error::invalid(
                field,
                "block access type is not supported by a parallel filesystem; use a mount volume",
            ));
        }
        if !self.fs_type.is_empty() && !fs_types.contains(&self.fs_type.as_str()) {
            return Err(Error::invalid(
                field,
                format!("fs_type {:?} is not one of {fs_types:?}", self.fs_type),
            ));
        }
        crate::mount_options::parse(&self.mount_flags)
            .map_err(|reason| Error::invalid(&format!("{field}.mount.mount_flags"), reason))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_modes_round_trip_and_unknown_is_invalid() {
        for v in 1..=7 {
            assert_eq!(AccessMode::from_csi(v).unwrap().to_csi(), v);
        }
        assert!(AccessMode::from_csi(0).is_err());
        assert!(AccessMode::from_csi(8).is_err());
        assert!(AccessMode::MultiNodeReaderOnly.is_read_only());
        assert!(!AccessMode::MultiNodeMultiWriter.is_read_only());
    }

    #[test]
    fn block_and_foreign_fs_types_are_refused() {
        let mut cap = VolumeCapability {
            access_type: AccessType::Block,
            fs_type: String::new(),
            mount_flags: vec![],
            access_mode: AccessMode::SingleNodeWriter,
        };
        let err = cap
            .check_supported("volume_capabilities[0]", &["lustre"])
            .unwrap_err();
        assert!(err.to_string().contains("volume_capabilities[0]"));
        cap.access_type = AccessType::Mount;
        assert!(cap.check_supported("c", &["lustre"]).is_ok());
        cap.fs_type = "ext4".into();
        assert!(cap.check_supported("c", &["lustre"]).is_err());
        cap.fs_type = String::new();
        cap.mount_flags = vec!["noatime".into(), "remount".into()];
        let err = cap.check_supported("c", &["lustre"]).unwrap_err();
        assert!(err.to_string().contains("c.mount.mount_flags"), "{err}");
    }
}
