//! The capture worker: one task that sweeps silent series, closes finished
//! instances, saves dirty keys and copies the next chunk of the oldest key
//! to its destinations (see the flow in the module docs of [`super`]).

use super::*;

impl Captures {
    /// Starts the worker of a live manager (`spillway run`).
    pub fn start(&self) {
        let mut w = lock(&self.inner.worker);
        if w.is_some() {
            return;
        }
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let this = self.clone();
        let task = tokio::spawn(async move {
            loop {
                if *rx.borrow() {
                    break;
                }
                let mut no_report = None;
                let worked = tokio::select! {
                    r = this.step(&mut no_report) => r,
                    _ = rx.changed() => break,
                };
                if !worked {
                    tokio::select! {
                        _ = this.inner.wake.notified() => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = rx.changed() => break,
                    }
                }
            }
        });
        *w = Some((tx, task));
    }

    /// Stops the worker (a chunk in progress is abandoned: copied again at
    /// the next start) and saves every key.
    pub async fn shutdown(&self) {
        let worker = lock(&self.inner.worker).take();
        if let Some((tx, task)) = worker {
            let _ = tx.send(true);
            let _ = task.await;
        }
        self.save_dirty().await;
    }

    /// Copies every chunk that can be copied now, then returns what was done
    /// (`replay`, `spillway capture`).
    pub async fn run_until_idle(&self) -> CaptureReport {
        let started = self.inner.clock.now_ms();
        let mut report = CaptureReport::default();
        {
            let mut r = Some(&mut report);
            while self.step(&mut r).await {}
        }
        // Closes what was finished by the last chunk.
        let config = self.config();
        let now = self.inner.clock.now_ms();
        let horizon = now - config.lag_ms;
        self.housekeeping(&config, now, horizon);
        self.save_dirty().await;
        let keys = lock(&self.inner.keys);
        for k in keys.values().filter(|k| config.def(&k.capture).is_some()) {
            for i in &k.instances {
                report.captures += 1;
                report.series += i.admitted.len() as u64;
                report.pending_ms += (i.end_ms() - horizon.max(i.from_ms)).max(0);
            }
            for s in k.history.iter().filter(|s| s.closed_at_ms >= started) {
                report.captures += 1;
                report.series += s.series as u64;
            }
        }
        report.method = self.source_note();
        report
    }

    fn source_note(&self) -> Option<String> {
        read(&self.inner.source).as_ref().map(|s| {
            let (m, note) = s.method();
            match (m, note) {
                (_, Some(n)) => n,
                (Some(m), None) => format!("raw samples via {}", m.as_str()),
                (None, None) => "not read yet".into(),
            }
        })
    }

    /// One round: housekeeping, then at most one chunk. Returns whether a
    /// chunk was tried (there may be more to do at once).
    async fn step(&self, report: &mut Option<&mut CaptureReport>) -> bool {
        let config = self.config();
        let now = self.inner.clock.now_ms();
        let horizon = now - config.lag_ms;
        self.housekeeping(&config, now, horizon);
        // Live: a new capture is on disk before its first chunk (a restart
        // finds it). Batch runs are simply run again: their keys are
        // written with the first chunk.
        if self.inner.mode == Mode::Live {
            self.save_dirty().await;
        }
        let Some((id, job)) = self.next_job(&config, now, horizon) else {
            return false;
        };
        self.copy(id, job, report).await;
        true
    }

    fn housekeeping(&self, config: &CaptureConfig, now: i64, horizon: i64) {
        if self.inner.mode == Mode::Live {
            let mut events = Vec::new();
            lock(&self.inner.tracker).sweep(horizon, SILENCE_INTERVALS, &mut events);
            self.apply(events);
        }
        let max_interval = config
            .intervals
            .values()
            .copied()
            .max()
            .unwrap_or(0)
            .max(config.default_interval_ms);
        let grace = SILENCE_INTERVALS * max_interval + config.lag_ms;
        let restored_expired =
            self.inner.mode == Mode::Live && now - *lock(&self.inner.loaded_at_ms) > grace;
        let mut keys = lock(&self.inner.keys);
        let mut dirty = lock(&self.inner.dirty);
        let mut forget = Vec::new();
        for k in keys.values_mut() {
            let Some(def) = config.def(&k.capture) else {
                for s in k.close_finished(now) {
                    self.closed(&k.capture, &k.key, &s);
                    dirty.insert(k.key.clone());
                }
                continue;
            };
            if restored_expired && k.instances.iter().any(|i| i.restored) {
                k.expire_restored(def, config.default_interval_ms);
                dirty.insert(k.key.clone());
            }
            if k.check_max_duration(horizon) {
                metrics::counter!("spillway_captures_truncated_total", "capture" => def.name.to_string(), "reason" => "max_duration").increment(1);
                tracing::warn!(capture = %def.name, key = %k.key, "capture reached max_duration while the breach goes on; it stops there (truncated)");
                dirty.insert(k.key.clone());
            }
            for s in k.close_finished(now) {
                self.closed(&k.capture, &k.key, &s);
                dirty.insert(k.key.clone());
            }
            // Keys with nothing open are kept for a week (their copied
            // ranges prevent re-sending), then forgotten.
            if !k.is_active() && now - k.updated_at_ms > 7 * 86_400_000 {
                forget.push(k.key.clone());
            }
        }
        for id in forget {
            keys.remove(&id);
            dirty.remove(&id);
            if let Some(s) = lock(&self.inner.store).as_ref() {
                let _ = s.remove(&id);
            }
        }
    }

    fn closed(&self, capture: &str, key: &str, s: &state::Summary) {
        metrics::counter!("spillway_captures_closed_total", "capture" => capture.to_string())
            .increment(1);
        tracing::info!(
            capture,
            key,
            from = %format_rfc3339_ms(s.from_ms),
            to = %format_rfc3339_ms(s.to_ms),
            series = s.series,
            samples = s.samples,
            truncated = ?s.truncated,
            "capture closed"
        );
    }

    async fn save_dirty(&self) {
        let ids: Vec<String> = lock(&self.inner.dirty).drain().collect();
        if ids.is_empty() {
            return;
        }
        let Some(store) = lock(&self.inner.store).clone() else {
            return;
        };
        let states: Vec<KeyState> = {
            let keys = lock(&self.inner.keys);
            ids.iter().filter_map(|id| keys.get(id).cloned()).collect()
        };
        let result = tokio::task::spawn_blocking(move || {
            states
                .iter()
                .map(|k| store.save(k).map_err(|e| (k.key.clone(), e)))
                .filter_map(Result::err)
                .collect::<Vec<_>>()
        })
        .await;
        if let Ok(failed) = result {
            for (id, e) in failed {
                tracing::error!(key = %id, "cannot save the capture state: {e}; it is tried again");
                lock(&self.inner.dirty).insert(id);
            }
        }
    }

    /// The oldest ready chunk over all keys, as a job.
    fn next_job(
        &self,
        config: &CaptureConfig,
        now: i64,
        horizon: i64,
    ) -> Option<(String, PendingJob)> {
        let keys = lock(&self.inner.keys);
        let (k, def, chunk) = keys
            .values()
            .filter(|k| k.retry_at_ms <= now)
            .filter_map(|k| {
                let def = config.def(&k.capture)?;
                Some((k, def, k.next_chunk(def, horizon)?))
            })
            .min_by_key(|(_, _, c)| c.from_ms)?;
        let inst = &k.instances[chunk.instance];
        Some((
            k.key.clone(),
            PendingJob {
                def: def.clone(),
                selectors: k.selectors.clone(),
                from_ms: chunk.from_ms,
                to_ms: chunk.to_ms,
                admitted: inst.admitted.clone(),
                samples_left: def.max_samples.saturating_sub(inst.samples),
            },
        ))
    }

    async fn copy(&self, id: String, mut job: PendingJob, report: &mut Option<&mut CaptureReport>) {
        let Some(source) = read(&self.inner.source).clone() else {
            self.failed(&id, "no datasource to read raw samples from".into());
            return;
        };
        let def = &job.def;
        let out = Out {
            router: &*self.inner.router,
            origin: Origin {
                kind: ExportKind::Capture,
                capture: Some(Arc::clone(&def.name)),
                ..Origin::default()
            },
            destinations: &def.destinations,
        };
        let result = source
            .copy(
                Job {
                    selectors: &job.selectors,
                    from_ms: job.from_ms,
                    to_ms: job.to_ms,
                    max_series: def.max_series,
                    admitted: std::mem::take(&mut job.admitted),
                    samples_left: job.samples_left,
                    labels: &def.labels,
                    fallback_step_ms: def.fallback_step_ms,
                },
                &out,
            )
            .await;
        let outcome = match result {
            Ok(o) => o,
            Err(e) => {
                let msg = format!(
                    "copying {} .. {}: {e}",
                    format_rfc3339_ms(job.from_ms),
                    format_rfc3339_ms(job.to_ms)
                );
                if let Some(r) = report.as_deref_mut() {
                    r.errors.push(format!(
                        "capture {} ({}): {msg}",
                        def.name,
                        job.selectors.join(" ")
                    ));
                }
                self.failed(&id, msg);
                return;
            }
        };
        let samples = outcome.samples;
        if !self.record(&id, &job, outcome, report) {
            return;
        }
        // The chunk counts as copied only once this is on disk.
        self.save_dirty().await;
        if let Some(r) = report.as_deref_mut() {
            r.chunks += 1;
            r.samples += samples;
        }
    }

    /// Applies a copied chunk to its key; `false` if the key is gone.
    fn record(
        &self,
        id: &str,
        job: &PendingJob,
        outcome: fetch::Outcome,
        report: &mut Option<&mut CaptureReport>,
    ) -> bool {
        let def = &job.def;
        let now = self.inner.clock.now_ms();
        let mut keys = lock(&self.inner.keys);
        let Some(k) = keys.get_mut(id) else {
            return false;
        };
        k.copied.add(job.from_ms, job.to_ms);
        k.last_error = None;
        k.failures = 0;
        k.updated_at_ms = now;
        if let Some(i) = k
            .instances
            .iter_mut()
            .find(|i| i.from_ms <= job.from_ms && job.from_ms < i.end_ms())
        {
            i.samples += outcome.samples;
            i.admitted.extend(outcome.admitted);
            i.refused_series += outcome.refused_series;
            let name = def.name.to_string();
            if outcome.series_limited && i.truncated.insert("max_series".into()) {
                metrics::counter!("spillway_captures_truncated_total", "capture" => name.clone(), "reason" => "max_series").increment(1);
                tracing::warn!(capture = %name, key = %id, max_series = def.max_series, "capture truncated: its selectors match more than max_series series; the first ones are copied");
                if let Some(r) = report.as_deref_mut() {
                    r.truncated.push(format!(
                        "capture {name} ({}): more than max_series ({}) series",
                        job.selectors.join(" "),
                        def.max_series
                    ));
                }
            }
            if outcome.samples_limited && i.truncated.insert("max_samples".into()) {
                i.stopped = true;
                metrics::counter!("spillway_captures_truncated_total", "capture" => name.clone(), "reason" => "max_samples").increment(1);
                tracing::warn!(capture = %name, key = %id, max_samples = def.max_samples, "capture truncated: max_samples reached; nothing more is copied for it");
                if let Some(r) = report.as_deref_mut() {
                    r.truncated.push(format!(
                        "capture {name} ({}): max_samples ({}) reached",
                        job.selectors.join(" "),
                        def.max_samples
                    ));
                }
            }
        }
        // Closed now, the key is written once for the chunk and the close.
        for s in k.close_finished(now) {
            self.closed(&k.capture, &k.key, &s);
        }
        lock(&self.inner.dirty).insert(id.to_string());
        true
    }

    fn failed(&self, id: &str, msg: String) {
        let now = self.inner.clock.now_ms();
        let mut keys = lock(&self.inner.keys);
        let Some(k) = keys.get_mut(id) else { return };
        k.failures += 1;
        let backoff = 1000i64 << k.failures.min(6);
        k.retry_at_ms = now + backoff;
        if k.failures == 1 || k.last_error.as_deref() != Some(msg.as_str()) {
            tracing::warn!(capture = %k.capture, key = %id, retry_in_ms = backoff, "capture: {msg}");
        }
        k.last_error = Some(msg);
        metrics::counter!("spillway_capture_errors_total", "capture" => k.capture.clone(), "reason" => "copy").increment(1);
    }
}

struct PendingJob {
    def: CaptureDef,
    selectors: Vec<String>,
    from_ms: i64,
    to_ms: i64,
    admitted: HashSet<u64>,
    samples_left: u64,
}

/// Copied batches to the capture's destinations, counted per destination.
struct Out<'a> {
    router: &'a dyn CaptureRouter,
    origin: Origin,
    destinations: &'a [String],
}

impl BatchOut for Out<'_> {
    fn send(&self, batch: Vec<Series>) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let samples = crate::model::series::sample_count(&batch) as u64;
            self.router
                .route_to(
                    ExportBatch::new(self.origin.clone(), batch),
                    self.destinations,
                )
                .await?;
            let capture = self
                .origin
                .capture
                .as_deref()
                .unwrap_or_default()
                .to_string();
            for d in self.destinations {
                metrics::counter!("spillway_capture_samples_total", "capture" => capture.clone(), "destination" => d.clone())
                    .increment(samples);
            }
            Ok(())
        })
    }
}
