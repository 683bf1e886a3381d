//! Relabel config errors: every problem found, each with its file, line and
//! field path, printed one per line as `FILE:LINE: relabel_configs[i].field: what`.

use std::fmt;

/// One thing wrong with a `relabel_configs` list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The file (or other source) name, when known.
    pub source: Option<String>,
    /// 1-based line in `source`, when known.
    pub line: Option<u64>,
    /// `relabel_configs[2].modulus`, or the list alone when no entry is to blame.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.source, self.line) {
            (Some(s), Some(l)) => write!(f, "{s}:{l}: ")?,
            (Some(s), None) => write!(f, "{s}: ")?,
            (None, Some(l)) => write!(f, "line {l}: ")?,
            (None, None) => {}
        }
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a relabel config was rejected. Holds at least one [`Problem`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct RelabelError {
    problems: Vec<Problem>,
}

impl RelabelError {
    pub(crate) fn new(problems: Vec<Problem>) -> Self {
        debug_assert!(!problems.is_empty());
        RelabelError { problems }
    }

    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
}

impl From<Problem> for RelabelError {
    fn from(p: Problem) -> Self {
        RelabelError::new(vec![p])
    }
}

impl fmt::Display for RelabelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}
