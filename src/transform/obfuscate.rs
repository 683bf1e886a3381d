//! Obfuscation of support bundles and their previews: what leaves the
//! machine must not reveal addresses, job names or chosen label values, yet
//! support must still see which series belong together.
//!
//! Rules (SPEC §4), deterministic within a run, `__name__` never touched:
//! - **IPs** (`ips`): the host of `instance` (an IP or a host name, with or
//!   without a port) becomes `777.777.X.Y` with the port kept; every IPv4
//!   literal, and every bracketed IPv6 literal, inside any other label value
//!   is replaced by the same fake address, so one machine keeps one address
//!   across labels. `777` is no valid octet: an obfuscated address can never
//!   be mistaken for a real one, nor be obfuscated twice.
//! - **Jobs** (`jobs`): `job` (and Prometheus' `scrape_job`) become
//!   `<component>-job-<n>`, numbered per component in order of first sight.
//!   The component comes from discovery (`vm_app_version` of that job), else
//!   from a `component`/`vm_component` label or a VictoriaMetrics metric
//!   prefix (`vmstorage_` ...), else `other`; never from the job name.
//! - **Labels** (`--obfuscate-label K`): the value of K becomes the first 16
//!   hex digits of SHA-256 over a per-run random salt and the value, so equal
//!   values stay equal and short values cannot be looked up in a dictionary.
//! - **Drop** (`--drop-label K`): K is removed before anything else.
//!
//! The mapping lives in memory. [`ObfuscatorState`] is what a resumable run
//! keeps on disk in its staging directory: the salt, the counters and, per
//! original value, only a salted digest and its replacement, so a resumed
//! run maps old values the same way and new ones to fresh numbers without the
//! originals being stored. The original → replacement table
//! ([`ObfuscationMap`]) exists only when the user asks for it
//! (`--obfuscation-map FILE`). Uses only `model`.

use crate::model::labels::METRIC_NAME;
use crate::model::{hex, Labels};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};

/// What to obfuscate; the parsed form of `--obfuscate`, `--obfuscate-label`, `--drop-label`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObfuscationOptions {
    #[serde(default)]
    pub ips: bool,
    #[serde(default)]
    pub jobs: bool,
    /// Label names whose values are replaced by salted hashes.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Label names removed from every series.
    #[serde(default)]
    pub drop_labels: Vec<String>,
}

/// Labels holding a job name.
const JOB_LABELS: [&str; 2] = ["job", "scrape_job"];
/// The label whose whole value is `host[:port]`.
const INSTANCE: &str = "instance";

impl ObfuscationOptions {
    /// Parses `--obfuscate` values: `ips`, `jobs` (comma-separated or repeated).
    pub fn set_kinds(&mut self, kinds: &[String]) -> Result<(), String> {
        for kind in kinds.iter().flat_map(|k| k.split(',')) {
            match kind.trim() {
                "ips" | "ip" | "instance" => self.ips = true,
                "jobs" | "job" => self.jobs = true,
                "" => {}
                other => {
                    return Err(format!(
                        "--obfuscate: unknown kind {other:?}; expected `ips`, `jobs` or `ips,jobs` \
                         (hash other labels with --obfuscate-label NAME)"
                    ))
                }
            }
        }
        Ok(())
    }

    /// Whether any value is rewritten (dropping labels alone does not count).
    pub fn is_enabled(&self) -> bool {
        self.ips || self.jobs || !self.labels.is_empty()
    }

    /// Whether any label is touched at all.
    pub fn is_active(&self) -> bool {
        self.is_enabled() || !self.drop_labels.is_empty()
    }

    pub fn check(&self) -> Result<(), String> {
        for (flag, names) in [
            ("--obfuscate-label", &self.labels),
            ("--drop-label", &self.drop_labels),
        ] {
            for n in names {
                if n == METRIC_NAME {
                    return Err(format!(
                        "{flag} {METRIC_NAME}: the metric name is never obfuscated or dropped; \
                         without it a series cannot be imported"
                    ));
                }
                if n.is_empty() {
                    return Err(format!("{flag}: the label name is empty"));
                }
            }
        }
        Ok(())
    }
}

/// What a resumable run keeps on disk (see the module doc): no original value.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ObfuscatorState {
    /// Hex of the per-run random salt.
    pub salt: String,
    pub hosts_assigned: u64,
    #[serde(default)]
    pub job_counters: BTreeMap<String, u64>,
    /// Salted digest of an original host → its fake address.
    #[serde(default)]
    pub hosts: BTreeMap<String, String>,
    /// Salted digest of an original job → its replacement.
    #[serde(default)]
    pub jobs: BTreeMap<String, String>,
}

/// Original → replacement, written only to `--obfuscation-map FILE`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ObfuscationMap {
    #[serde(default)]
    pub ips: BTreeMap<String, String>,
    #[serde(default)]
    pub jobs: BTreeMap<String, String>,
    /// Label name → (original value → hash).
    #[serde(default)]
    pub labels: BTreeMap<String, BTreeMap<String, String>>,
}

impl ObfuscationMap {
    pub fn is_empty(&self) -> bool {
        self.ips.is_empty() && self.jobs.is_empty() && self.labels.is_empty()
    }
}

/// Applies [`ObfuscationOptions`] to label sets; see the module doc.
#[derive(Debug)]
pub struct Obfuscator {
    opts: ObfuscationOptions,
    salt: [u8; 16],
    /// Job → component, from discovery.
    components: HashMap<String, String>,
    hosts: HashMap<String, String>,
    jobs: HashMap<String, String>,
    hashed: HashMap<(String, String), String>,
    state: ObfuscatorState,
    /// Set when the user asked for the map file.
    map: Option<ObfuscationMap>,
    /// The state changed since [`Obfuscator::take_dirty`] was last called.
    dirty: bool,
}

impl Obfuscator {
    /// A fresh run: a new random salt.
    pub fn new(opts: ObfuscationOptions) -> Obfuscator {
        let mut salt = [0u8; 16];
        // The salt is what keeps hashed values from being looked up: the OS generator, not a PRNG.
        getrandom::fill(&mut salt).expect("the operating system's random generator failed");
        let state = ObfuscatorState {
            salt: hex(&salt),
            ..Default::default()
        };
        Obfuscator {
            opts,
            salt,
            components: HashMap::new(),
            hosts: HashMap::new(),
            jobs: HashMap::new(),
            hashed: HashMap::new(),
            state,
            map: None,
            dirty: true,
        }
    }

    /// Continues a run from its saved state; `map` (read back from the
    /// user's map file, if any) restores the originals for that file.
    pub fn restore(
        opts: ObfuscationOptions,
        state: ObfuscatorState,
        map: Option<ObfuscationMap>,
    ) -> Result<Obfuscator, String> {
        let salt = unhex(&state.salt)
            .filter(|s| s.len() == 16)
            .ok_or_else(|| format!("obfuscation state: invalid salt {:?}", state.salt))?;
        let mut o = Obfuscator::new(opts);
        o.salt.copy_from_slice(&salt);
        o.state = state;
        if let Some(map) = map {
            o.hosts.extend(map.ips.clone());
            o.jobs.extend(map.jobs.clone());
            for (name, values) in &map.labels {
                for (v, h) in values {
                    o.hashed.insert((name.clone(), v.clone()), h.clone());
                }
            }
            o.map = Some(map);
        }
        o.dirty = false;
        Ok(o)
    }

    /// Keep the original → replacement table for `--obfuscation-map`.
    pub fn keep_map(&mut self) {
        if self.map.is_none() {
            self.map = Some(ObfuscationMap::default());
        }
    }

    /// Job → component names found by discovery; used to name obfuscated jobs.
    pub fn set_components(&mut self, components: HashMap<String, String>) {
        self.components = components;
    }

    pub fn options(&self) -> &ObfuscationOptions {
        &self.opts
    }

    pub fn state(&self) -> &ObfuscatorState {
        &self.state
    }

    pub fn map(&self) -> Option<&ObfuscationMap> {
        self.map.as_ref()
    }

    /// Whether new mappings appeared since the last call (then the state must be saved).
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Rewrites one label set in place.
    pub fn apply(&mut self, labels: &mut Labels) {
        if !self.opts.is_active() {
            return;
        }
        for name in &self.opts.drop_labels {
            labels.remove(name);
        }
        if !self.opts.is_enabled() || labels.is_empty() {
            return;
        }
        // Collect first: replacing values needs `&mut self` for the tables.
        let mut changes: Vec<(String, String)> = Vec::new();
        for label in labels.iter() {
            let name = label.name.as_str();
            let value = label.value.as_str();
            if name == METRIC_NAME {
                continue;
            }
            let new = if self.opts.jobs && JOB_LABELS.contains(&name) {
                Some(self.fake_job(value, labels))
            } else if self.opts.labels.iter().any(|l| l == name) {
                Some(self.hash_value(name, value))
            } else if self.opts.ips && name == INSTANCE {
                Some(self.fake_instance(value))
            } else if self.opts.ips {
                self.replace_ips(value)
            } else {
                None
            };
            if let Some(new) = new {
                if new != value {
                    changes.push((name.to_string(), new));
                }
            }
        }
        for (name, value) in changes {
            labels.set(name, value);
        }
    }

    /// `host[:port]` with the host replaced; see the module doc.
    fn fake_instance(&mut self, value: &str) -> String {
        let (host, port) = split_host_port(value);
        let fake = self.fake_host(host);
        match port {
            Some(p) => format!("{fake}:{p}"),
            None => fake,
        }
    }

    fn fake_host(&mut self, host: &str) -> String {
        if let Some(f) = self.hosts.get(host) {
            return f.clone();
        }
        let digest = self.digest(b"ip", host);
        let fake = match self.state.hosts.get(&digest) {
            Some(f) => f.clone(),
            None => {
                self.state.hosts_assigned += 1;
                let n = self.state.hosts_assigned - 1;
                // As vmgather: 777.777.1.1 .. 777.777.1.255, 777.777.2.1, ...
                let fake = format!("777.777.{}.{}", n / 255 + 1, n % 255 + 1);
                self.state.hosts.insert(digest, fake.clone());
                self.dirty = true;
                fake
            }
        };
        if let Some(map) = &mut self.map {
            map.ips.insert(host.to_string(), fake.clone());
        }
        self.hosts.insert(host.to_string(), fake.clone());
        fake
    }

    fn fake_job(&mut self, job: &str, labels: &Labels) -> String {
        if let Some(f) = self.jobs.get(job) {
            return f.clone();
        }
        let digest = self.digest(b"job", job);
        let fake = match self.state.jobs.get(&digest) {
            Some(f) => f.clone(),
            None => {
                let component = self.component_for(job, labels);
                let n = self
                    .state
                    .job_counters
                    .entry(component.clone())
                    .or_insert(0);
                *n += 1;
                let fake = format!("{component}-job-{n}");
                self.state.jobs.insert(digest, fake.clone());
                self.dirty = true;
                fake
            }
        };
        if let Some(map) = &mut self.map {
            map.jobs.insert(job.to_string(), fake.clone());
        }
        self.jobs.insert(job.to_string(), fake.clone());
        fake
    }

    fn component_for(&self, job: &str, labels: &Labels) -> String {
        if let Some(c) = self.components.get(job) {
            return sanitize_component(c);
        }
        for name in ["component", "vm_component"] {
            if let Some(c) = labels.get(name) {
                if c != job {
                    return sanitize_component(c);
                }
            }
        }
        let metric = labels.metric_name();
        for prefix in [
            "vmstorage",
            "vmselect",
            "vminsert",
            "vmagent",
            "vmalert",
            "vmauth",
            "vmbackup",
        ] {
            if metric.starts_with(prefix) && metric[prefix.len()..].starts_with('_') {
                return prefix.to_string();
            }
        }
        "other".to_string()
    }

    fn hash_value(&mut self, name: &str, value: &str) -> String {
        let key = (name.to_string(), value.to_string());
        if let Some(h) = self.hashed.get(&key) {
            return h.clone();
        }
        let mut d = Sha256::new();
        d.update(self.salt);
        d.update(b"label\0");
        d.update(name.as_bytes());
        d.update([0u8]);
        d.update(value.as_bytes());
        let h = hex(&d.finalize()[..8]);
        if let Some(map) = &mut self.map {
            map.labels
                .entry(name.to_string())
                .or_default()
                .insert(value.to_string(), h.clone());
            self.dirty = true;
        }
        self.hashed.insert(key, h.clone());
        h
    }

    /// Replaces IP literals inside a free-form value; `None` when there is none.
    fn replace_ips(&mut self, value: &str) -> Option<String> {
        let found = find_ips(value);
        if found.is_empty() {
            return None;
        }
        let mut out = String::with_capacity(value.len());
        let mut last = 0;
        for (start, end, host) in found {
            out.push_str(&value[last..start]);
            out.push_str(&self.fake_host(host));
            last = end;
        }
        out.push_str(&value[last..]);
        Some(out)
    }

    fn digest(&self, kind: &[u8], value: &str) -> String {
        let mut d = Sha256::new();
        d.update(self.salt);
        d.update(kind);
        d.update([0u8]);
        d.update(value.as_bytes());
        hex(&d.finalize()[..16])
    }

    /// Rewrites literal values in series selectors for the bundle's metadata:
    /// with obfuscation on, every matcher value except the metric name's is
    /// hidden, so a `--job` or `--selector` cannot leak what the data hides.
    pub fn redact_selector(&self, selector: &str) -> String {
        if !self.opts.is_enabled() {
            return selector.to_string();
        }
        redact_selector_values(selector)
    }
}

/// Component names go into job names: keep them short and tame.
fn sanitize_component(c: &str) -> String {
    let s: String = c
        .chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() || ch == '-' || ch == '_' {
                ch
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    if s.is_empty() {
        "other".into()
    } else {
        s
    }
}

/// `10.0.0.1:9100` → (`10.0.0.1`, `9100`); `[::1]:80` → (`::1`, `80`);
/// `node-1` → (`node-1`, none); bare IPv6 has no port.
fn split_host_port(value: &str) -> (&str, Option<&str>) {
    if let Some(rest) = value.strip_prefix('[') {
        if let Some(close) = rest.find(']') {
            let host = &rest[..close];
            let after = &rest[close + 1..];
            return match after.strip_prefix(':') {
                Some(p) if is_port(p) => (host, Some(p)),
                _ => (host, None),
            };
        }
    }
    match value.rfind(':') {
        Some(i) if value[..i].find(':').is_none() && is_port(&value[i + 1..]) => {
            (&value[..i], Some(&value[i + 1..]))
        }
        _ => (value, None),
    }
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

/// `(start, end, host)` of every IPv4 literal and bracketed IPv6 literal in `s`.
fn find_ips(s: &str) -> Vec<(usize, usize, &str)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'[' {
            if let Some(close) = s[i + 1..].find(']') {
                let inner = &s[i + 1..i + 1 + close];
                if inner.contains(':') && inner.parse::<std::net::Ipv6Addr>().is_ok() {
                    // The host without brackets: the fake is an IPv4-looking name.
                    out.push((i, i + close + 2, inner));
                    i += close + 2;
                    continue;
                }
            }
        }
        if b[i].is_ascii_digit() && (i == 0 || !(b[i - 1].is_ascii_digit() || b[i - 1] == b'.')) {
            if let Some(end) = ipv4_at(b, i) {
                out.push((i, end, &s[i..end]));
                i = end;
                continue;
            }
        }
        i += 1;
    }
    out
}

/// The end of a dotted-quad IPv4 literal starting at `start`, if one is there.
fn ipv4_at(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start;
    for octet in 0..4 {
        let s = i;
        while i < b.len() && b[i].is_ascii_digit() && i - s < 4 {
            i += 1;
        }
        let len = i - s;
        if len == 0 || len > 3 {
            return None;
        }
        let v: u32 = std::str::from_utf8(&b[s..i]).ok()?.parse().ok()?;
        if v > 255 {
            return None;
        }
        if octet < 3 {
            if i >= b.len() || b[i] != b'.' {
                return None;
            }
            i += 1;
        }
    }
    // Not part of a longer dotted number (`1.2.3.4.5`) or a bigger number.
    if i < b.len()
        && (b[i].is_ascii_digit() || (b[i] == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)))
    {
        return None;
    }
    Some(i)
}

/// Replaces each quoted matcher value whose label is not `__name__`.
fn redact_selector_values(selector: &str) -> String {
    let mut out = String::with_capacity(selector.len());
    let mut chars = selector.char_indices().peekable();
    let mut last_ident = String::new();
    let mut ident = String::new();
    while let Some((_, c)) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                let quote = c;
                let mut escaped = false;
                let mut value = String::new();
                for (_, c2) in chars.by_ref() {
                    if escaped {
                        escaped = false;
                        value.push(c2);
                        continue;
                    }
                    if c2 == '\\' && quote != '`' {
                        escaped = true;
                        value.push(c2);
                        continue;
                    }
                    if c2 == quote {
                        break;
                    }
                    value.push(c2);
                }
                out.push(quote);
                if last_ident == METRIC_NAME {
                    out.push_str(&value);
                } else {
                    out.push_str("<obfuscated>");
                }
                out.push(quote);
            }
            c if c.is_alphanumeric() || c == '_' || c == ':' => {
                ident.push(c);
                out.push(c);
                if !chars
                    .peek()
                    .is_some_and(|(_, n)| n.is_alphanumeric() || *n == '_' || *n == ':')
                {
                    last_ident = std::mem::take(&mut ident);
                }
            }
            c => out.push(c),
        }
    }
    out
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::selector::parse_label_set;

    fn opts(ips: bool, jobs: bool) -> ObfuscationOptions {
        ObfuscationOptions {
            ips,
            jobs,
            ..Default::default()
        }
    }

    fn apply(o: &mut Obfuscator, s: &str) -> String {
        let mut l = parse_label_set(s).unwrap();
        o.apply(&mut l);
        l.to_string()
    }

    #[test]
    fn ips_keep_ports_and_grouping() {
        let mut o = Obfuscator::new(opts(true, false));
        assert_eq!(
            apply(&mut o, r#"up{instance="10.0.0.1:9100", job="node"}"#),
            r#"up{instance="777.777.1.1:9100", job="node"}"#
        );
        // Same host on another port, and inside another label: same fake address.
        assert_eq!(
            apply(
                &mut o,
                r#"up{instance="10.0.0.1:8080", url="http://10.0.0.1:8428/x", peer="10.0.0.2"}"#
            ),
            r#"up{instance="777.777.1.1:8080", peer="777.777.1.2", url="http://777.777.1.1:8428/x"}"#
        );
        assert_eq!(
            apply(&mut o, r#"up{instance="vmstorage-0.svc:8482"}"#),
            r#"up{instance="777.777.1.3:8482"}"#
        );
        assert_eq!(
            apply(
                &mut o,
                r#"up{instance="[2001:db8::1]:9100", a="x [2001:db8::1] y"}"#
            ),
            r#"up{a="x 777.777.1.4 y", instance="777.777.1.4:9100"}"#
        );
        // Not addresses: versions with more parts, big octets, already fake.
        assert_eq!(
            apply(
                &mut o,
                r#"up{v="1.2.3.4.5", w="300.1.1.1", x="777.777.1.1"}"#
            ),
            r#"up{v="1.2.3.4.5", w="300.1.1.1", x="777.777.1.1"}"#
        );
    }

    #[test]
    fn jobs_get_component_names_and_never_their_own() {
        let mut o = Obfuscator::new(opts(false, true));
        o.set_components(HashMap::from([("prod-storage".into(), "vmstorage".into())]));
        assert_eq!(
            apply(&mut o, r#"up{job="prod-storage"}"#),
            r#"up{job="vmstorage-job-1"}"#
        );
        assert_eq!(
            apply(&mut o, r#"vmagent_rows{job="edge"}"#),
            r#"vmagent_rows{job="vmagent-job-1"}"#
        );
        assert_eq!(
            apply(&mut o, r#"node_load1{job="node", scrape_job="edge"}"#),
            r#"node_load1{job="other-job-1", scrape_job="vmagent-job-1"}"#
        );
        assert_eq!(
            apply(&mut o, r#"up{job="prod-storage", instance="10.1.1.1:1"}"#),
            r#"up{instance="10.1.1.1:1", job="vmstorage-job-1"}"#
        );
    }

    #[test]
    fn labels_hash_and_drop_and_name_is_kept() {
        let mut o = Obfuscator::new(ObfuscationOptions {
            labels: vec!["pod".into()],
            drop_labels: vec!["secret".into()],
            ..Default::default()
        });
        let out = apply(&mut o, r#"up{pod="web-1", secret="x", keep="y"}"#);
        assert!(out.starts_with("up{keep=\"y\", pod=\""), "{out}");
        assert!(!out.contains("web-1") && !out.contains("secret"), "{out}");
        assert_eq!(
            out,
            apply(&mut o, r#"up{pod="web-1"}"#).replace("up{", "up{keep=\"y\", ")
        );
        let bad = ObfuscationOptions {
            labels: vec!["__name__".into()],
            ..Default::default()
        };
        assert!(bad.check().unwrap_err().contains("never obfuscated"));
    }

    #[test]
    fn restored_state_maps_old_values_alike_and_new_ones_fresh() {
        let o1 = {
            let mut o = Obfuscator::new(opts(true, true));
            apply(&mut o, r#"up{instance="10.0.0.1:1", job="a"}"#);
            apply(&mut o, r#"up{instance="10.0.0.2:1", job="b"}"#);
            o
        };
        let state = o1.state().clone();
        let text = serde_json::to_string(&state).unwrap();
        assert!(
            !text.contains("10.0.0") && !text.contains("\"a\""),
            "{text}"
        );
        let mut o2 = Obfuscator::restore(opts(true, true), state, None).unwrap();
        assert_eq!(
            apply(&mut o2, r#"up{instance="10.0.0.2:7", job="b"}"#),
            r#"up{instance="777.777.1.2:7", job="other-job-2"}"#
        );
        assert_eq!(
            apply(&mut o2, r#"up{instance="10.0.0.3:7", job="c"}"#),
            r#"up{instance="777.777.1.3:7", job="other-job-3"}"#
        );
        assert!(o2.take_dirty());
        assert!(!o2.take_dirty());
    }

    #[test]
    fn map_only_when_asked() {
        let mut o = Obfuscator::new(opts(true, true));
        apply(&mut o, r#"up{instance="10.0.0.1:1", job="a"}"#);
        assert!(o.map().is_none());
        o.keep_map();
        apply(&mut o, r#"up{instance="10.0.0.9:1", job="z"}"#);
        let m = o.map().unwrap();
        assert_eq!(m.ips["10.0.0.9"], "777.777.1.2");
        assert_eq!(m.jobs["z"], "other-job-2");
    }

    #[test]
    fn selectors_are_redacted() {
        assert_eq!(
            redact_selector_values(r#"up{job="node", instance=~"10\\.0.*"} "#),
            r#"up{job="<obfuscated>", instance=~"<obfuscated>"} "#
        );
        assert_eq!(
            redact_selector_values(r#"{__name__=~"vm_.*", job!="x"}"#),
            r#"{__name__=~"vm_.*", job!="<obfuscated>"}"#
        );
    }

    #[test]
    fn kinds_parse() {
        let mut o = ObfuscationOptions::default();
        o.set_kinds(&["ips,jobs".into()]).unwrap();
        assert!(o.ips && o.jobs);
        assert!(o
            .set_kinds(&["pods".into()])
            .unwrap_err()
            .contains("unknown kind"));
    }
}
