//! A GNU `getopt_long`-style argument splitter for the tools written in C (`mount`, `lfs`, `dtar`).

/// One parsed argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opt {
    /// `-x` or `-x VALUE` / `-xVALUE`.
    Short(char, Option<String>),
    /// `--name`, `--name=VALUE` or `--name VALUE`.
    Long(String, Option<String>),
    /// A non-option argument.
    Positional(String),
}

/// The options a tool knows.
#[derive(Debug, Clone, Copy)]
pub struct OptSpec<'a> {
    /// Short options taking a value.
    pub short_with_value: &'a str,
    /// Short options without a value.
    pub short_flags: &'a str,
    /// Long options taking a value.
    pub long_with_value: &'a [&'a str],
    /// Long options without a value.
    pub long_flags: &'a [&'a str],
}

/// Splits `args` as `getopt_long` would (options and operands may be interleaved; `--` ends
/// options). The error is getopt's message (`invalid option -- 'x'`).
pub fn getopt(args: &[String], spec: OptSpec<'_>) -> Result<Vec<Opt>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    let mut only_positional = false;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if only_positional || arg == "-" || !arg.starts_with('-') {
            out.push(Opt::Positional(arg.clone()));
            continue;
        }
        if arg == "--" {
            only_positional = true;
            continue;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            if spec.long_with_value.contains(&name) {
                let value = match inline {
                    Some(v) => v,
                    None => {
                        let Some(v) = args.get(i) else {
                            return Err(format!("option '--{name}' requires an argument"));
                        };
                        i += 1;
                        v.clone()
                    }
                };
                out.push(Opt::Long(name.to_string(), Some(value)));
            } else if spec.long_flags.contains(&name) {
                if inline.is_some() {
                    return Err(format!("option '--{name}' doesn't allow an argument"));
                }
                out.push(Opt::Long(name.to_string(), None));
            } else {
                return Err(format!("unrecognized option '--{name}'"));
            }
            continue;
        }
        let shorts: Vec<char> = arg[1..].chars().collect();
        let mut j = 0;
        while j < shorts.len() {
            let c = shorts[j];
            j += 1;
            if spec.short_with_value.contains(c) {
                let rest: String = shorts[j..].iter().collect();
                let value = if !rest.is_empty() {
                    rest
                } else {
                    let Some(v) = args.get(i) else {
                        return Err(format!("option requires an argument -- '{c}'"));
                    };
                    i += 1;
                    v.clone()
                };
                out.push(Opt::Short(c, Some(value)));
                break;
            } else if spec.short_flags.contains(c) {
                out.push(Opt::Short(c, None));
            } else {
                return Err(format!("invalid option -- '{c}'"));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SPEC: OptSpec<'static> = OptSpec {
        short_with_value: "pf",
        short_flags: "dsrc",
        long_with_value: &["file"],
        long_flags: &["verbose"],
    };

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn combined_attached_and_separate_values() {
        let parsed = getopt(
            &args(&[
                "-sp",
                "7",
                "dir",
                "-cfX",
                "--file=a",
                "--file",
                "b",
                "--verbose",
                "--",
                "-d",
            ]),
            SPEC,
        )
        .unwrap();
        assert_eq!(
            parsed,
            vec![
                Opt::Short('s', None),
                Opt::Short('p', Some("7".into())),
                Opt::Positional("dir".into()),
                Opt::Short('c', None),
                Opt::Short('f', Some("X".into())),
                Opt::Long("file".into(), Some("a".into())),
                Opt::Long("file".into(), Some("b".into())),
                Opt::Long("verbose".into(), None),
                Opt::Positional("-d".into()),
            ]
        );
    }

    #[test]
    fn errors_use_getopt_words() {
        assert_eq!(
            getopt(&args(&["-x"]), SPEC),
            Err("invalid option -- 'x'".into())
        );
        assert_eq!(
            getopt(&args(&["-p"]), SPEC),
            Err("option requires an argument -- 'p'".into())
        );
        assert_eq!(
            getopt(&args(&["--nope"]), SPEC),
            Err("unrecognized option '--nope'".into())
        );
        assert_eq!(
            getopt(&args(&["--verbose=1"]), SPEC),
            Err("option '--verbose' doesn't allow an argument".into())
        );
    }

    proptest! {
        #[test]
        fn operands_keep_their_order(words in prop::collection::vec("[a-z0-9/]{1,8}", 0..6)) {
            let mut list = vec!["-d".to_string()];
            list.extend(words.iter().cloned());
            let parsed = getopt(&list, SPEC).unwrap();
            let positionals: Vec<String> = parsed.into_iter().filter_map(|o| match o { Opt::Positional(p) => Some(p), _ => None }).collect();
            prop_assert_eq!(positionals, words);
        }

        #[test]
        fn never_panics(list in prop::collection::vec(".{0,6}", 0..6)) {
            let _ = getopt(&list, SPEC);
        }
    }
}
