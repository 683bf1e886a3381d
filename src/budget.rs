//! What may wait between two stages of a pipeline, counted in samples.
//!
//! A channel bounded in items holds as much memory as its items are large:
//! 256 series of a `query_range` window are 256 × 720 samples with the
//! default `--window`, but 256 × 1,000,000 with the largest one allowed,
//! and a server decides how many points a series carries. Every stage
//! that queues series therefore also holds a share of a [`SampleBudget`]
//! for each queued item, given back when the item is dropped: the memory in
//! flight stays the same whatever the window, the step or the answer.

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Samples queued between two stages at most: 4 MiB of (timestamp, value)
/// pairs. With the default window (720 points) 256 series fit, the same
/// as the channels' item bounds, so the budget only binds for longer series.
pub const QUEUED_SAMPLES: usize = 1 << 18;

/// Samples that may be held at once; see the module docs.
#[derive(Clone)]
pub struct SampleBudget {
    permits: Arc<Semaphore>,
    max: u32,
}

/// A share of a [`SampleBudget`], given back when dropped.
#[derive(Debug)]
pub struct Held {
    _permit: OwnedSemaphorePermit,
}

impl SampleBudget {
    pub fn new(max_samples: usize) -> SampleBudget {
        let max = u32::try_from(max_samples.clamp(1, Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
        SampleBudget {
            permits: Arc::new(Semaphore::new(max as usize)),
            max,
        }
    }

    /// An item counts as one sample at least (an empty series still costs
    /// its labels), and as the whole budget at most: one larger than the
    /// budget waits until nothing else is held, then passes alone.
    fn share(&self, samples: usize) -> u32 {
        u32::try_from(samples).map_or(self.max, |n| n.clamp(1, self.max))
    }

    /// Waits until `samples` fit, then holds them.
    pub async fn hold(&self, samples: usize) -> Held {
        let share = self.share(samples);
        let permit = Arc::clone(&self.permits)
            .acquire_many_owned(share)
            .await
            .expect("the budget's semaphore is never closed");
        Held { _permit: permit }
    }

    /// Holds `samples` if they fit now.
    pub fn try_hold(&self, samples: usize) -> Option<Held> {
        let share = self.share(samples);
        let permit = Arc::clone(&self.permits)
            .try_acquire_many_owned(share)
            .ok()?;
        Some(Held { _permit: permit })
    }

    /// [`SampleBudget::hold`] for a thread outside the runtime's workers
    /// (`spawn_blocking`), such as a stream's decoder. A share that fits
    /// now is taken without entering the runtime: a decoder takes one per
    /// series, and only a full queue has to wait.
    pub fn hold_blocking(&self, samples: usize) -> Held {
        self.try_hold(samples)
            .unwrap_or_else(|| tokio::runtime::Handle::current().block_on(self.hold(samples)))
    }

    /// Samples held now.
    pub fn held(&self) -> usize {
        self.max as usize - self.permits.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn holds_until_dropped_and_counts_at_least_one() {
        let budget = SampleBudget::new(10);
        let a = budget.hold(6).await;
        let empty = budget.hold(0).await;
        assert_eq!(budget.held(), 7);
        assert!(budget.try_hold(4).is_none(), "3 left");
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.hold(4).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "4 more than the 3 left must wait");
        drop(a);
        let b = waiting.await.unwrap();
        assert_eq!(budget.held(), 5);
        drop((b, empty));
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test]
    async fn an_item_larger_than_the_budget_passes_alone() {
        let budget = SampleBudget::new(10);
        let small = budget.hold(1).await;
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.hold(usize::MAX).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiting.is_finished(),
            "the whole budget waits for the rest"
        );
        drop(small);
        let big = waiting.await.unwrap();
        assert_eq!(budget.held(), 10);
        drop(big);
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_blocking_thread_waits_for_its_share() {
        let budget = SampleBudget::new(4);
        let first = budget.hold(4).await;
        let thread = tokio::task::spawn_blocking({
            let budget = budget.clone();
            move || budget.hold_blocking(2)
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!thread.is_finished());
        drop(first);
        let second = thread.await.unwrap();
        assert_eq!(budget.held(), 2);
        drop(second);
    }
}
