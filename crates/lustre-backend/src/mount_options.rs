//! Mount options: validation and the merge of their sources.
//!
//! Options come from the entry's `defaultMountOptions`, the StorageClass `mountOptions:`
//! (the capability's mount flags), the `mountOptions` parameter and the node-stage secret, in
//! that order; a later source overrides an earlier one for the same option (and for the other
//! members of its family: `ro`/`rw`, `flock`/`localflock`/`noflock`, `X`/`noX`...).
//!
//! Options that change what the mount call does instead of how the filesystem behaves are
//! refused: `remount`, `bind`, `rbind`, `move`, propagation changes (`make-*`, `shared`,
//! `private`...), loop devices, user mounts, helper options (`x-*`), and any value that names
//! a path (contains `/` or `..`).

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

/// Families of options where the last one given wins.
const FAMILIES: &[&[&str]] = &[
    &["ro", "rw"],
    &["flock", "localflock", "noflock"],
    &["atime", "noatime", "relatime", "norelatime", "strictatime"],
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
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(format!(
            "mount option {option:?}: the name may only hold letters, digits, '_', '-' and '.'"
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

/// The family an option belongs to: itself without `no`, or its listed family.
fn family(option: &str) -> String {
    let name = option.split_once('=').map_or(option, |(n, _)| n);
    if let Some(members) = FAMILIES.iter().find(|f| f.contains(&name)) {
        return members[0].to_string();
    }
    name.strip_prefix("no").unwrap_or(name).to_string()
}

/// Merges option layers: a later layer's option replaces an earlier one of the same family;
/// the order of first appearance is kept. Inputs must already be checked.
pub fn merge(layers: &[&[String]]) -> Vec<String> {
    let mut merged: Vec<String> = Vec::new();
    for layer in layers {
        for option in layer.iter() {
            let fam = family(option);
            match merged.iter().position(|o| family(o) == fam) {
                Some(i) => merged[i] = option.clone(),
                None => merged.push(option.clone()),
            }
        }
    }
    merged
}

/// Whether the merged options make the mount read-only.
pub fn is_read_only(options: &[String]) -> bool {
    options.iter().any(|o| o == "ro")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn operations_in_disguise_are_refused() {
        for bad in [
            "remount",
            "bind",
            "rbind",
            "move",
            "make-shared",
            "make-rprivate",
            "rshared",
            "X-mount.mkdir",
            "x-systemd.automount",
            "loop",
            "user",
            "skpath=/etc/keys",
            "opt=..",
            "a b",
            "",
            "context=\"system_u\"",
            "=x",
        ] {
            assert!(check_option(bad).is_err(), "{bad:?} was accepted");
        }
        for good in [
            "ro",
            "flock",
            "noatime",
            "network=tcp2",
            "user_xattr",
            "lazystatfs",
        ] {
            assert!(check_option(good).is_ok(), "{good:?} was refused");
        }
    }

    #[test]
    fn lists_split_on_commas_and_name_the_offender() {
        assert_eq!(
            parse(&["ro, noflock", "", "user_xattr"]).unwrap(),
            s(&["ro", "noflock", "user_xattr"])
        );
        let err = parse(&["ro,bind"]).unwrap_err();
        assert!(err.contains("\"bind\""), "{err}");
    }

    #[test]
    fn later_layers_override_their_family() {
        let defaults = s(&["flock", "rw", "user_xattr"]);
        let class = s(&["noatime", "localflock"]);
        let param = s(&["ro", "nouser_xattr"]);
        let merged = merge(&[&defaults, &class, &param]);
        assert_eq!(merged, s(&["localflock", "ro", "nouser_xattr", "noatime"]));
        assert!(is_read_only(&merged));
        assert!(!is_read_only(&merge(&[&param, &defaults])));
    }

    proptest! {
        #[test]
        fn accepted_options_never_name_paths_or_operations(opt in "[a-zA-Z_./=-]{0,16}") {
            if check_option(&opt).is_ok() {
                prop_assert!(!opt.contains('/'));
                prop_assert!(!opt.contains(','));
                let name = opt.split('=').next().unwrap().to_ascii_lowercase();
                prop_assert!(!REFUSED.contains(&name.as_str()));
                prop_assert!(!name.starts_with("make-"));
            }
        }

        #[test]
        fn merging_keeps_one_option_per_family(
            layers in prop::collection::vec(
                prop::collection::vec(prop_oneof![
                    Just("ro"), Just("rw"), Just("flock"), Just("noflock"), Just("localflock"),
                    Just("acl"), Just("noacl"), Just("noatime"), Just("relatime"),
                ].prop_map(String::from), 0..5),
                0..4,
            )
        ) {
            let refs: Vec<&[String]> = layers.iter().map(Vec::as_slice).collect();
            let merged = merge(&refs);
            let families: std::collections::HashSet<String> = merged.iter().map(|o| family(o)).collect();
            prop_assert_eq!(families.len(), merged.len());
            // The last option given of each family is the one kept.
            for option in &merged {
                let last = layers.iter().flatten().rev().find(|o| family(o) == family(option));
                prop_assert_eq!(last, Some(option));
            }
        }
    }
}
