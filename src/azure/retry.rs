//! What to do with an ARM answer: the retry decisions as pure functions.
//!
//! | answer | decision |
//! |---|---|
//! | 2xx | done |
//! | 429 | wait `Retry-After` (or `retry-after-ms` / `x-ms-retry-after-ms`), else backoff; retry |
//! | 500, 502, 503, 504 (and 408) | same |
//! | 412, or 409 `EtagMismatch` | re-read the cluster, re-validate, retry the PUT |
//! | 409 `OperationNotAllowed` / `AnotherOperationInProgress` | wait for the running operation, re-read, retry |
//! | anything else | fail with ARM's code and message |
//!
//! Every loop is bounded by [`RetryPolicy::max_attempts`].

use std::time::Duration;

use http::HeaderMap;

/// Bounds and pacing of retries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request (first try included) for throttling and server errors, and
    /// rounds of re-read for eTag conflicts and busy clusters.
    pub max_attempts: u32,
    /// First backoff; doubles per attempt.
    pub base_delay: Duration,
    /// Cap of the backoff, and of any `Retry-After` a server asks for.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// Exponential backoff for attempt `n` (1-based): base, 2·base, 4·base, … capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(16));
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// The delay before retrying: what the server asked for (capped), else the backoff.
    pub fn delay(&self, attempt: u32, server_asked: Option<Duration>) -> Duration {
        match server_asked {
            Some(d) => d.min(self.max_delay),
            None => self.backoff(attempt),
        }
    }
}

/// What to do after an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Success,
    /// Throttled or a transient server error: retry the same request after a delay.
    Transient,
    /// eTag conflict: re-read the resource, re-validate, then retry.
    Reread,
    /// Another operation runs on the cluster: wait until it is idle, re-read, retry.
    WaitForIdle,
    Fail,
}

/// Decides from the status and ARM's error code (and message, for the eTag case that AKS
/// has reported under a generic code).
pub fn decide(status: u16, code: Option<&str>, message: Option<&str>) -> Decision {
    let code = code.unwrap_or("");
    let message = message.unwrap_or("");
    match status {
        200..=299 => Decision::Success,
        429 | 408 | 500 | 502 | 503 | 504 => Decision::Transient,
        412 => Decision::Reread,
        409 if code.eq_ignore_ascii_case("EtagMismatch")
            || message.to_ascii_lowercase().contains("etag mismatch") =>
        {
            Decision::Reread
        }
        409 if code.eq_ignore_ascii_case("OperationNotAllowed")
            || code.eq_ignore_ascii_case("AnotherOperationInProgress") =>
        {
            Decision::WaitForIdle
        }
        _ => Decision::Fail,
    }
}

/// The delay a response asks for: `retry-after-ms`, `x-ms-retry-after-ms` (milliseconds),
/// then `Retry-After` (seconds, or an HTTP date).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    for name in ["retry-after-ms", "x-ms-retry-after-ms"] {
        if let Some(ms) = text(name).and_then(|v| v.parse::<u64>().ok()) {
            return Some(Duration::from_millis(ms));
        }
    }
    let value = text("retry-after")?;
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let delta = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn mk_headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn decisions_per_status_and_code() {
        assert_eq!(decide(200, None, None), Decision::Success);
        assert_eq!(decide(201, None, None), Decision::Success);
        assert_eq!(
            decide(429, Some("TooManyRequests"), None),
            Decision::Transient
        );
        for s in [500, 502, 503, 504, 408] {
            assert_eq!(decide(s, None, None), Decision::Transient, "{s}");
        }
        assert_eq!(
            decide(412, Some("PreconditionFailed"), None),
            Decision::Reread
        );
        assert_eq!(decide(409, Some("EtagMismatch"), None), Decision::Reread);
        assert_eq!(
            decide(409, Some("Conflict"), Some("rpc error: Etag mismatched")),
            Decision::Reread
        );
        assert_eq!(
            decide(
                409,
                Some("OperationNotAllowed"),
                Some("Operation is not allowed: Another operation (Updating) is in progress")
            ),
            Decision::WaitForIdle
        );
        assert_eq!(
            decide(409, Some("ServiceMeshUpgradeInProgress"), None),
            Decision::Fail
        );
        assert_eq!(decide(400, Some("BadRequest"), None), Decision::Fail);
        assert_eq!(decide(404, Some("ResourceNotFound"), None), Decision::Fail);
        assert_eq!(decide(401, None, None), Decision::Fail);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let p = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
        };
        assert_eq!(p.backoff(1), Duration::from_millis(100));
        assert_eq!(p.backoff(2), Duration::from_millis(200));
        assert_eq!(p.backoff(3), Duration::from_millis(400));
        assert_eq!(p.backoff(4), Duration::from_millis(500));
        assert_eq!(p.backoff(60), Duration::from_millis(500));
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(3))),
            Duration::from_millis(500)
        );
        assert_eq!(
            p.delay(1, Some(Duration::from_millis(50))),
            Duration::from_millis(50)
        );
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(
            retry_after(&mk_headers(&[("retry-after", "7")])),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            retry_after(&mk_headers(&[
                ("retry-after", "7"),
                ("retry-after-ms", "250")
            ])),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            retry_after(&mk_headers(&[("x-ms-retry-after-ms", "40")])),
            Some(Duration::from_millis(40))
        );
        assert_eq!(
            retry_after(&mk_headers(&[(
                "retry-after",
                "Wed, 21 Oct 2015 07:28:00 GMT"
            )])),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(retry_after(&mk_headers(&[("retry-after", "soon")])), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }
}
