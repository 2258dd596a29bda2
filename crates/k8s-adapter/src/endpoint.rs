//! The CSI endpoint flag: which unix socket to serve on or connect to.
//!
//! Accepted forms, all naming an absolute path:
//! - `unix:///var/lib/kubelet/plugins/x/csi.sock` (the CSI convention),
//! - `unix:/var/lib/kubelet/plugins/x/csi.sock` (gRPC's short form),
//! - `/var/lib/kubelet/plugins/x/csi.sock` (a bare absolute path).
//!
//! Rejected: `unix://relative/path` (looks like a host name and is read
//! differently by different gRPC stacks), relative paths (they would depend
//! on the working directory), abstract sockets, `tcp://` and every other
//! scheme: the driver only ever listens on a unix socket that the kubelet
//! and the sidecars share through a volume. The path is taken literally
//! (no percent-decoding).

use std::{
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
};

use crate::AdapterError;

/// Longest socket path the kernel accepts (`sun_path` is 108 bytes,
/// including the terminating NUL).
pub const MAX_SOCKET_PATH_BYTES: usize = 107;

/// A parsed endpoint: the absolute path of a unix socket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SocketEndpoint {
    path: PathBuf,
}

impl SocketEndpoint {
    /// Parses an endpoint flag value; see the module docs for the forms.
    pub fn parse(endpoint: &str) -> Result<Self, AdapterError> {
        let invalid = |reason: String| AdapterError::InvalidEndpoint {
            endpoint: endpoint.to_owned(),
            reason,
        };

        if endpoint.is_empty() {
            return Err(invalid("it is empty".into()));
        }
        let path = if let Some(rest) = strip_prefix_ignore_case(endpoint, "unix://") {
            if !rest.starts_with('/') {
                return Err(invalid(
                    "unix:// must be followed by an absolute path, as in unix:///path/csi.sock"
                        .into(),
                ));
            }
            rest
        } else if let Some(rest) = strip_prefix_ignore_case(endpoint, "unix:") {
            if !rest.starts_with('/') {
                return Err(invalid(
                    "the socket path must be absolute, as in unix:///path/csi.sock".into(),
                ));
            }
            rest
        } else if endpoint.starts_with('/') {
            endpoint
        } else if let Some(scheme) = scheme_of(endpoint) {
            return Err(invalid(format!(
                "scheme {scheme:?} is not supported: the driver serves only on a unix socket \
                 (unix:///path/csi.sock)"
            )));
        } else {
            return Err(invalid(
                "relative paths are not accepted: use an absolute path or unix:///path/csi.sock"
                    .into(),
            ));
        };

        validate_path(path).map_err(invalid)?;
        Ok(Self {
            path: PathBuf::from(path),
        })
    }

    /// The socket's absolute path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Consumes the endpoint, returning the socket path.
    pub fn into_path(self) -> PathBuf {
        self.path
    }
}

impl FromStr for SocketEndpoint {
    type Err = AdapterError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for SocketEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unix://{}", self.path.display())
    }
}

/// `s` without `prefix`, compared ASCII case-insensitively (URI schemes are
/// case-insensitive).
fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// The URI scheme of `s`, if it starts with one (`ALPHA *( ALPHA / DIGIT /
/// "+" / "-" / "." ) ":"`).
fn scheme_of(s: &str) -> Option<&str> {
    let (scheme, _) = s.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some(scheme)
}

/// Checks an absolute path is usable as a socket address.
fn validate_path(path: &str) -> Result<(), String> {
    if path.contains('\0') {
        return Err("the socket path contains a NUL byte".into());
    }
    if path.ends_with('/') {
        return Err("the socket path must name a file, not a directory".into());
    }
    if path.len() > MAX_SOCKET_PATH_BYTES {
        return Err(format!(
            "the socket path is {} bytes long; unix sockets allow at most {MAX_SOCKET_PATH_BYTES}",
            path.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reason_of(endpoint: &str) -> String {
        match SocketEndpoint::parse(endpoint) {
            Err(AdapterError::InvalidEndpoint { reason, .. }) => reason,
            other => panic!("{endpoint:?} should be rejected, got {other:?}"),
        }
    }

    #[test]
    fn csi_convention_triple_slash_names_the_absolute_path() {
        let ep = SocketEndpoint::parse("unix:///csi/csi.sock").unwrap();
        assert_eq!(ep.path(), Path::new("/csi/csi.sock"));
    }

    #[test]
    fn grpc_short_form_and_bare_path_name_the_same_socket() {
        let short = SocketEndpoint::parse("unix:/csi/csi.sock").unwrap();
        let bare = SocketEndpoint::parse("/csi/csi.sock").unwrap();
        assert_eq!(short, bare);
    }

    #[test]
    fn scheme_is_case_insensitive() {
        let ep = SocketEndpoint::parse("UNIX:///csi/csi.sock").unwrap();
        assert_eq!(ep.path(), Path::new("/csi/csi.sock"));
    }

    #[test]
    fn host_form_unix_url_is_rejected_with_a_hint() {
        assert!(reason_of("unix://csi/csi.sock").contains("unix:///"));
    }

    #[test]
    fn tcp_endpoint_is_rejected_naming_the_scheme() {
        assert!(reason_of("tcp://127.0.0.1:10000").contains("\"tcp\""));
    }

    #[test]
    fn relative_paths_are_rejected() {
        assert!(reason_of("csi.sock").contains("relative"));
        assert!(reason_of("unix:csi.sock").contains("absolute"));
    }

    #[test]
    fn empty_directory_and_nul_paths_are_rejected() {
        assert!(reason_of("").contains("empty"));
        assert!(reason_of("unix:///csi/").contains("directory"));
        assert!(reason_of("/csi/a\0b").contains("NUL"));
    }

    #[test]
    fn path_longer_than_sun_path_is_rejected() {
        let fits = format!("/{}", "a".repeat(MAX_SOCKET_PATH_BYTES - 1));
        assert!(SocketEndpoint::parse(&fits).is_ok());
        let too_long = format!("{fits}b");
        assert!(reason_of(&too_long).contains("at most 107"));
    }

    /// Absolute paths made of plain segments that fit in `sun_path`.
    fn absolute_path() -> impl Strategy<Value = String> {
        prop::collection::vec("[A-Za-z0-9._-]{1,12}", 1..6)
            .prop_map(|segments| format!("/{}", segments.join("/")))
            .prop_filter("fits in sun_path", |p| p.len() <= MAX_SOCKET_PATH_BYTES)
    }

    proptest! {
        #[test]
        fn every_accepted_form_yields_the_same_path(path in absolute_path()) {
            for form in [format!("unix://{path}"), format!("unix:{path}"), path.clone()] {
                let ep = SocketEndpoint::parse(&form).unwrap();
                prop_assert_eq!(ep.path(), Path::new(&path));
            }
        }

        #[test]
        fn display_round_trips(path in absolute_path()) {
            let ep = SocketEndpoint::parse(&path).unwrap();
            let again = SocketEndpoint::parse(&ep.to_string()).unwrap();
            prop_assert_eq!(again, ep);
        }

        #[test]
        fn other_schemes_are_rejected(
            scheme in "[a-z][a-z0-9+.-]{0,8}".prop_filter("not unix", |s| s != "unix"),
            rest in ".{0,40}",
        ) {
            let endpoint = format!("{scheme}://{rest}");
            let reason = reason_of(&endpoint);
            prop_assert!(reason.contains(&format!("{scheme:?}")), "{}", reason);
        }

        #[test]
        fn relative_paths_never_parse(path in "[A-Za-z0-9._-][A-Za-z0-9._/-]{0,40}") {
            prop_assert!(SocketEndpoint::parse(&path).is_err());
            let unix_relative = format!("unix:{path}");
            prop_assert!(SocketEndpoint::parse(&unix_relative).is_err());
        }

        #[test]
        fn arbitrary_input_never_panics_and_accepted_paths_are_valid(input in "\\PC{0,130}") {
            if let Ok(ep) = SocketEndpoint::parse(&input) {
                let p = ep.path().to_str().unwrap();
                prop_assert!(p.starts_with('/'));
                prop_assert!(p.len() <= MAX_SOCKET_PATH_BYTES);
                prop_assert!(!p.ends_with('/'));
            }
        }
    }
}
