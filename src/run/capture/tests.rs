use super::*;
use crate::model::selector::parse_label_set;
use crate::model::Sample;
use crate::run::schedule::TokioClock;

/// Keeps what it is given.
#[derive(Default)]
struct Kept(Mutex<Vec<(ExportBatch, Vec<String>)>>);

impl CaptureRouter for Kept {
    fn route_to<'a>(
        &'a self,
        batch: ExportBatch,
        destinations: &'a [String],
    ) -> BoxFuture<'a, Result<(), String>> {
        lock(&self.0).push((batch, destinations.to_vec()));
        Box::pin(async { Ok(()) })
    }
}

fn config(dir: &std::path::Path, names: &[&str]) -> CaptureConfig {
    CaptureConfig {
        defs: names
            .iter()
            .map(|n| {
                let mut d = CaptureDef::manual(
                    n,
                    vec![r#"{instance="{{ $labels.instance }}"}"#.into()],
                    vec!["d".into()],
                );
                d.before_ms = 60_000;
                d.after_ms = 60_000;
                d
            })
            .collect(),
        state_dir: dir.join(config::STATE_DIR),
        lag_ms: 0,
        default_interval_ms: 10_000,
        ..CaptureConfig::default()
    }
}

fn breach(at: i64, stale: bool) -> ExportBatch {
    let s = if stale {
        Sample::stale(at)
    } else {
        Sample::new(at, 1.0)
    };
    ExportBatch::new(
        Origin::rule(ExportKind::Recording, "g", "r"),
        vec![Series::new(
            parse_label_set(r#"r{instance="a"}"#).unwrap(),
            vec![s],
        )],
    )
}

fn states(c: &Captures) -> Vec<String> {
    c.api_json()["data"]["captures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c["name"].as_str().unwrap(),
                c["state"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn breaches_persist_and_a_reload_stops_removed_captures() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(TokioClock::starting_at(1_000_000));
    let open = |names: &[&str]| {
        Captures::open(
            config(dir.path(), names),
            None,
            Arc::new(Kept::default()),
            clock.clone(),
            Mode::Live,
        )
        .unwrap()
    };
    let c = open(&["cpu", "mem"]);
    c.observe(&breach(990_000, false));
    assert_eq!(states(&c), ["cpu open", "mem open"]);
    c.shutdown().await;
    // After a restart the open captures are back, still breaching.
    let c = open(&["cpu", "mem"]);
    assert_eq!(states(&c), ["cpu open", "mem open"]);
    // A reload without `mem`: its capture stops where it is.
    c.reconfigure(config(dir.path(), &["cpu"]), None).unwrap();
    assert_eq!(states(&c), ["cpu open", "mem stopped"]);
    // The engine finds the breach again after its restart; then its
    // stale marker ends it: copying the after part remains.
    c.observe(&breach(1_000_000, false));
    assert_eq!(states(&c), ["cpu open", "mem stopped"]);
    c.observe(&breach(1_010_000, true));
    assert!(
        states(&c).contains(&"cpu closing".to_string()),
        "{:?}",
        states(&c)
    );
}
