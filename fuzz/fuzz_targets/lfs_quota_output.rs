//! What `lfs quota -p ID PATH` and `lfs project -d DIR` print.
//!
//! Properties: parsing never panics; the result does not change when the header line or a
//! trailer line is added around the output; generated reports of every shape (old and new
//! column names, header or not, long filesystem names, over-limit marks) read back exactly;
//! a parsed `lfs project` line printed again reads back the same.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use lustre_backend::quota::{QuotaReport, parse_lfs_project, parse_lfs_quota};

/// A report and the shape it is printed in.
#[derive(Debug, Arbitrary)]
struct Rendered {
    used: u64,
    soft: u64,
    hard: u64,
    files: u64,
    isoft: u64,
    ihard: u64,
    header: bool,
    new_names: bool,
    long_name: bool,
    bover: bool,
    iover: bool,
    trailer: bool,
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    raw(&text);
    project(&text);
    if let Ok(r) = Rendered::arbitrary(&mut Unstructured::new(data)) {
        rendered(&r);
    }
});

fn raw(text: &str) {
    let parsed = parse_lfs_quota(text);
    if let Ok(r) = &parsed {
        assert_eq!(
            r.usage().bytes_used,
            r.kbytes_used.saturating_mul(1024),
            "{text:?}"
        );
        assert_eq!(r.usage().bytes_limit.is_some(), r.kbytes_hard > 0);
    }
    let headed = format!("Disk quotas for prj 1001 (pid 1001):\n{text}");
    assert_eq!(
        parse_lfs_quota(&headed).ok(),
        parsed.as_ref().ok().copied(),
        "{text:?}"
    );
    let trailed = format!("{text}\npid 1001 is using default block quota setting\n");
    if let Ok(r) = &parsed {
        assert_eq!(parse_lfs_quota(&trailed).ok(), Some(*r), "{text:?}");
    }
}

fn project(text: &str) {
    let Ok(attr) = parse_lfs_project(text) else {
        return;
    };
    assert!(!attr.path.contains('\n'), "{text:?}");
    let line = format!(
        "{:>5} {} {}",
        attr.id,
        if attr.inherit { 'P' } else { '-' },
        attr.path
    );
    assert_eq!(
        parse_lfs_project(&line).ok(),
        Some(attr),
        "{text:?} -> {line:?}"
    );
}

fn rendered(r: &Rendered) {
    let mut out = String::new();
    if r.header {
        out.push_str("Disk quotas for prj 1001 (pid 1001):\n");
        let names = if r.new_names {
            ["bquota", "blimit", "bgrace", "iquota", "ilimit", "igrace"]
        } else {
            ["quota", "limit", "grace", "quota", "limit", "grace"]
        };
        out.push_str(&format!(
            "{:>15}{:>8} {:>7}{:>8}{:>8}{:>8} {:>7}{:>8}{:>8}\n",
            "Filesystem",
            "kbytes",
            names[0],
            names[1],
            names[2],
            "files",
            names[3],
            names[4],
            names[5]
        ));
    }
    if r.long_name {
        out.push_str(&format!("/lustre/exascaler/testfs-zone-2\n{:15}", ""));
    } else {
        out.push_str(&format!("{:>15}", "/mnt/lustre"));
    }
    out.push_str(&format!(
        " {:>7}{} {:>6} {:>7} {:>7} {:>7}{} {:>6} {:>7} {:>7}\n",
        r.used,
        if r.bover { "*" } else { "" },
        r.soft,
        r.hard,
        if r.bover { "6d23h59m" } else { "-" },
        r.files,
        if r.iover { "*" } else { "" },
        r.isoft,
        r.ihard,
        if r.iover { "none" } else { "-" },
    ));
    if r.trailer {
        out.push_str("pid 1001 is using default file quota setting\n");
    }
    let parsed = parse_lfs_quota(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(
        parsed,
        QuotaReport {
            kbytes_used: r.used,
            kbytes_soft: r.soft,
            kbytes_hard: r.hard,
            files_used: r.files,
            files_soft: r.isoft,
            files_hard: r.ihard,
            inaccurate: false,
        },
        "\n{out}"
    );
}
