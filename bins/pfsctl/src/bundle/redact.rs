//! Redaction of everything a support bundle holds.
//!
//! Rules, applied everywhere (RPC answers, configuration, logs, mounts):
//! - the value of every key that looks secret ([`is_secret_key`]: connAuth,
//!   tlsCert, password, secret, token, key, auth, cert, credential...,
//!   case-insensitive, as a substring) is replaced by [`REDACTED`], whatever
//!   its shape (string, number, nested map or list, YAML block scalar);
//! - PEM blocks (`-----BEGIN ...-----` to `-----END ...-----`) are replaced;
//! - the user:password part of URLs (`scheme://user:pw@host`) is replaced;
//! - a Kubernetes Secret's `data` and `stringData` are replaced;
//! - a file that is a connAuth or TLS secret file (a list of entries with a
//!   `connAuth` or `tlsCert` key, a file named like a secret, a private key)
//!   is withheld entirely ([`secret_file_reason`]).
//!
//! Over-redaction is accepted: a harmless value under a key such as
//! `topologyKey` is hidden too.

use std::path::Path;

/// What replaces a secret value.
pub const REDACTED: &str = "<redacted>";

/// Substrings that mark a key (or file name) as secret, lowercase.
const SECRET_WORDS: [&str; 13] = [
    "connauth",
    "tlscert",
    "tls",
    "cert",
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "key",
    "credential",
    "auth",
    "private",
];

/// Whether `key` names a secret (case-insensitive substring match).
pub fn is_secret_key(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|word| lower.contains(word))
}

/// How text is read: configuration files treat every line indented under a
/// secret key as part of its value (YAML continuation); logs only do so when
/// the key's value is empty or a block scalar indicator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    /// A configuration file (YAML, `key = value`, or anything else).
    Config,
    /// A log file or a mount table.
    Log,
}

/// Redacted text and how many values were hidden.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redacted {
    /// The text with secrets replaced.
    pub text: String,
    /// How many values, blocks or lines were replaced.
    pub count: usize,
}

/// Why a whole file must be withheld, if it must.
pub fn secret_file_reason(path: &Path, content: &str) -> Option<&'static str> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if is_secret_key(&name) || name.ends_with(".pem") {
        return Some("its name marks it as a secret or key file");
    }
    if content.contains("PRIVATE KEY-----") {
        return Some("it holds a private key");
    }
    if is_secret_entry_list(content) {
        return Some("it is a connAuth or TLS secret file");
    }
    None
}

/// A YAML (or JSON) list whose entries carry a `connAuth` or `tlsCert` key.
fn is_secret_entry_list(content: &str) -> bool {
    let Ok(value) = serde_yaml::from_str::<serde_yaml::Value>(content) else {
        // Not parseable as one document: look at the words instead.
        let lower = content.to_ascii_lowercase();
        return content.trim_start().starts_with('-')
            && (lower.contains("connauth") || lower.contains("tlscert"));
    };
    value.as_sequence().is_some_and(|entries| {
        entries.iter().any(|entry| {
            entry.as_mapping().is_some_and(|map| {
                map.keys().filter_map(|k| k.as_str()).any(|k| {
                    k.eq_ignore_ascii_case("connAuth") || k.eq_ignore_ascii_case("tlsCert")
                })
            })
        })
    })
}

/// Redacts a JSON value in place; returns how many values were hidden.
pub fn redact_json(value: &mut serde_json::Value) -> usize {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let is_k8s_secret = map.get("kind").and_then(Value::as_str) == Some("Secret");
            let mut count = 0;
            for (key, mut inner) in std::mem::take(map) {
                let k8s_data = is_k8s_secret && (key == "data" || key == "stringData");
                if (is_secret_key(&key) || k8s_data) && !is_empty_json(&inner) {
                    inner = Value::String(REDACTED.to_owned());
                    count += 1;
                } else {
                    count += redact_json(&mut inner);
                }
                // A key can hold a secret too (`password=x: ...`).
                let key = redact_text(&key, TextKind::Log);
                count += key.count;
                map.insert(key.text, inner);
            }
            count
        }
        Value::Array(items) => items.iter_mut().map(redact_json).sum(),
        Value::String(text) => {
            let redacted = redact_text(text, TextKind::Log);
            if redacted.count > 0 {
                *text = redacted.text;
            }
            redacted.count
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
    }
}

fn is_empty_json(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Null => true,
        serde_json::Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// Redacts a YAML value in place; returns how many values were hidden.
pub fn redact_yaml(value: &mut serde_yaml::Value) -> usize {
    use serde_yaml::Value;
    match value {
        Value::Mapping(map) => {
            let is_k8s_secret = map.get("kind").and_then(Value::as_str) == Some("Secret");
            let mut count = 0;
            for (mut key, mut inner) in std::mem::take(map) {
                let key_text = match &key {
                    Value::String(s) => s.clone(),
                    other => serde_yaml::to_string(other).unwrap_or_default(),
                };
                let k8s_data = is_k8s_secret && (key_text == "data" || key_text == "stringData");
                if (is_secret_key(&key_text) || k8s_data) && !is_empty_yaml(&inner) {
                    inner = Value::String(REDACTED.to_owned());
                    count += 1;
                } else {
                    count += redact_yaml(&mut inner);
                }
                // A key can hold a secret too (`password=x: ...`), and so
                // can a complex key (a map used as a key).
                count += redact_yaml(&mut key);
                map.insert(key, inner);
            }
            count
        }
        Value::Sequence(items) => items.iter_mut().map(redact_yaml).sum(),
        Value::Tagged(tagged) => redact_yaml(&mut tagged.value),
        Value::String(text) => {
            let redacted = redact_text(text, TextKind::Log);
            if redacted.count > 0 {
                *text = redacted.text;
            }
            redacted.count
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
    }
}

fn is_empty_yaml(value: &serde_yaml::Value) -> bool {
    match value {
        serde_yaml::Value::Null => true,
        serde_yaml::Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// Redacts a configuration file: parsed as YAML (JSON is YAML) when every
/// document is a map or a list, re-emitted without comments; otherwise
/// redacted line by line.
pub fn redact_config(content: &str) -> Redacted {
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(content) {
        match serde::Deserialize::deserialize(document) {
            Ok(value @ (serde_yaml::Value::Mapping(_) | serde_yaml::Value::Sequence(_))) => {
                documents.push(value);
            }
            _ => return redact_text(content, TextKind::Config),
        }
    }
    if documents.is_empty() {
        return redact_text(content, TextKind::Config);
    }
    let mut count = 0;
    let mut text = String::new();
    for (i, mut document) in documents.into_iter().enumerate() {
        count += redact_yaml(&mut document);
        if i > 0 {
            text.push_str("---\n");
        }
        match serde_yaml::to_string(&document) {
            Ok(yaml) => text.push_str(&yaml),
            Err(_) => return redact_text(content, TextKind::Config),
        }
    }
    Redacted { text, count }
}

/// Redacts text line by line: `key=value`, `key: value`, `"key": "value"`
/// and `key = value` pairs with a secret key, indented continuations of
/// such values, PEM blocks and URL credentials.
pub fn redact_text(text: &str, kind: TextKind) -> Redacted {
    let mut out = String::with_capacity(text.len());
    let mut count = 0;
    // Column of the secret key whose value continues on indented lines.
    let mut block_column: Option<usize> = None;
    // Where to note a redaction when the block under an empty secret
    // key turns out to hold something.
    let mut pending_mark: Option<usize> = None;
    let mut in_pem = false;
    for line in text.split_inclusive('\n') {
        let (body, newline) = match line.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (line, ""),
        };
        if in_pem {
            if body.contains("-----END ") {
                in_pem = false;
            }
            continue;
        }
        if let Some(column) = block_column {
            if continues_block(body, column) {
                // Blank lines decide nothing yet; the first line with
                // content shows the empty key had a value after all.
                if !body.trim().is_empty()
                    && let Some(at) = pending_mark.take()
                {
                    out.insert_str(at, &format!(" {REDACTED}"));
                    count += 1;
                }
                continue;
            }
            block_column = None;
            pending_mark = None;
        }
        if let Some(start) = body.find("-----BEGIN ") {
            let tail = &body[start..];
            out.push_str(&body[..start]);
            out.push_str(REDACTED);
            count += 1;
            match tail.find("-----END ") {
                // A PEM block inside one line (JSON with \n escapes): keep
                // what follows its END marker.
                Some(end) => {
                    let after_end = &tail[end + "-----END ".len()..];
                    let rest = after_end
                        .find("-----")
                        .map_or("", |i| &after_end[i + "-----".len()..]);
                    let redacted = redact_line(rest, kind);
                    out.push_str(&redacted.text);
                    count += redacted.count;
                }
                None => in_pem = true,
            }
            out.push_str(newline);
            continue;
        }
        let redacted = redact_line(body, kind);
        count += redacted.count;
        block_column = redacted.block_column;
        out.push_str(&redacted.text);
        pending_mark = redacted.value_pending.then_some(out.len());
        out.push_str(newline);
    }
    Redacted { text: out, count }
}

/// Whether `line` belongs to the value of a key at `column`: blank, more
/// indented, or a YAML list item at the key's own indentation.
fn continues_block(line: &str, column: usize) -> bool {
    let trimmed = line.trim_start();
    if trimmed.is_empty() {
        return true;
    }
    let indent = line.len() - trimmed.len();
    indent > column || (indent == column && (trimmed == "-" || trimmed.starts_with("- ")))
}

/// One redacted line, and the column of a secret key whose value goes on
/// in the following lines.
struct LineRedaction {
    text: String,
    count: usize,
    block_column: Option<usize>,
    /// The line ends with a secret key whose value is on the next lines.
    value_pending: bool,
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

fn ends_unquoted_value(b: u8) -> bool {
    b.is_ascii_whitespace() || matches!(b, b',' | b';' | b'&' | b'}' | b']' | b')' | b'"' | b'\'')
}

/// YAML block scalar indicators: `|`, `>`, with optional chomping and indent.
fn is_block_indicator(value: &str) -> bool {
    let mut chars = value.chars();
    matches!(chars.next(), Some('|' | '>'))
        && chars.all(|c| matches!(c, '+' | '-') || c.is_ascii_digit())
}

/// Authentication schemes whose credential is the following word.
const AUTH_SCHEMES: [&str; 3] = ["bearer", "basic", "digest"];

fn redact_line(line: &str, kind: TextKind) -> LineRedaction {
    let (line, mut count) = redact_url_credentials(line);
    let bytes = line.as_bytes();
    let mut out = String::with_capacity(line.len());
    let mut block_column = None;
    let mut value_pending = false;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let starts_token = is_key_byte(bytes[i]) && (i == 0 || !is_key_byte(bytes[i - 1]));
        if !starts_token {
            i += 1;
            continue;
        }
        let key_start = i;
        let mut j = i;
        while j < bytes.len() && is_key_byte(bytes[j]) {
            j += 1;
        }
        let key = &line[key_start..j];
        // Optional closing quote of a quoted key, spaces, then `=` or `:`.
        let mut k = j;
        if k < bytes.len() && matches!(bytes[k], b'"' | b'\'') {
            k += 1;
        }
        while k < bytes.len() && bytes[k] == b' ' {
            k += 1;
        }
        let separated = k < bytes.len()
            && (bytes[k] == b'=' || (bytes[k] == b':' && bytes.get(k + 1) != Some(&b':')));
        if !separated || !is_secret_key(key) {
            i = j;
            continue;
        }
        let mut v = k + 1;
        while v < bytes.len() && matches!(bytes[v], b' ' | b'\t') {
            v += 1;
        }
        out.push_str(&line[copied..v]);
        let value_end = if v >= bytes.len() {
            // Nothing after the separator: the value (if any) follows on
            // indented lines.
            block_column = Some(key_start);
            value_pending = true;
            v
        } else if matches!(bytes[v], b'"' | b'\'') {
            let quote = bytes[v];
            let mut e = v + 1;
            while e < bytes.len() && bytes[e] != quote {
                e += if bytes[e] == b'\\' { 2 } else { 1 };
            }
            let e = e.min(bytes.len());
            let close = if e < bytes.len() { e + 1 } else { e };
            out.push(char::from(quote));
            out.push_str(REDACTED);
            if e < bytes.len() {
                out.push(char::from(quote));
            }
            count += 1;
            close
        } else {
            let mut e = v;
            while e < bytes.len() && !ends_unquoted_value(bytes[e]) {
                e += 1;
            }
            let value = &line[v..e];
            if is_block_indicator(value) {
                block_column = Some(key_start);
            }
            if AUTH_SCHEMES.contains(&value.to_ascii_lowercase().as_str()) {
                // `Authorization: Bearer <token>`: the credential is the next word.
                while e < bytes.len() && bytes[e] == b' ' {
                    e += 1;
                }
                while e < bytes.len() && !ends_unquoted_value(bytes[e]) {
                    e += 1;
                }
            }
            out.push_str(REDACTED);
            count += 1;
            e
        };
        if kind == TextKind::Config && block_column.is_none() {
            // In configuration, indented lines after `key: value` continue
            // the value (YAML plain scalars span lines).
            block_column = Some(key_start);
        }
        copied = value_end;
        i = value_end.max(j);
    }
    out.push_str(&line[copied..]);
    LineRedaction {
        text: out,
        count,
        block_column,
        value_pending,
    }
}

/// Replaces `user:password` in `scheme://user:password@host`.
fn redact_url_credentials(line: &str) -> (String, usize) {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    let mut count = 0;
    while let Some(at) = rest.find("://") {
        let authority_start = at + 3;
        out.push_str(&rest[..authority_start]);
        let authority_len = rest[authority_start..]
            .find(|c: char| c == '/' || c.is_whitespace() || matches!(c, '"' | '\''))
            .unwrap_or(rest.len() - authority_start);
        let authority = &rest[authority_start..authority_start + authority_len];
        match authority.rfind('@') {
            Some(at_sign) => {
                out.push_str(REDACTED);
                out.push_str(&authority[at_sign..]);
                count += 1;
            }
            None => out.push_str(authority),
        }
        rest = &rest[authority_start + authority_len..];
    }
    out.push_str(rest);
    (out, count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &str = "Hunter2-s3cr3t";

    fn text(input: &str) -> String {
        redact_text(input, TextKind::Log).text
    }

    #[test]
    fn secret_looking_keys_match_case_insensitively() {
        for key in [
            "connAuth",
            "TLSCERT",
            "password",
            "db_Password",
            "apiToken",
            "secretName",
            "privateKey",
            "auth",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in ["sysMgmtdHost", "exaFS", "mountPoint", "zone", "volume_id"] {
            assert!(!is_secret_key(key), "{key}");
        }
    }

    #[test]
    fn every_pair_syntax_is_redacted() {
        for (input, expected) in [
            (
                format!("password={SECRET} user=bob"),
                "password=<redacted> user=bob".to_owned(),
            ),
            (
                format!("password = {SECRET}"),
                "password = <redacted>".to_owned(),
            ),
            (format!("token: {SECRET}"), "token: <redacted>".to_owned()),
            (
                format!(r#"{{"token":"{SECRET}","n":1}}"#),
                r#"{"token":"<redacted>","n":1}"#.to_owned(),
            ),
            (
                format!("--secret={SECRET} --x"),
                "--secret=<redacted> --x".to_owned(),
            ),
            (
                format!("opts=rw,password={SECRET},ro"),
                "opts=rw,password=<redacted>,ro".to_owned(),
            ),
            (
                format!("Authorization: Bearer {SECRET} end"),
                "Authorization: <redacted> end".to_owned(),
            ),
            (
                format!("'connAuth': '{SECRET}'"),
                "'connAuth': '<redacted>'".to_owned(),
            ),
        ] {
            assert_eq!(text(&input), expected, "{input}");
        }
    }

    #[test]
    fn harmless_pairs_and_colons_are_kept() {
        let line = "exaFS: 10.0.0.1@tcp:/fs mountPoint=/mnt a::b keyless text";
        assert_eq!(text(line), line);
    }

    #[test]
    fn escaped_quotes_do_not_end_a_quoted_secret() {
        let input = format!(r#"{{"password":"a\"{SECRET}","next":"ok"}}"#);
        let out = text(&input);
        assert!(!out.contains(SECRET), "{out}");
        assert!(out.contains(r#""next":"ok""#), "{out}");
    }

    #[test]
    fn yaml_blocks_under_secret_keys_are_dropped_whole() {
        let input = format!(
            "tlsCert: |\n  -----BEGIN CERTIFICATE-----\n  {SECRET}\n  -----END CERTIFICATE-----\nhost: a\nsecrets:\n- name: x\n  value: {SECRET}\nzone: z\n"
        );
        let out = redact_text(&input, TextKind::Log);
        assert_eq!(
            out.text,
            "tlsCert: <redacted>\nhost: a\nsecrets: <redacted>\nzone: z\n"
        );
        assert_eq!(out.count, 2);
    }

    #[test]
    fn config_plain_scalars_continue_on_indented_lines() {
        let input = format!("password: abc\n  {SECRET}\nnext: 1\n");
        let out = redact_text(&input, TextKind::Config).text;
        assert_eq!(out, "password: <redacted>\nnext: 1\n");
    }

    #[test]
    fn pem_blocks_are_replaced_even_without_a_key() {
        let input = format!(
            "x\n-----BEGIN RSA PRIVATE KEY-----\n{SECRET}\n-----END RSA PRIVATE KEY-----\ny\n"
        );
        assert_eq!(text(&input), "x\n<redacted>\ny\n");
        let one_line = format!(
            r#"cert "-----BEGIN CERTIFICATE-----\n{SECRET}\n-----END CERTIFICATE-----\n" done"#
        );
        let out = text(&one_line);
        assert!(!out.contains(SECRET), "{out}");
        assert!(out.ends_with("done"), "{out}");
    }

    #[test]
    fn url_credentials_are_replaced() {
        let out = text(&format!(
            "fetch https://bob:{SECRET}@example.com/x and http://plain/y"
        ));
        assert_eq!(
            out,
            "fetch https://<redacted>@example.com/x and http://plain/y"
        );
    }

    #[test]
    fn json_values_under_secret_keys_are_replaced_whatever_their_shape() {
        let mut value = serde_json::json!({
            "volume_context": { "exaFS": "a@tcp:/fs", "authKey": SECRET },
            "secrets": { "a": SECRET, "b": [SECRET] },
            "note": format!("token={SECRET}"),
            "empty_token": "",
        });
        let count = redact_json(&mut value);
        let printed = value.to_string();
        assert!(!printed.contains(SECRET), "{printed}");
        assert!(printed.contains("a@tcp:/fs"));
        assert_eq!(count, 3);
        assert_eq!(value["empty_token"], "");
    }

    #[test]
    fn kubernetes_secret_data_is_replaced() {
        let yaml = format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: cfg\ndata:\n  config.yaml: {SECRET}\n"
        );
        let out = redact_config(&yaml);
        assert!(!out.text.contains(SECRET), "{}", out.text);
        assert!(out.text.contains("name: cfg"), "{}", out.text);
    }

    #[test]
    fn config_yaml_is_redacted_structurally_and_loses_comments() {
        let yaml = format!(
            "# operator note: {SECRET}\nconfig:\n  beegfsClientConf:\n    connAuthFile: /x\n    connMgmtdPortTCP: \"8008\"\nexascaler_map:\n  exa1:\n    exaFS: 10.0.0.1@tcp:/fs\n    password: {SECRET}\n"
        );
        let out = redact_config(&yaml);
        assert!(!out.text.contains(SECRET), "{}", out.text);
        assert!(out.text.contains("exaFS: 10.0.0.1@tcp:/fs"), "{}", out.text);
        assert!(out.text.contains("connMgmtdPortTCP"), "{}", out.text);
        assert_eq!(out.count, 2);
    }

    #[test]
    fn non_yaml_config_falls_back_to_lines() {
        let conf = format!("sysMgmtdHost = 10.0.0.5\nconnAuthFile = {SECRET}\n[section]\n");
        let out = redact_config(&conf);
        assert_eq!(
            out.text,
            "sysMgmtdHost = 10.0.0.5\nconnAuthFile = <redacted>\n[section]\n"
        );
    }

    #[test]
    fn secret_files_are_recognised_by_content_and_name() {
        let conn_auth =
            format!("- sysMgmtdHost: 10.0.0.5\n  connAuth: {SECRET}\n  encoding: raw\n");
        assert!(secret_file_reason(Path::new("/cfg/auth-list.yaml"), &conn_auth).is_some());
        assert!(secret_file_reason(Path::new("/cfg/list.yaml"), &conn_auth).is_some());
        let tls = "- sysMgmtdHost: h\n  tlsCert: |\n    x\n";
        assert!(secret_file_reason(Path::new("/cfg/list.yaml"), tls).is_some());
        assert!(secret_file_reason(Path::new("/cfg/ca.pem"), "x").is_some());
        assert!(secret_file_reason(Path::new("/cfg/connauth"), "opaque").is_some());
        assert!(secret_file_reason(Path::new("/cfg/x"), "-----BEGIN PRIVATE KEY-----").is_some());
        assert!(
            secret_file_reason(Path::new("/cfg/csi-beegfs-config.yaml"), "config: {}\n").is_none()
        );
    }

    fn secret_key() -> impl Strategy<Value = String> {
        (
            "[a-zA-Z_]{0,6}",
            prop::sample::select(SECRET_WORDS.to_vec()),
            "[a-zA-Z_]{0,6}",
        )
            .prop_map(|(a, word, b)| {
                let word = if a.len() % 2 == 0 {
                    word.to_uppercase()
                } else {
                    word.to_owned()
                };
                format!("{a}{word}{b}")
            })
    }

    proptest! {
        #[test]
        fn a_secret_value_never_survives_any_pair_syntax(
            key in secret_key(),
            value in "[A-Za-z0-9+/=@:._-]{8,30}",
            prefix in "[a-z ]{0,10}",
            syntax in 0_usize..6,
        ) {
            let line = match syntax {
                0 => format!("{prefix} {key}={value} tail"),
                1 => format!("{prefix} {key}: {value}"),
                2 => format!(r#"{{"{key}":"{value}","x":1}}"#),
                3 => format!("{prefix} {key} = \"{value}\""),
                4 => format!("{key}: |\n  {value}\nother: 1"),
                _ => format!("- {key}:\n  - {value}\n  - {value}"),
            };
            for kind in [TextKind::Log, TextKind::Config] {
                let out = redact_text(&line, kind);
                prop_assert!(!out.text.contains(&value), "{:?} -> {:?}", line, out.text);
            }
            let config = redact_config(&line);
            prop_assert!(!config.text.contains(&value), "{:?} -> {:?}", line, config.text);
        }

        #[test]
        fn text_without_secret_keys_pem_or_urls_is_unchanged(
            lines in prop::collection::vec("[a-z0-9 =:,./]{0,40}", 0..10),
        ) {
            let input = lines.join("\n");
            prop_assume!(!SECRET_WORDS.iter().any(|w| input.contains(w)));
            prop_assume!(!input.contains("://"));
            let out = redact_text(&input, TextKind::Log);
            prop_assert_eq!(out.count, 0);
            prop_assert_eq!(out.text, input);
        }

        #[test]
        fn arbitrary_text_never_panics(input in "\\PC{0,200}") {
            let _ = redact_text(&input, TextKind::Config);
            let _ = redact_config(&input);
        }
    }
}
