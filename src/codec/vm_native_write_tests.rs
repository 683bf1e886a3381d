//! The writer against VictoriaMetrics' own expectations: `FromFloat` and
//! `AppendFloatToDecimal` vectors copied from VictoriaMetrics v1.79.5
//! `lib/decimal/decimal_test.go` (TestFloatToDecimal,
//! TestAppendFloatToDecimal, TestMaxUpExponent), and every body read back
//! by this crate's reader in both layouts. tests/bundle.rs imports through
//! a running server.

use super::*;
use crate::codec::vm_native::{NativeReader, STALE_NAN};
use crate::model::Label;

const V_INF_POS: i64 = i64::MAX;
const V_INF_NEG: i64 = i64::MIN;
const V_STALE: i64 = i64::MAX - 1;

#[test]
fn from_float_matches_victoriametrics() {
    let cases: &[(f64, i64, i16)] = &[
        (0.0, 0, 0),
        (1.0, 1, 0),
        (-1.0, -1, 0),
        (0.9, 9, -1),
        (0.99, 99, -2),
        (9.0, 9, 0),
        (99.0, 99, 0),
        (20.0, 2, 1),
        (100.0, 1, 2),
        (3000.0, 3, 3),
        (0.123, 123, -3),
        (-0.123, -123, -3),
        (1.2345, 12345, -4),
        (-1.2345, -12345, -4),
        (12000.0, 12, 3),
        (-12000.0, -12, 3),
        (1e-30, 1, -30),
        (-1e-30, -1, -30),
        (1e-260, 1, -260),
        (-1e-260, -1, -260),
        (321e260, 321, 260),
        (-321e260, -321, 260),
        (1234567890123.0, 1234567890123, 0),
        (-1234567890123.0, -1234567890123, 0),
        (123e5, 123, 5),
        (15e18, 15, 18),
        (f64::INFINITY, V_INF_POS, 0),
        (f64::NEG_INFINITY, V_INF_NEG, 0),
        (STALE_NAN, V_STALE, 0),
        (i64::MAX as f64, 9223372036854775, 3),
        (i64::MIN as f64, -9223372036854775, 3),
        (0.1234567890123456, 12345678901234, -14),
        (-123456.7890123456, -12345678901234, -8),
    ];
    for &(f, v, e) in cases {
        assert_eq!(from_float(f), Some((v, e)), "FromFloat({f:e})");
    }
    assert_eq!(from_float(f64::NAN), None);
}

#[test]
fn one_scale_per_block_as_victoriametrics_chooses_it() {
    let cases: &[(&[f64], &[i64], i16)] = &[
        (&[0.0], &[0], 0),
        (
            &[f64::INFINITY, f64::NEG_INFINITY, 123.0],
            &[V_INF_POS, V_INF_NEG, 123],
            0,
        ),
        (
            &[f64::INFINITY, f64::NEG_INFINITY, 123.0, 1e-4, 1e32],
            &[V_INF_POS, V_INF_NEG, 0, 0, 1_000_000_000_000_000_000],
            14,
        ),
        (
            &[0.0, -0.0, 1.0, -1.0, 12345678.0, -123456789.0],
            &[0, 0, 1, -1, 12345678, -123456789],
            0,
        ),
        (&[-24.0, 0.0, 4.123, 0.3], &[-24000, 0, 4123, 300], -3),
        (
            &[0.0, 10.23456789, 1e2, 1e-3, 1e-4],
            &[0, 1023456789, 10_000_000_000, 100_000, 10_000],
            -8,
        ),
        (
            &[3e17, 7e-2, 5e-7, 45.0, 7e-1],
            &[3_000_000_000_000_000_000, 0, 0, 450, 7],
            -1,
        ),
        (
            &[3e18, 1.0, 0.1, 13.0],
            &[3_000_000_000_000_000_000, 1, 0, 13],
            0,
        ),
    ];
    for &(floats, want, want_scale) in cases {
        let (decimals, exponents): (Vec<i64>, Vec<i16>) =
            floats.iter().map(|&f| from_float(f).unwrap()).unzip();
        let mut got = Vec::new();
        let scale = common_scale(&decimals, &exponents, &mut got);
        assert_eq!((got.as_slice(), scale), (want, want_scale), "{floats:?}");
    }
}

#[test]
fn max_up_exponent_matches_victoriametrics() {
    for (v, want) in [
        (V_INF_POS, 1024),
        (V_INF_NEG, 1024),
        (V_STALE, 1024),
        (i64::MIN + 1, 0),
        (i64::MAX - 2, 0),
        (0, 1024),
        (1, 18),
        (12, 17),
        (123, 16),
        (1234567890, 9),
    ] {
        assert_eq!(max_up_exponent(v), want, "{v}");
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_vec(
        pairs
            .iter()
            .map(|(n, v)| Label {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect(),
    )
}

fn samples(points: &[(i64, f64)]) -> Vec<Sample> {
    points.iter().map(|&(t, v)| Sample::new(t, v)).collect()
}

/// Writes the series into one body and reads it back: (labels, samples) per block.
fn round_trip(layout: Layout, series: &[(Labels, Vec<Sample>)]) -> Vec<(Labels, Vec<Sample>)> {
    let mut body = Vec::new();
    native_header(&mut body);
    let mut writer = NativeWriter::new(layout);
    for (l, s) in series {
        writer.series(l, s, &mut body).expect("writable");
    }
    let mut reader = NativeReader::new();
    let mut blocks = Vec::new();
    reader
        .feed(&body, |l, b| {
            blocks.push((l, b.samples().collect::<Vec<_>>()));
            Ok(true)
        })
        .expect("readable");
    reader.finish().expect("ends between blocks");
    assert_eq!(reader.layout(), Some(layout));
    blocks
}

#[test]
fn bodies_read_back_in_both_layouts() {
    let name = labels(&[
        ("__name__", "http_requests_total"),
        ("Zone", "a\u{1}b\u{2}c\u{0}"),
        ("job", "api"),
    ]);
    let counter = samples(&[(1000, 1.0), (16000, 2.5), (31000, 4.0), (46000, 1e-3)]);
    let constant = samples(&[(1000, 7.0), (2000, 7.0), (3000, 7.0)]);
    let steps = samples(&[(0, 10.0), (15000, 20.0), (30000, 30.0)]);
    let special = samples(&[(5, f64::INFINITY), (6, -0.25), (7, f64::NEG_INFINITY)]);
    let series = vec![
        (name.clone(), counter),
        (labels(&[("__name__", "c")]), constant),
        (labels(&[("__name__", "s"), ("x", "1")]), steps),
        (labels(&[("only", "labels")]), special),
    ];
    for layout in [Layout::Before182, Layout::Since182] {
        assert_eq!(round_trip(layout, &series), series, "{layout:?}");
    }
}

#[test]
fn samples_are_sorted_and_long_series_cut_into_blocks() {
    let l = labels(&[("__name__", "m")]);
    let unsorted = samples(&[(3, 3.0), (1, 1.0), (2, 2.0), (1, 1.5)]);
    let got = round_trip(Layout::Before182, &[(l.clone(), unsorted)]);
    assert_eq!(got[0].1, samples(&[(1, 1.0), (1, 1.5), (2, 2.0), (3, 3.0)]));

    let long: Vec<Sample> = (0..20_000)
        .map(|i| Sample::new(i * 15_000, (i % 97) as f64 * 0.5))
        .collect();
    let got = round_trip(Layout::Since182, &[(l, long.clone())]);
    let sizes: Vec<usize> = got.iter().map(|(_, s)| s.len()).collect();
    assert_eq!(
        sizes,
        [ROWS_PER_BLOCK, ROWS_PER_BLOCK, 20_000 - 2 * ROWS_PER_BLOCK]
    );
    let all: Vec<Sample> = got.into_iter().flat_map(|(_, s)| s).collect();
    assert_eq!(all, long);
}

#[test]
fn values_one_scale_would_change_go_into_blocks_of_their_own() {
    // 3e17 and 7e-2 share no scale that keeps both: VictoriaMetrics' own
    // block would store 7e-2 as 0. Written apart, each stays itself.
    let l = labels(&[("__name__", "m")]);
    let mixed = samples(&[(1, 3e17), (2, 7e-2), (3, 5e-7), (4, 45.0)]);
    let got = round_trip(Layout::Before182, &[(l, mixed.clone())]);
    assert!(got.len() > 1, "split into {} blocks", got.len());
    let all: Vec<Sample> = got.into_iter().flat_map(|(_, s)| s).collect();
    assert_eq!(all, mixed);
}

#[test]
fn what_the_server_would_store_is_what_a_json_line_stores() {
    // Every value, written and read back, converts to the same decimal as
    // the original: the decimal the server's storage keeps either way.
    let l = labels(&[("__name__", "m")]);
    let values = [
        0.1234567890123456,
        -123456.7890123456,
        1e-300,
        1.7976931348623157e308,
        9007199254740993.0,
        0.30000000000000004,
        123.456,
        -0.0,
    ];
    let points: Vec<Sample> = (0..values.len())
        .map(|i| Sample::new(i as i64, values[i]))
        .collect();
    let got = round_trip(Layout::Before182, &[(l, points)]);
    let read: Vec<f64> = got
        .iter()
        .flat_map(|(_, s)| s.iter().map(|s| s.value))
        .collect();
    for (sent, back) in values.iter().zip(&read) {
        assert_eq!(
            from_float(*back),
            from_float(*sent),
            "{sent:e} read back as {back:e}"
        );
    }
    // Values whose decimal comes back as another decimal (VictoriaMetrics
    // itself does not keep them exactly): refused, so the caller sends
    // their line as JSON and the server does what it always does.
    for v in [5e-324, 18446744073709551616.0] {
        let err = NativeWriter::new(Layout::Before182)
            .series(&l_of("m"), &samples(&[(1, 1.0), (2, v)]), &mut Vec::new())
            .unwrap_err();
        assert_eq!(err, NotNative::Inexact(v));
    }
}

fn l_of(name: &str) -> Labels {
    labels(&[("__name__", name)])
}

#[test]
fn a_nan_is_left_to_json_and_the_body_left_as_it_was() {
    let mut body = Vec::new();
    native_header(&mut body);
    let mut writer = NativeWriter::new(Layout::Before182);
    let l = labels(&[("__name__", "m")]);
    for nan in [f64::NAN, STALE_NAN] {
        let err = writer
            .series(&l, &samples(&[(1, 1.0), (2, nan)]), &mut body)
            .unwrap_err();
        assert_eq!(err, NotNative::NaN);
        assert_eq!(body.len(), 16);
    }
}

#[test]
fn a_name_over_the_servers_limit_is_left_to_json() {
    let long = "x".repeat(MAX_FRAME_BYTES);
    let l = labels(&[("__name__", "m"), ("big", long.as_str())]);
    let mut body = Vec::new();
    let err = NativeWriter::new(Layout::Since182)
        .series(&l, &samples(&[(1, 1.0)]), &mut body)
        .unwrap_err();
    assert!(matches!(err, NotNative::NameTooLong(n) if n > MAX_FRAME_BYTES));
    assert!(body.is_empty());
}

#[test]
fn the_header_cuts_nothing() {
    let mut h = Vec::new();
    native_header(&mut h);
    assert_eq!(h[..15], [0xff; 15]);
    assert_eq!(h[15], 0xfe);
    assert_eq!(h.len(), 16);
}

#[test]
fn a_probe_reads_in_one_layout_only_and_carries_no_row_in_range() {
    for (layout, other) in [
        (Layout::Before182, Layout::Since182),
        (Layout::Since182, Layout::Before182),
    ] {
        let body = native_probe(layout);
        assert_eq!(body[..16], [0; 16], "range [0, 0]");
        let mut reader = NativeReader::new();
        let mut rows = Vec::new();
        reader
            .feed(&body, |_, b| {
                rows.extend(b.samples());
                Ok(true)
            })
            .expect("readable");
        assert_eq!(reader.layout(), Some(layout));
        assert_eq!(rows, [Sample::new(1000, 0.0)], "outside [0, 0]");
        // The same block forced into the other layout claims no rows.
        let frames = &body[16..];
        let name_len = u32::from_be_bytes(frames[..4].try_into().unwrap()) as usize;
        let block = &frames[8 + name_len..];
        assert_eq!(
            rows_claimed(block, other),
            0,
            "{layout:?} read as {other:?}"
        );
    }
}

/// The row count a block's header gives when read in `layout`.
fn rows_claimed(mut block: &[u8], layout: Layout) -> u64 {
    let before_rows = match layout {
        Layout::Before182 => 2,
        Layout::Since182 => 3,
    };
    for _ in 0..before_rows {
        let (_, n) = crate::codec::remote_write::read_varint(block).unwrap();
        block = &block[n..];
    }
    crate::codec::remote_write::read_varint(block).unwrap().0
}
