//! From the raw YAML view (`config.rs`) to checked [`Group`]s, with vmalert's
//! rules and vmalert's wording.
//!
//! The checks and their order follow vmalert's `config.Group.Validate` and
//! `config.Rule.Validate` (messages keep vmalert's phrases such as "eval_offset
//! should be smaller than interval", so people who search for them find the
//! vmalert docs). Two differences, both deliberate: every problem of a file is
//! reported rather than the first of each group, and expressions are not
//! parsed (no Rust parser knows MetricsQL, Graphite or LogsQL; queries go to
//! the server as written). Each error carries file, line, group, rule and
//! field so the caller can print `file:line: group "g", rule "r": field "f": ...`.

use super::config::{Field, RawFile, RawGroup, RawRule, Text, TextMap, UnknownKey};
use super::template::check_template;
use super::{Group, Header, ItemName, LoadOptions, Rule, RuleError, RuleKind, RuleType};
use crate::model::time::{format_duration, format_go_duration_ms, parse_signed_duration_ms};
use regex::Regex;
use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;
use std::time::Duration;

/// Checks every group of one file. Group names must be unique within the
/// file (across its YAML documents), as in vmalert; other files may reuse them.
pub(crate) fn check_file(
    file: &str,
    docs: Vec<RawFile>,
    opts: &LoadOptions,
) -> (Vec<Group>, Vec<RuleError>) {
    let mut groups = Vec::new();
    let mut errors = Vec::new();
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut index = 0usize;
    for doc in docs {
        if !doc.unknown.is_empty() {
            errors.push(RuleError {
                line: Some(doc.unknown[0].line),
                field: Some(doc.unknown[0].name.clone()),
                message: format!(
                    "unknown fields in config: {}; allowed: {}",
                    names(&doc.unknown),
                    RawFile::KEYS.join(", ")
                ),
                ..RuleError::in_file(file)
            });
        }
        let Some(raw_groups) = doc.groups else {
            continue;
        };
        for raw in raw_groups.value {
            index += 1;
            let name = raw
                .name
                .as_ref()
                .map(|n| n.value.0.clone())
                .unwrap_or_default();
            let line = raw.line.max(raw_groups.line);
            if !name.is_empty() {
                if let Some(first) = seen.get(&name) {
                    errors.push(RuleError {
                        line: Some(line),
                        group: Some(ItemName::Named(name.clone())),
                        field: Some("name".into()),
                        message: format!(
                            "group name {name:?} duplicate in file; first defined at line {first}; group names must be unique within a file"
                        ),
                        ..RuleError::in_file(file)
                    });
                    continue;
                }
                seen.insert(name.clone(), line);
            }
            let mut ctx = Ctx {
                file,
                group: if name.is_empty() {
                    ItemName::Unnamed(index)
                } else {
                    ItemName::Named(name)
                },
                rule: None,
                errors: Vec::new(),
            };
            let group = check_group(&mut ctx, raw, line, opts);
            if ctx.errors.is_empty() {
                groups.push(group);
            }
            errors.append(&mut ctx.errors);
        }
    }
    (groups, errors)
}

/// Where we are, so every error names it.
struct Ctx<'a> {
    file: &'a str,
    group: ItemName,
    rule: Option<ItemName>,
    errors: Vec<RuleError>,
}

impl Ctx<'_> {
    fn error(&mut self, line: u64, field: Option<&str>, message: String) {
        self.errors.push(RuleError {
            file: self.file.to_string(),
            line: (line > 0).then_some(line),
            group: Some(self.group.clone()),
            rule: self.rule.clone(),
            field: field.map(str::to_string),
            message,
        });
    }

    fn field_error<T>(&mut self, f: &Field<T>, field: &str, message: String) {
        self.error(f.line, Some(field), message);
    }
}

fn names(keys: &[UnknownKey]) -> String {
    keys.iter()
        .map(|k| k.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Always returns a group, so that its rules are checked too; it is used
/// only when `ctx.errors` stayed empty.
fn check_group(ctx: &mut Ctx<'_>, raw: RawGroup, line: u64, opts: &LoadOptions) -> Group {
    let RawGroup {
        name,
        interval,
        eval_offset,
        eval_delay,
        eval_alignment,
        limit,
        rule_type,
        concurrency,
        labels,
        params,
        headers,
        notifier_headers,
        debug,
        rules,
        line: _,
        unknown,
    } = raw;

    if name.as_ref().is_none_or(|n| n.value.0.is_empty()) {
        let l = name.as_ref().map_or(line, |n| n.line);
        ctx.error(l, Some("name"), "group name must be set".into());
    }

    let rule_type = match &rule_type {
        None => opts.default_rule_type,
        Some(f) => match RuleType::parse(&f.value.0) {
            Some(t) => t,
            None => {
                let msg = format!(
                    "unknown datasource type {:?}, want prometheus, graphite or vlogs",
                    f.value.0
                );
                ctx.field_error(f, "type", msg);
                opts.default_rule_type
            }
        },
    };

    let interval_ms = signed_duration(ctx, &interval, "interval");
    if let Some(ms) = interval_ms.filter(|ms| *ms < 0) {
        let f = interval.as_ref().expect("parsed from a field");
        ctx.field_error(
            f,
            "interval",
            format!(
                "interval shouldn't be lower than 0; got {}",
                format_go_duration_ms(ms)
            ),
        );
    }
    let interval_ms = interval_ms.unwrap_or(0).max(0);

    // vmalert compares |eval_offset| with the interval (unset interval = 0),
    // so an offset needs an explicit interval. A negative offset counts back
    // from the end of the interval; we store it as the equivalent positive one.
    let offset_ms = signed_duration(ctx, &eval_offset, "eval_offset");
    let mut eval_offset_checked = None;
    if let (Some(ms), Some(f)) = (offset_ms, eval_offset.as_ref()) {
        if ms.unsigned_abs() > interval_ms.unsigned_abs() {
            let msg = format!(
                "eval_offset should be smaller than interval; now eval_offset: {}, interval: {}",
                format_go_duration_ms(ms),
                format_go_duration_ms(interval_ms)
            );
            ctx.field_error(f, "eval_offset", msg);
        } else {
            let positive = if ms < 0 { interval_ms + ms } else { ms };
            let positive = if interval_ms > 0 {
                positive % interval_ms
            } else {
                0
            };
            eval_offset_checked = Some(Duration::from_millis(positive as u64));
        }
    }

    let eval_delay = non_negative_duration(ctx, &eval_delay, "eval_delay");
    let eval_alignment = eval_alignment
        .as_ref()
        .and_then(|f| boolean(ctx, f, "eval_alignment"));

    let limit = match &limit {
        None => 0,
        Some(f) => match integer(ctx, f, "limit") {
            Some(n) if n < 0 => {
                ctx.field_error(
                    f,
                    "limit",
                    format!("invalid limit {n}, shouldn't be less than 0"),
                );
                0
            }
            Some(n) => n as usize,
            None => 0,
        },
    };

    let concurrency = match &concurrency {
        None => 1,
        Some(f) => match integer(ctx, f, "concurrency") {
            Some(n) if n < 0 => {
                ctx.field_error(
                    f,
                    "concurrency",
                    format!("invalid concurrency {n}, shouldn't be less than 0"),
                );
                1
            }
            // vmalert runs a group with concurrency 0 (or unset) one rule at a time.
            Some(n) => (n as usize).max(1),
            None => 1,
        },
    };

    let labels_line = labels.as_ref().map_or(line, |f| f.line);
    let labels = labels.map(|f| text_map(f.value)).unwrap_or_default();
    let params = params
        .map(|f| {
            f.value
                .into_iter()
                .map(|(k, v)| (k, v.unwrap_or_default().into_iter().map(|t| t.0).collect()))
                .collect()
        })
        .unwrap_or_default();
    let headers = header_list(ctx, headers, "headers");
    let notifier_headers = header_list(ctx, notifier_headers, "notifier_headers");
    let debug = debug
        .as_ref()
        .and_then(|f| boolean(ctx, f, "debug"))
        .unwrap_or(false);

    // Rules: vmalert's rule identity is (expr, kind, name, labels); a second
    // rule with the same identity in a group is an error.
    let mut checked_rules = Vec::new();
    let mut seen_ids: HashMap<u64, (u64, usize)> = HashMap::new();
    let rules_line = rules.as_ref().map_or(line, |f| f.line);
    let raw_rules = rules.map(|f| f.value).unwrap_or_default();
    for (i, mut raw_rule) in raw_rules.into_iter().enumerate() {
        if raw_rule.line == 0 {
            // An empty mapping (`- {}`) has no key to take a line from.
            raw_rule.line = rules_line;
        }
        if let Some(rule) = check_rule(ctx, raw_rule, i + 1, rule_type, opts, &mut seen_ids) {
            checked_rules.push(rule);
        }
    }
    ctx.rule = None;

    // Group labels are merged into every rule's labels (they win), and
    // vmalert templates the merged labels of alerting rules, so a broken
    // template here would fail every evaluation. vmalert only notices then;
    // we say so at load time.
    if opts.validate_templates && checked_rules.iter().any(|r| r.is_alerting()) {
        for (k, v) in &labels {
            if let Err(e) = check_template(v) {
                ctx.error(
                    labels_line,
                    Some(&format!("labels.{k}")),
                    format!("invalid labels: template {}: {e}", excerpt(v)),
                );
            }
        }
    }

    if !unknown.is_empty() {
        let msg = format!(
            "unknown fields in group {}: {}; allowed: {}",
            ctx.group,
            names(&unknown),
            RawGroup::KEYS.join(", ")
        );
        ctx.error(unknown[0].line, Some(&unknown[0].name), msg);
    }

    let name = name.map(|n| n.value.0).unwrap_or_default();
    let mut group = Group {
        file: ctx.file.to_string(),
        line,
        name,
        rule_type,
        interval: (interval_ms > 0).then(|| Duration::from_millis(interval_ms as u64)),
        eval_offset: eval_offset_checked,
        eval_delay,
        eval_alignment,
        limit,
        concurrency,
        labels,
        params,
        headers,
        notifier_headers,
        debug,
        rules: checked_rules,
        checksum: String::new(),
    };
    group.checksum = super::checksum(&group);
    group
}

fn check_rule(
    ctx: &mut Ctx<'_>,
    raw: RawRule,
    index: usize,
    rule_type: RuleType,
    opts: &LoadOptions,
    seen_ids: &mut HashMap<u64, (u64, usize)>,
) -> Option<Rule> {
    let RawRule {
        record,
        alert,
        expr,
        for_,
        keep_firing_for,
        labels,
        annotations,
        debug,
        update_entries_limit,
        line,
        unknown,
    } = raw;
    let record_name = record
        .as_ref()
        .map(|f| f.value.0.clone())
        .unwrap_or_default();
    let alert_name = alert
        .as_ref()
        .map(|f| f.value.0.clone())
        .unwrap_or_default();
    let shown = if !alert_name.is_empty() {
        &alert_name
    } else {
        &record_name
    };
    ctx.rule = Some(if shown.is_empty() {
        ItemName::Unnamed(index)
    } else {
        ItemName::Named(shown.clone())
    });
    let errors_before = ctx.errors.len();

    if !unknown.is_empty() {
        let msg = format!(
            "unknown fields in rule: {}; allowed: {}",
            names(&unknown),
            RawRule::KEYS.join(", ")
        );
        ctx.error(unknown[0].line, Some(&unknown[0].name), msg);
    }

    let kind_ok = record_name.is_empty() != alert_name.is_empty();
    if !kind_ok {
        let (l, field) = match (&record, &alert) {
            (Some(r), Some(_)) if !record_name.is_empty() => (r.line, "record"),
            (_, Some(a)) => (a.line, "alert"),
            (Some(r), None) => (r.line, "record"),
            (None, None) => (line, "record"),
        };
        ctx.error(
            l,
            Some(field),
            "invalid rule: either `record` or `alert` must be set, not both and not neither".into(),
        );
    }

    let expr_text = expr.as_ref().map(|f| f.value.0.clone()).unwrap_or_default();
    if expr_text.trim().is_empty() {
        let l = expr.as_ref().map_or(line, |f| f.line);
        ctx.error(l, Some("expr"), "expression can't be empty".into());
    }

    if opts.strict_record_names && !record_name.is_empty() && !is_metric_name(&record_name) {
        let f = record.as_ref().expect("record_name comes from the field");
        ctx.field_error(
            f,
            "record",
            format!(
                "{record_name:?} is not a valid metric name; it must match [a-zA-Z_:][a-zA-Z0-9_:]*"
            ),
        );
    }

    let labels_line = labels.as_ref().map_or(line, |f| f.line);
    let labels = labels.map(|f| text_map(f.value)).unwrap_or_default();
    if labels.contains_key("__name__") {
        ctx.error(
            labels_line,
            Some("labels.__name__"),
            "invalid rule: label `__name__` is not allowed in rule labels; the name comes from `record:` or `alert:`".into(),
        );
    }

    let annotations_line = annotations.as_ref().map_or(line, |f| f.line);
    let annotations = annotations.map(|f| text_map(f.value)).unwrap_or_default();

    if opts.validate_templates {
        for (k, v) in &annotations {
            if let Err(e) = check_template(v) {
                ctx.error(
                    annotations_line,
                    Some(&format!("annotations.{k}")),
                    format!("invalid annotations: template {}: {e}", excerpt(v)),
                );
            }
        }
        // vmalert parses the labels of recording rules too, although it
        // never executes them.
        for (k, v) in &labels {
            if let Err(e) = check_template(v) {
                ctx.error(
                    labels_line,
                    Some(&format!("labels.{k}")),
                    format!("invalid labels: template {}: {e}", excerpt(v)),
                );
            }
        }
    }

    if rule_type == RuleType::Vlogs && !crate::client::logsql_has_stats_pipe(&expr_text) {
        let l = expr.as_ref().map_or(line, |f| f.line);
        ctx.error(
            l,
            Some("expr"),
            "bad LogsQL expr: missing `| stats ...` pipe; a vlogs rule computes stats over the logs a filter selects, e.g. `level:error | stats by (service) count() as errors`".into(),
        );
    }
    if rule_type == RuleType::Vlogs && has_time_buckets(&expr_text) {
        let l = expr.as_ref().map_or(line, |f| f.line);
        ctx.error(
            l,
            Some("expr"),
            "bad LogsQL expr: cannot contain time buckets stats pipe `stats by (_time:step)`; drop `_time` from `by (...)`: the evaluation timestamp already buckets the result".into(),
        );
    }

    let for_ = non_negative_duration(ctx, &for_, "for").unwrap_or_default();
    let keep_firing_for =
        non_negative_duration(ctx, &keep_firing_for, "keep_firing_for").unwrap_or_default();
    let debug = debug.as_ref().and_then(|f| boolean(ctx, f, "debug"));
    let update_entries_limit = update_entries_limit
        .as_ref()
        .and_then(|f| integer(ctx, f, "update_entries_limit"));

    let id = hash_rule(&expr_text, &record_name, &alert_name, &labels);
    if kind_ok {
        if let Some((first_line, first_index)) = seen_ids.get(&id) {
            ctx.error(
                line,
                None,
                format!(
                    "is a duplicate in group: rule #{first_index} (line {first_line}) has the same name, expr and labels"
                ),
            );
        } else {
            seen_ids.insert(id, (line, index));
        }
    }

    if ctx.errors.len() > errors_before {
        return None;
    }
    let kind = if alert_name.is_empty() {
        RuleKind::Recording {
            record: record_name,
        }
    } else {
        RuleKind::Alerting {
            alert: alert_name,
            for_,
            keep_firing_for,
            annotations,
        }
    };
    Some(Rule {
        line,
        kind,
        expr: expr_text,
        labels,
        debug,
        update_entries_limit,
        id,
    })
}

fn text_map(m: TextMap) -> BTreeMap<String, String> {
    m.into_iter().map(|(k, v)| (k, v.0)).collect()
}

fn header_list(ctx: &mut Ctx<'_>, raw: Option<Field<Vec<Text>>>, field: &str) -> Vec<Header> {
    let Some(f) = raw else { return Vec::new() };
    let mut out = Vec::new();
    for Text(s) in &f.value {
        if s.is_empty() {
            continue; // vmalert ignores empty entries
        }
        match s.split_once(':') {
            Some((k, v)) => out.push(Header {
                name: k.trim().to_string(),
                value: v.trim().to_string(),
            }),
            None => ctx.field_error(
                &f,
                field,
                format!("missing ':' in header {s:?}; expecting \"key: value\" format"),
            ),
        }
    }
    out
}

/// A metric name as Prometheus defines it. (VictoriaMetrics would store
/// more, which is why this check can be turned off.)
fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// vmalert rejects `stats by (_time:step)` in vlogs rules: VictoriaLogs would
/// return one series per time bucket. This is the one LogsQL check that needs
/// no LogsQL parser: `_time` among the `by (...)` fields of a stats pipe
/// (`| stats by (...)` or the short `| by (...)`).
fn has_time_buckets(expr: &str) -> bool {
    static STATS_BY: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?i)(?:\bstats\s+|\|\s*)by\s*\(([^)]*)\)").expect("valid regex")
    });
    STATS_BY.captures_iter(expr).any(|c| {
        c[1].split(',').any(|field| {
            let name = field.split(':').next().unwrap_or("").trim();
            name == "_time"
        })
    })
}

/// vmalert's `HashRule`: FNV-1a 64 over expr, kind and name, and the sorted
/// labels. Rules with the same hash in one group are duplicates; `for`,
/// annotations and the rest do not count.
pub(crate) fn hash_rule(
    expr: &str,
    record: &str,
    alert: &str,
    labels: &BTreeMap<String, String>,
) -> u64 {
    let mut h = Fnv64a::new();
    h.write(expr.as_bytes());
    if !record.is_empty() {
        h.write(b"recording");
        h.write(record.as_bytes());
    } else {
        h.write(b"alerting");
        h.write(alert.as_bytes());
    }
    for (k, v) in labels {
        h.write(k.as_bytes());
        h.write(v.as_bytes());
        h.write(b"\xff");
    }
    h.0
}

/// Go's `hash/fnv` New64a, so rule ids match vmalert's.
pub(crate) struct Fnv64a(pub u64);

impl Fnv64a {
    pub fn new() -> Self {
        Fnv64a(0xcbf2_9ce4_8422_2325)
    }
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

// ---------------------------------------------------------------------------
// Scalars. Each takes the field so the message can name it and its line;
// "cannot unmarshal" is yaml.v2's wording for the same failures.

fn integer(ctx: &mut Ctx<'_>, f: &Field<Text>, field: &str) -> Option<i64> {
    match parse_yaml_int(&f.value.0) {
        Some(n) => Some(n),
        None => {
            let msg = format!("cannot unmarshal {:?} into an integer", f.value.0);
            ctx.field_error(f, field, msg);
            None
        }
    }
}

/// YAML 1.1 integers as yaml.v2 reads them: sign, `_` separators, 0x/0o/0b.
fn parse_yaml_int(s: &str) -> Option<i64> {
    let s: String = s.trim().chars().filter(|c| *c != '_').collect();
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(&s)),
    };
    let n = if let Some(hex) = digits.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()?
    } else if let Some(oct) = digits.strip_prefix("0o") {
        i64::from_str_radix(oct, 8).ok()?
    } else if let Some(bin) = digits.strip_prefix("0b") {
        i64::from_str_radix(bin, 2).ok()?
    } else if digits.len() > 1 && digits.starts_with('0') {
        i64::from_str_radix(&digits[1..], 8).ok()?
    } else {
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()?
    };
    Some(if neg { -n } else { n })
}

/// YAML 1.1 booleans, which is what yaml.v2 accepts for a Go bool.
fn boolean(ctx: &mut Ctx<'_>, f: &Field<Text>, field: &str) -> Option<bool> {
    match f.value.0.as_str() {
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "y" | "Y" | "on" | "On" | "ON" => {
            Some(true)
        }
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "n" | "N" | "off" | "Off" | "OFF" => {
            Some(false)
        }
        other => {
            let msg = format!("cannot unmarshal {other:?} into a boolean; use true or false");
            ctx.field_error(f, field, msg);
            None
        }
    }
}

/// The longest `interval`, `eval_offset`, `eval_delay`, `for` and
/// `keep_firing_for` accepted: a group evaluated less than once a year
/// would in effect never run, and longer values are how a typo
/// (`interval: 10000y`) looks.
pub const MAX_RULE_DURATION: Duration = Duration::from_secs(365 * 86_400);

/// A duration the way vmalert's `promutil.Duration` reads it (Prometheus
/// units, fractions, a bare number of seconds, a leading minus), at most
/// [`MAX_RULE_DURATION`] either way. Milliseconds, signed.
fn signed_duration(ctx: &mut Ctx<'_>, f: &Option<Field<Text>>, field: &str) -> Option<i64> {
    let f = f.as_ref()?;
    match parse_signed_duration_ms(&f.value.0) {
        Ok(ms) if u128::from(ms.unsigned_abs()) > MAX_RULE_DURATION.as_millis() => {
            let msg = format!(
                "{field} {} is longer than {}, the longest spillway accepts in rule files",
                f.value.0.trim(),
                format_duration(MAX_RULE_DURATION)
            );
            ctx.field_error(f, field, msg);
            None
        }
        Ok(ms) => Some(ms),
        Err(e) => {
            ctx.field_error(f, field, format!("cannot unmarshal into a duration: {e}"));
            None
        }
    }
}

fn non_negative_duration(
    ctx: &mut Ctx<'_>,
    f: &Option<Field<Text>>,
    field: &str,
) -> Option<Duration> {
    let ms = signed_duration(ctx, f, field)?;
    if ms < 0 {
        let f = f.as_ref().expect("parsed from a field");
        ctx.field_error(
            f,
            field,
            format!(
                "{field} shouldn't be lower than 0; got {}",
                format_go_duration_ms(ms)
            ),
        );
        return None;
    }
    Some(Duration::from_millis(ms as u64))
}

/// A template as quoted in an error: whole when short, else its first 80
/// characters (a 2 KB hostile template should not fill the terminal).
fn excerpt(text: &str) -> String {
    const SHOWN: usize = 80;
    match text.char_indices().nth(SHOWN) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!(
            "{:?}... ({} characters)",
            &text[..cut],
            text.chars().count()
        ),
    }
}
