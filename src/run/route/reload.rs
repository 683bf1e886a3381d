//! Reloading the routing in place: which destinations a new config keeps,
//! rebuilds, adds or removes, and swapping them under the gate while
//! batches wait, so the receiver and the engine keep one [`Pipeline`] and
//! queued data survives a changed destination.

use super::fanout::{GlobalStage, Routing};
use super::pipeline::open_destination;
use super::{Pipeline, PipelineConfig};
use crate::sink::destination::{Destination, DestinationConfig};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// What a reload did to the routing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoutingChange {
    /// `global_relabel_configs` or `external_labels` changed.
    pub global: bool,
    pub kept: Vec<String>,
    /// Changed: stopped and opened again on the same queue directory.
    pub rebuilt: Vec<String>,
    pub added: Vec<String>,
    /// Stopped; their queue directories stay (see `sink::destination`).
    pub removed: Vec<String>,
}

impl RoutingChange {
    pub fn is_empty(&self) -> bool {
        !self.global && self.rebuilt.is_empty() && self.added.is_empty() && self.removed.is_empty()
    }
}

/// Everything a destination is built from, credentials included (hashed:
/// a changed password is a changed destination, and the hash is all that
/// is kept).
fn identity(d: &DestinationConfig) -> String {
    use crate::client::Auth;
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(format!("{d:?}").as_bytes());
    match &d.client.auth {
        Auth::Basic { password, .. } => h.update(password.expose().as_bytes()),
        Auth::Bearer(token) => h.update(token.expose().as_bytes()),
        Auth::None | Auth::BearerFile(_) => {}
    }
    for (_, v) in &d.client.headers {
        h.update(b"\xff");
        h.update(v.expose().as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn global_identity(g: &GlobalStage) -> String {
    format!("{:?}|{:?}", g.rules, g.external_labels)
}
impl Pipeline {
    /// Applies a reloaded routing config: the global stage is replaced,
    /// unchanged destinations keep running untouched, changed ones are
    /// stopped (without draining) and opened again on their queue directory
    /// (their queued data is kept and sent with the new settings), new ones
    /// are opened, removed ones are stopped and their queue directory left
    /// on disk. Batches wait while this runs. If a destination cannot be
    /// opened, the destinations already switched stay switched, the failed
    /// one is left out, and the error is returned.
    pub async fn reconfigure(&self, config: PipelineConfig) -> Result<RoutingChange, String> {
        enum Plan {
            Keep(Arc<Destination>),
            Rebuild(Arc<Destination>, Box<DestinationConfig>),
            Add,
        }
        let _gate = self.gate.write().await;
        let old = self.current();
        let global = Arc::new(GlobalStage {
            rules: config.global_relabel,
            external_labels: config.external_labels,
        });
        let mut change = RoutingChange {
            global: global_identity(&global) != global_identity(&old.global),
            ..RoutingChange::default()
        };
        let mut previous: Vec<Option<(Arc<Destination>, DestinationConfig)>> = old
            .destinations
            .iter()
            .cloned()
            .zip(old.configs.iter().cloned())
            .map(Some)
            .collect();
        let plans: Vec<(DestinationConfig, Plan)> = config
            .destinations
            .into_iter()
            .map(|d| {
                let found = previous
                    .iter()
                    .position(|o| o.as_ref().is_some_and(|o| o.0.name() == d.name))
                    .and_then(|i| previous[i].take());
                let plan = match found {
                    Some((p, was)) if identity(&was) == identity(&d) => Plan::Keep(p),
                    Some((p, was)) => Plan::Rebuild(p, Box::new(was)),
                    None => Plan::Add,
                };
                (d, plan)
            })
            .collect();
        let removed: Vec<Arc<Destination>> = previous.into_iter().flatten().map(|p| p.0).collect();

        // Batches wait on the gate; the old routing goes now, so the
        // destinations that stop are referenced from here only.
        drop(old);
        let kept_only: Vec<(Arc<Destination>, DestinationConfig)> = plans
            .iter()
            .filter_map(|(d, p)| match p {
                Plan::Keep(k) => Some((Arc::clone(k), d.clone())),
                _ => None,
            })
            .collect();
        self.publish(
            Arc::clone(&global),
            kept_only.iter().map(|k| Arc::clone(&k.0)).collect(),
            kept_only.into_iter().map(|k| k.1).collect(),
        );

        let mut next: Vec<Arc<Destination>> = Vec::new();
        let mut configs = Vec::new();
        let mut errors = Vec::new();
        let started = self.started.load(Ordering::SeqCst);
        for (d, plan) in plans {
            let name = d.name.clone();
            let opened = match plan {
                Plan::Keep(p) => {
                    change.kept.push(name);
                    next.push(p);
                    configs.push(d);
                    continue;
                }
                Plan::Rebuild(p, was) => {
                    p.stop().await;
                    let counters = p.counters();
                    // The queue directory is free once the old one is gone.
                    release(p).await;
                    match open_blocking(d.clone()).await {
                        Ok(dest) => {
                            change.rebuilt.push(name);
                            Ok((dest, d, Some(counters)))
                        }
                        Err(e) => {
                            // Keep delivering with the settings that worked.
                            let back = open_blocking((*was).clone()).await;
                            errors.push(format!(
                                "destination {name}: cannot apply the new settings: {e}{}",
                                if back.is_ok() {
                                    "; it keeps its previous settings"
                                } else {
                                    ""
                                }
                            ));
                            back.map(|dest| (dest, *was, Some(counters)))
                        }
                    }
                }
                Plan::Add => match open_blocking(d.clone()).await {
                    Ok(dest) => {
                        change.added.push(name);
                        Ok((dest, d, None))
                    }
                    Err(e) => Err(format!("destination {name}: {e}")),
                },
            };
            match opened {
                Ok((dest, cfg, previous)) => {
                    if let Some(c) = previous {
                        dest.continue_counters(&c);
                    }
                    if started {
                        dest.start();
                    }
                    next.push(Arc::new(dest));
                    configs.push(cfg);
                }
                Err(e) => errors.push(e),
            }
        }
        for p in removed {
            p.stop().await;
            change.removed.push(p.name().to_string());
            release(p).await;
        }
        self.publish(global, next, configs);
        if errors.is_empty() {
            Ok(change)
        } else {
            Err(errors.join("; "))
        }
    }

    fn publish(
        &self,
        global: Arc<GlobalStage>,
        destinations: Vec<Arc<Destination>>,
        configs: Vec<DestinationConfig>,
    ) {
        *self.routing.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Routing {
            global,
            destinations: Arc::new(destinations),
            configs,
        });
    }
}

async fn open_blocking(d: DestinationConfig) -> Result<Destination, String> {
    tokio::task::spawn_blocking(move || open_destination(d))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
}

/// Drops a stopped destination once its last users (a status read, a
/// sender's last blocking call) let go of it, which closes its queue files
/// and its lock; waits at most a few seconds.
async fn release(d: Arc<Destination>) {
    for _ in 0..500 {
        if Arc::strong_count(&d) == 1 && d.released() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tracing::warn!(
        destination = d.name(),
        "the stopped destination is still in use after 5s; reopening its queue may fail"
    );
}
