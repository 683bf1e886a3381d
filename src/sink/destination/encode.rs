//! Series to queue blocks, and queue blocks to request bodies.
//!
//! Accepting cuts a batch into blocks of at most `max_batch_samples`
//! samples (a long series is split across blocks, its labels repeated), one
//! lane at a time (a block holds the series of one lane only), each already
//! in its wire form: a snappy-compressed remote-write
//! `WriteRequest`, or VictoriaMetrics JSON lines. Sending posts a block as
//! it is, or merges several small ones into one body: protobuf messages
//! concatenate into a valid message (`timeseries` is a repeated field), and
//! JSON lines concatenate as lines. Snappy blocks merge without being
//! decompressed (their elements concatenate under one new length header);
//! zstd blocks are decompressed, appended and compressed once. A series
//! that arrived by remote write and is sent unchanged is copied into its
//! block from the request rather than encoded again (`add_wire`).
//! Remote-write blocks are snappy (Prometheus remote write)
//! or zstd (the VictoriaMetrics protocol), as the destination spoke when they
//! were queued; a request is built in what it speaks now, so a block queued
//! as zstd is repacked to snappy after a fallback.

use super::DestinationKind;
use crate::codec::remote_write::{merge_bodies, MAX_DECODED_BYTES};
use crate::codec::{write_vm_json_parts, CodecError, Compression, RemoteWriteEncoder};
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

    /// Remote-write blocks cut from now on are compressed so.
    pub fn set_compression(&mut self, compression: Compression) {
        self.remote_write.set_compression(compression);
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

    /// [`BlockEncoder::add`] for a series whose remote-write encoding is at
    /// hand (`body`, see [`crate::model::WireForm`]): copied as it is when
    /// the destination speaks remote write and the series fits the open
    /// block whole, encoded as `add` does otherwise.
    pub fn add_wire(
        &mut self,
        body: Option<&[u8]>,
        labels: &Labels,
        samples: &[Sample],
    ) -> Result<(), CodecError> {
        let fits = !samples.is_empty() && self.in_block + samples.len() <= self.max_samples;
        match body {
            Some(body) if fits && matches!(self.kind, DestinationKind::RemoteWrite) => {
                self.remote_write.add_encoded(body);
                self.in_block += samples.len();
                if self.in_block == self.max_samples {
                    self.cut()?;
                }
                Ok(())
            }
            _ => self.add(labels, samples),
        }
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

/// One request body from one or more queued blocks, in order. Remote write
/// blocks (snappy or zstd, whichever they were queued as) come out as `to`,
/// recompressed when needed; a single block already so compressed is
/// copied as it is.
pub(super) fn merge(
    kind: DestinationKind,
    blocks: &[&[u8]],
    to: Compression,
) -> Result<Vec<u8>, CodecError> {
    match (kind, blocks) {
        (DestinationKind::RemoteWrite, [one]) if Compression::of(one) == to => Ok(one.to_vec()),
        (DestinationKind::RemoteWrite, _) => merge_bodies(blocks, to, MAX_DECODED_BYTES),
        (_, [one]) => Ok(one.to_vec()),
        // Event blocks are length-prefixed items: they concatenate too.
        (DestinationKind::VmImport | DestinationKind::Event(_), _) => Ok(blocks.concat()),
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
    fn received_encodings_are_copied_into_the_same_blocks_encoding_makes() {
        let batch = [series("a", 3), series("b", 2), series("c", 4)];
        let mut wire = crate::model::WireForm::default();
        let mut raw_batch = Vec::new();
        let mut body = Vec::new();
        let mut rw = RemoteWriteEncoder::new();
        rw.encode(&batch, &mut body).unwrap();
        crate::codec::decode_write_request_into(&body, 1 << 20, &mut raw_batch, &mut wire).unwrap();
        assert_eq!(raw_batch, batch);
        let blocks = |use_wire: bool| {
            let mut enc = BlockEncoder::new(DestinationKind::RemoteWrite, 4);
            for (i, s) in batch.iter().enumerate() {
                let copied = wire.series_bytes(i).filter(|_| use_wire);
                enc.add_wire(copied, &s.labels, &s.samples).unwrap();
            }
            enc.finish().unwrap()
        };
        // "a" is copied; "b" and "c" do not fit the open block whole, so
        // they are encoded and split across blocks as without the wire form.
        let (copied, encoded) = (blocks(true), blocks(false));
        assert_eq!(copied.iter().map(|b| b.1).collect::<Vec<_>>(), [4, 4, 1]);
        assert_eq!(copied, encoded);
        // The copy is taken as it is, not encoded from the labels given.
        let mut enc = BlockEncoder::new(DestinationKind::RemoteWrite, 4);
        let b = &batch[1];
        enc.add_wire(wire.series_bytes(1), &batch[0].labels, &b.samples)
            .unwrap();
        let block = enc.finish().unwrap().remove(0).0;
        assert_eq!(decode_write_request(&block).unwrap(), vec![b.clone()]);
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
        let merged = merge(DestinationKind::RemoteWrite, &refs, Compression::Snappy).unwrap();
        assert_eq!(Compression::of(&merged), Compression::Snappy);
        let back = decode_write_request(&merged).unwrap();
        assert_eq!(back, vec![series("a", 2), series("b", 2), series("c", 1)]);
    }

    #[test]
    fn zstd_blocks_merge_into_either_protocol() {
        let mut enc = BlockEncoder::new(DestinationKind::RemoteWrite, 2);
        enc.set_compression(Compression::Zstd);
        let a = series("a", 2);
        enc.add(&a.labels, &a.samples).unwrap();
        let zstd_block = enc.finish().unwrap().remove(0).0;
        assert_eq!(Compression::of(&zstd_block), Compression::Zstd);
        enc.set_compression(Compression::Snappy);
        let b = series("b", 1);
        enc.add(&b.labels, &b.samples).unwrap();
        let snappy_block = enc.finish().unwrap().remove(0).0;
        assert_eq!(Compression::of(&snappy_block), Compression::Snappy);
        for to in [Compression::Zstd, Compression::Snappy] {
            let parts = [zstd_block.as_slice(), snappy_block.as_slice()];
            let merged = merge(DestinationKind::RemoteWrite, &parts, to).unwrap();
            assert_eq!(Compression::of(&merged), to);
            assert_eq!(
                decode_write_request(&merged).unwrap(),
                vec![a.clone(), b.clone()]
            );
        }
        // A lone zstd block after a fallback is repacked, not sent as zstd.
        let repacked = merge(
            DestinationKind::RemoteWrite,
            &[&zstd_block],
            Compression::Snappy,
        )
        .unwrap();
        assert_eq!(Compression::of(&repacked), Compression::Snappy);
        assert_eq!(decode_write_request(&repacked).unwrap(), vec![a]);
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
            Compression::Snappy,
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
