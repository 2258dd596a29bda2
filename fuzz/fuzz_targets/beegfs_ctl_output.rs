//! What the BeeGFS tools print: `beegfs-ctl --getentryinfo` and `beegfs entry info` (both
//! formats), `beegfs-ctl --getquota` (CSV and table) and `beegfs quota list-usage`, sizes,
//! and the failure messages the driver classifies.
//!
//! Properties: parsing never panics; sizes print back to the same byte count; quota rows of
//! other ids never change a result and a zero row of the same id adds nothing; generated
//! `list-usage` tables of several rows and pools read back to the expected sum.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use beegfs_backend::ctl::{
    QuotaRow, classify, parse_entry_info, parse_getquota_v7, parse_human_bytes,
    parse_quota_usage_v8,
};
use csi_core::ports::CommandOutput;
use libfuzzer_sys::fuzz_target;

/// One row of a generated `beegfs quota list-usage` table.
#[derive(Debug, Arbitrary)]
struct UsageRow {
    other_id: bool,
    user: bool,
    used: u64,
    limit: Option<u64>,
    files: u32,
    file_limit: Option<u32>,
    infinity: bool,
    pool: u8,
}

/// A generated table and the id asked for.
#[derive(Debug, Arbitrary)]
struct UsageTable {
    id: u32,
    pad: u8,
    rows: Vec<UsageRow>,
}

fuzz_target!(|data: &[u8]| {
    let (id, text) = match data.split_first_chunk::<4>() {
        Some((id, rest)) => (u32::from_le_bytes(*id), String::from_utf8_lossy(rest)),
        None => (0, String::from_utf8_lossy(data)),
    };
    let text = text.as_ref();

    if let Some(info) = parse_entry_info(text) {
        assert!(!info.entry_type.is_empty(), "{text:?}");
        assert_eq!(info.entry_type.trim(), info.entry_type, "{text:?}");
        assert!(!info.entry_type.contains('\n'), "{text:?}");
    }
    for line in text.lines().take(16) {
        sizes(line);
    }
    getquota(text, id);
    let _ = parse_quota_usage_v8(text, id);
    let out = CommandOutput {
        status: Some(1),
        stdout: text.to_string(),
        stderr: String::new(),
    };
    let _ = classify(&out);

    if let Ok(table) = UsageTable::arbitrary(&mut Unstructured::new(data)) {
        list_usage(&table);
    }
});

fn sizes(text: &str) {
    let Some(bytes) = parse_human_bytes(text) else {
        return;
    };
    assert_eq!(
        parse_human_bytes(&bytes.to_string()),
        Some(bytes),
        "{text:?}"
    );
    if bytes % 1024 == 0 {
        for unit in ["K", "Ki", "KiB", " KiB"] {
            let again = format!("{}{unit}", bytes / 1024);
            assert_eq!(
                parse_human_bytes(&again),
                Some(bytes),
                "{text:?} -> {again:?}"
            );
        }
    }
}

fn getquota(text: &str, id: u32) {
    let parsed = parse_getquota_v7(text, id);
    let other = id.wrapping_add(1);
    for extra in [
        format!("\ngrp,{other},5,6,7,8\n"),
        format!(
            "\n{other:>14}|{other:>6}||{:>12}|{:>12}||{:>9}|{:>9}\n",
            5, 6, 7, 8
        ),
    ] {
        let more = format!("{text}{extra}");
        assert_eq!(parse_getquota_v7(&more, id), parsed, "{more:?}");
    }
    let zero = format!("{text}\ngrp,{id},0,unlimited,0,unlimited\n");
    let expected = parsed.unwrap_or(QuotaRow {
        bytes_used: 0,
        bytes_limit: None,
        inodes_used: 0,
        inodes_limit: None,
    });
    assert_eq!(parse_getquota_v7(&zero, id), Some(expected), "{zero:?}");
}

fn list_usage(t: &UsageTable) {
    let pad = usize::from(t.pad % 4) + 1;
    let limit = |l: Option<u64>, infinity: bool| match l {
        Some(v) => v.to_string(),
        None if infinity => "∞".to_string(),
        None => "unlimited".to_string(),
    };
    let rows: Vec<[String; 6]> = t
        .rows
        .iter()
        .take(16)
        .map(|r| {
            let id = if r.other_id {
                t.id.wrapping_add(1)
            } else {
                t.id
            };
            [
                format!("g{id}"),
                id.to_string(),
                if r.user { "user" } else { "group" }.to_string(),
                format!("pool{}", r.pool),
                format!("{}/{}", r.used, limit(r.limit, r.infinity)),
                format!(
                    "{}/{}",
                    r.files,
                    limit(r.file_limit.map(u64::from), r.infinity)
                ),
            ]
        })
        .collect();
    let header = ["NAME", "ID", "TYPE", "POOL", "SPACE", "INODE"];
    let widths: Vec<usize> = (0..6)
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain([header[c].len()])
                .max()
                .unwrap_or(0)
                + pad
        })
        .collect();
    let line = |cells: [&str; 6]| {
        let mut s = String::new();
        for (c, cell) in cells.iter().enumerate() {
            s.push_str(&format!("{cell:<w$}", w = widths[c]));
        }
        s.trim_end().to_string() + "\n"
    };
    let mut text = line(header);
    for r in &rows {
        text.push_str(&line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]]));
    }
    // Rows of the asked group are summed; the first one's limits stand.
    let mut expected: Option<QuotaRow> = None;
    for r in t.rows.iter().take(16).filter(|r| !r.other_id && !r.user) {
        let as_limit = |v: Option<u64>| v.filter(|&v| v != 0 && v < i64::MAX as u64);
        match &mut expected {
            None => {
                expected = Some(QuotaRow {
                    bytes_used: r.used,
                    bytes_limit: as_limit(r.limit),
                    inodes_used: u64::from(r.files),
                    inodes_limit: as_limit(r.file_limit.map(u64::from)),
                })
            }
            Some(e) => {
                e.bytes_used = e.bytes_used.saturating_add(r.used);
                e.inodes_used = e.inodes_used.saturating_add(u64::from(r.files));
            }
        }
    }
    assert_eq!(parse_quota_usage_v8(&text, t.id), expected, "\n{text}");
}
