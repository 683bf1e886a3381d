//! Plain data shared by every mode: labels, samples, series, batches,
//! series selectors, time, time ranges and sizes. Nothing here does I/O
//! except `input` (bounded reads of the files a user names) and
//! `yaml::from_file`, which every command reads its inputs through.

pub mod goregex;
pub mod input;
pub mod labels;
pub mod origin;
pub mod range;
pub mod secret;
pub mod selector;
pub mod series;
pub mod size;
pub mod time;
pub mod value;
pub mod wire;
pub mod yaml;

pub use labels::{Label, Labels};
pub use origin::{Annotations, BatchMeta, ExportBatch, ExportKind, Origin};
pub use selector::{MatchOp, Matcher, Selector, SelectorError};
pub use series::{Batch, Sample, Series, STALE_NAN_BITS};
pub use wire::WireForm;

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
