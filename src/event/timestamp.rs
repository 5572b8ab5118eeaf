//! Suricata / ISO 8601 timestamps (`2024-03-01T12:00:00.124448+0000`), parsed once for every
//! user: the Parquet sink's `timestamp` column and `dragonfly.date2epoch`.

/// The parts of a timestamp: the civil time as written, the fraction (first 9 digits, as
/// nanoseconds) and the UTC offset in seconds when one is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Timestamp {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub min: u32,
    pub sec: u32,
    pub nanos: u32,
    pub offset: Option<i64>,
}

impl Timestamp {
    /// Whole seconds since the epoch of the civil time at UTC offset `offset`.
    pub(crate) fn epoch_secs(&self, offset: i64) -> i64 {
        days_from_civil(self.year, self.month, self.day) * 86_400
            + i64::from(self.hour * 3600 + self.min * 60 + self.sec)
            - offset
    }
}

fn digits(s: &[u8], at: usize, n: usize) -> Option<u32> {
    s.get(at..at + n)?
        .iter()
        .try_fold(0u32, |v, &c| c.is_ascii_digit().then(|| v * 10 + u32::from(c - b'0')))
}

pub(crate) fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The number of one to `max` ASCII digits at `s[*i..]`, moving `*i` past them.
fn field(s: &[u8], i: &mut usize, max: usize) -> Option<u32> {
    let start = *i;
    let mut v = 0u32;
    while *i - start < max
        && let Some(&c) = s.get(*i).filter(|c| c.is_ascii_digit())
    {
        v = v * 10 + u32::from(c - b'0');
        *i += 1;
    }
    (*i > start).then_some(v)
}

/// Parses `YYYY-MM-DD(T|t| )HH:MM:SS[(.|,)fraction][Z|±HH|±HHMM|±HH:MM]`: the year four digits,
/// the other fields one or two (as `strptime`'s `%m`, `%d`, `%H`, `%M`, `%S` read them), a
/// fraction of any length (digits past the ninth are checked, not kept), the zone optional.
/// `None` when malformed or out of range.
pub(crate) fn parse(s: &[u8]) -> Option<Timestamp> {
    let mut i = 0;
    let mut part = |max: usize, after: Option<&[u8]>| -> Option<u32> {
        let v = field(s, &mut i, max)?;
        if let Some(seps) = after {
            if !seps.contains(s.get(i)?) {
                return None;
            }
            i += 1;
        }
        Some(v)
    };
    let year = part(4, Some(b"-"))?;
    let (month, day) = (part(2, Some(b"-"))?, part(2, Some(b"Tt "))?);
    let (hour, min, sec) = (part(2, Some(b":"))?, part(2, Some(b":"))?, part(2, None)?);
    // The year is four digits.
    if !s[..4].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let year = i64::from(year);
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut nanos = 0u32;
    if matches!(s.get(i), Some(b'.' | b',')) {
        i += 1;
        let start = i;
        while let Some(&c) = s.get(i).filter(|c| c.is_ascii_digit()) {
            if i - start < 9 {
                nanos = nanos * 10 + u32::from(c - b'0');
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return None;
        }
        for _ in n.min(9)..9 {
            nanos *= 10;
        }
    }
    let offset = match s.get(i) {
        None => None,
        Some(b'Z' | b'z') => {
            i += 1;
            Some(0)
        }
        Some(&sign @ (b'+' | b'-')) => {
            let oh = digits(s, i + 1, 2)?;
            i += 3;
            let om = if s.get(i) == Some(&b':') {
                i += 3;
                digits(s, i - 2, 2)?
            } else if s.len() > i {
                i += 2;
                digits(s, i - 2, 2)?
            } else {
                0
            };
            if oh > 23 || om > 59 {
                return None;
            }
            let o = i64::from(oh * 3600 + om * 60);
            Some(if sign == b'-' { -o } else { o })
        }
        Some(_) => return None,
    };
    if i != s.len() {
        return None;
    }
    Some(Timestamp {
        year,
        month,
        day,
        hour,
        min,
        sec,
        nanos,
        offset,
    })
}
