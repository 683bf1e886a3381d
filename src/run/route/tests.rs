use super::*;
use crate::model::Series;
use crate::model::{Labels, Sample};
use crate::run::config::RunConfig;
use crate::sink::destination::{self, DestinationConfig, DestinationKind, DestinationStatus};
use crate::transform::relabel::{Dialect, RelabelRules};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

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
    assert_eq!(d.flush_interval, Duration::from_millis(250));
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

fn series(name: &str) -> Series {
    Series::new(
        Labels::from_pairs([("__name__", name)]),
        vec![Sample::new(1, 1.0)],
    )
}

#[tokio::test]
async fn rule_results_get_no_second_set_of_external_labels() {
    let dir = tempfile::tempdir().unwrap();
    // The engine already added `cluster` (lowest priority); a global rule
    // removed it on purpose. The receiver path still adds it.
    let p = pipeline_with(
        dir.path(),
        "external_labels: {cluster: eu1}
destinations:
  - name: with_cluster
    url: http://127.0.0.1:1
    relabel_configs:
      - {action: keep, source_labels: [cluster], regex: eu1}",
    );
    p.route_results(crate::model::ExportBatch::received(vec![series(
        "from_rules",
    )]))
    .await
    .unwrap();
    p.route(vec![series("received")]).await.unwrap();
    let st = &p.statuses()[0];
    assert_eq!(
        st.pending_samples, 1,
        "only the received series has cluster"
    );
    assert_eq!(st.samples_dropped["relabel"], 1);
    p.shutdown(Duration::from_millis(10)).await;
}

#[tokio::test]
async fn reconfigure_keeps_rebuilds_adds_and_removes() {
    let dir = tempfile::tempdir().unwrap();
    let base = "destinations:
  - name: same
    url: http://127.0.0.1:1
  - name: changed
    url: http://127.0.0.1:2
  - name: gone
    url: http://127.0.0.1:3";
    let p = pipeline_with(dir.path(), base);
    // Not started: what is accepted stays queued, where we can count it.
    p.route(vec![series("a"), series("b")]).await.unwrap();
    let same_before = Arc::as_ptr(&p.destinations()[0]);
    let next = format!(
        "external_labels: {{dc: x}}
destinations:
  - name: same
    url: http://127.0.0.1:1
  - name: changed
    url: http://127.0.0.1:22
    relabel_configs:
      - {{action: drop, source_labels: [__name__], regex: a}}
  - name: new
    url: http://127.0.0.1:4
storage: {{path: {}}}
",
        dir.path().display()
    );
    let change = p.reconfigure(check(&next).unwrap()).await.unwrap();
    assert_eq!(
        change,
        RoutingChange {
            global: true,
            kept: vec!["same".into()],
            rebuilt: vec!["changed".into()],
            added: vec!["new".into()],
            removed: vec!["gone".into()],
        }
    );
    assert_eq!(Arc::as_ptr(&p.destinations()[0]), same_before);
    let st: HashMap<String, DestinationStatus> = p
        .statuses()
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
    assert_eq!(st.len(), 3);
    // The rebuilt destination reopened its queue: the data is still there,
    // and so are its counters.
    assert_eq!(st["changed"].pending_samples, 2);
    assert_eq!(st["changed"].samples_queued, 2);
    assert!(st["changed"].url.contains(":22/"), "{}", st["changed"].url);
    assert_eq!(st["new"].pending_samples, 0);
    // The removed destination's queue stays on disk.
    assert!(dir.path().join("gone").is_dir());

    // New settings apply to the next batch: the rebuilt one drops `a`, the
    // new one takes both, with the new external label.
    p.route(vec![series("a"), series("b")]).await.unwrap();
    let st: HashMap<String, DestinationStatus> = p
        .statuses()
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
    assert_eq!(st["changed"].pending_samples, 3);
    assert_eq!(st["new"].pending_samples, 2);
    assert_eq!(st["same"].pending_samples, 4);

    // The same config again changes nothing.
    let change = p.reconfigure(check(&next).unwrap()).await.unwrap();
    assert!(change.is_empty(), "{change:?}");
    assert_eq!(change.kept.len(), 3);
    p.shutdown(Duration::from_millis(10)).await;
    drop(p);

    // A removed destination that comes back finds its data.
    let back = Pipeline::open(
        check(&format!(
            "{base}\nstorage: {{path: {}}}\n",
            dir.path().display()
        ))
        .unwrap(),
    )
    .unwrap();
    let gone = back
        .statuses()
        .into_iter()
        .find(|s| s.name == "gone")
        .unwrap();
    assert_eq!(gone.pending_samples, 2);
    back.shutdown(Duration::from_millis(10)).await;
}

#[test]
fn dry_route_relabels_like_the_destinations() {
    let c = check(
        "external_labels: {cluster: eu1}
global_relabel_configs:
  - {action: drop, source_labels: [__name__], regex: junk}
destinations:
  - name: all
    url: http://127.0.0.1:1
    external_labels: {via: all}
  - name: only_a
    url: http://127.0.0.1:1
    relabel_configs:
      - {action: keep, source_labels: [__name__], regex: a}
storage: {path: /nonexistent}",
    )
    .unwrap();
    let out = dry_route(&c, vec![series("a"), series("b"), series("junk")]);
    assert_eq!(out[0].0, "all");
    let names: Vec<String> = out[0].1.iter().map(|s| s.labels.to_string()).collect();
    assert_eq!(names, [r#"a{via="all"}"#, r#"b{via="all"}"#]);
    let names: Vec<String> = out[1].1.iter().map(|s| s.labels.to_string()).collect();
    assert_eq!(names, ["a"]);
}

/// Issue 11, item 7: `relabel_dialect` globally and per destination; a
/// Prometheus user's `hashmod` sharding gives Prometheus' shard numbers.
#[test]
fn relabel_dialect_globally_and_per_destination() {
    let c = check(
        "relabel_dialect: prometheus
global_relabel_configs:
  - {action: hashmod, source_labels: [c], target_label: g, modulus: 1000}
destinations:
  - name: inherits
    url: http://127.0.0.1:1
    relabel_configs:
      - {action: hashmod, source_labels: [c], target_label: shard, modulus: 1000}
  - name: vmagent
    url: http://127.0.0.1:1
    relabel_dialect: victoriametrics
    relabel_configs:
      - {action: hashmod, source_labels: [c], target_label: shard, modulus: 1000}
storage: {path: /nonexistent}",
    )
    .unwrap();
    use crate::transform::relabel::Dialect;
    assert_eq!(c.global_relabel.dialect(), Dialect::Prometheus);
    assert_eq!(c.destinations[0].relabel.dialect(), Dialect::Prometheus);
    assert_eq!(
        c.destinations[1].relabel.dialect(),
        Dialect::VictoriaMetrics
    );
    let input = Series::new(
        Labels::from_pairs([("__name__", "m"), ("c", "baz")]),
        vec![Sample::new(0, 1.0)],
    );
    let out = dry_route(&c, vec![input]);
    // md5("baz") % 1000 = 976, Prometheus' own test vector.
    assert_eq!(out[0].1[0].labels.get("g"), Some("976"));
    assert_eq!(out[0].1[0].labels.get("shard"), Some("976"));
    assert_ne!(out[1].1[0].labels.get("shard"), Some("976"));
    let e = check("relabel_dialect: promql\ndestinations: []\n").unwrap_err();
    assert!(e[0].starts_with("run.yml:1"), "{e:?}");
}

#[test]
fn on_full_and_concurrency_are_checked() {
    let e = check(
        "destinations:
  - name: a
    url: http://127.0.0.1:1
    on_full: wait
    concurrency: 300
",
    )
    .unwrap_err()
    .join("\n");
    assert!(
        e.contains("run.yml:4: destinations[0].on_full: unknown on_full policy \"wait\": expected drop_oldest, drop_newest or block"),
        "{e}"
    );
    assert!(
        e.contains("destinations[0].concurrency: must be at most 256"),
        "{e}"
    );
    let c =
        check("destinations:\n  - {name: a, url: 'http://127.0.0.1:1', on_full: block}\n").unwrap();
    assert_eq!(c.destinations[0].on_full, destination::OnFullPolicy::Block);
}

/// A destination server that answers 204 to everything.
async fn accepting_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(|| async { axum::http::StatusCode::NO_CONTENT });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_blocking_destination_holds_results_and_the_other_destinations_wait_too() {
    let dir = tempfile::tempdir().unwrap();
    let url = accepting_server().await;
    let dest = |name: &str, on_full| {
        let mut d = DestinationConfig::new(
            name,
            DestinationKind::RemoteWrite,
            crate::client::ClientConfig {
                url: url.clone(),
                ..Default::default()
            },
            dir.path(),
        );
        d.on_full = on_full;
        d.max_disk_bytes = 4 << 10;
        d.concurrency = 1;
        d
    };
    let p = Arc::new(
        Pipeline::open(PipelineConfig {
            global_relabel: RelabelRules::empty(Dialect::default()),
            external_labels: Vec::new(),
            destinations: vec![
                dest("other", destination::OnFullPolicy::DropOldest),
                dest("blk", destination::OnFullPolicy::Block),
            ],
        })
        .unwrap(),
    );
    let batch = |i: usize| {
        (0..20)
            .map(|k| series(&format!("m{i}_{k}")))
            .collect::<Vec<_>>()
    };
    let mut routed = 0;
    let full = loop {
        assert!(routed < 1000, "4 KiB never filled up");
        match p.route(batch(routed)).await {
            Ok(()) => routed += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(full, RouteError::Full { .. }), "{full}");
    let st = p.statuses();
    assert_eq!(
        st[0].pending_samples, st[1].pending_samples,
        "the refused batch went nowhere"
    );
    assert_eq!(st[1].pending_samples, routed as u64 * 20);

    // The engine's seam holds the results until the destination has room.
    let held = {
        let p = Arc::clone(&p);
        tokio::spawn(async move {
            crate::run::results::ResultSink::export(
                &*p,
                crate::model::ExportBatch::received(batch(9999)),
            )
            .await
        })
    };
    p.start();
    tokio::time::timeout(Duration::from_secs(20), held)
        .await
        .expect("held results are taken once the destination drains")
        .unwrap()
        .unwrap();
    p.shutdown(Duration::from_secs(5)).await;
    let st = p.statuses();
    assert_eq!(
        st[1].samples_sent + st[1].pending_samples,
        (routed as u64 + 1) * 20,
        "every routed sample, the held batch included, reached the blocking destination"
    );
    assert_eq!(st[1].samples_dropped.values().sum::<u64>(), 0);
}
