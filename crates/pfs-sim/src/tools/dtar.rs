//! mpifileutils `dtar -c -f ARCHIVE [-C DIR] SOURCE...` and `dtar -x -f ARCHIVE [-C DIR]`.
//!
//! Archives are standard tar files (GNU tar reads them). As the real tool, sources must be
//! relative paths below the working directory (or `-C DIR`); the archive path is relative to the
//! same directory; the last entry is the dtar index `<archive name>.dtaridx` (big-endian 64-bit
//! offsets of the entries), which `dtar -x` skips and other tools extract as a plain file.
//! Extraction applies owners, times, modes and extended attributes only when asked with
//! `--preserve-owner`, `--preserve-times`, `--preserve-perms`, `--preserve-xattrs` (extended
//! attributes are recorded at creation with `--preserve-xattrs` too).
//! Unlike the real tool, hard links are archived as links (the real one stores copies).

use super::ToolIo;
use super::getopt::{Opt, OptSpec, getopt};
use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

const SPEC: OptSpec<'static> = OptSpec {
    short_with_value: "fCb",
    short_flags: "cxvqh",
    long_with_value: &[
        "file",
        "chdir",
        "bufsize",
        "chunksize",
        "memsize",
        "progress",
        "blocksize",
    ],
    long_flags: &[
        "create",
        "extract",
        "preserve-owner",
        "preserve-times",
        "preserve-perms",
        "preserve-xattrs",
        "preserve-acls",
        "preserve-flags",
        "fsync",
        "verbose",
        "quiet",
        "help",
    ],
};

/// The parsed command line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DtarArgs {
    /// `-c`.
    pub create: bool,
    /// `-x`.
    pub extract: bool,
    /// `-f`.
    pub archive: Option<String>,
    /// `-C`.
    pub chdir: Option<String>,
    /// `--preserve-owner`.
    pub owner: bool,
    /// `--preserve-times`.
    pub times: bool,
    /// `--preserve-perms`.
    pub perms: bool,
    /// `--preserve-xattrs`.
    pub xattrs: bool,
    /// Sources to archive.
    pub sources: Vec<String>,
}

/// Parses the command line.
pub fn parse(args: &[String]) -> Result<DtarArgs, String> {
    let mut out = DtarArgs::default();
    for opt in getopt(args, SPEC)? {
        let (key, value) = match opt {
            Opt::Short(c, v) => (c.to_string(), v),
            Opt::Long(n, v) => (n, v),
            Opt::Positional(p) => {
                out.sources.push(p);
                continue;
            }
        };
        match key.as_str() {
            "c" | "create" => out.create = true,
            "x" | "extract" => out.extract = true,
            "f" | "file" => out.archive = value,
            "C" | "chdir" => out.chdir = value,
            "preserve-owner" => out.owner = true,
            "preserve-times" => out.times = true,
            "preserve-perms" => out.perms = true,
            "preserve-xattrs" => out.xattrs = true,
            "h" | "help" => return Err("help".into()),
            _ => {}
        }
    }
    if out.create == out.extract {
        return Err("must specify exactly one of -c or -x".into());
    }
    if out.archive.is_none() {
        return Err("must specify archive file name with -f".into());
    }
    if out.create && out.sources.is_empty() {
        return Err("must specify at least one source path".into());
    }
    if out.extract && !out.sources.is_empty() {
        return Err("extract takes no source paths".into());
    }
    Ok(out)
}

/// Runs `dtar`.
pub fn run(args: &[String], io: &mut ToolIo<'_>) -> i32 {
    let parsed = match parse(args) {
        Ok(parsed) => parsed,
        Err(msg) => {
            io.err(&format!(
                "dtar: {msg}\nUsage: dtar [options] -c -f ARCHIVE SOURCE...\n       dtar [options] -x -f ARCHIVE\n"
            ));
            return 1;
        }
    };
    let base = match &parsed.chdir {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::current_dir() {
            Ok(dir) => dir,
            Err(e) => {
                io.err(&format!("dtar: cannot determine working directory: {e}\n"));
                return 1;
            }
        },
    };
    if !base.is_dir() {
        io.err(&format!(
            "dtar: failed to chdir to {}: No such file or directory\n",
            base.display()
        ));
        return 1;
    }
    let archive = base.join(parsed.archive.as_deref().unwrap_or_default());
    let result = if parsed.create {
        create(&base, &archive, &parsed.sources, parsed.xattrs)
    } else {
        extract(&base, &archive, &parsed)
    };
    match result {
        Ok(warnings) => {
            for w in warnings {
                io.err(&format!("dtar: {w}\n"));
            }
            0
        }
        Err(msg) => {
            io.err(&format!("dtar: {msg}\n"));
            1
        }
    }
}

struct Counting<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn check_source(source: &str) -> Result<(), String> {
    let path = Path::new(source);
    if path.is_absolute() {
        return Err(format!(
            "source must be relative to the working directory: {source}"
        ));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(format!(
            "source must be below the working directory: {source}"
        ));
    }
    Ok(())
}

fn list_xattrs(path: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: a null buffer with size 0 asks for the needed size only.
    let size = unsafe { libc::llistxattr(c_path.as_ptr(), std::ptr::null_mut(), 0) };
    if size < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENOTSUP) {
            Ok(Vec::new())
        } else {
            Err(e)
        };
    }
    let mut names = vec![0u8; size as usize];
    // SAFETY: the buffer has the length passed.
    let size = unsafe { libc::llistxattr(c_path.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if size < 0 {
        return Err(io::Error::last_os_error());
    }
    names.truncate(size as usize);
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let c_name = CString::new(name).map_err(io::Error::other)?;
        // SAFETY: size query with a null buffer.
        let len =
            unsafe { libc::lgetxattr(c_path.as_ptr(), c_name.as_ptr(), std::ptr::null_mut(), 0) };
        if len < 0 {
            continue;
        }
        let mut value = vec![0u8; len as usize];
        // SAFETY: the buffer has the length passed.
        let len = unsafe {
            libc::lgetxattr(
                c_path.as_ptr(),
                c_name.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if len < 0 {
            continue;
        }
        value.truncate(len as usize);
        out.push((String::from_utf8_lossy(name).into_owned(), value));
    }
    Ok(out)
}

/// Creates the archive; returns warnings (skipped entries).
pub fn create(
    base: &Path,
    archive: &Path,
    sources: &[String],
    xattrs: bool,
) -> Result<Vec<String>, String> {
    for source in sources {
        check_source(source)?;
        std::fs::symlink_metadata(base.join(source))
            .map_err(|e| format!("failed to stat {source}: {}", crate::errno_text(&e)))?;
    }
    let file = File::create(archive).map_err(|e| {
        format!(
            "failed to open archive {}: {}",
            archive.display(),
            crate::errno_text(&e)
        )
    })?;
    let mut builder = tar::Builder::new(Counting {
        inner: BufWriter::new(file),
        count: 0,
    });
    builder.follow_symlinks(false);
    let mut offsets: Vec<u64> = Vec::new();
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut warnings = Vec::new();
    let archive_canon = archive.canonicalize().ok();
    for source in sources {
        let mut stack = vec![PathBuf::from(source.trim_end_matches('/'))];
        while let Some(rel) = stack.pop() {
            let full = base.join(&rel);
            if archive_canon.is_some() && full.canonicalize().ok() == archive_canon {
                continue;
            }
            let meta = std::fs::symlink_metadata(&full).map_err(|e| {
                format!(
                    "failed to stat {}: {}",
                    rel.display(),
                    crate::errno_text(&e)
                )
            })?;
            let ft = meta.file_type();
            if !(ft.is_dir() || ft.is_file() || ft.is_symlink()) {
                warnings.push(format!("skipping unsupported file type: {}", rel.display()));
                continue;
            }
            offsets.push(builder.get_ref().count);
            if xattrs {
                let attrs = list_xattrs(&full)
                    .map_err(|e| format!("failed to read xattrs of {}: {e}", rel.display()))?;
                if !attrs.is_empty() {
                    let keys: Vec<(String, Vec<u8>)> = attrs
                        .into_iter()
                        .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v))
                        .collect();
                    builder
                        .append_pax_extensions(keys.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                        .map_err(|e| format!("failed to write archive: {e}"))?;
                }
            }
            let mut header = tar::Header::new_gnu();
            header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
            if let Some(name) = nix::unistd::User::from_uid(meta.uid().into())
                .ok()
                .flatten()
            {
                let _ = header.set_username(&name.name);
            }
            if let Some(group) = nix::unistd::Group::from_gid(meta.gid().into())
                .ok()
                .flatten()
            {
                let _ = header.set_groupname(&group.name);
            }
            let write_err =
                |e: io::Error| format!("failed to write archive entry {}: {e}", rel.display());
            if ft.is_dir() {
                header.set_size(0);
                builder
                    .append_data(&mut header, &rel, io::empty())
                    .map_err(write_err)?;
                let mut children: Vec<PathBuf> = std::fs::read_dir(&full)
                    .map_err(|e| {
                        format!(
                            "failed to read {}: {}",
                            rel.display(),
                            crate::errno_text(&e)
                        )
                    })?
                    .filter_map(|e| e.ok())
                    .map(|e| rel.join(e.file_name()))
                    .collect();
                children.sort();
                children.reverse();
                stack.extend(children);
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&full).map_err(|e| {
                    format!(
                        "failed to read link {}: {}",
                        rel.display(),
                        crate::errno_text(&e)
                    )
                })?;
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                builder
                    .append_link(&mut header, &rel, &target)
                    .map_err(write_err)?;
            } else if meta.nlink() > 1 && links.contains_key(&(meta.dev(), meta.ino())) {
                let first = links[&(meta.dev(), meta.ino())].clone();
                header.set_entry_type(tar::EntryType::Link);
                header.set_size(0);
                builder
                    .append_link(&mut header, &rel, &first)
                    .map_err(write_err)?;
            } else {
                if meta.nlink() > 1 {
                    links.insert((meta.dev(), meta.ino()), rel.clone());
                }
                let data = File::open(&full).map_err(|e| {
                    format!(
                        "failed to open {}: {}",
                        rel.display(),
                        crate::errno_text(&e)
                    )
                })?;
                builder
                    .append_data(&mut header, &rel, data)
                    .map_err(write_err)?;
            }
        }
    }
    let index: Vec<u8> = offsets.iter().flat_map(|o| o.to_be_bytes()).collect();
    let mut header = tar::Header::new_gnu();
    header.set_size(index.len() as u64);
    header.set_mode(0o600);
    header.set_mtime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    );
    header.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(&mut header, index_name(archive), index.as_slice())
        .map_err(|e| format!("failed to write index: {e}"))?;
    let mut counting = builder
        .into_inner()
        .map_err(|e| format!("failed to finish archive: {e}"))?;
    counting
        .flush()
        .map_err(|e| format!("failed to finish archive: {e}"))?;
    Ok(warnings)
}

/// The name of the index entry for an archive (`file.tar` -> `file.tar.dtaridx`).
pub fn index_name(archive: &Path) -> String {
    format!(
        "{}.dtaridx",
        archive
            .file_name()
            .unwrap_or_else(|| OsStr::new("archive"))
            .to_string_lossy()
    )
}

fn is_index_entry(path: &Path, entry_type: tar::EntryType) -> bool {
    entry_type == tar::EntryType::Regular
        && path.components().count() == 1
        && path.to_string_lossy().ends_with(".dtaridx")
}

/// Extracts the archive into `base`; returns warnings.
pub fn extract(base: &Path, archive: &Path, args: &DtarArgs) -> Result<Vec<String>, String> {
    let file = File::open(archive).map_err(|e| {
        format!(
            "failed to open archive {}: {}",
            archive.display(),
            crate::errno_text(&e)
        )
    })?;
    let mut tar = tar::Archive::new(io::BufReader::new(file));
    tar.set_preserve_permissions(args.perms);
    tar.set_preserve_mtime(args.times);
    tar.set_preserve_ownerships(args.owner);
    tar.set_unpack_xattrs(args.xattrs);
    tar.set_overwrite(true);
    let mut dir_times: Vec<(PathBuf, u64)> = Vec::new();
    let entries = tar
        .entries()
        .map_err(|e| format!("failed to read archive: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("failed to read archive: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| format!("invalid entry name: {e}"))?
            .into_owned();
        let entry_type = entry.header().entry_type();
        if is_index_entry(&path, entry_type) {
            continue;
        }
        if entry_type == tar::EntryType::Directory
            && let Ok(mtime) = entry.header().mtime()
        {
            dir_times.push((base.join(&path), mtime));
        }
        entry
            .unpack_in(base)
            .map_err(|e| format!("failed to extract {}: {e}", path.display()))?;
    }
    if args.times {
        for (dir, mtime) in dir_times.iter().rev() {
            let ts = nix::sys::time::TimeSpec::new(*mtime as i64, 0);
            let _ = nix::sys::stat::utimensat(
                nix::fcntl::AT_FDCWD,
                dir,
                &ts,
                &ts,
                nix::sys::stat::UtimensatFlags::NoFollowSymlink,
            );
        }
    }
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn argument_forms() {
        let p = parse(&args(&["-cf", "a.tar", "-C", "/src", "dir", "file"])).unwrap();
        assert!(p.create);
        assert_eq!(p.archive.as_deref(), Some("a.tar"));
        assert_eq!(p.chdir.as_deref(), Some("/src"));
        assert_eq!(p.sources, vec!["dir", "file"]);
        let p = parse(&args(&[
            "-x",
            "--file=a.tar",
            "--preserve-owner",
            "--preserve-perms",
        ]))
        .unwrap();
        assert!(p.extract && p.owner && p.perms && !p.times);
        assert!(parse(&args(&["-cf", "a.tar"])).is_err());
        assert!(parse(&args(&["-c", "-x", "-f", "a", "b"])).is_err());
        assert!(parse(&args(&["-x", "b"])).is_err());
        assert!(parse(&args(&["-xf", "a", "src"])).is_err());
    }

    #[test]
    fn round_trip_keeps_links_modes_and_skips_the_index() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let tree = src.path().join("vol");
        std::fs::create_dir_all(tree.join("sub")).unwrap();
        std::fs::write(tree.join("sub/a"), b"hello").unwrap();
        std::fs::hard_link(tree.join("sub/a"), tree.join("b")).unwrap();
        std::os::unix::fs::symlink("sub/a", tree.join("link")).unwrap();
        std::fs::set_permissions(
            tree.join("sub/a"),
            std::os::unix::fs::PermissionsExt::from_mode(0o640),
        )
        .unwrap();
        let archive = src.path().join("snap.tar");
        create(src.path(), &archive, &["vol".into()], false).unwrap();
        let parsed = parse(&args(&["-x", "-f", "x", "--preserve-perms"])).unwrap();
        extract(dst.path(), &archive, &parsed).unwrap();
        let out = dst.path().join("vol");
        assert_eq!(std::fs::read(out.join("b")).unwrap(), b"hello");
        assert_eq!(
            std::fs::read_link(out.join("link")).unwrap(),
            Path::new("sub/a")
        );
        let a = std::fs::metadata(out.join("sub/a")).unwrap();
        assert_eq!(a.ino(), std::fs::metadata(out.join("b")).unwrap().ino());
        assert_eq!(a.mode() & 0o777, 0o640);
        assert!(!dst.path().join("snap.tar.dtaridx").exists());
    }

    #[test]
    fn absolute_and_parent_sources_are_refused() {
        assert!(check_source("/etc").is_err());
        assert!(check_source("a/../../b").is_err());
        assert!(check_source("a/b").is_ok());
    }

    proptest! {
        #[test]
        fn parser_never_panics(list in prop::collection::vec("-{0,2}[a-zA-Z=./-]{0,8}", 0..6)) {
            let _ = parse(&list);
        }

        #[test]
        fn index_names_end_with_the_suffix(name in "[a-z0-9._-]{1,20}") {
            prop_assert!(index_name(Path::new(&name)).ends_with(".dtaridx"));
        }
    }
}
