//! Load generator for `scripts/bench-router.sh`: pushes the same remote-write
//! requests to any receiver (vmagent, spillway, VictoriaMetrics) and reports
//! how long the receiver took to accept them.
//!
//! All bodies are encoded before the clock starts (with spillway's codec),
//! so the generator's own CPU during the run is only HTTP. Series look like
//! a scrape: `bench_metric_<i % 10>{job, instance, env, region, route}`,
//! `route` alternating `a` / `b` so two relabel-routed destinations each get
//! half. Requests go out `--concurrency` at a time; a 429/5xx answer or a
//! connection error is retried (up to 50 times, 100 ms apart), so every
//! sample is delivered exactly as a real client would insist.
//!
//! ```text
//! cargo run --release --example remote_write_load -- \
//!     --url http://127.0.0.1:8429/api/v1/write --series 20000 --samples 2000000
//! ```

use spillway::codec::remote_write::{
    RemoteWriteEncoder, CONTENT_ENCODING, CONTENT_TYPE, VERSION, VERSION_HEADER,
};
use spillway::model::{Labels, Sample, Series};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    url: String,
    series: usize,
    samples: usize,
    per_request: usize,
    concurrency: usize,
    start_ms: i64,
}

fn parse_args() -> Args {
    let mut a = Args {
        url: String::new(),
        series: 20_000,
        samples: 2_000_000,
        per_request: 10_000,
        concurrency: 4,
        start_ms: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = value(),
            "--series" => a.series = value().parse().expect("--series"),
            "--samples" => a.samples = value().parse().expect("--samples"),
            "--per-request" => a.per_request = value().parse().expect("--per-request"),
            "--concurrency" => a.concurrency = value().parse().expect("--concurrency"),
            "--start-ms" => a.start_ms = value().parse().expect("--start-ms"),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(!a.url.is_empty(), "--url is required");
    if a.start_ms == 0 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        // Far enough back that every step fits before now.
        a.start_ms = now - (a.samples / a.series.max(1)) as i64 * 15_000 - 60_000;
    }
    a
}

fn labels(i: usize) -> Labels {
    Labels::from_pairs([
        ("__name__", format!("bench_metric_{}", i % 10)),
        ("job", "bench".to_string()),
        ("instance", format!("host-{}:9100", i)),
        ("env", "prod".to_string()),
        ("region", ["eu", "us", "ap"][i % 3].to_string()),
        ("route", ["a", "b"][i % 2].to_string()),
    ])
}

/// Step-major: every series gets one sample per 15 s step; a request holds
/// `per_request` consecutive series of one step.
fn bodies(a: &Args) -> Vec<(bytes::Bytes, usize)> {
    let all: Vec<Labels> = (0..a.series).map(labels).collect();
    let mut enc = RemoteWriteEncoder::new();
    let mut out = Vec::new();
    let mut left = a.samples;
    let mut step = 0i64;
    while left > 0 {
        for chunk in all.chunks(a.per_request) {
            if left == 0 {
                break;
            }
            let n = chunk.len().min(left);
            let batch: Vec<Series> = chunk[..n]
                .iter()
                .enumerate()
                .map(|(j, l)| {
                    let value = (step as f64) * 1.5 + j as f64;
                    Series::new(
                        l.clone(),
                        vec![Sample::new(a.start_ms + step * 15_000, value)],
                    )
                })
                .collect();
            let mut body = Vec::new();
            enc.encode(&batch, &mut body).expect("encode");
            out.push((bytes::Bytes::from(body), n));
            left -= n;
        }
        step += 1;
    }
    out
}

#[tokio::main]
async fn main() {
    let a = parse_args();
    let prepared = Instant::now();
    let bodies = Arc::new(bodies(&a));
    let wire: usize = bodies.iter().map(|b| b.0.len()).sum();
    eprintln!(
        "prepared {} requests ({} samples, {:.1} MiB snappy) in {:.1}s",
        bodies.len(),
        a.samples,
        wire as f64 / (1 << 20) as f64,
        prepared.elapsed().as_secs_f64()
    );
    // reqwest is built without a TLS crypto provider; plain HTTP still wants one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..a.concurrency {
        let (client, bodies, next, retries, url) = (
            client.clone(),
            Arc::clone(&bodies),
            Arc::clone(&next),
            Arc::clone(&retries),
            a.url.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some((body, _)) = bodies.get(i) else {
                    break;
                };
                let mut attempt = 0;
                loop {
                    let resp = client
                        .post(&url)
                        .header("Content-Encoding", CONTENT_ENCODING)
                        .header("Content-Type", CONTENT_TYPE)
                        .header(VERSION_HEADER, VERSION)
                        .body(body.clone())
                        .send()
                        .await;
                    match resp {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            break;
                        }
                        Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => {
                            let status = r.status();
                            let text = r.text().await.unwrap_or_default();
                            panic!("request {i} refused: {status}: {text}");
                        }
                        other => {
                            attempt += 1;
                            retries.fetch_add(1, Ordering::SeqCst);
                            assert!(attempt < 50, "request {i} kept failing: {other:?}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    // One line for the script to read: seconds, samples, retries.
    println!(
        "pushed {} samples in {:.3} s ({:.0} samples/s), {} retries",
        a.samples,
        secs,
        a.samples as f64 / secs,
        retries.load(Ordering::SeqCst)
    );
}
