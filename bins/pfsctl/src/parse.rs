//! Parsers for flag values: sizes, durations, `key=value` pairs and
//! topology segments, plus the inverse size formatting used in output.
//!
//! Each parser returns a message that clap prints after the flag name, so
//! a bad value is a usage error (exit status 2) naming the flag.

use std::{collections::HashMap, time::Duration};

/// Binary size units accepted by [`parse_size`], smallest first.
const SIZE_UNITS: [(&str, u32); 5] = [("Ki", 10), ("Mi", 20), ("Gi", 30), ("Ti", 40), ("Pi", 50)];

/// Parses a size in bytes: plain digits (`1048576`) or digits followed by a
/// binary unit (`Ki`, `Mi`, `Gi`, `Ti`, `Pi`). The result fits in an `i64`
/// because CSI carries sizes as `int64`.
pub fn parse_size(text: &str) -> Result<i64, String> {
    let (digits, shift) = match SIZE_UNITS.iter().find(|(unit, _)| text.ends_with(unit)) {
        Some((unit, shift)) => (&text[..text.len() - unit.len()], *shift),
        None => (text, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{text:?} is not a size: use whole bytes (1073741824) or a number with Ki, Mi, Gi, Ti \
             or Pi (10Gi)"
        ));
    }
    let too_large = || format!("{text:?} is too large: sizes must fit in 63 bits");
    let number: i64 = digits.parse().map_err(|_| too_large())?;
    number.checked_mul(1_i64 << shift).ok_or_else(too_large)
}

/// Exact sizes are shown in a unit only while they need fewer digits than this.
const EXACT_LIMIT: i64 = 10_000;

/// Formats a byte count for people: exactly in the largest binary unit that
/// (or plain bytes) divides it when that takes at most four digits (`10Gi`,
/// `1025Ki`, `1536Mi`),
/// else with two decimals in the largest unit not above it (`1.50Gi`);
/// below 1Ki, plain bytes.
pub fn format_size(bytes: i64) -> String {
    if bytes < 1024 {
        return bytes.to_string();
    }
    let exact = SIZE_UNITS
        .iter()
        .rev()
        .chain(&[("", 0)])
        .find(|(_, shift)| bytes % (1_i64 << shift) == 0);
    if let Some((unit, shift)) = exact
        && bytes >> shift < EXACT_LIMIT
    {
        return format!("{}{unit}", bytes >> shift);
    }
    let (unit, shift) = SIZE_UNITS
        .iter()
        .rev()
        .find(|(_, shift)| bytes >= 1_i64 << shift)
        .unwrap_or(&SIZE_UNITS[0]);
    format!("{:.2}{unit}", bytes as f64 / (1_i64 << shift) as f64)
}

/// Parses a duration: digits with `ms`, `s`, `m` or `h`, or bare digits
/// meaning seconds. Zero is refused (a zero deadline fails every call).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let bad = || format!("{text:?} is not a duration: use 500ms, 30s, 5m, 1h or plain seconds");
    if digits.is_empty() {
        return Err(bad());
    }
    let number: u64 = digits.parse().map_err(|_| bad())?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad()),
    };
    let millis = number
        .checked_mul(millis_per_unit)
        .ok_or_else(|| format!("{text:?} is too long"))?;
    if millis == 0 {
        return Err(format!("{text:?}: the duration must be longer than zero"));
    }
    Ok(Duration::from_millis(millis))
}

/// Parses `key=value`: the key is what precedes the first `=` and must not
/// be empty or contain whitespace; the value is the rest (may be empty, may
/// contain `=`).
pub fn parse_key_value(text: &str) -> Result<(String, String), String> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(format!("{text:?} is not key=value"));
    };
    if key.is_empty() {
        return Err(format!("{text:?} has an empty key"));
    }
    if key.chars().any(char::is_whitespace) {
        return Err(format!("key {key:?} contains whitespace"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// Collects repeated `key=value` flags into a map; a key given twice is an
/// error naming `flag`, since either value could be the one meant.
pub fn into_map(pairs: &[(String, String)], flag: &str) -> Result<HashMap<String, String>, String> {
    let mut map = HashMap::with_capacity(pairs.len());
    for (key, value) in pairs {
        if map.insert(key.clone(), value.clone()).is_some() {
            return Err(format!("{flag} {key} is given more than once"));
        }
    }
    Ok(map)
}

/// A topology: segments as `key=value` joined by commas
/// (`topology.exa.csi.ddn.com/zone=a,rack=r1`). Keys must be distinct and
/// values cannot contain commas (label values never do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyArg(pub HashMap<String, String>);

/// Parses a [`TopologyArg`].
pub fn parse_topology(text: &str) -> Result<TopologyArg, String> {
    let pairs = text
        .split(',')
        .map(parse_key_value)
        .collect::<Result<Vec<_>, _>>()?;
    into_map(&pairs, "topology segment").map(TopologyArg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_bytes_and_each_unit_scale_by_powers_of_1024() {
        assert_eq!(parse_size("512"), Ok(512));
        let mut scale = 1_i64;
        for unit in ["Ki", "Mi", "Gi", "Ti", "Pi"] {
            scale *= 1024;
            assert_eq!(parse_size(&format!("3{unit}")), Ok(3 * scale), "{unit}");
        }
    }

    #[test]
    fn malformed_sizes_are_refused_with_a_hint() {
        for bad in [
            "", "Gi", "10G", "10gi", "-1", "1.5Gi", " 10Gi", "10 Gi", "0x10", "10GiB",
        ] {
            let err = parse_size(bad).unwrap_err();
            assert!(err.contains("Gi"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn sizes_beyond_int64_are_refused() {
        assert!(parse_size("8192Pi").unwrap_err().contains("too large"));
        assert!(
            parse_size("99999999999999999999")
                .unwrap_err()
                .contains("too large")
        );
        assert_eq!(parse_size(&i64::MAX.to_string()), Ok(i64::MAX));
    }

    #[test]
    fn format_picks_the_largest_exact_unit_or_two_decimals() {
        assert_eq!(format_size(0), "0");
        assert_eq!(format_size(1023), "1023");
        assert_eq!(format_size(10 << 30), "10Gi");
        assert_eq!(format_size(1536 << 20), "1536Mi");
        assert_eq!(format_size(9999), "9999");
        assert_eq!(format_size((1536 << 20) + 1), "1.50Gi");
        assert_eq!(format_size((1 << 40) + 1), "1.00Ti");
        assert_eq!(format_size(1025 << 10), "1025Ki");
        assert_eq!(format_size((10 << 30) + (4 << 10)), "10.00Gi");
    }

    #[test]
    fn durations_take_units_or_bare_seconds() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        for bad in ["", "s", "0", "0s", "1.5s", "10d", "-1s", "1 s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn key_value_splits_at_the_first_equals_sign() {
        assert_eq!(
            parse_key_value("a=b=c"),
            Ok(("a".to_owned(), "b=c".to_owned()))
        );
        assert_eq!(parse_key_value("a="), Ok(("a".to_owned(), String::new())));
        assert!(parse_key_value("=b").unwrap_err().contains("empty key"));
        assert!(parse_key_value("ab").unwrap_err().contains("key=value"));
        assert!(parse_key_value("a b=c").unwrap_err().contains("whitespace"));
    }

    #[test]
    fn repeated_keys_are_refused_naming_the_flag() {
        let pairs = [
            ("k".to_owned(), "1".to_owned()),
            ("k".to_owned(), "2".to_owned()),
        ];
        let err = into_map(&pairs, "--param").unwrap_err();
        assert_eq!(err, "--param k is given more than once");
    }

    #[test]
    fn topology_segments_split_on_commas() {
        let topo = parse_topology("topology.exa.csi.ddn.com/zone=a,rack=r1").unwrap();
        assert_eq!(topo.0.len(), 2);
        assert_eq!(topo.0["topology.exa.csi.ddn.com/zone"], "a");
        assert_eq!(topo.0["rack"], "r1");
        assert!(parse_topology("zone=a,zone=b").is_err());
        assert!(parse_topology("zone=a,").is_err());
    }

    fn unit() -> impl Strategy<Value = (&'static str, u32)> {
        let mut units = SIZE_UNITS.to_vec();
        units.push(("", 0));
        prop::sample::select(units)
    }

    proptest! {
        #[test]
        fn size_with_a_unit_is_the_number_times_the_unit(n in 0_i64..1 << 13, (u, shift) in unit()) {
            prop_assert_eq!(parse_size(&format!("{n}{u}")), Ok(n << shift));
        }

        #[test]
        fn exact_sizes_round_trip_through_format(n in 0_i64..EXACT_LIMIT, (_, shift) in unit()) {
            prop_assume!(n <= i64::MAX >> shift);
            let bytes = n << shift;
            prop_assert_eq!(parse_size(&format_size(bytes)), Ok(bytes));
        }

        #[test]
        fn every_size_formats_within_one_percent(bytes in 0_i64..i64::MAX) {
            let text = format_size(bytes);
            match parse_size(&text) {
                Ok(exact) => prop_assert_eq!(exact, bytes),
                Err(_) => {
                    let (number, unit) = text.split_at(text.len() - 2);
                    let shift = SIZE_UNITS.iter().find(|(u, _)| *u == unit).unwrap().1;
                    let approx = number.parse::<f64>().unwrap() * (1_u64 << shift) as f64;
                    prop_assert!((approx - bytes as f64).abs() / (bytes as f64) < 0.01);
                }
            }
        }

        #[test]
        fn arbitrary_size_text_never_panics(text in "\\PC{0,24}") {
            if let Ok(bytes) = parse_size(&text) {
                prop_assert!(bytes >= 0);
            }
        }

        #[test]
        fn durations_scale_by_their_unit(n in 1_u64..1_000_000, pick in 0_usize..4) {
            let (unit, millis) = [("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000)][pick];
            prop_assert_eq!(
                parse_duration(&format!("{n}{unit}")),
                Ok(Duration::from_millis(n * millis))
            );
        }

        #[test]
        fn arbitrary_duration_text_never_panics(text in "\\PC{0,24}") {
            if let Ok(d) = parse_duration(&text) {
                prop_assert!(!d.is_zero());
            }
        }

        #[test]
        fn key_value_round_trips(key in "[A-Za-z0-9./_-]{1,30}", value in "\\PC{0,40}") {
            prop_assert_eq!(
                parse_key_value(&format!("{key}={value}")),
                Ok((key.clone(), value.clone()))
            );
        }

        #[test]
        fn arbitrary_key_value_text_never_panics(text in "\\PC{0,40}") {
            if let Ok((key, value)) = parse_key_value(&text) {
                prop_assert_eq!(format!("{key}={value}"), text);
            }
        }

        #[test]
        fn topology_round_trips(segments in prop::collection::hash_map(
            "[a-z0-9./-]{1,20}", "[A-Za-z0-9._-]{0,20}", 1..5,
        )) {
            let text = segments
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            prop_assert_eq!(parse_topology(&text), Ok(TopologyArg(segments)));
        }
    }
}
