//! Assembles a pfs-csi driver from configuration.
