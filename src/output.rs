//! What commands print for the user: results on stdout, notes and errors on
//! stderr, written so that a reader going away is a quiet end, not a panic.
//!
//! Rust ignores SIGPIPE, so writing to a pipe whose reader has exited
//! (`spillway gather --discover | head -1`) fails with `BrokenPipe`, and
//! `println!` turns that into a panic. [`write_stdout`] returns the error
//! instead; the [`outln!`](crate::outln) and [`out!`](crate::out) macros
//! remember the first failure and stop writing, and `main` ends the process
//! by [`exit_code`]: a broken pipe is no error (ripgrep's rule: the reader
//! has what it wanted), so the command's own code stands, 0 when it
//! succeeded; any other write error (a full disk behind `>`) is exit 2. [`errln!`](crate::errln) writes to stderr and ignores errors:
//! there is nowhere left to report them. Uses nothing else in the crate.

use std::fmt;
use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::OnceLock;

/// The first stdout write error, if any: later writes are skipped.
static STDOUT_FAILED: OnceLock<(io::ErrorKind, String)> = OnceLock::new();

/// Writes to stdout and flushes; the first error is remembered and returned,
/// and every later call fails at once with the same kind.
pub fn write_stdout(args: fmt::Arguments<'_>) -> io::Result<()> {
    if let Some((kind, _)) = STDOUT_FAILED.get() {
        return Err(io::Error::from(*kind));
    }
    let mut out = io::stdout().lock();
    let result = out.write_fmt(args).and_then(|()| out.flush());
    if let Err(e) = &result {
        let _ = STDOUT_FAILED.set((e.kind(), e.to_string()));
    }
    result
}

/// Writes to stderr, ignoring errors.
pub fn write_stderr(args: fmt::Arguments<'_>) {
    let _ = io::stderr().lock().write_fmt(args);
}

/// Whether stdout was closed by its reader.
pub fn stdout_closed() -> bool {
    STDOUT_FAILED
        .get()
        .is_some_and(|(kind, _)| *kind == io::ErrorKind::BrokenPipe)
}

/// The process's exit code given the command's: see the module docs.
pub fn exit_code(command: ExitCode) -> ExitCode {
    match STDOUT_FAILED.get() {
        None => command,
        Some((io::ErrorKind::BrokenPipe, _)) => command,
        Some((_, message)) => {
            write_stderr(format_args!("error: writing to stdout: {message}\n"));
            ExitCode::from(2)
        }
    }
}

/// `println!` to stdout through [`write_stdout`]: never panics.
#[macro_export]
macro_rules! outln {
    () => {{
        let _ = $crate::output::write_stdout(format_args!("\n"));
    }};
    ($($arg:tt)*) => {{
        let _ = $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)));
    }};
}

/// `print!` to stdout through [`write_stdout`]: never panics.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        let _ = $crate::output::write_stdout(format_args!($($arg)*));
    }};
}

/// `eprintln!` that never panics.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::output::write_stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprint!` that never panics.
#[macro_export]
macro_rules! err {
    ($($arg:tt)*) => {
        $crate::output::write_stderr(format_args!($($arg)*))
    };
}

/// `1 chunk`, `2 chunks`.
pub fn plural(n: u64, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}
