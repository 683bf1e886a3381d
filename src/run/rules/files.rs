//! Finding and reading rule files: glob patterns as vmalert's `-rule` flag
//! takes them, and `%{ENV_VAR}` placeholders as vmalert expands them.
//!
//! Globs follow Go's `filepath.Glob` (`*`, `?`, `[a-z]`, `[!x]`, `\` escapes,
//! matched one path segment at a time) plus `**` as a whole segment for "any
//! number of directories", which vmalert documents for `-rule="dir/**/*.yaml"`.
//! A pattern without metacharacters names a file directly; a pattern that
//! matches nothing is not an error (vmalert only logs it). Two deliberate
//! differences from Go: wildcards (and `**`) skip hidden entries unless the
//! pattern segment starts with a dot, so a Kubernetes ConfigMap mount's
//! `..data` copies are not loaded twice; and a directory matched by the last
//! segment is skipped instead of failing to read.

use std::path::{Path, PathBuf};

/// Files matching `pattern`, sorted, as paths spelled like the pattern (a
/// relative pattern gives relative paths, which read well in messages).
pub(crate) fn expand_glob(pattern: &str) -> Result<Vec<PathBuf>, String> {
    if pattern.is_empty() {
        return Err("path cannot be empty".into());
    }
    if !has_meta(pattern) {
        let p = PathBuf::from(pattern);
        return Ok(if p.exists() { vec![p] } else { Vec::new() });
    }
    let absolute = pattern.starts_with('/');
    let segments: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty()).collect();
    for s in &segments {
        validate_segment(s).map_err(|e| format!("syntax error in pattern {pattern:?}: {e}"))?;
    }
    let start = if absolute {
        PathBuf::from("/")
    } else {
        PathBuf::new()
    };
    let mut out = Vec::new();
    walk(&start, &segments, &mut out);
    out.sort();
    out.dedup();
    Ok(out)
}

fn has_meta(s: &str) -> bool {
    s.contains(['*', '?', '[', '\\'])
}

fn walk(base: &Path, segments: &[&str], out: &mut Vec<PathBuf>) {
    let Some((first, rest)) = segments.split_first() else {
        out.push(base.to_path_buf());
        return;
    };
    let dir = if base.as_os_str().is_empty() {
        Path::new(".")
    } else {
        base
    };
    if *first == "**" {
        // Zero directories, then every directory below, one level at a time.
        walk(base, rest, out);
        for entry in sorted_entries(dir) {
            // Hidden directories stay hidden from `**` too (see below).
            if entry.is_dir && !entry.name.starts_with('.') {
                walk(&base.join(&entry.name), segments, out);
            }
        }
        return;
    }
    if !has_meta(first) {
        let next = base.join(first);
        if rest.is_empty() {
            if next.exists() {
                out.push(next);
            }
        } else if next.is_dir() {
            walk(&next, rest, out);
        }
        return;
    }
    for entry in sorted_entries(dir) {
        // Unlike Go, a wildcard does not pick hidden entries unless the
        // pattern segment starts with a dot: a Kubernetes ConfigMap mount
        // holds `..data` and `..<timestamp>` directories next to the files.
        if entry.name.starts_with('.') && !first.starts_with('.') {
            continue;
        }
        if segment_matches(first, &entry.name) {
            let next = base.join(&entry.name);
            if rest.is_empty() {
                // Rule files only: a directory matched by `*` is skipped.
                if !entry.is_dir {
                    out.push(next);
                }
            } else if entry.is_dir {
                walk(&next, rest, out);
            }
        }
    }
}

struct Entry {
    name: String,
    is_dir: bool,
}

fn sorted_entries(dir: &Path) -> Vec<Entry> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<Entry> = rd
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            // Follow symlinks: a linked rules directory is common in k8s mounts.
            let is_dir = e.path().is_dir();
            Some(Entry { name, is_dir })
        })
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

fn validate_segment(seg: &str) -> Result<(), String> {
    let chars: Vec<char> = seg.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                if i + 1 >= chars.len() {
                    return Err("trailing backslash".into());
                }
                i += 2;
            }
            '[' => {
                let end = class_end(&chars, i).ok_or("unterminated character class")?;
                i = end + 1;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// Index of the `]` closing the class that opens at `open`.
fn class_end(chars: &[char], open: usize) -> Option<usize> {
    let mut i = open + 1;
    if i < chars.len() && (chars[i] == '^' || chars[i] == '!') {
        i += 1;
    }
    let mut first = true;
    while i < chars.len() {
        match chars[i] {
            ']' if !first => return Some(i),
            '\\' => i += 2,
            _ => i += 1,
        }
        first = false;
    }
    None
}

/// Go's `filepath.Match` for one segment (no `/` on either side).
pub(crate) fn segment_matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    match_from(&p, 0, &n, 0)
}

fn match_from(p: &[char], mut pi: usize, n: &[char], mut ni: usize) -> bool {
    while pi < p.len() {
        match p[pi] {
            '*' => {
                // Collapse runs of stars, then try every split point.
                while pi < p.len() && p[pi] == '*' {
                    pi += 1;
                }
                if pi == p.len() {
                    return true;
                }
                return (ni..=n.len()).any(|k| match_from(p, pi, n, k));
            }
            '?' => {
                if ni >= n.len() {
                    return false;
                }
                pi += 1;
                ni += 1;
            }
            '[' => {
                let Some(end) = class_end(p, pi) else {
                    return false;
                };
                if ni >= n.len() || !class_matches(&p[pi + 1..end], n[ni]) {
                    return false;
                }
                pi = end + 1;
                ni += 1;
            }
            c => {
                let (lit, adv) = if c == '\\' && pi + 1 < p.len() {
                    (p[pi + 1], 2)
                } else {
                    (c, 1)
                };
                if ni >= n.len() || n[ni] != lit {
                    return false;
                }
                pi += adv;
                ni += 1;
            }
        }
    }
    ni == n.len()
}

fn class_matches(class: &[char], c: char) -> bool {
    let (negate, body) = match class.first() {
        Some('^') | Some('!') => (true, &class[1..]),
        _ => (false, class),
    };
    let mut i = 0;
    let mut hit = false;
    while i < body.len() {
        let mut lo = body[i];
        if lo == '\\' && i + 1 < body.len() {
            i += 1;
            lo = body[i];
        }
        let mut hi = lo;
        if i + 2 < body.len() && body[i + 1] == '-' {
            hi = body[i + 2];
            if hi == '\\' && i + 3 < body.len() {
                hi = body[i + 3];
                i += 1;
            }
            i += 2;
        }
        if lo <= c && c <= hi {
            hit = true;
        }
        i += 1;
    }
    hit != negate
}

/// Replaces `%{NAME}` with the variable's value, as vmalert's `envtemplate`
/// does before parsing a rule file. Placeholders whose name is not a valid
/// variable name (`[a-zA-Z_][a-zA-Z0-9_.-]*`) stay as written; a valid name
/// that is not set is an error, returned with the 1-based line it is on.
pub(crate) fn expand_env(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, (u64, String)> {
    if !text.contains("%{") {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("%{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        if is_env_name(name) {
            match lookup(name) {
                Some(v) => out.push_str(&v),
                None => {
                    let line = text[..text.len() - rest.len() + start]
                        .matches('\n')
                        .count() as u64
                        + 1;
                    return Err((line, format!("missing {name:?} env var")));
                }
            }
        } else {
            out.push_str(&rest[start..start + 2 + end + 1]);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn is_env_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || matches!(x, '_' | '-' | '.'))
}
