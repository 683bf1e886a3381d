//! Progress for long commands: a bar with ETA on a terminal, plain log
//! lines when stderr is a file or CI log.

use crate::export::Progress;
use crate::model::time::format_rfc3339_ms;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

pub enum WindowProgress {
    Bar(ProgressBar),
    Log,
    Silent,
}

impl WindowProgress {
    pub fn new(quiet: bool) -> Self {
        if quiet {
            WindowProgress::Silent
        } else if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} windows, ETA {eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            WindowProgress::Bar(bar)
        } else {
            WindowProgress::Log
        }
    }
}

impl Progress for WindowProgress {
    fn start(&self, total: u64) {
        if let WindowProgress::Bar(b) = self {
            b.set_length(total);
        }
    }

    fn window_done(&self, query: &str, start_ms: i64, end_ms: i64, samples: u64) {
        match self {
            WindowProgress::Bar(b) => {
                b.set_message(query.chars().take(40).collect::<String>());
                b.inc(1);
            }
            WindowProgress::Log => tracing::info!(
                %query,
                from = %format_rfc3339_ms(start_ms),
                to = %format_rfc3339_ms(end_ms),
                samples,
                "window exported"
            ),
            WindowProgress::Silent => {}
        }
    }

    fn finish(&self) {
        if let WindowProgress::Bar(b) = self {
            b.finish_and_clear();
        }
    }
}

/// Progress of `spillway replay`: one tick per range request.
pub enum ReplayBar {
    Bar(ProgressBar),
    Log,
    Silent,
}

impl ReplayBar {
    pub fn new(quiet: bool) -> Self {
        if quiet {
            ReplayBar::Silent
        } else if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} requests, ETA {eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            ReplayBar::Bar(bar)
        } else {
            ReplayBar::Log
        }
    }
}

impl crate::run::ReplayProgress for ReplayBar {
    fn start(&self, total_requests: u64) {
        match self {
            ReplayBar::Bar(b) => b.set_length(total_requests),
            ReplayBar::Log => tracing::info!(requests = total_requests, "replay started"),
            ReplayBar::Silent => {}
        }
    }

    fn request_done(&self, group: &str, rule: &str, start_ms: i64, end_ms: i64, samples: u64) {
        match self {
            ReplayBar::Bar(b) => {
                b.set_message(format!("{group} / {rule}"));
                b.inc(1);
            }
            ReplayBar::Log => tracing::info!(
                group,
                rule,
                from = %format_rfc3339_ms(start_ms),
                to = %format_rfc3339_ms(end_ms),
                samples,
                "range replayed"
            ),
            ReplayBar::Silent => {}
        }
    }

    fn finish(&self) {
        if let ReplayBar::Bar(b) = self {
            b.finish_and_clear();
        }
    }
}
