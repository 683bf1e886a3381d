//! Segment files and the record format: naming, the 24-byte record header,
//! and the sequential scan that open-time recovery runs over a segment.
//!
//! Nothing here knows about cursors, locks or limits; `recover.rs` decides
//! what a scan result means (torn tail or corruption) and `mod.rs` does the
//! appending and the positional reads.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};

/// Bytes in front of every payload.
pub(crate) const HEADER_LEN: usize = 24;
const MAGIC: [u8; 2] = *b"SW";
const VERSION: u8 = 1;
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
/// 2      version (1)
/// 3      flags (0; reserved)
/// 4..8   payload length, u32
/// 8..16  samples, u64
/// 16..20 crc32 of the payload
/// 20..24 crc32 of bytes 0..20
/// ```
///
/// The header has its own checksum so that a damaged payload still leaves a
/// trustworthy length: the scan can step over that one record instead of
/// giving up on everything after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub len: u32,
    pub samples: u64,
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
    pub(crate) fn for_payload(payload: &[u8], samples: u64) -> Header {
        Header {
            len: u32::try_from(payload.len()).expect("caller checked the payload length"),
            samples,
            payload_crc: crc32fast::hash(payload),
        }
    }

    /// Header plus payload: how far this record moves the logical offset.
    pub(crate) fn record_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.len)
    }

    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..2].copy_from_slice(&MAGIC);
        b[2] = VERSION;
        b[3] = 0;
        b[4..8].copy_from_slice(&self.len.to_le_bytes());
        b[8..16].copy_from_slice(&self.samples.to_le_bytes());
        b[16..20].copy_from_slice(&self.payload_crc.to_le_bytes());
        let crc = crc32fast::hash(&b[0..20]);
        b[20..24].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8; HEADER_LEN]) -> Result<Header, HeaderError> {
        if b[0..2] != MAGIC {
            return Err(HeaderError::Magic);
        }
        // The checksum first: a flipped version byte is damage, not a newer
        // format.
        let stored = u32::from_le_bytes(b[20..24].try_into().expect("4 bytes"));
        if crc32fast::hash(&b[0..20]) != stored {
            return Err(HeaderError::Checksum);
        }
        if b[2] != VERSION {
            return Err(HeaderError::Version(b[2]));
        }
        Ok(Header {
            len: u32::from_le_bytes(b[4..8].try_into().expect("4 bytes")),
            samples: u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")),
            payload_crc: u32::from_le_bytes(b[16..20].try_into().expect("4 bytes")),
        })
    }
}

/// A record the scan found intact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    /// Position of the header inside the segment file.
    pub pos: u64,
    pub header: Header,
}

/// Where and why a scan stopped before the end of its range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stop {
    pub pos: u64,
    pub kind: StopKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StopKind {
    /// Fewer than [`HEADER_LEN`] bytes were left.
    ShortHeader,
    /// The header failed its checks, so nothing after it can be located.
    BadHeader(HeaderError),
    /// The header is intact but its payload runs past the end of the range.
    PastEnd(Header),
    /// The header is intact, the payload checksum is not, and nothing follows
    /// it: in the last segment this is what an interrupted write looks like.
    BadPayloadAtEnd(Header),
}

/// What [`scan`] saw between its start and its limit.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub records: Vec<Found>,
    /// Intact header, damaged payload, more records after it.
    pub bad_payloads: Vec<Found>,
    pub stop: Option<Stop>,
}

/// Reads a segment from `from` up to `limit` (both positions inside the
/// file), checking every header and the payload checksum of every record that
/// ends after `verify_from`. Records ending at or before it are acknowledged
/// already: their headers are walked to find the next one, their payloads are
/// neither read nor returned. A record straddling `verify_from` is kept: a
/// cursor off a record boundary is suspect, and a duplicate beats a loss.
pub(crate) fn scan(file: &File, from: u64, limit: u64, verify_from: u64) -> io::Result<Scan> {
    let mut out = Scan::default();
    let mut r = BufReader::with_capacity(1 << 20, file);
    r.seek(SeekFrom::Start(from))?;
    let mut pos = from;
    let mut chunk = vec![0u8; 64 * 1024];
    while pos < limit {
        if limit - pos < HEADER_LEN as u64 {
            out.stop = Some(Stop {
                pos,
                kind: StopKind::ShortHeader,
            });
            break;
        }
        let mut hb = [0u8; HEADER_LEN];
        r.read_exact(&mut hb)?;
        let header = match Header::decode(&hb) {
            Ok(h) => h,
            Err(e) => {
                out.stop = Some(Stop {
                    pos,
                    kind: StopKind::BadHeader(e),
                });
                break;
            }
        };
        let end = pos + header.record_len();
        if end > limit {
            out.stop = Some(Stop {
                pos,
                kind: StopKind::PastEnd(header),
            });
            break;
        }
        let found = Found { pos, header };
        if end <= verify_from {
            r.seek_relative(i64::from(header.len))?;
            pos = end;
            continue;
        }
        let mut hasher = crc32fast::Hasher::new();
        let mut left = header.len as usize;
        while left > 0 {
            let n = left.min(chunk.len());
            r.read_exact(&mut chunk[..n])?;
            hasher.update(&chunk[..n]);
            left -= n;
        }
        if hasher.finalize() == header.payload_crc {
            out.records.push(found);
        } else if end == limit {
            out.stop = Some(Stop {
                pos,
                kind: StopKind::BadPayloadAtEnd(header),
            });
            break;
        } else {
            out.bad_payloads.push(found);
        }
        pos = end;
    }
    Ok(out)
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
        let h = Header::for_payload(b"hello", 42);
        let enc = h.encode();
        assert_eq!(Header::decode(&enc), Ok(h));
        for bit in 0..HEADER_LEN * 8 {
            let mut b = enc;
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(Header::decode(&b).is_err(), "bit {bit} flipped unnoticed");
        }
    }
}
