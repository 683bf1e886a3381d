//! Samples and series: what flows from a source through transforms to a sink.

use super::Labels;

/// Prometheus' staleness marker: a NaN with this exact bit pattern tells a
/// destination that a series ended, as opposed to a NaN value.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub timestamp_ms: i64,
    pub value: f64,
}

impl Sample {
    pub fn new(timestamp_ms: i64, value: f64) -> Self {
        Sample {
            timestamp_ms,
            value,
        }
    }

    pub fn stale(timestamp_ms: i64) -> Self {
        Sample::new(timestamp_ms, f64::from_bits(STALE_NAN_BITS))
    }

    pub fn is_stale(&self) -> bool {
        self.value.to_bits() == STALE_NAN_BITS
    }
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Series {
    pub labels: Labels,
    pub samples: Vec<Sample>,
}

impl Series {
    pub fn new(labels: Labels, samples: Vec<Sample>) -> Self {
        Series { labels, samples }
    }
}

/// A bounded group of series moved through the pipeline at once.
pub type Batch = Vec<Series>;

/// Number of samples in a batch.
pub fn sample_count(batch: &[Series]) -> usize {
    batch.iter().map(|s| s.samples.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_marker_is_a_specific_nan() {
        assert!(Sample::stale(1).is_stale());
        assert!(Sample::stale(1).value.is_nan());
        assert!(!Sample::new(1, f64::NAN).is_stale());
    }
}
