//! The remote-write encoding a batch arrived in, kept beside its decoded
//! series. A router mostly forwards series unchanged (filter-only
//! relabeling routes them, it does not rewrite them); a destination that
//! sends a series as it came copies the series' own bytes instead of
//! encoding its labels and samples again, which was the largest single
//! cost of routing.

/// The decompressed `WriteRequest` of a batch and where each of its series
/// is in it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WireForm {
    /// The whole decompressed message.
    pub message: Vec<u8>,
    /// Per series of the batch, in order: the byte range of the body of its
    /// `TimeSeries` message, or an empty range when the series must be
    /// encoded again (see [`WireForm::series_bytes`]).
    pub spans: Vec<(u32, u32)>,
}

/// The span of a series that has no reusable encoding.
pub const NO_SPAN: (u32, u32) = (0, 0);

impl WireForm {
    /// The encoded body of series `i`'s `TimeSeries` message, when it means
    /// exactly the decoded series: the decoder gives a span only to series
    /// whose labels came sorted, unique and non-empty, with no field it
    /// skips (exemplars, histograms, unknown fields), so re-encoding the
    /// decoded series would say the same thing.
    pub fn series_bytes(&self, i: usize) -> Option<&[u8]> {
        let &(start, end) = self.spans.get(i)?;
        if start == end {
            return None;
        }
        self.message.get(start as usize..end as usize)
    }

    /// Forgets every span (the series changed in a way not tracked).
    pub fn forget(&mut self) {
        self.spans.iter_mut().for_each(|s| *s = NO_SPAN);
    }
}
