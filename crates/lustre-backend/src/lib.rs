//! Lustre (DDN EXAScaler) adapter of the pfs-csi ports
