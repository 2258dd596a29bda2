//! The `/proc/self/mountinfo` format: a parser into [`MountEntry`], an encoder (for tests and
//! simulators) and a reader that notices a table changing while it is read.
//!
//! A line is `ID PARENT MAJ:MIN ROOT MOUNT_POINT MOUNT_OPTIONS [OPTIONAL...] - FSTYPE SOURCE
//! SUPER_OPTIONS`, fields separated by one space. The kernel writes space, tab, newline and
//! backslash inside a field as the octal escapes `\040`, `\011`, `\012` and `\134`; the
//! number of optional fields (`shared:N`, `master:N`...) varies and ends at a lone `-`.

use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use tracing::warn;

use crate::error::{Error, Result};
use crate::ports::MountEntry;

/// The mount table of the calling thread's mount namespace. `/proc/self` would show the
/// main thread's, which differs once a thread has entered a namespace of its own (as
/// tests in a private mount namespace do); threads a runtime starts later inherit it.
pub const SELF_MOUNTINFO: &str = "/proc/thread-self/mountinfo";

/// How many times [`read_mount_table`] re-reads a table that changed while being read.
const MAX_READS: usize = 5;

/// A line that could not be parsed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedLine {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// A parsed mount table: the entries, and the lines that were skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountTable {
    /// Entries in table order (parents before children, later mounts last).
    pub entries: Vec<MountEntry>,
    /// Malformed lines, skipped.
    pub skipped: Vec<SkippedLine>,
}

/// Decodes the kernel's octal escapes (`\ooo`); a backslash not followed by three octal
/// digits is kept as it is.
pub fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && i + 3 < field.len() && is_octal_triplet(&field[i + 1..i + 4]) {
            let value = field[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            // Three octal digits can exceed a byte (\777): keep such text literally.
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

fn is_octal_triplet(digits: &[u8]) -> bool {
    digits.len() == 3 && digits.iter().all(|d| (b'0'..=b'7').contains(d))
}

/// Encodes a field as the kernel does: space, tab, newline and backslash become `\ooo`.
pub fn escape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    for &b in field {
        match b {
            b' ' | b'\t' | b'\n' | b'\\' => out.extend_from_slice(format!("\\{b:03o}").as_bytes()),
            _ => out.push(b),
        }
    }
    out
}

/// Formats `entry` as one mountinfo line (without the newline), with device `0:0` and the
/// given optional fields (e.g. `shared:1`).
pub fn format_line(entry: &MountEntry, optional: &[&str]) -> Vec<u8> {
    let mut line = format!("{} {} 0:0 ", entry.id, entry.parent_id).into_bytes();
    line.extend(escape(entry.root.as_os_str().as_bytes()));
    line.push(b' ');
    line.extend(escape(entry.mount_point.as_os_str().as_bytes()));
    line.push(b' ');
    line.extend(escape(entry.mount_options.join(",").as_bytes()));
    for field in optional {
        line.push(b' ');
        line.extend(escape(field.as_bytes()));
    }
    line.extend_from_slice(b" - ");
    line.extend(escape(entry.fs_type.as_bytes()));
    line.push(b' ');
    line.extend(escape(entry.source.as_bytes()));
    line.push(b' ');
    line.extend(escape(entry.super_options.join(",").as_bytes()));
    line
}

fn options(field: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(&unescape(field)).into_owned();
    if text.is_empty() {
        return Vec::new();
    }
    text.split(',').map(str::to_string).collect()
}

fn number(field: Option<&[u8]>, what: &str) -> std::result::Result<u32, String> {
    let field = field.ok_or_else(|| format!("missing {what}"))?;
    std::str::from_utf8(field)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            format!(
                "{what} {:?} is not a number",
                String::from_utf8_lossy(field)
            )
        })
}

fn path(field: &[u8]) -> PathBuf {
    PathBuf::from(OsString::from_vec(unescape(field)))
}

/// Parses one line (without its newline); `Err` says why it is malformed.
pub fn parse_line(line: &[u8]) -> std::result::Result<MountEntry, String> {
    let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let separator = fields
        .iter()
        .skip(6)
        .position(|f| *f == b"-")
        .map(|p| p + 6)
        .ok_or_else(|| {
            if fields.len() < 6 {
                format!("only {} fields, at least 10 expected", fields.len())
            } else {
                "no '-' separator after the optional fields".to_string()
            }
        })?;
    let id = number(fields.first().copied(), "mount id")?;
    let parent_id = number(fields.get(1).copied(), "parent id")?;
    let device = fields[2];
    match device.iter().position(|&b| b == b':') {
        Some(colon) => {
            number(Some(&device[..colon]), "major device number")?;
            number(Some(&device[colon + 1..]), "minor device number")?;
        }
        None => {
            return Err(format!(
                "device {:?} is not MAJOR:MINOR",
                String::from_utf8_lossy(device)
            ));
        }
    }
    if fields[3].is_empty() || fields[4].is_empty() {
        return Err("empty root or mount point".to_string());
    }
    let tail = &fields[separator + 1..];
    if tail.len() < 2 || tail.len() > 3 {
        return Err(format!(
            "{} fields after the '-' separator, 3 expected",
            tail.len()
        ));
    }
    if tail[0].is_empty() {
        return Err("empty filesystem type".to_string());
    }
    Ok(MountEntry {
        id,
        parent_id,
        root: path(fields[3]),
        mount_point: path(fields[4]),
        mount_options: options(fields[5]),
        fs_type: String::from_utf8_lossy(&unescape(tail[0])).into_owned(),
        source: String::from_utf8_lossy(&unescape(tail[1])).into_owned(),
        super_options: tail.get(2).map(|f| options(f)).unwrap_or_default(),
    })
}

/// Parses a whole table; malformed lines are skipped and listed, blank lines ignored.
pub fn parse_table(data: &[u8]) -> MountTable {
    let mut table = MountTable::default();
    for (i, line) in data.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        match parse_line(line) {
            Ok(entry) => table.entries.push(entry),
            Err(reason) => table.skipped.push(SkippedLine {
                line: i + 1,
                reason,
            }),
        }
    }
    table
}

/// Reads the mount table at `path` (normally [`SELF_MOUNTINFO`]) and parses it.
///
/// The kernel hands the table out a page per `read`, so a table changed by another mount or
/// unmount while it is read can come out torn. The file is polled after reading (the kernel
/// flags a mountinfo descriptor with `POLLPRI` when the namespace changed since it was
/// opened) and read again, up to a few times, when it changed or held one mount id twice;
/// the last reading is returned either way. Skipped lines are logged.
pub fn read_mount_table(path: &Path) -> Result<MountTable> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut file = File::open(path).map_err(|e| Error::io("open", path, e))?;
        let mut data = Vec::with_capacity(64 * 1024);
        file.read_to_end(&mut data)
            .map_err(|e| Error::io("read", path, e))?;
        let table = parse_table(&data);
        let consistent = !changed_since_open(&file) && !has_duplicate_ids(&table.entries);
        if consistent || attempt >= MAX_READS {
            if !consistent {
                warn!(path = %path.display(), attempts = attempt, "mount table kept changing while read; using the last reading");
            }
            for skipped in &table.skipped {
                warn!(path = %path.display(), line = skipped.line, reason = %skipped.reason, "skipping malformed mount table line");
            }
            return Ok(table);
        }
    }
}

/// Whether the kernel flags the mountinfo descriptor as changed (POLLPRI or POLLERR).
/// Regular files never report it.
fn changed_since_open(file: &File) -> bool {
    let mut pfd = libc::pollfd {
        fd: file.as_raw_fd(),
        events: libc::POLLPRI,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    // A failed poll (EINTR) cannot tell: read again to be safe.
    n < 0 || n > 0 && pfd.revents & (libc::POLLPRI | libc::POLLERR) != 0
}

fn has_duplicate_ids(entries: &[MountEntry]) -> bool {
    let mut ids: Vec<u32> = entries.iter().map(|e| e.id).collect();
    ids.sort_unstable();
    ids.windows(2).any(|w| w[0] == w[1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SAMPLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
36 22 0:45 / /mnt/lustre rw,nosuid shared:20 master:3 - lustre 10.0.0.1@tcp:/testfs rw,flock,lazystatfs
37 22 0:46 /vol\\040one /var/lib/kubelet/pods/a\\011b/mount ro,relatime - beegfs beegfs_nodev rw,cfgFile=/etc/beegfs/x.conf
38 22 0:47 / /back\\134slash\\012nl rw - tmpfs tmpfs
";

    #[test]
    fn parses_optional_fields_escapes_and_a_missing_super_options_field() {
        let table = parse_table(SAMPLE.as_bytes());
        assert_eq!(table.skipped, vec![]);
        assert_eq!(table.entries.len(), 4);
        let lustre = &table.entries[1];
        assert_eq!(lustre.id, 36);
        assert_eq!(lustre.parent_id, 22);
        assert_eq!(lustre.fs_type, "lustre");
        assert_eq!(lustre.source, "10.0.0.1@tcp:/testfs");
        assert_eq!(lustre.mount_options, vec!["rw", "nosuid"]);
        assert_eq!(lustre.super_options, vec!["rw", "flock", "lazystatfs"]);
        let beegfs = &table.entries[2];
        assert_eq!(beegfs.root, PathBuf::from("/vol one"));
        assert_eq!(
            beegfs.mount_point,
            PathBuf::from("/var/lib/kubelet/pods/a\tb/mount")
        );
        assert!(beegfs.is_read_only());
        assert!(!lustre.is_read_only());
        let tmpfs = &table.entries[3];
        assert_eq!(tmpfs.mount_point, PathBuf::from("/back\\slash\nnl"));
        assert!(tmpfs.super_options.is_empty());
    }

    #[test]
    fn malformed_lines_are_skipped_with_a_reason() {
        let data = b"garbage\n\
            x 1 8:1 / / rw - ext4 /dev/sda1 rw\n\
            5 1 81 / / rw - ext4 /dev/sda1 rw\n\
            5 1 8:1 / / rw shared:1 ext4 /dev/sda1 rw\n\
            5 1 8:1 / / rw - ext4\n\
            5 1 8:1 / / rw - ext4 a b c\n\
            6 1 8:1 / /ok rw - ext4 /dev/sda1 rw\n";
        let table = parse_table(data);
        assert_eq!(table.entries.len(), 1);
        assert_eq!(table.entries[0].mount_point, PathBuf::from("/ok"));
        let reasons: Vec<_> = table
            .skipped
            .iter()
            .map(|s| (s.line, s.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 6, "{reasons:?}");
        assert_eq!(reasons[0].0, 1);
        assert!(reasons[1].1.contains("mount id"), "{reasons:?}");
        assert!(reasons[2].1.contains("MAJOR:MINOR"), "{reasons:?}");
        assert!(reasons[3].1.contains("separator"), "{reasons:?}");
        assert!(reasons[4].1.contains("after the '-'"), "{reasons:?}");
    }

    #[test]
    fn unknown_escapes_stay_literal() {
        assert_eq!(unescape(b"a\\x\\04"), b"a\\x\\04".to_vec());
        assert_eq!(unescape(b"\\777\\101"), b"\\777A".to_vec());
    }

    #[test]
    fn this_process_table_has_the_root_mount() {
        let table = read_mount_table(Path::new(SELF_MOUNTINFO)).unwrap();
        assert!(
            table
                .entries
                .iter()
                .any(|e| e.mount_point == Path::new("/"))
        );
        assert_eq!(table.skipped, vec![]);
    }

    fn field() -> impl Strategy<Value = String> {
        // Paths with spaces, tabs, newlines, backslashes, dashes and any unicode.
        "(/|[ \t\n\\\\\\-a-z0-9]|\\PC){1,24}"
    }

    fn option() -> impl Strategy<Value = String> {
        "[a-z0-9_=:@./ \\\\\\-]{1,12}"
    }

    fn entry() -> impl Strategy<Value = MountEntry> {
        (
            any::<u32>(),
            any::<u32>(),
            field(),
            field(),
            prop::collection::vec(option(), 0..4),
            "[a-z0-9.\\- ]{1,10}",
            "[^,]{1,20}",
            prop::collection::vec(option(), 0..4),
        )
            .prop_map(
                |(
                    id,
                    parent_id,
                    root,
                    mount_point,
                    mount_options,
                    fs_type,
                    source,
                    super_options,
                )| {
                    MountEntry {
                        id,
                        parent_id,
                        root: PathBuf::from(root),
                        mount_point: PathBuf::from(mount_point),
                        mount_options,
                        fs_type,
                        source,
                        super_options,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn encoded_entries_parse_back(
            entries in prop::collection::vec(entry(), 1..6),
            optional in prop::collection::vec("(shared|master|propagate_from|unbindable):[0-9]{1,4}|-[a-z]{1,3}", 0..4),
        ) {
            let optional: Vec<&str> = optional.iter().map(String::as_str).collect();
            let mut data = Vec::new();
            for e in &entries {
                data.extend(format_line(e, &optional));
                data.push(b'\n');
            }
            let table = parse_table(&data);
            prop_assert_eq!(table.skipped, vec![]);
            prop_assert_eq!(table.entries, entries);
        }

        #[test]
        fn arbitrary_input_never_panics(data in prop::collection::vec(any::<u8>(), 0..400)) {
            let table = parse_table(&data);
            prop_assert!(table.entries.len() + table.skipped.len() <= data.len());
        }

        #[test]
        fn mangled_lines_never_panic(line in "[0-9]{1,3} [0-9]{1,3} [0-9:]{1,5}( [^\n]{0,12}){0,12}") {
            let _ = parse_line(line.as_bytes());
        }
    }
}
