//! Blocks written here the way VictoriaMetrics' `Block.MarshalPortable` and
//! `MetricName.Marshal` write them (lib/storage, lib/encoding), in both
//! layouts; tests/bundle.rs reads real answers of a running server.

use super::*;
use std::collections::BTreeMap;

use crate::codec::remote_write::put_varint as put_uvarint;

fn put_varint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_uvarint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn metric_name(name: &str, tags: &[(&str, &str)]) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, s: &[u8]) {
        for &b in s {
            match b {
                0 => out.extend_from_slice(&[0, b'0']),
                1 => out.extend_from_slice(&[0, b'1']),
                2 => out.extend_from_slice(&[0, b'2']),
                b => out.push(b),
            }
        }
        out.push(1);
    }
    let mut out = Vec::new();
    field(&mut out, name.as_bytes());
    for (k, v) in tags {
        field(&mut out, k.as_bytes());
        field(&mut out, v.as_bytes());
    }
    out
}

/// An integer array in one of the six encodings; `(first, data)`.
fn encode_ints(a: &[i64], kind: u8) -> (i64, Vec<u8>) {
    let mut data = Vec::new();
    match kind {
        CONST_TYPE => {}
        DELTA_CONST_TYPE => put_varint(&mut data, a[1] - a[0]),
        NEAREST_DELTA | ZSTD_NEAREST_DELTA => {
            for w in a.windows(2) {
                put_varint(&mut data, w[1] - w[0]);
            }
        }
        NEAREST_DELTA2 | ZSTD_NEAREST_DELTA2 => {
            let mut prev_delta = a[1] - a[0];
            put_varint(&mut data, prev_delta);
            for w in a[1..].windows(2) {
                let d = w[1] - w[0];
                put_varint(&mut data, d - prev_delta);
                prev_delta = d;
            }
        }
        _ => unreachable!(),
    }
    if matches!(kind, ZSTD_NEAREST_DELTA | ZSTD_NEAREST_DELTA2) {
        data = zstd::bulk::compress(&data, 1).unwrap();
    }
    (a[0], data)
}

struct TestBlock<'a> {
    timestamps: &'a [i64],
    ints: &'a [i64],
    scale: i16,
    ts_kind: u8,
    value_kind: u8,
    precision_bits: u8,
}

fn block(b: &TestBlock<'_>, layout: Layout) -> Vec<u8> {
    let (min_ts, ts_data) = encode_ints(b.timestamps, b.ts_kind);
    let (first_value, values_data) = encode_ints(b.ints, b.value_kind);
    let mut out = Vec::new();
    put_varint(&mut out, min_ts);
    if layout == Layout::Since182 {
        put_varint(&mut out, *b.timestamps.last().unwrap());
    }
    put_varint(&mut out, first_value);
    put_uvarint(&mut out, b.timestamps.len() as u64);
    put_varint(&mut out, i64::from(b.scale));
    out.push(b.ts_kind);
    out.push(b.value_kind);
    if layout == Layout::Since182 {
        out.push(b.precision_bits);
    }
    put_bytes(&mut out, &ts_data);
    put_bytes(&mut out, &values_data);
    out
}

fn stream(blocks: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
    out.extend_from_slice(&1_700_000_600_000i64.to_be_bytes());
    for (name, block) in blocks {
        out.extend_from_slice(&(name.len() as u32).to_be_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(&(block.len() as u32).to_be_bytes());
        out.extend_from_slice(block);
    }
    out
}

type Decoded = Vec<(Labels, Vec<i64>, Vec<f64>)>;

fn read_all(body: &[u8], chunk: usize) -> Result<(Decoded, Option<Layout>), String> {
    let mut reader = NativeReader::new();
    let mut got = Vec::new();
    for piece in body.chunks(chunk.max(1)) {
        reader
            .feed(piece, |labels, block| {
                got.push((labels, block.timestamps.to_vec(), block.values.to_vec()));
                Ok(true)
            })
            .map_err(|e| match e {
                FeedError::Native(e) => e.to_string(),
                FeedError::Sink(e) => e,
            })?;
    }
    reader.finish().map_err(|e| e.to_string())?;
    Ok((got, reader.layout()))
}

const KINDS: [u8; 6] = [
    ZSTD_NEAREST_DELTA2,
    DELTA_CONST_TYPE,
    CONST_TYPE,
    ZSTD_NEAREST_DELTA,
    NEAREST_DELTA2,
    NEAREST_DELTA,
];

/// Data that each encoding can hold: constant for Const, a constant step
/// for DeltaConst, anything for the rest.
fn ints_for(kind: u8, base: i64) -> Vec<i64> {
    match kind {
        CONST_TYPE => vec![base; 300],
        DELTA_CONST_TYPE => (0..300).map(|i| base + i * 15_000).collect(),
        _ => (0..300)
            .map(|i: i64| base + i * 15_000 + (i * i * 7919) % 1_000 - 500)
            .collect(),
    }
}

#[test]
fn every_encoding_decodes_in_both_layouts_whatever_the_chunking() {
    for layout in [Layout::Before182, Layout::Since182] {
        for ts_kind in [DELTA_CONST_TYPE, NEAREST_DELTA2, ZSTD_NEAREST_DELTA2] {
            for value_kind in KINDS {
                let timestamps = ints_for(ts_kind, 1_700_000_000_000);
                let ints = ints_for(value_kind, -12_345);
                let b = TestBlock {
                    timestamps: &timestamps,
                    ints: &ints,
                    scale: -3,
                    ts_kind,
                    value_kind,
                    precision_bits: 64,
                };
                let body = stream(&[(metric_name("up", &[("job", "a")]), block(&b, layout))]);
                for chunk in [1, 7, body.len()] {
                    let (got, seen) = read_all(&body, chunk).unwrap();
                    assert_eq!(seen, Some(layout));
                    assert_eq!(got.len(), 1);
                    let (labels, ts, vs) = &got[0];
                    assert_eq!(
                        labels,
                        &Labels::from_pairs([("__name__", "up"), ("job", "a")])
                    );
                    assert_eq!(
                        ts, &timestamps,
                        "{layout:?} ts {ts_kind} values {value_kind}"
                    );
                    let want: Vec<f64> = ints.iter().map(|&v| v as f64 / 1000.0).collect();
                    assert_eq!(vs, &want, "{layout:?} ts {ts_kind} values {value_kind}");
                }
            }
        }
    }
}

#[test]
fn values_are_the_floats_go_computes_with_special_values_kept() {
    let mut out = Vec::new();
    decimal_to_floats(&[12_345, -7, 0], -3, &mut out);
    assert_eq!(out, [12.345, -0.007, 0.0]);
    decimal_to_floats(&[15, 3], 2, &mut out);
    assert_eq!(out, [1500.0, 300.0]);
    decimal_to_floats(&[INF_POS, INF_NEG, i64::MAX - 1, 2], 0, &mut out);
    assert_eq!(out[..2], [f64::INFINITY, f64::NEG_INFINITY]);
    assert_eq!(out[2].to_bits(), 0x7ff0_0000_0000_0002);
    assert_eq!(out[3], 2.0);
    // All zeros stay zeros even where 0 * 10^400 is NaN, as in Go.
    decimal_to_floats(&[0, 0], 400, &mut out);
    assert_eq!(out, [0.0, 0.0]);
    decimal_to_floats(&[0, 1], 400, &mut out);
    assert!(out[0].is_nan() && out[1] == f64::INFINITY);
    // Past the table: Go's Pow10 is 0 below 1e-323 and +Inf above 1e308.
    decimal_to_floats(&[5], -400, &mut out);
    assert_eq!(out, [0.0]);
    // Go's table: 10^n as 1e(32k) * 1e(n mod 32), 10^-n as a division.
    assert_eq!(go_pow10(22), 1e22);
    assert_eq!(go_pow10(40), 1e32 * 1e8);
    assert_eq!(go_pow10(-40), 1e-32 / 1e8);
    assert_eq!(go_pow10(-323), 1e-320 / 1e3);
    assert_eq!(go_pow10(309), f64::INFINITY);
    assert_eq!(go_pow10(-324), 0.0);
}

#[test]
fn series_names_unescape_and_sort_and_drop_empty_values() {
    let name = metric_name(
        "weird\u{0}name",
        &[("zone", "a\u{1}b\u{2}c"), ("empty", ""), ("app", "x")],
    );
    let labels = decode_metric_name(&name).unwrap();
    assert_eq!(
        labels,
        Labels::from_pairs([
            ("__name__", "weird\u{0}name"),
            ("app", "x"),
            ("zone", "a\u{1}b\u{2}c")
        ])
    );
    // A series without a metric name has no __name__ label.
    let labels = decode_metric_name(&metric_name("", &[("job", "a")])).unwrap();
    assert_eq!(labels, Labels::from_pairs([("job", "a")]));
    for (bad, why) in [
        (&b"up"[..], "no end marker"),
        (&b"up\x01job\x01"[..], "has no value"),
        (&b"u\x00\x39p\x01"[..], "unknown escape"),
        (&b"up\x00"[..], "no end marker"),
        (&b"\xff\x01"[..], "not UTF-8"),
    ] {
        let e = decode_metric_name(bad).unwrap_err();
        assert!(e.contains(why), "{bad:?}: {e}");
    }
}

#[test]
fn lossy_timestamps_are_put_back_in_order_within_the_block_bounds() {
    let mut ts = vec![5, 4, 9, 12, 11];
    ensure_non_decreasing(&mut ts, 3, 10);
    assert_eq!(ts, [3, 4, 9, 10, 10]);
    // With all 64 bits, timestamps outside the bounds are an error.
    let h = Header {
        min_timestamp: 10,
        max_timestamp: Some(20),
        first_value: 0,
        rows: 2,
        scale: 0,
        timestamps_type: NEAREST_DELTA,
        values_type: CONST_TYPE,
        precision_bits: 64,
    };
    assert!(check_timestamps(&mut [10, 21], &h).is_err());
    assert!(check_timestamps(&mut [15, 12], &h).is_err());
    assert!(check_timestamps(&mut [10, 20], &h).is_ok());
    // 1.79's layout has no upper bound, but its blocks are sorted too.
    let old = Header {
        max_timestamp: None,
        ..h
    };
    assert!(check_timestamps(&mut [15, 12], &old).is_err());
    assert!(check_timestamps(&mut [9, 12], &old).is_err());
    assert!(check_timestamps(&mut [10, 99], &old).is_ok());
}

fn body_with_block(block: Vec<u8>) -> Vec<u8> {
    stream(&[(metric_name("up", &[]), block)])
}

fn simple_block(layout: Layout) -> Vec<u8> {
    let ts: Vec<i64> = (0..10).map(|i| 1000 + i * 10).collect();
    let ints: Vec<i64> = (0..10).map(|i| i * i).collect();
    block(
        &TestBlock {
            timestamps: &ts,
            ints: &ints,
            scale: 0,
            ts_kind: DELTA_CONST_TYPE,
            value_kind: NEAREST_DELTA,
            precision_bits: 64,
        },
        layout,
    )
}

#[test]
fn limits_and_damage_are_named_not_trusted() {
    let err = |body: Vec<u8>| read_all(&body, body.len()).unwrap_err();
    // A frame longer than the limit.
    let mut body = stream(&[]);
    body.extend_from_slice(&(MAX_BLOCK_BYTES as u32 + 1).to_be_bytes());
    assert!(err(body).contains("over the"));
    // A block claiming more rows than the limit, held in a constant.
    let mut huge = Vec::new();
    for v in [1000i64, 1000, 5] {
        put_varint(&mut huge, v);
    }
    put_uvarint(&mut huge, MAX_BLOCK_ROWS as u64 + 1);
    put_varint(&mut huge, 0);
    huge.extend_from_slice(&[CONST_TYPE, CONST_TYPE, 64, 0, 0]);
    assert!(err(body_with_block(huge)).contains("rows in a block"));
    // zstd data that decompresses past what the row count allows.
    let bomb = zstd::bulk::compress(&vec![0u8; 1 << 20], 1).unwrap();
    let mut b = Vec::new();
    for v in [1000i64, 1010] {
        put_varint(&mut b, v);
    }
    put_varint(&mut b, 0);
    put_uvarint(&mut b, 2);
    put_varint(&mut b, 0);
    b.extend_from_slice(&[ZSTD_NEAREST_DELTA, CONST_TYPE, 64]);
    put_bytes(&mut b, &bomb);
    put_bytes(&mut b, &[]);
    assert!(err(body_with_block(b)).contains("zstd"));
    // Fewer deltas than rows, and a trailing byte.
    let good = simple_block(Layout::Since182);
    let mut short = good.clone();
    let last = short.len() - 1;
    short.truncate(last);
    assert!(read_all(&body_with_block(short), 64).is_err());
    let mut long = good;
    long.push(0);
    assert!(read_all(&body_with_block(long), 64).is_err());
    // A body cut inside a block.
    let mut body = body_with_block(simple_block(Layout::Before182));
    body.truncate(body.len() - 3);
    assert!(err(body).contains("ended inside a block"));
}

#[test]
fn the_layout_is_kept_after_the_first_block_and_a_sink_can_stop() {
    let b = simple_block(Layout::Since182);
    let body = stream(&[
        (metric_name("a", &[]), b.clone()),
        (metric_name("b", &[]), b.clone()),
        (metric_name("c", &[]), b),
    ]);
    let mut reader = NativeReader::new();
    let mut names = Vec::new();
    let go_on = reader
        .feed(&body, |labels, _| {
            names.push(labels.metric_name().to_string());
            Ok(names.len() < 2)
        })
        .unwrap();
    assert!(!go_on);
    assert_eq!(names, ["a", "b"]);
    // An old-layout block after a new-layout one is damage, not a new guess.
    let body = stream(&[
        (metric_name("a", &[]), simple_block(Layout::Since182)),
        (metric_name("b", &[]), simple_block(Layout::Before182)),
    ]);
    assert!(read_all(&body, body.len()).unwrap_err().contains("block 2"));
    // An empty answer (no series) is fine.
    assert!(read_all(&stream(&[]), 5).unwrap().0.is_empty());
}

/// Every sample of export lines, per series, in time order, values as bits.
fn json_samples(lines: &[u8]) -> BTreeMap<String, Vec<(i64, u64)>> {
    let mut map: BTreeMap<String, Vec<(i64, u64)>> = BTreeMap::new();
    for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let series = crate::codec::parse_vm_json_line(line).unwrap();
        map.entry(format!("{:?}", series.labels))
            .or_default()
            .extend(
                series
                    .samples
                    .iter()
                    .map(|s| (s.timestamp_ms, s.value.to_bits())),
            );
    }
    for v in map.values_mut() {
        v.sort();
    }
    map
}

/// Real answers of Debian's 1.79 and of v1.150.0 (tests/conformance/vm-native):
/// each native answer, printed as lines here, holds exactly the samples of
/// the same server's JSON export.
#[test]
fn real_native_answers_hold_the_json_exports_samples() {
    let cases: [(&[u8], &[u8], Layout); 2] = [
        (
            include_bytes!("../../tests/conformance/vm-native/v1.79.native"),
            include_bytes!("../../tests/conformance/vm-native/v1.79.jsonl"),
            Layout::Before182,
        ),
        (
            include_bytes!("../../tests/conformance/vm-native/v1.150.0.native"),
            include_bytes!("../../tests/conformance/vm-native/v1.150.0.jsonl"),
            Layout::Since182,
        ),
    ];
    for (native, json, layout) in cases {
        let mut reader = NativeReader::new();
        let mut lines = Vec::new();
        for chunk in native.chunks(100) {
            reader
                .feed(chunk, |labels, block| {
                    block.write_json_line(&labels, &mut lines);
                    Ok(true)
                })
                .unwrap();
        }
        reader.finish().unwrap();
        assert_eq!(reader.layout(), Some(layout));
        let (got, want) = (json_samples(&lines), json_samples(json));
        assert_eq!(want.len(), 11);
        assert_eq!(got, want, "{layout:?}");
    }
}
