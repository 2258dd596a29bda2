//! StorageClass parameters of a BeeGFS volume.
//!
//! | key | rule | default |
//! |---|---|---|
//! | `sysMgmtdHost` | required | - |
//! | `volDirBasePath` | required; joined to `/` and cleaned | - |
//! | `stripePattern/storagePoolID` | uint16 | inherited |
//! | `stripePattern/chunkSize` | digits and an optional unit `k`, `m` or `g`; a power of two of at least 64k | inherited |
//! | `stripePattern/numTargets` | uint16, at least 1 | inherited |
//! | `permissions/uid`, `permissions/gid` | uint32 | 0 |
//! | `permissions/mode` | octal, 3-4 digits (setgid and sticky allowed) | `0777` |
//!
//! Any other key is `InvalidArgument` naming it.

use csi_core::domain::Parameters;
use csi_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::config::check_host;
use crate::volume_id::VolumePath;

/// `sysMgmtdHost`.
pub const SYS_MGMTD_HOST: &str = "sysMgmtdHost";
/// `volDirBasePath`.
pub const VOL_DIR_BASE_PATH: &str = "volDirBasePath";
const STORAGE_POOL: &str = "stripePattern/storagePoolID";
const CHUNK_SIZE: &str = "stripePattern/chunkSize";
const NUM_TARGETS: &str = "stripePattern/numTargets";
const UID: &str = "permissions/uid";
const GID: &str = "permissions/gid";
const MODE: &str = "permissions/mode";

/// Every key a StorageClass may use.
pub const KNOWN_KEYS: &[&str] = &[
    SYS_MGMTD_HOST,
    VOL_DIR_BASE_PATH,
    STORAGE_POOL,
    CHUNK_SIZE,
    NUM_TARGETS,
    UID,
    GID,
    MODE,
];

/// The default directory mode of a new volume.
pub const DEFAULT_MODE: u32 = 0o777;

/// A stripe pattern to set on the volume directory; unset fields are inherited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StripePattern {
    /// Storage pool id.
    pub storage_pool: Option<u16>,
    /// Chunk size as written (`512k`).
    pub chunk_size: Option<String>,
    /// Number of targets.
    pub num_targets: Option<u16>,
}

impl StripePattern {
    /// Whether any field is set.
    pub fn is_set(&self) -> bool {
        self.storage_pool.is_some() || self.chunk_size.is_some() || self.num_targets.is_some()
    }
}

/// Owner and mode of the volume directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Permissions {
    /// Owner uid.
    pub uid: u32,
    /// Owner gid, when given.
    pub gid: Option<u32>,
    /// Mode bits including setgid (`0o2000`) and sticky (`0o1000`).
    pub mode: u32,
}

impl Default for Permissions {
    fn default() -> Self {
        Self {
            uid: 0,
            gid: None,
            mode: DEFAULT_MODE,
        }
    }
}

/// Validated CreateVolume parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeParams {
    /// The filesystem.
    pub host: String,
    /// The directory new volumes are created in.
    pub base: VolumePath,
    /// Stripe pattern.
    pub stripe: StripePattern,
    /// Owner and mode.
    pub permissions: Permissions,
}

impl VolumeParams {
    /// Validates StorageClass parameters.
    pub fn parse(params: &Parameters) -> Result<Self> {
        params.reject_unknown("parameters", KNOWN_KEYS)?;
        let host = params.get(SYS_MGMTD_HOST).map(str::trim).ok_or_else(|| {
            Error::invalid(&format!("parameters[{SYS_MGMTD_HOST}]"), "is required")
        })?;
        check_host(host)
            .map_err(|e| Error::invalid(&format!("parameters[{SYS_MGMTD_HOST}]"), e))?;
        let base_raw = params.get(VOL_DIR_BASE_PATH).ok_or_else(|| {
            Error::invalid(&format!("parameters[{VOL_DIR_BASE_PATH}]"), "is required")
        })?;
        let base = VolumePath::clean(&format!("parameters[{VOL_DIR_BASE_PATH}]"), base_raw)?;
        let stripe = StripePattern {
            storage_pool: params.parse(STORAGE_POOL, |v| v.parse::<u16>().ok())?,
            chunk_size: params.parse(CHUNK_SIZE, |v| parse_chunk_size(v).map(|_| v.to_string()))?,
            num_targets: params.parse(NUM_TARGETS, |v| v.parse::<u16>().ok().filter(|n| *n > 0))?,
        };
        let permissions = Permissions {
            uid: params.parse(UID, |v| v.parse::<u32>().ok())?.unwrap_or(0),
            gid: params.parse(GID, |v| v.parse::<u32>().ok())?,
            mode: params.parse(MODE, parse_mode)?.unwrap_or(DEFAULT_MODE),
        };
        Ok(Self {
            host: host.to_string(),
            base,
            stripe,
            permissions,
        })
    }
}

/// Parses a chunk size (`65536`, `512k`, `1m`, `1g`) into bytes; it must be a power of two
/// of at least 64 KiB, as BeeGFS requires.
pub fn parse_chunk_size(raw: &str) -> Option<u64> {
    let (digits, unit) = match raw.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&raw[..i], Some(c.to_ascii_lowercase())),
        _ => (raw, None),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let factor: u64 = match unit {
        None => 1,
        Some('k') => 1 << 10,
        Some('m') => 1 << 20,
        Some('g') => 1 << 30,
        Some(_) => return None,
    };
    let bytes = digits.parse::<u64>().ok()?.checked_mul(factor)?;
    (bytes >= 64 << 10 && bytes.is_power_of_two()).then_some(bytes)
}

/// Parses an octal mode of 3 or 4 digits (`755`, `0777`, `2775`, `1777`).
pub fn parse_mode(raw: &str) -> Option<u32> {
    if !(3..=4).contains(&raw.len()) || !raw.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(raw, 8).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use csi_core::ErrorCode;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn params(pairs: &[(&str, &str)]) -> Parameters {
        Parameters::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        )
    }

    #[test]
    fn every_parameter_is_read() {
        let p = VolumeParams::parse(&params(&[
            ("sysMgmtdHost", "10.0.0.5"),
            ("volDirBasePath", "k8s//all/"),
            ("stripePattern/storagePoolID", "2"),
            ("stripePattern/chunkSize", "512k"),
            ("stripePattern/numTargets", "4"),
            ("permissions/uid", "1000"),
            ("permissions/gid", "2000"),
            ("permissions/mode", "2775"),
        ]))
        .unwrap();
        assert_eq!(p.host, "10.0.0.5");
        assert_eq!(p.base.as_str(), "/k8s/all");
        assert_eq!(p.stripe.storage_pool, Some(2));
        assert_eq!(p.stripe.chunk_size.as_deref(), Some("512k"));
        assert_eq!(p.stripe.num_targets, Some(4));
        assert_eq!(p.permissions.uid, 1000);
        assert_eq!(p.permissions.gid, Some(2000));
        assert_eq!(p.permissions.mode, 0o2775);
    }

    #[test]
    fn defaults_apply_to_unset_parameters() {
        let p = VolumeParams::parse(&params(&[("sysMgmtdHost", "h"), ("volDirBasePath", "/")]))
            .unwrap();
        assert!(p.base.is_root());
        assert!(!p.stripe.is_set());
        assert_eq!(p.permissions, Permissions::default());
        assert_eq!(p.permissions.mode, 0o777);
    }

    #[test]
    fn bad_parameters_are_invalid_arguments_naming_the_key() {
        let cases: &[(&str, Option<&str>, &str)] = &[
            // (key, value or None to leave it out, key expected in the message)
            ("sysMgmtdHost", None, "sysMgmtdHost"),
            ("volDirBasePath", None, "volDirBasePath"),
            ("volDirBasePath", Some("/a/../b"), "volDirBasePath"),
            ("colour", Some("blue"), "colour"),
            (
                "stripePattern/storagePoolID",
                Some("70000"),
                "stripePattern/storagePoolID",
            ),
            (
                "stripePattern/chunkSize",
                Some("1000"),
                "stripePattern/chunkSize",
            ),
            (
                "stripePattern/chunkSize",
                Some("32k"),
                "stripePattern/chunkSize",
            ),
            (
                "stripePattern/chunkSize",
                Some("1q"),
                "stripePattern/chunkSize",
            ),
            (
                "stripePattern/numTargets",
                Some("0"),
                "stripePattern/numTargets",
            ),
            ("permissions/uid", Some("-1"), "permissions/uid"),
            ("permissions/gid", Some("x"), "permissions/gid"),
            ("permissions/mode", Some("789"), "permissions/mode"),
            ("permissions/mode", Some("77"), "permissions/mode"),
            ("permissions/mode", Some("17777"), "permissions/mode"),
        ];
        for (key, value, named) in cases {
            let mut all: BTreeMap<String, String> =
                [("sysMgmtdHost", "h"), ("volDirBasePath", "/k8s")]
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
            match value {
                Some(v) => all.insert(key.to_string(), v.to_string()),
                None => all.remove(*key),
            };
            let err = VolumeParams::parse(&Parameters::new(all)).unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidArgument, "{key}");
            assert!(err.to_string().contains(named), "{key}: {err}");
        }
    }

    #[test]
    fn chunk_sizes_and_modes() {
        assert_eq!(parse_chunk_size("512k"), Some(512 << 10));
        assert_eq!(parse_chunk_size("1M"), Some(1 << 20));
        assert_eq!(parse_chunk_size("65536"), Some(65536));
        assert_eq!(parse_chunk_size("3m"), None);
        assert_eq!(parse_chunk_size("k"), None);
        assert_eq!(parse_chunk_size(""), None);
        assert_eq!(parse_mode("1777"), Some(0o1777));
        assert_eq!(parse_mode("0755"), Some(0o755));
        assert_eq!(parse_mode("8"), None);
    }

    proptest! {
        #[test]
        fn powers_of_two_chunk_sizes_parse(exp in 16u32..40, unit in prop_oneof![Just(""), Just("k"), Just("m")]) {
            let shift = match unit { "k" => 10, "m" => 20, _ => 0 };
            prop_assume!(exp >= shift);
            let text = format!("{}{unit}", 1u64 << (exp - shift));
            prop_assert_eq!(parse_chunk_size(&text), Some(1u64 << exp));
        }

        #[test]
        fn modes_round_trip(mode in 0u32..0o10000) {
            let text = format!("{mode:04o}");
            prop_assert_eq!(parse_mode(&text), Some(mode));
        }

        #[test]
        fn parsers_never_panic(s in "\\PC{0,12}") {
            let _ = parse_chunk_size(&s);
            let _ = parse_mode(&s);
        }
    }
}
