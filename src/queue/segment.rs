//! Segment files and the record format: naming, the 40-byte record header,
//! and the sequential scan (with resynchronisation after damage) that
//! open-time recovery runs over a segment.
//!
//! Nothing here knows about cursors, locks or limits; `recover.rs` decides
//! what a scan result means (torn tail or lost records) and `mod.rs` does
//! the appending and the positional reads.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;

/// Bytes in front of every payload.
pub(crate) const HEADER_LEN: usize = 40;
const MAGIC: [u8; 2] = *b"SW";
const VERSION: u8 = 2;
/// The first format: a 24-byte header without sequence numbers. Recognised
/// only to refuse it clearly.
const V1_VERSION: u8 = 1;
const V1_HEADER_LEN: usize = 24;
const SEGMENT_SUFFIX: &str = ".seg";

/// `0000000000001f40.seg`: the logical offset of the segment's first byte in
/// 16 lowercase hex digits, so a plain name sort is the offset order.
pub(crate) fn segment_file_name(start: u64) -> String {
    format!("{start:016x}{SEGMENT_SUFFIX}")
}

/// The start offset encoded in a segment file name, or `None` for any other
/// file. Only the exact form [`segment_file_name`] writes is accepted, so two
/// spellings of one offset can never both exist.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(SEGMENT_SUFFIX)?;
    if hex.len() != 16 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// A decoded record header. On disk (little-endian):
///
/// ```text
/// 0..2   magic "SW"
/// 2      version (2)
/// 3      lane (which sender may take it; 0 when unused)
/// 4..8   payload length, u32
/// 8..16  samples, u64
/// 16..24 seq: records pushed to this queue before this one, u64
/// 24..32 samples pushed to this queue before this one, u64
/// 32..36 crc32 of the payload
/// 36..40 crc32 of bytes 0..36
/// ```
///
/// The header has its own checksum so that a damaged payload still leaves a
/// trustworthy length: the scan can step over that one record instead of
/// giving up on everything after it. The two running counts let recovery
/// say exactly how many records and samples went missing between any two
/// intact records, whatever lay between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub len: u32,
    pub samples: u64,
    pub seq: u64,
    pub samples_before: u64,
    pub lane: u8,
    pub payload_crc: u32,
}

/// Why a header could not be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeaderError {
    Magic,
    Version(u8),
    Checksum,
}

impl HeaderError {
    pub(crate) fn describe(self) -> String {
        match self {
            HeaderError::Magic => "record header has no magic bytes".to_string(),
            HeaderError::Version(v) => format!("record header has unknown version {v}"),
            HeaderError::Checksum => "record header checksum mismatch".to_string(),
        }
    }
}

impl Header {
    /// The header of the record that follows `seq` records and
    /// `samples_before` samples.
    pub(crate) fn for_payload(
        payload: &[u8],
        samples: u64,
        lane: u8,
        seq: u64,
        samples_before: u64,
    ) -> Header {
        Header {
            len: u32::try_from(payload.len()).expect("caller checked the payload length"),
            samples,
            seq,
            samples_before,
            lane,
            payload_crc: crc32fast::hash(payload),
        }
    }

    /// Header plus payload: how far this record moves the logical offset.
    pub(crate) fn record_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.len)
    }

    /// The running counts just after this record.
    pub(crate) fn next_counts(&self) -> (u64, u64) {
        (self.seq + 1, self.samples_before + self.samples)
    }

    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..2].copy_from_slice(&MAGIC);
        b[2] = VERSION;
        b[3] = self.lane;
        b[4..8].copy_from_slice(&self.len.to_le_bytes());
        b[8..16].copy_from_slice(&self.samples.to_le_bytes());
        b[16..24].copy_from_slice(&self.seq.to_le_bytes());
        b[24..32].copy_from_slice(&self.samples_before.to_le_bytes());
        b[32..36].copy_from_slice(&self.payload_crc.to_le_bytes());
        let crc = crc32fast::hash(&b[0..36]);
        b[36..40].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8; HEADER_LEN]) -> Result<Header, HeaderError> {
        if b[0..2] != MAGIC {
            return Err(HeaderError::Magic);
        }
        // The checksum first: a flipped version byte is damage, not a newer
        // format.
        let stored = u32::from_le_bytes(b[36..40].try_into().expect("4 bytes"));
        if crc32fast::hash(&b[0..36]) != stored {
            return Err(HeaderError::Checksum);
        }
        if b[2] != VERSION {
            return Err(HeaderError::Version(b[2]));
        }
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Ok(Header {
            len: u32::from_le_bytes(b[4..8].try_into().expect("4 bytes")),
            samples: u64_at(8),
            seq: u64_at(16),
            samples_before: u64_at(24),
            lane: b[3],
            payload_crc: u32::from_le_bytes(b[32..36].try_into().expect("4 bytes")),
        })
    }
}

/// Whether `b` starts with an intact header of the first format, which a
/// queue written by an older spillway holds.
pub(crate) fn is_v1_header(b: &[u8]) -> bool {
    b.len() >= V1_HEADER_LEN
        && b[0..2] == MAGIC
        && b[2] == V1_VERSION
        && crc32fast::hash(&b[0..20]).to_le_bytes() == b[20..24]
}

/// A record the scan found intact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    /// Position of the header inside the segment file.
    pub pos: u64,
    pub header: Header,
}

/// Bytes the scan could not use, with more valid records after them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Damage {
    pub pos: u64,
    /// Where the next intact record starts.
    pub end: u64,
    pub kind: StopKind,
}

/// Where and why a scan found nothing valid from some position to its limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stop {
    pub pos: u64,
    pub kind: StopKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StopKind {
    /// Fewer than [`HEADER_LEN`] bytes were left.
    ShortHeader,
    /// The header failed its checks.
    BadHeader(HeaderError),
    /// The header is intact but its payload runs past the end of the range.
    PastEnd(Header),
    /// The header is intact, the payload checksum is not.
    BadPayload(Header),
}

impl StopKind {
    pub(crate) fn describe(self) -> String {
        match self {
            StopKind::ShortHeader => "segment ends inside a record header".to_string(),
            StopKind::BadHeader(e) => e.describe(),
            StopKind::PastEnd(_) => "record runs past the end of its segment".to_string(),
            StopKind::BadPayload(_) => "payload checksum mismatch".to_string(),
        }
    }
}

/// What [`scan`] saw between its start and its limit.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub records: Vec<Found>,
    /// Damaged spots with intact records after them, in order.
    pub damage: Vec<Damage>,
    /// Nothing valid from here to the limit: in the last segment, where a
    /// write was cut short.
    pub stop: Option<Stop>,
}

/// Reads a segment from `from` up to `limit` (both positions inside the
/// file), checking every header and the payload checksum of every record that
/// ends after `verify_from`. Records ending at or before it are acknowledged
/// already: their headers are walked to find the next one, their payloads are
/// not read. A record straddling `verify_from` is verified and kept: a
/// cursor off a record boundary is suspect, and a duplicate beats a loss.
///
/// A header that fails its checks does not end the scan: the bytes after it
/// are searched for the next intact header (magic, version, checksum, and
/// counts that can follow the last good record), and the scan carries on
/// there, so damage costs only the records it touched.
pub(crate) fn scan(file: &File, from: u64, limit: u64, verify_from: u64) -> io::Result<Scan> {
    let mut out = Scan::default();
    let mut r = BufReader::with_capacity(1 << 20, file);
    r.seek(SeekFrom::Start(from))?;
    let mut pos = from;
    let mut prev: Option<Found> = None;
    let mut chunk = vec![0u8; 64 * 1024];
    while pos < limit {
        let kind = if limit - pos < HEADER_LEN as u64 {
            StopKind::ShortHeader
        } else {
            let mut hb = [0u8; HEADER_LEN];
            r.read_exact(&mut hb)?;
            match Header::decode(&hb) {
                Err(e) => StopKind::BadHeader(e),
                Ok(header) if pos + header.record_len() > limit => StopKind::PastEnd(header),
                Ok(header) => {
                    let end = pos + header.record_len();
                    let found = Found { pos, header };
                    if end <= verify_from {
                        r.seek_relative(i64::from(header.len))?;
                        prev = Some(found);
                        pos = end;
                        continue;
                    }
                    if payload_crc(&mut r, header.len, &mut chunk)? == header.payload_crc {
                        out.records.push(found);
                        prev = Some(found);
                        pos = end;
                        continue;
                    }
                    StopKind::BadPayload(header)
                }
            }
        };
        // Damage: find where the intact records start again.
        let search_from = match kind {
            // Its length is trustworthy: the next record starts right after.
            StopKind::BadPayload(h) if pos + h.record_len() < limit => pos + h.record_len(),
            _ => pos + 1,
        };
        match resync(file, search_from, limit, pos, prev.map(|p| p.header))? {
            Some(next) => {
                out.damage.push(Damage {
                    pos,
                    end: next,
                    kind,
                });
                r.seek(SeekFrom::Start(next))?;
                pos = next;
            }
            None => {
                out.stop = Some(Stop { pos, kind });
                break;
            }
        }
    }
    Ok(out)
}

fn payload_crc(r: &mut impl Read, len: u32, chunk: &mut [u8]) -> io::Result<u32> {
    let mut hasher = crc32fast::Hasher::new();
    let mut left = len as usize;
    while left > 0 {
        let n = left.min(chunk.len());
        r.read_exact(&mut chunk[..n])?;
        hasher.update(&chunk[..n]);
        left -= n;
    }
    Ok(hasher.finalize())
}

/// The position of the first intact header in `from..limit` that can follow
/// `prev` (the last good record before the damage, which started at
/// `damage_at`): a later sequence number, no fewer samples, no more records
/// skipped than the skipped bytes can hold, and a record that fits before
/// `limit`. Its payload is checked by the scan that resumes there.
fn resync(
    file: &File,
    from: u64,
    limit: u64,
    damage_at: u64,
    prev: Option<Header>,
) -> io::Result<Option<u64>> {
    const CHUNK: usize = 1 << 20;
    let pattern = [MAGIC[0], MAGIC[1], VERSION];
    let mut buf = vec![0u8; CHUNK + HEADER_LEN];
    let mut at = from;
    while at + HEADER_LEN as u64 <= limit {
        let want = ((limit - at) as usize).min(buf.len());
        let got = read_full_at(file, &mut buf[..want], at)?;
        if got < HEADER_LEN {
            return Ok(None);
        }
        let window = &buf[..got];
        for i in memchr::memmem::find_iter(window, &pattern) {
            if i + HEADER_LEN > got {
                break;
            }
            let hb: &[u8; HEADER_LEN] = window[i..i + HEADER_LEN].try_into().expect("sliced");
            let Ok(h) = Header::decode(hb) else { continue };
            let pos = at + i as u64;
            if pos + h.record_len() > limit {
                continue;
            }
            let plausible = prev.is_none_or(|p| {
                let (seq, samples) = p.next_counts();
                let room = (pos - damage_at) / HEADER_LEN as u64;
                h.seq >= seq && h.seq - seq <= room && h.samples_before >= samples
            });
            if plausible {
                return Ok(Some(pos));
            }
        }
        if got < buf.len() {
            return Ok(None);
        }
        // Overlap the next window so a header across the edge is seen.
        at += (got - HEADER_LEN + 1) as u64;
    }
    Ok(None)
}

fn read_full_at(file: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], at + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_reject_other_spellings() {
        assert_eq!(segment_file_name(0), "0000000000000000.seg");
        assert_eq!(segment_file_name(0x1f40), "0000000000001f40.seg");
        assert_eq!(
            parse_segment_file_name("0000000000001f40.seg"),
            Some(0x1f40)
        );
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        for bad in [
            "0000000000001F40.seg",
            "1f40.seg",
            "0000000000001f40.seg.tmp",
            "000000000000001f40.seg",
            "cursor",
            "000000000000+f40.seg",
        ] {
            assert_eq!(parse_segment_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn header_round_trips_and_every_bit_flip_is_caught() {
        let h = Header::for_payload(b"hello", 42, 3, 7, 1000);
        let enc = h.encode();
        assert_eq!(Header::decode(&enc), Ok(h));
        for bit in 0..HEADER_LEN * 8 {
            let mut b = enc;
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(Header::decode(&b).is_err(), "bit {bit} flipped unnoticed");
        }
    }

    #[test]
    fn scan_resynchronises_after_a_garbled_header() {
        use std::io::Write;
        let mut f = tempfile::tempfile().unwrap();
        let mut at = Vec::new();
        let (mut seq, mut before, mut pos) = (0u64, 0u64, 0u64);
        for k in 0..5u64 {
            let payload = vec![k as u8; 60];
            let h = Header::for_payload(&payload, k + 1, 0, seq, before);
            f.write_all(&h.encode()).unwrap();
            f.write_all(&payload).unwrap();
            at.push(pos);
            pos += h.record_len();
            (seq, before) = h.next_counts();
        }
        // Garble records 1 and 2 (header of 1, everything of 2).
        f.write_all_at(&[0xAA; 150], at[1]).unwrap();
        let s = scan(&f, 0, pos, 0).unwrap();
        let seqs: Vec<u64> = s.records.iter().map(|r| r.header.seq).collect();
        assert_eq!(seqs, [0, 3, 4]);
        assert_eq!(s.damage.len(), 1);
        assert_eq!((s.damage[0].pos, s.damage[0].end), (at[1], at[3]));
        assert!(s.stop.is_none());
    }

    #[test]
    fn first_format_headers_are_recognised() {
        let mut b = [0u8; 24];
        b[0..2].copy_from_slice(b"SW");
        b[2] = 1;
        let crc = crc32fast::hash(&b[0..20]);
        b[20..24].copy_from_slice(&crc.to_le_bytes());
        assert!(is_v1_header(&b));
        b[5] ^= 1;
        assert!(!is_v1_header(&b));
    }
}
