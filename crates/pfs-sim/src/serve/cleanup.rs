//! Finding and removing every mount below a directory, deepest first, with a lazy fallback.
//!
//! Used by `serve` when it stops, and by test harnesses as a last-resort guard.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, umount2};

/// How many passes [`unmount_under`] makes before giving up (stacked mounts need one each).
const MAX_PASSES: usize = 16;

/// The mount points listed in a mountinfo text, in table order (oldest first).
pub fn parse_mount_points(mountinfo: &str) -> Vec<PathBuf> {
    crate::mount_table::parse(mountinfo)
        .into_iter()
        .map(|m| m.mount_point)
        .collect()
}

/// `dir` with symbolic links resolved when it exists (the mount table shows resolved paths).
fn resolved(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// Mount points at or below `dir` in this process's mount namespace, in table order.
pub fn mounts_under(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let dir = resolved(dir);
    let table = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(parse_mount_points(&table)
        .into_iter()
        .filter(|mp| mp.starts_with(&dir))
        .collect())
}

/// Orders mount points for unmounting: deepest first, and among equals the most recent first
/// (a mount stacked on another comes later in the table).
pub fn unmount_order(points: &[PathBuf]) -> Vec<PathBuf> {
    let mut indexed: Vec<(usize, &PathBuf)> = points.iter().enumerate().collect();
    indexed.sort_by(|(ia, a), (ib, b)| {
        b.components()
            .count()
            .cmp(&a.components().count())
            .then(ib.cmp(ia))
    });
    indexed.into_iter().map(|(_, p)| p.clone()).collect()
}

/// Unmounts everything at or below `dir`, deepest first; a mount that is busy is detached
/// lazily. Returns the mount points still present when it gave up (empty on success).
pub fn unmount_under(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    for _ in 0..MAX_PASSES {
        let points = mounts_under(dir)?;
        if points.is_empty() {
            return Ok(Vec::new());
        }
        for point in unmount_order(&points) {
            match umount2(&point, MntFlags::empty()) {
                Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
                Err(_) => {
                    let _ = umount2(&point, MntFlags::MNT_DETACH);
                }
            }
        }
    }
    mounts_under(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn mount_points_come_from_the_fifth_field() {
        let table = "22 1 0:21 / /proc rw,nosuid shared:5 - proc proc rw\n\
                     97 22 0:45 /data /tmp/x\\040y rw - lustre 10.0.0.1@tcp:/fs rw\n";
        assert_eq!(
            parse_mount_points(table),
            vec![PathBuf::from("/proc"), PathBuf::from("/tmp/x y")]
        );
    }

    #[test]
    fn deepest_and_latest_mounts_go_first() {
        let points: Vec<PathBuf> = ["/d/a", "/d/a/b/c", "/d/a/b", "/d/a"]
            .iter()
            .map(PathBuf::from)
            .collect();
        let order = unmount_order(&points);
        assert_eq!(
            order,
            ["/d/a/b/c", "/d/a/b", "/d/a", "/d/a"]
                .iter()
                .map(PathBuf::from)
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn nothing_is_mounted_under_a_fresh_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(mounts_under(dir.path()).unwrap().is_empty());
        assert!(unmount_under(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn stacked_and_nested_bind_mounts_are_all_removed() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test makes real bind mounts under its temp dir and needs root"
        );
        use nix::mount::{MsFlags, mount};
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let a = dir.path().join("mnt a");
        std::fs::create_dir_all(src.join("inner")).unwrap();
        std::fs::create_dir_all(&a).unwrap();
        let bind = |from: &Path, to: &Path| {
            mount(Some(from), to, None::<&str>, MsFlags::MS_BIND, None::<&str>).unwrap();
        };
        bind(&src, &a);
        bind(&src, &a);
        bind(&src, &a.join("inner"));
        let busy = std::fs::File::open(a.join("inner")).unwrap();
        assert_eq!(mounts_under(dir.path()).unwrap().len(), 3);
        let left = unmount_under(dir.path());
        drop(busy);
        // Whatever happened, leave nothing mounted before asserting.
        for p in mounts_under(dir.path()).unwrap_or_default() {
            let _ = umount2(&p, MntFlags::MNT_DETACH);
        }
        assert_eq!(left.unwrap(), Vec::<PathBuf>::new());
        assert!(mounts_under(dir.path()).unwrap().is_empty());
    }

    proptest! {
        #[test]
        fn order_keeps_every_point_and_never_puts_a_parent_first(
            parts in proptest::collection::vec("[ab]{1,3}(/[ab]{1,3}){0,3}", 0..12)
        ) {
            let points: Vec<PathBuf> = parts.iter().map(|p| Path::new("/r").join(p)).collect();
            let order = unmount_order(&points);
            let mut sorted_in = points.clone();
            sorted_in.sort();
            let mut sorted_out = order.clone();
            sorted_out.sort();
            prop_assert_eq!(sorted_in, sorted_out);
            for (i, earlier) in order.iter().enumerate() {
                for later in &order[i + 1..] {
                    prop_assert!(
                        !(later.starts_with(earlier) && later != earlier),
                        "{} before its child {}", earlier.display(), later.display()
                    );
                }
            }
        }
    }
}
