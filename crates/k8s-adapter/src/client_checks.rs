//! Whether a filesystem client is usable on this node: its kernel modules are
//! loaded and its user-space tools are present.
//!
//! The checks only read files under roots given as parameters (`/proc`,
//! `/sys`, tool candidates), so tests run them against temporary trees
//! without root or real modules.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A filesystem type whose client the node plugin checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClientKind {
    /// Lustre (EXAScaler).
    Lustre,
    /// BeeGFS.
    Beegfs,
}

impl ClientKind {
    /// The lower-case name used in labels and logs (`lustre`, `beegfs`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Lustre => "lustre",
            Self::Beegfs => "beegfs",
        }
    }

    /// The kernel modules the client needs, in load order.
    pub fn modules(self) -> &'static [&'static str] {
        match self {
            Self::Lustre => &["lnet", "lustre"],
            Self::Beegfs => &["beegfs"],
        }
    }
}

impl fmt::Display for ClientKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One user-space tool the client needs; any one existing executable
/// candidate satisfies it (alternatives such as `beegfs-ctl` or `beegfs`
/// are one requirement with the candidates of both).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolRequirement {
    /// What is needed, for messages (`lfs`, `beegfs-ctl or beegfs`).
    pub what: String,
    /// Paths to try, in order.
    pub candidates: Vec<PathBuf>,
}

impl ToolRequirement {
    /// A requirement named `what` satisfied by any of `candidates`.
    pub fn new(what: impl Into<String>, candidates: Vec<PathBuf>) -> Self {
        Self {
            what: what.into(),
            candidates,
        }
    }

    /// The first candidate that is an executable regular file.
    pub fn find(&self) -> Option<&Path> {
        self.candidates
            .iter()
            .map(PathBuf::as_path)
            .find(|path| is_executable_file(path))
    }
}

/// Everything one filesystem's client needs on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRequirements {
    /// The filesystem type.
    pub kind: ClientKind,
    /// Kernel modules that must be loaded.
    pub modules: Vec<String>,
    /// User-space tools that must be present.
    pub tools: Vec<ToolRequirement>,
}

impl ClientRequirements {
    /// The modules of `kind` and the given tools.
    pub fn new(kind: ClientKind, tools: Vec<ToolRequirement>) -> Self {
        Self {
            kind,
            modules: kind.modules().iter().map(|m| m.to_string()).collect(),
            tools,
        }
    }
}

/// Where the kernel's views are mounted: `/proc` and `/sys` on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPaths {
    /// The procfs root (reads `<proc>/modules`).
    pub proc_root: PathBuf,
    /// The sysfs root (reads `<sys>/module/<name>`).
    pub sys_root: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        Self {
            proc_root: PathBuf::from("/proc"),
            sys_root: PathBuf::from("/sys"),
        }
    }
}

/// Whether a client is usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientState {
    /// Modules loaded and tools found.
    Ready,
    /// Something is missing; the status says what.
    Missing,
}

impl ClientState {
    /// The label value (`ready`, `missing`).
    pub fn label_value(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Missing => "missing",
        }
    }
}

impl fmt::Display for ClientState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label_value())
    }
}

/// The outcome of one check, with the reason in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientStatus {
    /// Ready or missing.
    pub state: ClientState,
    /// Why: what is missing, or what was found.
    pub reason: String,
}

/// Checks one client against the host's module lists and the tool candidates.
pub fn check_client(requirements: &ClientRequirements, host: &HostPaths) -> ClientStatus {
    let proc_modules = read_proc_modules(&host.proc_root);
    let mut missing = Vec::new();
    for module in &requirements.modules {
        match module_state(module, proc_modules.as_deref(), &host.sys_root) {
            ModuleState::Live => {}
            ModuleState::Transitional(state) => {
                missing.push(format!("kernel module {module} is {state}"))
            }
            ModuleState::Absent => missing.push(format!("kernel module {module} is not loaded")),
        }
    }
    let mut found = Vec::new();
    for tool in &requirements.tools {
        match tool.find() {
            Some(path) => found.push(path.display().to_string()),
            None => missing.push(format!(
                "tool {} not found (looked at {})",
                tool.what,
                tool.candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
    if missing.is_empty() {
        let modules = requirements.modules.join(", ");
        let reason = if found.is_empty() {
            format!(
                "{} client ready: modules {modules} loaded",
                requirements.kind
            )
        } else {
            format!(
                "{} client ready: modules {modules} loaded; tools {}",
                requirements.kind,
                found.join(", ")
            )
        };
        ClientStatus {
            state: ClientState::Ready,
            reason,
        }
    } else {
        ClientStatus {
            state: ClientState::Missing,
            reason: format!(
                "{} client missing: {}",
                requirements.kind,
                missing.join("; ")
            ),
        }
    }
}

/// What the kernel says about one module.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ModuleState {
    /// Loaded and usable.
    Live,
    /// Being loaded or unloaded (the state word from `/proc/modules`).
    Transitional(String),
    /// Not loaded.
    Absent,
}

fn read_proc_modules(proc_root: &Path) -> Option<String> {
    std::fs::read_to_string(proc_root.join("modules")).ok()
}

/// A module is live when `/proc/modules` lists it as `Live`; when that file
/// cannot be read (or does not list it) a `/sys/module/<name>` directory with
/// an `initstate` of `live`, or without `initstate` (built into the kernel),
/// counts too.
fn module_state(name: &str, proc_modules: Option<&str>, sys_root: &Path) -> ModuleState {
    let wanted = normalize_module_name(name);
    if let Some(text) = proc_modules {
        for entry in parse_proc_modules(text) {
            if normalize_module_name(entry.name) == wanted {
                return if entry.state == "Live" {
                    ModuleState::Live
                } else {
                    ModuleState::Transitional(entry.state.to_lowercase())
                };
            }
        }
    }
    let dir = sys_root.join("module").join(&wanted);
    if !dir.is_dir() {
        return ModuleState::Absent;
    }
    match std::fs::read_to_string(dir.join("initstate")) {
        Ok(state) if state.trim() == "live" => ModuleState::Live,
        Ok(state) => ModuleState::Transitional(state.trim().to_string()),
        // Built-in modules have a directory (for their parameters) but no initstate.
        Err(_) => ModuleState::Live,
    }
}

/// The kernel treats `-` and `_` in module names alike and shows `_`.
fn normalize_module_name(name: &str) -> String {
    name.replace('-', "_")
}

/// One line of `/proc/modules`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ProcModule<'a> {
    name: &'a str,
    state: &'a str,
}

/// Parses `/proc/modules`: `name size refcount deps state address [taint]`
/// per line. Lines with fewer than five fields are skipped; an absent state
/// is never assumed live.
fn parse_proc_modules(text: &str) -> impl Iterator<Item = ProcModule<'_>> {
    text.lines().filter_map(|line| {
        let mut fields = line.split_whitespace();
        let name = fields.next()?;
        let state = fields.nth(3)?;
        Some(ProcModule { name, state })
    })
}

/// An existing regular file (after symlinks) with an execute bit.
fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use csi_core::client_tools::tool_candidates;
    use proptest::prelude::*;

    struct Host {
        dir: tempfile::TempDir,
    }

    impl Host {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(dir.path().join("proc")).unwrap();
            std::fs::create_dir_all(dir.path().join("sys/module")).unwrap();
            std::fs::create_dir_all(dir.path().join("bin")).unwrap();
            Self { dir }
        }

        fn paths(&self) -> HostPaths {
            HostPaths {
                proc_root: self.dir.path().join("proc"),
                sys_root: self.dir.path().join("sys"),
            }
        }

        fn proc_modules(&self, text: &str) -> &Self {
            std::fs::write(self.dir.path().join("proc/modules"), text).unwrap();
            self
        }

        fn sys_module(&self, name: &str, initstate: Option<&str>) -> &Self {
            let dir = self.dir.path().join("sys/module").join(name);
            std::fs::create_dir_all(&dir).unwrap();
            if let Some(state) = initstate {
                std::fs::write(dir.join("initstate"), format!("{state}\n")).unwrap();
            }
            self
        }

        fn tool(&self, name: &str, mode: u32) -> PathBuf {
            let path = self.dir.path().join("bin").join(name);
            std::fs::write(&path, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path
        }

        fn bin(&self) -> PathBuf {
            self.dir.path().join("bin")
        }
    }

    fn line(name: &str, state: &str) -> String {
        format!("{name} 1234 0 - {state} 0x0000000000000000 (OE)\n")
    }

    fn lustre(host: &Host) -> ClientRequirements {
        ClientRequirements::new(
            ClientKind::Lustre,
            vec![ToolRequirement::new(
                "lfs",
                tool_candidates(Path::new("lfs"), &[host.bin()]),
            )],
        )
    }

    #[test]
    fn lustre_with_both_modules_live_and_lfs_present_is_ready() {
        let host = Host::new();
        host.proc_modules(&(line("lnet", "Live") + &line("lustre", "Live")));
        let lfs = host.tool("lfs", 0o755);
        let status = check_client(&lustre(&host), &host.paths());
        assert_eq!(status.state, ClientState::Ready, "{}", status.reason);
        assert!(status.reason.contains(&lfs.display().to_string()));
    }

    #[test]
    fn a_missing_module_gives_missing_naming_the_module() {
        let host = Host::new();
        host.proc_modules(&(line("lnet", "Live") + &line("ext4", "Live")));
        host.tool("lfs", 0o755);
        let status = check_client(&lustre(&host), &host.paths());
        assert_eq!(status.state, ClientState::Missing);
        assert_eq!(
            status.reason,
            "lustre client missing: kernel module lustre is not loaded"
        );
    }

    #[test]
    fn a_module_being_unloaded_is_not_usable() {
        let host = Host::new();
        host.proc_modules(&(line("lnet", "Live") + &line("lustre", "Unloading")));
        host.tool("lfs", 0o755);
        let status = check_client(&lustre(&host), &host.paths());
        assert_eq!(status.state, ClientState::Missing);
        assert!(
            status.reason.contains("kernel module lustre is unloading"),
            "{}",
            status.reason
        );
    }

    #[test]
    fn sys_module_counts_when_proc_modules_is_unreadable() {
        let host = Host::new();
        host.sys_module("beegfs", Some("live"));
        let beegfs = ClientRequirements::new(ClientKind::Beegfs, vec![]);
        assert_eq!(
            check_client(&beegfs, &host.paths()).state,
            ClientState::Ready
        );
        host.sys_module("beegfs", Some("going"));
        let status = check_client(&beegfs, &host.paths());
        assert_eq!(status.state, ClientState::Missing);
        assert!(
            status.reason.contains("beegfs is going"),
            "{}",
            status.reason
        );
    }

    #[test]
    fn a_built_in_module_without_initstate_is_live() {
        let host = Host::new();
        host.proc_modules("");
        host.sys_module("lnet", None).sys_module("lustre", None);
        let requirements = ClientRequirements::new(ClientKind::Lustre, vec![]);
        assert_eq!(
            check_client(&requirements, &host.paths()).state,
            ClientState::Ready
        );
    }

    #[test]
    fn dashes_and_underscores_in_module_names_match() {
        let host = Host::new();
        host.proc_modules(&line("ko2_ib", "Live"));
        let requirements = ClientRequirements {
            kind: ClientKind::Lustre,
            modules: vec!["ko2-ib".into()],
            tools: vec![],
        };
        assert_eq!(
            check_client(&requirements, &host.paths()).state,
            ClientState::Ready
        );
    }

    #[test]
    fn a_tool_without_execute_bit_is_not_found_and_every_candidate_is_named() {
        let host = Host::new();
        host.proc_modules(&(line("lnet", "Live") + &line("lustre", "Live")));
        host.tool("lfs", 0o644);
        let other = host.dir.path().join("other");
        let requirements = ClientRequirements::new(
            ClientKind::Lustre,
            vec![ToolRequirement::new(
                "lfs",
                tool_candidates(Path::new("lfs"), &[host.bin(), other.clone()]),
            )],
        );
        let status = check_client(&requirements, &host.paths());
        assert_eq!(status.state, ClientState::Missing);
        assert_eq!(
            status.reason,
            format!(
                "lustre client missing: tool lfs not found (looked at {}, {})",
                host.bin().join("lfs").display(),
                other.join("lfs").display()
            )
        );
    }

    #[test]
    fn alternatives_are_satisfied_by_any_candidate() {
        let host = Host::new();
        host.proc_modules(&line("beegfs", "Live"));
        let beegfs = host.tool("beegfs", 0o755);
        let requirements = ClientRequirements::new(
            ClientKind::Beegfs,
            vec![ToolRequirement::new(
                "beegfs-ctl or beegfs",
                vec![host.bin().join("beegfs-ctl"), beegfs.clone()],
            )],
        );
        let status = check_client(&requirements, &host.paths());
        assert_eq!(status.state, ClientState::Ready, "{}", status.reason);
        assert!(status.reason.ends_with(&beegfs.display().to_string()));
    }

    #[test]
    fn every_missing_piece_is_reported_together() {
        let host = Host::new();
        host.proc_modules("");
        let status = check_client(&lustre(&host), &host.paths());
        assert_eq!(status.state, ClientState::Missing);
        for needle in ["module lnet", "module lustre", "tool lfs"] {
            assert!(
                status.reason.contains(needle),
                "{needle}: {}",
                status.reason
            );
        }
    }

    fn module_name() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9_]{0,20}"
    }

    fn module_state_word() -> impl Strategy<Value = String> {
        prop_oneof![Just("Live"), Just("Loading"), Just("Unloading")].prop_map(String::from)
    }

    proptest! {
        #[test]
        fn proc_modules_parser_finds_every_well_formed_line(
            entries in prop::collection::vec((module_name(), module_state_word(), 0u64..10_000_000, 0u32..50), 0..20),
        ) {
            let text: String = entries
                .iter()
                .map(|(name, state, size, refs)| format!("{name} {size} {refs} - {state} 0xffffffffc0000000\n"))
                .collect();
            let parsed: Vec<_> = parse_proc_modules(&text).collect();
            prop_assert_eq!(parsed.len(), entries.len());
            for (entry, (name, state, _, _)) in parsed.iter().zip(&entries) {
                prop_assert_eq!(entry.name, name.as_str());
                prop_assert_eq!(entry.state, state.as_str());
            }
        }

        #[test]
        fn proc_modules_parser_never_panics_and_never_invents_a_state(text in "\\PC{0,200}") {
            for entry in parse_proc_modules(&text) {
                let line = text.lines().find(|l| l.split_whitespace().next() == Some(entry.name));
                prop_assert!(line.is_some());
                prop_assert!(line.unwrap().split_whitespace().count() >= 5);
            }
        }
    }
}
