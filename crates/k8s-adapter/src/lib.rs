//! CSI gRPC services over a unix socket and the Kubernetes API side of pfs-csi
