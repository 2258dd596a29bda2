//! The Lustre client's version, read from the file its kernel module keeps.
//!
//! `lctl get_param -n version` prints the content of `/sys/fs/lustre/version` (Lustre 2.12
//! and later: `2.15.5`), or on older clients the `lustre:` line of `/proc/fs/lustre/version`
//! (`lustre: 2.10.8`, then `kernel:` and `build:` lines). The file is there only while the
//! `lustre` module is loaded, so reading it tells readiness without starting a process.

use std::io::Read;
use std::path::Path;

/// The most of a version file read: sysfs files hold at most a page.
const MAX_LEN: u64 = 4096;

/// The version a version file's text names: the value of its `lustre:` line, else its first
/// line. `None` for an empty value or one with spaces or control characters.
pub fn parse_version_file(text: &str) -> Option<String> {
    let mut lines = text.lines().map(str::trim);
    let value = match lines.clone().find_map(|l| l.strip_prefix("lustre:")) {
        Some(value) => value.trim(),
        None => lines.next()?,
    };
    let plausible =
        !value.is_empty() && value.len() <= 128 && value.chars().all(|c| c.is_ascii_graphic());
    plausible.then(|| value.to_string())
}

/// The version in the file at `path`; `None` when it can't be read or names none.
pub fn read_version_file(path: &Path) -> Option<String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_LEN)
        .read_to_string(&mut text)
        .ok()?;
    parse_version_file(&text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_both_layouts() {
        assert_eq!(parse_version_file("2.15.5\n").as_deref(), Some("2.15.5"));
        assert_eq!(
            parse_version_file("lustre: 2.10.8\nkernel: patchless_client\nbuild: 2.10.8-RC1\n")
                .as_deref(),
            Some("2.10.8")
        );
        assert_eq!(
            parse_version_file("2.14.0_ddn98").as_deref(),
            Some("2.14.0_ddn98")
        );
    }

    #[test]
    fn refuses_what_is_no_version() {
        for text in [
            "",
            "\n",
            "lustre:\n",
            "two words\n",
            "lustre: a b\n",
            "\u{7}\n",
        ] {
            assert_eq!(parse_version_file(text), None, "{text:?}");
        }
    }

    #[test]
    fn reads_a_file_and_not_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("version");
        assert_eq!(read_version_file(&file), None);
        std::fs::write(&file, "2.15.5\n").unwrap();
        assert_eq!(read_version_file(&file).as_deref(), Some("2.15.5"));
        assert_eq!(read_version_file(dir.path()), None, "a directory");
    }

    proptest! {
        #[test]
        fn never_panics(text in any::<String>()) {
            if let Some(v) = parse_version_file(&text) {
                prop_assert!(!v.is_empty() && v.chars().all(|c| c.is_ascii_graphic()));
            }
        }

        #[test]
        fn finds_the_version_in_either_layout(
            version in "[0-9]{1,2}\\.[0-9]{1,2}\\.[0-9]{1,2}(_[a-z0-9]{1,8})?",
            build in "[ -~]{0,40}",
        ) {
            let sysfs = format!("{version}\n");
            prop_assert_eq!(parse_version_file(&sysfs), Some(version.clone()));
            let proc = format!("lustre: {version}\nkernel: patchless_client\nbuild: {build}\n");
            prop_assert_eq!(parse_version_file(&proc), Some(version));
        }
    }
}
