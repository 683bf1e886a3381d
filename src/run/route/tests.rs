use super::*;
use crate::model::{Labels, Sample};

fn check(text: &str) -> Result<PipelineConfig, Vec<String>> {
    let loaded = RunConfig::parse(text, "run.yml").map_err(|e| vec![e])?;
    PipelineConfig::check(&loaded)
}

#[test]
fn defaults() {
    let c = check(
        "destinations:\n  - name: a\n    url: http://127.0.0.1:8428/api/v1/write\nstorage: {path: /tmp/q}\n",
    )
    .unwrap();
    let d = &c.destinations[0];
    assert_eq!(d.kind, DestinationKind::RemoteWrite);
    assert_eq!(d.max_batch_samples, 10_000);
    assert_eq!(d.flush_interval, Duration::from_secs(1));
    assert_eq!(d.concurrency, destination::default_concurrency());
    assert_eq!(d.max_disk_bytes, 1 << 30);
    assert_eq!(d.queue_dir, PathBuf::from("/tmp/q/a"));
}

#[test]
fn every_problem_is_reported_with_its_line() {
    let text = "\
global_relabel_configs:
  - action: keep
    regex: '('
external_labels: {'bad-name': x}
destinations:
  - name: a
    url: http://127.0.0.1:1
    max_disk_bytes: lots
    flush_interval: soon
  - name: a
    url: http://127.0.0.1:2
  - name: b
    type: carrier_pigeon
  - name: c
    url: http://127.0.0.1:3
    concurrency: 0
    max_batch_samples: 0
    relabel_configs:
      - action: hashmod
        source_labels: [x]
        target_label: y
  - name: d/1
    url: http://127.0.0.1:4
    max_disk_bytes: 10KiB
  - name: d_1
    url: 'not a url'
";
    let problems = check(text).unwrap_err();
    let all = problems.join("\n");
    let expect = [
        "run.yml:2: global_relabel_configs[0].source_labels: `source_labels` (or `if`) is required",
        "run.yml:3: global_relabel_configs[0].regex:",
        "run.yml: external_labels: \"bad-name\" is not a valid label name",
        "run.yml:8: destinations[0].max_disk_bytes: invalid size \"lots\"",
        "run.yml:9: destinations[0].flush_interval:",
        "run.yml:10: destinations[1].name: \"a\" is already the name of destinations[0]",
        "run.yml:13: destinations[2].type: unknown destination type \"carrier_pigeon\"",
        "run.yml:12: destinations[2].url is missing",
        "run.yml:16: destinations[3].concurrency: must be at least 1",
        "run.yml:17: destinations[3].max_batch_samples: must be at least 1",
        "run.yml:19: destinations[3].relabel_configs[0]",
        "run.yml:24: destinations[4].max_disk_bytes: 10KiB is too small; give at least 1MiB",
        "run.yml:25: destinations[5].name: \"d_1\" and destinations[4] would share the queue directory",
        "run.yml:26: destinations[5].url: invalid client configuration: invalid URL",
    ];
    for e in expect {
        assert!(all.contains(e), "missing {e:?} in:\n{all}");
    }
    assert_eq!(problems.len(), expect.len(), "{all}");
}

#[test]
fn no_destinations_is_an_error() {
    let e = check("external_labels: {a: b}\n").unwrap_err();
    assert!(e[0].contains("destinations: none configured"), "{e:?}");
}

fn pipeline_with(dir: &std::path::Path, text: &str) -> Pipeline {
    let text = format!("{text}\nstorage: {{path: {}}}\n", dir.display());
    Pipeline::open(check(&text).unwrap()).unwrap()
}

#[tokio::test]
async fn route_applies_global_then_destination_rules() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline_with(
        dir.path(),
        "external_labels: {cluster: eu1}
global_relabel_configs:
  - {action: drop, source_labels: [__name__], regex: junk}
destinations:
  - name: all
    url: http://127.0.0.1:1
  - name: only_eu2
    url: http://127.0.0.1:1
    relabel_configs:
      - {action: keep, source_labels: [cluster], regex: eu2}",
    );
    let s = |name: &str, cluster: Option<&str>| {
        let mut l = Labels::from_pairs([("__name__", name)]);
        if let Some(c) = cluster {
            l.set("cluster", c);
        }
        Series::new(l, vec![Sample::new(1, 1.0)])
    };
    p.route(vec![s("a", None), s("junk", None), s("b", Some("eu2"))])
        .await
        .unwrap();
    let st = p.statuses();
    assert_eq!(st[0].pending_samples, 2);
    // `a` got cluster=eu1 (external label), `b` kept its own eu2.
    assert_eq!(st[1].pending_samples, 1);
    assert_eq!(st[1].samples_dropped["relabel"], 1);
    assert_eq!(p.relabel_dropped.load(Ordering::Relaxed), 1);
    p.shutdown(Duration::from_millis(10)).await;
    assert!(matches!(
        p.route(vec![s("a", None)]).await,
        Err(RouteError::ShuttingDown)
    ));
}
