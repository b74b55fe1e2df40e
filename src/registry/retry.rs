//! The one place that decides whether and when a registry operation is tried again.
//!
//! Retries wrap whole operations (a blob download with its Range resume state, a blob upload,
//! a manifest PUT), never single HTTP requests inside them, so attempts do not multiply.
//! Transient failures are connection errors, 5xx, 408 and 429; the wait doubles from
//! `base_delay` up to `max_delay`, with up to 50% random jitter, and a `Retry-After` from the
//! registry is honoured, as seconds or as an HTTP-date (capped at `max_delay`).

use std::time::Duration;

use super::RegistryError;

/// How often and how patiently to retry.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Total attempts including the first one.
    pub max_attempts: u32,
    /// Wait after the first failure.
    pub base_delay: Duration,
    /// Upper bound for any single wait.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1` (attempt counts from 1), given the failure.
    pub(crate) fn delay(&self, attempt: u32, err: &RegistryError) -> Duration {
        if let Some(after) = err.retry_after() {
            return after.min(self.max_delay);
        }
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let capped = exp.min(self.max_delay);
        // Jitter spreads out clients that failed together (e.g. parallel layer uploads).
        let jitter = capped.mul_f64(jitter_fraction() * 0.5);
        capped.saturating_sub(jitter)
    }

    /// Runs `op` until it succeeds, fails permanently, or attempts run out. `op` receives the
    /// attempt number (1-based).
    pub async fn run<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, RegistryError>
    where
        F: FnMut(u32) -> Fut,
        Fut: std::future::Future<Output = Result<T, RegistryError>>,
    {
        let mut attempt = 1;
        loop {
            match op(attempt).await {
                Ok(v) => return Ok(v),
                Err(err) => self.backoff(what, attempt, err).await?,
            }
            attempt += 1;
        }
    }

    /// Decides after failed attempt `attempt` (1-based): returns the error when it is
    /// permanent or attempts are used up, else waits the backoff delay and returns `Ok`.
    /// For loops that keep state between attempts (e.g. a download resuming with `Range`).
    pub async fn backoff(
        &self,
        what: &str,
        attempt: u32,
        err: RegistryError,
    ) -> Result<(), RegistryError> {
        if !err.is_transient() || attempt >= self.max_attempts {
            if attempt > 1 {
                tracing::warn!("{what}: giving up after {attempt} attempts");
            }
            return Err(err);
        }
        let wait = self.delay(attempt, &err);
        tracing::warn!(
            "{what}: attempt {attempt}/{} failed: {err}; retrying in {wait:?}",
            self.max_attempts
        );
        tokio::time::sleep(wait).await;
        Ok(())
    }
}

/// A number in [0, 1) that differs between calls; good enough for backoff jitter.
fn jitter_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Parses `Retry-After` (RFC 9110 10.2.3): delta-seconds, or an HTTP-date turned into the
/// time left until then (zero when it has passed, so the retry happens at once).
pub(crate) fn parse_retry_after(value: Option<&reqwest::header::HeaderValue>) -> Option<Duration> {
    retry_after_at(value?.to_str().ok()?, std::time::SystemTime::now())
}

fn retry_after_at(text: &str, now: std::time::SystemTime) -> Option<Duration> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(text).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn transient() -> RegistryError {
        RegistryError::Transport {
            registry: "r".into(),
            action: "GET".into(),
            reason: "reset".into(),
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let out = fast()
            .run("t", |attempt| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if attempt < 3 {
                        Err(transient())
                    } else {
                        Ok(attempt)
                    }
                }
            })
            .await
            .unwrap();
        assert_eq!(out, 3);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn attempts_are_bounded_and_permanent_errors_stop_at_once() {
        let calls = AtomicU32::new(0);
        let err = fast()
            .run("t", |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err::<(), _>(transient()) }
            })
            .await
            .unwrap_err();
        assert!(err.is_transient());
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        let calls = AtomicU32::new(0);
        fast()
            .run("t", |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err::<(), _>(RegistryError::BadPlatform("x".into())) }
            })
            .await
            .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn delays_grow_and_honour_retry_after() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        };
        let d1 = p.delay(1, &transient());
        let d4 = p.delay(4, &transient());
        assert!(d1 <= Duration::from_millis(100) && d1 >= Duration::from_millis(50));
        assert!(d4 <= Duration::from_millis(800) && d4 >= Duration::from_millis(400));
        assert!(p.delay(30, &transient()) <= Duration::from_secs(2));
        let limited = RegistryError::Status {
            registry: "r".into(),
            repository: "x".into(),
            action: "GET".into(),
            status: 429,
            message: String::new(),
            retry_after: Some(Duration::from_secs(1)),
        };
        assert_eq!(p.delay(1, &limited), Duration::from_secs(1));
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        use std::time::{SystemTime, UNIX_EPOCH};
        // Sun, 06 Nov 1994 08:49:37 GMT, the RFC's example date.
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(retry_after_at(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after_at("Sun, 06 Nov 1994 08:49:42 GMT", now),
            Some(Duration::from_secs(5))
        );
        // The obsolete RFC 850 and asctime forms are valid HTTP-dates too.
        assert_eq!(
            retry_after_at("Sunday, 06-Nov-94 08:50:37 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            retry_after_at("Sun Nov  6 08:49:40 1994", now),
            Some(Duration::from_secs(3))
        );
        // A date in the past means "now", not "no advice".
        assert_eq!(
            retry_after_at("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after_at("soon", now), None);
        assert_eq!(retry_after_at("-3", now), None);
        let header = reqwest::header::HeaderValue::from_str(&httpdate::fmt_http_date(
            SystemTime::now() + Duration::from_secs(30),
        ))
        .unwrap();
        let wait = parse_retry_after(Some(&header)).unwrap();
        assert!(
            wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
    }
}
