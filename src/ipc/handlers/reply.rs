//! Writing answers: the JSON error type every endpoint returns, JSON bodies, and the response
//! itself (status, `Content-Type`, `Allow`).

use std::path::Path;

use serde::Serialize;
use tiny_http::{Header, Request, Response, StatusCode};

/// A JSON error answer.
pub(super) struct ApiError {
    pub(super) status: u16,
    pub(super) error: String,
    pub(super) details: Option<String>,
    pub(super) allow: Option<&'static str>,
}

impl ApiError {
    pub(super) fn new(status: u16, error: impl Into<String>) -> Self {
        ApiError {
            status,
            error: error.into(),
            details: None,
            allow: None,
        }
    }
    pub(super) fn details(mut self, d: impl Into<String>) -> Self {
        self.details = Some(d.into());
        self
    }
}

/// A successful answer: status and JSON text (fields in the seed's order).
pub(super) type Answer = Result<(u16, String), ApiError>;

/// JSON text of an answer body; these types cannot fail to serialise.
fn body<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("answer types serialise")
}

pub(super) fn ok<T: Serialize>(value: &T) -> Answer {
    Ok((200, body(value)))
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a str>,
}

pub(super) fn respond(rq: Request, answer: Answer) {
    let (status, mut text, allow) = match answer {
        Ok((status, text)) => (status, text, None),
        Err(e) => {
            let text = body(&ErrorBody {
                error: &e.error,
                details: e.details.as_deref(),
            });
            (e.status, text, e.allow)
        }
    };
    // A newline after the JSON, as Go's json.Encoder writes it.
    text.push('\n');
    let mut response = Response::from_string(text)
        .with_status_code(StatusCode(status))
        .with_header(json_header());
    if let Some(a) = allow {
        response.add_header(Header::from_bytes("Allow", a).expect("static header"));
    }
    // The client may have gone away; nothing to do about it.
    let _ = rq.respond(response);
}

fn json_header() -> Header {
    Header::from_bytes("Content-Type", "application/json").expect("static header")
}

pub(super) fn not_found(path: &Path) -> ApiError {
    ApiError::new(404, "database not found").details(path.display().to_string())
}

pub(super) fn not_open(path: &Path) -> ApiError {
    ApiError::new(409, "database not open")
        .details(format!("{} is stopped; start it first", path.display()))
}
