//! Go templates in rule `labels:` and `annotations:`, the way vmalert reads
//! them.
//!
//! vmalert checks a template by parsing it, never by running it: it prefixes
//! the text with variable definitions (`{{ $value := .Value }}{{ $labels :=
//! .Labels }}...`) and parses it with its function table, so an unknown
//! function, an undefined variable or a broken action is an error at load time.
//! [`check_template`] does the same with gtmpl-ng (plain `gtmpl` prints whole
//! floats wrongly in `printf`). Only `alert:` rule labels are ever executed
//! here, by [`render_labels`]; annotations go nowhere in spillway, and
//! recording-rule labels are literal (vmalert does not template them, to keep
//! cardinality under control).
//!
//! The function table mirrors vmalert's `templates.templateFuncs()`. Functions
//! that need a datasource or vmalert's web server (`query`, `externalURL`) are
//! registered so templates parse, but have nothing to call in this module:
//! `query` fails when executed, `externalURL`/`pathPrefix` give "".
//!
//! Templates come from rule files, which a running daemon reloads, so they
//! are hostile input: [`check_depth`] refuses a template nested deeper than
//! [`MAX_TEMPLATE_DEPTH`] before gtmpl-ng's recursive parser sees it (it caps
//! `{{if}}`-style blocks, not parentheses), and a rendered value carrying Go's
//! formatting-error markers (`%!(NOVERB)`, `%!s(<nil>)`) is counted in
//! `spillway_template_format_errors_total` and logged once per rule label.

use crate::model::time::{format_go_duration, format_go_duration_ms, parse_signed_duration_ms};
use gtmpl_ng::{Context, Func, FuncError, Template, Value};
use std::collections::{BTreeMap, HashMap};

/// vmalert's template header (`notifier.tplHeaders`), plus `$type` which the
/// current documentation lists. It has no newline, so template line numbers
/// stay those of the user's text; columns on line 1 are shifted by its length.
const HEADER: &str = concat!(
    "{{ $value := .Value }}",
    "{{ $labels := .Labels }}",
    "{{ $expr := .Expr }}",
    "{{ $externalLabels := .ExternalLabels }}",
    "{{ $externalURL := .ExternalURL }}",
    "{{ $alertID := .AlertID }}",
    "{{ $groupID := .GroupID }}",
    "{{ $activeAt := .ActiveAt }}",
    "{{ $for := .For }}",
    "{{ $type := .Type }}",
);

/// vmalert's template functions (`app/vmalert/templates/template.go` and the
/// documented `now`), on top of Go's builtins that gtmpl-ng already has.
/// Event destinations' templates register them too.
pub fn functions() -> Vec<(&'static str, Func)> {
    vec![
        ("title", title as Func),
        ("toUpper", to_upper),
        ("toLower", to_lower),
        ("crlfEscape", crlf_escape),
        ("quotesEscape", quotes_escape),
        ("jsonEscape", json_escape),
        ("htmlEscape", html_escape),
        ("stripPort", strip_port),
        ("stripDomain", strip_domain),
        ("match", match_re),
        ("reReplaceAll", re_replace_all),
        ("parseDuration", parse_duration_secs),
        ("parseDurationTime", parse_duration_time),
        ("humanize", humanize),
        ("humanize1024", humanize1024),
        ("humanizeDuration", humanize_duration),
        ("humanizePercentage", humanize_percentage),
        ("humanizeTimestamp", humanize_timestamp),
        ("toTime", to_time),
        ("now", now),
        ("externalURL", empty_string),
        ("pathPrefix", empty_string),
        ("pathEscape", path_escape),
        ("queryEscape", query_escape),
        ("query", query),
        ("first", first),
        ("label", label),
        ("value", value),
        ("strvalue", strvalue),
        ("sortByLabel", sort_by_label),
        ("args", args),
        ("safeHtml", safe_html),
        ("graphLink", graph_link),
        ("tableLink", table_link),
    ]
}

fn new_template() -> Template {
    let mut t = Template::default();
    t.add_funcs(&functions());
    t
}

/// How deeply parentheses and `{{if}}`/`{{range}}`/`{{with}}`/`{{block}}`/
/// `{{define}}` bodies may nest, together (each `{{else if}}` of a chain is
/// one more level: the parser recurses into it). Each level is a frame of a
/// recursive parser and executor: measured in a debug build, 32 levels of
/// any mix stay far inside the 2 MiB stack of a tokio worker (see
/// `deepest_template_fits_a_worker_stack` in the tests), and vmalert's
/// rule files nest two or three.
pub const MAX_TEMPLATE_DEPTH: usize = 32;

/// The deepest nesting of parentheses and block actions in `text`, counted
/// without parsing it (strings and comments skipped), and refused beyond
/// [`MAX_TEMPLATE_DEPTH`].
pub fn check_depth(text: &str) -> Result<(), String> {
    let depth = template_depth(text);
    if depth > MAX_TEMPLATE_DEPTH {
        return Err(format!(
            "nested {depth} levels deep (parentheses and if/range/with/block/define bodies); at most {MAX_TEMPLATE_DEPTH} are allowed"
        ));
    }
    Ok(())
}

fn template_depth(text: &str) -> usize {
    let b = text.as_bytes();
    let (mut i, mut blocks, mut deepest) = (0usize, 0usize, 0usize);
    // Levels each open `{{end}}` will close: an `{{else if}}` or `{{else
    // with}}` is a nested block that shares its enclosing `{{end}}`.
    let mut closes: Vec<usize> = Vec::new();
    while let Some(open) = find(b, i, b"{{") {
        i = open + 2;
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        while b.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        if b[i..].starts_with(b"/*") {
            i = find(b, i, b"*/").map_or(b.len(), |e| e + 2);
            continue;
        }
        let word_end = b[i..]
            .iter()
            .position(|c| !c.is_ascii_alphabetic())
            .map_or(b.len(), |p| i + p);
        let opens_block = matches!(
            &b[i..word_end],
            b"if" | b"range" | b"with" | b"block" | b"define"
        );
        match &b[i..word_end] {
            b"end" => blocks = blocks.saturating_sub(closes.pop().unwrap_or(1)),
            b"else" => {
                let rest = &b[word_end..];
                let next = rest
                    .iter()
                    .position(|c| !c.is_ascii_whitespace())
                    .unwrap_or(0);
                if rest[next..].starts_with(b"if") || rest[next..].starts_with(b"with") {
                    blocks += 1;
                    deepest = deepest.max(blocks);
                    if let Some(top) = closes.last_mut() {
                        *top += 1;
                    }
                }
            }
            _ => {}
        }
        let mut parens = 0usize;
        while i < b.len() && !b[i..].starts_with(b"}}") {
            match b[i] {
                b'(' => {
                    parens += 1;
                    deepest = deepest.max(blocks + parens);
                }
                b')' => parens = parens.saturating_sub(1),
                q @ (b'"' | b'\'' | b'`') => i = skip_quoted(b, i, q),
                _ => {}
            }
            i += 1;
        }
        if opens_block {
            blocks += 1;
            closes.push(1);
            deepest = deepest.max(blocks);
        }
    }
    deepest
}

fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(b.get(from..)?, needle).map(|p| from + p)
}

/// The index of the closing quote of the literal opening at `start`
/// (backslash escapes except in raw strings), or the end of the text.
fn skip_quoted(b: &[u8], start: usize, quote: u8) -> usize {
    let mut i = start + 1;
    while i < b.len() {
        if b[i] == b'\\' && quote != b'`' {
            i += 2;
            continue;
        }
        if b[i] == quote {
            return i;
        }
        i += 1;
    }
    b.len()
}

/// Parses `text` with the header, after the depth check.
fn parse(t: &mut Template, text: &str) -> Result<(), String> {
    check_depth(text)?;
    t.parse(format!("{HEADER}{text}"))
        .map_err(|e| describe_parse_error(&e))
}

/// Parses `text` as vmalert would when validating a rule. The error names
/// the position inside `text` (line and column as the user counts them).
pub fn check_template(text: &str) -> Result<(), String> {
    // Text without an action cannot fail to parse; most label values are literal.
    if !text.contains("{{") {
        return Ok(());
    }
    parse(&mut new_template(), text)
}

fn describe_parse_error(e: &gtmpl_ng::ParseError) -> String {
    match e {
        gtmpl_ng::ParseError::WithContext(ctx, msg) => {
            // Columns on line 1 count the header we put in front.
            let col = if ctx.line == 1 {
                ctx.col.saturating_sub(HEADER.chars().count())
            } else {
                ctx.col
            };
            format!("line {}, column {}: {}", ctx.line, col, msg)
        }
        other => other.to_string(),
    }
}

/// What a label template may read. vmalert's `AlertTplData` without the
/// alert-state fields spillway does not track at this point.
#[derive(Clone, Debug, Default)]
pub struct TemplateData<'a> {
    /// The labels of the result series (`$labels`, `.Labels`).
    pub labels: Option<&'a crate::model::Labels>,
    /// The sample value (`$value`, `.Value`).
    pub value: f64,
    /// The rule expression (`$expr`, `.Expr`).
    pub expr: &'a str,
    /// `external_labels` of the run config (`$externalLabels`).
    pub external_labels: Option<&'a BTreeMap<String, String>>,
    /// The rule's `for:` (`$for`), printed as Go prints a duration.
    pub for_: std::time::Duration,
    /// Group type name (`$type`): "prometheus", "graphite" or "vlogs".
    pub rule_type: &'a str,
}

/// Renders the `labels:` of an `alert:` rule for one result series, as
/// vmalert does before merging them into the alert's labels.
///
/// The result keeps empty values: an empty rule label means "remove this
/// label" in vmalert, which a [`crate::model::Labels`] (it drops empty values)
/// could not say. Label order is the key order.
pub fn render_labels(
    template_labels: &BTreeMap<String, String>,
    labels: &crate::model::Labels,
    value: f64,
    expr: &str,
) -> Result<BTreeMap<String, String>, String> {
    render_labels_with(
        template_labels,
        &TemplateData {
            labels: Some(labels),
            value,
            expr,
            ..TemplateData::default()
        },
    )
}

/// [`render_labels`] with every variable vmalert offers that spillway knows.
/// Errors name the label key and the template.
pub fn render_labels_with(
    template_labels: &BTreeMap<String, String>,
    data: &TemplateData<'_>,
) -> Result<BTreeMap<String, String>, String> {
    let ctx = Context::from(context_value(data));
    let mut out = BTreeMap::new();
    let mut errors = Vec::new();
    for (key, text) in template_labels {
        // Fast path: most label values are literal.
        if !text.contains("{{") {
            out.insert(key.clone(), text.clone());
            continue;
        }
        let mut t = new_template();
        let rendered =
            parse(&mut t, text).and_then(|()| t.render(&ctx).map_err(|e| describe_exec_error(&e)));
        match rendered {
            Ok(s) => {
                let s = zero_missing_keys(text, s);
                if s.contains("%!") && !text.contains("%!") {
                    format_error(key, text, &s, data.expr);
                }
                out.insert(key.clone(), s);
            }
            Err(e) => errors.push(format!("label {key:?}, template {text:?}: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors.join("; "))
    }
}

/// A label rendered with Go's formatting-error markers (`%!(NOVERB)`,
/// `%!s(<nil>)`, `%!d(string=x)`): vmalert exports such values as they are,
/// and so does spillway, but it counts them and says so once per rule label.
fn format_error(key: &str, text: &str, rendered: &str, expr: &str) {
    use std::collections::HashSet;
    use std::sync::{LazyLock, Mutex};
    static WARNED: LazyLock<Mutex<HashSet<u64>>> = LazyLock::new(Default::default);
    metrics::counter!("spillway_template_format_errors_total", "label" => key.to_string())
        .increment(1);
    let id = xxhash_rust::xxh64::xxh64(format!("{expr}\0{key}\0{text}").as_bytes(), 0);
    let first = WARNED
        .lock()
        .map(|mut seen| seen.len() < 100_000 && seen.insert(id))
        .unwrap_or(false);
    if first {
        tracing::warn!(
            label = key,
            template = text,
            rendered,
            expr,
            "a label template printed a Go formatting error (a verb without a value, or a value of the wrong type); the value is exported as rendered. Counted in spillway_template_format_errors_total; this warning is shown once per rule label"
        );
    }
}

/// An execution error in one paragraph. gtmpl-ng chains one "caused by"
/// per nested `{{template}}` call, so a recursive template repeated the same
/// line a hundred times; repeats are folded into a count.
fn describe_exec_error(e: &gtmpl_ng::ExecError) -> String {
    let gtmpl_ng::ExecError::Structured(se) = e else {
        return e.to_string();
    };
    let mut lines: Vec<(String, usize)> = Vec::new();
    for level in se.chain() {
        let text = format!("template: {}:{}", level.context, level.message);
        match lines.last_mut() {
            Some((last, n)) if *last == text => *n += 1,
            _ => lines.push((text, 1)),
        }
    }
    lines
        .into_iter()
        .map(|(text, n)| {
            if n > 1 {
                format!("{text} (repeated {n} times)")
            } else {
                text
            }
        })
        .collect::<Vec<_>>()
        .join("; caused by: ")
}

/// vmalert parses with `missingkey=zero`, so `{{ $labels.absent }}` prints
/// "" where gtmpl-ng, like Go's default, prints `<no value>`. The marker is
/// removed unless the template itself spells it, which is the one case where
/// it can be meant literally.
fn zero_missing_keys(template: &str, rendered: String) -> String {
    const NO_VALUE: &str = "<no value>";
    if rendered.contains(NO_VALUE) && !template.contains(NO_VALUE) {
        rendered.replace(NO_VALUE, "")
    } else {
        rendered
    }
}

fn string_map(m: impl IntoIterator<Item = (String, String)>) -> Value {
    Value::Map(m.into_iter().map(|(k, v)| (k, Value::from(v))).collect())
}

fn context_value(d: &TemplateData<'_>) -> Value {
    let labels = d
        .labels
        .map(|l| {
            string_map(
                l.iter()
                    .map(|l| (l.name.clone(), l.value.clone()))
                    .collect::<Vec<_>>(),
            )
        })
        .unwrap_or_else(|| Value::Map(HashMap::new()));
    let external = d
        .external_labels
        .map(|m| string_map(m.clone()))
        .unwrap_or_else(|| Value::Map(HashMap::new()));
    let mut m = HashMap::new();
    m.insert("Labels".to_string(), labels);
    m.insert("Value".to_string(), Value::from(d.value));
    m.insert("Expr".to_string(), Value::from(d.expr));
    m.insert("ExternalLabels".to_string(), external);
    m.insert("ExternalURL".to_string(), Value::from(""));
    m.insert("AlertID".to_string(), Value::from(0u64));
    m.insert("GroupID".to_string(), Value::from(0u64));
    m.insert("ActiveAt".to_string(), Value::from(""));
    m.insert("For".to_string(), Value::from(format_go_duration(d.for_)));
    m.insert("Type".to_string(), Value::from(d.rule_type));
    Value::Map(m)
}

// ---------------------------------------------------------------------------
// Function implementations. Argument handling follows Go's: a wrong count or
// type is an execution error naming the function.

fn err(msg: impl Into<String>) -> FuncError {
    FuncError::Generic(msg.into())
}

fn exactly<'a>(name: &str, args: &'a [Value], n: usize) -> Result<&'a [Value], FuncError> {
    if args.len() == n {
        Ok(args)
    } else {
        Err(FuncError::ExactlyXArgs(name.to_string(), n))
    }
}

fn arg_str(name: &str, v: &Value) -> Result<String, FuncError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        // An absent `$labels.x` is "" under missingkey=zero.
        Value::NoValue => Ok(String::new()),
        other => Err(err(format!("{name}: expected a string, got {other}"))),
    }
}

fn one_str(name: &str, args: &[Value]) -> Result<String, FuncError> {
    arg_str(name, &exactly(name, args, 1)?[0])
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n
            .as_f64()
            .or_else(|| n.as_i64().map(|i| i as f64))
            .or_else(|| n.as_u64().map(|u| u as f64)),
        _ => None,
    }
}

/// vmalert's `toFloat64`: numbers, and strings that parse as floats.
fn to_float(name: &str, args: &[Value]) -> Result<f64, FuncError> {
    let v = &exactly(name, args, 1)?[0];
    if let Some(f) = number(v) {
        return Ok(f);
    }
    match v {
        Value::String(s) => parse_go_float(s).ok_or_else(|| {
            err(format!(
                "{name}: strconv.ParseFloat: parsing {s:?}: invalid syntax"
            ))
        }),
        other => Err(err(format!("{name}: unexpected value type {other}"))),
    }
}

fn parse_go_float(s: &str) -> Option<f64> {
    match s {
        "Inf" | "+Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// Go's `%.4g`.
fn g4(v: f64) -> String {
    gtmpl_ng::format_float(v, gtmpl_ng::FloatFormat::General, Some(4))
}

fn title(args: &[Value]) -> Result<Value, FuncError> {
    // strings.Title: upper-case the first letter of each word; a word starts
    // after anything that is not a letter, digit, underscore or mark.
    let s = one_str("title", args)?;
    let mut out = String::with_capacity(s.len());
    let mut prev_sep = true;
    for c in s.chars() {
        if prev_sep {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev_sep = !(c.is_alphanumeric() || c == '_');
    }
    Ok(Value::from(out))
}

fn to_upper(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::from(one_str("toUpper", args)?.to_uppercase()))
}

fn to_lower(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::from(one_str("toLower", args)?.to_lowercase()))
}

fn crlf_escape(args: &[Value]) -> Result<Value, FuncError> {
    let s = one_str("crlfEscape", args)?;
    Ok(Value::from(s.replace('\n', "\\n").replace('\r', "\\r")))
}

/// Go's `json.Marshal` of a string: HTML-sensitive characters are escaped too.
fn go_json_string(s: &str) -> String {
    let quoted = serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string());
    quoted
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

fn json_escape(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::from(go_json_string(&one_str("jsonEscape", args)?)))
}

fn quotes_escape(args: &[Value]) -> Result<Value, FuncError> {
    let q = go_json_string(&one_str("quotesEscape", args)?);
    Ok(Value::from(q[1..q.len() - 1].to_string()))
}

fn html_escape(args: &[Value]) -> Result<Value, FuncError> {
    let s = one_str("htmlEscape", args)?;
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&#39;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&#34;"),
            c => out.push(c),
        }
    }
    Ok(Value::from(out))
}

fn safe_html(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::from(one_str("safeHtml", args)?))
}

/// Go's `net.SplitHostPort`, enough for the two strip functions.
fn split_host_port(s: &str) -> Option<(&str, &str)> {
    if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']')?;
        let port = rest[end + 1..].strip_prefix(':')?;
        return Some((&rest[..end], port));
    }
    let i = s.rfind(':')?;
    if s[..i].contains(':') {
        return None; // unbracketed IPv6: "too many colons"
    }
    Some((&s[..i], &s[i + 1..]))
}

fn strip_port(args: &[Value]) -> Result<Value, FuncError> {
    let s = one_str("stripPort", args)?;
    Ok(Value::from(
        split_host_port(&s).map_or(s.clone(), |(h, _)| h.to_string()),
    ))
}

fn strip_domain(args: &[Value]) -> Result<Value, FuncError> {
    let s = one_str("stripDomain", args)?;
    let (host, port) = split_host_port(&s).unwrap_or((s.as_str(), ""));
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(Value::from(s.clone()));
    }
    let short = host.split('.').next().unwrap_or("");
    Ok(Value::from(if port.is_empty() {
        short.to_string()
    } else if short.contains(':') {
        format!("[{short}]:{port}")
    } else {
        format!("{short}:{port}")
    }))
}

fn match_re(args: &[Value]) -> Result<Value, FuncError> {
    let a = exactly("match", args, 2)?;
    let pattern = arg_str("match", &a[0])?;
    let s = arg_str("match", &a[1])?;
    let re = regex::Regex::new(&pattern).map_err(|e| err(format!("match: {e}")))?;
    Ok(Value::from(re.is_match(&s)))
}

fn re_replace_all(args: &[Value]) -> Result<Value, FuncError> {
    let a = exactly("reReplaceAll", args, 3)?;
    let pattern = arg_str("reReplaceAll", &a[0])?;
    let repl = arg_str("reReplaceAll", &a[1])?;
    let text = arg_str("reReplaceAll", &a[2])?;
    let re = regex::Regex::new(&pattern).map_err(|e| err(format!("reReplaceAll: {e}")))?;
    Ok(Value::from(
        re.replace_all(&text, repl.as_str()).into_owned(),
    ))
}

fn parse_duration_secs(args: &[Value]) -> Result<Value, FuncError> {
    let s = one_str("parseDuration", args)?;
    let ms = parse_signed_duration_ms(&s).map_err(|e| err(format!("parseDuration: {e}")))?;
    Ok(Value::from(ms as f64 / 1000.0))
}

fn parse_duration_time(args: &[Value]) -> Result<Value, FuncError> {
    // A Go time.Duration prints as "1h0m0s"; methods on it are not available.
    let s = one_str("parseDurationTime", args)?;
    let ms = parse_signed_duration_ms(&s).map_err(|e| err(format!("parseDurationTime: {e}")))?;
    Ok(Value::from(format_go_duration_ms(ms)))
}

fn humanize(args: &[Value]) -> Result<Value, FuncError> {
    let mut v = to_float("humanize", args)?;
    if v == 0.0 || v.is_nan() || v.is_infinite() {
        return Ok(Value::from(g4(v)));
    }
    let mut prefix = "";
    if v.abs() >= 1.0 {
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"] {
            if v.abs() < 1000.0 {
                break;
            }
            prefix = p;
            v /= 1000.0;
        }
    } else {
        for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
            if v.abs() >= 1.0 {
                break;
            }
            prefix = p;
            v *= 1000.0;
        }
    }
    Ok(Value::from(format!("{}{prefix}", g4(v))))
}

fn humanize1024(args: &[Value]) -> Result<Value, FuncError> {
    let mut v = to_float("humanize1024", args)?;
    if v.abs() <= 1.0 || v.is_nan() || v.is_infinite() {
        return Ok(Value::from(g4(v)));
    }
    let mut prefix = "";
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"] {
        if v.abs() < 1024.0 {
            break;
        }
        prefix = p;
        v /= 1024.0;
    }
    Ok(Value::from(format!("{}{prefix}", g4(v))))
}

fn humanize_duration(args: &[Value]) -> Result<Value, FuncError> {
    let mut v = to_float("humanizeDuration", args)?;
    if v.is_nan() || v.is_infinite() {
        return Ok(Value::from(g4(v)));
    }
    if v == 0.0 {
        return Ok(Value::from(format!("{}s", g4(v))));
    }
    if v.abs() >= 1.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        v = v.abs();
        let whole = v as i64;
        let (seconds, minutes, hours, days) = (
            whole % 60,
            (whole / 60) % 60,
            (whole / 3600) % 24,
            whole / 86400,
        );
        let s = if days != 0 {
            format!("{sign}{days}d {hours}h {minutes}m {seconds}s")
        } else if hours != 0 {
            format!("{sign}{hours}h {minutes}m {seconds}s")
        } else if minutes != 0 {
            format!("{sign}{minutes}m {seconds}s")
        } else {
            format!("{sign}{}s", g4(v))
        };
        return Ok(Value::from(s));
    }
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    Ok(Value::from(format!("{}{prefix}s", g4(v))))
}

fn humanize_percentage(args: &[Value]) -> Result<Value, FuncError> {
    let v = to_float("humanizePercentage", args)?;
    Ok(Value::from(format!("{}%", g4(v * 100.0))))
}

/// Go's `fmt.Sprint(time.Time)` for a UTC time: `2006-01-02 15:04:05.999999999 +0000 UTC`.
fn go_time_string(secs: f64) -> Option<String> {
    let ms = (secs * 1e3) as i64;
    let t = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)?;
    let mut s = t.format("%Y-%m-%d %H:%M:%S").to_string();
    let frac = ms.rem_euclid(1000);
    if frac != 0 {
        let f = format!(".{frac:03}");
        s.push_str(f.trim_end_matches('0'));
    }
    s.push_str(" +0000 UTC");
    Some(s)
}

fn humanize_timestamp(args: &[Value]) -> Result<Value, FuncError> {
    let v = to_float("humanizeTimestamp", args)?;
    if v.is_nan() || v.is_infinite() {
        return Ok(Value::from(g4(v)));
    }
    go_time_string(v)
        .map(Value::from)
        .ok_or_else(|| err(format!("humanizeTimestamp: {v} is out of range")))
}

fn to_time(args: &[Value]) -> Result<Value, FuncError> {
    // A Go time.Time prints like humanizeTimestamp; its methods are not available.
    let v = to_float("toTime", args)?;
    if v.is_nan() || v.is_infinite() {
        return Err(err(format!("cannot convert {} to time.Time", g4(v))));
    }
    go_time_string(v)
        .map(Value::from)
        .ok_or_else(|| err(format!("toTime: {v} is out of range")))
}

fn now(args: &[Value]) -> Result<Value, FuncError> {
    exactly("now", args, 0)?;
    Ok(Value::from(crate::model::time::now_ms() as f64 / 1000.0))
}

fn empty_string(_args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::from(""))
}

/// Percent-encodes everything but RFC 3986 unreserved bytes and `keep`.
fn percent_encode(s: &str, keep: &[u8], space_plus: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || keep.contains(&b) {
            out.push(b as char);
        } else if b == b' ' && space_plus {
            out.push('+');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn query_escape(args: &[Value]) -> Result<Value, FuncError> {
    // url.QueryEscape
    Ok(Value::from(percent_encode(
        &one_str("queryEscape", args)?,
        b"",
        true,
    )))
}

fn path_escape(args: &[Value]) -> Result<Value, FuncError> {
    // url.PathEscape keeps the sub-delims a path segment may hold.
    Ok(Value::from(percent_encode(
        &one_str("pathEscape", args)?,
        b"$&+:=@",
        false,
    )))
}

fn graph_link(args: &[Value]) -> Result<Value, FuncError> {
    let e = percent_encode(&one_str("graphLink", args)?, b"", true);
    Ok(Value::from(format!("/graph?g0.expr={e}&g0.tab=0")))
}

fn table_link(args: &[Value]) -> Result<Value, FuncError> {
    let e = percent_encode(&one_str("tableLink", args)?, b"", true);
    Ok(Value::from(format!("/graph?g0.expr={e}&g0.tab=1")))
}

fn query(args: &[Value]) -> Result<Value, FuncError> {
    let q = one_str("query", args)?;
    Err(err(format!(
        "cannot execute query {q:?}: query is not available in label templates"
    )))
}

/// A query result element: `{Labels, Timestamp, Value}` as vmalert's `metric`.
fn metric_field<'a>(m: &'a Value, field: &str) -> Option<&'a Value> {
    match m {
        Value::Map(map) | Value::Object(map) => map.get(field),
        _ => None,
    }
}

fn first(args: &[Value]) -> Result<Value, FuncError> {
    match &exactly("first", args, 1)?[0] {
        Value::Array(a) => a
            .first()
            .cloned()
            .ok_or_else(|| err("first() called on vector with no elements")),
        other => Err(err(format!("first: expected query results, got {other}"))),
    }
}

fn label(args: &[Value]) -> Result<Value, FuncError> {
    let a = exactly("label", args, 2)?;
    let name = arg_str("label", &a[0])?;
    let v = metric_field(&a[1], "Labels")
        .and_then(|l| metric_field(l, &name))
        .cloned()
        .unwrap_or_else(|| Value::from(""));
    Ok(v)
}

fn value(args: &[Value]) -> Result<Value, FuncError> {
    let m = &exactly("value", args, 1)?[0];
    Ok(metric_field(m, "Value")
        .cloned()
        .unwrap_or_else(|| Value::from(0.0)))
}

fn strvalue(args: &[Value]) -> Result<Value, FuncError> {
    let m = &exactly("strvalue", args, 1)?[0];
    Ok(metric_field(m, "Labels")
        .and_then(|l| metric_field(l, "__name__"))
        .cloned()
        .unwrap_or_else(|| Value::from("")))
}

fn sort_by_label(args: &[Value]) -> Result<Value, FuncError> {
    let a = exactly("sortByLabel", args, 2)?;
    let name = arg_str("sortByLabel", &a[0])?;
    let Value::Array(items) = &a[1] else {
        return Err(err("sortByLabel: expected query results"));
    };
    let key = |m: &Value| match metric_field(m, "Labels").and_then(|l| metric_field(l, &name)) {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    let mut items = items.clone();
    items.sort_by_key(key);
    Ok(Value::Array(items))
}

fn args(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::Map(
        args.iter()
            .enumerate()
            .map(|(i, v)| (format!("arg{i}"), v.clone()))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(text: &str) -> Result<String, String> {
        let labels = BTreeMap::from([("x".to_string(), text.to_string())]);
        let l = crate::model::Labels::new();
        render_labels(&labels, &l, 1.0, "up").map(|m| m["x"].clone())
    }

    /// Regression (#14.1): about 1,000 `(` in a label template (2 KB)
    /// overflowed the stack in `run`, `rules preview` and on `POST /-/reload`.
    #[test]
    fn deep_parentheses_are_refused_before_parsing() {
        for n in [33, 1_000, 100_000] {
            let text = format!("{{{{ {}1{} }}}}", "(".repeat(n), ")".repeat(n));
            let e = check_template(&text).unwrap_err();
            assert!(e.contains(&format!("nested {n} levels deep")), "{e}");
            assert!(e.contains("at most 32"), "{e}");
            assert!(render(&text).unwrap_err().contains("at most 32"));
        }
        // `{{else if}}` nests like `{{else}}{{if}}` in Go's parser.
        for n in [40, 5_000] {
            let chain = format!(
                "{{{{ if false }}}}{}x{{{{ end }}}}",
                "{{ else if false }}".repeat(n)
            );
            std::thread::Builder::new()
                .stack_size(2 << 20)
                .spawn(move || {
                    let r = check_template(&chain);
                    assert!(r.is_err(), "{n} else-ifs: {r:?}");
                    assert!(r.unwrap_err().contains("levels deep"));
                })
                .unwrap()
                .join()
                .expect("an else-if chain overflowed a 2 MiB stack");
        }
        let blocks = format!("{}x{}", "{{ if true }}".repeat(40), "{{ end }}".repeat(40));
        assert!(check_template(&blocks)
            .unwrap_err()
            .contains("nested 40 levels"));
        // Parentheses inside strings and comments do not count.
        let quoted = format!(
            "{{{{ \"{}\" }}}}{{{{/* {} */}}}}",
            "(".repeat(100),
            "(".repeat(100)
        );
        check_template(&quoted).unwrap();
        assert_eq!(
            template_depth("{{ (1) }}{{ if (eq 1 1) }}{{ ((2)) }}{{ end }}"),
            3
        );
    }

    /// The deepest template accepted, in every shape, parses and renders on
    /// the 2 MiB stack of a tokio worker (the test binary is a debug build, the
    /// costliest case); if a gtmpl-ng update makes a level dearer, this test
    /// aborts instead of a daemon.
    #[test]
    fn deepest_template_fits_a_worker_stack() {
        let d = MAX_TEMPLATE_DEPTH;
        let shapes = [
            format!("{{{{ {}1{} }}}}", "(".repeat(d), ")".repeat(d)),
            format!("{}x{}", "{{ if true }}".repeat(d), "{{ end }}".repeat(d)),
            format!("{}x{}", "{{ with 1 }}".repeat(d), "{{ end }}".repeat(d)),
            format!("{}x{}", "{{ range 1 }}".repeat(d), "{{ end }}".repeat(d)),
            format!(
                "{{{{ if false }}}}{}x{{{{ end }}}}",
                "{{ else if false }}".repeat(d - 1)
            ),
            format!(
                "{}{{{{ {}1{} }}}}{}",
                "{{ if true }}".repeat(d / 2),
                "(".repeat(d / 2),
                ")".repeat(d / 2),
                "{{ end }}".repeat(d / 2)
            ),
        ];
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                for text in &shapes {
                    check_template(text).unwrap_or_else(|e| panic!("{text}: {e}"));
                    let _ = render(text);
                }
            })
            .unwrap()
            .join()
            .expect("a template at the depth limit overflowed a 2 MiB stack");
    }

    /// Regression (#14.13): a recursive `{{template}}` printed its "caused
    /// by" line a hundred times.
    #[test]
    fn recursive_template_error_is_one_line() {
        let e = render(r#"{{ define "r" }}{{ template "r" . }}{{ end }}{{ template "r" . }}"#)
            .unwrap_err();
        assert!(e.contains("maximum template nesting depth"), "{e}");
        assert!(e.contains("(repeated"), "{e}");
        assert!(e.matches("caused by").count() <= 3, "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    /// Regression (#14.13): `%!(NOVERB)` / `%!s(<nil>)` went into a label
    /// value with no trace; it is still exported as vmalert does, and counted.
    #[test]
    fn go_format_errors_are_counted() {
        use metrics_util::debugging::{DebugValue, DebuggingRecorder};
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            assert_eq!(render(r#"{{ printf "100%" }}"#).unwrap(), "100%!(NOVERB)");
            assert!(render(r#"{{ printf "%s" }}"#)
                .unwrap()
                .contains("%!s(MISSING)"));
            assert_eq!(render(r#"{{ printf "%d%%" 5 }}"#).unwrap(), "5%");
            // A template that spells the marker itself is not an error.
            assert_eq!(render("{{ `%!` }}").unwrap(), "%!");
        });
        let counted: u64 = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter(|(k, ..)| k.key().name() == "spillway_template_format_errors_total")
            .map(|(.., v)| match v {
                DebugValue::Counter(n) => n,
                _ => 0,
            })
            .sum();
        assert_eq!(counted, 2);
    }
}
