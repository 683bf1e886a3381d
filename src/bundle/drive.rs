//! The one way a gather or import job is driven, by the CLI and the web UI
//! alike: start it with a progress channel, hand every progress event to
//! the caller (those still queued when the job ends included, so the last
//! one is never lost), cancel it once when `stop` resolves (Ctrl-C for the
//! CLI, `cancel` for the UI), and return its outcome.

use super::{BundleError, CancelToken, ProgressTx};
use std::future::Future;
use tokio::sync::mpsc;

/// Progress events waiting for the caller; a slow caller makes the job
/// skip intermediate events, never block.
const PROGRESS_QUEUE: usize = 64;

/// Runs the job `start` starts until it ends.
pub async fn drive<T, P, F>(
    start: impl FnOnce(ProgressTx<P>) -> (CancelToken, F),
    stop: impl Future<Output = ()>,
    mut on_progress: impl FnMut(P),
) -> Result<T, BundleError>
where
    F: Future<Output = Result<T, BundleError>>,
{
    let (tx, mut rx) = mpsc::channel(PROGRESS_QUEUE);
    let (cancel, job) = start(Some(tx));
    tokio::pin!(job);
    tokio::pin!(stop);
    let mut stopped = false;
    let result = loop {
        tokio::select! {
            r = &mut job => break r,
            Some(p) = rx.recv() => on_progress(p),
            _ = &mut stop, if !stopped => {
                cancel.cancel();
                stopped = true;
            }
        }
    };
    while let Ok(p) = rx.try_recv() {
        on_progress(p);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    type Job = std::pin::Pin<Box<dyn Future<Output = Result<u32, BundleError>> + Send>>;

    /// A job that reports 1..=n, then waits to be cancelled or ends.
    fn job(n: u32, wait_for_cancel: bool) -> impl FnOnce(ProgressTx<u32>) -> (CancelToken, Job) {
        move |tx| {
            let cancel = CancelToken::default();
            let c = cancel.clone();
            let fut = Box::pin(async move {
                for i in 1..=n {
                    super::super::emit_last(&tx, i).await;
                }
                if wait_for_cancel {
                    c.cancelled().await;
                    return Err(BundleError::Cancelled);
                }
                Ok(n)
            });
            (cancel, fut as _)
        }
    }

    #[tokio::test]
    async fn every_event_then_the_outcome() {
        let mut seen = Vec::new();
        let r = drive(job(100, false), std::future::pending(), |p| seen.push(p)).await;
        assert_eq!(r.unwrap(), 100);
        assert_eq!(seen, (1..=100).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn stop_cancels_once() {
        let mut last = 0;
        let r = drive(job(3, true), async {}, |p| last = p).await;
        assert!(matches!(r, Err(BundleError::Cancelled)), "{r:?}");
        assert_eq!(last, 3);
    }
}
