//! The one place where generated `csi.v1` messages become `csi-core` domain
//! types, and domain types become messages again.
//!
//! Every conversion from a request validates what the wire format cannot:
//! a missing required message, an unset `oneof`, an access mode number the
//! spec does not define. Such errors are [`Error::InvalidArgument`] naming
//! the field as the request spells it, with its index in repeated fields
//! (`volume_capabilities[1].access_mode`).
//!
//! Numbers cross the boundary checked: CSI sizes are signed 64-bit, the core
//! counts in `u64`; a negative size is refused, a size beyond `i64::MAX`
//! (not reachable on any real filesystem) is reported as `i64::MAX`.

use std::collections::{BTreeMap, HashMap};

use csi_core::domain::{
    AccessMode, AccessType, CapacityRange, Parameters, RequestMetadata, Secrets, Snapshot,
    Topology, TopologyRequirement, Volume, VolumeCapability, VolumeCondition, VolumeContentSource,
    VolumeStats,
};
use csi_core::{Error, Result};

use crate::proto::csi::v1 as csi;
use csi::volume_capability::AccessType as ProtoAccessType;
use csi::volume_content_source::Type as ProtoSource;

/// A required message field: `Some` passes, `None` is InvalidArgument naming
/// `field`.
pub fn required<T>(field: &str, value: Option<T>) -> Result<T> {
    value.ok_or_else(|| Error::invalid(field, "is required"))
}

/// One volume capability; `field` names it in errors
/// (`volume_capabilities[0]`, `volume_capability`).
pub fn volume_capability(
    field: &str,
    capability: &csi::VolumeCapability,
) -> Result<VolumeCapability> {
    let mode = capability
        .access_mode
        .as_ref()
        .ok_or_else(|| Error::invalid(&format!("{field}.access_mode"), "is required"))?
        .mode;
    let access_mode = AccessMode::from_csi(mode).map_err(|_| {
        Error::invalid(
            &format!("{field}.access_mode.mode"),
            format!("{mode} is not a CSI access mode (UNKNOWN is 0, the defined modes are 1 to 7)"),
        )
    })?;
    let (access_type, fs_type, mount_flags) = match &capability.access_type {
        None => {
            return Err(Error::invalid(
                &format!("{field}.access_type"),
                "is required: set mount (block is not offered by a parallel filesystem)",
            ));
        }
        Some(ProtoAccessType::Block(_)) => (AccessType::Block, String::new(), Vec::new()),
        Some(ProtoAccessType::Mount(mount)) => {
            if !mount.volume_mount_group.is_empty() {
                return Err(Error::invalid(
                    &format!("{field}.mount.volume_mount_group"),
                    "is not supported: the driver does not advertise VOLUME_MOUNT_GROUP",
                ));
            }
            (
                AccessType::Mount,
                mount.fs_type.clone(),
                mount.mount_flags.clone(),
            )
        }
    };
    Ok(VolumeCapability {
        access_type,
        fs_type,
        mount_flags,
        access_mode,
    })
}

/// A repeated capability field; each entry is named `field[i]` in errors.
/// An empty list is returned as is: the use cases decide whether it is
/// allowed.
pub fn volume_capabilities(
    field: &str,
    capabilities: &[csi::VolumeCapability],
) -> Result<Vec<VolumeCapability>> {
    capabilities
        .iter()
        .enumerate()
        .map(|(i, cap)| volume_capability(&format!("{field}[{i}]"), cap))
        .collect()
}

/// An optional single capability (the node RPCs): `None` stays `None`, so
/// the use case reports the missing field in its own order of checks.
pub fn optional_capability(
    field: &str,
    capability: Option<&csi::VolumeCapability>,
) -> Result<Option<VolumeCapability>> {
    capability
        .map(|cap| volume_capability(field, cap))
        .transpose()
}

/// A domain capability as a message (for clients such as the CLI).
pub fn volume_capability_to_proto(capability: &VolumeCapability) -> csi::VolumeCapability {
    let access_type = match capability.access_type {
        AccessType::Block => ProtoAccessType::Block(csi::volume_capability::BlockVolume {}),
        AccessType::Mount => ProtoAccessType::Mount(csi::volume_capability::MountVolume {
            fs_type: capability.fs_type.clone(),
            mount_flags: capability.mount_flags.clone(),
            volume_mount_group: String::new(),
        }),
    };
    csi::VolumeCapability {
        access_mode: Some(csi::volume_capability::AccessMode {
            mode: capability.access_mode.to_csi(),
        }),
        access_type: Some(access_type),
    }
}

/// An optional capacity range; unset means "no requirement" (0, 0).
pub fn capacity_range(range: Option<&csi::CapacityRange>) -> Result<CapacityRange> {
    match range {
        None => Ok(CapacityRange::default()),
        Some(range) => CapacityRange::new(range.required_bytes, range.limit_bytes),
    }
}

/// A topology segment map.
pub fn topology(topology: &csi::Topology) -> Topology {
    sorted(&topology.segments)
}

/// A domain topology as a message.
pub fn topology_to_proto(topology: &Topology) -> csi::Topology {
    csi::Topology {
        segments: unsorted(topology),
    }
}

/// CreateVolume's optional accessibility requirements; unset is "none".
pub fn topology_requirement(requirement: Option<&csi::TopologyRequirement>) -> TopologyRequirement {
    match requirement {
        None => TopologyRequirement::default(),
        Some(req) => TopologyRequirement {
            requisite: req.requisite.iter().map(topology).collect(),
            preferred: req.preferred.iter().map(topology).collect(),
        },
    }
}

/// CreateVolume's optional content source. A source message without a
/// type, or with an empty id, is InvalidArgument.
pub fn content_source(
    source: Option<&csi::VolumeContentSource>,
) -> Result<Option<VolumeContentSource>> {
    let Some(source) = source else {
        return Ok(None);
    };
    match &source.r#type {
        None => Err(Error::invalid(
            "volume_content_source",
            "must name a snapshot or a volume",
        )),
        Some(ProtoSource::Snapshot(s)) if s.snapshot_id.is_empty() => Err(Error::invalid(
            "volume_content_source.snapshot.snapshot_id",
            "must not be empty",
        )),
        Some(ProtoSource::Volume(v)) if v.volume_id.is_empty() => Err(Error::invalid(
            "volume_content_source.volume.volume_id",
            "must not be empty",
        )),
        Some(ProtoSource::Snapshot(s)) => {
            Ok(Some(VolumeContentSource::Snapshot(s.snapshot_id.clone())))
        }
        Some(ProtoSource::Volume(v)) => Ok(Some(VolumeContentSource::Volume(v.volume_id.clone()))),
    }
}

/// A domain content source as a message.
pub fn content_source_to_proto(source: &VolumeContentSource) -> csi::VolumeContentSource {
    let r#type = match source {
        VolumeContentSource::Snapshot(id) => {
            ProtoSource::Snapshot(csi::volume_content_source::SnapshotSource {
                snapshot_id: id.clone(),
            })
        }
        VolumeContentSource::Volume(id) => {
            ProtoSource::Volume(csi::volume_content_source::VolumeSource {
                volume_id: id.clone(),
            })
        }
    };
    csi::VolumeContentSource {
        r#type: Some(r#type),
    }
}

/// A request's secrets, moved into the type that never prints them.
pub fn secrets(secrets: HashMap<String, String>) -> Secrets {
    Secrets::new(secrets.into_iter().collect())
}

/// A string map (volume context, raw parameters) in key order.
pub fn sorted(map: &HashMap<String, String>) -> BTreeMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// A domain map as a message map.
pub fn unsorted(map: &BTreeMap<String, String>) -> HashMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Request parameters split into backend parameters and the metadata the
/// provisioner adds (`csi.storage.k8s.io/pvc/name`...).
pub fn parameters(raw: &HashMap<String, String>) -> (Parameters, RequestMetadata) {
    Parameters::from_request(sorted(raw))
}

/// A byte or inode count as a CSI `int64`, saturating (see the module docs).
pub fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A domain volume as a message.
pub fn volume_to_proto(volume: &Volume) -> csi::Volume {
    csi::Volume {
        capacity_bytes: to_i64(volume.capacity_bytes),
        volume_id: volume.id.as_str().to_owned(),
        volume_context: unsorted(&volume.context),
        content_source: volume.content_source.as_ref().map(content_source_to_proto),
        accessible_topology: volume
            .accessible_topology
            .iter()
            .map(topology_to_proto)
            .collect(),
    }
}

/// A domain snapshot as a message, with its creation time.
pub fn snapshot_to_proto(snapshot: &Snapshot) -> csi::Snapshot {
    csi::Snapshot {
        size_bytes: to_i64(snapshot.size_bytes),
        snapshot_id: snapshot.id.as_str().to_owned(),
        source_volume_id: snapshot.source_volume_id.clone(),
        creation_time: Some(prost_types::Timestamp::from(snapshot.creation_time)),
        ready_to_use: snapshot.ready_to_use,
        group_snapshot_id: String::new(),
    }
}

/// A volume condition as a message.
pub fn volume_condition_to_proto(condition: &VolumeCondition) -> csi::VolumeCondition {
    csi::VolumeCondition {
        abnormal: condition.abnormal,
        message: condition.message.clone(),
    }
}

/// Volume usage as NodeGetVolumeStats entries: always BYTES, and INODES
/// when the backend knows any inode count.
pub fn volume_usage_to_proto(stats: &VolumeStats) -> Vec<csi::VolumeUsage> {
    use csi::volume_usage::Unit;
    let mut usage = vec![csi::VolumeUsage {
        available: to_i64(stats.bytes_available),
        total: to_i64(stats.bytes_total),
        used: to_i64(stats.bytes_used),
        unit: Unit::Bytes as i32,
    }];
    if stats.inodes_total.is_some()
        || stats.inodes_used.is_some()
        || stats.inodes_available.is_some()
    {
        usage.push(csi::VolumeUsage {
            available: to_i64(stats.inodes_available.unwrap_or(0)),
            total: to_i64(stats.inodes_total.unwrap_or(0)),
            used: to_i64(stats.inodes_used.unwrap_or(0)),
            unit: Unit::Inodes as i32,
        });
    }
    usage
}

#[cfg(test)]
mod tests {
    use super::*;
    use csi::volume_capability::{AccessMode as ProtoMode, BlockVolume, MountVolume};
    use csi_core::ErrorCode;
    use csi_core::domain::{SnapshotId, VolumeId};
    use proptest::prelude::*;
    use std::time::{Duration, SystemTime};

    fn mount_cap(mode: i32) -> csi::VolumeCapability {
        csi::VolumeCapability {
            access_mode: Some(ProtoMode { mode }),
            access_type: Some(ProtoAccessType::Mount(MountVolume {
                fs_type: "lustre".into(),
                mount_flags: vec!["noatime".into()],
                volume_mount_group: String::new(),
            })),
        }
    }

    /// The error's message, asserting it is InvalidArgument.
    fn invalid(result: Result<impl std::fmt::Debug>) -> String {
        let err = result.expect_err("conversion should fail");
        assert_eq!(err.code(), ErrorCode::InvalidArgument, "{err}");
        err.to_string()
    }

    #[test]
    fn a_mount_capability_keeps_its_fs_type_flags_and_mode() {
        let cap = volume_capability("volume_capability", &mount_cap(5)).unwrap();
        assert_eq!(cap.access_type, AccessType::Mount);
        assert_eq!(cap.fs_type, "lustre");
        assert_eq!(cap.mount_flags, vec!["noatime".to_string()]);
        assert_eq!(cap.access_mode, AccessMode::MultiNodeMultiWriter);
    }

    #[test]
    fn a_block_capability_becomes_block_for_the_core_to_refuse() {
        let cap = csi::VolumeCapability {
            access_mode: Some(ProtoMode { mode: 1 }),
            access_type: Some(ProtoAccessType::Block(BlockVolume {})),
        };
        let cap = volume_capability("c", &cap).unwrap();
        assert_eq!(cap.access_type, AccessType::Block);
    }

    #[test]
    fn missing_access_type_and_mode_are_named_with_their_index() {
        let mut no_type = mount_cap(1);
        no_type.access_type = None;
        let msg = invalid(volume_capabilities(
            "volume_capabilities",
            &[mount_cap(1), no_type],
        ));
        assert!(msg.contains("volume_capabilities[1].access_type"), "{msg}");

        let mut no_mode = mount_cap(1);
        no_mode.access_mode = None;
        let msg = invalid(volume_capabilities("volume_capabilities", &[no_mode]));
        assert!(msg.contains("volume_capabilities[0].access_mode"), "{msg}");
    }

    #[test]
    fn unknown_and_unset_access_modes_are_invalid_and_named() {
        for mode in [0, 8, -1, 1000] {
            let msg = invalid(volume_capability("volume_capability", &mount_cap(mode)));
            assert!(msg.contains("volume_capability.access_mode.mode"), "{msg}");
            assert!(msg.contains(&mode.to_string()), "{msg}");
        }
    }

    #[test]
    fn a_volume_mount_group_is_refused_rather_than_ignored() {
        let mut cap = mount_cap(1);
        if let Some(ProtoAccessType::Mount(m)) = &mut cap.access_type {
            m.volume_mount_group = "1000".into();
        }
        let msg = invalid(volume_capability("volume_capability", &cap));
        assert!(msg.contains("volume_mount_group"), "{msg}");
    }

    #[test]
    fn an_absent_optional_capability_stays_absent() {
        assert_eq!(
            optional_capability("volume_capability", None).unwrap(),
            None
        );
    }

    #[test]
    fn capacity_range_is_validated_by_the_core_and_unset_means_no_requirement() {
        assert_eq!(capacity_range(None).unwrap(), CapacityRange::default());
        let range = csi::CapacityRange {
            required_bytes: 10,
            limit_bytes: 20,
        };
        assert_eq!(
            capacity_range(Some(&range)).unwrap(),
            CapacityRange {
                required: 10,
                limit: 20
            }
        );
        let negative = csi::CapacityRange {
            required_bytes: -1,
            limit_bytes: 0,
        };
        assert!(invalid(capacity_range(Some(&negative))).contains("required_bytes"));
    }

    #[test]
    fn content_source_needs_a_type_and_an_id() {
        assert_eq!(content_source(None).unwrap(), None);
        let empty = csi::VolumeContentSource { r#type: None };
        assert!(invalid(content_source(Some(&empty))).contains("volume_content_source"));
        let no_id = content_source_to_proto(&VolumeContentSource::Snapshot(String::new()));
        assert!(invalid(content_source(Some(&no_id))).contains("snapshot.snapshot_id"));
        let no_vol = content_source_to_proto(&VolumeContentSource::Volume(String::new()));
        assert!(invalid(content_source(Some(&no_vol))).contains("volume.volume_id"));
    }

    #[test]
    fn secrets_keep_their_values_for_the_backend_but_never_print() {
        let s = secrets([("connAuth".to_string(), "s3cr3t-value".to_string())].into());
        assert_eq!(s.get("connAuth"), Some("s3cr3t-value"));
        assert!(!format!("{s:?}").contains("s3cr3t-value"));
    }

    #[test]
    fn reserved_parameters_become_metadata() {
        let raw: HashMap<String, String> = [
            (
                "csi.storage.k8s.io/pvc/name".to_string(),
                "data".to_string(),
            ),
            ("stripeCount".to_string(), "4".to_string()),
        ]
        .into();
        let (params, meta) = parameters(&raw);
        assert_eq!(meta.pvc_name.as_deref(), Some("data"));
        assert_eq!(params.get("stripeCount"), Some("4"));
        assert_eq!(params.as_map().len(), 1);
    }

    #[test]
    fn a_volume_becomes_a_message_with_its_context_source_and_topology() {
        let zone: Topology = [("zone".to_string(), "a".to_string())].into();
        let volume = Volume {
            id: VolumeId::parse("lustre:fs/vol").unwrap(),
            capacity_bytes: 5 << 30,
            context: [("k".to_string(), "v".to_string())].into(),
            content_source: Some(VolumeContentSource::Volume("lustre:fs/src".into())),
            accessible_topology: vec![zone.clone()],
        };
        let msg = volume_to_proto(&volume);
        assert_eq!(msg.volume_id, "lustre:fs/vol");
        assert_eq!(msg.capacity_bytes, 5 << 30);
        assert_eq!(msg.volume_context.get("k").map(String::as_str), Some("v"));
        assert_eq!(
            content_source(msg.content_source.as_ref()).unwrap(),
            volume.content_source
        );
        assert_eq!(msg.accessible_topology.len(), 1);
        assert_eq!(topology(&msg.accessible_topology[0]), zone);
    }

    #[test]
    fn a_snapshot_carries_its_creation_time_as_a_timestamp() {
        let created = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 250_000_000);
        let snap = Snapshot {
            id: SnapshotId::parse("snap-1").unwrap(),
            source_volume_id: "vol-1".into(),
            creation_time: created,
            size_bytes: 42,
            ready_to_use: false,
        };
        let msg = snapshot_to_proto(&snap);
        let ts = msg.creation_time.unwrap();
        assert_eq!((ts.seconds, ts.nanos), (1_700_000_000, 250_000_000));
        assert_eq!(msg.size_bytes, 42);
        assert!(!msg.ready_to_use);
        assert_eq!(msg.source_volume_id, "vol-1");
    }

    #[test]
    fn usage_has_inodes_only_when_known() {
        use csi::volume_usage::Unit;
        let mut stats = VolumeStats {
            bytes_total: 100,
            bytes_used: 30,
            bytes_available: 70,
            ..VolumeStats::default()
        };
        let usage = volume_usage_to_proto(&stats);
        assert_eq!(usage.len(), 1);
        assert_eq!(usage[0].unit, Unit::Bytes as i32);
        assert_eq!(
            (usage[0].total, usage[0].used, usage[0].available),
            (100, 30, 70)
        );

        stats.inodes_total = Some(10);
        stats.inodes_used = Some(4);
        stats.inodes_available = Some(6);
        let usage = volume_usage_to_proto(&stats);
        assert_eq!(usage.len(), 2);
        assert_eq!(usage[1].unit, Unit::Inodes as i32);
        assert_eq!(
            (usage[1].total, usage[1].used, usage[1].available),
            (10, 4, 6)
        );
    }

    proptest! {
        #[test]
        fn capability_conversion_round_trips(
            mode in 1i32..=7,
            fs_type in "[a-z]{0,8}",
            flags in prop::collection::vec("[a-z_=0-9]{1,12}", 0..4),
        ) {
            let cap = VolumeCapability {
                access_type: AccessType::Mount,
                fs_type,
                mount_flags: flags,
                access_mode: AccessMode::from_csi(mode).unwrap(),
            };
            let back = volume_capability("c", &volume_capability_to_proto(&cap)).unwrap();
            prop_assert_eq!(back, cap);
        }

        #[test]
        fn arbitrary_capabilities_never_panic(mode in any::<i32>(), has_mode: bool, kind in 0u8..3) {
            let cap = csi::VolumeCapability {
                access_mode: has_mode.then_some(ProtoMode { mode }),
                access_type: match kind {
                    0 => None,
                    1 => Some(ProtoAccessType::Block(BlockVolume {})),
                    _ => Some(ProtoAccessType::Mount(MountVolume::default())),
                },
            };
            match volume_capability("c", &cap) {
                Ok(c) => prop_assert_eq!(c.access_mode.to_csi(), mode),
                Err(e) => prop_assert_eq!(e.code(), ErrorCode::InvalidArgument),
            }
        }

        #[test]
        fn sizes_saturate_instead_of_wrapping(value: u64) {
            let converted = to_i64(value);
            prop_assert!(converted >= 0);
            if value <= i64::MAX as u64 {
                prop_assert_eq!(converted as u64, value);
            } else {
                prop_assert_eq!(converted, i64::MAX);
            }
        }

        #[test]
        fn topology_round_trips(segments in prop::collection::btree_map("[a-z./]{1,20}", "[a-z0-9-]{0,10}", 0..5)) {
            prop_assert_eq!(topology(&topology_to_proto(&segments)), segments);
        }
    }
}
