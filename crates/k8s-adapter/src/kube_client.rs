//! The Kubernetes API client of the node plugin: its configuration, a time
//! limit on every single call, and error messages that say what to fix.
//!
//! `kube` sets no response timeout by default (watches stay open for
//! minutes); every call that is not a watch goes through [`call`], which
//! bounds it, so a hung API server never stalls the plugin.

use std::future::Future;
use std::time::Duration;

pub use kube::Client;

use crate::error::AdapterError;

/// Time limit of one API call (get, patch, create) unless configured.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the server keeps one watch open before the watcher renews it.
pub const WATCH_TIMEOUT_SECONDS: u32 = 120;

/// A client from the pod's service account (or `KUBECONFIG` outside a
/// cluster). Reads local files only; never contacts the API server.
pub async fn connect() -> Result<Client, AdapterError> {
    let mut config = kube::Config::infer()
        .await
        .map_err(|e| AdapterError::KubeConfig {
            reason: error_chain(&e),
        })?;
    // A read that stalls longer than a whole watch period is a dead
    // connection; the margin covers a watch the server ends on time.
    config.read_timeout = Some(Duration::from_secs(u64::from(WATCH_TIMEOUT_SECONDS) + 30));
    config.reset_reader_on_write = true;
    Client::try_from(config).map_err(|e| AdapterError::KubeConfig {
        reason: error_chain(&e),
    })
}

/// Runs one API call with a time limit; `action` names it in errors
/// ("read node n1").
pub async fn call<T, F>(action: &str, timeout: Duration, request: F) -> Result<T, AdapterError>
where
    F: Future<Output = kube::Result<T>>,
{
    match tokio::time::timeout(timeout, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(AdapterError::KubeApi {
            action: action.to_string(),
            error,
        }),
        Err(_) => Err(AdapterError::KubeTimeout {
            action: action.to_string(),
            timeout,
        }),
    }
}

/// The HTTP status of an API error answer, if the server answered.
pub fn http_status(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// One line describing a client error: `HTTP 403 Forbidden: message (hint)`
/// for an answer of the server, the cause chain otherwise.
pub fn describe_api_error(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => {
            let mut text = format!("HTTP {}", status.code);
            if !status.reason.is_empty() {
                text.push(' ');
                text.push_str(&status.reason);
            }
            if !status.message.is_empty() {
                text.push_str(": ");
                text.push_str(&status.message);
            }
            if let Some(hint) = status_hint(status.code) {
                text.push_str(" (");
                text.push_str(hint);
                text.push(')');
            }
            text
        }
        other => error_chain(other),
    }
}

/// What to check for an HTTP status the node plugin can fix by configuration.
fn status_hint(code: u16) -> Option<&'static str> {
    match code {
        401 => Some("the service account token was rejected"),
        403 => Some(
            "the node plugin's RBAC must allow get, list, watch and patch on nodes and create on events",
        ),
        404 => Some("check --node-id: it must be the Kubernetes node name"),
        _ => None,
    }
}

/// An error and all its sources, joined by `: `.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api_error(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(Status::failure(message, reason).with_code(code)))
    }

    #[test]
    fn forbidden_names_the_missing_permissions() {
        let text = describe_api_error(&api_error(403, "Forbidden", "nodes \"n1\" is forbidden"));
        assert_eq!(
            text,
            "HTTP 403 Forbidden: nodes \"n1\" is forbidden (the node plugin's RBAC must allow get, list, watch and patch on nodes and create on events)"
        );
    }

    #[test]
    fn a_server_error_has_no_hint_and_keeps_its_message() {
        let text = describe_api_error(&api_error(500, "InternalError", "etcd timeout"));
        assert_eq!(text, "HTTP 500 InternalError: etcd timeout");
        assert_eq!(http_status(&api_error(500, "", "")), Some(500));
    }

    #[tokio::test]
    async fn a_call_without_answer_is_a_timeout_naming_the_action() {
        let never = std::future::pending::<kube::Result<()>>();
        let err = call("read node n1", Duration::from_millis(10), never)
            .await
            .unwrap_err();
        assert!(matches!(err, AdapterError::KubeTimeout { .. }));
        assert_eq!(
            err.to_string(),
            "Kubernetes API: read node n1: no answer within 10ms"
        );
    }

    #[tokio::test]
    async fn a_failed_call_carries_the_status() {
        let failing = async { Err::<(), _>(api_error(404, "NotFound", "nodes \"n1\" not found")) };
        let err = call("read node n1", Duration::from_secs(1), failing)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Kubernetes API: cannot read node n1: HTTP 404 NotFound: nodes \"n1\" not found (check --node-id: it must be the Kubernetes node name)"
        );
    }
}
