//! The CSI Controller service: thin handlers that convert the request,
//! call [`ControllerService`], and convert the answer back.
//!
//! The core validates and enforces the spec's rules; what is decided here
//! is only what depends on the wire format: which capabilities are
//! advertised, which RPCs are unimplemented, how a core answer fills the
//! response (ValidateVolumeCapabilities confirms the capabilities alone: it
//! checks neither volume context nor parameters, so it does not echo them,
//! GetSnapshot is a ListSnapshots by id that must find exactly one).

use std::sync::Arc;

use csi_core::Error;
use csi_core::service::{ControllerService, ValidationOutcome};
use tonic::{Request, Response, Status};

use crate::convert;
use crate::proto::csi::v1::{self as csi, controller_server, controller_service_capability};
use crate::rpc_log::log_request;
use crate::status::to_status;

/// The RPC capabilities ControllerGetCapabilities advertises. GetSnapshot
/// (alpha in CSI 1.12) is served but not advertised: conformance suites built
/// before 1.12 fail on a capability type they do not know.
pub const CAPABILITIES: [controller_service_capability::rpc::Type; 10] = {
    use controller_service_capability::rpc::Type;
    [
        Type::CreateDeleteVolume,
        Type::ListVolumes,
        Type::GetCapacity,
        Type::CreateDeleteSnapshot,
        Type::ListSnapshots,
        Type::CloneVolume,
        Type::ExpandVolume,
        Type::GetVolume,
        Type::VolumeCondition,
        Type::SingleNodeMultiWriter,
    ]
};

/// The Controller service over the core's controller use cases.
#[derive(Debug, Clone)]
pub struct CsiController {
    service: Arc<ControllerService>,
}

impl CsiController {
    /// A Controller service driving `service`.
    pub fn new(service: Arc<ControllerService>) -> Self {
        Self { service }
    }
}

/// Converts a core result into a gRPC reply.
fn reply<T>(result: csi_core::Result<T>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(to_status)
}

fn unimplemented(rpc: &str, why: &str) -> Status {
    Status::unimplemented(format!("{rpc} is not implemented: {why}"))
}

#[tonic::async_trait]
impl controller_server::Controller for CsiController {
    async fn create_volume(
        &self,
        request: Request<csi::CreateVolumeRequest>,
    ) -> Result<Response<csi::CreateVolumeResponse>, Status> {
        let request = request.into_inner();
        log_request(&request);
        reply(
            async {
                if !request.mutable_parameters.is_empty() {
                    return Err(Error::invalid(
                        "mutable_parameters",
                        "are not supported: the driver does not implement ControllerModifyVolume",
                    ));
                }
                let (parameters, metadata) = convert::parameters(&request.parameters);
                let create = csi_core::ports::CreateVolumeRequest {
                    capacity: convert::capacity_range(request.capacity_range.as_ref())?,
                    capabilities: convert::volume_capabilities(
                        "volume_capabilities",
                        &request.volume_capabilities,
                    )?,
                    content_source: convert::content_source(
                        request.volume_content_source.as_ref(),
                    )?,
                    topology: convert::topology_requirement(
                        request.accessibility_requirements.as_ref(),
                    ),
                    parameters,
                    metadata,
                    secrets: convert::secrets(request.secrets),
                    name: request.name,
                };
                let volume = self.service.create_volume(create).await?;
                Ok(csi::CreateVolumeResponse {
                    volume: Some(convert::volume_to_proto(&volume)),
                })
            }
            .await,
        )
    }

    async fn delete_volume(
        &self,
        request: Request<csi::DeleteVolumeRequest>,
    ) -> Result<Response<csi::DeleteVolumeResponse>, Status> {
        let request = request.into_inner();
        log_request(&request);
        let secrets = convert::secrets(request.secrets);
        reply(
            self.service
                .delete_volume(&request.volume_id, &secrets)
                .await
                .map(|()| csi::DeleteVolumeResponse {}),
        )
    }

    async fn controller_publish_volume(
        &self,
        request: Request<csi::ControllerPublishVolumeRequest>,
    ) -> Result<Response<csi::ControllerPublishVolumeResponse>, Status> {
        log_request(request.get_ref());
        Err(unimplemented(
            "ControllerPublishVolume",
            "parallel filesystem volumes need no attach step (PUBLISH_UNPUBLISH_VOLUME is not advertised)",
        ))
    }

    async fn controller_unpublish_volume(
        &self,
        request: Request<csi::ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<csi::ControllerUnpublishVolumeResponse>, Status> {
        log_request(request.get_ref());
        Err(unimplemented(
            "ControllerUnpublishVolume",
            "parallel filesystem volumes need no detach step (PUBLISH_UNPUBLISH_VOLUME is not advertised)",
        ))
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<csi::ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<csi::ValidateVolumeCapabilitiesResponse>, Status> {
        let request = request.into_inner();
        log_request(&request);
        reply(
            async {
                let capabilities = convert::volume_capabilities(
                    "volume_capabilities",
                    &request.volume_capabilities,
                )?;
                let outcome = self
                    .service
                    .validate_volume_capabilities(&request.volume_id, &capabilities)
                    .await?;
                Ok(match outcome {
                    ValidationOutcome::Confirmed => csi::ValidateVolumeCapabilitiesResponse {
                        // What was validated, nothing else: the spec reads an
                        // echoed context or parameter as checked.
                        confirmed: Some(csi::validate_volume_capabilities_response::Confirmed {
                            volume_capabilities: request.volume_capabilities,
                            ..Default::default()
                        }),
                        message: String::new(),
                    },
                    ValidationOutcome::Unsupported(message) => {
                        csi::ValidateVolumeCapabilitiesResponse {
                            confirmed: None,
                            message,
                        }
                    }
                })
            }
            .await,
        )
    }

    async fn list_volumes(
        &self,
        request: Request<csi::ListVolumesRequest>,
    ) -> Result<Response<csi::ListVolumesResponse>, Status> {
        let request = request.into_inner();
        log_request(&request);
        reply(
            self.service
                .list_volumes(request.max_entries, &request.starting_token)
                .await
                .map(|page| csi::ListVolumesResponse {
                    entries: page
                        .entries
                        .iter()
                        .map(|info| csi::list_volumes_response::Entry {
                            volume: Some(convert::volume_to_proto(&info.volume)),
                            status: Some(csi::list_volumes_response::VolumeStatus {
                                published_node_ids: Vec::new(),
                                volume_condition: Some(convert::volume_condition_to_proto(
                                    &info.condition,
                                )),
                            }),
                        })
                        .collect(),
                    next_token: page.next_token,
                }),
        )
    }

    async fn get_capacity(
        &self,
        request: Request<csi::GetCapacityRequest>,
    ) -> Result<Response<csi::GetCapacityResponse>, Status> {
        let request = request.into_inner();
        log_request(&request);
        reply(
            async {
                let capabilities = convert::volume_capabilities(
                    "volume_capabilities",
                    &request.volume_capabilities,
                )?;
                let topology = request
                    .accessible_topology
                    .as_ref()
                    .map(convert::topology)
                    .unwrap_or_default();
                let available = self
                    .service
                    .get_capacity(
                        &capabilities,
                        convert::sorted(&request.parameters),
                        &topology,
                    )
                    .await?;
                Ok(csi::GetCapacityResponse {
                    available_capacity: convert::to_i64(available),
                    maximum_volume_size: None,
                    minimum_volume_size: None,
                })
            }
            .await,
        )
    }

    async fn controller_get_capabilities(
        &self,
        request: Request<csi::ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<csi::ControllerGetCapabilitiesResponse>, Status> {
        log_request(request.get_ref());
        let capabilities = CAPABILITIES
            .iter()
            .map(|kind| csi::ControllerServiceCapability {
                r#type: Some(controller_service_capability::Type::Rpc(
                    controller_service_capability::Rpc {
                        r#type: *kind as i32,
                    },
                )),
            })
            .collect();
        Ok(Response::new(csi::ControllerGetCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn create_snapshot(
        &self,
        request: Request<csi::CreateSnapshotRequest>,
    ) -> Result<Response<csi::CreateSnapshotResponse>, Status> {
        let request = request.into_inner();
        log_request(&request);
        reply(
            self.service
                .create_snapshot(
                    &request.name,
                    &request.source_volume_id,
                    convert::sorted(&request.parameters),
                    convert::secrets(request.secrets),
                )
                .await
                .map(|snapshot| csi::CreateSnapshotResponse {
                    snapshot: Some(convert::snapshot_to_proto(&snapshot)),
                }),
        )
    }

    async fn delete_snapshot(
        &self,
        request: Request<csi::DeleteSnapshotRequest>,
    ) -> Result<Response<csi::DeleteSnapshotResponse>, Status> {
        let request = request.into_inner();
        log_request(&request);
        let secrets = convert::secrets(request.secrets);
        reply(
            self.service
                .delete_snapshot(&request.snapshot_id, &secrets)
                .await
                .map(|()| csi::DeleteSnapshotResponse {}),
        )
    }

    async fn list_snapshots(
        &self,
        request: Request<csi::ListSnapshotsRequest>,
    ) -> Result<Response<csi::ListSnapshotsResponse>, Status> {
        let request = request.into_inner();
        log_request(&request);
        // A filter that matches nothing (an unknown snapshot or volume id)
        // is an empty list, not an error: the core filters, never looks up.
        reply(
            self.service
                .list_snapshots(
                    &request.snapshot_id,
                    &request.source_volume_id,
                    request.max_entries,
                    &request.starting_token,
                )
                .await
                .map(|page| csi::ListSnapshotsResponse {
                    entries: page
                        .entries
                        .iter()
                        .map(|snapshot| csi::list_snapshots_response::Entry {
                            snapshot: Some(convert::snapshot_to_proto(snapshot)),
                        })
                        .collect(),
                    next_token: page.next_token,
                }),
        )
    }

    async fn get_snapshot(
        &self,
        request: Request<csi::GetSnapshotRequest>,
    ) -> Result<Response<csi::GetSnapshotResponse>, Status> {
        let request = request.into_inner();
        log_request(&request);
        reply(
            async {
                // An empty id would list every snapshot: check it first.
                let id = csi_core::domain::SnapshotId::parse(&request.snapshot_id)?;
                let page = self.service.list_snapshots(id.as_str(), "", 0, "").await?;
                let snapshot = page
                    .entries
                    .into_iter()
                    .find(|s| s.id == id)
                    .ok_or_else(|| Error::NotFound(format!("snapshot {id} does not exist")))?;
                Ok(csi::GetSnapshotResponse {
                    snapshot: Some(convert::snapshot_to_proto(&snapshot)),
                })
            }
            .await,
        )
    }

    async fn controller_expand_volume(
        &self,
        request: Request<csi::ControllerExpandVolumeRequest>,
    ) -> Result<Response<csi::ControllerExpandVolumeResponse>, Status> {
        let request = request.into_inner();
        log_request(&request);
        reply(
            async {
                let capacity = convert::capacity_range(request.capacity_range.as_ref())?;
                let secrets = convert::secrets(request.secrets);
                let outcome = self
                    .service
                    .expand_volume(&request.volume_id, capacity, &secrets)
                    .await?;
                Ok(csi::ControllerExpandVolumeResponse {
                    capacity_bytes: convert::to_i64(outcome.capacity_bytes),
                    node_expansion_required: outcome.node_expansion_required,
                })
            }
            .await,
        )
    }

    async fn controller_get_volume(
        &self,
        request: Request<csi::ControllerGetVolumeRequest>,
    ) -> Result<Response<csi::ControllerGetVolumeResponse>, Status> {
        let request = request.into_inner();
        log_request(&request);
        reply(
            self.service
                .get_volume(&request.volume_id)
                .await
                .map(|info| csi::ControllerGetVolumeResponse {
                    volume: Some(convert::volume_to_proto(&info.volume)),
                    status: Some(csi::controller_get_volume_response::VolumeStatus {
                        published_node_ids: Vec::new(),
                        volume_condition: Some(convert::volume_condition_to_proto(&info.condition)),
                    }),
                }),
        )
    }

    async fn controller_modify_volume(
        &self,
        request: Request<csi::ControllerModifyVolumeRequest>,
    ) -> Result<Response<csi::ControllerModifyVolumeResponse>, Status> {
        log_request(request.get_ref());
        Err(unimplemented(
            "ControllerModifyVolume",
            "volumes have no mutable parameters (MODIFY_VOLUME is not advertised)",
        ))
    }
}
