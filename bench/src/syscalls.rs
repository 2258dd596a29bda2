//! What the node plugin asks of the kernel per publish+unpublish: `strace` attached to the
//! running plugin (all its threads) during a loop of sequential pairs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;

use crate::error::{BenchError, Result};

/// Syscalls per publish+unpublish pair.
#[derive(Debug, Clone, Serialize)]
pub struct SyscallReport {
    /// Pairs traced (each count is divided by this).
    pub pairs: usize,
    /// Every syscall the plugin's threads made, per pair, by name (`strace -c -f`).
    pub per_pair: BTreeMap<String, f64>,
    /// All syscalls per pair.
    pub total_per_pair: f64,
    /// Path-taking syscalls per pair by syscall and path (`strace -f -e trace=%file`),
    /// target-specific paths shown as `<pod>/...`.
    pub paths_per_pair: BTreeMap<String, f64>,
    /// `write`/`writev` calls per pair by file descriptor and what it is (`eventfd`: a
    /// thread waking the async runtime; a pipe or file on fd 2: log lines).
    pub writes_per_pair: BTreeMap<String, f64>,
}

/// A line of an `strace -f` trace without its leading pid, if it has one.
fn without_pid(line: &str) -> &str {
    let line = line.trim_start();
    match line.split_once(' ') {
        Some((pid, tail)) if pid.bytes().all(|b| b.is_ascii_digit()) => tail.trim_start(),
        _ => line,
    }
}

/// `write` and `writev` calls by file descriptor in an `strace -f -e trace=write,writev`
/// trace (resumed halves skipped).
pub fn parse_write_fds(text: &str) -> BTreeMap<u32, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let rest = without_pid(line);
        let Some(args) = rest
            .strip_prefix("write(")
            .or_else(|| rest.strip_prefix("writev("))
        else {
            continue;
        };
        if let Some(fd) = args
            .split(',')
            .next()
            .and_then(|f| f.trim().parse::<u32>().ok())
        {
            *out.entry(fd).or_default() += 1;
        }
    }
    out
}

/// What file descriptor `fd` of `pid` is (`/proc/<pid>/fd/<fd>`), or `closed`.
pub fn describe_fd(pid: u32, fd: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "closed".into())
}

/// Rows of an `strace -c` summary: syscall name and calls.
pub fn parse_summary(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // % time, seconds, usecs/call, calls, [errors,] syscall
        if !(5..=6).contains(&fields.len()) || fields[0].parse::<f64>().is_err() {
            continue;
        }
        let name = fields[fields.len() - 1];
        if name == "total" {
            continue;
        }
        if let Ok(calls) = fields[3].parse::<u64>() {
            *out.entry(name.to_string()).or_default() += calls;
        }
    }
    out
}

/// `syscall path` for each call line of an `strace -f` trace that names a path; paths
/// below `pod` become `<pod>/...`. Resumed halves of interrupted calls are skipped.
pub fn parse_path_calls(text: &str, pod: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let rest = without_pid(line);
        if rest.starts_with('<') || rest.starts_with("---") || rest.starts_with("+++") {
            continue;
        }
        let Some((name, args)) = rest.split_once('(') else {
            continue;
        };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue;
        }
        let path = args
            .split_once('"')
            .and_then(|(_, tail)| tail.split_once('"'))
            .map(|(p, _)| p);
        let Some(path) = path else { continue };
        let shown = if !pod.is_empty() && path.starts_with(pod) {
            "<pod>/...".to_string()
        } else {
            path.to_string()
        };
        *out.entry(format!("{name} {shown}")).or_default() += 1;
    }
    out
}

/// Whether every thread of `pid` is traced.
fn all_threads_traced(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    let mut any = false;
    for task in tasks.flatten() {
        any = true;
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let traced = status
            .lines()
            .find_map(|l| l.strip_prefix("TracerPid:"))
            .is_some_and(|v| v.trim() != "0");
        if !traced {
            return false;
        }
    }
    any
}

/// `strace` attached to a running process, writing to a file.
pub struct Tracer {
    child: Child,
    output: PathBuf,
}

impl Tracer {
    /// Attaches `strace ARGS -f -q -o OUTPUT -p PID` and waits until every thread is traced.
    pub async fn attach(strace: &Path, args: &[&str], pid: u32, output: &Path) -> Result<Tracer> {
        let child = Command::new(strace)
            .args(args)
            .args(["-f", "-q", "-o"])
            .arg(output)
            .arg("-p")
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| BenchError::io("start", strace, e))?;
        let tracer = Tracer {
            child,
            output: output.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !all_threads_traced(pid) {
            if Instant::now() > deadline {
                tracer.detach().await;
                return Err(BenchError::Setup(format!(
                    "strace did not attach to every thread of {pid}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(tracer)
    }

    /// Detaches (SIGINT makes strace write its summary) and returns what it wrote.
    pub async fn detach(mut self) -> String {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }
}

/// Divides every count by `pairs`.
pub fn per_pair(counts: BTreeMap<String, u64>, pairs: usize) -> BTreeMap<String, f64> {
    counts
        .into_iter()
        .map(|(k, v)| (k, v as f64 / pairs.max(1) as f64))
        .collect()
}

/// The absolute path of `strace`, if installed.
pub fn find_strace() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("strace"))
            .find(|p| p.is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn summary_rows_with_and_without_errors_are_read() {
        let text = "\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 45.00    0.000450          10        45         3 statx
 20.00    0.000200          20        10           mount
  0.00    0.000000           0         1           umount2
------ ----------- ----------- --------- --------- ----------------
100.00    0.001000          17        56         3 total
";
        let rows = parse_summary(text);
        assert_eq!(rows.get("statx"), Some(&45));
        assert_eq!(rows.get("mount"), Some(&10));
        assert_eq!(rows.get("umount2"), Some(&1));
        assert_eq!(rows.get("total"), None);
        assert_eq!(rows.len(), 3);
    }

    #[test]
    fn path_calls_are_counted_with_pod_paths_folded() {
        let text = r#"101   openat(AT_FDCWD, "/proc/self/mountinfo", O_RDONLY|O_CLOEXEC) = 9
101 statx(AT_FDCWD, "/pods/v1/t1", AT_STATX_SYNC_AS_STAT, STATX_ALL <unfinished ...>
102 <... statx resumed>{stx_mask=0}) = 0
102 mount("/mnt/exa1/v1", "/pods/v1/t2", NULL, MS_BIND, NULL) = 0
102 --- SIGCHLD {si_signo=SIGCHLD} ---
103 +++ exited with 0 +++
umount2("/pods/v1/t1", 0) = 0
"#;
        let calls = parse_path_calls(text, "/pods");
        assert_eq!(calls.get("openat /proc/self/mountinfo"), Some(&1));
        assert_eq!(calls.get("statx <pod>/..."), Some(&1));
        assert_eq!(calls.get("mount /mnt/exa1/v1"), Some(&1));
        assert_eq!(calls.get("umount2 <pod>/..."), Some(&1));
        assert_eq!(calls.values().sum::<u64>(), 4);
        assert_eq!(per_pair(calls, 2).get("mount /mnt/exa1/v1"), Some(&0.5));
    }

    #[test]
    fn writes_are_counted_by_descriptor() {
        let text = "7  write(4, \"\\1\\0\\0\\0\\0\\0\\0\\0\", 8) = 8\n8 writev(2, [{iov_base=\"x\", iov_len=1}], 1) = 1\n7 write(4, \"\\1\", 8 <unfinished ...>\n8 <... write resumed>) = 8\n";
        let fds = parse_write_fds(text);
        assert_eq!(fds.get(&4), Some(&2));
        assert_eq!(fds.get(&2), Some(&1));
        assert_eq!(fds.len(), 2);
        assert_eq!(describe_fd(std::process::id(), 999_999), "closed");
    }

    proptest! {
        #[test]
        fn parsers_never_panic(text in "\\PC{0,300}") {
            let _ = parse_write_fds(&text);
            let _ = parse_summary(&text);
            let _ = parse_path_calls(&text, "/p");
        }

        #[test]
        fn summary_calls_round_trip(calls in 0u64..1_000_000, name in "[a-z_0-9]{1,16}") {
            prop_assume!(name != "total");
            let text = format!(" 10.00    0.000100           1 {calls:>9}           {name}\n");
            prop_assert_eq!(parse_summary(&text).get(&name).copied(), Some(calls));
        }
    }
}
