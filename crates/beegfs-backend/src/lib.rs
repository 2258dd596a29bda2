//! BeeGFS 7 and 8 adapter of the pfs-csi ports
