//! Fault injection: rules in `<PFS_SIM_ROOT>/faults.json`, read on every tool invocation.
//!
//! ```json
//! [
//!   {"tool": "lfs", "args_contain": ["setquota"],
//!    "action": {"fail": {"exit_code": 1, "stderr": "lfs setquota: quotactl failed"}},
//!    "times": 2},
//!   {"tool": "mount", "args_contain": ["lustre"], "action": "hang"},
//!   {"tool": "beegfs-ctl", "action": {"delay_ms": 500}},
//!   {"tool": "beegfs", "args_contain": ["quota"], "action": "auth_failure"}
//! ]
//! ```
//!
//! A rule matches when `tool` equals the simulated tool's name and every `args_contain` string
//! is a substring of at least one argument. The first matching rule that has uses left applies.
//! `times` (optional, unlimited when absent) counts down in `faults-state.json` under an
//! exclusive lock, so concurrent invocations consume uses exactly once each.

use crate::error::{Result, SimError};
use crate::state::{FileLock, StateRoot, read_json_or_default, write_json_atomic};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One fault rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRule {
    /// The tool name: `mount`, `umount`, `lfs`, `lctl`, `dtar`, `beegfs-ctl` or `beegfs`.
    pub tool: String,
    /// Strings that must each appear inside some argument.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args_contain: Vec<String>,
    /// What happens.
    pub action: FaultAction,
    /// How many invocations the rule applies to; unlimited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
}

/// What a matching rule does to the invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultAction {
    /// Fail at once: print `stderr`, exit with `exit_code`.
    Fail {
        /// The exit code.
        exit_code: i32,
        /// Printed to standard error (a newline is added when missing).
        #[serde(default)]
        stderr: String,
    },
    /// Never return (until killed).
    Hang,
    /// Sleep this many milliseconds, then run normally.
    DelayMs(u64),
    /// Fail the way the tool fails when authentication is refused.
    AuthFailure,
}

impl FaultRule {
    /// Whether the rule applies to this invocation (ignoring remaining uses).
    pub fn matches(&self, tool: &str, args: &[String]) -> bool {
        self.tool == tool
            && self
                .args_contain
                .iter()
                .all(|needle| args.iter().any(|arg| arg.contains(needle.as_str())))
    }

    fn key(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Parses the text of a fault file.
pub fn parse_rules(text: &str) -> std::result::Result<Vec<FaultRule>, serde_json::Error> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(text)
}

/// The rules currently in the fault file (none when it does not exist).
pub fn load(root: &StateRoot) -> Result<Vec<FaultRule>> {
    let path = root.faults_file();
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_rules(&text).map_err(|source| SimError::Json { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(SimError::io("read", path, e)),
    }
}

/// Appends a rule to the fault file.
pub fn add(root: &StateRoot, rule: FaultRule) -> Result<()> {
    let _lock = FileLock::exclusive(&root.faults_lock())?;
    let mut rules = load(root)?;
    rules.push(rule);
    write_json_atomic(&root.faults_file(), &rules)
}

/// Removes every rule and resets the use counters.
pub fn clear(root: &StateRoot) -> Result<()> {
    let _lock = FileLock::exclusive(&root.faults_lock())?;
    for path in [root.faults_file(), root.faults_state_file()] {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(SimError::io("remove", path, e)),
        }
    }
    Ok(())
}

/// How many times each rule (keyed by its JSON form) has been applied.
pub fn uses(root: &StateRoot) -> Result<BTreeMap<String, u32>> {
    read_json_or_default(&root.faults_state_file())
}

/// Finds the rule that applies to this invocation, consuming one use of it.
pub fn take_matching(root: &StateRoot, tool: &str, args: &[String]) -> Result<Option<FaultAction>> {
    if !root.faults_file().exists() {
        return Ok(None);
    }
    let _lock = FileLock::exclusive(&root.faults_lock())?;
    let rules = load(root)?;
    let mut used = uses(root)?;
    for rule in rules.iter().filter(|r| r.matches(tool, args)) {
        let key = rule.key();
        let count = used.get(&key).copied().unwrap_or(0);
        if let Some(times) = rule.times
            && count >= times
        {
            continue;
        }
        if rule.times.is_some() {
            used.insert(key, count + 1);
            write_json_atomic(&root.faults_state_file(), &used)?;
        }
        return Ok(Some(rule.action.clone()));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rule(tool: &str, needles: &[&str], action: FaultAction, times: Option<u32>) -> FaultRule {
        FaultRule {
            tool: tool.into(),
            args_contain: needles.iter().map(|s| s.to_string()).collect(),
            action,
            times,
        }
    }

    #[test]
    fn the_documented_format_parses() {
        let rules = parse_rules(
            r#"[
              {"tool": "lfs", "args_contain": ["setquota"],
               "action": {"fail": {"exit_code": 1, "stderr": "boom"}}, "times": 2},
              {"tool": "mount", "action": "hang"},
              {"tool": "beegfs-ctl", "action": {"delay_ms": 500}},
              {"tool": "beegfs", "action": "auth_failure"}
            ]"#,
        )
        .unwrap();
        assert_eq!(
            rules,
            vec![
                rule(
                    "lfs",
                    &["setquota"],
                    FaultAction::Fail {
                        exit_code: 1,
                        stderr: "boom".into()
                    },
                    Some(2)
                ),
                rule("mount", &[], FaultAction::Hang, None),
                rule("beegfs-ctl", &[], FaultAction::DelayMs(500), None),
                rule("beegfs", &[], FaultAction::AuthFailure, None),
            ]
        );
        assert!(parse_rules("").unwrap().is_empty());
        assert!(parse_rules("{").is_err());
        assert!(parse_rules(r#"[{"tool": "lfs", "action": "explode"}]"#).is_err());
    }

    #[test]
    fn matching_needs_the_tool_and_every_needle() {
        let r = rule("lfs", &["setquota", "-B"], FaultAction::Hang, None);
        let args: Vec<String> = ["setquota", "-p", "5", "-B", "1G", "/mnt"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(r.matches("lfs", &args));
        assert!(!r.matches("lctl", &args));
        assert!(!r.matches("lfs", &args[..3]));
    }

    #[test]
    fn times_count_down_then_the_next_rule_applies() {
        let dir = tempfile::tempdir().unwrap();
        let root = StateRoot::new(dir.path());
        add(
            &root,
            rule("lfs", &["quota"], FaultAction::DelayMs(1), Some(2)),
        )
        .unwrap();
        add(&root, rule("lfs", &[], FaultAction::Hang, None)).unwrap();
        let args = vec!["quota".to_string()];
        assert_eq!(
            take_matching(&root, "lfs", &args).unwrap(),
            Some(FaultAction::DelayMs(1))
        );
        assert_eq!(
            take_matching(&root, "lfs", &args).unwrap(),
            Some(FaultAction::DelayMs(1))
        );
        assert_eq!(
            take_matching(&root, "lfs", &args).unwrap(),
            Some(FaultAction::Hang)
        );
        assert_eq!(take_matching(&root, "mount", &args).unwrap(), None);
        clear(&root).unwrap();
        assert_eq!(take_matching(&root, "lfs", &args).unwrap(), None);
        assert!(load(&root).unwrap().is_empty());
    }

    fn action_strategy() -> impl Strategy<Value = FaultAction> {
        prop_oneof![
            (any::<i32>(), ".{0,40}")
                .prop_map(|(exit_code, stderr)| FaultAction::Fail { exit_code, stderr }),
            Just(FaultAction::Hang),
            any::<u64>().prop_map(FaultAction::DelayMs),
            Just(FaultAction::AuthFailure),
        ]
    }

    proptest! {
        #[test]
        fn rules_round_trip_through_json(
            tool in "[a-z-]{1,12}",
            needles in prop::collection::vec(".{0,10}", 0..4),
            action in action_strategy(),
            times in prop::option::of(any::<u32>()),
        ) {
            let rules = vec![FaultRule { tool, args_contain: needles, action, times }];
            let text = serde_json::to_string(&rules).unwrap();
            prop_assert_eq!(parse_rules(&text).unwrap(), rules);
        }

        #[test]
        fn parsing_never_panics(text in "(?s).{0,200}") {
            let _ = parse_rules(&text);
        }
    }
}
