//! Number syntax of the wire format.
//!
//! Clients are written against the Go agent, whose `strconv.ParseFloat` accepts a little more than Rust's
//! `f64::from_str`: underscores between digits (`1_000`) and hexadecimal floats with a `p` exponent (`0x1p4`).
//! The common case (plain decimal) takes the std fast path; the rest is a slow path only reached when std refuses.

/// Parses a float the way Go's `strconv.ParseFloat(s, 64)` does. Returns `None` for anything Go rejects.
///
/// Non-finite results (`nan`, `inf`, and overflow such as `1e400`) are returned as such; the caller decides
/// whether to accept them.
#[inline(always)]
pub fn parse_f64(s: &str) -> Option<f64> {
    if let Some(v) = parse_short_decimal(s) {
        return Some(v);
    }
    parse_f64_general(s)
}

/// Everything but the short decimal path, out of line.
#[inline(never)]
fn parse_f64_general(s: &str) -> Option<f64> {
    if let Ok(v) = s.parse::<f64>() {
        return Some(v);
    }
    parse_f64_slow(s)
}

/// Powers of ten that are exact in an f64.
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// The common case of the wire: `[-]digits[.digits]` with at most 15 digits in all. The digits form an integer
/// below 2^53 and the divisor is an exact power of ten, so one division is correctly rounded (Clinger's fast
/// path) and gives the same value as a full parse. Anything else returns `None` for the general parser.
#[inline(always)]
pub(crate) fn parse_short_decimal(s: &str) -> Option<f64> {
    let bytes = s.as_bytes();
    let (negative, digits) = match bytes.first()? {
        b'-' => (true, &bytes[1..]),
        _ => (false, bytes),
    };
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    let mut mantissa = 0u64;
    let mut count = 0usize;
    let mut fraction = None;
    for (i, &b) in digits.iter().enumerate() {
        match b {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + u64::from(b - b'0');
                count += 1;
            }
            b'.' if fraction.is_none() => fraction = Some(i),
            _ => return None,
        }
    }
    if count == 0 || count > 15 {
        return None;
    }
    let v = match fraction.map_or(0, |dot| digits.len() - dot - 1) {
        0 => mantissa as f64,
        scale => mantissa as f64 / POW10[scale],
    };
    Some(if negative { -v } else { v })
}

#[cold]
fn parse_f64_slow(s: &str) -> Option<f64> {
    let (negative, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let bytes = body.as_bytes();
    let hex = bytes.len() > 2 && bytes[0] == b'0' && (bytes[1] | 0x20) == b'x';
    if body.contains('_') && !underscores_ok(bytes, hex) {
        return None;
    }
    let v = if hex {
        parse_hex_float(&body[2..])?
    } else if body.contains('_') {
        // Strip the underscores into a stack buffer: a number on the wire never needs more.
        let mut buf = [0u8; 128];
        let mut len = 0;
        for &b in bytes.iter().filter(|&&b| b != b'_') {
            *buf.get_mut(len)? = b;
            len += 1;
        }
        let cleaned = std::str::from_utf8(&buf[..len]).ok()?;
        // std accepts a sign, so a second sign hidden behind the underscores must not sneak through.
        if cleaned.starts_with(['+', '-']) {
            return None;
        }
        cleaned.parse::<f64>().ok()?
    } else {
        return None;
    };
    Some(if negative { -v } else { v })
}

/// Go's rule: an underscore must sit between two digits, or between a base prefix and a digit.
fn underscores_ok(bytes: &[u8], hex: bool) -> bool {
    let is_digit = |b: u8| if hex { b.is_ascii_hexdigit() } else { b.is_ascii_digit() };
    let start = if hex { 2 } else { 0 };
    for i in 0..bytes.len() {
        if bytes[i] != b'_' {
            continue;
        }
        if i < start {
            return false;
        }
        let before_ok = if i == start { hex } else { is_digit(bytes[i - 1]) };
        let after_ok = i + 1 < bytes.len() && is_digit(bytes[i + 1]);
        if !before_ok || !after_ok {
            return false;
        }
    }
    true
}

/// `mantissa[.fraction]p[+-]exponent`, mantissa in hex, exponent in decimal (power of two). Go requires the `p`.
fn parse_hex_float(s: &str) -> Option<f64> {
    let p = s.find(['p', 'P'])?;
    let (mant, exp) = (&s[..p], &s[p + 1..]);
    let exp_digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
    if exp_digits.is_empty() || !exp_digits.bytes().all(|b| b.is_ascii_digit() || b == b'_') {
        return None;
    }
    let mut exponent: i64 = 0;
    for b in exp_digits.bytes().filter(|&b| b != b'_') {
        exponent = (exponent * 10 + i64::from(b - b'0')).min(100_000);
    }
    if exp.starts_with('-') {
        exponent = -exponent;
    }
    let mut mantissa: u64 = 0;
    let mut digits = 0usize;
    let mut seen_point = false;
    for b in mant.bytes() {
        match b {
            b'_' => continue,
            b'.' if !seen_point => seen_point = true,
            _ => {
                let d = (b as char).to_digit(16)?;
                digits += 1;
                if mantissa >> 60 == 0 {
                    mantissa = (mantissa << 4) | u64::from(d);
                    if seen_point {
                        exponent -= 4;
                    }
                } else if !seen_point {
                    // Too many significant digits for u64: drop them but keep the magnitude.
                    exponent += 4;
                }
            }
        }
    }
    if digits == 0 {
        return None;
    }
    let mut v = mantissa as f64;
    // Scale in steps so that intermediate powers of two neither overflow nor underflow early.
    while exponent > 0 {
        let step = exponent.min(1000);
        v *= 2f64.powi(step as i32);
        exponent -= step;
    }
    while exponent < 0 {
        let step = exponent.max(-1000);
        v *= 2f64.powi(step as i32);
        exponent -= step;
    }
    Some(v)
}

/// Parses an integer the way Go's `strconv.ParseInt(s, 10, 64)` does: optional sign, decimal digits, no spaces.
pub fn parse_i64(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<i64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn property_test_the_short_decimal_path_gives_exactly_what_a_full_parse_gives(
            s in "-?[0-9]{0,16}(\\.[0-9]{0,16})?"
        ) {
            if let Some(fast) = parse_short_decimal(&s) {
                let full: f64 = s.parse().expect("the fast path accepted what std refuses");
                prop_assert_eq!(fast.to_bits(), full.to_bits(), "{:?}", s);
            }
        }
    }

    #[test]
    fn the_short_decimal_path_takes_the_common_shapes_and_leaves_the_rest() {
        for s in ["0", "7", "-3", "12.5", "-0.001", "999999999999999", "5.", ".5", "-0"] {
            assert_eq!(parse_short_decimal(s), s.parse().ok(), "{s:?}");
        }
        for s in [
            "",
            "-",
            ".",
            "1e3",
            "+5",
            "1_000",
            "1.2.3",
            "9999999999999999",
            "0x1p4",
            " 1",
        ] {
            assert_eq!(parse_short_decimal(s), None, "{s:?}");
        }
    }

    #[test]
    fn go_float_syntax_is_accepted_and_rust_only_syntax_is_not_widened() {
        let cases: &[(&str, Option<f64>)] = &[
            ("5", Some(5.0)),
            ("+5", Some(5.0)),
            ("-5", Some(-5.0)),
            ("1e3", Some(1000.0)),
            (".5", Some(0.5)),
            ("5.", Some(5.0)),
            ("00012", Some(12.0)),
            ("1_000", Some(1000.0)),
            ("-1_000.5", Some(-1000.5)),
            ("0x1p4", Some(16.0)),
            ("0x_1p4", Some(16.0)),
            ("0X1.8P1", Some(3.0)),
            ("-0x1p-2", Some(-0.25)),
            ("0x10", None),
            ("0xp4", None),
            ("_1", None),
            ("1_", None),
            ("1__0", None),
            ("1_.5", None),
            ("+_1", None),
            (" 5", None),
            ("5 ", None),
            ("1,5", None),
            ("", None),
            ("-", None),
            ("abc", None),
        ];
        for &(input, want) in cases {
            assert_eq!(parse_f64(input), want, "input {input:?}");
        }
    }

    #[test]
    fn non_finite_spellings_parse_so_the_caller_can_reject_them() {
        for s in ["NaN", "nan", "Inf", "+Infinity", "-inf", "1e400"] {
            let v = parse_f64(s).unwrap_or_else(|| panic!("{s} should parse"));
            assert!(!v.is_finite(), "{s}");
        }
        assert_eq!(parse_f64("1e-400"), Some(0.0));
    }

    #[test]
    fn integers_follow_go_parse_int() {
        assert_eq!(parse_i64("+5"), Some(5));
        assert_eq!(parse_i64("-12"), Some(-12));
        assert_eq!(parse_i64("0007"), Some(7));
        for bad in ["", "+", "1.5", " 1", "1 ", "ABCD", "99999999999999999999"] {
            assert_eq!(parse_i64(bad), None, "{bad:?}");
        }
    }
}
