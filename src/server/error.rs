//! `ApiError`: the one error type of HTTP handlers. The client gets a short
//! plain-text message it can act on; the log gets the full cause chain of
//! server-side failures (never a credential: causes come from our own
//! errors, which print URLs without them).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request itself is wrong; the message says what to fix.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    NotFound(String),
    /// Refused by the request guard (foreign `Host`, cross-site, no CSRF token).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The thing to create exists already.
    #[error("{0}")]
    Conflict(String),
    /// A bounded resource is full (job queue, uploads); try again later.
    #[error("{0}")]
    TooManyRequests(String),
    /// The client stopped sending its body.
    #[error("{0}")]
    RequestTimeout(String),
    /// We cannot take the request now, the client should retry later
    /// (shutting down, a queue cannot write). `message` goes to the client,
    /// `cause` to the log.
    #[error("{message}")]
    Unavailable {
        message: String,
        #[source]
        cause: Option<anyhow::Error>,
    },
    /// A bug or an unexpected failure: the client learns only that.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn unavailable(message: impl Into<String>, cause: impl Into<anyhow::Error>) -> Self {
        ApiError::Unavailable {
            message: message.into(),
            cause: Some(cause.into()),
        }
    }
}

impl ApiError {
    /// The message for the client; logs the cause of server-side failures.
    fn client_message(&self) -> String {
        match self {
            ApiError::Internal(cause) => {
                tracing::error!(
                    error = format!("{cause:#}"),
                    "internal error answering a request"
                );
                "internal error; the spillway log has the details".to_string()
            }
            ApiError::Unavailable { message, cause } => {
                match cause {
                    Some(c) => tracing::warn!(error = format!("{c:#}"), "{message}"),
                    None => tracing::warn!("{message}"),
                }
                message.clone()
            }
            other => {
                tracing::debug!(
                    status = other.status_code().as_u16(),
                    "rejected request: {other}"
                );
                other.to_string()
            }
        }
    }

    /// The same answer as `{"error": message}`, for JSON APIs (`ui`).
    pub fn into_json_response(self) -> Response {
        let status = self.status_code();
        let body = serde_json::json!({ "error": self.client_message() });
        (status, axum::Json(body)).into_response()
    }

    /// JSON (`ui`) or plain text (`run`), as the server answers its errors.
    pub fn into_response_as(self, json: bool) -> Response {
        if json {
            self.into_json_response()
        } else {
            self.into_response()
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let body = self.client_message();
        (
            status,
            [("Content-Type", "text/plain; charset=utf-8")],
            body + "\n",
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn short_message_to_the_client() {
        let err = ApiError::Internal(anyhow::anyhow!("disk on fire").context("writing queue"));
        let resp = err.into_response();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 10)
            .await
            .unwrap();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(!body.contains("disk on fire"), "{body}");

        let resp = ApiError::BadRequest("line 3: bad".into()).into_response();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 10)
            .await
            .unwrap();
        assert_eq!(&body[..], b"line 3: bad\n");
    }
}
