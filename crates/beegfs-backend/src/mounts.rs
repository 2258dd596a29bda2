//! Client mount options and what the mount table says about a volume's bind mounts.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use csi_core::ports::MountEntry;

use crate::volume_id::VolumePath;

/// The SELinux context given to client mounts when SELinux is on and the user set none.
pub const SELINUX_CONTEXT: &str = "context=system_u:object_r:container_file_t:s0";

/// Whether SELinux is on: the enforce file of selinuxfs exists.
pub fn selinux_enabled(enforce_path: &Path) -> bool {
    enforce_path.exists()
}

/// Options of a BeeGFS client mount: `rw,relatime,nosuid,cfgFile=<conf>` plus the user's
/// mount flags. `nosuid` stays whatever the user passes (`suid` is dropped), the
/// configuration file cannot be replaced, `ro` replaces `rw`, and the SELinux context is
/// added when SELinux is on and the user gave no `context=`.
pub fn client_mount_options(conf: &Path, user_flags: &[String], selinux: bool) -> Vec<String> {
    let user: Vec<String> = user_flags
        .iter()
        .flat_map(|f| f.split(','))
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(str::to_string)
        .collect();
    let read_only = user.iter().any(|f| f == "ro");
    let mut options = vec![
        if read_only { "ro" } else { "rw" }.to_string(),
        "relatime".to_string(),
        "nosuid".to_string(),
        format!("cfgFile={}", conf.display()),
    ];
    for flag in user {
        let dropped = matches!(flag.as_str(), "suid" | "rw" | "ro" | "nosuid" | "relatime")
            || flag.starts_with("cfgFile=");
        if !dropped && !options.contains(&flag) {
            options.push(flag);
        }
    }
    if selinux && !options.iter().any(|o| o.starts_with("context=")) {
        options.push(SELINUX_CONTEXT.to_string());
    }
    options
}

/// Whether `path` is `root` or below it, component-wise.
pub fn is_at_or_below(root: &Path, path: &Path) -> bool {
    path.starts_with(root)
}

/// Mount points that are bind mounts of volume `volume` of the client mount at `fs_mount`:
/// entries of the same filesystem (source, type and superblock options of the client mount)
/// whose root is the volume directory or below it, other than `own` mount points (the
/// driver's own client and staging mounts). Empty when the client mount is not in the table.
pub fn bind_mounts_of(
    mounts: &[MountEntry],
    fs_mount: &Path,
    volume: &VolumePath,
    own: &HashSet<PathBuf>,
) -> Vec<PathBuf> {
    let Some(client) = mounts.iter().rev().find(|m| m.mount_point == fs_mount) else {
        return Vec::new();
    };
    let volume_root = client.root.join(volume.relative());
    mounts
        .iter()
        .filter(|m| {
            m.mount_point != fs_mount
                && !own.contains(&m.mount_point)
                && m.source == client.source
                && m.fs_type == client.fs_type
                && m.super_options == client.super_options
                && is_at_or_below(&volume_root, &m.root)
        })
        .map(|m| m.mount_point.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(root: &str, mount_point: &str, source: &str) -> MountEntry {
        MountEntry {
            id: 1,
            parent_id: 0,
            root: root.into(),
            mount_point: mount_point.into(),
            mount_options: vec!["rw".into()],
            fs_type: "beegfs".into(),
            source: source.into(),
            super_options: vec!["cfgFile=/s/c.conf".into()],
        }
    }

    #[test]
    fn nosuid_is_kept_whatever_the_user_passes() {
        let conf = Path::new("/s/beegfs-client.conf");
        let opts = client_mount_options(
            conf,
            &["suid,noatime".into(), "cfgFile=/evil".into()],
            false,
        );
        assert_eq!(
            opts,
            [
                "rw",
                "relatime",
                "nosuid",
                "cfgFile=/s/beegfs-client.conf",
                "noatime"
            ]
        );
        let ro = client_mount_options(conf, &["ro".into(), "nosuid".into()], false);
        assert_eq!(ro[..3], ["ro", "relatime", "nosuid"]);
        assert_eq!(ro.iter().filter(|o| *o == "nosuid").count(), 1);
    }

    #[test]
    fn selinux_context_is_added_unless_given() {
        let conf = Path::new("/c");
        assert!(client_mount_options(conf, &[], true).contains(&SELINUX_CONTEXT.to_string()));
        let own = client_mount_options(conf, &["context=system_u:object_r:mine_t:s0".into()], true);
        assert!(!own.contains(&SELINUX_CONTEXT.to_string()));
        assert!(own.contains(&"context=system_u:object_r:mine_t:s0".to_string()));
        assert!(
            !client_mount_options(conf, &[], false)
                .iter()
                .any(|o| o.starts_with("context="))
        );
        let dir = tempfile::tempdir().unwrap();
        assert!(!selinux_enabled(&dir.path().join("enforce")));
        std::fs::write(dir.path().join("enforce"), "1").unwrap();
        assert!(selinux_enabled(&dir.path().join("enforce")));
    }

    #[test]
    fn bind_mounts_below_the_volume_are_found() {
        let vol = VolumePath::clean("v", "/k8s/pvc-1").unwrap();
        let mounts = vec![
            entry("/", "/kubelet/staging/pvc-1/mount", "beegfs_nodev"),
            entry(
                "/k8s/pvc-1",
                "/kubelet/pods/a/volumes/pvc-1/mount",
                "beegfs_nodev",
            ),
            entry("/k8s/pvc-1/sub", "/kubelet/pods/b/sub", "beegfs_nodev"),
            entry("/k8s/pvc-10", "/kubelet/pods/c/mount", "beegfs_nodev"),
            entry("/k8s", "/kubelet/pods/d/parent", "beegfs_nodev"),
            entry("/k8s/pvc-1", "/elsewhere", "other"),
        ];
        let found = bind_mounts_of(
            &mounts,
            Path::new("/kubelet/staging/pvc-1/mount"),
            &vol,
            &HashSet::new(),
        );
        assert_eq!(
            found,
            [
                PathBuf::from("/kubelet/pods/a/volumes/pvc-1/mount"),
                PathBuf::from("/kubelet/pods/b/sub")
            ]
        );
        let own: HashSet<PathBuf> = [PathBuf::from("/kubelet/pods/b/sub")].into();
        assert_eq!(
            bind_mounts_of(
                &mounts,
                Path::new("/kubelet/staging/pvc-1/mount"),
                &vol,
                &own
            )
            .len(),
            1
        );
        assert!(
            bind_mounts_of(&mounts, Path::new("/not/mounted"), &vol, &HashSet::new()).is_empty()
        );
    }

    #[test]
    fn a_simulated_filesystem_with_a_non_root_mount_root_is_handled() {
        // A bind-mount stand-in for the client shows the state directory as its root.
        let vol = VolumePath::clean("v", "/k8s/pvc-1").unwrap();
        let mounts = vec![
            entry("/sim/fs1/root", "/staging/mount", "/dev/sda1"),
            entry("/sim/fs1/root/k8s/pvc-1", "/pods/x/mount", "/dev/sda1"),
            entry("/sim/fs2/root/k8s/pvc-1", "/pods/y/mount", "/dev/sda1"),
        ];
        assert_eq!(
            bind_mounts_of(&mounts, Path::new("/staging/mount"), &vol, &HashSet::new()),
            [PathBuf::from("/pods/x/mount")]
        );
        // The whole filesystem as a volume: every bind of it counts.
        let all = bind_mounts_of(
            &mounts,
            Path::new("/staging/mount"),
            &VolumePath::root(),
            &HashSet::new(),
        );
        assert_eq!(all, [PathBuf::from("/pods/x/mount")]);
    }

    proptest! {
        #[test]
        fn options_always_hold_nosuid_once_and_our_conf(flags in proptest::collection::vec("[a-z=,/]{0,12}", 0..6), selinux: bool) {
            let opts = client_mount_options(Path::new("/c.conf"), &flags, selinux);
            prop_assert_eq!(opts.iter().filter(|o| *o == "nosuid").count(), 1);
            prop_assert!(!opts.iter().any(|o| o == "suid"));
            prop_assert_eq!(opts.iter().filter(|o| o.starts_with("cfgFile=")).collect::<Vec<_>>(), vec!["cfgFile=/c.conf"]);
            prop_assert_eq!(opts.iter().filter(|o| *o == "rw" || *o == "ro").count(), 1);
        }
    }
}
