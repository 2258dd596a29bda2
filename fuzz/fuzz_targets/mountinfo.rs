//! `/proc/self/mountinfo` tables.
//!
//! Properties: parsing never panics; every non-blank line is either an entry or a skipped
//! line with its number; a parsed entry encoded again (with or without optional fields)
//! parses back to the same entry; escaping is undone exactly by unescaping.
#![no_main]

use csi_core::linux::mountinfo::{escape, format_line, parse_line, parse_table, unescape};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let table = parse_table(data);
    let lines: Vec<(usize, &[u8])> = data
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .collect();
    assert_eq!(table.entries.len() + table.skipped.len(), lines.len());
    let mut last = 0;
    for s in &table.skipped {
        assert!(s.line > last && s.line <= lines.last().map_or(0, |(i, _)| i + 1));
        last = s.line;
    }

    let mut entries = table.entries.iter();
    for (_, line) in &lines {
        let Ok(entry) = parse_line(line) else {
            continue;
        };
        assert_eq!(
            entries.next(),
            Some(&entry),
            "table and line parse disagree"
        );
        for optional in [&[][..], &["shared:1", "master:7"][..]] {
            let encoded = format_line(&entry, optional);
            assert!(!encoded.contains(&b'\n'));
            let again = parse_line(&encoded).unwrap_or_else(|e| {
                panic!(
                    "{:?} re-encoded as {:?}: {e}",
                    String::from_utf8_lossy(line),
                    String::from_utf8_lossy(&encoded)
                )
            });
            assert_eq!(again, entry, "{:?}", String::from_utf8_lossy(&encoded));
        }
    }
    assert_eq!(entries.next(), None);

    let escaped = escape(data);
    assert!(!escaped.iter().any(|b| matches!(b, b' ' | b'\t' | b'\n')));
    assert_eq!(unescape(&escaped), data);
});
