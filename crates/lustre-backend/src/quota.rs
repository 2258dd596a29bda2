//! Lustre project quotas through `lfs`, and parsers of what `lfs quota` and `lfs project`
//! print.
//!
//! - `lfs project -p ID -s DIR` ties a directory (and what is created in it) to project ID.
//! - `lfs setquota -p ID -b SOFTk -B HARDk -i ISOFT -I IHARD PATH` sets limits (0: none).
//! - `lfs quota -p ID PATH` reports usage and limits; `lfs project -d DIR` prints the
//!   project of a directory.
//!
//! The quota parser reads every shape `lfs quota` prints: with or without the header (`-q`),
//! the old (`kbytes quota limit grace files quota limit grace`) and new (`bquota blimit
//! bgrace ... iquota ilimit igrace`) column names, a long filesystem name alone on its line
//! with the numbers on the next, `*` after a value over its limit, `[...]` around an
//! inaccurate value, `-h` units (`526.5M`, `0k`, `13.57T`; block figures are KiB otherwise)
//! and trailer lines (`pid 1001 is using default file quota setting`, `Some errors happened`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use csi_core::ports::{Command, CommandRunner, QuotaLimits, QuotaManager, QuotaUsage};
use csi_core::{Error, Result};
use tracing::warn;

use crate::error::LustreError;

/// One project's usage and limits as `lfs quota` prints them (blocks in KiB).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaReport {
    /// KiB in use.
    pub kbytes_used: u64,
    /// Soft block limit in KiB (0: none).
    pub kbytes_soft: u64,
    /// Hard block limit in KiB (0: none).
    pub kbytes_hard: u64,
    /// Inodes in use.
    pub files_used: u64,
    /// Soft inode limit (0: none).
    pub files_soft: u64,
    /// Hard inode limit (0: none).
    pub files_hard: u64,
    /// Some value was marked inaccurate (`[...]`): a target did not answer.
    pub inaccurate: bool,
}

impl QuotaReport {
    /// Whether the project has usage or limits: someone owns it.
    pub fn in_use(&self) -> bool {
        self.kbytes_used > 0
            || self.files_used > 0
            || self.kbytes_soft > 0
            || self.kbytes_hard > 0
            || self.files_soft > 0
            || self.files_hard > 0
    }

    /// The port's view: bytes and inodes, limits `None` when unlimited.
    pub fn usage(&self) -> QuotaUsage {
        QuotaUsage {
            bytes_used: self.kbytes_used.saturating_mul(1024),
            bytes_limit: (self.kbytes_hard > 0).then(|| self.kbytes_hard.saturating_mul(1024)),
            inodes_used: self.files_used,
            inodes_limit: (self.files_hard > 0).then_some(self.files_hard),
        }
    }
}

/// A value as printed: the number, and whether it was bracketed (inaccurate).
fn parse_value(token: &str, blocks: bool) -> Option<(u64, bool)> {
    let t = token.trim_end_matches('*');
    let (t, inaccurate) = match t.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        Some(inner) => (inner.trim_end_matches('*'), true),
        None => (t, false),
    };
    if t.is_empty() {
        return None;
    }
    let (number, multiplier) = if blocks {
        match t.char_indices().last() {
            Some((i, 'k')) => (&t[..i], 1u64),
            Some((i, 'M')) => (&t[..i], 1 << 10),
            Some((i, 'G')) => (&t[..i], 1 << 20),
            Some((i, 'T')) => (&t[..i], 1 << 30),
            Some((i, 'P')) => (&t[..i], 1 << 40),
            Some((i, 'E')) => (&t[..i], 1 << 50),
            _ => (t, 1),
        }
    } else {
        (t, 1)
    };
    if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    if let Ok(whole) = number.parse::<u64>() {
        return whole.checked_mul(multiplier).map(|v| (v, inaccurate));
    }
    let value: f64 = number.parse().ok()?;
    let kib = (value * multiplier as f64).round();
    (kib.is_finite() && kib >= 0.0 && kib < u64::MAX as f64).then_some((kib as u64, inaccurate))
}

/// Whether a token is a figure (not a grace time, `-`, or a name).
fn is_figure(token: &str) -> bool {
    parse_value(token, true).is_some()
}

/// Which value position holds what.
#[derive(Debug, Clone, Copy)]
struct Layout {
    used: usize,
    bsoft: usize,
    bhard: usize,
    files: usize,
    isoft: usize,
    ihard: usize,
}

impl Layout {
    /// From the column line (without `Filesystem`), old or new names.
    fn from_columns(columns: &[&str]) -> Option<Layout> {
        let find = |names: &[&str], nth: usize| {
            columns
                .iter()
                .enumerate()
                .filter(|(_, c)| names.contains(c))
                .nth(nth)
                .map(|(i, _)| i)
        };
        let files = find(&["files", "inodes"], 0)?;
        let second = |old: &str, new: &str| {
            find(&[new], 0).or_else(|| {
                columns
                    .iter()
                    .enumerate()
                    .skip(files)
                    .find(|(_, c)| **c == old)
                    .map(|(i, _)| i)
            })
        };
        Some(Layout {
            used: find(&["kbytes", "used"], 0)?,
            bsoft: find(&["bquota", "quota"], 0)?,
            bhard: find(&["blimit", "limit"], 0)?,
            files,
            isoft: second("quota", "iquota")?,
            ihard: second("limit", "ilimit")?,
        })
    }
}

/// Reads one row's values (without the filesystem name).
fn parse_row(values: &[&str], columns: Option<&[&str]>) -> Option<QuotaReport> {
    let layout_values: Vec<&str>;
    let (layout, values) = match columns.and_then(Layout::from_columns) {
        Some(layout) if columns.map(<[&str]>::len) == Some(values.len()) => (layout, values),
        _ => {
            // No usable column line: the six figures in their fixed order; grace times and
            // `-` are not figures.
            layout_values = values.iter().copied().filter(|t| is_figure(t)).collect();
            if layout_values.len() != 6 {
                return None;
            }
            let fixed = Layout {
                used: 0,
                bsoft: 1,
                bhard: 2,
                files: 3,
                isoft: 4,
                ihard: 5,
            };
            (fixed, layout_values.as_slice())
        }
    };
    let mut inaccurate = false;
    let mut get = |i: usize, blocks: bool| -> Option<u64> {
        let (v, inacc) = parse_value(values.get(i)?, blocks)?;
        inaccurate |= inacc;
        Some(v)
    };
    Some(QuotaReport {
        kbytes_used: get(layout.used, true)?,
        kbytes_soft: get(layout.bsoft, true)?,
        kbytes_hard: get(layout.bhard, true)?,
        files_used: get(layout.files, false)?,
        files_soft: get(layout.isoft, false)?,
        files_hard: get(layout.ihard, false)?,
        inaccurate,
    })
}

/// Parses the output of `lfs quota -p ID [-q] [-h] PATH`: the first filesystem row.
pub fn parse_lfs_quota(output: &str) -> std::result::Result<QuotaReport, LustreError> {
    let mut columns: Option<Vec<&str>> = None;
    for line in output.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty()
            || trimmed.starts_with("Disk quotas for")
            || trimmed.starts_with("Disk default")
        {
            continue;
        }
        let tokens: Vec<&str> = trimmed.split_whitespace().collect();
        if tokens[0] == "Filesystem" {
            columns = Some(tokens[1..].to_vec());
            continue;
        }
        if tokens.len() == 1 && !is_figure(tokens[0]) {
            // A long filesystem name alone; its figures follow on the next line.
            continue;
        }
        let values = if is_figure(tokens[0]) {
            &tokens[..]
        } else {
            &tokens[1..]
        };
        if let Some(report) = parse_row(values, columns.as_deref()) {
            return Ok(report);
        }
    }
    Err(LustreError::Output {
        tool: "lfs quota",
        reason: format!("no quota row in {:?}", truncate(output)),
    })
}

/// A directory's project as `lfs project -d` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectAttr {
    /// The project id (0: none).
    pub id: u32,
    /// Whether new entries inherit it (`P`).
    pub inherit: bool,
    /// The path as printed.
    pub path: String,
}

/// Parses `lfs project -d DIR`: `<id> P|- <path>`.
pub fn parse_lfs_project(output: &str) -> std::result::Result<ProjectAttr, LustreError> {
    let err = |reason: String| LustreError::Output {
        tool: "lfs project",
        reason,
    };
    let line = output
        .lines()
        .map(str::trim_start)
        .find(|l| !l.trim().is_empty())
        .ok_or_else(|| err("no output".into()))?;
    let (id, rest) = line
        .split_once(char::is_whitespace)
        .ok_or_else(|| err(format!("{line:?} is not <id> <flag> <path>")))?;
    let rest = rest.trim_start();
    let (flag, path) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let id = id
        .parse()
        .map_err(|_| err(format!("{id:?} is not a project id")))?;
    let inherit = match flag {
        "P" => true,
        "-" => false,
        other => return Err(err(format!("{other:?} is not P or -"))),
    };
    Ok(ProjectAttr {
        id,
        inherit,
        path: path.trim_start().to_string(),
    })
}

fn truncate(text: &str) -> String {
    let mut t: String = text.chars().take(300).collect();
    if t.len() < text.len() {
        t.push_str("...");
    }
    t
}

/// Bytes to whole KiB, rounded up so a limit is never below what was asked.
pub fn kib_ceil(bytes: u64) -> u64 {
    bytes.div_ceil(1024)
}

/// Project quotas of one Lustre filesystem, through `lfs`.
#[derive(Clone)]
pub struct LustreQuota {
    runner: Arc<dyn CommandRunner>,
    lfs: PathBuf,
    path: PathBuf,
    timeout: Duration,
}

impl LustreQuota {
    /// Quotas of the filesystem that `path` (a mount point or any directory in it) lies on.
    pub fn new(
        runner: Arc<dyn CommandRunner>,
        lfs: impl Into<PathBuf>,
        path: impl Into<PathBuf>,
        timeout: Duration,
    ) -> Self {
        Self {
            runner,
            lfs: lfs.into(),
            path: path.into(),
            timeout,
        }
    }

    fn command(&self) -> Command {
        Command::new(&self.lfs, self.timeout)
    }

    /// The full report of `id`. Output with inaccurate values (a target did not answer) is
    /// accepted with a warning even though `lfs` exits non-zero.
    pub async fn report(&self, id: u32) -> Result<QuotaReport> {
        let cmd = self
            .command()
            .args(["quota", "-p"])
            .arg(id.to_string())
            .arg(self.path.as_os_str());
        let out = self.runner.run(&cmd).await?;
        if out.success() {
            return Ok(parse_lfs_quota(&out.stdout)?);
        }
        match parse_lfs_quota(&out.stdout) {
            Ok(report) if report.inaccurate || out.stdout.contains("Some errors happened") => {
                warn!(project = id, path = %self.path.display(), "lfs quota reported inaccurate figures");
                Ok(report)
            }
            _ => Err(out
                .check("lfs quota")
                .err()
                .unwrap_or_else(|| Error::Internal("lfs quota failed without a message".into()))),
        }
    }

    /// The project of directory `dir` (`lfs project -d`).
    pub async fn project_of(&self, dir: &Path) -> Result<ProjectAttr> {
        let cmd = self.command().args(["project", "-d"]).arg(dir.as_os_str());
        let out = self.runner.run(&cmd).await?.check("lfs project")?;
        Ok(parse_lfs_project(&out.stdout)?)
    }
}

#[async_trait]
impl QuotaManager for LustreQuota {
    async fn assign(&self, dir: &Path, id: u32) -> Result<()> {
        let cmd = self
            .command()
            .args(["project", "-p"])
            .arg(id.to_string())
            .arg("-s")
            .arg(dir.as_os_str());
        self.runner.run(&cmd).await?.check("lfs project")?;
        Ok(())
    }

    async fn set_limits(&self, id: u32, limits: &QuotaLimits) -> Result<()> {
        let kib = |b: Option<u64>| format!("{}k", b.map_or(0, kib_ceil));
        let count = |n: Option<u64>| n.unwrap_or(0).to_string();
        let cmd = self
            .command()
            .args(["setquota", "-p"])
            .arg(id.to_string())
            .args(["-b".to_string(), kib(limits.bytes_soft)])
            .args(["-B".to_string(), kib(limits.bytes_hard)])
            .args(["-i".to_string(), count(limits.inodes_soft)])
            .args(["-I".to_string(), count(limits.inodes_hard)])
            .arg(self.path.as_os_str());
        self.runner.run(&cmd).await?.check("lfs setquota")?;
        Ok(())
    }

    async fn usage(&self, id: u32) -> Result<QuotaUsage> {
        Ok(self.report(id).await?.usage())
    }

    async fn in_use(&self, id: u32) -> Result<bool> {
        Ok(self.report(id).await?.in_use())
    }

    async fn clear(&self, id: u32) -> Result<()> {
        self.set_limits(id, &QuotaLimits::default()).await
    }
}

/// How long a directory's project id, once read with `lfs project -d`, stands before it is
/// read again. Kubelet asks for each volume's stats about once a minute; the driver never
/// changes a volume's project, and an administrator who does is seen within this time.
pub const PROJECT_ID_TTL: Duration = Duration::from_secs(600);

/// How long the stats of a volume whose `lfs` timed out run no `lfs` again: a filesystem
/// whose servers are gone leaves each timed-out `lfs` stuck in the kernel, unkillable, and
/// kubelet asks every minute.
pub const LFS_TIMEOUT_BACKOFF: Duration = Duration::from_secs(300);

/// Values about directories as last seen, each for a time to live: project ids (for
/// [`PROJECT_ID_TTL`], so that a volume's stats run `lfs quota` alone most of the time),
/// `lfs` timeouts (for [`LFS_TIMEOUT_BACKOFF`]).
#[derive(Debug)]
pub(crate) struct PathCache<V: Copy> {
    ttl: Duration,
    ids: Mutex<HashMap<PathBuf, (V, Instant)>>,
}

/// Project ids of directories.
pub(crate) type ProjectIdCache = PathCache<u32>;

impl<V: Copy> PathCache<V> {
    /// An empty cache whose entries stand for `ttl`.
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            ids: Mutex::new(HashMap::new()),
        }
    }

    /// The value of `dir`, when seen less than the time to live ago.
    pub(crate) fn get(&self, dir: &Path) -> Option<V> {
        let ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        ids.get(dir)
            .filter(|(_, read)| read.elapsed() < self.ttl)
            .map(|(id, _)| *id)
    }

    /// Remembers `value` for `dir`, now; forgets entries past their time.
    pub(crate) fn put(&self, dir: &Path, value: V) {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        ids.retain(|_, (_, read)| read.elapsed() < self.ttl);
        ids.insert(dir.to_path_buf(), (value, Instant::now()));
    }

    /// Forgets `dir`.
    pub(crate) fn forget(&self, dir: &Path) {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        ids.remove(dir);
    }

    /// Directories remembered, expired ones included until the next `put`.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.ids.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use csi_core::ports::{CommandOutput, MockCommandRunner};
    use proptest::prelude::*;

    #[test]
    fn project_ids_stand_for_their_time_and_can_be_forgotten() {
        let cache = ProjectIdCache::new(Duration::from_secs(60));
        let (a, b) = (Path::new("/mnt/a"), Path::new("/mnt/b"));
        assert_eq!(cache.get(a), None);
        cache.put(a, 1001);
        cache.put(b, 0);
        assert_eq!((cache.get(a), cache.get(b)), (Some(1001), Some(0)));
        cache.forget(a);
        assert_eq!((cache.get(a), cache.get(b)), (None, Some(0)));

        let expired = ProjectIdCache::new(Duration::ZERO);
        expired.put(a, 7);
        assert_eq!(expired.get(a), None);
        // Entries past their time go at the next put.
        expired.put(b, 8);
        assert_eq!(expired.len(), 1);
    }

    const CLASSIC: &str = "\
Disk quotas for prj 1001 (pid 1001):
     Filesystem  kbytes   quota   limit   grace   files   quota   limit   grace
    /mnt/lustre       4       0 1048576       -       1       0       0       -
";

    const NEW_COLUMNS: &str = "\
Disk quotas for prj 2002 (pid 2002):
     Filesystem  kbytes  bquota  blimit  bgrace   files  iquota  ilimit  igrace
    /mnt/lustre    2048    1024    4096       -      10      50     100       -
pid 2002 is using default file quota setting
";

    const WRAPPED: &str = "\
Disk quotas for prj 1001 (pid 1001):
     Filesystem  kbytes   quota   limit   grace   files   quota   limit   grace
/lustre/exascaler/testfs-zone-2
                 524288       0 1048576       -    1203       0       0       -
";

    const OVER_LIMIT: &str = "\
Disk quotas for prj 7 (pid 7):
     Filesystem  kbytes   quota   limit   grace   files   quota   limit   grace
         /exaFS    1200*   1000    1100  6d23h59m       5       0       0       -
";

    const HUMAN: &str = "\
Disk quotas for prj 1001 (pid 1001):
     Filesystem    used   quota   limit   grace   files   quota   limit   grace
    /mnt/lustre  526.5M      0k      1G       -     123       0       0       -
";

    const QUIET: &str =
        "    /mnt/lustre   13.57T      0k  15.5T       -  900000*      0  900000   none\n";

    const INACCURATE: &str = "\
Disk quotas for prj 9 (pid 9):
     Filesystem  kbytes   quota   limit   grace   files   quota   limit   grace
    /mnt/lustre     [4]       0    2048       -       1       0       0       -
Some errors happened when getting quota info. Some devices may be not working or deactivated. The data in \"[]\" is inaccurate.
";

    #[test]
    fn every_output_shape_is_read() {
        let r = parse_lfs_quota(CLASSIC).unwrap();
        assert_eq!(
            (
                r.kbytes_used,
                r.kbytes_soft,
                r.kbytes_hard,
                r.files_used,
                r.files_soft,
                r.files_hard
            ),
            (4, 0, 1048576, 1, 0, 0)
        );
        assert!(!r.inaccurate);

        let r = parse_lfs_quota(NEW_COLUMNS).unwrap();
        assert_eq!(
            (
                r.kbytes_used,
                r.kbytes_soft,
                r.kbytes_hard,
                r.files_used,
                r.files_soft,
                r.files_hard
            ),
            (2048, 1024, 4096, 10, 50, 100)
        );

        let r = parse_lfs_quota(WRAPPED).unwrap();
        assert_eq!(
            (r.kbytes_used, r.kbytes_hard, r.files_used),
            (524288, 1048576, 1203)
        );

        let r = parse_lfs_quota(OVER_LIMIT).unwrap();
        assert_eq!(
            (r.kbytes_used, r.kbytes_soft, r.kbytes_hard, r.files_used),
            (1200, 1000, 1100, 5)
        );

        let r = parse_lfs_quota(HUMAN).unwrap();
        assert_eq!(r.kbytes_used, 539136, "526.5 MiB in KiB");
        assert_eq!(r.kbytes_hard, 1 << 20);
        assert_eq!(r.files_used, 123);

        let r = parse_lfs_quota(QUIET).unwrap();
        assert_eq!(
            r.kbytes_used,
            (13.57f64 * (1u64 << 30) as f64).round() as u64
        );
        assert_eq!(r.kbytes_hard, 15.5f64 as u64 * (1 << 30) + (1 << 29));
        assert_eq!((r.files_used, r.files_hard), (900000, 900000));

        let r = parse_lfs_quota(INACCURATE).unwrap();
        assert!(r.inaccurate);
        assert_eq!((r.kbytes_used, r.kbytes_hard), (4, 2048));

        let usage = parse_lfs_quota(CLASSIC).unwrap().usage();
        assert_eq!(
            usage,
            QuotaUsage {
                bytes_used: 4096,
                bytes_limit: Some(1 << 30),
                inodes_used: 1,
                inodes_limit: None
            }
        );
    }

    #[test]
    fn output_without_a_row_is_an_error() {
        for text in [
            "",
            "Disk quotas for prj 1 (pid 1):\n     Filesystem  kbytes\n",
            "lfs: quotactl failed: No such device\n",
            "pid 1 is using default file quota setting\n",
        ] {
            let err = parse_lfs_quota(text).unwrap_err();
            assert!(err.to_string().contains("lfs quota"), "{err}");
        }
    }

    #[test]
    fn project_lines_are_read() {
        assert_eq!(
            parse_lfs_project(" 1001 P /mnt/lustre/pvc-1\n").unwrap(),
            ProjectAttr {
                id: 1001,
                inherit: true,
                path: "/mnt/lustre/pvc-1".into()
            }
        );
        assert_eq!(
            parse_lfs_project("    0 - /mnt/lustre/with space\n").unwrap(),
            ProjectAttr {
                id: 0,
                inherit: false,
                path: "/mnt/lustre/with space".into()
            }
        );
        for bad in ["", "x P /a", "1 Q /a", "4294967296 P /a"] {
            assert!(parse_lfs_project(bad).is_err(), "{bad:?}");
        }
    }

    fn ok(stdout: &str) -> CommandOutput {
        CommandOutput {
            status: Some(0),
            stdout: stdout.into(),
            stderr: String::new(),
        }
    }

    #[tokio::test]
    async fn commands_have_the_lfs_syntax_and_a_timeout() {
        let mut runner = MockCommandRunner::new();
        let mut seq = mockall::Sequence::new();
        let expect = |runner: &mut MockCommandRunner,
                      seq: &mut mockall::Sequence,
                      line: &'static str,
                      reply: CommandOutput| {
            runner
                .expect_run()
                .times(1)
                .in_sequence(seq)
                .withf(move |c| c.display() == line && c.timeout == Duration::from_secs(7))
                .return_once(move |_| Ok(reply));
        };
        expect(
            &mut runner,
            &mut seq,
            "/sim/lfs project -p 1001 -s /exaFS/pvc-1",
            ok(""),
        );
        expect(
            &mut runner,
            &mut seq,
            "/sim/lfs setquota -p 1001 -b 0k -B 1048576k -i 0 -I 0 /exaFS",
            ok(""),
        );
        expect(
            &mut runner,
            &mut seq,
            "/sim/lfs quota -p 1001 /exaFS",
            ok(CLASSIC),
        );
        expect(
            &mut runner,
            &mut seq,
            "/sim/lfs quota -p 1002 /exaFS",
            ok(&CLASSIC.replace(
                "       4       0 1048576       -       1",
                "       0       0       0       -       0",
            )),
        );
        expect(
            &mut runner,
            &mut seq,
            "/sim/lfs setquota -p 1001 -b 0k -B 0k -i 0 -I 0 /exaFS",
            ok(""),
        );
        expect(
            &mut runner,
            &mut seq,
            "/sim/lfs project -d /exaFS/pvc-1",
            ok(" 1001 P /exaFS/pvc-1\n"),
        );
        let quota = LustreQuota::new(
            Arc::new(runner),
            "/sim/lfs",
            "/exaFS",
            Duration::from_secs(7),
        );
        quota.assign(Path::new("/exaFS/pvc-1"), 1001).await.unwrap();
        quota
            .set_limits(
                1001,
                &QuotaLimits {
                    bytes_hard: Some((1 << 30) - 5),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(quota.usage(1001).await.unwrap().bytes_limit, Some(1 << 30));
        assert!(!quota.in_use(1002).await.unwrap());
        quota.clear(1001).await.unwrap();
        assert_eq!(
            quota
                .project_of(Path::new("/exaFS/pvc-1"))
                .await
                .unwrap()
                .id,
            1001
        );
    }

    #[tokio::test]
    async fn failures_carry_the_tool_message_but_inaccurate_figures_are_used() {
        let mut runner = MockCommandRunner::new();
        runner.expect_run().times(1).returning(|_| {
            Ok(CommandOutput {
                status: Some(1),
                stdout: String::new(),
                stderr: "quotactl failed: No such device".into(),
            })
        });
        runner.expect_run().times(1).returning(|_| {
            Ok(CommandOutput {
                status: Some(5),
                stdout: INACCURATE.into(),
                stderr: String::new(),
            })
        });
        let quota = LustreQuota::new(Arc::new(runner), "lfs", "/exaFS", Duration::from_secs(1));
        let err = quota.usage(1).await.unwrap_err();
        assert!(err.to_string().contains("No such device"), "{err}");
        assert_eq!(quota.usage(9).await.unwrap().bytes_used, 4096);
    }

    /// `%5.4g` as C prints it, for the `-h` figures.
    fn g4(v: f64) -> String {
        let digits = if v == 0.0 {
            0
        } else {
            v.abs().log10().floor() as i32
        };
        let decimals = (3 - digits).max(0) as usize;
        let s = format!("{v:.decimals$}");
        let s = if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        };
        format!("{s:>5}")
    }

    fn kbytes(num: u64, human: bool) -> String {
        if !human {
            return num.to_string();
        }
        for (shift, unit) in [(40, 'P'), (30, 'T'), (20, 'G'), (10, 'M')] {
            if num >> shift > 0 {
                return format!("{}{unit}", g4(num as f64 / (1u64 << shift) as f64));
            }
        }
        format!("{num}k")
    }

    #[derive(Debug, Clone)]
    struct Shape {
        header: bool,
        new_names: bool,
        human: bool,
        long_name: bool,
        bover: bool,
        iover: bool,
        trailer: bool,
    }

    fn render(r: &QuotaReport, s: &Shape) -> String {
        let mut out = String::new();
        if s.header {
            out.push_str("Disk quotas for prj 1001 (pid 1001):\n");
            let (q, l, g) = if s.new_names {
                (
                    ("bquota", "iquota"),
                    ("blimit", "ilimit"),
                    ("bgrace", "igrace"),
                )
            } else {
                (("quota", "quota"), ("limit", "limit"), ("grace", "grace"))
            };
            out.push_str(&format!(
                "{:>15}{:>8} {:>7}{:>8}{:>8}{:>8} {:>7}{:>8}{:>8}\n",
                "Filesystem",
                if s.human { "used" } else { "kbytes" },
                q.0,
                l.0,
                g.0,
                "files",
                q.1,
                l.1,
                g.1
            ));
        }
        let mnt = if s.long_name {
            "/lustre/exascaler/a-very-long-mount"
        } else {
            "/mnt/lustre"
        };
        if mnt.len() > 15 {
            out.push_str(&format!("{mnt}\n{:15}", ""));
        } else {
            out.push_str(&format!("{mnt:>15}"));
        }
        out.push_str(&format!(
            " {:>7}{} {:>6} {:>7} {:>7}",
            kbytes(r.kbytes_used, s.human),
            if s.bover { '*' } else { ' ' },
            kbytes(r.kbytes_soft, s.human),
            kbytes(r.kbytes_hard, s.human),
            if s.bover { "6d23h" } else { "-" }
        ));
        out.push_str(&format!(
            " {:>7}{} {:>6} {:>7} {:>7}\n",
            r.files_used,
            if s.iover { '*' } else { ' ' },
            r.files_soft,
            r.files_hard,
            if s.iover { "none" } else { "-" }
        ));
        if s.trailer {
            out.push_str("pid 1001 is using default block quota setting\n");
        }
        out
    }

    fn close(parsed: u64, original: u64, human: bool) -> bool {
        if !human {
            return parsed == original;
        }
        // Four significant digits: within 0.05% (plus rounding of small values).
        let diff = parsed.abs_diff(original) as f64;
        diff <= original as f64 * 5e-4 + 1.0
    }

    proptest! {
        #[test]
        fn rendered_reports_parse_back(
            used in 0u64..1 << 52, soft in 0u64..1 << 52, hard in 0u64..1 << 52,
            files in 0u64..1 << 40, isoft in 0u64..1 << 32, ihard in 0u64..1 << 32,
            header: bool, new_names: bool, human: bool, long_name: bool, bover: bool, iover: bool, trailer: bool,
        ) {
            let report = QuotaReport { kbytes_used: used, kbytes_soft: soft, kbytes_hard: hard, files_used: files, files_soft: isoft, files_hard: ihard, inaccurate: false };
            let shape = Shape { header, new_names, human, long_name, bover, iover, trailer };
            let text = render(&report, &shape);
            let parsed = parse_lfs_quota(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
            prop_assert!(close(parsed.kbytes_used, used, human), "{} vs {used}\n{text}", parsed.kbytes_used);
            prop_assert!(close(parsed.kbytes_soft, soft, human));
            prop_assert!(close(parsed.kbytes_hard, hard, human));
            prop_assert_eq!((parsed.files_used, parsed.files_soft, parsed.files_hard), (files, isoft, ihard));
        }

        #[test]
        fn project_lines_parse_back(id: u32, inherit: bool, path in "/[a-zA-Z0-9 _./-]{0,40}") {
            let line = format!("{id:>5} {} {path}\n", if inherit { 'P' } else { '-' });
            let attr = parse_lfs_project(&line).unwrap();
            prop_assert_eq!(attr, ProjectAttr { id, inherit, path: path.trim_start().to_string() });
        }

        #[test]
        fn parsers_never_panic(text in "(?s)\\PC{0,300}") {
            let _ = parse_lfs_quota(&text);
            let _ = parse_lfs_project(&text);
        }
    }
}
