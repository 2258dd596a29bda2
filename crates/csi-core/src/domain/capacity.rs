//! Requested capacity of a volume.

use crate::error::{Error, Result};

/// One gibibyte, the default size of a volume created without a capacity range.
pub const GIB: u64 = 1 << 30;

/// A CSI capacity range: at least `required` bytes, at most `limit` bytes (0 = unset).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapacityRange {
    /// Minimum size in bytes; 0 when unset.
    pub required: u64,
    /// Maximum size in bytes; 0 when unset.
    pub limit: u64,
}

impl CapacityRange {
    /// Validates raw request values (CSI uses signed 64-bit integers).
    pub fn new(required: i64, limit: i64) -> Result<Self> {
        if required < 0 {
            return Err(Error::invalid(
                "capacity_range.required_bytes",
                "must not be negative",
            ));
        }
        if limit < 0 {
            return Err(Error::invalid(
                "capacity_range.limit_bytes",
                "must not be negative",
            ));
        }
        let (required, limit) = (required as u64, limit as u64);
        if limit != 0 && required > limit {
            return Err(Error::invalid(
                "capacity_range",
                format!("required_bytes {required} is larger than limit_bytes {limit}"),
            ));
        }
        Ok(Self { required, limit })
    }

    /// The size to provision: `required`, else `default` capped by `limit`, else `limit`.
    pub fn size_or(&self, default: u64) -> u64 {
        match (self.required, self.limit) {
            (0, 0) => default,
            (0, limit) => default.min(limit),
            (required, _) => required,
        }
    }

    /// Whether an existing volume of `bytes` satisfies this range.
    pub fn admits(&self, bytes: u64) -> bool {
        bytes >= self.required && (self.limit == 0 || bytes <= self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn negative_and_inverted_ranges_are_invalid() {
        assert!(CapacityRange::new(-1, 0).is_err());
        assert!(CapacityRange::new(0, -1).is_err());
        assert!(CapacityRange::new(10, 5).is_err());
        assert_eq!(CapacityRange::new(5, 0).unwrap().size_or(GIB), 5);
        assert_eq!(CapacityRange::new(0, 100).unwrap().size_or(GIB), 100);
        assert_eq!(CapacityRange::new(0, 0).unwrap().size_or(GIB), GIB);
    }

    proptest! {
        #[test]
        fn the_provisioned_size_is_always_admitted(required in 0i64..1 << 50, extra in 0i64..1 << 40, limited: bool) {
            let limit = if limited { required + extra } else { 0 };
            let range = CapacityRange::new(required, limit).unwrap();
            prop_assert!(range.admits(range.size_or(GIB)));
        }
    }
}
