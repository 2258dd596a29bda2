//! Where a path lives in its backing filesystem, read from `/proc/self/mountinfo`.
//!
//! The real `lfs` and `beegfs-ctl` work on any path of a mounted filesystem, including bind
//! mounts of its subdirectories (the driver's staging and publish paths). The simulator
//! finds the filesystem of such a path by translating both the path and each simulated
//! data directory into (device, path inside the device) through the mount table.

use std::path::{Component, Path, PathBuf};

/// One mount: its device (`major:minor`), the path inside the device that is mounted, and
/// where it is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `major:minor` of the backing device.
    pub device: String,
    /// The mounted path inside the device.
    pub root: PathBuf,
    /// The mount point.
    pub mount_point: PathBuf,
}

/// Decodes the octal escapes (`\040`) the kernel writes in mountinfo paths.
pub fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') as u32 * 64
                + (bytes[i + 2] - b'0') as u32 * 8
                + (bytes[i + 3] - b'0') as u32;
            if let Ok(b) = u8::try_from(v) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let (_id, _parent, device, root, mount_point) = (
                fields.next()?,
                fields.next()?,
                fields.next()?,
                fields.next()?,
                fields.next()?,
            );
            Some(Mount {
                device: device.to_string(),
                root: PathBuf::from(unescape(root)),
                mount_point: PathBuf::from(unescape(mount_point)),
            })
        })
        .collect()
}

/// The device of `path` and the path inside that device, using the mount whose mount point
/// is the longest prefix of `path` (the last such mount wins: it is the one on top).
/// `path` must be absolute and canonical.
pub fn inside_device(mounts: &[Mount], path: &Path) -> Option<(String, PathBuf)> {
    let mut best: Option<(&Mount, usize)> = None;
    for m in mounts {
        if path.starts_with(&m.mount_point) {
            let depth = m.mount_point.components().count();
            if best.is_none_or(|(_, d)| depth >= d) {
                best = Some((m, depth));
            }
        }
    }
    let (m, _) = best?;
    let rest = path.strip_prefix(&m.mount_point).ok()?;
    let mut inner = m.root.clone();
    inner.extend(
        rest.components()
            .filter(|c| matches!(c, Component::Normal(_))),
    );
    Some((m.device.clone(), inner))
}

/// Reads this process's mount table.
pub fn read() -> std::io::Result<Vec<Mount>> {
    std::fs::read_to_string("/proc/self/mountinfo").map(|t| parse(&t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TABLE: &str = "\
22 1 8:1 / / rw - ext4 /dev/vda rw
30 22 0:40 / /tmp rw - tmpfs tmpfs rw
41 30 0:40 /sim/lustre/testfs/data /tmp/mnt/exa rw - lustre 10.0.0.1@tcp:/testfs rw
42 30 0:40 /sim/lustre/testfs/data/pvc\\0401 /tmp/kubelet/staging rw - lustre 10.0.0.1@tcp:/testfs rw
";

    #[test]
    fn bind_mounts_of_subdirectories_map_into_the_backing_device() {
        let mounts = parse(TABLE);
        assert_eq!(
            inside_device(&mounts, Path::new("/tmp/kubelet/staging/file")),
            Some((
                "0:40".to_string(),
                PathBuf::from("/sim/lustre/testfs/data/pvc 1/file")
            ))
        );
        assert_eq!(
            inside_device(&mounts, Path::new("/tmp/sim/lustre/testfs/data")),
            Some(("0:40".to_string(), PathBuf::from("/sim/lustre/testfs/data")))
        );
        assert_eq!(
            inside_device(&mounts, Path::new("/etc")),
            Some(("8:1".to_string(), PathBuf::from("/etc")))
        );
    }

    #[test]
    fn escapes_are_decoded() {
        assert_eq!(unescape(r"/a\040b\011c\012d\134e"), "/a b\tc\nd\\e");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/trailing\04"), r"/trailing\04");
        assert_eq!(unescape(r"/not\999octal"), r"/not\999octal");
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_text_never_panics(text in "\\PC{0,300}") {
            for m in parse(&text) {
                let _ = inside_device(std::slice::from_ref(&m), &m.mount_point);
            }
        }

        #[test]
        fn unescape_inverts_octal_escapes(s in "[ -~\\t\\n]{0,40}") {
            let escaped: String = s.chars().map(|c| match c {
                ' ' => "\\040".to_string(),
                '\t' => "\\011".to_string(),
                '\n' => "\\012".to_string(),
                '\\' => "\\134".to_string(),
                c => c.to_string(),
            }).collect();
            prop_assert_eq!(unescape(&escaped), s);
        }
    }
}
