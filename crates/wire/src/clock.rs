//! Log timestamps in the format tracing-subscriber writes (`2026-01-01T10:00:00.123456Z`,
//! UTC, microseconds), formatted without a date library: the date and time of day once per
//! second (cached per thread), the microseconds per line.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the epoch, now.
#[inline]
pub fn now_nanos() -> i128 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(before_epoch) => -(before_epoch.duration().as_nanos() as i128),
    }
}

/// (year, month, day, hour, minute, second) of `secs` after the epoch, UTC (Howard
/// Hinnant's days-to-civil algorithm).
pub fn civil(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

/// `YYYY-MM-DDTHH:MM:SS.` for one second.
type SecondText = [u8; 20];

thread_local! {
    static SECOND: Cell<(u64, SecondText)> = const { Cell::new((u64::MAX, [0; 20])) };
}

fn second_text(secs: u64) -> SecondText {
    let (y, mo, d, h, mi, s) = civil(secs);
    let mut text = [0u8; 20];
    let formatted = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.");
    let bytes = formatted.as_bytes();
    let n = bytes.len().min(20);
    text[..n].copy_from_slice(&bytes[..n]);
    text
}

/// Appends the timestamp of `nanos` (since the epoch) as tracing writes it:
/// `2026-01-01T10:00:00.123456Z`.
pub fn push_timestamp(out: &mut Vec<u8>, nanos: i128) {
    let nanos = nanos.max(0) as u128;
    let secs = (nanos / 1_000_000_000) as u64;
    let micros = ((nanos % 1_000_000_000) / 1000) as u32;
    let text = SECOND.with(|cached| {
        let (at, text) = cached.get();
        if at == secs {
            text
        } else {
            let text = second_text(secs);
            cached.set((secs, text));
            text
        }
    });
    out.extend_from_slice(&text);
    let mut digits = [b'0'; 6];
    let mut rest = micros;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out.extend_from_slice(&digits);
    out.push(b'Z');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(civil(951_782_400), (2000, 2, 29, 0, 0, 0));
        assert_eq!(civil(1_621_464_827), (2021, 5, 19, 22, 53, 47));
        assert_eq!(civil(20_000 * 86_400 + 3599), (2024, 10, 4, 0, 59, 59));
        assert_eq!(civil(4_102_444_800), (2100, 1, 1, 0, 0, 0));
    }

    #[test]
    fn timestamps_look_like_tracing_s() {
        let mut out = Vec::new();
        push_timestamp(&mut out, 1_621_464_827_959_498_503);
        assert_eq!(out, b"2021-05-19T22:53:47.959498Z");
        out.clear();
        push_timestamp(&mut out, 1_621_464_827_000_001_999);
        assert_eq!(out, b"2021-05-19T22:53:47.000001Z");
        out.clear();
        push_timestamp(&mut out, 1_621_464_828_000_000_000);
        assert_eq!(out, b"2021-05-19T22:53:48.000000Z");
    }
}
