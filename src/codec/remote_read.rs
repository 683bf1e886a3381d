//! Prometheus remote read 1.0 (`POST /api/v1/read`) with the `SAMPLES`
//! response type: how breach captures get raw samples out of Prometheus,
//! which has no `/api/v1/export`.
//!
//! The request is a protobuf `ReadRequest` (`prompb/remote.proto`) in one
//! raw snappy block, like a remote-write body:
//!
//! ```text
//! ReadRequest  { repeated Query queries = 1; repeated ResponseType accepted_response_types = 2 (packed) }
//! Query        { int64 start_timestamp_ms = 1; int64 end_timestamp_ms = 2; repeated LabelMatcher matchers = 3; }
//! LabelMatcher { Type type = 1 (EQ 0, NEQ 1, RE 2, NRE 3); string name = 2; string value = 3; }
//! ReadResponse { repeated QueryResult results = 1; }   // one per query, in order
//! QueryResult  { repeated TimeSeries timeseries = 1; } // TimeSeries as in remote write
//! ```
//!
//! Both time bounds are inclusive. The answer is one snappy block holding
//! the whole `ReadResponse`, so callers keep each query's time range small
//! (captures ask in bounded chunks); the decoder refuses an answer whose
//! announced decompressed size is over the caller's limit before
//! allocating it. Written by hand like the remote-write decoder (no
//! `protoc`, no message tree); `prost` checks both directions in the tests.

use super::remote_write::{put_string, put_varint};
use super::remote_write_decode::{bad, time_series, Reader};
use super::CodecError;
use crate::model::selector::{MatchOp, Matcher};
use crate::model::Series;

/// `Content-Encoding` of the request (and of the `SAMPLES` answer).
pub const CONTENT_ENCODING: &str = "snappy";
/// `Content-Type` of the request.
pub const CONTENT_TYPE: &str = "application/x-protobuf";
/// Name of the header carrying the protocol version.
pub const VERSION_HEADER: &str = "X-Prometheus-Remote-Read-Version";
/// Remote read 1.0 announces itself as version 0.1.0.
pub const VERSION: &str = "0.1.0";
/// Largest decompressed answer accepted unless the caller says otherwise.
pub const MAX_DECODED_BYTES: usize = 64 << 20;

// Keys, `(field_number << 3) | wire_type`.
const KEY_QUERY: u8 = 1 << 3 | 2; // ReadRequest.queries
const KEY_RESPONSE_TYPES: u8 = 2 << 3 | 2; // ReadRequest.accepted_response_types, packed
const KEY_START: u8 = 1 << 3; // Query.start_timestamp_ms, varint
const KEY_END: u8 = 2 << 3; // Query.end_timestamp_ms, varint
const KEY_MATCHER: u8 = 3 << 3 | 2; // Query.matchers
const KEY_MATCH_TYPE: u8 = 1 << 3; // LabelMatcher.type, varint
const KEY_MATCH_NAME: u8 = 2 << 3 | 2; // LabelMatcher.name
const KEY_MATCH_VALUE: u8 = 3 << 3 | 2; // LabelMatcher.value

/// `ReadRequest.ResponseType.SAMPLES`.
const RESPONSE_TYPE_SAMPLES: u8 = 0;

/// One label matcher of a query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadMatcher {
    pub op: MatchOp,
    pub name: String,
    pub value: String,
}

impl ReadMatcher {
    fn type_number(&self) -> u64 {
        match self.op {
            MatchOp::Equal => 0,
            MatchOp::NotEqual => 1,
            MatchOp::Regex => 2,
            MatchOp::NotRegex => 3,
        }
    }
}

/// The series matching every matcher, over `[start_ms, end_ms]` (inclusive).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadQuery {
    pub start_ms: i64,
    pub end_ms: i64,
    pub matchers: Vec<ReadMatcher>,
}

impl ReadQuery {
    /// A query for one alternative of a parsed selector (remote read has
    /// no `or`: each alternative is a query of its own).
    pub fn new(start_ms: i64, end_ms: i64, matchers: &[Matcher]) -> ReadQuery {
        ReadQuery {
            start_ms,
            end_ms,
            matchers: matchers
                .iter()
                .map(|m| ReadMatcher {
                    op: m.op,
                    name: m.name.clone(),
                    value: m.value.clone(),
                })
                .collect(),
        }
    }
}

/// The snappy-compressed `ReadRequest` for `queries`, asking for `SAMPLES`.
pub fn encode_read_request(queries: &[ReadQuery]) -> Result<Vec<u8>, CodecError> {
    let mut proto = Vec::new();
    let mut query = Vec::new();
    let mut matcher = Vec::new();
    for q in queries {
        query.clear();
        put_int64(&mut query, KEY_START, q.start_ms);
        put_int64(&mut query, KEY_END, q.end_ms);
        for m in &q.matchers {
            matcher.clear();
            let kind = m.type_number();
            if kind != 0 {
                matcher.push(KEY_MATCH_TYPE);
                put_varint(&mut matcher, kind);
            }
            put_string(&mut matcher, KEY_MATCH_NAME, &m.name);
            put_string(&mut matcher, KEY_MATCH_VALUE, &m.value);
            put_nested(&mut query, KEY_MATCHER, &matcher);
        }
        put_nested(&mut proto, KEY_QUERY, &query);
    }
    put_nested(&mut proto, KEY_RESPONSE_TYPES, &[RESPONSE_TYPE_SAMPLES]);
    snap::raw::Encoder::new()
        .compress_vec(&proto)
        .map_err(|e| CodecError::Compress {
            size: proto.len(),
            reason: e.to_string(),
        })
}

/// Decodes a `SAMPLES` answer: per query, in request order, its series.
/// Refuses answers that announce more than `max_decoded_bytes` once
/// decompressed, before allocating them.
pub fn decode_read_response(
    body: &[u8],
    max_decoded_bytes: usize,
) -> Result<Vec<Vec<Series>>, CodecError> {
    let raw = decompress(body, max_decoded_bytes)?;
    read_response(&raw).map_err(|e| match e {
        CodecError::Protobuf(m) => {
            CodecError::RemoteRead(format!("not a valid protobuf ReadResponse: {m}"))
        }
        other => other,
    })
}

fn read_response(raw: &[u8]) -> Result<Vec<Vec<Series>>, CodecError> {
    let mut r = Reader::new(raw, 0);
    let mut results = Vec::new();
    while !r.done() {
        match r.key()? {
            (1, 2) => {
                let (buf, at) = r.bytes()?;
                results.push(query_result(buf, at)?);
            }
            (1, w) => return Err(bad(r.at(), &format!("results has wire type {w}, not 2"))),
            (_, w) => r.skip(w)?,
        }
    }
    Ok(results)
}

fn query_result(buf: &[u8], base: usize) -> Result<Vec<Series>, CodecError> {
    let mut r = Reader::new(buf, base);
    let mut out = Vec::new();
    while !r.done() {
        match r.key()? {
            (1, 2) => {
                let (ts, at) = r.bytes()?;
                let mut s = Series::default();
                time_series(ts, at, &mut s)?;
                out.push(s);
            }
            (1, w) => return Err(bad(r.at(), &format!("timeseries has wire type {w}, not 2"))),
            (_, w) => r.skip(w)?,
        }
    }
    Ok(out)
}

fn decompress(body: &[u8], max_decoded_bytes: usize) -> Result<Vec<u8>, CodecError> {
    let size = snap::raw::decompress_len(body).map_err(|e| {
        CodecError::RemoteRead(format!("the answer is not a raw snappy block: {e}"))
    })?;
    if size > max_decoded_bytes {
        return Err(CodecError::RemoteRead(format!(
            "the answer decompresses to {size} bytes, over the {max_decoded_bytes}-byte limit; ask for a shorter time range"
        )));
    }
    let mut raw = vec![0; size];
    let n = snap::raw::Decoder::new()
        .decompress(body, &mut raw)
        .map_err(|e| {
            CodecError::RemoteRead(format!("the answer is not a raw snappy block: {e}"))
        })?;
    raw.truncate(n);
    Ok(raw)
}

/// An int64 field; proto3 leaves out zero.
fn put_int64(buf: &mut Vec<u8>, key: u8, v: i64) {
    if v != 0 {
        buf.push(key);
        // Two's complement: negative times take 10 bytes, as in Go.
        put_varint(buf, v as u64);
    }
}

fn put_nested(buf: &mut Vec<u8>, key: u8, body: &[u8]) {
    buf.push(key);
    put_varint(buf, body.len() as u64);
    buf.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::selector::Selector;
    use crate::model::{Labels, Sample};
    use prost::Message;

    /// `prompb/remote.proto` and `types.proto`, for `prost` as the oracle.
    mod proto {
        pub use crate::codec::remote_write::proto::{Label, Sample};

        #[derive(Clone, PartialEq, prost::Message)]
        pub struct ReadRequest {
            #[prost(message, repeated, tag = "1")]
            pub queries: Vec<Query>,
            #[prost(int32, repeated, tag = "2")]
            pub accepted_response_types: Vec<i32>,
        }

        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Query {
            #[prost(int64, tag = "1")]
            pub start_timestamp_ms: i64,
            #[prost(int64, tag = "2")]
            pub end_timestamp_ms: i64,
            #[prost(message, repeated, tag = "3")]
            pub matchers: Vec<LabelMatcher>,
        }

        #[derive(Clone, PartialEq, prost::Message)]
        pub struct LabelMatcher {
            #[prost(int32, tag = "1")]
            pub r#type: i32,
            #[prost(string, tag = "2")]
            pub name: String,
            #[prost(string, tag = "3")]
            pub value: String,
        }

        #[derive(Clone, PartialEq, prost::Message)]
        pub struct ReadResponse {
            #[prost(message, repeated, tag = "1")]
            pub results: Vec<QueryResult>,
        }

        #[derive(Clone, PartialEq, prost::Message)]
        pub struct QueryResult {
            #[prost(message, repeated, tag = "1")]
            pub timeseries: Vec<TimeSeries>,
        }

        /// With the histogram field Prometheus may send, to be skipped.
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct TimeSeries {
            #[prost(message, repeated, tag = "1")]
            pub labels: Vec<Label>,
            #[prost(message, repeated, tag = "2")]
            pub samples: Vec<Sample>,
            #[prost(bytes = "vec", repeated, tag = "4")]
            pub histograms: Vec<Vec<u8>>,
        }
    }

    fn query(start: i64, end: i64, selector: &str) -> ReadQuery {
        let s = Selector::parse(selector).unwrap();
        ReadQuery::new(start, end, &s.alternatives()[0])
    }

    #[test]
    fn request_is_what_prost_writes() {
        let queries = vec![
            query(
                1_700_000_000_000,
                1_700_000_300_000,
                r#"cpu{instance="a:9100", job!="x", mode=~"user|system", path!~"/tmp.*"}"#,
            ),
            query(-5, 0, r#"{a=""}"#),
        ];
        let body = encode_read_request(&queries).unwrap();
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        let expected = proto::ReadRequest {
            queries: vec![
                proto::Query {
                    start_timestamp_ms: 1_700_000_000_000,
                    end_timestamp_ms: 1_700_000_300_000,
                    matchers: [
                        (0, "__name__", "cpu"),
                        (0, "instance", "a:9100"),
                        (1, "job", "x"),
                        (2, "mode", "user|system"),
                        (3, "path", "/tmp.*"),
                    ]
                    .iter()
                    .map(|&(t, n, v)| proto::LabelMatcher {
                        r#type: t,
                        name: n.into(),
                        value: v.into(),
                    })
                    .collect(),
                },
                proto::Query {
                    start_timestamp_ms: -5,
                    end_timestamp_ms: 0,
                    matchers: vec![proto::LabelMatcher {
                        r#type: 0,
                        name: "a".into(),
                        value: "".into(),
                    }],
                },
            ],
            accepted_response_types: vec![0],
        };
        assert_eq!(raw, expected.encode_to_vec());
        assert_eq!(
            proto::ReadRequest::decode(raw.as_slice()).unwrap(),
            expected
        );
    }

    #[test]
    fn response_decodes_what_prost_writes() {
        let ts = |name: &str, samples: &[(i64, f64)]| proto::TimeSeries {
            labels: vec![
                proto::Label {
                    name: "job".into(),
                    value: "node".into(),
                },
                proto::Label {
                    name: "__name__".into(),
                    value: name.into(),
                },
            ],
            samples: samples
                .iter()
                .map(|&(t, v)| proto::Sample {
                    value: v,
                    timestamp: t,
                })
                .collect(),
            histograms: vec![vec![1, 2, 3]],
        };
        let resp = proto::ReadResponse {
            results: vec![
                proto::QueryResult {
                    timeseries: vec![
                        ts("a", &[(1000, 1.5), (2000, 0.0)]),
                        ts("b", &[(3000, f64::from_bits(crate::model::STALE_NAN_BITS))]),
                    ],
                },
                proto::QueryResult::default(),
            ],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&resp.encode_to_vec())
            .unwrap();
        let got = decode_read_response(&body, MAX_DECODED_BYTES).unwrap();
        assert_eq!(got.len(), 2);
        assert!(got[1].is_empty());
        assert_eq!(
            got[0][0],
            Series::new(
                Labels::from_pairs([("__name__", "a"), ("job", "node")]),
                vec![Sample::new(1000, 1.5), Sample::new(2000, 0.0)]
            )
        );
        assert!(got[0][1].samples[0].is_stale());
    }

    #[test]
    fn oversized_and_broken_answers_are_errors() {
        let resp = proto::ReadResponse {
            results: vec![proto::QueryResult::default(); 100],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&resp.encode_to_vec())
            .unwrap();
        let e = decode_read_response(&body, 10).unwrap_err().to_string();
        assert!(e.contains("over the 10-byte limit"), "{e}");
        let e = decode_read_response(b"not snappy at all", 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(e.contains("snappy"), "{e}");
        let truncated = snap::raw::Encoder::new()
            .compress_vec(b"\x0a\x05\x0a")
            .unwrap();
        assert!(decode_read_response(&truncated, 1 << 20).is_err());
    }
}
