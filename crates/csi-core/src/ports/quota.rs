//! Quota: the capacity limits a parallel filesystem enforces for a volume.

use async_trait::async_trait;

use crate::error::Result;

/// Limits for one quota id (a Lustre project, a BeeGFS group). `None`: unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaLimits {
    /// Hard block limit in bytes.
    pub bytes_hard: Option<u64>,
    /// Soft block limit in bytes.
    pub bytes_soft: Option<u64>,
    /// Hard inode limit.
    pub inodes_hard: Option<u64>,
    /// Soft inode limit.
    pub inodes_soft: Option<u64>,
}

/// Usage and limits of one quota id, as the filesystem reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaUsage {
    /// Bytes in use.
    pub bytes_used: u64,
    /// Hard byte limit; `None` when unlimited.
    pub bytes_limit: Option<u64>,
    /// Inodes in use.
    pub inodes_used: u64,
    /// Hard inode limit; `None` when unlimited.
    pub inodes_limit: Option<u64>,
}

/// Manages quota ids on one filesystem. Ids are numeric (project ids, gids).
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait QuotaManager: Send + Sync {
    /// Ties directory `dir` (a path on this filesystem) and everything created below it to
    /// `id`. Idempotent.
    async fn assign(&self, dir: &std::path::Path, id: u32) -> Result<()>;

    /// Sets the limits of `id`. Idempotent.
    async fn set_limits(&self, id: u32, limits: &QuotaLimits) -> Result<()>;

    /// The usage and limits of `id` (zero usage for an id nobody uses).
    async fn usage(&self, id: u32) -> Result<QuotaUsage>;

    /// Whether `id` has usage or limits on the filesystem (so it belongs to someone).
    async fn in_use(&self, id: u32) -> Result<bool>;

    /// Removes the limits of `id`. Not an error when it has none.
    async fn clear(&self, id: u32) -> Result<()>;
}
