//! Per-object operation locks: a second concurrent operation on the same volume, snapshot or
//! name is refused with `Aborted` (the CSI way to say "in progress, retry").

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// A set of keys with an operation in progress.
#[derive(Debug, Default, Clone)]
pub struct OperationLocks {
    held: Arc<Mutex<HashSet<String>>>,
}

/// Holds a key until dropped.
#[derive(Debug)]
pub struct LockGuard {
    held: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl OperationLocks {
    /// Takes `key`, or fails with `Aborted` naming `what` when an operation holds it.
    pub fn try_lock(&self, key: String, what: &str) -> Result<LockGuard> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if !held.insert(key.clone()) {
            return Err(Error::Aborted(format!(
                "an operation on {what} is already in progress"
            )));
        }
        Ok(LockGuard {
            held: self.held.clone(),
            key,
        })
    }

    /// How many keys are held (for tests and metrics).
    pub fn held(&self) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn a_second_lock_is_aborted_until_the_first_is_dropped() {
        let locks = OperationLocks::default();
        let g = locks.try_lock("vol:a".into(), "volume a").unwrap();
        assert_eq!(
            locks
                .try_lock("vol:a".into(), "volume a")
                .unwrap_err()
                .code(),
            ErrorCode::Aborted
        );
        let _other = locks.try_lock("vol:b".into(), "volume b").unwrap();
        drop(g);
        assert!(locks.try_lock("vol:a".into(), "volume a").is_ok());
    }
}
