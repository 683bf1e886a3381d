//! Sharding `spillway run` across members (`--cluster.*`), against real
//! VictoriaMetrics servers: a source holding `temp{sensor}` and destinations
//! receiving what the rules export. Groups evaluate every second with no
//! evaluation delay (the sources run with `-search.latencyOffset=0s`).
//!
//! - three members together deliver exactly what one process alone
//!   delivers, over the window all of them ran (differential);
//! - with replication factor 2, killing one member (SIGKILL) loses no
//!   evaluation timestamp of any group, and the destination's
//!   `-dedup.minScrapeInterval` collapses the replicas' identical samples;
//! - changing `cluster.members_count` and reloading (`/-/reload`, or the
//!   `--config.check-interval` watcher) moves the groups to their new owners;
//! - `spillway replay` evaluates only the groups its member owns.

mod common;

use common::{post_status, series_points, spillway, vm_line, wait_for, SpillwayRun, Vm};
use spillway::run::cluster::{group_key, Membership};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

const GROUPS: usize = 9;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `temp{sensor="s<i>"}` once a second from 10 minutes ago to 3 minutes
/// ahead; sensor i is hot (70) except every third 4-second stretch, so
/// breaches start and end (stale markers) all along.
fn source() -> Vm {
    let vm = Vm::start();
    let now = now_ms();
    let mut lines = String::new();
    for i in 0..GROUPS {
        let samples: Vec<(i64, f64)> = ((now - 600_000) / 1000..=(now + 180_000) / 1000)
            .map(|t| {
                let hot = (t / 4 + i as i64) % 3 != 0;
                (t * 1000, if hot { 70.0 } else { 20.0 })
            })
            .collect();
        let sensor = format!("s{i}");
        lines.push_str(&vm_line(
            &[("__name__", "temp"), ("sensor", &sensor)],
            &samples,
        ));
        lines.push('\n');
    }
    vm.import(&lines);
    vm
}

/// One group per sensor, `hot_<i>`, in `rules/hot.yml`.
fn rules(always: bool) -> String {
    let threshold = if always { 0 } else { 50 };
    let mut out = String::from("groups:\n");
    for i in 0..GROUPS {
        out.push_str(&format!(
            "- name: g{i}\n  interval: 1s\n  rules:\n  - record: hot_{i}\n    expr: temp{{sensor=\"s{i}\"}} > {threshold}\n"
        ));
    }
    out
}

fn config(source: &Vm, dest: &Vm, cluster: &str) -> String {
    format!(
        "datasource: {{url: '{}', timeout: 5s}}
rule_files: ['rules/*.yml']
evaluation: {{eval_delay: 0s}}
storage: {{path: '{{dir}}/queues'}}
{cluster}
destinations:
  - name: dest
    url: {}/api/v1/write
    flush_interval: 200ms
",
        source.url(),
        dest.url()
    )
}

fn member(source: &Vm, dest: &Vm, cluster: &str, rules_text: &str, flags: &[&str]) -> SpillwayRun {
    SpillwayRun::start_files(
        &[
            ("run.yml", &config(source, dest, cluster)),
            ("rules/hot.yml", rules_text),
        ],
        flags,
    )
}

/// Group names the member says it evaluates, from `/api/v1/rules`.
fn evaluated(sp: &SpillwayRun) -> BTreeSet<String> {
    sp.rules()["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap().to_string())
        .collect()
}

/// What the library says member `i` of `n` (replication `r`) owns.
fn expected_owned(n: u32, i: u32, r: u32) -> BTreeSet<String> {
    let m = Membership {
        members_count: n,
        member_num: i,
        replication_factor: r,
    };
    (0..GROUPS)
        .map(|g| format!("g{g}"))
        .filter(|name| m.owns(&group_key(Path::new(""), "rules/hot.yml", name)))
        .collect()
}

/// Points of `hot_*` at the destination with timestamps in `[from, to]`.
fn points_between(vm: &Vm, from: i64, to: i64) -> BTreeMap<String, Vec<(i64, String)>> {
    series_points(vm, r#"{__name__=~"hot_.*"}"#)
        .into_iter()
        .map(|(k, v)| {
            let kept: Vec<(i64, String)> = v
                .into_iter()
                .filter(|(t, _)| *t >= from && *t <= to)
                .collect();
            (k, kept)
        })
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

fn stop(sp: &mut SpillwayRun) {
    let code = sp.server.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0), "log:\n{}", sp.server.log());
}

#[test]
fn three_members_deliver_what_one_delivers() {
    let src = source();
    let (alone, together) = (Vm::start(), Vm::start());
    let text = rules(false);
    let mut single = member(&src, &alone, "", &text, &[]);
    let mut members: Vec<SpillwayRun> = (0..3)
        .map(|i| {
            let num = format!("spillway-{i}");
            member(
                &src,
                &together,
                "",
                &text,
                &["--cluster.members-count", "3", "--cluster.member-num", &num],
            )
        })
        .collect();
    let started = now_ms();

    // Ownership: a partition of the groups, as the library computes it.
    let mut all = BTreeSet::new();
    let mut owned_metric = 0.0;
    for (i, m) in members.iter().enumerate() {
        let got = evaluated(m);
        assert_eq!(got, expected_owned(3, i as u32, 1), "member {i}");
        assert!(
            !got.is_empty(),
            "member {i} owns nothing: the test would not shard"
        );
        let cluster = &m.rules()["data"]["cluster"];
        assert_eq!(cluster["member_num"], i);
        assert_eq!(
            cluster["groups_owned"].as_array().unwrap().len()
                + cluster["groups_not_owned"].as_array().unwrap().len(),
            GROUPS
        );
        for g in &got {
            assert!(all.insert(g.clone()), "{g} owned twice");
        }
        owned_metric += m.metric("spillway_cluster_groups_owned", &[]);
    }
    assert_eq!(all.len(), GROUPS);
    assert_eq!(owned_metric, GROUPS as f64);
    assert_eq!(evaluated(&single).len(), GROUPS);

    // Let every process evaluate a dozen timestamps, then stop them in order.
    wait_for("12 s of evaluations", Duration::from_secs(30), || {
        now_ms() > started + 12_000
    });
    let stopped = now_ms();
    stop(&mut single);
    for m in &mut members {
        stop(m);
    }
    // The window every process evaluated whole: away from starts and stops.
    let (from, to) = (started + 2_000, stopped - 2_000);
    let one = points_between(&alone, from, to);
    let three = points_between(&together, from, to);
    let names: BTreeSet<&str> = one.keys().map(|k| &k[..k.find('{').unwrap()]).collect();
    assert_eq!(
        names.len(),
        GROUPS,
        "every rule exported in the window: {names:?}"
    );
    assert!(
        one.values().flatten().any(|(_, v)| v == "stale"),
        "the window holds breach ends too"
    );
    assert_eq!(
        one, three,
        "three members differ from one over {from}..{to}"
    );
}

#[test]
fn replication_factor_two_loses_no_timestamp_when_a_member_dies() {
    let src = source();
    let dest = Vm::start_with(&["-dedup.minScrapeInterval=1s"]);
    let text = rules(true);
    let mut members: Vec<SpillwayRun> = (0..3)
        .map(|i| {
            let num = i.to_string();
            member(
                &src,
                &dest,
                "cluster: {members_count: 3, replication_factor: 2}",
                &text,
                &["--cluster.member-num", &num],
            )
        })
        .collect();
    let started = now_ms();
    for (i, m) in members.iter().enumerate() {
        assert_eq!(evaluated(m), expected_owned(3, i as u32, 2), "member {i}");
    }
    let victim = 1;
    assert!(!evaluated(&members[victim]).is_empty());

    wait_for("5 s of evaluations", Duration::from_secs(30), || {
        now_ms() > started + 5_000
    });
    members[victim].server.stop(); // SIGKILL
    let killed = now_ms();
    wait_for("8 s more", Duration::from_secs(30), || {
        now_ms() > killed + 8_000
    });
    let stopped = now_ms();
    for (i, m) in members.iter_mut().enumerate() {
        if i != victim {
            stop(m);
        }
    }

    let (from, to) = (started + 2_000, stopped - 2_000);
    let got = points_between(&dest, from, to);
    assert_eq!(got.len(), GROUPS, "{:?}", got.keys().collect::<Vec<_>>());
    let expected: Vec<i64> = ((from + 999) / 1000..=to / 1000)
        .map(|s| s * 1000)
        .collect();
    for (series, points) in &got {
        let ts: Vec<i64> = points.iter().map(|p| p.0).collect();
        assert_eq!(ts, expected, "{series}: a timestamp is missing");
    }
    // Deduplication: every timestamp once per series in the raw export.
    for line in dest.export_lines(r#"{__name__=~"hot_.*"}"#) {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let ts: Vec<i64> = serde_json::from_value(v["timestamps"].clone()).unwrap();
        let distinct: BTreeSet<i64> = ts.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            ts.len(),
            "duplicates left by dedup in {line}"
        );
    }
}

#[test]
fn changing_members_count_rebalances_on_reload() {
    let src = source();
    let dest = Vm::start();
    let text = rules(true);
    let two = "cluster: {members_count: 2}";
    // Member 0 is reloaded over HTTP, member 1 by its config watcher.
    let m0 = member(&src, &dest, two, &text, &["--cluster.member-num", "0"]);
    let m1 = member(
        &src,
        &dest,
        two,
        &text,
        &[
            "--cluster.member-num",
            "1",
            "--config.check-interval",
            "300ms",
        ],
    );
    assert_eq!(evaluated(&m0), expected_owned(2, 0, 1));
    assert_eq!(evaluated(&m1), expected_owned(2, 1, 1));

    let three = "cluster: {members_count: 3}";
    for m in [&m0, &m1] {
        m.write(&[("run.yml", &config(&src, &dest, three))]);
    }
    let (code, body) = post_status(&format!("{}/-/reload", m0.url()), b"");
    assert_eq!(code, 200, "{body}");
    let moved_away: Vec<String> = expected_owned(2, 0, 1)
        .difference(&expected_owned(3, 0, 1))
        .cloned()
        .collect();
    for g in &moved_away {
        assert!(
            body.contains(&format!("hot.yml: {g}")),
            "{g} not in:\n{body}"
        );
    }
    let m2 = member(&src, &dest, three, &text, &["--cluster.member-num", "2"]);
    wait_for(
        "member 1 to pick up the new config",
        Duration::from_secs(20),
        // The groups switch before the cluster gauges: both are waited for.
        || {
            evaluated(&m1) == expected_owned(3, 1, 1)
                && m1.metric("spillway_cluster_members_count", &[]) == 3.0
        },
    );
    let mut all = BTreeSet::new();
    for (i, m) in [&m0, &m1, &m2].into_iter().enumerate() {
        let got = evaluated(m);
        assert_eq!(
            got,
            expected_owned(3, i as u32, 1),
            "member {i} after the reload"
        );
        assert_eq!(m.metric("spillway_cluster_members_count", &[]), 3.0);
        all.extend(got);
    }
    assert_eq!(all.len(), GROUPS);
    // Going from 2 to 3 members moves groups only to the new member.
    for i in 0..2 {
        assert!(expected_owned(3, i, 1).is_subset(&expected_owned(2, i, 1)));
    }
    // The new member evaluates and delivers its groups.
    let first = expected_owned(3, 2, 1)
        .into_iter()
        .next()
        .expect("member 2 owns a group");
    let record = first.replace('g', "hot_");
    wait_for(
        "member 2's breaches at the destination",
        Duration::from_secs(20),
        || dest.series_count(&format!("{{__name__=\"{record}\"}}")) > 0,
    );
}

#[test]
fn replay_evaluates_only_the_groups_its_member_owns() {
    let src = source();
    let dest = Vm::start();
    let dir = tempfile::tempdir().unwrap();
    let run_yml = config(&src, &dest, "cluster: {members_count: 3}")
        .replace("{dir}", &dir.path().display().to_string());
    common::write_files(
        dir.path(),
        &[("run.yml", &run_yml), ("rules/hot.yml", &rules(true))],
    );
    let cfg = dir.path().join("run.yml").display().to_string();
    let out = spillway(&[
        "replay",
        "-c",
        &cfg,
        "--from",
        "now-2m",
        "--to",
        "now-1m",
        "--cluster.member-num",
        "spillway-1",
    ]);
    out.assert_code(0);
    let owned = expected_owned(3, 1, 1);
    assert!(
        out.stdout().contains(&format!("{} group", owned.len())),
        "{}",
        out.describe()
    );
    dest.flush();
    let names: BTreeSet<String> = dest
        .export_lines(r#"{__name__=~"hot_.*"}"#)
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["metric"]["__name__"]
                .as_str()
                .unwrap()
                .replace("hot_", "g")
        })
        .collect();
    assert_eq!(names, owned);
    // A group of another member is refused by name, with its owners.
    let other = expected_owned(3, 0, 1).into_iter().next().unwrap();
    let refused = spillway(&[
        "replay",
        "-c",
        &cfg,
        "--from",
        "now-2m",
        "--group",
        &other,
        "--cluster.member-num",
        "1",
    ]);
    refused.assert_code(2);
    assert!(
        refused
            .stderr()
            .contains("is evaluated by cluster member(s)"),
        "{}",
        refused.describe()
    );
    // Without a member number the sharded config is refused, naming the flag.
    let missing = spillway(&["replay", "-c", &cfg, "--from", "now-2m"]);
    missing.assert_code(2);
    assert!(
        missing.stderr().contains("--cluster.member-num"),
        "{}",
        missing.describe()
    );
}
