//! Where the filesystem client tools (`lfs`, `lctl`, `beegfs-ctl`, `beegfs`, `mount.lustre`)
//! are found on a node.
//!
//! The client DaemonSets of the OpenShift and Helm deployments place the tools under
//! `<kubelet-dir>/plugins/<driver-name>/client/` (`bin/`, `sbin/`), since RHCOS cannot
//! install packages. A configured tool with a directory part is used as it is; a bare name
//! is looked for there first, then in the system `sbin` directories and `PATH`.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// `<kubelet_dir>/plugins/<driver_name>/client`.
pub fn client_dir(kubelet_dir: &Path, driver_name: &str) -> PathBuf {
    kubelet_dir.join("plugins").join(driver_name).join("client")
}

/// Where bare tool names are looked for, in order: the client directory's `bin/`, `sbin/`
/// and itself, `/sbin` and `/usr/sbin` (where mount(8) finds its helpers), then `path`
/// (a `PATH` value).
pub fn tool_dirs(client_dir: &Path, path: Option<&OsStr>) -> Vec<PathBuf> {
    let mut dirs = vec![
        client_dir.join("bin"),
        client_dir.join("sbin"),
        client_dir.to_path_buf(),
        PathBuf::from("/sbin"),
        PathBuf::from("/usr/sbin"),
    ];
    if let Some(path) = path {
        for dir in std::env::split_paths(path) {
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    dirs
}

/// Candidates for a tool: the configured path alone when it has a directory part; for a
/// bare name, the name in each of `dirs` in order.
pub fn tool_candidates(configured: &Path, dirs: &[PathBuf]) -> Vec<PathBuf> {
    if configured.is_absolute() || configured.components().count() > 1 {
        return vec![configured.to_path_buf()];
    }
    dirs.iter().map(|dir| dir.join(configured)).collect()
}

/// The first candidate that is an executable file; the configured value unchanged when
/// none is (so the error names what was configured).
pub fn resolve_tool(configured: &Path, dirs: &[PathBuf]) -> PathBuf {
    tool_candidates(configured, dirs)
        .into_iter()
        .find(|p| is_executable(p))
        .unwrap_or_else(|| configured.to_path_buf())
}

/// Whether `path` is a regular file with an execute bit (following symlinks).
pub fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_names_are_found_in_the_client_directory_first() {
        let kubelet = tempfile::tempdir().unwrap();
        let client = client_dir(kubelet.path(), "exa.csi.ddn.com");
        assert_eq!(
            client,
            kubelet.path().join("plugins/exa.csi.ddn.com/client")
        );
        std::fs::create_dir_all(client.join("sbin")).unwrap();
        let lfs = client.join("sbin/lfs");
        std::fs::write(&lfs, "#!/bin/sh\n").unwrap();
        let dirs = tool_dirs(&client, None);
        // Not executable yet: the configured name stays.
        assert_eq!(resolve_tool(Path::new("lfs"), &dirs), PathBuf::from("lfs"));
        std::fs::set_permissions(&lfs, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(resolve_tool(Path::new("lfs"), &dirs), lfs);
        assert_eq!(
            resolve_tool(Path::new("/opt/lfs"), &dirs),
            PathBuf::from("/opt/lfs")
        );
        assert_eq!(
            tool_candidates(Path::new("x/lfs"), &dirs),
            vec![PathBuf::from("x/lfs")]
        );
        let two = [PathBuf::from("/a"), PathBuf::from("/b")];
        assert_eq!(
            tool_candidates(Path::new("lfs"), &two),
            vec![PathBuf::from("/a/lfs"), PathBuf::from("/b/lfs")]
        );
    }

    #[test]
    fn path_entries_follow_the_fixed_directories_without_repeats() {
        let dirs = tool_dirs(Path::new("/c"), Some(OsStr::new("/usr/bin:/sbin:/bin")));
        let expected: Vec<PathBuf> = [
            "/c/bin",
            "/c/sbin",
            "/c",
            "/sbin",
            "/usr/sbin",
            "/usr/bin",
            "/bin",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(dirs, expected);
    }
}
