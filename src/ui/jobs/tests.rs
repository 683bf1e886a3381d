use super::*;
use crate::client::ConnectionSpec;

/// Export jobs that run until cancelled or released.
struct Fake {
    release: Arc<tokio::sync::Notify>,
}

impl Runner for Fake {
    fn export(
        &self,
        params: ExportParams,
        _progress: ProgressTx<ExportProgress>,
    ) -> (CancelToken, JobFuture<ExportOutcome>) {
        let cancel = CancelToken::default();
        let c = cancel.clone();
        let release = Arc::clone(&self.release);
        let fut = async move {
            std::fs::create_dir_all(&params.out_dir).unwrap();
            tokio::select! {
                _ = c.cancelled() => Err(BundleError::Cancelled),
                _ = release.notified() => Err(BundleError::Params("released".into())),
            }
        };
        (cancel, Box::pin(fut))
    }

    fn import(
        &self,
        _params: ImportParams,
        _progress: ProgressTx<ImportProgress>,
    ) -> (CancelToken, JobFuture<ImportOutcome>) {
        (
            CancelToken::default(),
            Box::pin(async { Err(BundleError::Params("target down".into())) }),
        )
    }
}

fn spec(dir: &std::path::Path, n: usize) -> ExportSpec {
    ExportSpec {
        source_url: "http://127.0.0.1:1".into(),
        selectors: vec!["up".into()],
        jobs: vec![],
        from_ms: 0,
        to_ms: 1,
        step_ms: None,
        batch_window_ms: None,
        obfuscation: Default::default(),
        out_dir: dir.join(format!("job{n}")),
        owned_dir: true,
    }
}

fn client() -> ClientConfig {
    ConnectionSpec {
        url: Some("http://127.0.0.1:1".into()),
        ..Default::default()
    }
    .to_client_config("test")
    .unwrap()
}

fn limits(retention: Duration) -> JobLimits {
    JobLimits {
        retention,
        max_queued_exports: 2,
        max_running_imports: 1,
    }
}

async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn three_run_the_fourth_waits_then_retention_cleans() {
    let dir = tempfile::tempdir().unwrap();
    let release = Arc::new(tokio::sync::Notify::new());
    let m = JobManager::new(
        Arc::new(Fake {
            release: Arc::clone(&release),
        }),
        limits(Duration::from_secs(600)),
    );
    let ids: Vec<String> = (0..5)
        .map(|n| m.start_export(spec(dir.path(), n), client()).unwrap())
        .collect();
    // 128 random bits each.
    assert!(ids.iter().all(|id| id.len() == 32), "{ids:?}");
    settle().await;
    let states: Vec<_> = ids.iter().map(|id| m.export(id).unwrap()).collect();
    assert_eq!(
        states.iter().map(|s| s.state).collect::<Vec<_>>(),
        [
            JobState::Running,
            JobState::Running,
            JobState::Running,
            JobState::Queued,
            JobState::Queued
        ]
    );
    assert_eq!(states[3].queue_position, Some(1));
    assert_eq!(states[4].queue_position, Some(2));

    // A queued job cancelled never starts; a running one cancelled frees its slot.
    m.cancel_export(&ids[4]).unwrap();
    m.cancel_export(&ids[0]).unwrap();
    settle().await;
    assert_eq!(m.export(&ids[4]).unwrap().state, JobState::Cancelled);
    assert_eq!(m.export(&ids[0]).unwrap().state, JobState::Cancelled);
    assert_eq!(m.export(&ids[3]).unwrap().state, JobState::Running);
    assert!(!dir.path().join("job4").exists(), "a queued job never ran");

    // Retention: kept until the window passes, then removed with its files.
    tokio::time::advance(Duration::from_secs(599)).await;
    assert_eq!(m.sweep(), 0);
    assert!(dir.path().join("job0").is_dir());
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(m.sweep(), 2);
    assert!(matches!(m.export(&ids[0]), Err(JobError::Unknown { .. })));
    assert!(!dir.path().join("job0").exists());
    // Running jobs are never swept.
    assert_eq!(m.export(&ids[1]).unwrap().state, JobState::Running);

    // The sweeper does it by itself.
    let sweeper = m.spawn_sweeper();
    release.notify_waiters();
    settle().await;
    assert_eq!(m.export(&ids[1]).unwrap().state, JobState::Failed);
    assert_eq!(
        m.export(&ids[1]).unwrap().error.as_deref(),
        Some("released")
    );
    tokio::time::sleep(Duration::from_secs(600 + 200)).await;
    settle().await;
    assert!(m.exports().is_empty(), "{:?}", m.exports().len());
    sweeper.abort();
}

#[tokio::test(start_paused = true)]
async fn resume_only_finished_failures() {
    let dir = tempfile::tempdir().unwrap();
    let release = Arc::new(tokio::sync::Notify::new());
    let m = JobManager::new(
        Arc::new(Fake {
            release: Arc::clone(&release),
        }),
        limits(DEFAULT_RETENTION),
    );
    let id = m.start_export(spec(dir.path(), 0), client()).unwrap();
    settle().await;
    assert!(matches!(
        m.resume_export(&id, client()),
        Err(JobError::NotResumable { .. })
    ));
    m.cancel_export(&id).unwrap();
    let snap = m.wait_export(&id).await.unwrap();
    assert_eq!(snap.state, JobState::Cancelled);
    m.resume_export(&id, client()).unwrap();
    settle().await;
    let snap = m.export(&id).unwrap();
    assert_eq!((snap.state, snap.runs), (JobState::Running, 2));
    assert!(matches!(
        m.resume_export("nope", client()),
        Err(JobError::Unknown { .. })
    ));

    let imp = m
        .start_import(
            ImportSpec {
                target_url: "http://127.0.0.1:1".into(),
                bundle: dir.path().join("b.zip"),
                shift_to_now: false,
                dry_run: false,
                owned_file: false,
            },
            ImportParams::new(client(), dir.path().join("b.zip")),
        )
        .unwrap();
    let snap = m.wait_import(&imp).await.unwrap();
    assert_eq!(snap.state, JobState::Failed);
    assert_eq!(snap.error.as_deref(), Some("target down"));
    m.resume_import(&imp, ImportParams::new(client(), "x".into()))
        .unwrap();
    let snap = m.wait_import(&imp).await.unwrap();
    assert_eq!((snap.state, snap.runs), (JobState::Failed, 2));
}

/// A job that keeps running until released: imports that never end.
struct Endless {
    release: Arc<tokio::sync::Notify>,
}

impl Runner for Endless {
    fn export(
        &self,
        _params: ExportParams,
        _progress: ProgressTx<ExportProgress>,
    ) -> (CancelToken, JobFuture<ExportOutcome>) {
        let release = Arc::clone(&self.release);
        let fut = async move {
            release.notified().await;
            Err(BundleError::Params("released".into()))
        };
        (CancelToken::default(), Box::pin(fut))
    }

    fn import(
        &self,
        _params: ImportParams,
        _progress: ProgressTx<ImportProgress>,
    ) -> (CancelToken, JobFuture<ImportOutcome>) {
        let release = Arc::clone(&self.release);
        let fut = async move {
            release.notified().await;
            Err(BundleError::Params("released".into()))
        };
        (CancelToken::default(), Box::pin(fut))
    }
}

fn import_spec(bundle: PathBuf) -> ImportSpec {
    ImportSpec {
        target_url: "http://127.0.0.1:1".into(),
        bundle,
        shift_to_now: false,
        dry_run: false,
        owned_file: true,
    }
}

#[tokio::test(start_paused = true)]
async fn queue_and_imports_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let release = Arc::new(tokio::sync::Notify::new());
    let m = JobManager::new(
        Arc::new(Endless {
            release: Arc::clone(&release),
        }),
        limits(DEFAULT_RETENTION),
    );
    // Three run, two wait; the sixth is refused.
    for n in 0..5 {
        m.start_export(spec(dir.path(), n), client()).unwrap();
    }
    settle().await;
    let e = m.start_export(spec(dir.path(), 5), client()).unwrap_err();
    assert!(matches!(e, JobError::Busy { .. }), "{e}");
    assert!(
        e.to_string().contains("2 exports are already waiting"),
        "{e}"
    );
    // One import runs; a second is refused until it ends.
    let b = dir.path().join("b.zip");
    let first = m
        .start_import(
            import_spec(b.clone()),
            ImportParams::new(client(), b.clone()),
        )
        .unwrap();
    let e = m
        .start_import(
            import_spec(b.clone()),
            ImportParams::new(client(), b.clone()),
        )
        .unwrap_err();
    assert!(
        e.to_string().contains("1 imports are already running"),
        "{e}"
    );
    settle().await;
    release.notify_waiters();
    m.wait_import(&first).await.unwrap();
    m.start_import(import_spec(b.clone()), ImportParams::new(client(), b))
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn sweep_removes_only_what_jobs_created() {
    let dir = tempfile::tempdir().unwrap();
    let uploads = dir.path().join("uploads");
    std::fs::create_dir(&uploads).unwrap();
    let release = Arc::new(tokio::sync::Notify::new());
    let m = JobManager::with_uploads(
        Arc::new(Fake {
            release: Arc::clone(&release),
        }),
        limits(Duration::ZERO),
        uploads.clone(),
    );
    // A directory the job was given (not created by it) survives its sweep.
    let mut given = spec(dir.path(), 0);
    given.owned_dir = false;
    std::fs::create_dir_all(&given.out_dir).unwrap();
    std::fs::write(given.out_dir.join("keep.txt"), b"x").unwrap();
    let id = m.start_export(given.clone(), client()).unwrap();
    settle().await;
    m.cancel_export(&id).unwrap();
    m.wait_export(&id).await.unwrap();
    // Uploads: one imported (kept while its job lives), one orphaned, one being written.
    let imported = uploads.join("a.zip");
    let orphan = uploads.join("b.zip");
    let orphan_state = uploads.join("b.zip.import-state.json");
    let part = uploads.join(".c.zip.part");
    for f in [&imported, &orphan, &orphan_state, &part] {
        std::fs::write(f, b"zip").unwrap();
    }
    let _writing = m.uploading(part.clone());
    let imp = m
        .start_import(
            import_spec(imported.clone()),
            ImportParams::new(client(), imported.clone()),
        )
        .unwrap();
    // Not finished yet: a running import's bundle is never swept.
    let n = m.sweep();
    assert!(imported.exists() && part.exists());
    assert!(!orphan.exists() && !orphan_state.exists());
    assert!(
        given.out_dir.join("keep.txt").exists(),
        "a given directory was swept"
    );
    assert!(n >= 3, "{n}");
    let _ = imp;
}
