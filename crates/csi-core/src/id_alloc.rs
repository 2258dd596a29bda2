//! Allocation of numeric quota ids (Lustre project ids, BeeGFS group ids) for new volumes.
//!
//! An id is drawn at random from a range, checked free by the caller (no record of ours
//! holds it and the filesystem shows no usage or limit for it), and reserved in-process
//! until the caller has written the record that owns it, so concurrent CreateVolume calls
//! never receive the same id.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};

use rand::Rng;

use crate::error::{Error, Result};

/// An inclusive range of ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// Smallest id.
    pub min: u32,
    /// Largest id.
    pub max: u32,
}

impl IdRange {
    /// Validates `min <= max`.
    pub fn new(min: u32, max: u32) -> Result<Self> {
        if min > max {
            return Err(Error::InvalidArgument(format!(
                "id range {min}..={max} is empty (min > max)"
            )));
        }
        Ok(Self { min, max })
    }
}

/// Hands out ids, remembering the ones reserved but not yet recorded.
#[derive(Debug, Default, Clone)]
pub struct IdAllocator {
    reserved: Arc<Mutex<HashSet<u32>>>,
}

/// An id reserved for one caller; released when dropped (by then its record must hold it).
#[derive(Debug)]
pub struct IdReservation {
    id: u32,
    reserved: Arc<Mutex<HashSet<u32>>>,
}

impl IdReservation {
    /// The reserved id.
    pub fn id(&self) -> u32 {
        self.id
    }
}

impl Drop for IdReservation {
    fn drop(&mut self) {
        self.reserved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

impl IdAllocator {
    /// Reserves `wanted` as it is: `AlreadyExists` when another request holds it now.
    /// (Whether it is free on the filesystem is the caller's check.)
    pub fn reserve(&self, wanted: u32) -> Result<IdReservation> {
        let mut reserved = self.reserved.lock().unwrap_or_else(|e| e.into_inner());
        if !reserved.insert(wanted) {
            return Err(Error::Aborted(format!(
                "id {wanted} is being assigned by another request"
            )));
        }
        Ok(IdReservation {
            id: wanted,
            reserved: self.reserved.clone(),
        })
    }

    /// Draws up to `attempts` random ids from `range`, returning the first that is not
    /// reserved and that `is_free` accepts. `ResourceExhausted` when none is found.
    pub async fn allocate<F, Fut>(
        &self,
        range: IdRange,
        attempts: u32,
        mut is_free: F,
    ) -> Result<IdReservation>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<bool>>,
    {
        for _ in 0..attempts.max(1) {
            let candidate = rand::rng().random_range(range.min..=range.max);
            let Ok(reservation) = self.reserve(candidate) else {
                continue;
            };
            if is_free(candidate).await? {
                return Ok(reservation);
            }
        }
        Err(Error::ResourceExhausted(format!(
            "no free id found in {}..={} after {} attempts",
            range.min,
            range.max,
            attempts.max(1)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[tokio::test]
    async fn concurrent_allocations_never_share_an_id() {
        let alloc = IdAllocator::default();
        let range = IdRange::new(1, 64).unwrap();
        let mut held = Vec::new();
        for _ in 0..40 {
            held.push(
                alloc
                    .allocate(range, 1000, |_| async { Ok(true) })
                    .await
                    .unwrap(),
            );
        }
        let ids: HashSet<u32> = held.iter().map(IdReservation::id).collect();
        assert_eq!(ids.len(), 40);
        assert_eq!(
            alloc.reserve(held[0].id()).unwrap_err().code(),
            ErrorCode::Aborted
        );
        let first = held[0].id();
        held.remove(0);
        assert!(alloc.reserve(first).is_ok());
    }

    #[tokio::test]
    async fn ids_in_use_are_skipped_and_exhaustion_is_reported() {
        let alloc = IdAllocator::default();
        let range = IdRange::new(10, 11).unwrap();
        let got = alloc
            .allocate(range, 200, |id| async move { Ok(id == 11) })
            .await
            .unwrap();
        assert_eq!(got.id(), 11);
        let err = alloc
            .allocate(range, 5, |_| async { Ok(false) })
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::ResourceExhausted);
        assert!(IdRange::new(5, 4).is_err());
    }
}
