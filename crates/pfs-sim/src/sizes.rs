//! Size parsing and formatting, each in the way of the tool that owns it.
//!
//! The tools disagree on units: `lfs` reads KiB by default with binary suffixes, `beegfs-ctl`
//! reads bytes with binary single-letter suffixes, the BeeGFS 8 `beegfs` tool reads SI (`10G` is
//! 10^10) and IEC (`10GiB`) prefixes. The simulator reproduces each so that a driver that mixes
//! them up fails here as it would against the real tools.

/// Parses a size the way Lustre's `llapi_parse_size` does with `bytes_spec` set.
///
/// A number (with an optional decimal fraction) and an optional one-letter suffix: `b` (bytes),
/// `k`, `m`, `g`, `t`, `p`, `e` (any case, powers of 1024). Without a suffix the number is in
/// `default_units`. Returns the size in bytes, or `None` when the text is not a size or overflows.
pub fn parse_lfs_size(text: &str, default_units: u64) -> Option<u64> {
    if text.is_empty() || text.starts_with('-') {
        return None;
    }
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    if digits_end == 0 {
        return None;
    }
    let whole: u64 = text[..digits_end].parse().ok()?;
    let mut rest = &text[digits_end..];
    let (mut frac, mut frac_div) = (0u64, 1u64);
    if let Some(after_dot) = rest.strip_prefix('.') {
        let frac_end = after_dot
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(after_dot.len());
        let frac_digits = &after_dot[..frac_end];
        if frac_digits.len() > 18 {
            return None;
        }
        if !frac_digits.is_empty() {
            frac = frac_digits.parse().ok()?;
            frac_div = 10u64.pow(frac_digits.len() as u32);
        }
        rest = &after_dot[frac_end..];
    }
    let units: u64 = match rest {
        "" => default_units,
        "b" => 1,
        "k" | "K" => 1 << 10,
        "m" | "M" => 1 << 20,
        "g" | "G" => 1 << 30,
        "t" | "T" => 1 << 40,
        "p" | "P" => 1 << 50,
        "e" | "E" => 1 << 60,
        _ => return None,
    };
    let base = whole.checked_mul(units)?;
    let frac_part = (u128::from(frac) * u128::from(units) / u128::from(frac_div)) as u64;
    base.checked_add(frac_part)
}

/// Formats KiB the way `lfs quota` does: plain digits, or with `-h` a unit (`526.5M`, `0k`).
pub fn lfs_kbytes(kib: u64, human: bool) -> String {
    if !human {
        return kib.to_string();
    }
    let (divisor, unit) = if kib >> 40 != 0 {
        (1u64 << 40, 'P')
    } else if kib >> 30 != 0 {
        (1u64 << 30, 'T')
    } else if kib >> 20 != 0 {
        (1u64 << 20, 'G')
    } else if kib >> 10 != 0 {
        (1u64 << 10, 'M')
    } else {
        return format!("{kib}k");
    };
    format!("{:>5}{unit}", format_g(kib as f64 / divisor as f64, 4))
}

/// C's `%.<precision>g` for finite, non-negative values (as printf writes it).
pub fn format_g(value: f64, precision: usize) -> String {
    let precision = precision.max(1);
    if value == 0.0 {
        return "0".to_string();
    }
    let sci = format!("{:.*e}", precision - 1, value);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if exp < -4 || exp >= precision as i32 {
        let mantissa = trim_fraction(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        let decimals = (precision as i32 - 1 - exp).max(0) as usize;
        trim_fraction(&format!("{value:.decimals$}")).to_string()
    }
}

fn trim_fraction(text: &str) -> &str {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        text
    }
}

/// Parses a BeeGFS 7 "human" size (`UnitTk::strHumanToInt64` after `isValidHumanString`).
///
/// Digits with an optional one-letter suffix `k`, `m`, `g`, `t`, `p`, `e` (any case, powers of
/// 1024). `None` when the text is not valid for `beegfs-ctl`.
pub fn parse_beegfs7_size(text: &str) -> Option<u64> {
    let (number, units) = match text.char_indices().last() {
        None => return None,
        Some((idx, c)) if c.is_ascii_alphabetic() => {
            let units: u64 = match c.to_ascii_lowercase() {
                'k' => 1 << 10,
                'm' => 1 << 20,
                'g' => 1 << 30,
                't' => 1 << 40,
                'p' => 1 << 50,
                'e' => 1 << 60,
                _ => return None,
            };
            (&text[..idx], units)
        }
        Some(_) => (text, 1),
    };
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    number.parse::<u64>().ok()?.checked_mul(units)
}

/// Parses a number the way C's `atoll` does: leading digits, anything else ignored (0 if none).
pub fn parse_leading_u64(text: &str) -> u64 {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    text[..end].parse().unwrap_or(0)
}

/// Parses a BeeGFS 7 chunk size (`UnitTk::strHumanToInt64` without validation).
pub fn parse_beegfs7_chunksize(text: &str) -> u64 {
    parse_beegfs7_size(text).unwrap_or_else(|| parse_leading_u64(text))
}

/// Formats bytes as BeeGFS 7 `UnitTk::int64ToHumanStr` does (`512K`, `1M`, `1025`).
pub fn beegfs7_human(bytes: u64) -> String {
    const UNITS: [(u32, char); 6] = [
        (60, 'E'),
        (50, 'P'),
        (40, 'T'),
        (30, 'G'),
        (20, 'M'),
        (10, 'K'),
    ];
    for (shift, unit) in UNITS {
        let size = 1u64 << shift;
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

/// Formats bytes as BeeGFS 7 `UnitTk::byteToXbyte` plus the quota table's precision.
///
/// `1024` stays `1024 Byte` (the tool divides only while the value is strictly larger).
pub fn beegfs7_quota_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["Byte", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes as f64;
    let mut idx = 0;
    while value > 1024.0 && idx < 6 {
        value /= 1024.0;
        idx += 1;
    }
    if idx == 0 {
        format!("{} Byte", bytes)
    } else {
        format!("{value:.2} {}", UNITS[idx])
    }
}

/// Parses a BeeGFS 8 size (`util.ParseIntFromStr`): SI prefixes are powers of 1000, IEC
/// prefixes (`Ki`, `Mi`, ...) powers of 1024, an optional trailing `B`.
pub fn parse_beegfs8_size(text: &str) -> Result<u64, String> {
    const INVALID: &str = "invalid size format, must be a number followed by a valid SI prefix (k, M, G, T, P, E), IEC prefix (ki, Mi, Gi, Ti, Pi, Ei, Ei), or no prefix for bytes";
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, prefix) = text.split_at(number_end);
    if number.is_empty() || !prefix.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(INVALID.to_string());
    }
    let multiplier: f64 = match prefix {
        "" | "B" => 1.0,
        "k" | "kB" | "K" | "KB" => 1e3,
        "M" | "MB" => 1e6,
        "G" | "GB" => 1e9,
        "T" | "TB" => 1e12,
        "P" | "PB" => 1e15,
        "E" | "EB" => 1e18,
        "ki" | "kiB" | "Ki" | "KiB" => 1024.0,
        "Mi" | "MiB" => 1024f64.powi(2),
        "Gi" | "GiB" => 1024f64.powi(3),
        "Ti" | "TiB" => 1024f64.powi(4),
        "Pi" | "PiB" => 1024f64.powi(5),
        "Ei" | "EiB" => 1024f64.powi(6),
        _ => {
            return Err(format!(
                "bytes must be specified as a whole number, did you mean to specify an SI or IEC prefix besides B? (provided input: {text})"
            ));
        }
    };
    if !number.contains('.') {
        let whole: u64 = number.parse().map_err(|e| {
            format!("unable to parse a valid number from the provided input ({text}): {e}")
        })?;
        return whole.checked_mul(multiplier as u64).ok_or_else(|| {
            format!(
                "value parsed from the provided input would exceed the maximum allowed ({})",
                u64::MAX
            )
        });
    }
    if multiplier == 1.0 {
        return Err(format!(
            "bytes must be specified as a whole number, did you mean to specify an SI or IEC prefix besides B? (provided input: {text})"
        ));
    }
    let value: f64 = number.parse().map_err(|e| {
        format!("unable to parse a valid number from the provided input ({text}): {e}")
    })?;
    let bytes = value * multiplier;
    if bytes > u64::MAX as f64 {
        return Err(format!(
            "value parsed from the provided input ({bytes:.6}) is larger than the maximum allowed ({})",
            u64::MAX
        ));
    }
    Ok(bytes as u64)
}

/// The unit systems of the BeeGFS 8 tool's number formatting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefixMode {
    /// Powers of 1000 with `k`, `M`, `G`...
    Si,
    /// Powers of 1024 with `k`, `M`, `G`...
    Base1024,
    /// Powers of 1024 with `Ki`, `Mi`, `Gi`...
    Iec,
}

/// Formats a value with the largest prefix that keeps the mantissa at least 1, `prec` decimals.
pub fn format_prefix(value: f64, mode: PrefixMode, prec: usize) -> String {
    let (base, prefixes): (f64, [&str; 6]) = match mode {
        PrefixMode::Si => (1000.0, ["k", "M", "G", "T", "P", "E"]),
        PrefixMode::Base1024 => (1024.0, ["k", "M", "G", "T", "P", "E"]),
        PrefixMode::Iec => (1024.0, ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]),
    };
    let mut mantissa = value;
    let mut prefix = "";
    for candidate in prefixes {
        if mantissa.abs() < base {
            break;
        }
        mantissa /= base;
        prefix = candidate;
    }
    format!("{mantissa:.prec$}{prefix}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lfs_sizes_default_to_the_given_units() {
        assert_eq!(parse_lfs_size("1024", 1024), Some(1 << 20));
        assert_eq!(parse_lfs_size("1G", 1024), Some(1 << 30));
        assert_eq!(parse_lfs_size("1.5k", 1024), Some(1536));
        assert_eq!(parse_lfs_size("512b", 1024), Some(512));
        assert_eq!(parse_lfs_size("7", 1), Some(7));
        assert_eq!(parse_lfs_size("1x", 1024), None);
        assert_eq!(parse_lfs_size("-1", 1024), None);
        assert_eq!(parse_lfs_size("", 1024), None);
        assert_eq!(parse_lfs_size("G", 1024), None);
        assert_eq!(parse_lfs_size("99999999999999999999", 1), None);
    }

    #[test]
    fn lfs_human_units_follow_the_printf_format() {
        assert_eq!(lfs_kbytes(0, true), "0k");
        assert_eq!(lfs_kbytes(1023, true), "1023k");
        assert_eq!(lfs_kbytes(539136, true), "526.5M");
        assert_eq!(lfs_kbytes(1024, true), "    1M");
        assert_eq!(lfs_kbytes(14_570_000_000, true), "13.57T");
        assert_eq!(lfs_kbytes(1234, false), "1234");
    }

    #[test]
    fn format_g_switches_to_exponent_form_for_large_values() {
        assert_eq!(format_g(123456.0, 4), "1.235e+05");
        assert_eq!(format_g(0.0001, 4), "0.0001");
        assert_eq!(format_g(0.00001, 4), "1e-05");
        assert_eq!(format_g(9999.6, 4), "1e+04");
    }

    #[test]
    fn beegfs7_sizes_use_binary_single_letters() {
        assert_eq!(parse_beegfs7_size("10G"), Some(10 << 30));
        assert_eq!(parse_beegfs7_size("512k"), Some(512 << 10));
        assert_eq!(parse_beegfs7_size("100"), Some(100));
        assert_eq!(parse_beegfs7_size("10GiB"), None);
        assert_eq!(parse_beegfs7_size("k"), None);
        assert_eq!(parse_beegfs7_chunksize("1m"), 1 << 20);
        assert_eq!(parse_beegfs7_chunksize("junk"), 0);
    }

    #[test]
    fn beegfs7_formats_match_unittk() {
        assert_eq!(beegfs7_human(524288), "512K");
        assert_eq!(beegfs7_human(1 << 20), "1M");
        assert_eq!(beegfs7_human(1025), "1025");
        assert_eq!(beegfs7_quota_size(0), "0 Byte");
        assert_eq!(beegfs7_quota_size(1024), "1024 Byte");
        assert_eq!(beegfs7_quota_size(4096), "4.00 KiB");
        assert_eq!(beegfs7_quota_size(10 << 30), "10.00 GiB");
    }

    #[test]
    fn beegfs8_sizes_distinguish_si_and_iec() {
        assert_eq!(parse_beegfs8_size("10GiB"), Ok(10 << 30));
        assert_eq!(parse_beegfs8_size("10G"), Ok(10_000_000_000));
        assert_eq!(parse_beegfs8_size("512Ki"), Ok(512 << 10));
        assert_eq!(parse_beegfs8_size("1.5Ki"), Ok(1536));
        assert!(parse_beegfs8_size("2m").is_err());
        assert!(parse_beegfs8_size("1.5").is_err());
        assert!(parse_beegfs8_size("").is_err());
    }

    #[test]
    fn format_prefix_picks_the_largest_prefix() {
        assert_eq!(format_prefix(10737418240.0, PrefixMode::Iec, 2), "10.00Gi");
        assert_eq!(format_prefix(524288.0, PrefixMode::Base1024, 0), "512k");
        assert_eq!(format_prefix(3.0, PrefixMode::Si, 2), "3.00");
        assert_eq!(format_prefix(0.0, PrefixMode::Iec, 2), "0.00");
    }

    proptest! {
        #[test]
        fn lfs_size_of_plain_number_multiplies_default(n in 0u64..1 << 40, units in prop::sample::select(vec![1u64, 1024])) {
            prop_assert_eq!(parse_lfs_size(&n.to_string(), units), Some(n * units));
        }

        #[test]
        fn lfs_size_suffix_multiplies(n in 0u64..1 << 20, (suffix, shift) in prop::sample::select(vec![("k", 10u32), ("M", 20), ("g", 30), ("T", 40)])) {
            prop_assert_eq!(parse_lfs_size(&format!("{n}{suffix}"), 1024), Some(n << shift));
        }

        #[test]
        fn lfs_size_never_panics(text in ".{0,24}") {
            let _ = parse_lfs_size(&text, 1024);
        }

        #[test]
        fn beegfs7_size_round_trips_through_human_form(n in 0u64..1 << 40) {
            prop_assert_eq!(parse_beegfs7_size(&beegfs7_human(n)), Some(n));
        }

        #[test]
        fn beegfs7_size_never_panics(text in ".{0,24}") {
            let _ = parse_beegfs7_size(&text);
            let _ = parse_beegfs7_chunksize(&text);
        }

        #[test]
        fn beegfs8_iec_sizes_are_exact(n in 0u64..1 << 30, (prefix, shift) in prop::sample::select(vec![("Ki", 10u32), ("MiB", 20), ("Gi", 30)])) {
            prop_assert_eq!(parse_beegfs8_size(&format!("{n}{prefix}")), Ok(n << shift));
        }

        #[test]
        fn beegfs8_size_never_panics(text in ".{0,24}") {
            let _ = parse_beegfs8_size(&text);
        }

        #[test]
        fn lfs_human_form_is_close_to_the_value(kib in 1024u64..1 << 50) {
            let text = lfs_kbytes(kib, true);
            let unit = text.chars().last().unwrap();
            let number: f64 = text[..text.len() - 1].trim().parse().unwrap();
            let factor = match unit { 'M' => 1u64 << 10, 'G' => 1 << 20, 'T' => 1 << 30, 'P' => 1 << 40, _ => unreachable!() };
            let back = number * factor as f64;
            prop_assert!((back - kib as f64).abs() / (kib as f64) < 0.001, "{} -> {}", kib, text);
        }
    }
}
