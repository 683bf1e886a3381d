//! HTTP basic auth, the one policy of both servers: one `USER:PASSWORD` per
//! process (`--http.auth`, `SPILLWAY_HTTP_AUTH` or `--http.auth-file`, the
//! last keeping the password out of `ps`), checked by [`super::guard`] on
//! every route but `/health` (left open, as VictoriaMetrics leaves it, so
//! liveness probes need no credentials and learn nothing).
//!
//! The header is decoded (`base64`) and compared with the expected
//! `USER:PASSWORD` in constant time (`subtle`), so the answer time says
//! nothing about how much of a guess was right.

use crate::model::secret::Secret;
use axum::http::HeaderValue;
use base64::Engine;
use std::path::Path;
use subtle::ConstantTimeEq;

/// Largest `--http.auth-file` read: one line of credentials.
const MAX_AUTH_FILE_BYTES: u64 = 4096;

/// The credentials every request but `/health` must present.
#[derive(Clone)]
pub struct BasicAuth {
    /// `USER:PASSWORD`.
    expected: Secret,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BasicAuth(<redacted>)")
    }
}

impl BasicAuth {
    /// `USER:PASSWORD`, both non-empty (the password may contain `:`).
    pub fn parse(user_pass: &str) -> Result<BasicAuth, String> {
        match user_pass.split_once(':') {
            Some((user, pass)) if !user.is_empty() && !pass.is_empty() => Ok(BasicAuth {
                expected: Secret::new(user_pass),
            }),
            _ => Err("expected USER:PASSWORD, both non-empty".into()),
        }
    }

    /// The first line of `path`, as [`parse`](Self::parse) takes it.
    pub fn from_file(path: &Path) -> Result<BasicAuth, String> {
        use std::io::Read;
        let shown = path.display();
        let file = std::fs::File::open(path).map_err(|e| format!("{shown}: {e}"))?;
        let mut text = String::new();
        file.take(MAX_AUTH_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| format!("{shown}: {e}"))?;
        if text.len() as u64 > MAX_AUTH_FILE_BYTES {
            return Err(format!(
                "{shown}: longer than {MAX_AUTH_FILE_BYTES} bytes; expected one line USER:PASSWORD"
            ));
        }
        let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
        BasicAuth::parse(line).map_err(|e| format!("{shown}: {e}"))
    }

    /// Whether an `Authorization` header carries these credentials.
    pub fn allows(&self, header: Option<&HeaderValue>) -> bool {
        let Some(given) = header.and_then(|h| decode_basic(h.as_bytes())) else {
            return false;
        };
        given.ct_eq(self.expected.expose().as_bytes()).into()
    }
}

/// `Basic <base64>` (scheme in any case) decoded; `None` if it is not that.
fn decode_basic(header: &[u8]) -> Option<Vec<u8>> {
    let (scheme, rest) = header.split_at(header.iter().position(|b| *b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    base64::engine::general_purpose::STANDARD
        .decode(rest.trim_ascii())
        .ok()
}

/// The credentials from the flags: `--http.auth` or `--http.auth-file`, not both.
pub fn resolve(auth: Option<&Secret>, file: Option<&Path>) -> Result<Option<BasicAuth>, String> {
    match (auth, file) {
        (Some(_), Some(_)) => Err("give --http.auth or --http.auth-file, not both".into()),
        (Some(a), None) => BasicAuth::parse(a.expose())
            .map(Some)
            .map_err(|e| format!("--http.auth: {e}")),
        (None, Some(f)) => BasicAuth::from_file(f)
            .map(Some)
            .map_err(|e| format!("--http.auth-file {e}")),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(s: &'static str) -> HeaderValue {
        HeaderValue::from_static(s)
    }

    #[test]
    fn basic_auth_checks() {
        let a = BasicAuth::parse("user:pa:ss").unwrap();
        // base64("user:pa:ss") = dXNlcjpwYTpzcw==
        assert!(a.allows(Some(&header("Basic dXNlcjpwYTpzcw=="))));
        assert!(a.allows(Some(&header("basic  dXNlcjpwYTpzcw== "))));
        assert!(!a.allows(Some(&header("Basic dXNlcjpwYTpzcg=="))));
        assert!(!a.allows(Some(&header("Bearer dXNlcjpwYTpzcw=="))));
        assert!(!a.allows(Some(&header("Basic !!!"))));
        assert!(!a.allows(None));
        assert!(BasicAuth::parse("user").is_err());
        assert!(BasicAuth::parse(":x").is_err());
        assert!(BasicAuth::parse("x:").is_err());
        assert!(!format!("{a:?}").contains("pa:ss"));
    }

    #[test]
    fn from_flags_or_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("auth");
        std::fs::write(&f, "admin:s3cret\n").unwrap();
        let a = resolve(None, Some(&f)).unwrap().unwrap();
        assert!(a.allows(Some(&header("Basic YWRtaW46czNjcmV0"))));
        let both = resolve(Some(&Secret::new("a:b")), Some(&f)).unwrap_err();
        assert!(both.contains("not both"), "{both}");
        let e = resolve(Some(&Secret::new("nopass")), None).unwrap_err();
        assert!(e.contains("--http.auth") && !e.contains("nopass"), "{e}");
        std::fs::write(&f, "just-a-name\n").unwrap();
        let e = resolve(None, Some(&f)).unwrap_err();
        assert!(
            e.contains("--http.auth-file") && e.contains("USER:PASSWORD"),
            "{e}"
        );
        std::fs::write(&f, vec![b'a'; 10_000]).unwrap();
        assert!(resolve(None, Some(&f)).unwrap_err().contains("4096"));
        let missing = dir.path().join("none");
        assert!(resolve(None, Some(&missing)).unwrap_err().contains("none"));
        assert!(resolve(None, None).unwrap().is_none());
    }
}
