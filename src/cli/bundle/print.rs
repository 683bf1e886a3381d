//! What `spillway gather` and `spillway import` print: tables of the
//! inspection results and the summary of a finished job.

use crate::bundle::{
    Discovery, ExportOutcome, ImportOutcome, SampleRow, ValidateReport, VerifyReport,
};
use crate::model::size::format_size_short;
use crate::model::time::{format_duration, format_rfc3339_ms};
use crate::output::plural;
use std::time::Duration;

pub(super) fn print_validate(r: &ValidateReport) {
    let flavour = match r.backend {
        Some(b) => format!("{} (in front of {b})", r.flavour),
        None => r.flavour.to_string(),
    };
    table(&[
        vec!["url".into(), r.url.clone()],
        vec!["flavour".into(), flavour],
        vec![
            "version".into(),
            r.version.clone().unwrap_or_else(|| "unknown".into()),
        ],
        vec![
            "tenant".into(),
            r.tenant.clone().unwrap_or_else(|| "-".into()),
        ],
        vec![
            "export API".into(),
            if r.export_api {
                "yes"
            } else {
                "no (query_range fallback)"
            }
            .into(),
        ],
    ]);
    for n in &r.notes {
        crate::outln!("note: {n}");
    }
}

pub(super) fn print_discovery(d: &Discovery) {
    let mut rows = vec![vec![
        "JOB".into(),
        "COMPONENT".into(),
        "INSTANCES".into(),
        "SERIES".into(),
    ]];
    for j in &d.jobs {
        rows.push(vec![
            j.job.clone(),
            j.component.clone().unwrap_or_else(|| "-".into()),
            j.instances.to_string(),
            j.series
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    table(&rows);
    if d.jobs.is_empty() {
        crate::outln!("(no jobs found in the range)");
    }
    if !d.components.is_empty() {
        crate::outln!();
        let mut rows = vec![vec!["COMPONENT".into(), "JOBS".into(), "VERSIONS".into()]];
        for c in &d.components {
            rows.push(vec![
                c.name.clone(),
                c.jobs.join(", "),
                c.versions.join(", "),
            ]);
        }
        table(&rows);
    }
    for n in &d.notes {
        crate::outln!("note: {n}");
    }
}

pub(super) fn print_sample(rows: &[SampleRow]) {
    let mut t = vec![vec![
        "METRIC".into(),
        "LABELS".into(),
        "VALUE".into(),
        "TIME".into(),
    ]];
    for r in rows {
        t.push(vec![
            r.labels.metric_name().to_string(),
            r.labels.format_without_name(),
            r.value.to_string(),
            format_rfc3339_ms(r.timestamp_ms),
        ]);
    }
    table(&t);
    if rows.is_empty() {
        crate::outln!("(no series in the last 5 minutes of the range)");
    }
}

pub(super) fn print_verify(r: &VerifyReport) {
    let check = |c: Option<bool>, what: &str| match c {
        Some(true) => format!("ok ({what})"),
        Some(false) => "MISMATCH".into(),
        None => format!("not checked (no {what})"),
    };
    let range = match (r.min_ts, r.max_ts) {
        (Some(a), Some(b)) => format!("{} .. {}", format_rfc3339_ms(a), format_rfc3339_ms(b)),
        _ => "-".into(),
    };
    table(&[
        vec!["bundle".into(), r.path.display().to_string()],
        vec!["sha256".into(), r.archive_sha256.clone()],
        vec![
            "archive checksum".into(),
            check(r.archive_checksum, ".sha256 file"),
        ],
        vec![
            "metrics checksum".into(),
            check(r.metrics_checksum, "metrics_sha256 in metadata.json"),
        ],
        vec!["lines".into(), r.lines.to_string()],
        vec!["series".into(), r.series.to_string()],
        vec!["samples".into(), r.samples.to_string()],
        vec!["range".into(), range],
        vec!["metrics.jsonl".into(), format_size_short(r.bytes)],
    ]);
}

/// Left-aligned columns separated by two spaces.
fn table(rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        crate::outln!("{}", line.trim_end());
    }
}

/// The summary of a finished gather.
pub(super) fn print_export_outcome(o: &ExportOutcome) {
    let m = &o.metadata;
    crate::outln!("bundle: {}", o.bundle.display());
    crate::outln!("sha256: {}  ({})", o.sha256, o.checksum_file.display());
    crate::outln!(
        "{} lines, {} samples, {} windows{}, {} via {}, {} in {}",
        m.metrics_count,
        m.samples_count.unwrap_or(0),
        o.windows,
        if o.resumed_windows > 0 {
            format!(" ({} resumed)", o.resumed_windows)
        } else {
            String::new()
        },
        format_size_short(o.archive_bytes),
        m.export_method.as_deref().unwrap_or("export"),
        m.source_flavour.as_deref().unwrap_or("unknown"),
        format_duration(Duration::from_millis(o.elapsed.as_millis() as u64)),
    );
    if m.obfuscated {
        crate::outln!(
            "obfuscated: yes{}",
            match &o.obfuscation_map {
                Some(p) => format!(" (mapping written to {}, keep it private)", p.display()),
                None => String::new(),
            }
        );
    }
    if m.metrics_count == 0 {
        crate::errln!("note: the selectors matched no data in the range");
    }
}

/// The summary of a finished import (the verdict decides the exit code, in `drive.rs`).
pub(super) fn print_import_outcome(o: &ImportOutcome) {
    let c = &o.check;
    crate::outln!(
        "bundle: {} ({} lines, {} series, {} samples; checksums: archive {}, metrics.jsonl {})",
        o.bundle.display(),
        c.lines,
        c.series,
        c.samples,
        match c.archive_checksum {
            Some(true) => "ok",
            _ => "no .sha256 file",
        },
        match c.metrics_checksum {
            Some(true) => "ok",
            _ => "not in metadata",
        },
    );
    if o.shift_ms != 0 {
        crate::outln!(
            "shifted by {} to end now",
            format_duration(Duration::from_millis(o.shift_ms.unsigned_abs()))
        );
    }
    match (o.retention_cutoff_ms, &o.retention_source) {
        (Some(c), Some(src)) => crate::outln!(
            "target retention ({src}): points before {} {} skipped: {} samples, {} whole lines",
            format_rfc3339_ms(c),
            if o.dry_run { "would be" } else { "were" },
            o.skipped_samples,
            o.skipped_lines
        ),
        _ => crate::outln!("target retention: unknown (nothing skipped)"),
    }
    let verb = if o.dry_run {
        "would import"
    } else {
        "imported"
    };
    crate::outln!(
        "{verb} {} samples in {} lines ({} chunks){}",
        o.samples_sent,
        o.lines_sent,
        o.chunks,
        if o.resumed_from > 0 {
            format!(", resumed at byte {}", o.resumed_from)
        } else {
            String::new()
        }
    );
    if !o.dry_run {
        let fallback = if o.json_chunks > 0 {
            format!(
                "; {} as JSON lines (the first: {})",
                plural(o.json_chunks, "chunk"),
                o.json_reason.as_deref().unwrap_or("reason not recorded")
            )
        } else {
            String::new()
        };
        crate::outln!("sent as {}{fallback}", o.wire);
    }
    let secs = |d: Duration| format!("{:.2}s", d.as_secs_f64());
    crate::outln!(
        "checked in {}, {} in {}, verified in {}",
        secs(o.check_elapsed),
        if o.dry_run { "planned" } else { "uploaded" },
        secs(o.upload_elapsed),
        secs(o.verify_elapsed)
    );
}
