//! The CSI Node service: thin handlers over [`NodeService`].
//!
//! NodeExpandVolume is unimplemented and not advertised: a volume is a
//! quota-limited directory, which ControllerExpandVolume grows on the spot
//! (`node_expansion_required` is always false).

use std::{path::Path, sync::Arc};

use csi_core::Error;
use csi_core::service::{NodeService, PublishVolume, StageVolume};
use tonic::{Request, Response, Status};

use crate::convert;
use crate::metrics::CsiMetrics;
use crate::proto::csi::v1::{self as csi, node_server, node_service_capability};
use crate::rpc_log::log_request;
use crate::status::to_status;

/// The RPC capabilities NodeGetCapabilities advertises.
pub const CAPABILITIES: [node_service_capability::rpc::Type; 4] = {
    use node_service_capability::rpc::Type;
    [
        Type::StageUnstageVolume,
        Type::GetVolumeStats,
        Type::VolumeCondition,
        Type::SingleNodeMultiWriter,
    ]
};

/// The Node service over the core's node use cases.
#[derive(Debug, Clone)]
pub struct CsiNode {
    service: Arc<NodeService>,
    metrics: Option<Arc<CsiMetrics>>,
}

impl CsiNode {
    /// A Node service driving `service`.
    pub fn new(service: Arc<NodeService>) -> Self {
        Self {
            service,
            metrics: None,
        }
    }

    /// The same service, exporting the volume usage NodeGetVolumeStats
    /// reports in `metrics` until NodeUnstageVolume.
    pub fn with_metrics(mut self, metrics: Arc<CsiMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }
}

/// Converts a core result into a gRPC reply.
fn reply<T>(result: csi_core::Result<T>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(to_status)
}

#[tonic::async_trait]
impl node_server::Node for CsiNode {
    async fn node_stage_volume(
        &self,
        request: Request<csi::NodeStageVolumeRequest>,
    ) -> Result<Response<csi::NodeStageVolumeResponse>, Status> {
        let request = request.into_inner();
        log_request(&request);
        reply(
            async {
                let stage = StageVolume {
                    capability: convert::optional_capability(
                        "volume_capability",
                        request.volume_capability.as_ref(),
                    )?,
                    context: convert::sorted(&request.volume_context),
                    secrets: convert::secrets(request.secrets),
                    volume_id: request.volume_id,
                    staging_path: request.staging_target_path,
                };
                self.service.stage(stage).await?;
                Ok(csi::NodeStageVolumeResponse {})
            }
            .await,
        )
    }

    async fn node_unstage_volume(
        &self,
        request: Request<csi::NodeUnstageVolumeRequest>,
    ) -> Result<Response<csi::NodeUnstageVolumeResponse>, Status> {
        let request = request.into_inner();
        log_request(&request);
        let result = self
            .service
            .unstage(&request.volume_id, &request.staging_target_path)
            .await;
        if let (Ok(()), Some(metrics)) = (&result, &self.metrics) {
            metrics.forget_volume(&request.volume_id);
        }
        reply(result.map(|()| csi::NodeUnstageVolumeResponse {}))
    }

    async fn node_publish_volume(
        &self,
        request: Request<csi::NodePublishVolumeRequest>,
    ) -> Result<Response<csi::NodePublishVolumeResponse>, Status> {
        let request = request.into_inner();
        log_request(&request);
        reply(
            async {
                let publish = PublishVolume {
                    capability: convert::optional_capability(
                        "volume_capability",
                        request.volume_capability.as_ref(),
                    )?,
                    read_only: request.readonly,
                    context: convert::sorted(&request.volume_context),
                    secrets: convert::secrets(request.secrets),
                    volume_id: request.volume_id,
                    staging_path: request.staging_target_path,
                    target_path: request.target_path,
                };
                self.service.publish(publish).await?;
                Ok(csi::NodePublishVolumeResponse {})
            }
            .await,
        )
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<csi::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<csi::NodeUnpublishVolumeResponse>, Status> {
        let request = request.into_inner();
        log_request(&request);
        reply(
            self.service
                .unpublish(&request.volume_id, &request.target_path)
                .await
                .map(|()| csi::NodeUnpublishVolumeResponse {}),
        )
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<csi::NodeGetVolumeStatsRequest>,
    ) -> Result<Response<csi::NodeGetVolumeStatsResponse>, Status> {
        let request = request.into_inner();
        log_request(&request);
        reply(
            async {
                // The spec answers NotFound when the volume is not at that
                // path; a relative path can be no path a volume was staged
                // or published at.
                if !request.volume_id.is_empty()
                    && !request.volume_path.is_empty()
                    && !Path::new(&request.volume_path).is_absolute()
                {
                    return Err(Error::NotFound(format!(
                        "volume_path {:?}: no volume is published at a relative path",
                        request.volume_path
                    )));
                }
                let (stats, condition) = self
                    .service
                    .stats(&request.volume_id, &request.volume_path)
                    .await?;
                if let Some(metrics) = &self.metrics {
                    metrics.record_volume_stats(&request.volume_id, &stats, &condition);
                }
                Ok(csi::NodeGetVolumeStatsResponse {
                    usage: convert::volume_usage_to_proto(&stats),
                    volume_condition: Some(convert::volume_condition_to_proto(&condition)),
                })
            }
            .await,
        )
    }

    async fn node_expand_volume(
        &self,
        request: Request<csi::NodeExpandVolumeRequest>,
    ) -> Result<Response<csi::NodeExpandVolumeResponse>, Status> {
        log_request(request.get_ref());
        Err(Status::unimplemented(
            "NodeExpandVolume is not implemented: ControllerExpandVolume grows the volume's quota \
             and nothing is left to do on the node (EXPAND_VOLUME is not advertised)",
        ))
    }

    async fn node_get_capabilities(
        &self,
        request: Request<csi::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<csi::NodeGetCapabilitiesResponse>, Status> {
        log_request(request.get_ref());
        let capabilities = CAPABILITIES
            .iter()
            .map(|kind| csi::NodeServiceCapability {
                r#type: Some(node_service_capability::Type::Rpc(
                    node_service_capability::Rpc {
                        r#type: *kind as i32,
                    },
                )),
            })
            .collect();
        Ok(Response::new(csi::NodeGetCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn node_get_info(
        &self,
        request: Request<csi::NodeGetInfoRequest>,
    ) -> Result<Response<csi::NodeGetInfoResponse>, Status> {
        log_request(request.get_ref());
        reply(
            self.service
                .node_info()
                .await
                .map(|info| csi::NodeGetInfoResponse {
                    node_id: info.node_id,
                    // No per-node limit: a directory of a mounted filesystem
                    // uses no attach slot.
                    max_volumes_per_node: 0,
                    // Always set (possibly empty): the plugin advertises
                    // VOLUME_ACCESSIBILITY_CONSTRAINTS.
                    accessible_topology: Some(convert::topology_to_proto(&info.topology)),
                }),
        )
    }
}
