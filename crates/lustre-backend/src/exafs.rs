//! Lustre filesystem addresses: the `exaFS` value (`NID[:NID...]:/fsname[/subdir]`) and NID
//! lists (`managementIp`).
//!
//! A NID is `address@network` (`192.168.88.114@tcp2`, `10.0.0.1@o2ib`, `fe80::1@tcp`). The MGS
//! may have failover nodes, separated by `:`; one node's several NIDs are separated by `,`.
//! IPv6 addresses contain `:` themselves: a `:`-separated piece without `@` belongs to the NID
//! that follows it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::LustreError;
use crate::volume_id::VolumePath;

/// Lustre limits a filesystem name to 8 characters.
pub const MAX_FSNAME_LEN: usize = 8;

/// The MGS nodes of a filesystem: each node with one or more NIDs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NidList(Vec<Vec<String>>);

impl NidList {
    /// Parses `node[:node...]` where a node is `nid[,nid...]`.
    pub fn parse(text: &str) -> Result<Self, LustreError> {
        let err = |reason: &str| LustreError::Syntax {
            what: "NID list",
            input: text.to_string(),
            reason: reason.to_string(),
        };
        if text.trim().is_empty() {
            return Err(err("is empty"));
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err("must not contain spaces or control characters"));
        }
        let mut nodes = Vec::new();
        let mut pending = String::new();
        for piece in text.split(':') {
            let last_nid = piece.rsplit(',').next().unwrap_or(piece);
            if !last_nid.contains('@') {
                // An IPv6 fragment: it belongs to the piece that carries the `@network`.
                pending.push_str(piece);
                pending.push(':');
                continue;
            }
            let node_text = format!("{pending}{piece}");
            pending.clear();
            let mut node = Vec::new();
            for nid in node_text.split(',') {
                check_nid(nid).map_err(|reason| err(&reason))?;
                node.push(nid.to_string());
            }
            nodes.push(node);
        }
        if !pending.is_empty() {
            return Err(err("the last NID has no @network"));
        }
        Ok(Self(nodes))
    }

    /// The nodes and their NIDs.
    pub fn nodes(&self) -> &[Vec<String>] {
        &self.0
    }
}

impl fmt::Display for NidList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, node) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            f.write_str(&node.join(","))?;
        }
        Ok(())
    }
}

/// Checks one `address@network` NID.
fn check_nid(nid: &str) -> Result<(), String> {
    let Some((addr, net)) = nid.rsplit_once('@') else {
        return Err(format!("NID {nid:?} has no @network"));
    };
    if addr.is_empty() {
        return Err(format!("NID {nid:?} has no address"));
    }
    let net_ok = net.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && net.chars().all(|c| c.is_ascii_alphanumeric());
    if !net_ok {
        return Err(format!(
            "NID {nid:?}: network {net:?} is not a LNet network name (tcp, tcp2, o2ib...)"
        ));
    }
    if addr.contains(':') {
        if !addr
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Err(format!("NID {nid:?}: {addr:?} is not an IPv6 address"));
        }
    } else if !addr
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(format!("NID {nid:?}: {addr:?} is not an address"));
    }
    Ok(())
}

/// A parsed `exaFS` value: where the MGS is, which filesystem, which subdirectory of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExaFs {
    /// The MGS NIDs.
    pub mgs: NidList,
    /// The Lustre filesystem name (`testfs`).
    pub fsname: String,
    /// The subdirectory of the filesystem that is mounted, as path components (may be empty).
    pub subdir: Vec<String>,
}

impl ExaFs {
    /// Parses `NID[:NID...]:/fsname[/subdir]`.
    pub fn parse(text: &str) -> Result<Self, LustreError> {
        let err = |reason: String| LustreError::Syntax {
            what: "exaFS",
            input: text.to_string(),
            reason,
        };
        let Some((nids, path)) = text.split_once(":/") else {
            return Err(err(
                "expected NID[:NID...]:/fsname[/subdir], e.g. 192.168.1.10@tcp:/testfs".into(),
            ));
        };
        let mgs = NidList::parse(nids).map_err(|e| match e {
            LustreError::Syntax { reason, .. } => err(reason),
            other => other,
        })?;
        let mut parts = path.split('/').filter(|p| !p.is_empty() && *p != ".");
        let fsname = parts
            .next()
            .ok_or_else(|| err("the filesystem name after ':/' is missing".into()))?
            .to_string();
        if fsname.len() > MAX_FSNAME_LEN
            || !fsname
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(err(format!(
                "{fsname:?} is not a Lustre filesystem name (at most {MAX_FSNAME_LEN} letters, digits, '_' or '-')"
            )));
        }
        // The subdirectory ends up in volume directories: the same rules as theirs.
        let subdir = VolumePath::parse(&parts.collect::<Vec<_>>().join("/"))
            .map_err(|reason| err(format!("the subdirectory is not valid: {reason}")))?
            .components()
            .to_vec();
        Ok(Self {
            mgs,
            fsname,
            subdir,
        })
    }

    /// `/fsname[/subdir]`: the filesystem path without the NIDs.
    pub fn fs_path(&self) -> String {
        let mut s = format!("/{}", self.fsname);
        for part in &self.subdir {
            s.push('/');
            s.push_str(part);
        }
        s
    }

    /// Whether both name the same directory of the same filesystem (the NIDs may differ).
    pub fn same_directory(&self, other: &ExaFs) -> bool {
        self.fsname == other.fsname && self.subdir == other.subdir
    }

    /// The same filesystem reached through other NIDs (`managementIp`).
    pub fn with_mgs(&self, mgs: &NidList) -> ExaFs {
        ExaFs {
            mgs: mgs.clone(),
            ..self.clone()
        }
    }

    /// The filesystem root (no subdirectory).
    pub fn root(&self) -> ExaFs {
        ExaFs {
            subdir: Vec::new(),
            ..self.clone()
        }
    }

    /// A subdirectory of this one (`components` already validated).
    pub fn join<S: AsRef<str>>(&self, components: &[S]) -> ExaFs {
        let mut joined = self.clone();
        joined
            .subdir
            .extend(components.iter().map(|c| c.as_ref().to_string()));
        joined
    }
}

impl fmt::Display for ExaFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.mgs, self.fs_path())
    }
}

impl FromStr for ExaFs {
    type Err = LustreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ExaFs::parse(s)
    }
}

impl Serialize for ExaFs {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ExaFs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ExaFs::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_readme_examples_parse() {
        let fs = ExaFs::parse("192.168.88.114@tcp2:192.168.98.114@tcp2:/testfs").unwrap();
        assert_eq!(
            fs.mgs.nodes(),
            &[vec!["192.168.88.114@tcp2"], vec!["192.168.98.114@tcp2"]]
        );
        assert_eq!(fs.fsname, "testfs");
        assert!(fs.subdir.is_empty());

        let fs = ExaFs::parse("192.168.78.112@tcp2:/testfs/zone-2").unwrap();
        assert_eq!(fs.subdir, vec!["zone-2"]);
        assert_eq!(fs.fs_path(), "/testfs/zone-2");
        assert_eq!(fs.to_string(), "192.168.78.112@tcp2:/testfs/zone-2");

        let fs = ExaFs::parse("10.0.0.1@tcp,10.1.0.1@o2ib:10.0.0.2@tcp:/csi-fs").unwrap();
        assert_eq!(fs.mgs.nodes()[0], vec!["10.0.0.1@tcp", "10.1.0.1@o2ib"]);
        assert_eq!(
            fs.to_string(),
            "10.0.0.1@tcp,10.1.0.1@o2ib:10.0.0.2@tcp:/csi-fs"
        );
    }

    #[test]
    fn ipv6_nids_keep_their_colons() {
        let fs = ExaFs::parse("fe80::1@tcp:2001:db8::2@tcp:/fs").unwrap();
        assert_eq!(
            fs.mgs.nodes(),
            &[vec!["fe80::1@tcp"], vec!["2001:db8::2@tcp"]]
        );
        assert_eq!(fs.to_string(), "fe80::1@tcp:2001:db8::2@tcp:/fs");
    }

    #[test]
    fn malformed_values_say_why() {
        for (text, why) in [
            ("/testfs", "expected NID"),
            ("10.0.0.1:/testfs", "no @network"),
            ("10.0.0.1@tcp:/", "filesystem name"),
            ("10.0.0.1@tcp:/averylongname", "Lustre filesystem name"),
            ("10.0.0.1@tcp:/fs/../etc", "'..'"),
            ("10.0.0.1@:/fs", "network"),
            ("@tcp:/fs", "no address"),
            ("10.0.0.1@tcp 10.0.0.2@tcp:/fs", "spaces"),
            ("10.0.0.1@tcp::/fs", "no @network"),
            ("10.0.0.1@tcp:/fs/a\u{7}b", "control characters"),
            (
                &format!("10.0.0.1@tcp:/fs/{}", "d".repeat(256)),
                "longer than 255",
            ),
        ] {
            let err = ExaFs::parse(text).unwrap_err().to_string();
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn management_nids_replace_the_mgs() {
        let fs = ExaFs::parse("192.168.1.1@tcp2:/testfs/sub").unwrap();
        let mgmt = NidList::parse("10.204.86.114@tcp").unwrap();
        assert_eq!(
            fs.with_mgs(&mgmt).to_string(),
            "10.204.86.114@tcp:/testfs/sub"
        );
        assert_eq!(fs.root().to_string(), "192.168.1.1@tcp2:/testfs");
        assert_eq!(
            fs.join(&["pvc-1"]).to_string(),
            "192.168.1.1@tcp2:/testfs/sub/pvc-1"
        );
        assert!(fs.same_directory(&fs.with_mgs(&mgmt)));
        assert!(!fs.same_directory(&fs.root()));
    }

    fn nid() -> impl Strategy<Value = String> {
        prop_oneof![
            (
                0u8..=255,
                0u8..=255,
                0u8..=255,
                0u8..=255,
                "(tcp|o2ib)[0-9]{0,2}"
            )
                .prop_map(|(a, b, c, d, net)| format!("{a}.{b}.{c}.{d}@{net}")),
            ("[0-9a-f]{1,4}", "[0-9a-f]{1,4}", "(tcp|o2ib)[0-9]?")
                .prop_map(|(a, b, net)| format!("{a}::{b}@{net}")),
        ]
    }

    fn exafs() -> impl Strategy<Value = ExaFs> {
        (
            prop::collection::vec(prop::collection::vec(nid(), 1..3), 1..4),
            "[a-z0-9_-]{1,8}",
            prop::collection::vec("[a-zA-Z0-9._-]{1,12}", 0..3),
        )
            .prop_filter("no dot-only components", |(_, _, sub)| {
                sub.iter().all(|c| c != "." && c != "..")
            })
            .prop_map(|(mgs, fsname, subdir)| ExaFs {
                mgs: NidList(mgs),
                fsname,
                subdir,
            })
    }

    proptest! {
        #[test]
        fn exafs_round_trips_through_its_text(fs in exafs()) {
            let text = fs.to_string();
            prop_assert_eq!(ExaFs::parse(&text).unwrap(), fs.clone());
            let json = serde_json::to_string(&fs).unwrap();
            prop_assert_eq!(serde_json::from_str::<ExaFs>(&json).unwrap(), fs);
        }

        #[test]
        fn parsing_never_panics_and_accepted_text_is_stable(text in "\\PC{0,60}") {
            if let Ok(fs) = ExaFs::parse(&text) {
                let again = ExaFs::parse(&fs.to_string()).unwrap();
                prop_assert_eq!(&again, &fs);
                prop_assert!(!fs.subdir.iter().any(|c| c == ".." || c.is_empty()));
            }
        }
    }
}
