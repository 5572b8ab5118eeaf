//! C's `strtod` in the C locale, for the places that read numbers as the original's C did:
//! `cjson_safe.decode` (lua-cjson's tokenizer) and Redis-ML's `atof`.

/// C's `strtod` (C locale) on the start of `s`: the value and the bytes it read, `None` when
/// it reads nothing. Decimal (`1`, `-1.5e3`, `1.`, `-.5`), hexadecimal (`0x1F`, `0x1.8p1`),
/// `inf`/`infinity` and `nan`/`nan(chars)`, any case, with an optional sign.
pub(crate) fn strtod(s: &[u8]) -> Option<(f64, usize)> {
    let at = |i: usize| s.get(i).copied().unwrap_or(0);
    let mut i = 0;
    let neg = match at(0) {
        b'-' => {
            i = 1;
            true
        }
        b'+' => {
            i = 1;
            false
        }
        _ => false,
    };
    let sign = |v: f64| if neg { -v } else { v };
    let rest = &s[i..];
    if rest.len() >= 3 && rest[..3].eq_ignore_ascii_case(b"inf") {
        let n = if rest.len() >= 8 && rest[..8].eq_ignore_ascii_case(b"infinity") {
            8
        } else {
            3
        };
        return Some((sign(f64::INFINITY), i + n));
    }
    if rest.len() >= 3 && rest[..3].eq_ignore_ascii_case(b"nan") {
        let mut n = 3;
        if at(i + 3) == b'(' {
            let close = rest[4..]
                .iter()
                .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'));
            if let Some(k) = close
                && rest[4 + k] == b')'
            {
                n = 4 + k + 1;
            }
        }
        return Some((f64::NAN, i + n));
    }
    if at(i) == b'0' && at(i + 1) | 0x20 == b'x' {
        if let Some((v, n)) = hex_float(&s[i + 2..]) {
            return Some((sign(v), i + 2 + n));
        }
        // "0x" without hex digits: strtod reads the "0".
        return Some((sign(0.0), i + 1));
    }
    // Decimal: digits, an optional fraction, an optional exponent with at least one digit.
    let start = i;
    let int_digits = s[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    i += int_digits;
    let mut frac_digits = 0;
    if at(i) == b'.' {
        frac_digits = s[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if int_digits + frac_digits > 0 {
            i += 1 + frac_digits;
        }
    }
    if int_digits + frac_digits == 0 {
        return None;
    }
    if at(i) | 0x20 == b'e' {
        let mut j = i + 1;
        if matches!(at(j), b'+' | b'-') {
            j += 1;
        }
        let exp_digits = s[j..].iter().take_while(|c| c.is_ascii_digit()).count();
        if exp_digits > 0 {
            i = j + exp_digits;
        }
    }
    let text = std::str::from_utf8(&s[start..i]).ok()?;
    let v: f64 = text.parse().ok()?;
    Some((sign(v), i))
}

/// The hexadecimal digits (with an optional `.` and binary exponent `p`) after `0x`: the value
/// and the bytes read, `None` without a digit.
fn hex_float(s: &[u8]) -> Option<(f64, usize)> {
    let at = |i: usize| s.get(i).copied().unwrap_or(0);
    let digit = |c: u8| (c as char).to_digit(16);
    let mut mant: u64 = 0;
    let mut exp: i64 = 0;
    let mut sticky = false;
    let mut digits = 0;
    let mut i = 0;
    let mut take = |d: u32, frac: bool, exp: &mut i64| {
        if mant >> 56 == 0 {
            mant = mant << 4 | d as u64;
            if frac {
                *exp -= 4;
            }
        } else {
            sticky |= d != 0;
            if !frac {
                *exp += 4;
            }
        }
    };
    while let Some(d) = digit(at(i)) {
        take(d, false, &mut exp);
        digits += 1;
        i += 1;
    }
    if at(i) == b'.' {
        let mut j = i + 1;
        let mut frac = 0;
        while let Some(d) = digit(at(j)) {
            take(d, true, &mut exp);
            frac += 1;
            j += 1;
        }
        if digits + frac > 0 {
            i = j;
            digits += frac;
        }
    }
    if digits == 0 {
        return None;
    }
    if at(i) | 0x20 == b'p' {
        let mut j = i + 1;
        let neg = at(j) == b'-';
        if matches!(at(j), b'+' | b'-') {
            j += 1;
        }
        let n = s[j..].iter().take_while(|c| c.is_ascii_digit()).count();
        if n > 0 {
            let e = s[j..j + n]
                .iter()
                .fold(0i64, |e, c| (e * 10 + (c - b'0') as i64).min(1 << 20));
            exp += if neg { -e } else { e };
            i = j + n;
        }
    }
    let m = (mant | sticky as u64) as f64;
    Some((scale2(m, exp), i))
}

/// `m * 2^e` without overflowing the intermediate power.
fn scale2(mut m: f64, mut e: i64) -> f64 {
    while e > 1000 {
        m *= 2f64.powi(1000);
        e -= 1000;
    }
    while e < -1000 {
        m *= 2f64.powi(-1000);
        e += 1000;
    }
    m * 2f64.powi(e as i32)
}

#[cfg(test)]
mod tests {
    use super::strtod;

    #[test]
    fn strtod_reads_what_c_reads() {
        let r = |s: &str| strtod(s.as_bytes());
        assert_eq!(r("12"), Some((12.0, 2)));
        assert_eq!(r("-1.5e3,"), Some((-1500.0, 6)));
        assert_eq!(r("1."), Some((1.0, 2)));
        assert_eq!(r("-.5"), Some((-0.5, 3)));
        assert_eq!(r("1e"), Some((1.0, 1)));
        assert_eq!(r("1e+x"), Some((1.0, 1)));
        assert_eq!(r("007"), Some((7.0, 3)));
        assert_eq!(r("+5"), Some((5.0, 2)));
        assert_eq!(r("0x1F"), Some((31.0, 4)));
        assert_eq!(r("0x1.8p1"), Some((3.0, 7)));
        assert_eq!(r("0x"), Some((0.0, 1)));
        assert_eq!(r("-0x10g"), Some((-16.0, 5)));
        assert_eq!(r("Infinity"), Some((f64::INFINITY, 8)));
        assert_eq!(r("-inFx"), Some((f64::NEG_INFINITY, 4)));
        assert_eq!(r("1e400"), Some((f64::INFINITY, 5)));
        assert!(r("nan(abc)").is_some_and(|(v, n)| v.is_nan() && n == 8));
        assert!(r("NaN(").is_some_and(|(v, n)| v.is_nan() && n == 3));
        assert_eq!(r("-"), None);
        assert_eq!(r("."), None);
        assert_eq!(r("- 1"), None);
        assert_eq!(r("0x10000000000000001p0").map(|v| v.0), Some(18446744073709551617.0));
    }
}
