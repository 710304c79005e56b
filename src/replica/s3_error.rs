//! S3 errors as users and callers need them: one line a user can act on, without the
//! response body (it can echo the string to sign), and the [`ErrorKind`] that tells the
//! uploader whether to back off and retry or to report and retry slowly.

use s3::error::S3Error;

use super::error::ErrorKind;

/// What kind of failure an S3 error is: the status (and the body's `Code`) when the server
/// answered, else whether the request could not be made (permanent: credentials, URL, TLS
/// setup) or met the network or a garbled answer on the way (transient).
pub fn kind(e: &S3Error) -> ErrorKind {
    match e {
        S3Error::HttpFailWithBody(status, body) => {
            ErrorKind::from_http_status(*status, xml_field(body, "Code").as_deref())
        }
        S3Error::HttpFail => ErrorKind::Transient,
        S3Error::Atto(e) => match e.kind() {
            attohttpc::ErrorKind::StatusCode(status)
            | attohttpc::ErrorKind::ConnectError {
                status_code: status,
                ..
            } => ErrorKind::from_http_status(status.as_u16(), None),
            attohttpc::ErrorKind::Io(_) | attohttpc::ErrorKind::InvalidResponse(_) => {
                ErrorKind::Transient
            }
            attohttpc::ErrorKind::Http(_)
            | attohttpc::ErrorKind::InvalidBaseUrl
            | attohttpc::ErrorKind::InvalidUrlHost
            | attohttpc::ErrorKind::InvalidUrlPort
            | attohttpc::ErrorKind::TooManyRedirections
            | attohttpc::ErrorKind::ConnectNotSupported
            | attohttpc::ErrorKind::TlsDisabled
            // Certificates and TLS setup: an operator fixes them. A connection cut during the
            // handshake arrives as an I/O error.
            | attohttpc::ErrorKind::Tls(_) => ErrorKind::Permanent,
            _ => ErrorKind::Transient,
        },
        // The socket, or a local file rust-s3 read.
        S3Error::Io(e) => match ErrorKind::from_io(e) {
            ErrorKind::NotFound | ErrorKind::Conflict => ErrorKind::Transient,
            kind => kind,
        },
        // An answer that does not parse: a cut body or a proxy's page; the next one may.
        S3Error::Utf8(_)
        | S3Error::FromUtf8(_)
        | S3Error::SerdeXml(_)
        | S3Error::SerdeError(_)
        | S3Error::AttoHeader(_) => ErrorKind::Transient,
        // Credentials, region, URL, header values, signing: the request cannot be made.
        _ => ErrorKind::Permanent,
    }
}

/// The kind of one key's error code in a DeleteObjects answer.
pub(super) fn delete_code_kind(code: &str) -> ErrorKind {
    match code {
        "AccessDenied"
        | "AllAccessDisabled"
        | "InvalidAccessKeyId"
        | "SignatureDoesNotMatch"
        | "NoSuchBucket"
        | "InvalidArgument" => ErrorKind::Permanent,
        _ => ErrorKind::Transient,
    }
}

/// The HTTP status of a failed request, when the server answered.
pub(super) fn status(e: &S3Error) -> Option<u16> {
    match e {
        S3Error::HttpFailWithBody(status, _) => Some(*status),
        S3Error::HttpFail => None,
        _ => None,
    }
}

/// An S3 error in one line: `HTTP 403 SignatureDoesNotMatch: The request signature ...` from
/// the XML body (never the body itself: it can echo the string to sign), else the transport
/// error.
pub fn describe(e: &S3Error) -> String {
    match e {
        S3Error::HttpFailWithBody(status, body) => {
            let code = xml_field(body, "Code");
            let message = xml_field(body, "Message");
            let text = match (code, message) {
                (Some(c), Some(m)) => format!("HTTP {status} {c}: {m}"),
                (Some(c), None) => format!("HTTP {status} {c}"),
                _ => format!("HTTP {status}"),
            };
            format!("{text}{}", status_hint(*status))
        }
        other => other.to_string(),
    }
}

fn status_hint(status: u16) -> &'static str {
    match status {
        301 | 307 => " (wrong region or endpoint?)",
        403 => " (access denied: check access-key-id and secret-access-key, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)",
        404 => " (no such bucket or key)",
        _ => "",
    }
}

/// The text of `<name>...</name>` in a small XML document.
fn xml_field(body: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = body.find(&open)? + open.len();
    let len = body[start..].find(&close)?;
    let text = body[start..start + len].trim();
    (!text.is_empty()).then(|| text.chars().take(300).collect())
}
