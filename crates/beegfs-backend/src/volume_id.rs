//! Volume and snapshot ids.
//!
//! - Volumes: `beegfs://<sysMgmtdHost>/<path from the BeeGFS root>`, the reference driver's
//!   format, e.g. `beegfs://10.0.0.5/k8s/all/pvc-7621fab2`. Dynamic volumes are
//!   `<volDirBasePath>/<name>`; static ones are whatever the administrator wrote (`/` is the
//!   whole filesystem). Characters outside the URL path set are percent-encoded, as the
//!   reference driver's URL encoder does.
//! - Snapshots: `beegfs-snap://<sysMgmtdHost>/<volDirBasePath>/<snapshot name>`; the archive
//!   and its record live under `<volDirBasePath>/.pfs-csi/` of the source volume.
//!
//! Parsing refuses what could escape the filesystem or confuse a path: `..` components, NUL
//! and control characters, an empty host, queries and fragments.

use std::fmt;

use csi_core::{Error, Result};

use crate::config::check_host;

/// The scheme of volume ids.
pub const VOLUME_SCHEME: &str = "beegfs://";
/// The scheme of snapshot ids.
pub const SNAPSHOT_SCHEME: &str = "beegfs-snap://";

/// A clean absolute path inside a BeeGFS filesystem: `/`, or `/a/b` without `.`, `..`,
/// empty components or a trailing slash.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VolumePath(String);

impl VolumePath {
    /// The filesystem root.
    pub fn root() -> Self {
        Self("/".into())
    }

    /// Cleans `raw` (joined to `/`): empty and `.` components are dropped; `..`, NUL and
    /// control characters are refused. `field` names the value in errors.
    pub fn clean(field: &str, raw: &str) -> Result<Self> {
        if raw.chars().any(char::is_control) {
            return Err(Error::invalid(
                field,
                "must not contain NUL or control characters",
            ));
        }
        let mut out = String::new();
        for part in raw.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    return Err(Error::invalid(
                        field,
                        format!("{raw:?} must not contain '..'"),
                    ));
                }
                p => {
                    out.push('/');
                    out.push_str(p);
                }
            }
        }
        if out.is_empty() {
            out.push('/');
        }
        Ok(Self(out))
    }

    /// The path as text, starting with `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path without its leading `/` (empty for the root), to join to a mount point.
    pub fn relative(&self) -> &str {
        &self.0[1..]
    }

    /// Whether this is the filesystem root.
    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// The path of child `name` (one component, already checked by the caller).
    pub fn join(&self, name: &str) -> Self {
        if self.is_root() {
            Self(format!("/{name}"))
        } else {
            Self(format!("{}/{name}", self.0))
        }
    }

    /// The parent directory; the root is its own parent.
    pub fn parent(&self) -> Self {
        match self.0.rfind('/') {
            Some(0) | None => Self::root(),
            Some(i) => Self(self.0[..i].to_string()),
        }
    }

    /// The last component; `None` for the root.
    pub fn file_name(&self) -> Option<&str> {
        if self.is_root() {
            None
        } else {
            self.0.rsplit('/').next()
        }
    }

    /// Every ancestor from the top down, excluding the root, including this path.
    pub fn ancestors_top_down(&self) -> Vec<Self> {
        let mut out = Vec::new();
        let mut current = String::new();
        for part in self.relative().split('/').filter(|p| !p.is_empty()) {
            current.push('/');
            current.push_str(part);
            out.push(Self(current.clone()));
        }
        out
    }

    /// Whether `other` is this path or below it.
    pub fn contains(&self, other: &VolumePath) -> bool {
        self.is_root()
            || other.0 == self.0
            || (other.0.starts_with(&self.0) && other.0.as_bytes().get(self.0.len()) == Some(&b'/'))
    }
}

impl fmt::Display for VolumePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A parsed volume id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BeegfsVolumeId {
    /// The filesystem's management host.
    pub host: String,
    /// The volume directory.
    pub path: VolumePath,
}

impl BeegfsVolumeId {
    /// Whether `raw` is in this backend's volume id format at all.
    pub fn claims(raw: &str) -> bool {
        raw.starts_with(VOLUME_SCHEME)
    }

    /// Parses `beegfs://host/path`.
    pub fn parse(raw: &str) -> Result<Self> {
        let rest = raw.strip_prefix(VOLUME_SCHEME).ok_or_else(|| {
            Error::invalid(
                "volume_id",
                format!("{raw:?} does not start with {VOLUME_SCHEME}"),
            )
        })?;
        let (host, path) = split_host_path("volume_id", rest)?;
        Ok(Self { host, path })
    }

    /// The volume's own name (last path component); `None` for a whole-filesystem volume.
    pub fn name(&self) -> Option<&str> {
        self.path.file_name()
    }
}

impl fmt::Display for BeegfsVolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{VOLUME_SCHEME}{}{}",
            self.host,
            encode_path(self.path.as_str())
        )
    }
}

/// A parsed snapshot id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BeegfsSnapshotId {
    /// The filesystem's management host.
    pub host: String,
    /// The `volDirBasePath` of the source volume, where the snapshot is kept.
    pub base: VolumePath,
    /// The snapshot's name (the CO's name).
    pub name: String,
}

impl BeegfsSnapshotId {
    /// The snapshot `name` of volume `source`, kept beside it in its base path.
    pub fn of(source: &BeegfsVolumeId, name: &str) -> Self {
        Self {
            host: source.host.clone(),
            base: source.path.parent(),
            name: name.to_string(),
        }
    }

    /// Whether `raw` is in this backend's snapshot id format at all.
    pub fn claims(raw: &str) -> bool {
        raw.starts_with(SNAPSHOT_SCHEME)
    }

    /// Parses `beegfs-snap://host/base/name`.
    pub fn parse(raw: &str) -> Result<Self> {
        let rest = raw.strip_prefix(SNAPSHOT_SCHEME).ok_or_else(|| {
            Error::invalid(
                "snapshot_id",
                format!("{raw:?} does not start with {SNAPSHOT_SCHEME}"),
            )
        })?;
        let (host, path) = split_host_path("snapshot_id", rest)?;
        let name = path
            .file_name()
            .ok_or_else(|| Error::invalid("snapshot_id", "names no snapshot"))?
            .to_string();
        Ok(Self {
            host,
            base: path.parent(),
            name,
        })
    }
}

impl fmt::Display for BeegfsSnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.base.join(&self.name);
        write!(
            f,
            "{SNAPSHOT_SCHEME}{}{}",
            self.host,
            encode_path(path.as_str())
        )
    }
}

fn split_host_path(field: &str, rest: &str) -> Result<(String, VolumePath)> {
    if rest.contains(['?', '#']) {
        return Err(Error::invalid(
            field,
            "must not contain a query or fragment",
        ));
    }
    let (host, raw_path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    check_host(host).map_err(|e| Error::invalid(field, format!("host {e}")))?;
    let decoded = decode_path(raw_path)
        .ok_or_else(|| Error::invalid(field, "has a malformed percent escape or is not UTF-8"))?;
    Ok((host.to_string(), VolumePath::clean(field, &decoded)?))
}

/// Characters a URL path keeps as they are (RFC 3986 `pchar` and `/`).
fn is_path_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'/'
        )
}

/// Percent-encodes what a URL path cannot hold.
pub fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if is_path_char(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes percent escapes; `None` for a malformed escape or non-UTF-8 result.
pub fn decode_path(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = raw.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use csi_core::ErrorCode;
    use proptest::prelude::*;

    #[test]
    fn reference_ids_parse_and_print_unchanged() {
        for raw in [
            "beegfs://10.0.0.5/k8s/all/pvc-7621fab2",
            "beegfs://beegfs-mgmt.example.com/scratch",
            "beegfs://10.0.0.5/",
            "beegfs://[fd00::5]/data/x",
            "beegfs://10.0.0.5/dir%20with%20space",
        ] {
            let id = BeegfsVolumeId::parse(raw).unwrap();
            assert_eq!(id.to_string(), raw);
        }
        let id = BeegfsVolumeId::parse("beegfs://10.0.0.5/k8s/all/pvc-1").unwrap();
        assert_eq!(id.host, "10.0.0.5");
        assert_eq!(id.path.as_str(), "/k8s/all/pvc-1");
        assert_eq!(id.name(), Some("pvc-1"));
        assert_eq!(id.path.parent().as_str(), "/k8s/all");
        let whole = BeegfsVolumeId::parse("beegfs://h").unwrap();
        assert!(whole.path.is_root());
        assert_eq!(whole.name(), None);
        assert_eq!(
            BeegfsVolumeId::parse("beegfs://h//a/./b/")
                .unwrap()
                .to_string(),
            "beegfs://h/a/b"
        );
    }

    #[test]
    fn traversal_and_malformed_ids_are_invalid_arguments() {
        for raw in [
            "beegfs://h/a/../b",
            "beegfs://h/..",
            "beegfs://h/a/%2E%2E/b",
            "beegfs://h/a\0b",
            "beegfs://h/a%00b",
            "beegfs:///a",
            "beegfs://h/a?x=1",
            "beegfs://h/a#f",
            "beegfs://h/a%zz",
            "beegfs://bad host/a",
            "lustre://h/a",
        ] {
            let err = BeegfsVolumeId::parse(raw).unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidArgument, "{raw}");
            assert!(err.to_string().contains("volume_id"), "{raw}: {err}");
        }
        assert!(BeegfsVolumeId::claims("beegfs://x"));
        assert!(!BeegfsVolumeId::claims("10.0.0.1@tcp:/lustre/x"));
    }

    #[test]
    fn snapshot_ids_carry_base_and_name() {
        let id = BeegfsSnapshotId::parse("beegfs-snap://10.0.0.5/k8s/all/snap-1").unwrap();
        assert_eq!(id.host, "10.0.0.5");
        assert_eq!(id.base.as_str(), "/k8s/all");
        assert_eq!(id.name, "snap-1");
        assert_eq!(id.to_string(), "beegfs-snap://10.0.0.5/k8s/all/snap-1");
        let at_root = BeegfsSnapshotId::parse("beegfs-snap://h/s").unwrap();
        assert!(at_root.base.is_root());
        assert!(BeegfsSnapshotId::parse("beegfs-snap://h/").is_err());
        assert!(BeegfsSnapshotId::parse("beegfs-snap://h/a/../s").is_err());
        assert!(BeegfsSnapshotId::claims("beegfs-snap://h/s"));
        assert!(!BeegfsSnapshotId::claims("beegfs://h/s"));
    }

    #[test]
    fn paths_know_their_family() {
        let p = VolumePath::clean("p", "k8s/all/pvc").unwrap();
        let names: Vec<_> = p
            .ancestors_top_down()
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(names, vec!["/k8s", "/k8s/all", "/k8s/all/pvc"]);
        assert!(VolumePath::root().ancestors_top_down().is_empty());
        assert!(p.parent().contains(&p));
        assert!(VolumePath::root().contains(&p));
        assert!(!p.contains(&VolumePath::clean("p", "/k8s/all/pvc2").unwrap()));
        assert_eq!(VolumePath::root().join("x").as_str(), "/x");
        assert_eq!(p.relative(), "k8s/all/pvc");
    }

    fn component() -> impl Strategy<Value = String> {
        "[^/\\p{Cc}]{1,12}".prop_filter("not a dot component", |s| s != "." && s != "..")
    }

    proptest! {
        #[test]
        fn volume_ids_round_trip(
            host in "[a-z0-9][a-z0-9.-]{0,20}",
            parts in proptest::collection::vec(component(), 0..5),
        ) {
            let path = VolumePath::clean("p", &parts.join("/")).unwrap();
            let id = BeegfsVolumeId { host, path };
            let parsed = BeegfsVolumeId::parse(&id.to_string()).unwrap();
            prop_assert_eq!(parsed, id);
        }

        #[test]
        fn snapshot_ids_round_trip(
            host in "[a-z0-9][a-z0-9.-]{0,20}",
            parts in proptest::collection::vec(component(), 0..4),
            name in component(),
        ) {
            let id = BeegfsSnapshotId {
                host,
                base: VolumePath::clean("p", &parts.join("/")).unwrap(),
                name,
            };
            prop_assert_eq!(BeegfsSnapshotId::parse(&id.to_string()).unwrap(), id);
        }

        #[test]
        fn parsed_paths_never_climb(raw in "beegfs://[a-z]{1,4}(/[a-z.%0-9]{0,5}){0,5}") {
            if let Ok(id) = BeegfsVolumeId::parse(&raw) {
                prop_assert!(id.path.as_str().starts_with('/'));
                prop_assert!(!id.path.as_str().split('/').any(|c| c == ".." || c == "."));
                prop_assert!(!id.path.as_str().contains("//"));
            }
        }

        #[test]
        fn parse_never_panics(raw in "\\PC{0,80}") {
            let _ = BeegfsVolumeId::parse(&raw);
            let _ = BeegfsSnapshotId::parse(&raw);
            let _ = BeegfsVolumeId::parse(&format!("beegfs://{raw}"));
        }
    }
}
