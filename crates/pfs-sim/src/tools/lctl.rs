//! `lctl get_param [-n] version` and `lctl list_nids`.

use super::ToolIo;

/// The Lustre version the simulator reports.
pub const LUSTRE_VERSION: &str = "2.15.5";

/// The environment variable listing this node's LNet NIDs (comma separated) for `list_nids`.
pub const NIDS_ENV: &str = "PFS_SIM_LNET_NIDS";

/// Runs `lctl`.
pub fn run(args: &[String], io: &mut ToolIo<'_>) -> i32 {
    match args.first().map(String::as_str) {
        Some("get_param") => {
            let rest = &args[1..];
            let no_name = rest.iter().any(|a| a == "-n");
            let params: Vec<&String> = rest.iter().filter(|a| !a.starts_with('-')).collect();
            if params.is_empty() {
                io.err("get_param: param_path '' not specified\n");
                return 1;
            }
            let mut code = 0;
            for param in params {
                if param == "version" {
                    if no_name {
                        io.out(&format!("{LUSTRE_VERSION}\n"));
                    } else {
                        io.out(&format!("version={LUSTRE_VERSION}\n"));
                    }
                } else {
                    io.err(&format!(
                        "error: get_param: param_path '{param}': No such file or directory\n"
                    ));
                    code = 2;
                }
            }
            code
        }
        Some("list_nids") => {
            let nids = std::env::var(NIDS_ENV).unwrap_or_else(|_| "127.0.0.1@tcp".to_string());
            for nid in nids.split(',').filter(|n| !n.is_empty()) {
                io.out(&format!("{nid}\n"));
            }
            0
        }
        Some(other) => {
            io.err(&format!(
                "lctl: '{other}' is not simulated (get_param version, list_nids are)\n"
            ));
            1
        }
        None => {
            io.err("lctl: a command is required (get_param version, list_nids)\n");
            1
        }
    }
}
