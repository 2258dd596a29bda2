//! Archive checksums: XXH3-128 (`ARCHIVE.xxh128`, `xxh128sum` format), BLAKE3
//! (`ARCHIVE.b3`, `b3sum` format) or MD5 (`ARCHIVE.md5`, `md5sum` format), each line
//! `<hex>  <archive file name>` so that `xxh128sum -c`, `b3sum -c` or `md5sum -c` in the
//! archive's directory checks it too.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use md5::{Digest, Md5};

use super::suffixed;
use crate::error::{Error, Result};
use crate::ports::{ArchiveChecksum, ChecksumKind};

/// Suffix of an XXH3-128 checksum file beside an archive.
pub const XXH128_SUFFIX: &str = ".xxh128";

/// Suffix of a BLAKE3 checksum file beside an archive.
pub const B3_SUFFIX: &str = ".b3";

/// Suffix of an MD5 checksum file beside an archive.
pub const MD5_SUFFIX: &str = ".md5";

/// The checksum file suffix of `kind`.
pub fn sidecar_suffix(kind: ChecksumKind) -> &'static str {
    match kind {
        ChecksumKind::Xxh128 => XXH128_SUFFIX,
        ChecksumKind::Blake3 => B3_SUFFIX,
        ChecksumKind::Md5 => MD5_SUFFIX,
    }
}

/// Hex digits of a digest of `kind`.
fn hex_len(kind: ChecksumKind) -> usize {
    match kind {
        ChecksumKind::Xxh128 => 32,
        ChecksumKind::Blake3 => 64,
        ChecksumKind::Md5 => 32,
    }
}

/// A running digest of any kind.
#[derive(Clone)]
pub enum StreamHasher {
    /// XXH3-128.
    Xxh128(Box<twox_hash::XxHash3_128>),
    /// BLAKE3.
    Blake3(Box<blake3::Hasher>),
    /// MD5.
    Md5(Md5),
}

impl StreamHasher {
    /// A fresh hasher of `kind`.
    pub fn new(kind: ChecksumKind) -> Self {
        match kind {
            ChecksumKind::Xxh128 => StreamHasher::Xxh128(Box::default()),
            ChecksumKind::Blake3 => StreamHasher::Blake3(Box::new(blake3::Hasher::new())),
            ChecksumKind::Md5 => StreamHasher::Md5(Md5::new()),
        }
    }

    /// Feeds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            StreamHasher::Xxh128(h) => h.write(bytes),
            StreamHasher::Blake3(h) => {
                h.update(bytes);
            }
            StreamHasher::Md5(h) => h.update(bytes),
        }
    }

    /// The digest so far.
    pub fn finish(self) -> ArchiveChecksum {
        match self {
            // The canonical form `xxh128sum` prints: the 128-bit value, big-endian.
            StreamHasher::Xxh128(h) => ArchiveChecksum {
                kind: ChecksumKind::Xxh128,
                hex: format!("{:032x}", h.finish_128()),
            },
            StreamHasher::Blake3(h) => ArchiveChecksum {
                kind: ChecksumKind::Blake3,
                hex: h.finalize().to_hex().to_string(),
            },
            StreamHasher::Md5(h) => ArchiveChecksum {
                kind: ChecksumKind::Md5,
                hex: h.finalize().iter().map(|b| format!("{b:02x}")).collect(),
            },
        }
    }
}

/// The checksum of a file of `kind`, streamed.
pub fn hash_file(kind: ChecksumKind, path: &Path) -> Result<ArchiveChecksum> {
    let mut file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut hasher = StreamHasher::new(kind);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("read", path, e)),
        };
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finish())
}

/// The hex MD5 of a file, streamed.
pub fn md5_file(path: &Path) -> Result<String> {
    hash_file(ChecksumKind::Md5, path).map(|c| c.hex)
}

/// Parses one checksum line of `kind` (`<hex>  <name>` or `<hex> *<name>`, the formats of
/// `xxh128sum`, `b3sum` and `md5sum`) into the lowercase hex digest.
pub fn parse_sum_line(kind: ChecksumKind, text: &str) -> Option<String> {
    let line = text.split('\n').next()?;
    let (hex, rest) = line.split_at_checked(hex_len(kind))?;
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let name = rest
        .strip_prefix("  ")
        .or_else(|| rest.strip_prefix(" *"))?;
    if name.is_empty() {
        return None;
    }
    Some(hex.to_ascii_lowercase())
}

/// Parses an `md5sum` line into the lowercase hex.
pub fn parse_md5sum_line(text: &str) -> Option<String> {
    parse_sum_line(ChecksumKind::Md5, text)
}

/// The line of the checksum file of `archive_name`.
pub fn sum_line(checksum: &ArchiveChecksum, archive_name: &str) -> String {
    format!("{}  {archive_name}\n", checksum.hex)
}

/// Writes the checksum file of `archive` durably (temporary file, sync, rename), reads it
/// back, and removes checksum files of the other kinds (a restore checks the first it
/// finds, so a stale one must not survive).
pub fn write_checksum_file(archive: &Path, checksum: &ArchiveChecksum) -> Result<()> {
    let name = archive
        .file_name()
        .ok_or_else(|| Error::invalid("archive", "has no file name"))?
        .to_string_lossy()
        .into_owned();
    let sidecar = suffixed(archive, sidecar_suffix(checksum.kind));
    let tmp = suffixed(&sidecar, ".tmp");
    let content = sum_line(checksum, &name);
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(content.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, &sidecar)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io("write checksum", &sidecar, e)
    })?;
    let back = fs::read_to_string(&sidecar).map_err(|e| Error::io("read checksum", &sidecar, e))?;
    if parse_sum_line(checksum.kind, &back).as_deref() != Some(checksum.hex.as_str()) {
        return Err(Error::Internal(format!(
            "checksum file {} does not read back as written",
            sidecar.display()
        )));
    }
    for other in ChecksumKind::ALL {
        if other != checksum.kind {
            remove_checksum_file(archive, other)?;
        }
    }
    Ok(())
}

/// Removes the checksum file of `kind` beside `archive`; not an error when absent.
pub fn remove_checksum_file(archive: &Path, kind: ChecksumKind) -> Result<()> {
    let path = suffixed(archive, sidecar_suffix(kind));
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", &path, e)),
    }
}

/// Checks `archive` against the first checksum file beside it, in the order of
/// [`ChecksumKind::ALL`] (`ARCHIVE.xxh128`, `ARCHIVE.b3`, `ARCHIVE.md5`):
/// `FailedPrecondition` naming the archive when there is none, it is malformed, or the
/// archive does not match it.
pub fn verify_archive(archive: &Path) -> Result<ArchiveChecksum> {
    let mut found = None;
    for kind in ChecksumKind::ALL {
        let sidecar = suffixed(archive, sidecar_suffix(kind));
        match fs::read_to_string(&sidecar) {
            Ok(text) => {
                found = Some((kind, sidecar, text));
                break;
            }
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("read checksum", &sidecar, e)),
        }
    }
    let Some((kind, sidecar, text)) = found else {
        let names: Vec<String> = ChecksumKind::ALL
            .iter()
            .map(|&kind| {
                suffixed(archive, sidecar_suffix(kind))
                    .display()
                    .to_string()
            })
            .collect();
        return Err(Error::FailedPrecondition(format!(
            "snapshot archive {} has no checksum file ({}); refusing to restore it unverified",
            archive.display(),
            names.join(", "),
        )));
    };
    let expected = parse_sum_line(kind, &text).ok_or_else(|| {
        Error::FailedPrecondition(format!(
            "checksum file {} of snapshot archive {} is malformed",
            sidecar.display(),
            archive.display()
        ))
    })?;
    let actual = hash_file(kind, archive)?;
    if actual.hex != expected {
        return Err(Error::FailedPrecondition(format!(
            "snapshot archive {} is corrupt: its {} is {}, its checksum file says {expected}; nothing was extracted",
            archive.display(),
            kind.name(),
            actual.hex
        )));
    }
    Ok(actual)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn md5sum_lines_parse_in_both_modes() {
        let hex = "d41d8cd98f00b204e9800998ecf8427e";
        assert_eq!(
            parse_md5sum_line(&format!("{hex}  a.tar\n")).as_deref(),
            Some(hex)
        );
        assert_eq!(
            parse_md5sum_line(&format!("{} *a b.tar", hex.to_uppercase())).as_deref(),
            Some(hex)
        );
        assert_eq!(parse_md5sum_line(&format!("{hex} a.tar")), None);
        assert_eq!(parse_md5sum_line(&format!("{hex}  ")), None);
        assert_eq!(parse_md5sum_line("xyz"), None);
        assert_eq!(parse_md5sum_line(""), None);
        // A BLAKE3 line is not an MD5 line and the other way round.
        let b3 = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";
        assert_eq!(parse_md5sum_line(&format!("{b3}  a.tar")), None);
        assert_eq!(
            parse_sum_line(ChecksumKind::Blake3, &format!("{hex}  a.tar")),
            None
        );
        assert_eq!(
            parse_sum_line(ChecksumKind::Blake3, &format!("{b3}  a.tar\n")).as_deref(),
            Some(b3)
        );
    }

    #[test]
    fn digests_of_a_file_match_the_known_values() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        fs::write(&f, b"The quick brown fox jumps over the lazy dog").unwrap();
        assert_eq!(md5_file(&f).unwrap(), "9e107d9d372bb6826bd81d3542a419d6");
        fs::write(&f, b"").unwrap();
        assert_eq!(
            hash_file(ChecksumKind::Blake3, &f).unwrap().hex,
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        // What `xxh128sum` prints for an empty file (the 128 bits big-endian).
        assert_eq!(
            hash_file(ChecksumKind::Xxh128, &f).unwrap().hex,
            "99aa06d3014798d86001c324468d497f"
        );
    }

    #[test]
    fn a_written_checksum_file_verifies_and_replaces_the_other_kind() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("snap.tar");
        fs::write(&archive, b"archive bytes").unwrap();
        fs::write(suffixed(&archive, MD5_SUFFIX), "stale").unwrap();
        let sum = hash_file(ChecksumKind::Blake3, &archive).unwrap();
        write_checksum_file(&archive, &sum).unwrap();
        assert!(!suffixed(&archive, MD5_SUFFIX).exists());
        let line = fs::read_to_string(suffixed(&archive, B3_SUFFIX)).unwrap();
        assert_eq!(line, format!("{}  snap.tar\n", sum.hex));
        assert_eq!(verify_archive(&archive).unwrap(), sum);
        fs::write(&archive, b"archive bytez").unwrap();
        let err = verify_archive(&archive).unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
    }

    proptest! {
        #[test]
        fn sum_line_parsing_never_panics(s in "\\PC{0,100}") {
            for kind in ChecksumKind::ALL {
                if let Some(hex) = parse_sum_line(kind, &s) {
                    prop_assert_eq!(hex.len(), hex_len(kind));
                }
            }
        }

        #[test]
        fn written_checksum_lines_parse_back(bytes in prop::collection::vec(any::<u8>(), 0..4096), name in "[^/\n\0]{1,30}") {
            for kind in ChecksumKind::ALL {
                let mut hasher = StreamHasher::new(kind);
                hasher.update(&bytes);
                let sum = hasher.finish();
                prop_assert_eq!(sum.hex.len(), hex_len(kind));
                let line = sum_line(&sum, &name);
                prop_assert_eq!(parse_sum_line(kind, &line), Some(sum.hex.clone()));
                // A line of another digest length is not one of this kind (MD5 and
                // XXH3-128 lines look alike: the file's suffix tells them apart).
                for other in ChecksumKind::ALL {
                    if hex_len(other) != hex_len(kind) {
                        prop_assert_eq!(parse_sum_line(other, &line), None);
                    }
                }
            }
        }
    }
}
