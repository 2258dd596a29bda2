//! Mount options of the Lustre backend (entry defaults, StorageClass, parameters, secrets):
//! each input line is one layer, as a comma-separated list.
//!
//! Properties: checking never panics; an accepted option never names a path, an operation
//! (`bind`, `remount`, propagation, `x-*`...) or holds a separator; parsing is idempotent;
//! merging keeps what it was given, is idempotent, and a final `ro` or `rw` layer decides
//! whether the mount is read-only.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lustre_backend::mount_options::{check_option, is_read_only, merge, parse};

/// Names that turn a mount into another operation.
const OPERATIONS: &[&str] = &[
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
    "loop",
    "user",
    "users",
    "owner",
    "group",
];

fn check_accepted(option: &str) {
    assert!(!option.is_empty());
    assert!(
        !option.contains([',', '/', ' ', '\t', '\n', '\0', '"', '\'', '\\']),
        "{option:?}"
    );
    let (name, value) = option.split_once('=').unwrap_or((option, ""));
    assert!(!value.contains(".."), "a value naming a path: {option:?}");
    let name = name.to_ascii_lowercase();
    assert!(!name.is_empty(), "{option:?}");
    assert!(!OPERATIONS.contains(&name.as_str()), "{option:?}");
    assert!(
        !name.starts_with("make-") && !name.starts_with("x-"),
        "{option:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut layers: Vec<Vec<String>> = Vec::new();
    for line in text.split('\n').take(8) {
        for piece in line.split(',') {
            if check_option(piece).is_ok() {
                check_accepted(piece);
            }
        }
        if let Ok(options) = parse(&[line]) {
            for o in &options {
                check_accepted(o);
                assert!(check_option(o).is_ok());
            }
            assert_eq!(parse(&[options.join(",")]).as_ref(), Ok(&options));
            assert_eq!(parse(&options).as_ref(), Ok(&options));
            layers.push(options);
        }
    }

    let refs: Vec<&[String]> = layers.iter().map(Vec::as_slice).collect();
    let merged = merge(&refs);
    for o in &merged {
        assert!(
            layers.iter().flatten().any(|given| given == o),
            "{o:?} invented"
        );
    }
    assert!(merged.len() <= layers.iter().map(Vec::len).sum());
    assert_eq!(merge(&[&merged]), merged, "merging is not idempotent");
    let mut again = refs.clone();
    again.push(&merged);
    assert_eq!(merge(&again), merged, "re-applying the result changed it");

    let ro = ["ro".to_string()];
    let rw = ["rw".to_string()];
    let mut with_ro = refs.clone();
    with_ro.push(&ro);
    assert!(
        is_read_only(&merge(&with_ro)),
        "a final ro lost: {layers:?}"
    );
    let mut with_rw = refs.clone();
    with_rw.push(&rw);
    assert!(
        !is_read_only(&merge(&with_rw)),
        "a final rw lost: {layers:?}"
    );
});
