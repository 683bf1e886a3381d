//! Import jobs: at most [`JobLimits::max_running_imports`] at once, each
//! an uploaded or local bundle written to its target by
//! [`crate::bundle::drive`], resumable from its state file.

use super::*;

impl JobManager {
    pub fn start_import(
        self: &Arc<Self>,
        spec: ImportSpec,
        params: ImportParams,
    ) -> Result<String, JobError> {
        let mut inner = self.lock();
        self.check_imports(&inner)?;
        inner.seq += 1;
        let seq = inner.seq;
        let id = new_id();
        let cancel = CancelToken::default();
        inner.imports.insert(
            id.clone(),
            Entry {
                snap: ImportSnapshot {
                    id: id.clone(),
                    spec,
                    state: JobState::Running,
                    progress: None,
                    outcome: None,
                    error: None,
                    created_ms: now_ms(),
                    runs: 1,
                },
                seq,
                cancel: cancel.clone(),
                finished_at: None,
                state_tx: watch::channel(JobState::Running).0,
            },
        );
        drop(inner);
        tokio::spawn(Arc::clone(self).run_import(id.clone(), params, cancel));
        Ok(id)
    }

    /// Runs a failed import again from its saved offset.
    pub fn resume_import(
        self: &Arc<Self>,
        id: &str,
        mut params: ImportParams,
    ) -> Result<(), JobError> {
        let mut inner = self.lock();
        if inner.imports.contains_key(id) {
            self.check_imports(&inner)?;
        }
        let e = inner.imports.get_mut(id).ok_or_else(|| JobError::Unknown {
            kind: "import",
            id: id.to_string(),
        })?;
        if !matches!(e.snap.state, JobState::Failed | JobState::Cancelled) {
            return Err(JobError::NotResumable {
                kind: "import",
                id: id.to_string(),
                state: e.snap.state,
            });
        }
        let cancel = CancelToken::default();
        e.cancel = cancel.clone();
        e.finished_at = None;
        e.snap.state = JobState::Running;
        e.snap.error = None;
        e.snap.runs += 1;
        e.state_tx.send_replace(JobState::Running);
        params.bundle = e.snap.spec.bundle.clone();
        params.resume = true;
        drop(inner);
        tokio::spawn(Arc::clone(self).run_import(id.to_string(), params, cancel));
        Ok(())
    }

    async fn run_import(self: Arc<Self>, id: String, params: ImportParams, cancel: CancelToken) {
        let result = drive(
            |tx| self.runner.import(params, tx),
            cancel.cancelled(),
            |p| self.update_import(&id, |s| s.progress = Some(p)),
        )
        .await;
        let mut inner = self.lock();
        let Some(e) = inner.imports.get_mut(&id) else {
            return;
        };
        let snap = &mut e.snap;
        settle(
            "import",
            &id,
            result,
            &mut snap.state,
            &mut snap.outcome,
            &mut snap.error,
        );
        let state = snap.state;
        e.finished(state);
    }

    fn update_import(&self, id: &str, f: impl FnOnce(&mut ImportSnapshot)) {
        let mut inner = self.lock();
        if let Some(e) = inner.imports.get_mut(id) {
            f(&mut e.snap);
        }
    }

    pub fn import(&self, id: &str) -> Result<ImportSnapshot, JobError> {
        self.lock()
            .imports
            .get(id)
            .map(|e| e.snap.clone())
            .ok_or_else(|| JobError::Unknown {
                kind: "import",
                id: id.to_string(),
            })
    }

    pub async fn wait_import(&self, id: &str) -> Result<ImportSnapshot, JobError> {
        let mut rx = {
            let inner = self.lock();
            inner
                .imports
                .get(id)
                .ok_or_else(|| JobError::Unknown {
                    kind: "import",
                    id: id.to_string(),
                })?
                .state_tx
                .subscribe()
        };
        let _ = rx.wait_for(|s| s.is_finished()).await;
        self.import(id)
    }
}
