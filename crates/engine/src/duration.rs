//! Human durations as written in runbooks: `30s`, `10m`, `1h30m`, `250ms`, `0s`.

use std::time::Duration;

/// Parses `1h30m`, `10m`, `30s`, `250ms`, `2h`, `0`. Units: `h`, `m`, `s`, `ms`; at least one
/// number+unit pair (a bare `0` is accepted); each unit at most once, largest first.
/// The longest duration a runbook, a param or a flag may give: a gate, a soak or a poll
/// interval longer than this is a typo, and one near `u64::MAX` seconds would overflow the
/// clock mid-run (a panic inside `verify`, or inside the rollback).
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration; write e.g. 30s, 10m or 1h30m".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    // Order rank of the last unit seen: h=0, m=1, s=2, ms=3.
    let mut last_rank: Option<u8> = None;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Err(format!(
                "bad duration {text:?}: expected a number at {rest:?}; write e.g. 30s, 10m or 1h30m"
            ));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("bad duration {text:?}: number too large"))?;
        rest = &rest[digits..];
        let (unit, rank, len) = if rest.starts_with("ms") {
            (Duration::from_millis(n), 3u8, 2)
        } else if rest.starts_with('h') {
            (
                Duration::from_secs(n.checked_mul(3600).ok_or("duration too large")?),
                0,
                1,
            )
        } else if rest.starts_with('m') {
            (
                Duration::from_secs(n.checked_mul(60).ok_or("duration too large")?),
                1,
                1,
            )
        } else if rest.starts_with('s') {
            (Duration::from_secs(n), 2, 1)
        } else {
            return Err(format!(
                "bad duration {text:?}: missing or unknown unit after {n} (use h, m, s or ms)"
            ));
        };
        if let Some(prev) = last_rank
            && rank <= prev
        {
            return Err(format!(
                "bad duration {text:?}: units must appear once each, largest first (h, m, s, ms)"
            ));
        }
        last_rank = Some(rank);
        total = total
            .checked_add(unit)
            .ok_or_else(|| format!("bad duration {text:?}: too large"))?;
        rest = &rest[len..];
    }
    if total > MAX_DURATION {
        return Err(format!(
            "bad duration {text:?}: longer than 30 days (720h), the longest any wait may be"
        ));
    }
    Ok(total)
}

/// Formats a duration the way runbooks write it (`1h30m`, `45s`, `250ms`, `0s`).
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    let ms = d.subsec_millis();
    if secs == 0 && ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let h = secs / 3600;
    secs %= 3600;
    let m = secs / 60;
    secs %= 60;
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if secs > 0 {
        out.push_str(&format!("{secs}s"));
    }
    if ms > 0 {
        out.push_str(&format!("{ms}ms"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--param poll_interval=18446744073709551615s` was accepted and panicked mid-run (an
    /// `Instant` overflow in verify, and again in rollback-verify).
    #[test]
    fn a_duration_past_thirty_days_is_refused_at_parse_time() {
        assert_eq!(parse_duration("720h"), Ok(MAX_DURATION));
        let e = parse_duration("18446744073709551615s").unwrap_err();
        assert!(e.contains("longer than 30 days"), "{e}");
        assert!(parse_duration("721h").is_err());
    }

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(
            parse_duration("1m500ms").unwrap(),
            Duration::from_millis(60_500)
        );
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn rejects_bad_forms() {
        for bad in ["", "10", "m", "10x", "1m1h", "1m1m", "-5s", "1.5m", "10 m"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn formats_round_trip() {
        for s in ["1h30m", "45s", "250ms", "0s", "2h", "1m500ms"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }
}
