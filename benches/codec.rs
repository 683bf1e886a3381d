//! Throughput of the wire formats, swept over batch sizes (100, 1k, 10k
//! series × 10 samples): remote write encode (reused encoder) and decode
//! (into fresh series, and `reuse`: into the last request's, as the
//! receiver does), in both protocols (Prometheus: snappy, VictoriaMetrics:
//! zstd), VictoriaMetrics JSON lines write and read, VictoriaMetrics native
//! blocks write (what `spillway import` sends, with its per-value check of
//! the server's decimal conversion) and read (what `gather` reads), and the
//! `query_range` JSON answer read as the client reads it; last, `reuse/1`:
//! a router's usual request, 10k series of one sample each. The last column
//! is wire bytes per sample.
//!
//! A plain `main` timed with `Instant` (`harness = false`), so it needs no
//! benchmark crate: `cargo bench --bench codec`. Each case repeats for about
//! a second and prints the mean time per batch, samples per second and bytes
//! per second of the wire format. `BENCH_SAVE=name` / `BENCH_BASELINE=name`:
//! see `support` (the figure kept is samples per second).

mod support;

use spillway::client::read_query_answer;
use spillway::codec::remote_write::RemoteWriteEncoder;
use spillway::codec::vm_native::{Layout, NativeReader};
use spillway::codec::vm_native_write::{native_header, NativeWriter};
use spillway::codec::{
    decode_write_request, decode_write_request_into, write_vm_json_lines, Compression,
    VmJsonLineReader,
};
use spillway::model::{Labels, Sample, Series, WireForm};
use std::hint::black_box;
use std::time::Duration;
use support::{time_mean, Baseline};

const SAMPLES_PER_SERIES: usize = 10;
const BATCHES: [usize; 3] = [100, 1_000, 10_000];

/// Series shaped like a scrape: six labels, half counters (integral values,
/// the common case), half gauges (fractional values), 15 s apart.
fn batch(series: usize, samples_per_series: usize) -> Vec<Series> {
    (0..series)
        .map(|i| {
            let labels = Labels::from_pairs([
                ("__name__", "http_requests_total".to_string()),
                ("job", "api-server".to_string()),
                (
                    "instance",
                    format!("10.0.{}.{}:9100", (i / 256) % 256, i % 256),
                ),
                ("method", ["GET", "POST", "PUT"][i % 3].to_string()),
                ("code", ["200", "404", "500", "503"][i % 4].to_string()),
                ("path", format!("/api/v1/items/{}", i % 97)),
            ]);
            let samples = (0..samples_per_series)
                .map(|j| {
                    let value = if i % 2 == 0 {
                        (i * 1000 + j * 7) as f64
                    } else {
                        i as f64 * 0.37 + j as f64 * 0.011
                    };
                    Sample::new(1_700_000_000_000 + j as i64 * 15_000, value)
                })
                .collect();
            Series::new(labels, samples)
        })
        .collect()
}

/// The answer a server prints for `series`: `/api/v1/query_range` matrix.
fn query_range_answer(series: &[Series]) -> String {
    let mut out = String::from(r#"{"status":"success","data":{"resultType":"matrix","result":["#);
    for (i, s) in series.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let metric: Vec<String> = s
            .labels
            .iter()
            .map(|l| format!("{:?}:{:?}", l.name, l.value))
            .collect();
        let values: Vec<String> = s
            .samples
            .iter()
            .map(|p| format!("[{},\"{}\"]", p.timestamp_ms / 1000, p.value))
            .collect();
        out.push_str(&format!(
            r#"{{"metric":{{{}}},"values":[{}]}}"#,
            metric.join(","),
            values.join(",")
        ));
    }
    out.push_str("]}}");
    out
}

/// Prints and records one case; `samples` is `series` times the samples
/// of each.
fn report(
    baseline: &mut Baseline,
    format: &str,
    op: &str,
    (series, samples): (usize, usize),
    bytes: usize,
    per_batch: Duration,
) {
    let secs = per_batch.as_secs_f64();
    let rate = samples as f64 / secs;
    let change = baseline.record(&format!("{format} {op} {series}"), rate);
    println!(
        "{format:<14} {op:<8} {series:>7} {samples:>8} {bytes:>12} {:>12.3} {:>12.2} {:>10.1} {:>8.2}{change}",
        secs * 1e3,
        rate / 1e6,
        bytes as f64 / secs / (1 << 20) as f64,
        bytes as f64 / samples as f64,
    );
}

/// Decoding as the receiver does: into the series and wire form of the
/// previous request, so nothing is allocated per label.
fn decode_reused(body: &[u8]) -> Duration {
    let (mut into, mut wire) = (Vec::new(), WireForm::default());
    time_mean(|| {
        decode_write_request_into(black_box(body), usize::MAX, &mut into, &mut wire).unwrap();
        black_box(&into);
    })
}

/// [`decode_reused`] for a request shaped like those a router gets from
/// Prometheus or vmagent: one sample per series.
fn router_shaped(baseline: &mut Baseline) {
    let n = 10_000;
    let mut body = Vec::new();
    RemoteWriteEncoder::new()
        .encode(&batch(n, 1), &mut body)
        .unwrap();
    let t = decode_reused(&body);
    report(baseline, "remote_write", "reuse/1", (n, n), body.len(), t);
}

fn main() {
    let mut baseline = Baseline::from_env("codec");
    println!(
        "{:<14} {:<8} {:>7} {:>8} {:>12} {:>12} {:>12} {:>10} {:>8}",
        "format",
        "op",
        "series",
        "samples",
        "wire bytes",
        "ms/batch",
        "Msamples/s",
        "MiB/s",
        "B/sample"
    );
    for &n in &BATCHES {
        let series = batch(n, SAMPLES_PER_SERIES);
        let size = (n, n * SAMPLES_PER_SERIES);

        for (format, compression) in [
            ("remote_write", Compression::Snappy),
            ("rw_vm_zstd", Compression::Zstd),
        ] {
            let mut encoder = RemoteWriteEncoder::new();
            encoder.set_compression(compression);
            let mut body = Vec::new();
            let t = time_mean(|| encoder.encode(black_box(&series), &mut body).unwrap());
            report(&mut baseline, format, "encode", size, body.len(), t);

            let t = time_mean(|| {
                black_box(decode_write_request(black_box(&body)).unwrap());
            });
            report(&mut baseline, format, "decode", size, body.len(), t);

            let t = decode_reused(&body);
            report(&mut baseline, format, "reuse", size, body.len(), t);
        }

        let mut text = Vec::new();
        let t = time_mean(|| {
            text.clear();
            write_vm_json_lines(black_box(&series), &mut text);
        });
        report(&mut baseline, "vm_json", "write", size, text.len(), t);

        let t = time_mean(|| {
            let mut read = 0;
            for series in VmJsonLineReader::new(black_box(text.as_slice())) {
                black_box(series.unwrap());
                read += 1;
            }
            assert_eq!(read, n);
        });
        report(&mut baseline, "vm_json", "read", size, text.len(), t);

        let mut native = Vec::new();
        let mut writer = NativeWriter::new(Layout::Since182);
        let t = time_mean(|| {
            native.clear();
            native_header(&mut native);
            for s in black_box(&series) {
                writer.series(&s.labels, &s.samples, &mut native).unwrap();
            }
        });
        report(&mut baseline, "vm_native", "write", size, native.len(), t);

        let t = time_mean(|| {
            let mut reader = NativeReader::new();
            let mut read = 0;
            reader
                .feed(black_box(&native), |labels, block| {
                    black_box((labels, block.values.len()));
                    read += 1;
                    Ok(true)
                })
                .unwrap();
            assert_eq!(read, n);
        });
        report(&mut baseline, "vm_native", "read", size, native.len(), t);

        let answer = query_range_answer(&series);
        let t = time_mean(|| {
            let mut read = 0;
            read_query_answer(black_box(answer.as_bytes()), |series| {
                black_box(series);
                read += 1;
                true
            })
            .unwrap();
            assert_eq!(read, n);
        });
        report(&mut baseline, "query_range", "read", size, answer.len(), t);
    }
    router_shaped(&mut baseline);
    baseline.finish();
}
