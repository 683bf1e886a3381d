//! Property tests for every parser that takes outside input: series
//! selectors and label sets, relabel configs, rule files, Go templates,
//! durations, times and ranges, remote-write and VM-import bodies, bundle
//! lines, sizes. Each property holds for any input: no panic, no stack
//! overflow (the parsers run on a 2 MiB thread, a tokio worker's stack),
//! bounded results, and round trips where a format has a writer.
//!
//! Bounded in time: 64 cases per property unless `PROPTEST_CASES` says
//! otherwise (CI runs the default; a deeper local run sets e.g. 5000). A
//! failure found here becomes a named regression test in `regressions`
//! below, never a `proptest-regressions` file.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use spillway::model::range::{Grid, RangeDefaults, RangeInput, Windows, FIELDS, MAX_WINDOWS};
use spillway::model::selector::parse_label_set;
use spillway::model::size::{format_size, parse_size};
use spillway::model::time::{
    format_duration, parse_duration, parse_timestamp_ms, TimeArg, MAX_DURATION, MAX_TIMESTAMP_MS,
    MIN_TIMESTAMP_MS,
};
use spillway::model::{Labels, Sample, Selector, Series};

fn config() -> Config {
    let mut c = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = 64;
    }
    c.failure_persistence = None;
    c
}

/// Runs `property` on a 2 MiB thread, so a recursion the parsers fail to
/// bound aborts the test binary instead of passing on the main thread's 8 MiB.
fn check<S: Strategy + Send + 'static>(
    strategy: S,
    property: fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let mut runner = TestRunner::new(config());
            if let Err(e) = runner.run(&strategy, property) {
                panic!("{e}");
            }
        })
        .unwrap()
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
}

/// Text built from the pieces a parser cares about, so random input
/// reaches past the first character check.
fn soup(pieces: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(pieces), 0..max).prop_map(|v| v.concat())
}

fn ident() -> impl Strategy<Value = String> {
    "[a-zA-Z_][a-zA-Z0-9_]{0,8}"
}

#[test]
fn selectors_never_panic() {
    const PIECES: &[&str] = &[
        "{", "}", "up", "a", "=", "!=", "=~", "!~", "\"", "'", "`", "\\", "\\q", "\\x4", "\\u00e9",
        ",", " or ", "(", ")", ".*", "[", "é", "\n", "__name__",
    ];
    check(prop_oneof![soup(PIECES, 40), any::<String>()], |text| {
        let _ = Selector::parse(&text);
        let _ = parse_label_set(&text);
        Ok(())
    });
}

#[test]
fn label_sets_round_trip() {
    check(
        (
            ident(),
            prop::collection::btree_map(ident(), any::<String>(), 0..6),
        ),
        |(name, pairs)| {
            let mut labels = Labels::from_pairs(pairs.iter().filter(|(_, v)| !v.is_empty()));
            labels.set("__name__", name);
            let text = labels.to_string();
            let back =
                parse_label_set(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            prop_assert_eq!(back, labels);
            Ok(())
        },
    );
}

#[test]
fn durations_are_bounded_and_round_trip() {
    const PIECES: &[&str] = &[
        "1",
        "0",
        "9",
        "99999999999",
        ".",
        "5",
        "ms",
        "s",
        "m",
        "h",
        "d",
        "w",
        "y",
        "e3",
        "-",
        "+",
        " ",
        "x",
    ];
    check(prop_oneof![soup(PIECES, 12), any::<String>()], |text| {
        if let Ok(d) = parse_duration(&text) {
            prop_assert!(d <= MAX_DURATION);
            let again = parse_duration(&format_duration(d)).unwrap();
            prop_assert_eq!(again, d);
        }
        Ok(())
    });
}

#[test]
fn times_and_ranges_stay_within_1970_and_9999() {
    const PIECES: &[&str] = &[
        "now",
        "-",
        "now-",
        "1",
        "0",
        "9",
        "99999999999999999999",
        ".",
        "e",
        "y",
        "h",
        "ms",
        "2024-05-01T00:00:00Z",
        "T",
        ":",
        "Z",
        "+01:00",
    ];
    let text = || prop_oneof![soup(PIECES, 8), any::<String>()];
    check(
        (
            prop::option::of(text()),
            prop::option::of(text()),
            prop::option::of(text()),
            MIN_TIMESTAMP_MS..=MAX_TIMESTAMP_MS,
        ),
        |(since, from, to, now)| {
            for t in [&from, &to].into_iter().flatten() {
                if let Ok(ms) = parse_timestamp_ms(t) {
                    prop_assert!((MIN_TIMESTAMP_MS..=MAX_TIMESTAMP_MS).contains(&ms));
                }
                if let Ok(ms) = TimeArg::parse(t).and_then(|a| a.resolve(now)) {
                    prop_assert!((MIN_TIMESTAMP_MS..=MAX_TIMESTAMP_MS).contains(&ms));
                }
            }
            let input = RangeInput { since, from, to };
            if let Ok(r) = input.resolve(&FIELDS, &RangeDefaults::default(), now) {
                prop_assert!(MIN_TIMESTAMP_MS <= r.from_ms && r.from_ms <= r.to_ms);
                prop_assert!(r.to_ms <= MAX_TIMESTAMP_MS);
            }
            Ok(())
        },
    );
}

#[test]
fn windows_cover_every_millisecond_once() {
    check(
        (
            -1_000_000i64..1_000_000,
            0i64..100_000,
            1i64..50_000,
            1i64..5_000,
        ),
        |(from, len, window, align)| {
            let to = from + len;
            let w = Windows::aligned(from, to, window, align);
            let planned = w.remaining();
            let got: Vec<(i64, i64)> = w.collect();
            prop_assert_eq!(got.len() as u64, planned);
            let mut next = from;
            for (s, e) in &got {
                prop_assert_eq!(*s, next);
                prop_assert!(s <= e && *e <= to);
                next = e + 1;
            }
            prop_assert_eq!(next, to + 1);
            Ok(())
        },
    );
}

#[test]
fn grid_windows_cover_the_grid_once() {
    check(
        (any::<i64>(), 0i64..1_000_000, 1i64..10_000, 1u64..1_000),
        |(from, len, step, points)| {
            let to = from.saturating_add(len);
            let Some(g) = Grid::inward(from, to, step) else {
                return Ok(());
            };
            let w = g.windows(points);
            if w.remaining() > MAX_WINDOWS {
                return Ok(());
            }
            let mut expected = g.first_ms;
            for (s, e) in w {
                prop_assert_eq!(s, expected);
                prop_assert!(e <= g.last_ms && (e - s) / step < points as i64);
                expected = e + step;
            }
            prop_assert_eq!(expected, g.last_ms + step);
            Ok(())
        },
    );
}

#[test]
fn sizes_round_trip() {
    const PIECES: &[&str] = &[
        "1",
        "0",
        "5",
        "99999999999999999999",
        ".",
        " ",
        "B",
        "KB",
        "KiB",
        "MiB",
        "GiB",
        "TiB",
        "x",
    ];
    check(prop_oneof![soup(PIECES, 6), any::<String>()], |text| {
        if let Ok(n) = parse_size(&text) {
            prop_assert_eq!(parse_size(&format_size(n)).unwrap(), n);
        }
        Ok(())
    });
}

#[test]
fn templates_never_overflow_the_stack() {
    const PIECES: &[&str] = &[
        "{{",
        "}}",
        "(",
        ")",
        " ",
        "if",
        "else",
        "end",
        "range",
        "with",
        "define \"t\"",
        "template \"t\" .",
        "block \"b\" .",
        "$labels.a",
        "$value",
        ".Labels",
        "printf \"%s\"",
        "\"",
        "`",
        "'",
        "|",
        "/*",
        "*/",
        "humanize",
        "1",
        "-",
        "x",
    ];
    check(soup(PIECES, 200), |text| {
        let _ = spillway::run::rules::check_template(&text);
        let labels = std::collections::BTreeMap::from([("l".to_string(), text)]);
        let _ = spillway::run::rules::render_labels(&labels, &Labels::new(), 1.0, "up");
        Ok(())
    });
}

#[test]
fn deep_templates_are_refused_not_crashed() {
    check((0usize..3, 33usize..3000), |(shape, n)| {
        let text = match shape {
            0 => format!("{{{{ {}1{} }}}}", "(".repeat(n), ")".repeat(n)),
            1 => format!("{}x{}", "{{ if 1 }}".repeat(n), "{{ end }}".repeat(n)),
            _ => format!("{{{{ {}", "(".repeat(n)),
        };
        prop_assert!(spillway::run::rules::check_template(&text).is_err());
        Ok(())
    });
}

#[test]
fn rule_files_never_panic() {
    const PIECES: &[&str] = &[
        "groups:\n",
        "- name: g\n",
        "  interval: ",
        "10000y",
        "1m",
        "-1s",
        "\n",
        "  rules:\n",
        "  - record: r\n",
        "  - alert: A\n",
        "    expr: up\n",
        "    for: 5m\n",
        "    labels:\n",
        "      x: '{{ (((1))) }}'\n",
        "      y: \"{{ $value }}\"\n",
        "  limit: 99999999999999999999\n",
        "  concurrency: -1\n",
        "---\n",
        "[",
        "{",
        "]",
        "}",
        "&a ",
        "*a ",
        "<<: *a\n",
        ":",
        "#",
    ];
    check(soup(PIECES, 60), |text| {
        let _ = spillway::run::rules::load_str("p.yml", &text, &Default::default());
        Ok(())
    });
}

#[test]
fn relabel_configs_never_panic() {
    const PIECES: &[&str] = &[
        "- ",
        "action: ",
        "replace",
        "keep",
        "hashmod",
        "labelmap",
        "drop_metrics",
        "\n",
        "  ",
        "source_labels: [a, b]",
        "target_label: ",
        "\"x\\ny\"",
        "t",
        "regex: ",
        "\"(.*\"",
        "\"((((a))))\"",
        "modulus: ",
        "0",
        "18446744073709551616",
        "if: ",
        "'{a=\"b\\q\"}'",
        "'up'",
        "replacement: $1",
        "[",
        "]",
        "{",
        "}",
        ":",
    ];
    check(soup(PIECES, 40), |text| {
        let _ = spillway::transform::relabel::RelabelRules::from_yaml(
            &text,
            "p.yml",
            Default::default(),
        );
        Ok(())
    });
}

fn series() -> impl Strategy<Value = Series> {
    (
        ident(),
        prop::collection::btree_map(ident(), "\\PC{1,12}", 0..4),
        prop::collection::vec(
            (
                0i64..4_000_000_000_000,
                prop::num::f64::NORMAL | prop::num::f64::ZERO,
            ),
            1..8,
        ),
    )
        .prop_map(|(name, pairs, samples)| {
            let mut labels = Labels::from_pairs(pairs);
            labels.set("__name__", name);
            let mut samples: Vec<Sample> = samples
                .into_iter()
                .map(|(t, v)| Sample::new(t, v))
                .collect();
            samples.sort_by_key(|s| s.timestamp_ms);
            Series::new(labels, samples)
        })
}

#[test]
fn remote_write_bodies_never_panic_and_round_trip() {
    check(prop::collection::vec(any::<u8>(), 0..2048), |body| {
        let _ = spillway::codec::decode_write_request(&body);
        let _ = spillway::codec::decode_write_request(
            &snap::raw::Encoder::new().compress_vec(&body).unwrap(),
        );
        Ok(())
    });
    check(prop::collection::vec(series(), 1..4), |batch| {
        let mut buf = Vec::new();
        spillway::codec::encode_write_request(&batch, &mut buf).unwrap();
        let back = spillway::codec::decode_write_request(&buf).unwrap();
        prop_assert_eq!(back.len(), batch.len());
        for (a, b) in back.iter().zip(&batch) {
            prop_assert_eq!(&a.labels, &b.labels);
            prop_assert_eq!(a.samples.len(), b.samples.len());
        }
        Ok(())
    });
}

#[test]
fn vm_import_and_bundle_lines_never_panic_and_round_trip() {
    const PIECES: &[&str] = &[
        "{",
        "}",
        "\"metric\":",
        "\"values\":",
        "\"timestamps\":",
        "[",
        "]",
        ",",
        "1",
        "1e999",
        "-",
        "null",
        "NaN",
        "\"Inf\"",
        "\"a\"",
        ":",
        "\"__name__\"",
        "9223372036854775808",
        "\\u0000",
    ];
    check(prop_oneof![soup(PIECES, 60), any::<String>()], |text| {
        let _ = spillway::codec::parse_vm_json_line(text.as_bytes());
        let _ = spillway::bundle::line::scan_line(text.as_bytes());
        let _ = spillway::bundle::line::scan_line_fast(text.as_bytes());
        Ok(())
    });
    check(series(), |s| {
        let mut line = Vec::new();
        spillway::codec::write_vm_json_line(&s, &mut line);
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let back = spillway::codec::parse_vm_json_line(text).unwrap();
        prop_assert_eq!(&back.labels, &s.labels);
        prop_assert_eq!(back.samples.len(), s.samples.len());
        let scanned = spillway::bundle::line::scan_line(text).unwrap();
        prop_assert_eq!(scanned.samples, s.samples.len());
        Ok(())
    });
}

/// JSON nested past serde_json's recursion limit (128) is an error in every
/// JSON reader, never a stack overflow: the limit is on in the whole build.
#[test]
fn json_nesting_is_bounded_everywhere() {
    check(200usize..20_000, |depth| {
        let deep = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        prop_assert!(serde_json::from_str::<serde_json::Value>(&deep).is_err());
        let line = format!("{{\"metric\":{{\"a\":{deep}}},\"values\":[1],\"timestamps\":[1]}}");
        prop_assert!(spillway::codec::parse_vm_json_line(line.as_bytes()).is_err());
        // The bundle scanner only balances brackets; the labels parser refuses.
        if let Ok(scanned) = spillway::bundle::line::scan_line(line.as_bytes()) {
            prop_assert!(spillway::bundle::line::parse_metric(scanned.metric).is_err());
        }
        Ok(())
    });
}

/// Each crash or wrong answer a property found, kept as a named test.
mod regressions {
    use super::*;

    /// A bare number of seconds beyond `Duration`'s range panicked in
    /// `Duration::from_secs_f64`.
    #[test]
    fn huge_float_duration() {
        assert!(parse_duration("1e30").is_err());
        assert!(parse_duration("99999999999999999999999").is_err());
    }

    /// `-9223372036854775808` as a time was taken as "now minus a duration
    /// that wrapped".
    #[test]
    fn min_i64_time() {
        assert!(TimeArg::parse("-9223372036854775808").is_err());
    }
}
