use super::*;
use crate::client::ClientConfig;
use crate::model::Sample;
use std::time::Duration;

fn parse_instant_answer(body: &[u8]) -> Result<InstantAnswer, String> {
    serde_json::from_slice::<InstantEnvelope>(body)
        .map_err(|e| e.to_string())?
        .into_answer()
}

#[test]
fn instant_answer_with_stats() {
    let a = parse_instant_answer(br#"{"status":"success","isPartial":false,"data":{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"a"},"value":[1700000000,"1"]}]},"stats":{"seriesFetched": "3","executionTimeMsec":1}}"#).unwrap();
    assert_eq!(a.series.len(), 1);
    assert_eq!(a.series[0].samples[0], Sample::new(1_700_000_000_000, 1.0));
    assert_eq!(a.series_fetched, Some(3));
    let a = parse_instant_answer(
        br#"{"status":"success","data":{"resultType":"scalar","result":[1700000000.5,"2"]}}"#,
    )
    .unwrap();
    assert_eq!(a.series[0].samples[0], Sample::new(1_700_000_000_500, 2.0));
    assert_eq!(a.series_fetched, None);
    let a =
        parse_instant_answer(br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#)
            .unwrap();
    assert!(a.series.is_empty());
    let e = parse_instant_answer(
        br#"{"status":"error","errorType":"422","error":"missing `| stats ...` pipe"}"#,
    )
    .unwrap_err();
    assert!(e.contains("missing `| stats ...` pipe"), "{e}");
}

#[test]
fn group_params_replace_defaults() {
    let f = QueryForm::with_overrides(
        vec![
            ("query".into(), "up".into()),
            ("step".into(), "300s".into()),
        ],
        &[
            ("step".into(), "1m".into()),
            ("extra_label".into(), "a=1".into()),
            ("extra_label".into(), "b=2".into()),
        ],
    );
    assert_eq!(
        f.encode(),
        "query=up&step=1m&extra_label=a%3D1&extra_label=b%3D2"
    );
    assert_eq!(f.get("step"), Some("1m"));
    assert_eq!(duration_param(300_000), "300s");
    assert_eq!(duration_param(1500), "1500ms");
}

fn parse(body: &str) -> Result<Vec<Series>, String> {
    let mut out = vec![];
    stream::read_answer(body.as_bytes(), |s| {
        out.push(s);
        true
    })
    .map_err(|e| e.to_string())?;
    Ok(out)
}

#[test]
fn matrix_vector_scalar() {
    let m = parse(r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"up","job":"a"},"values":[[1.5,"1"],[3,"NaN"]]}]}}"#).unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].labels.to_string(), r#"up{job="a"}"#);
    assert_eq!(m[0].samples[0], Sample::new(1500, 1.0));
    assert!(m[0].samples[1].value.is_nan());
    let v = parse(r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[2,"+Inf"]}]}}"#).unwrap();
    assert_eq!(v[0].samples[0].value, f64::INFINITY);
    let s =
        parse(r#"{"status":"success","data":{"resultType":"scalar","result":[2,"-4"]}}"#).unwrap();
    assert_eq!(s[0].samples[0], Sample::new(2000, -4.0));
}

#[test]
fn error_status_is_an_error() {
    let e = parse(r#"{"status":"error","errorType":"bad_data","error":"boom"}"#).unwrap_err();
    assert!(e.contains("boom"), "{e}");
}

#[test]
fn seconds_format() {
    assert_eq!(seconds(1_700_000_000_000), "1700000000");
    assert_eq!(seconds(1_700_000_000_500), "1700000000.500");
}

/// A server whose first answers to every path stop halfway through the JSON
/// (a clean end of the body, as vmauth gives when its backend goes away),
/// then whole.
async fn cutting_server(cut_first: usize) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    const SERIES: &str = r#"{"status":"success","data":[{"__name__":"up","job":"a"}]}"#;
    const BUILD: &str = r#"{"status":"success","data":{"version":"2.53.0"}}"#;
    const INSTANT: &str = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up"},"value":[1,"1"]}]}}"#;
    const RANGE: &str = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"up"},"values":[[1,"1"],[2,"1"]]},{"metric":{"__name__":"up","job":"b"},"values":[[1,"0"]]}]}}"#;
    // Malformed well before its end: not a cut.
    const BAD: &str = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"up"},"values":[[1,"1"]]}, x, {"metric":{}}]}}"#;
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            let whole = match uri.path() {
                p if p.ends_with("/series") => SERIES,
                p if p.ends_with("/query_range") => RANGE,
                p if p.ends_with("/query") => INSTANT,
                p if p.ends_with("/bad_range") => return BAD.to_string(),
                _ => BUILD,
            };
            let cut = if n < cut_first {
                &whole[..whole.len() / 2]
            } else {
                whole
            };
            cut.to_string()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, calls)
}

fn quick_retries(url: &str) -> Client {
    Client::new(ClientConfig {
        url: url.to_string(),
        retry: crate::client::RetryPolicy {
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap()
}

#[tokio::test]
async fn an_answer_cut_short_is_asked_for_again() {
    let (url, calls) = cutting_server(2).await;
    let client = quick_retries(&url);
    let series = client.series(&["up".to_string()], 0, 1000).await.unwrap();
    assert_eq!(
        series,
        vec![Labels::from_pairs([("__name__", "up"), ("job", "a")])]
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
    let info = client.build_info().await.unwrap();
    assert_eq!(info.version, "2.53.0");

    // Instant queries (what `run` evaluates) too.
    let (url, calls) = cutting_server(2).await;
    let form = QueryForm::with_overrides(vec![("query".into(), "up".into())], &[]);
    let answer = quick_retries(&url)
        .query_instant_form("/api/v1/query", &form)
        .await
        .unwrap();
    assert_eq!(answer.series.len(), 1);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);

    // Past the retries, the error says what happened.
    let (url, _) = cutting_server(usize::MAX).await;
    let e = quick_retries(&url).build_info().await.unwrap_err();
    assert!(matches!(e, ClientError::CutShort { .. }), "{e:?}");
    assert!(
        e.to_string().contains("ended early (EOF while parsing"),
        "{e}"
    );
}

/// A server answering every range query with `series` series of `points` points each.
async fn long_answer_server(series: usize, points: usize) -> String {
    let mut body = String::from(r#"{"status":"success","data":{"resultType":"matrix","result":["#);
    for s in 0..series {
        let sep = if s == 0 { "" } else { "," };
        body.push_str(&format!(
            r#"{sep}{{"metric":{{"__name__":"up","n":"{s}"}},"values":["#
        ));
        for p in 0..points {
            let sep = if p == 0 { "" } else { "," };
            body.push_str(&format!(r#"{sep}[{p},"{s}"]"#));
        }
        body.push_str("]}");
    }
    body.push_str("]}}");
    let app = axum::Router::new().fallback(move || {
        let body = body.clone();
        async move { body }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// Waits until the decoder of `stream` stops queueing (it waits for the
/// budget or has read everything), at most 10 s: the count has to be
/// non-zero and stay put for three looks 100 ms apart. One unchanged look
/// was not enough on a loaded CI machine: the decoder had not finished its
/// first long series yet and the count read 0.
async fn settled(stream: &SeriesStream) -> usize {
    let (mut last, mut same) = (usize::MAX, 0);
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = stream.queued_samples();
        same = if now == last { same + 1 } else { 0 };
        if now > 0 && same >= 2 {
            return now;
        }
        last = now;
    }
    panic!("the queue kept changing, or stayed empty, for 10 s: {last} samples");
}

#[tokio::test]
async fn long_series_wait_in_the_stream_by_samples_not_by_series() {
    // 40 series of 20,000 points: 800,000 samples, far fewer than 256 series.
    let url = long_answer_server(40, 20_000).await;
    let client = quick_retries(&url);
    let mut stream = client
        .query_range("up", 0, 20_000_000, 1000, &QueryParams::default())
        .await
        .unwrap();
    // The decoder queues whole series until the next one would not fit.
    let queued = settled(&stream).await;
    let budget = crate::budget::QUEUED_SAMPLES;
    assert!(
        (budget - 20_000..=budget).contains(&queued),
        "{queued} samples queued"
    );
    let mut n = 0;
    while let Some(series) = stream.recv().await {
        let series = series.unwrap();
        assert_eq!(series.samples.len(), 20_000);
        assert_eq!(series.samples[7].value, n as f64);
        n += 1;
    }
    assert_eq!(n, 40);
    assert_eq!(stream.queued_samples(), 0);

    // A series longer than the whole budget passes, alone.
    let long = crate::budget::QUEUED_SAMPLES + 1000;
    let url = long_answer_server(2, long).await;
    let mut stream = quick_retries(&url)
        .query_range("up", 0, 1_000_000_000, 1000, &QueryParams::default())
        .await
        .unwrap();
    assert_eq!(settled(&stream).await, crate::budget::QUEUED_SAMPLES);
    let first = stream.recv().await.unwrap().unwrap();
    assert_eq!(first.samples.len(), long);
    let second = stream.recv().await.unwrap().unwrap();
    assert_eq!(second.samples.len(), long);
    assert!(stream.recv().await.is_none());
}

async fn drain(mut stream: SeriesStream) -> (usize, Option<ClientError>) {
    let mut series = 0;
    while let Some(item) = stream.recv().await {
        match item {
            Ok(_) => series += 1,
            Err(e) => return (series, Some(e)),
        }
    }
    (series, None)
}

#[tokio::test]
async fn a_streamed_answer_cut_short_is_worth_asking_again_and_bad_json_is_not() {
    let (url, _) = cutting_server(1).await;
    let client = quick_retries(&url);
    let params = QueryParams::default();
    let range = |path: &'static str| client.query_range_at(path, "up", 0, 2000, 1000, &params);

    let (series, e) = drain(range("/api/v1/query_range").await.unwrap()).await;
    let e = e.expect("the cut answer fails");
    assert!(matches!(e, ClientError::CutShort { .. }), "{e:?}");
    assert!(e.is_retriable(), "{e}");
    assert_eq!(series, 0, "the cut is inside the first series");

    let (series, e) = drain(range("/api/v1/query_range").await.unwrap()).await;
    assert!(e.is_none(), "{e:?}");
    assert_eq!(series, 2);

    let (_, e) = drain(range("/api/v1/bad_range").await.unwrap()).await;
    let e = e.expect("bad JSON fails");
    assert!(matches!(e, ClientError::Decode { .. }), "{e:?}");
    assert!(!e.is_retriable(), "{e}");
}
