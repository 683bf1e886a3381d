//! Series to queue blocks, and queue blocks to request bodies.
//!
//! Accepting cuts a batch into blocks of at most `max_batch_samples`
//! samples (a long series is split across blocks, its labels repeated), one
//! lane at a time (a block holds the series of one lane only), each already
//! in its wire form: a snappy-compressed remote-write
//! `WriteRequest`, or VictoriaMetrics JSON lines. Sending posts a block as
//! it is, or merges several small ones into one body: protobuf messages
//! concatenate into a valid message (`timeseries` is a repeated field), and
//! JSON lines concatenate as lines, so merging is decompress, append,
//! compress once.

use super::DestinationKind;
use crate::codec::{write_vm_json_parts, CodecError, RemoteWriteEncoder};
use crate::model::{Labels, Sample};

/// Reusable per-accept encoder: buffers survive between batches.
pub(super) struct BlockEncoder {
    kind: DestinationKind,
    max_samples: usize,
    remote_write: RemoteWriteEncoder,
    json: Vec<u8>,
    /// Samples in the open block.
    in_block: usize,
    /// Lane of the open block.
    lane: u8,
    blocks: Vec<(Vec<u8>, u64, u8)>,
    /// Block buffers handed back after their push, reused for the next.
    spare: Vec<Vec<u8>>,
}

impl BlockEncoder {
    pub fn new(kind: DestinationKind, max_samples: usize) -> Self {
        BlockEncoder {
            kind,
            max_samples: max_samples.max(1),
            remote_write: RemoteWriteEncoder::new(),
            json: Vec::new(),
            in_block: 0,
            lane: 0,
            blocks: Vec::new(),
            spare: Vec::new(),
        }
    }

    /// Series added from now on belong to `lane`; a block of another lane
    /// is closed first.
    pub fn set_lane(&mut self, lane: u8) -> Result<(), CodecError> {
        if lane != self.lane {
            self.cut()?;
            self.lane = lane;
        }
        Ok(())
    }

    pub fn add(&mut self, labels: &Labels, samples: &[Sample]) -> Result<(), CodecError> {
        let mut rest = samples;
        while !rest.is_empty() {
            let take = rest.len().min(self.max_samples - self.in_block);
            let (now, later) = rest.split_at(take);
            match self.kind {
                DestinationKind::RemoteWrite => self.remote_write.add(labels, now),
                DestinationKind::VmImport | DestinationKind::Event(_) => {
                    write_vm_json_parts(labels, now, &mut self.json)
                }
            }
            self.in_block += take;
            rest = later;
            if self.in_block == self.max_samples {
                self.cut()?;
            }
        }
        Ok(())
    }

    fn cut(&mut self) -> Result<(), CodecError> {
        if self.in_block == 0 {
            return Ok(());
        }
        let body = match self.kind {
            DestinationKind::RemoteWrite => {
                let mut out = self.spare.pop().unwrap_or_default();
                self.remote_write.finish(&mut out)?;
                out
            }
            DestinationKind::VmImport | DestinationKind::Event(_) => {
                let mut next = self.spare.pop().unwrap_or_default();
                next.clear();
                std::mem::replace(&mut self.json, next)
            }
        };
        self.blocks.push((body, self.in_block as u64, self.lane));
        self.in_block = 0;
        Ok(())
    }

    /// The blocks `(body, samples, lane)` of everything added since the
    /// last `finish` or `reset`.
    pub fn finish(&mut self) -> Result<Vec<(Vec<u8>, u64, u8)>, CodecError> {
        self.cut()?;
        self.lane = 0;
        Ok(std::mem::take(&mut self.blocks))
    }

    /// Takes back block buffers returned by `finish` once they are queued.
    pub fn recycle(&mut self, blocks: Vec<(Vec<u8>, u64, u8)>) {
        const KEEP: usize = 4;
        for (b, _, _) in blocks {
            if self.spare.len() < KEEP {
                self.spare.push(b);
            }
        }
    }

    /// Forgets a half-built batch (after an error), keeping the buffers.
    pub fn reset(&mut self) {
        let mut scratch = Vec::new();
        let _ = self.remote_write.finish(&mut scratch);
        self.json.clear();
        self.in_block = 0;
        self.lane = 0;
        self.blocks.clear();
    }
}

/// One request body from one or more queued blocks, in order.
pub(super) fn merge(kind: DestinationKind, blocks: &[&[u8]]) -> Result<Vec<u8>, CodecError> {
    if let [one] = blocks {
        return Ok(one.to_vec());
    }
    match kind {
        // Event blocks are length-prefixed items: they concatenate too.
        DestinationKind::VmImport | DestinationKind::Event(_) => Ok(blocks.concat()),
        DestinationKind::RemoteWrite => {
            let mut proto = Vec::new();
            let mut decoder = snap::raw::Decoder::new();
            for b in blocks {
                let len =
                    snap::raw::decompress_len(b).map_err(|e| CodecError::Snappy(e.to_string()))?;
                let at = proto.len();
                proto.resize(at + len, 0);
                let n = decoder
                    .decompress(b, &mut proto[at..])
                    .map_err(|e| CodecError::Snappy(e.to_string()))?;
                proto.truncate(at + n);
            }
            snap::raw::Encoder::new()
                .compress_vec(&proto)
                .map_err(|e| CodecError::Compress {
                    size: proto.len(),
                    reason: e.to_string(),
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode_write_request, parse_vm_json_line};
    use crate::model::Series;

    fn series(name: &str, n: usize) -> Series {
        Series::new(
            Labels::from_pairs([("__name__", name), ("job", "j")]),
            (0..n)
                .map(|i| Sample::new(i as i64 * 1000, i as f64))
                .collect(),
        )
    }

    #[test]
    fn blocks_hold_at_most_max_samples_and_split_long_series() {
        let mut enc = BlockEncoder::new(DestinationKind::RemoteWrite, 4);
        for s in [series("a", 3), series("b", 6), series("c", 0)] {
            enc.add(&s.labels, &s.samples).unwrap();
        }
        let blocks = enc.finish().unwrap();
        let counts: Vec<u64> = blocks.iter().map(|b| b.1).collect();
        assert_eq!(counts, [4, 4, 1]);
        let decoded: Vec<Series> = blocks
            .iter()
            .flat_map(|(b, _, _)| decode_write_request(b).unwrap())
            .collect();
        let names: Vec<(&str, usize)> = decoded
            .iter()
            .map(|s| (s.labels.metric_name(), s.samples.len()))
            .collect();
        assert_eq!(names, [("a", 3), ("b", 1), ("b", 4), ("b", 1)]);
        assert!(enc.finish().unwrap().is_empty(), "finish starts afresh");
    }

    #[test]
    fn a_block_holds_one_lane_only() {
        let mut enc = BlockEncoder::new(DestinationKind::RemoteWrite, 100);
        for (lane, s) in [
            (0, series("a", 2)),
            (0, series("b", 1)),
            (3, series("c", 1)),
        ] {
            enc.set_lane(lane).unwrap();
            enc.add(&s.labels, &s.samples).unwrap();
        }
        let blocks = enc.finish().unwrap();
        let shape: Vec<(u64, u8)> = blocks.iter().map(|b| (b.1, b.2)).collect();
        assert_eq!(shape, [(3, 0), (1, 3)]);
    }

    #[test]
    fn merged_remote_write_blocks_decode_as_one_request() {
        let mut enc = BlockEncoder::new(DestinationKind::RemoteWrite, 2);
        for s in [series("a", 2), series("b", 2), series("c", 1)] {
            enc.add(&s.labels, &s.samples).unwrap();
        }
        let blocks = enc.finish().unwrap();
        assert_eq!(blocks.len(), 3);
        let refs: Vec<&[u8]> = blocks.iter().map(|b| b.0.as_slice()).collect();
        let merged = merge(DestinationKind::RemoteWrite, &refs).unwrap();
        let back = decode_write_request(&merged).unwrap();
        assert_eq!(back, vec![series("a", 2), series("b", 2), series("c", 1)]);
    }

    #[test]
    fn vm_import_blocks_are_json_lines() {
        let mut enc = BlockEncoder::new(DestinationKind::VmImport, 10);
        let s = series("a", 3);
        enc.add(&s.labels, &s.samples).unwrap();
        let blocks = enc.finish().unwrap();
        let merged = merge(
            DestinationKind::VmImport,
            &[blocks[0].0.as_slice(), blocks[0].0.as_slice()],
        )
        .unwrap();
        let lines: Vec<Series> = merged
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| parse_vm_json_line(l).unwrap())
            .collect();
        assert_eq!(lines, vec![s.clone(), s]);
    }
}
