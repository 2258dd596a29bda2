//! Checks of an archive's member names before a tool that trusts them extracts it.
//!
//! GNU tar keeps what it extracts inside its directory (it drops a leading `/`, refuses
//! `..`, and makes links that could lead out only at the end). mpifileutils' dtar does
//! none of that, and an archive holds what a volume's users put in it: a member `l -> /etc`
//! followed by `l/passwd` (a race while the archive was cut can leave both) would be
//! written through the link, by root. [`check_members`] refuses such archives first.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// Refuses an archive with a member that could land outside the extraction directory: an
/// absolute name, a `..` component, a name below an earlier link member, or a hard link
/// to an absolute or `..` name. Reads only the headers (the data is skipped by seeking).
pub fn check_members(archive: &Path) -> Result<()> {
    let file = File::open(archive).map_err(|e| Error::io("open", archive, e))?;
    let mut tar = tar::Archive::new(file);
    let entries = tar
        .entries_with_seek()
        .map_err(|e| Error::io("read", archive, e))?;
    let mut links = HashSet::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read", archive, e))?;
        let name = entry
            .path()
            .map_err(|e| Error::io("read", archive, e))?
            .into_owned();
        let kind = entry.header().entry_type();
        let target = match kind {
            tar::EntryType::Link => entry
                .link_name()
                .map_err(|e| Error::io("read", archive, e))?
                .map(|t| t.into_owned()),
            _ => None,
        };
        check_member(
            &mut links,
            &name,
            kind.is_symlink() || kind.is_hard_link(),
            target.as_deref(),
        )
        .map_err(|why| {
            Error::FailedPrecondition(format!(
                "snapshot archive {}: member {}: {why}; not extracted",
                archive.display(),
                name.display()
            ))
        })?;
    }
    Ok(())
}

/// Checks one member against the links seen before it; records it when it is a link.
fn check_member(
    links: &mut HashSet<PathBuf>,
    name: &Path,
    is_link: bool,
    hard_link_target: Option<&Path>,
) -> std::result::Result<(), &'static str> {
    let normal = relative(name).ok_or("an absolute name or a `..` component")?;
    if below_link(links, &normal) {
        return Err("below a link member");
    }
    // Some extractors make a directory through a link already at its name.
    if links.contains(&normal) {
        return Err("at the name of an earlier link member");
    }
    if let Some(target) = hard_link_target {
        let target = relative(target).ok_or("a hard link to an absolute name or through `..`")?;
        if below_link(links, &target) || links.contains(&target) {
            return Err("a hard link through a link member");
        }
    }
    if is_link {
        links.insert(normal);
    }
    Ok(())
}

/// Whether a proper prefix of `name` is one of `links`.
fn below_link(links: &HashSet<PathBuf>, name: &Path) -> bool {
    let mut prefix = PathBuf::new();
    let parts: Vec<_> = name.components().collect();
    parts
        .iter()
        .take(parts.len().saturating_sub(1))
        .any(|part| {
            prefix.push(part);
            links.contains(&prefix)
        })
}

/// `path` without `.` components, when it is relative and has no `..`.
fn relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use proptest::prelude::*;

    /// An archive of `members`: (name, kind, link target), names written as they are.
    fn archive(dir: &Path, members: &[(&str, tar::EntryType, &str)]) -> PathBuf {
        let path = dir.join("a.tar");
        let mut builder = tar::Builder::new(File::create(&path).unwrap());
        for (name, kind, target) in members {
            let mut header = tar::Header::new_ustar();
            header.as_mut_bytes()[..100].fill(0);
            header.as_mut_bytes()[..name.len()].copy_from_slice(name.as_bytes());
            header.set_entry_type(*kind);
            header.set_mode(0o644);
            header.set_size(0);
            if !target.is_empty() {
                header.set_link_name(target).unwrap();
            }
            header.set_cksum();
            builder.append(&header, std::io::empty()).unwrap();
        }
        builder.finish().unwrap();
        path
    }

    use tar::EntryType::{Directory, Link, Regular, Symlink};

    #[test]
    fn a_volume_like_archive_passes() {
        let dir = tempfile::tempdir().unwrap();
        let ok = archive(
            dir.path(),
            &[
                ("./", Directory, ""),
                ("./d/", Directory, ""),
                ("./d/f", Regular, ""),
                ("./etc-link", Symlink, "/etc"),
                ("./up", Symlink, "../.."),
                ("./d/hard", Link, "./d/f"),
            ],
        );
        check_members(&ok).unwrap();
    }

    #[test]
    fn members_that_could_land_outside_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for members in [
            vec![("l", Symlink, "/etc"), ("l/passwd", Regular, "")],
            vec![
                ("./d/", Directory, ""),
                ("d/l", Symlink, "/"),
                ("./d/l/x/y", Regular, ""),
            ],
            vec![("/etc/passwd", Regular, "")],
            vec![("a/../../x", Regular, "")],
            vec![("h", Link, "/etc/shadow")],
            vec![("h", Link, "../x")],
            vec![("h", Link, "f"), ("h/x", Regular, "")],
            vec![
                ("x", Symlink, "/etc"),
                ("x/", Directory, ""),
                ("x/cron.d/evil", Regular, ""),
            ],
            vec![("x", Symlink, "/etc"), ("./x/.", Directory, "")],
            vec![("up", Symlink, "../victim"), ("h", Link, "up/secret")],
        ] {
            let path = archive(dir.path(), &members);
            let err = check_members(&path).unwrap_err();
            assert_eq!(
                err.code(),
                ErrorCode::FailedPrecondition,
                "{members:?}: {err}"
            );
        }
    }

    #[test]
    fn a_member_at_a_link_members_name_is_refused() {
        let mut links = HashSet::new();
        check_member(&mut links, Path::new("x"), true, None).unwrap();
        assert!(check_member(&mut links, Path::new("x"), false, None).is_err());
        assert!(check_member(&mut links, Path::new("./x/."), false, None).is_err());
        check_member(&mut links, Path::new("y/x"), false, None).unwrap();
    }

    proptest! {
        #[test]
        fn names_of_plain_components_pass_and_nothing_panics(
            names in proptest::collection::vec("[a-z.]{1,4}(/[a-z.]{1,4}){0,3}", 0..20),
        ) {
            let mut links = HashSet::new();
            for name in &names {
                let outcome = check_member(&mut links, Path::new(name), false, None);
                let has_parent = Path::new(name).components().any(|c| c == Component::ParentDir);
                prop_assert_eq!(outcome.is_ok(), !has_parent, "{}", name);
            }
        }
    }
}
