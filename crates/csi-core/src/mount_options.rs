//! Validation of mount options a user may pass (StorageClass `mountOptions`, parameters,
//! capability mount flags), shared by every backend.
//!
//! Options that change what the mount call does instead of how the filesystem behaves are
//! refused: `remount`, `bind`, `rbind`, `move`, propagation changes (`make-*`, `shared`,
//! `private`...), loop devices, user mounts, helper options (`x-*`), and any value that names
//! a path (contains `/` or `..`). Names are lower case, as the kernel expects them.

/// Option names that would turn the mount into another operation.
const REFUSED: &[&str] = &[
    "remount",
    "bind",
    "rbind",
    "move",
    "shared",
    "rshared",
    "private",
    "rprivate",
    "slave",
    "rslave",
    "unbindable",
    "runbindable",
    "propagation",
    "loop",
    "offset",
    "sizelimit",
    "user",
    "users",
    "owner",
    "group",
    "helper",
    "source",
    "target",
];

/// Checks one option (no commas), returning why it is refused.
pub fn check_option(option: &str) -> Result<(), String> {
    if option.is_empty() {
        return Err("empty mount option".into());
    }
    let (name, value) = match option.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (option, None),
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'))
    {
        return Err(format!(
            "mount option {option:?}: the name may only hold lower-case letters, digits, '_', '-' and '.'"
        ));
    }
    if name.contains("..") {
        return Err(format!(
            "mount option {option:?}: a name holding '..' is not an option"
        ));
    }
    let lower = name.to_ascii_lowercase();
    if REFUSED.contains(&lower.as_str()) || lower.starts_with("make-") || lower.starts_with("x-") {
        return Err(format!(
            "mount option {option:?} changes what the mount call does and is not allowed"
        ));
    }
    if let Some(value) = value {
        if value.contains('/') || value.contains("..") {
            return Err(format!(
                "mount option {option:?}: values naming paths are not allowed"
            ));
        }
        if !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '@' | '+'))
        {
            return Err(format!(
                "mount option {option:?}: the value may only hold letters, digits and _ - . : @ +"
            ));
        }
    }
    Ok(())
}

/// Splits comma-separated lists (`"ro,noflock"`, list items with commas), trims the pieces,
/// drops empty ones and checks each.
pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for item in items {
        for piece in item.as_ref().split(',') {
            let piece = piece.trim();
            if piece.is_empty() {
                continue;
            }
            check_option(piece)?;
            out.push(piece.to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn operations_paths_and_odd_names_are_refused() {
        for bad in [
            "remount",
            "bind",
            "make-shared",
            "x-systemd.automount",
            "cfgFile=/etc/x",
            "a=..",
            "..",
            "a..b=1",
            "RO",
            "",
            "a b",
        ] {
            assert!(check_option(bad).is_err(), "{bad} was accepted");
        }
        for good in [
            "ro",
            "noatime",
            "flock",
            "context=system_u:object_r:container_file_t:s0",
            "rsize=1048576",
        ] {
            assert!(check_option(good).is_ok(), "{good} was refused");
        }
        assert_eq!(
            parse(&["ro, noflock", "", "noatime"]).unwrap(),
            ["ro", "noflock", "noatime"]
        );
        assert!(parse(&["ro,bind"]).is_err());
    }

    proptest! {
        #[test]
        fn accepted_options_never_name_a_path_or_an_operation(option in "\\PC{0,30}") {
            if check_option(&option).is_ok() {
                prop_assert!(!option.contains('/') && !option.contains(',') && !option.contains(".."));
                let name = option.split('=').next().unwrap_or_default();
                prop_assert!(!REFUSED.contains(&name) && !name.starts_with("make-") && !name.starts_with("x-"));
            }
        }
    }
}
