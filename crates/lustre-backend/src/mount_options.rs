//! Mount options: validation and the merge of their sources.
//!
//! Options come from the entry's `defaultMountOptions`, the StorageClass `mountOptions:`
//! (the capability's mount flags), the `mountOptions` parameter and the node-stage secret, in
//! that order; a later source overrides an earlier one for the same option (and for the other
//! members of its family: `ro`/`rw`, `flock`/`localflock`/`noflock`, `X`/`noX`...).
//!
//! Each option is checked with the shared validator of [`csi_core::mount_options`].

pub use csi_core::mount_options::{check_option, parse};

/// Families of options where the last one given wins.
const FAMILIES: &[&[&str]] = &[
    &["ro", "rw"],
    &["flock", "localflock", "noflock"],
    &["atime", "noatime", "relatime", "norelatime", "strictatime"],
];

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
