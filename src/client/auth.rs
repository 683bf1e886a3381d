//! Credentials and the [`Secret`] wrapper that keeps them out of logs.

use super::ClientError;
pub use crate::model::secret::Secret;
use std::path::PathBuf;

#[derive(Clone, Debug, Default)]
pub enum Auth {
    #[default]
    None,
    Basic {
        username: String,
        password: Secret,
    },
    Bearer(Secret),
    /// Read at every request, so a rotated token file is picked up without a restart.
    BearerFile(PathBuf),
}

impl Auth {
    pub(super) fn apply(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, ClientError> {
        Ok(match self {
            Auth::None => req,
            Auth::Basic { username, password } => req.basic_auth(username, Some(password.expose())),
            Auth::Bearer(token) => req.bearer_auth(token.expose()),
            Auth::BearerFile(path) => {
                let token = std::fs::read_to_string(path).map_err(|e| {
                    ClientError::Config(format!(
                        "cannot read bearer token file {}: {e}",
                        path.display()
                    ))
                })?;
                req.bearer_auth(token.trim())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let a = Auth::Basic {
            username: "u".into(),
            password: Secret::new("hunter2"),
        };
        assert!(!format!("{a:?}").contains("hunter2"));
        assert_eq!(Secret::new("x").to_string(), "<redacted>");
        let s: Secret = serde_json::from_str("\"hunter2\"").unwrap();
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(format!("{s:?} {s}"), "<redacted> <redacted>");
    }
}
