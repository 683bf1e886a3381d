//! The one retry policy and the one retry decision: exponential backoff
//! with full jitter on connection errors, timeouts, 5xx and 429; never on
//! other 4xx (the server refused the request, whose body is shown). A
//! durable policy (destinations, whose queue holds the data meanwhile)
//! retries every error but a refusal, forever.

use super::ClientError;
use std::future::Future;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts after the first; `None` retries forever (durable destinations).
    pub max_retries: Option<u32>,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Retry every error except a refusal (a 4xx other than 429), even
    /// those no later attempt is expected to fix (an unreadable token file,
    /// an answer that does not decode): for a durable destination only the
    /// server saying "no" may drop data.
    pub all_but_refusals: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: Some(3),
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            all_but_refusals: false,
        }
    }
}

impl ClientError {
    /// The server refused the request (a 4xx other than 429): sending the
    /// same request again cannot succeed.
    pub fn is_refusal(&self) -> bool {
        self.status()
            .is_some_and(|s| (400..500).contains(&s) && s != 429)
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

    /// The retry decision: whether attempt number `attempt` (0-based) that
    /// failed with `e` is tried again.
    pub fn should_retry(&self, e: &ClientError, attempt: u32) -> bool {
        let worth_it = if self.all_but_refusals {
            !e.is_refusal()
        } else {
            e.is_retriable()
        };
        worth_it && self.max_retries.is_none_or(|m| attempt < m)
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
                Err(e) if self.should_retry(&e, attempt) => {
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

    #[tokio::test(start_paused = true)]
    async fn a_durable_policy_retries_everything_but_a_refusal() {
        let durable = RetryPolicy {
            max_retries: None,
            all_but_refusals: true,
            ..RetryPolicy::default()
        };
        let decode = ClientError::Decode {
            url: "u".into(),
            reason: "broken answer".into(),
        };
        assert!(durable.should_retry(&decode, 1000));
        assert!(durable.should_retry(&status(503), 7));
        assert!(durable.should_retry(&status(429), 7));
        assert!(!durable.should_retry(&status(400), 0));
        assert!(!RetryPolicy::default().should_retry(&decode, 0));
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = durable
            .run("t", || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 => Err(ClientError::Config("token file unreadable".into())),
                    1 => Err(status(500)),
                    _ => Err(status(404)),
                }
            })
            .await;
        assert_eq!(r.unwrap_err().status(), Some(404));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
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
