//! What the bench reads from /proc: memory of a process, its parent, its children, and the
//! machine's description.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{BenchError, Result};

/// Resident memory of a process, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Memory {
    /// `VmRSS`: resident now, KiB.
    pub rss_kib: u64,
    /// `VmHWM`: the resident peak since start, KiB.
    pub hwm_kib: u64,
    /// `RssAnon`: resident anonymous memory (heap, stacks), KiB.
    pub anon_kib: u64,
    /// `RssFile`: resident file-backed memory (the executable's and libraries' pages), KiB.
    pub file_kib: u64,
    /// `Threads`.
    pub threads: u64,
}

/// The memory lines of a `/proc/<pid>/status` text; `None` when `VmRSS` or `VmHWM` is
/// missing or any of the lines read is malformed (a kernel thread or a zombie has no
/// `VmRSS`). `RssAnon`, `RssFile` and `Threads` are 0 when absent.
pub fn parse_status_memory(text: &str) -> Option<Memory> {
    let mut rss = None;
    let mut hwm = None;
    let mut anon = None;
    let mut file = None;
    let mut threads = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (slot, unit) = match key {
            "VmRSS" => (&mut rss, Some("kB")),
            "VmHWM" => (&mut hwm, Some("kB")),
            "RssAnon" => (&mut anon, Some("kB")),
            "RssFile" => (&mut file, Some("kB")),
            "Threads" => (&mut threads, None),
            _ => continue,
        };
        let mut parts = value.split_whitespace();
        let number = parts.next()?.parse::<u64>().ok()?;
        if parts.next() != unit || parts.next().is_some() {
            return None;
        }
        *slot = Some(number);
    }
    Some(Memory {
        rss_kib: rss?,
        hwm_kib: hwm?,
        anon_kib: anon.unwrap_or(0),
        file_kib: file.unwrap_or(0),
        threads: threads.unwrap_or(0),
    })
}

/// The memory figures of process `pid`.
pub fn memory(pid: u32) -> Result<Memory> {
    let path = PathBuf::from(format!("/proc/{pid}/status"));
    let text = std::fs::read_to_string(&path).map_err(|e| BenchError::io("read", &path, e))?;
    parse_status_memory(&text)
        .ok_or_else(|| BenchError::Setup(format!("{} has no VmRSS/VmHWM", path.display())))
}

/// Resident KiB by kind of mapping, from a `/proc/<pid>/smaps` text: `executable` (the
/// mappings of `exe`), `shared libraries` (other files ending in `.so` or holding `.so.`),
/// `other files`, `heap` (`[heap]`), `stack` (`[stack]`), `anonymous` (no name: thread
/// stacks, allocator arenas) and `other` (`[vdso]` and such).
pub fn parse_smaps_rss(text: &str, exe: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut kind: Option<&'static str> = None;
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if first == "Rss:" {
            if let (Some(k), Some(n)) = (kind, fields.next().and_then(|v| v.parse::<u64>().ok())) {
                *out.entry(k.to_string()).or_default() += n;
            }
            continue;
        }
        // A mapping header: `start-end perms offset dev inode [path]`.
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            let path = fields.nth(4).unwrap_or("");
            kind = Some(match path {
                "" => "anonymous",
                "[heap]" => "heap",
                "[stack]" => "stack",
                p if p == exe => "executable",
                p if p.starts_with('[') => "other",
                p if is_shared_library(p) => "shared libraries",
                _ => "other files",
            });
        }
    }
    out
}

/// Whether `path`'s file name is a shared object's: `NAME.so` or `NAME.so.VERSION`.
fn is_shared_library(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    match name.split_once(".so") {
        Some((stem, "")) => !stem.is_empty(),
        Some((stem, version)) => {
            !stem.is_empty()
                && version.starts_with('.')
                && version[1..]
                    .split('.')
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        }
        None => false,
    }
}

/// Resident KiB of process `pid` by kind of mapping ([`parse_smaps_rss`]).
pub fn rss_by_mapping(pid: u32) -> BTreeMap<String, u64> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    parse_smaps_rss(&text, &exe)
}

/// The parent pid in a `/proc/<pid>/stat` text: the fourth field, counted after the command
/// name, which is in parentheses and may itself hold spaces and parentheses.
pub fn parse_stat_ppid(text: &str) -> Option<u32> {
    let (_, rest) = text.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let _state = fields.next()?;
    fields.next()?.parse().ok()
}

/// The processes whose parent is `parent` and whose executable's file name is `name`.
pub fn children_named(parent: u32, name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if parse_stat_ppid(&stat) != Some(parent) {
            continue;
        }
        let exe = std::fs::read_link(entry.path().join("exe")).unwrap_or_default();
        if exe.file_name().is_some_and(|n| n == name) {
            out.push(pid);
        }
    }
    out
}

/// The machine the figures were taken on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Online CPUs.
    pub cpus: usize,
    /// The CPU model name.
    pub cpu_model: String,
    /// Total memory, MiB.
    pub memory_mib: u64,
    /// Kernel release.
    pub kernel: String,
    /// 1-minute load average when the bench started (the machine may be shared).
    pub load_average_1m: f64,
}

fn read_trimmed(path: &Path) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Describes this machine.
pub fn machine() -> Machine {
    let cpuinfo = read_trimmed(Path::new("/proc/cpuinfo"));
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "model name").then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let memory_mib = read_trimmed(Path::new("/proc/meminfo"))
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib / 1024)
        .unwrap_or(0);
    let load_average_1m = read_trimmed(Path::new("/proc/loadavg"))
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    Machine {
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        cpu_model,
        memory_mib,
        kernel: read_trimmed(Path::new("/proc/sys/kernel/osrelease")),
        load_average_1m,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn status_memory_lines_are_read_in_kib() {
        let text = "Name:\tpfs-csi-node\nVmPeak:\t  20000 kB\nVmHWM:\t    4321 kB\nVmRSS:\t    4000 kB\nRssAnon:\t    1000 kB\nRssFile:\t    3000 kB\nThreads:\t3\n";
        assert_eq!(
            parse_status_memory(text),
            Some(Memory {
                rss_kib: 4000,
                hwm_kib: 4321,
                anon_kib: 1000,
                file_kib: 3000,
                threads: 3,
            })
        );
        assert_eq!(
            parse_status_memory("VmHWM:\t1 kB\nVmRSS:\t1 kB\nThreads:\t2 kB\n"),
            None
        );
        assert_eq!(parse_status_memory("Name:\tkthreadd\nThreads:\t1\n"), None);
        assert_eq!(parse_status_memory("VmHWM:\t1 kB\nVmRSS:\tx kB\n"), None);
        assert_eq!(parse_status_memory("VmHWM:\t1 MB\nVmRSS:\t1 kB\n"), None);
    }

    #[test]
    fn this_process_has_memory_figures() {
        let m = memory(std::process::id()).unwrap();
        assert!(m.rss_kib > 0 && m.hwm_kib >= m.rss_kib, "{m:?}");
        assert!(
            m.anon_kib + m.file_kib <= m.rss_kib && m.threads >= 1,
            "{m:?}"
        );
    }

    #[test]
    fn the_parent_is_read_after_the_command_name() {
        assert_eq!(parse_stat_ppid("42 (a) b) c) S 7 42 42 0"), Some(7));
        assert_eq!(parse_stat_ppid("1 (init) S 0 1 1"), Some(0));
        assert_eq!(parse_stat_ppid("garbage"), None);
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert_eq!(
            parse_stat_ppid(&own),
            Some(std::os::unix::process::parent_id())
        );
    }

    #[test]
    fn smaps_rss_is_summed_by_kind_of_mapping() {
        let text = "\
55d0-55d1 r--p 00000000 fe:00 12 /usr/bin/pfs-csi-node
Size:                400 kB
Rss:                 300 kB
55d1-55d2 r-xp 00001000 fe:00 12 /usr/bin/pfs-csi-node
Rss:                 700 kB
55d3-55d4 rw-p 00000000 00:00 0 [heap]
Rss:                 128 kB
7f00-7f01 rw-p 00000000 00:00 0
Rss:                  64 kB
7f02-7f03 r-xp 00000000 fe:00 99 /lib/x86_64-linux-gnu/libc.so.6
Rss:                1000 kB
7f04-7f05 r--p 00000000 fe:00 98 /etc/ld.so.cache
Rss:                  10 kB
7ffd-7ffe rw-p 00000000 00:00 0 [stack]
Rss:                  12 kB
7ffe-7fff r-xp 00000000 00:00 0 [vdso]
Rss:                   4 kB
";
        let by = parse_smaps_rss(text, "/usr/bin/pfs-csi-node");
        assert_eq!(by["executable"], 1000);
        assert_eq!(by["heap"], 128);
        assert_eq!(by["anonymous"], 64);
        assert_eq!(by["shared libraries"], 1000);
        assert_eq!(by["other files"], 10);
        assert_eq!(by["stack"], 12);
        assert_eq!(by["other"], 4);
        let own = rss_by_mapping(std::process::id());
        assert!(own.get("executable").copied().unwrap_or(0) > 0, "{own:?}");
    }

    proptest! {
        #[test]
        fn smaps_parsing_never_panics(text in "\\PC{0,300}") {
            let _ = parse_smaps_rss(&text, "/x");
        }

        #[test]
        fn any_command_name_leaves_the_parent_readable(comm in "[ -~]{0,15}", ppid in 0u32..4_000_000) {
            let text = format!("123 ({comm}) R {ppid} 123 123 0 -1");
            prop_assert_eq!(parse_stat_ppid(&text), Some(ppid));
        }

        #[test]
        fn status_parsing_never_panics(text in "\\PC{0,200}") {
            let _ = parse_status_memory(&text);
        }

        #[test]
        fn status_figures_round_trip(rss in 0u64..1 << 40, hwm in 0u64..1 << 40) {
            let text = format!("Name:\tx\nVmHWM:\t{hwm:>8} kB\nVmRSS:\t{rss:>8} kB\n");
            prop_assert_eq!(parse_status_memory(&text), Some(Memory { rss_kib: rss, hwm_kib: hwm, ..Memory::default() }));
        }
    }
}
