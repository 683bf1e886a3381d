//! Export jobs: queued behind [`MAX_RUNNING_EXPORTS`] running ones,
//! driven by [`crate::bundle::drive`], cancelled and resumed by id.

use super::*;

impl JobManager {
    /// Queues an export; it starts once fewer than three are running.
    pub fn start_export(
        self: &Arc<Self>,
        spec: ExportSpec,
        client: ClientConfig,
    ) -> Result<String, JobError> {
        let mut inner = self.lock();
        self.check_export_queue(&inner)?;
        inner.seq += 1;
        let seq = inner.seq;
        let id = new_id();
        let cancel = CancelToken::default();
        inner.exports.insert(
            id.clone(),
            Entry {
                snap: ExportSnapshot {
                    id: id.clone(),
                    spec: spec.clone(),
                    state: JobState::Queued,
                    queue_position: None,
                    progress: None,
                    outcome: None,
                    error: None,
                    created_ms: now_ms(),
                    runs: 1,
                },
                seq,
                cancel: cancel.clone(),
                finished_at: None,
                state_tx: watch::channel(JobState::Queued).0,
            },
        );
        drop(inner);
        tokio::spawn(Arc::clone(self).run_export(id.clone(), spec, client, cancel, false));
        Ok(id)
    }

    /// Runs a failed or cancelled export again, keeping its staged windows.
    pub fn resume_export(self: &Arc<Self>, id: &str, client: ClientConfig) -> Result<(), JobError> {
        let mut inner = self.lock();
        self.check_export_queue(&inner)?;
        inner.seq += 1;
        let seq = inner.seq;
        let e = inner.exports.get_mut(id).ok_or_else(|| JobError::Unknown {
            kind: "export",
            id: id.to_string(),
        })?;
        if !matches!(e.snap.state, JobState::Failed | JobState::Cancelled) {
            return Err(JobError::NotResumable {
                kind: "export",
                id: id.to_string(),
                state: e.snap.state,
            });
        }
        let cancel = CancelToken::default();
        e.seq = seq;
        e.cancel = cancel.clone();
        e.finished_at = None;
        e.snap.state = JobState::Queued;
        e.snap.error = None;
        e.snap.runs += 1;
        e.state_tx.send_replace(JobState::Queued);
        let spec = e.snap.spec.clone();
        drop(inner);
        tokio::spawn(Arc::clone(self).run_export(id.to_string(), spec, client, cancel, true));
        Ok(())
    }

    async fn run_export(
        self: Arc<Self>,
        id: String,
        spec: ExportSpec,
        client: ClientConfig,
        cancel: CancelToken,
        resume: bool,
    ) {
        let permit = tokio::select! {
            p = Arc::clone(&self.slots).acquire_owned() => p,
            _ = cancel.cancelled() => {
                self.finish_export(&id, Err(BundleError::Cancelled));
                return;
            }
        };
        let Ok(_permit) = permit else {
            self.finish_export(&id, Err(BundleError::Params("job manager closed".into())));
            return;
        };
        self.update_export(&id, |s| s.state = JobState::Running);
        let result = drive(
            |tx| self.runner.export(spec.params(client, resume), tx),
            cancel.cancelled(),
            |p| self.update_export(&id, |s| s.progress = Some(p)),
        )
        .await;
        self.finish_export(&id, result);
    }

    fn update_export(&self, id: &str, f: impl FnOnce(&mut ExportSnapshot)) {
        let mut inner = self.lock();
        if let Some(e) = inner.exports.get_mut(id) {
            f(&mut e.snap);
            e.state_tx.send_replace(e.snap.state);
        }
    }

    fn finish_export(&self, id: &str, result: Result<ExportOutcome, BundleError>) {
        let mut inner = self.lock();
        let Some(e) = inner.exports.get_mut(id) else {
            return;
        };
        let snap = &mut e.snap;
        settle(
            "export",
            id,
            result,
            &mut snap.state,
            &mut snap.outcome,
            &mut snap.error,
        );
        let state = snap.state;
        e.finished(state);
    }

    pub fn export(&self, id: &str) -> Result<ExportSnapshot, JobError> {
        let inner = self.lock();
        let e = inner.exports.get(id).ok_or_else(|| JobError::Unknown {
            kind: "export",
            id: id.to_string(),
        })?;
        let mut snap = e.snap.clone();
        if snap.state == JobState::Queued {
            let ahead = inner
                .exports
                .values()
                .filter(|o| o.snap.state == JobState::Queued && o.seq < e.seq)
                .count();
            snap.queue_position = Some(ahead + 1);
        }
        Ok(snap)
    }

    pub fn exports(&self) -> Vec<ExportSnapshot> {
        let ids: Vec<String> = self.lock().exports.keys().cloned().collect();
        let mut out: Vec<ExportSnapshot> =
            ids.iter().filter_map(|id| self.export(id).ok()).collect();
        out.sort_by_key(|s| s.created_ms);
        out
    }

    /// Asks a job to stop; a finished job is left as it is.
    pub fn cancel_export(&self, id: &str) -> Result<JobState, JobError> {
        let inner = self.lock();
        let e = inner.exports.get(id).ok_or_else(|| JobError::Unknown {
            kind: "export",
            id: id.to_string(),
        })?;
        if !e.snap.state.is_finished() {
            e.cancel.cancel();
        }
        Ok(e.snap.state)
    }

    /// Resolves when the export has finished.
    pub async fn wait_export(&self, id: &str) -> Result<ExportSnapshot, JobError> {
        let mut rx = {
            let inner = self.lock();
            inner
                .exports
                .get(id)
                .ok_or_else(|| JobError::Unknown {
                    kind: "export",
                    id: id.to_string(),
                })?
                .state_tx
                .subscribe()
        };
        let _ = rx.wait_for(|s| s.is_finished()).await;
        self.export(id)
    }
}
