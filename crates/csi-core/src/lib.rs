//! The pfs-csi domain, ports and use cases: no gRPC, no Kubernetes
