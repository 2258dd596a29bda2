//! Embedding the pfs-csi core in another Rust program, with a mocked filesystem backend
//! and mounter.
//!
//! The core knows nothing of gRPC or Kubernetes: a program hands it backends (anything that
//! implements `ports::FilesystemBackend`) and a mounter, and calls the use cases directly.
//! Here they are the mockall mocks the crate exports with the `mock` feature, which is also
//! how a unit test of code built on the core would look.
//!
//! Run it with `cargo run -p csi-core --example embed_with_mocks --features mock`.

use std::collections::BTreeMap;
use std::sync::Arc;

use csi_core::domain::{
    AccessMode, AccessType, CapacityRange, GIB, Parameters, RequestMetadata, Secrets,
    TopologyRequirement, Volume, VolumeCapability, VolumeId,
};
use csi_core::ports::{CreateVolumeRequest, MockFilesystemBackend, MockMounter, PublishSource};
use csi_core::service::{Backends, ControllerService, NodeService, PublishVolume};

#[tokio::main]
async fn main() -> Result<(), csi_core::Error> {
    // 1. A backend. A real program would build `lustre_backend` or `beegfs_backend` here;
    //    the mock is told what to answer instead.
    let mut backend = MockFilesystemBackend::new();
    backend.expect_name().return_const("demo");
    // Capabilities may name no filesystem type or this one.
    backend.expect_fs_types().return_const(&["demo"][..]);
    // The core routes requests by volume id: this backend owns ids starting with `demo:`.
    backend
        .expect_claim_volume_id()
        .returning(|id| id.as_str().starts_with("demo:").then_some(Ok(())));
    backend.expect_accepts_parameters().return_const(true);
    // What the filesystem does when asked to create a volume: here, answer with a volume
    // of the requested size (or 1 GiB when none is asked for).
    // The id a create will give is not known in advance here (the core then cannot hold
    // that volume's lock during the create; a real backend says it).
    backend.expect_planned_volume_id().return_const(None);
    backend.expect_create_volume().returning(|request| {
        Ok(Volume {
            id: VolumeId::parse(&format!("demo:{}", request.name))?,
            capacity_bytes: request.capacity.size_or(GIB),
            context: BTreeMap::new(),
            content_source: None,
            accessible_topology: Vec::new(),
        })
    });

    // 2. The controller use cases over the configured backends. The service validates
    //    requests, picks the backend, and refuses concurrent operations on one name.
    let controller = ControllerService::new(Backends::new(vec![Arc::new(backend)]));

    // 3. A CreateVolume request as the gRPC layer would build it from a CSI request:
    //    the reserved `csi.storage.k8s.io/` keys become metadata, the rest parameters.
    let (parameters, metadata): (Parameters, RequestMetadata) = Parameters::from_request(
        [
            (
                "csi.storage.k8s.io/pvc/name".to_string(),
                "data".to_string(),
            ),
            ("tier".to_string(), "fast".to_string()),
        ]
        .into(),
    );
    let request = CreateVolumeRequest {
        name: "pvc-1234".into(),
        capacity: CapacityRange::new(5 * GIB as i64, 0)?,
        capabilities: vec![VolumeCapability {
            access_type: AccessType::Mount,
            fs_type: String::new(),
            mount_flags: Vec::new(),
            access_mode: AccessMode::MultiNodeMultiWriter,
        }],
        parameters,
        metadata,
        secrets: Secrets::default(),
        content_source: None,
        topology: TopologyRequirement::default(),
    };

    let volume = controller.create_volume(request).await?;
    println!(
        "created volume {} with {} bytes",
        volume.id, volume.capacity_bytes
    );

    // 4. Errors carry a code that the gRPC layer maps to a status in one place.
    let err = controller
        .get_volume("other:1")
        .await
        .expect_err("no backend owns this id");
    println!("get_volume(\"other:1\") -> {:?}: {err}", err.code());

    // 5. The node use cases, with a mocked mounter too. The backend names what a publish
    //    binds: the volume's staging mount and the directory at or below it. The mounter
    //    checks that mount and binds in one step, and an unpublish takes off whatever is
    //    mounted at the target. The target directory itself is made and removed by the
    //    core, so it lives in a real (temporary) directory.
    let kubelet = tempfile::tempdir().map_err(|e| csi_core::Error::io("tempdir", "/tmp", e))?;
    let staging = kubelet.path().join("staging");
    let target = kubelet.path().join("target");
    let mut node_backend = MockFilesystemBackend::new();
    node_backend.expect_name().return_const("demo");
    node_backend.expect_fs_types().return_const(&["demo"][..]);
    node_backend
        .expect_claim_volume_id()
        .returning(|id| id.as_str().starts_with("demo:").then_some(Ok(())));
    let staged = staging.clone();
    node_backend.expect_publish_source().returning(move |_| {
        Ok(PublishSource {
            staged: staged.clone(),
            dir: staged.join("data"),
        })
    });
    let mut mounter = MockMounter::new();
    mounter
        .expect_bind_mount_below()
        .withf(|mount, source, _target, read_only| source.starts_with(mount) && !read_only)
        .times(1)
        .returning(|_, _, _, _| Ok(()));
    mounter
        .expect_unmount_all()
        .times(1)
        .returning(|_| Ok(true));
    let node = NodeService::new(
        "node-1".into(),
        Backends::new(vec![Arc::new(node_backend)]),
        Arc::new(mounter),
        None,
    )?;
    node.publish(PublishVolume {
        volume_id: volume.id.to_string(),
        staging_path: staging.display().to_string(),
        target_path: target.display().to_string(),
        capability: Some(VolumeCapability {
            access_type: AccessType::Mount,
            fs_type: String::new(),
            mount_flags: Vec::new(),
            access_mode: AccessMode::MultiNodeMultiWriter,
        }),
        read_only: false,
        context: BTreeMap::new(),
        secrets: Secrets::default(),
    })
    .await?;
    node.unpublish(&volume.id.to_string(), &target.display().to_string())
        .await?;
    println!(
        "published and unpublished {} at {} (the target is gone again: {})",
        volume.id,
        target.display(),
        !target.exists()
    );
    Ok(())
}
