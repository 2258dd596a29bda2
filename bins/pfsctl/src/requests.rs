//! Building CSI requests from parsed flags.

use std::collections::HashMap;

use k8s_adapter::proto::csi::v1::{
    CapacityRange, CreateVolumeRequest, GetCapacityRequest, ListSnapshotsRequest,
    ListVolumesRequest, NodePublishVolumeRequest, NodeStageVolumeRequest, Topology,
    TopologyRequirement, ValidateVolumeCapabilitiesRequest, VolumeCapability, VolumeContentSource,
    volume_capability, volume_content_source,
};

use crate::{
    cli::{
        AccessModeArg, CapabilityArgs, ContextArgs, CreateVolumeArgs, KeyValue,
        SingleCapabilityArgs,
    },
    exit::CliError,
    parse::{TopologyArg, into_map},
};

/// Collects `pairs` into a map, a repeated key being a usage error.
pub fn map_of(pairs: &[KeyValue], flag: &str) -> Result<HashMap<String, String>, CliError> {
    into_map(pairs, flag).map_err(CliError::Usage)
}

/// The proto access mode for a flag value.
pub fn access_mode(mode: AccessModeArg) -> volume_capability::access_mode::Mode {
    use volume_capability::access_mode::Mode;
    match mode {
        AccessModeArg::SingleNodeWriter => Mode::SingleNodeWriter,
        AccessModeArg::SingleNodeReaderOnly => Mode::SingleNodeReaderOnly,
        AccessModeArg::MultiNodeReaderOnly => Mode::MultiNodeReaderOnly,
        AccessModeArg::MultiNodeSingleWriter => Mode::MultiNodeSingleWriter,
        AccessModeArg::MultiNodeMultiWriter => Mode::MultiNodeMultiWriter,
        AccessModeArg::SingleNodeSingleWriter => Mode::SingleNodeSingleWriter,
        AccessModeArg::SingleNodeMultiWriter => Mode::SingleNodeMultiWriter,
    }
}

/// One capability: `mode` with a mount (fs type, flags) or block access type.
fn capability(
    mode: AccessModeArg,
    fs_type: Option<&str>,
    mount_flags: &[String],
    block: bool,
) -> VolumeCapability {
    let access_type = if block {
        volume_capability::AccessType::Block(volume_capability::BlockVolume {})
    } else {
        volume_capability::AccessType::Mount(volume_capability::MountVolume {
            fs_type: fs_type.unwrap_or_default().to_owned(),
            mount_flags: mount_flags.to_vec(),
            volume_mount_group: String::new(),
        })
    };
    VolumeCapability {
        access_mode: Some(volume_capability::AccessMode {
            mode: access_mode(mode) as i32,
        }),
        access_type: Some(access_type),
    }
}

/// One capability per access mode asked for.
pub fn capabilities(args: &CapabilityArgs) -> Vec<VolumeCapability> {
    args.access_modes
        .iter()
        .map(|mode| {
            capability(
                *mode,
                args.fs_type.as_deref(),
                &args.mount_flags,
                args.block,
            )
        })
        .collect()
}

/// The single capability of a node call.
pub fn single_capability(args: &SingleCapabilityArgs) -> VolumeCapability {
    capability(
        args.access_mode,
        args.fs_type.as_deref(),
        &args.mount_flags,
        args.block,
    )
}

/// A capacity range; `None` when neither bound is given.
pub fn capacity_range(size: Option<i64>, limit: Option<i64>) -> Option<CapacityRange> {
    (size.is_some() || limit.is_some()).then(|| CapacityRange {
        required_bytes: size.unwrap_or(0),
        limit_bytes: limit.unwrap_or(0),
    })
}

fn topology(arg: &TopologyArg) -> Topology {
    Topology {
        segments: arg.0.clone(),
    }
}

/// The CreateVolume request for `volume create`.
pub fn create_volume(args: &CreateVolumeArgs) -> Result<CreateVolumeRequest, CliError> {
    if let (Some(size), Some(limit)) = (args.size, args.limit)
        && limit < size
    {
        return Err(CliError::Usage(format!(
            "--limit ({limit} bytes) is smaller than --size ({size} bytes)"
        )));
    }
    let source = match (&args.from_snapshot, &args.from_volume) {
        (Some(snapshot_id), _) => Some(volume_content_source::Type::Snapshot(
            volume_content_source::SnapshotSource {
                snapshot_id: snapshot_id.clone(),
            },
        )),
        (None, Some(volume_id)) => Some(volume_content_source::Type::Volume(
            volume_content_source::VolumeSource {
                volume_id: volume_id.clone(),
            },
        )),
        (None, None) => None,
    };
    let accessibility = (!args.requisite_topology.is_empty()
        || !args.preferred_topology.is_empty())
    .then(|| TopologyRequirement {
        requisite: args.requisite_topology.iter().map(topology).collect(),
        preferred: args.preferred_topology.iter().map(topology).collect(),
    });
    Ok(CreateVolumeRequest {
        name: args.name.clone(),
        capacity_range: capacity_range(args.size, args.limit),
        volume_capabilities: capabilities(&args.capabilities),
        parameters: map_of(&args.params, "--param")?,
        secrets: map_of(&args.secrets.secrets, "--secret")?,
        volume_content_source: source.map(|r#type| VolumeContentSource {
            r#type: Some(r#type),
        }),
        accessibility_requirements: accessibility,
        mutable_parameters: map_of(&args.mutable_params, "--mutable-param")?,
    })
}

/// The ValidateVolumeCapabilities request for `volume validate`.
pub fn validate_volume(
    volume_id: &str,
    caps: &CapabilityArgs,
    context: &[KeyValue],
    params: &[KeyValue],
    secrets: &[KeyValue],
) -> Result<ValidateVolumeCapabilitiesRequest, CliError> {
    Ok(ValidateVolumeCapabilitiesRequest {
        volume_id: volume_id.to_owned(),
        volume_context: map_of(context, "--context")?,
        volume_capabilities: capabilities(caps),
        parameters: map_of(params, "--param")?,
        secrets: map_of(secrets, "--secret")?,
        mutable_parameters: HashMap::new(),
    })
}

/// The GetCapacity request for `capacity`.
pub fn get_capacity(args: &crate::cli::CapacityArgs) -> Result<GetCapacityRequest, CliError> {
    Ok(GetCapacityRequest {
        volume_capabilities: args
            .access_modes
            .iter()
            .map(|mode| capability(*mode, args.fs_type.as_deref(), &args.mount_flags, false))
            .collect(),
        parameters: map_of(&args.params, "--param")?,
        accessible_topology: args.topology.as_ref().map(topology),
    })
}

/// One ListVolumes page request.
pub fn list_volumes(max_entries: i32, starting_token: &str) -> ListVolumesRequest {
    ListVolumesRequest {
        max_entries,
        starting_token: starting_token.to_owned(),
    }
}

/// One ListSnapshots page request.
pub fn list_snapshots(
    snapshot_id: Option<&str>,
    source_volume: Option<&str>,
    max_entries: i32,
    starting_token: &str,
    secrets: HashMap<String, String>,
) -> ListSnapshotsRequest {
    ListSnapshotsRequest {
        max_entries,
        starting_token: starting_token.to_owned(),
        source_volume_id: source_volume.unwrap_or_default().to_owned(),
        snapshot_id: snapshot_id.unwrap_or_default().to_owned(),
        secrets,
    }
}

/// The NodeStageVolume request for `node stage`.
pub fn node_stage(
    volume_id: &str,
    staging_path: &str,
    capability: &SingleCapabilityArgs,
    contexts: &ContextArgs,
    secrets: &[KeyValue],
) -> Result<NodeStageVolumeRequest, CliError> {
    Ok(NodeStageVolumeRequest {
        volume_id: volume_id.to_owned(),
        publish_context: map_of(&contexts.publish_context, "--publish-context")?,
        staging_target_path: staging_path.to_owned(),
        volume_capability: Some(single_capability(capability)),
        secrets: map_of(secrets, "--secret")?,
        volume_context: map_of(&contexts.context, "--context")?,
    })
}

/// Where and how `node publish` publishes.
#[derive(Debug, Clone, Copy)]
pub struct PublishTarget<'a> {
    /// Staging directory, if the plugin stages.
    pub staging_path: Option<&'a str>,
    /// Target path.
    pub target_path: &'a str,
    /// Read-only publish.
    pub read_only: bool,
}

/// The NodePublishVolume request for `node publish`.
pub fn node_publish(
    volume_id: &str,
    target: PublishTarget<'_>,
    capability: &SingleCapabilityArgs,
    contexts: &ContextArgs,
    secrets: &[KeyValue],
) -> Result<NodePublishVolumeRequest, CliError> {
    Ok(NodePublishVolumeRequest {
        volume_id: volume_id.to_owned(),
        publish_context: map_of(&contexts.publish_context, "--publish-context")?,
        staging_target_path: target.staging_path.unwrap_or_default().to_owned(),
        target_path: target.target_path.to_owned(),
        volume_capability: Some(single_capability(capability)),
        readonly: target.read_only,
        secrets: map_of(secrets, "--secret")?,
        volume_context: map_of(&contexts.context, "--context")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command, VolumeCommand};
    use clap::Parser;

    fn create_args(extra: &[&str]) -> CreateVolumeArgs {
        let argv = ["pfsctl", "volume", "create", "pvc-1"].iter().chain(extra);
        match Cli::parse_from(argv).command {
            Command::Volume(VolumeCommand::Create(args)) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn create_request_carries_every_flag() {
        let req = create_volume(&create_args(&[
            "--size",
            "1Gi",
            "--limit",
            "2Gi",
            "--param",
            "configName=exa1",
            "--secret",
            "token=s3",
            "--access-mode",
            "rwx",
            "--fs-type",
            "lustre",
            "--mount-flag",
            "flock",
            "--from-snapshot",
            "snap-1",
            "--requisite-topology",
            "zone=a",
            "--preferred-topology",
            "zone=b",
        ]))
        .unwrap();
        assert_eq!(req.name, "pvc-1");
        let range = req.capacity_range.unwrap();
        assert_eq!(
            (range.required_bytes, range.limit_bytes),
            (1 << 30, 2 << 30)
        );
        assert_eq!(req.parameters["configName"], "exa1");
        assert_eq!(req.secrets["token"], "s3");
        let cap = &req.volume_capabilities[0];
        assert_eq!(
            cap.access_mode.unwrap().mode,
            volume_capability::access_mode::Mode::MultiNodeMultiWriter as i32
        );
        let Some(volume_capability::AccessType::Mount(mount)) = &cap.access_type else {
            panic!("not a mount");
        };
        assert_eq!(
            (mount.fs_type.as_str(), mount.mount_flags.as_slice()),
            ("lustre", &["flock".to_owned()][..])
        );
        let Some(volume_content_source::Type::Snapshot(snap)) =
            req.volume_content_source.unwrap().r#type
        else {
            panic!("not a snapshot source");
        };
        assert_eq!(snap.snapshot_id, "snap-1");
        let topo = req.accessibility_requirements.unwrap();
        assert_eq!(topo.requisite[0].segments["zone"], "a");
        assert_eq!(topo.preferred[0].segments["zone"], "b");
    }

    #[test]
    fn create_without_sizes_or_topology_leaves_them_unset() {
        let req = create_volume(&create_args(&[])).unwrap();
        assert!(req.capacity_range.is_none());
        assert!(req.accessibility_requirements.is_none());
        assert!(req.volume_content_source.is_none());
        assert_eq!(req.volume_capabilities.len(), 1);
    }

    #[test]
    fn block_flag_asks_for_a_block_volume() {
        let req = create_volume(&create_args(&["--block"])).unwrap();
        assert!(matches!(
            req.volume_capabilities[0].access_type,
            Some(volume_capability::AccessType::Block(_))
        ));
    }

    #[test]
    fn limit_below_size_and_repeated_keys_are_usage_errors() {
        let err = create_volume(&create_args(&["--size", "2Gi", "--limit", "1Gi"])).unwrap_err();
        assert!(
            matches!(err, CliError::Usage(ref m) if m.contains("--limit")),
            "{err}"
        );
        let err = create_volume(&create_args(&["--param", "a=1", "--param", "a=2"])).unwrap_err();
        assert!(
            matches!(err, CliError::Usage(ref m) if m.contains("--param a")),
            "{err}"
        );
    }
}
