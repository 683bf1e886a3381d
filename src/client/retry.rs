//! The one retry policy: exponential backoff with full jitter on connection
//! errors, timeouts, 5xx and 429; never on other 4xx, whose body is shown.

use super::ClientError;
use std::future::Future;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts after the first; `None` retries forever (durable destinations).
    pub max_retries: Option<u32>,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: Some(3),
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    pub fn never() -> Self {
        RetryPolicy {
            max_retries: Some(0),
            ..Default::default()
        }
    }

    /// The pause before retry number `attempt` (0-based): full jitter over a doubling cap.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let cap = self
            .initial_backoff
            .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
            .min(self.max_backoff);
        let lower = cap / 2;
        lower + cap.saturating_sub(lower).mul_f64(fastrand::f64())
    }

    pub async fn run<T, F, Fut>(&self, what: &str, mut attempt_fn: F) -> Result<T, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let mut attempt = 0u32;
        loop {
            match attempt_fn().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retriable() && self.max_retries.is_none_or(|m| attempt < m) => {
                    let pause = self.backoff(attempt);
                    tracing::warn!(%what, error = %e, retry_in = ?pause, attempt = attempt + 1, "request failed, retrying");
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn status(code: u16) -> ClientError {
        ClientError::Status {
            url: "u".into(),
            status: code,
            body: "b".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_5xx_then_gives_up() {
        let calls = AtomicU32::new(0);
        let p = RetryPolicy::default();
        let r: Result<(), _> = p
            .run("t", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(status(503))
            })
            .await;
        assert_eq!(r.unwrap_err().status(), Some(503));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn never_retries_4xx() {
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = RetryPolicy::default()
            .run("t", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(status(422))
            })
            .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn succeeds_after_transient_errors() {
        let calls = AtomicU32::new(0);
        let r = RetryPolicy::default()
            .run("t", || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(status(429))
                } else {
                    Ok(7)
                }
            })
            .await;
        assert_eq!(r.unwrap(), 7);
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let p = RetryPolicy::default();
        for attempt in 0..40 {
            let b = p.backoff(attempt);
            assert!(b <= p.max_backoff, "{b:?}");
        }
        assert!(p.backoff(0) >= Duration::from_millis(250));
    }
}
