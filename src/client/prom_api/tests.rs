use super::*;
use crate::model::Sample;

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
