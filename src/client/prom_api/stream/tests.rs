use super::*;

/// The oracle: `serde_json` over the whole answer, as the reader worked
/// before it streamed by hand.
fn reference(body: &[u8]) -> Result<Vec<Series>, String> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        #[serde(default)]
        status: Option<String>,
        #[serde(default)]
        data: Option<Data>,
    }
    #[derive(serde::Deserialize)]
    struct Data {
        result: Vec<RawSeries>,
    }
    let envelope: Envelope = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if envelope.status.as_deref() == Some("error") {
        return Err("status error".into());
    }
    let result = envelope.data.map(|d| d.result).unwrap_or_default();
    Ok(result.into_iter().map(RawSeries::into_series).collect())
}

/// A source handing out `chunk`-byte reads, so windows end anywhere.
struct Chunked<'a> {
    rest: &'a [u8],
    chunk: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.chunk.min(buf.len()).min(self.rest.len());
        buf[..n].copy_from_slice(&self.rest[..n]);
        self.rest = &self.rest[n..];
        Ok(n)
    }
}

fn read_chunked(body: &[u8], chunk: usize) -> Result<Vec<Series>, ScanError> {
    let mut out = vec![];
    read_answer(Chunked { rest: body, chunk }, |s| {
        out.push(s);
        true
    })?;
    Ok(out)
}

/// Series compared with NaNs by their bits (staleness markers included).
fn key(series: &[Series]) -> Vec<(String, Vec<(i64, u64)>)> {
    series
        .iter()
        .map(|s| {
            let samples = s
                .samples
                .iter()
                .map(|p| (p.timestamp_ms, p.value.to_bits()));
            (format!("{:?}", s.labels), samples.collect())
        })
        .collect()
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// Whitespace where JSON allows it, most often none (as servers print).
fn ws(rng: &mut Rng) -> &'static str {
    ["", "", "", "", " ", "\n  ", "\t"][rng.below(7) as usize]
}

fn random_series(rng: &mut Rng) -> String {
    let names = [
        "__name__", "job", "instance", "le", "a\\\"b", "ü", "x\\u0041",
    ];
    let values = [
        "up",
        "host-0:9100",
        "",
        "tab\\tbed",
        "émoji ✓",
        "q\\\\z",
        "0.5",
    ];
    let mut labels = vec![];
    for _ in 0..rng.below(4) {
        let w = ws(rng);
        labels.push(format!(
            "{w}\"{}\"{w}:{w}\"{}\"",
            rng.pick(&names),
            rng.pick(&values)
        ));
    }
    let timestamps = [
        "1700000000",
        "1700000000.5",
        "1700000000.123",
        "0",
        "-15",
        "17000000001234",
        "1.7e9",
        "1700000000.0005",
    ];
    let sample_values = [
        "\"1.5\"",
        "\"NaN\"",
        "\"+Inf\"",
        "\"-Inf\"",
        "\"-0\"",
        "\"75.69\"",
        "2.5",
        "\"1e-7\"",
    ];
    let mut points = vec![];
    for _ in 0..rng.below(40) {
        let w = ws(rng);
        points.push(format!(
            "[{w}{},{w}{}{w}]",
            rng.pick(&timestamps),
            rng.pick(&sample_values)
        ));
    }
    let metric = format!("\"metric\":{{{}}}", labels.join(","));
    let samples = if rng.below(5) == 0 {
        format!("\"value\":{}", points.first().map_or("[1,\"1\"]", |p| p))
    } else {
        format!("\"values\":[{}]", points.join(","))
    };
    let w = ws(rng);
    match rng.below(6) {
        0 => format!("{{{w}{samples},{w}{metric}}}"),
        1 => format!("{{{samples}}}"),
        2 => format!("{{{metric},\"values\":[],\"value\":[2,\"3\"]}}"),
        _ => format!("{{{w}{metric}{w},{w}{samples}{w}}}"),
    }
}

fn random_answer(rng: &mut Rng) -> String {
    let series: Vec<String> = (0..rng.below(6)).map(|_| random_series(rng)).collect();
    let result = format!("[{}]", series.join(","));
    match rng.below(4) {
        0 => format!(
            "{{\"status\":\"success\",\"isPartial\":false,\"data\":{{\"resultType\":\"matrix\",\"result\":{result}}},\"stats\":{{\"seriesFetched\":\"3\",\"executionTimeMsec\":1}}}}"
        ),
        1 => format!("{{\"data\":{{\"result\":{result},\"resultType\":\"matrix\"}},\"status\":\"success\"}}"),
        2 => format!(" {{ \"status\" : \"success\" , \"data\" : {{ \"resultType\" : \"vector\" , \"result\" : {result} }} }} \n"),
        _ => format!("{{\"status\":\"success\",\"data\":{{\"resultType\":\"matrix\",\"result\":{result}}}}}"),
    }
}

#[test]
fn answers_read_as_serde_reads_them_whatever_the_reads() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..3000 {
        let body = random_answer(&mut rng);
        let expected = reference(body.as_bytes());
        for chunk in [1, 7, 64 * 1024] {
            let got = read_chunked(body.as_bytes(), chunk);
            match (&expected, got) {
                (Ok(want), Ok(got)) => assert_eq!(key(&got), key(want), "{round}: {body}"),
                (Err(_), Err(ScanError::Json(_))) => {}
                (want, got) => {
                    panic!("{round} chunk {chunk}: {body}\nserde {want:?}\nread {got:?}")
                }
            }
        }
    }
}

#[test]
fn every_cut_of_an_answer_is_an_error() {
    let body = br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"up","job":"a\"b"},"values":[[1700000000,"1"],[1700000015.5,"NaN"]]},{"metric":{},"values":[[1,"2"]]}]}}"#;
    assert_eq!(read_chunked(body, 3).unwrap().len(), 2);
    for cut in 0..body.len() {
        for chunk in [1, 5, 1024] {
            assert!(
                matches!(read_chunked(&body[..cut], chunk), Err(ScanError::Json(_))),
                "cut at {cut}: {}",
                String::from_utf8_lossy(&body[..cut])
            );
        }
    }
}

#[test]
fn malformed_answers_are_errors() {
    for body in [
        "",
        "null",
        "[]",
        r#"{"status":"success","data":null}"#,
        r#"{"status":"success","data":{"result":{}}}"#,
        r#"{"status":"success","data":{"result":[{"metric":{"a":1},"values":[]}]}}"#,
        r#"{"status":"success","data":{"result":[{"metric":{},"values":[[1,"x"]]}]}}"#,
        r#"{"status":"success","data":{"result":[{"values":[[01,"1"]]}]}}"#,
        r#"{"status":"success","data":{"result":[{"values":[],"values":[]}]}}"#,
        r#"{"status":"success","data":{"result":[]}} x"#,
        r#"{"status":"success","data":{"result":[]},}"#,
        r#"{"status":"success","stats":{"a":[}]},"data":{"result":[]}}"#,
        r#"{"status":"error","errorType":"bad_data","error":"boom"}"#,
    ] {
        assert!(
            matches!(read_chunked(body.as_bytes(), 4), Err(ScanError::Json(_))),
            "{body}"
        );
    }
}

#[test]
fn the_plain_form_is_read_by_hand_and_cuts_ask_for_more() {
    let series = br#"{"metric":{"__name__":"up","job":"a"},"values":[[1700000000,"1.5"],[1700000000.25,"-Inf"]]}"#;
    let Fast::Done(got, len) = fast_series(series, 0) else {
        panic!("the plain form took the slow path");
    };
    assert_eq!(len, series.len());
    assert_eq!(got.labels.to_string(), r#"up{job="a"}"#);
    assert_eq!(
        got.samples,
        [
            Sample::new(1_700_000_000_000, 1.5),
            Sample::new(1_700_000_000_250, f64::NEG_INFINITY)
        ]
    );
    for cut in 0..series.len() {
        assert!(
            matches!(fast_series(&series[..cut], 0), Fast::Incomplete),
            "{cut}"
        );
    }
    for other in [
        &br#"{"metric":{"a\"":"b"}}"#[..],
        br#"{"values":[[1,2]]}"#,
        br#"{"values":[[1e3,"2"]]}"#,
        br#"{"extra":1}"#,
    ] {
        assert!(matches!(fast_series(other, 0), Fast::Other));
    }
}

#[test]
fn a_consumer_that_hangs_up_stops_the_reading() {
    let body =
        br#"{"status":"success","data":{"result":[{"values":[[1,"1"]]},{"values":[[2,"2"]]}]}}"#;
    let mut seen = 0;
    let result = read_answer(&body[..], |_| {
        seen += 1;
        false
    });
    assert!(matches!(result, Err(ScanError::Stopped)));
    assert_eq!(seen, 1);
}

#[test]
fn a_series_longer_than_many_windows_is_read_whole() {
    let points: Vec<String> = (0..200_000)
        .map(|i| format!("[{},\"{}.5\"]", 1_700_000_000 + i * 15, i))
        .collect();
    let body = format!(
        "{{\"status\":\"success\",\"data\":{{\"resultType\":\"matrix\",\"result\":[{{\"metric\":{{\"job\":\"x\"}},\"values\":[{}]}}]}}}}",
        points.join(",")
    );
    let got = read_chunked(body.as_bytes(), 1000).unwrap();
    assert_eq!(got[0].samples.len(), 200_000);
    assert_eq!(
        got[0].samples[199_999],
        Sample::new(1_702_999_985_000, 199_999.5)
    );
}

fn label_sets(body: &[u8], chunk: usize) -> Result<Vec<String>, ScanError> {
    let mut out = vec![];
    read_label_sets(Chunked { rest: body, chunk }, |labels| {
        out.push(labels.to_string());
        true
    })?;
    Ok(out)
}

#[test]
fn series_answers_give_their_label_sets_in_order() {
    let body = br#"{"data":[{"__name__":"up","job":"a\"b"},{},{"x":"1"}],"status":"success"}"#;
    for chunk in [1, 7, 1024] {
        assert_eq!(
            label_sets(body, chunk).unwrap(),
            [r#"up{job="a\"b"}"#, "{}", r#"{x="1"}"#]
        );
    }
    assert!(label_sets(br#"{"status":"success","data":[]}"#, 3)
        .unwrap()
        .is_empty());
    let mut seen = 0;
    let stopped = read_label_sets(&body[..], |_| {
        seen += 1;
        seen < 2
    });
    assert!(matches!(stopped, Err(ScanError::Stopped)));
    assert_eq!(seen, 2);
}

#[test]
fn malformed_series_answers_are_errors() {
    for body in [
        "",
        r#"{"status":"success","data":{}}"#,
        r#"{"status":"success","data":[{"a":1}]}"#,
        r#"{"status":"success","data":[{"a":"1"}"#,
        r#"{"status":"success","data":[{"a":"1"} {"b":"2"}]}"#,
        r#"{"status":"success","data":[]} x"#,
        r#"{"status":"error","errorType":"bad_data","error":"boom"}"#,
    ] {
        assert!(
            matches!(label_sets(body.as_bytes(), 4), Err(ScanError::Json(_))),
            "{body}"
        );
    }
    let Err(ScanError::Json(e)) = label_sets(br#"{"status":"error","error":"boom"}"#, 4) else {
        panic!("a status error was accepted");
    };
    assert_eq!(e, r#"the server answered status "error": boom"#);
}
