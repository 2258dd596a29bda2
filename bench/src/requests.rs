//! The CSI requests the bench sends.

use std::collections::HashMap;
use std::path::Path;

use k8s_adapter::proto::csi::v1 as pb;
use pb::volume_capability::access_mode::Mode;

/// One gibibyte.
pub const GIB: i64 = 1 << 30;

/// ReadWriteMany as a mount.
pub fn rwx() -> pb::VolumeCapability {
    pb::VolumeCapability {
        access_mode: Some(pb::volume_capability::AccessMode {
            mode: Mode::MultiNodeMultiWriter as i32,
        }),
        access_type: Some(pb::volume_capability::AccessType::Mount(
            pb::volume_capability::MountVolume::default(),
        )),
    }
}

/// CreateVolume of `name` (1 GiB, RWX) with `parameters`.
pub fn create(name: &str, parameters: &HashMap<String, String>) -> pb::CreateVolumeRequest {
    pb::CreateVolumeRequest {
        name: name.to_string(),
        capacity_range: Some(pb::CapacityRange {
            required_bytes: GIB,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![rwx()],
        parameters: parameters.clone(),
        ..Default::default()
    }
}

/// DeleteVolume.
pub fn delete(volume_id: &str) -> pb::DeleteVolumeRequest {
    pb::DeleteVolumeRequest {
        volume_id: volume_id.to_string(),
        ..Default::default()
    }
}

/// NodeStageVolume of `volume` at `staging`.
pub fn stage(volume: &pb::Volume, staging: &Path) -> pb::NodeStageVolumeRequest {
    pb::NodeStageVolumeRequest {
        volume_id: volume.volume_id.clone(),
        staging_target_path: staging.display().to_string(),
        volume_capability: Some(rwx()),
        volume_context: volume.volume_context.clone(),
        ..Default::default()
    }
}

/// NodeUnstageVolume.
pub fn unstage(volume_id: &str, staging: &Path) -> pb::NodeUnstageVolumeRequest {
    pb::NodeUnstageVolumeRequest {
        volume_id: volume_id.to_string(),
        staging_target_path: staging.display().to_string(),
    }
}

/// NodePublishVolume of `volume` from `staging` to `target`, read-write.
pub fn publish(volume: &pb::Volume, staging: &Path, target: &Path) -> pb::NodePublishVolumeRequest {
    pb::NodePublishVolumeRequest {
        volume_id: volume.volume_id.clone(),
        staging_target_path: staging.display().to_string(),
        target_path: target.display().to_string(),
        volume_capability: Some(rwx()),
        readonly: false,
        volume_context: volume.volume_context.clone(),
        ..Default::default()
    }
}

/// NodeUnpublishVolume.
pub fn unpublish(volume_id: &str, target: &Path) -> pb::NodeUnpublishVolumeRequest {
    pb::NodeUnpublishVolumeRequest {
        volume_id: volume_id.to_string(),
        target_path: target.display().to_string(),
    }
}
