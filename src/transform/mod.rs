//! Transforms applied to series between a source and a sink: threshold
//! flags, relabeling, obfuscation. They use only `model`.

pub mod obfuscate;
pub mod relabel;
pub mod threshold;
