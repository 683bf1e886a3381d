//! Plain data shared by every mode: labels, samples, series, batches,
//! series selectors and time. Nothing here does I/O.

pub mod goregex;
pub mod labels;
pub mod secret;
pub mod selector;
pub mod series;
pub mod size;
pub mod time;
pub mod yaml;

pub use labels::{Label, Labels};
pub use selector::{MatchOp, Matcher, Selector, SelectorError};
pub use series::{Batch, Sample, Series, STALE_NAN_BITS};

/// Lower-case hex of `bytes` (digests in checksums and state files).
pub fn hex(bytes: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(H[(b >> 4) as usize] as char);
        s.push(H[(b & 15) as usize] as char);
    }
    s
}
