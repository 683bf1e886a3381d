//! `spillway run`: continuous threshold export. For now the vmalert
//! rule-file loader that `run`, `replay` and `rules check` share.

pub mod config;
pub mod rules;
