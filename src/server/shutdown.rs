//! Signals, the one place every command learns of them: SIGINT and SIGTERM
//! ask for a graceful shutdown, alike (SIGTERM is what cron, systemd and
//! Kubernetes send); a second one while shutting down means "now"
//! ([`StopSignals::exit_on_next`]). SIGHUP asks `run` for a config reload.

use tokio::signal::unix::{signal, Signal, SignalKind};

/// Which signal asked us to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopSignal {
    Interrupt,
    Terminate,
}

impl std::fmt::Display for StopSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Terminate => "SIGTERM",
        })
    }
}

/// Listens for SIGINT and SIGTERM from creation on, so a signal arriving
/// between two waits is not lost.
pub struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl StopSignals {
    pub fn new() -> std::io::Result<Self> {
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Resolves at the next SIGINT or SIGTERM.
    pub async fn recv(&mut self) -> StopSignal {
        tokio::select! {
            _ = self.interrupt.recv() => StopSignal::Interrupt,
            _ = self.terminate.recv() => StopSignal::Terminate,
        }
    }

    /// For a cleanup after the first signal that might hang: the next
    /// SIGINT or SIGTERM ends the process at once with `code`. Needs a
    /// multi-threaded runtime, since the cleanup may block its thread.
    pub fn exit_on_next(mut self, code: i32) {
        tokio::spawn(async move {
            let s = self.recv().await;
            crate::errln!("{s} again: exiting now");
            std::process::exit(code);
        });
    }
}

/// SIGHUP, the conventional "reload your config" signal.
pub struct ReloadSignal(Signal);

impl ReloadSignal {
    pub fn new() -> std::io::Result<Self> {
        Ok(ReloadSignal(signal(SignalKind::hangup())?))
    }

    /// Resolves at the next SIGHUP.
    pub async fn recv(&mut self) {
        self.0.recv().await;
    }
}
