//! The error of every replica operation, typed by what the caller can do about it: a missing
//! file or object, a conditional write another writer won, a failure worth retrying soon, or
//! one that needs an operator. Each carries the replica URL, the operation and the key or
//! path, so a message read in `/list` or a log says where it happened.
//!
//! Callers decide by [`ReplicaError::kind`], never by matching message text; the uploader uses
//! it to tell a failure to retry with backoff from one to report at once and retry slowly.

use std::error::Error;
use std::fmt;
use std::io;

/// What kind of failure a replica operation met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The file or object does not exist (HTTP 404 `NoSuchKey`, `ENOENT`).
    NotFound,
    /// A conditional write lost: the name is taken, or its version is not the one expected
    /// (HTTP 409, 412; an immutable file already there with other bytes; `EEXIST`).
    Conflict,
    /// Worth retrying soon: the network, the server's 5xx, throttling (429), timeouts, a full
    /// disk that may free up.
    Transient,
    /// Retrying the same request will not help until someone changes something: credentials
    /// (403), a missing bucket, another 4xx, permissions, a file where a directory belongs,
    /// data that cannot be parsed.
    Permanent,
}

impl ErrorKind {
    /// The kind of an HTTP error status, with the S3 error `Code` when the body had one.
    pub fn from_http_status(status: u16, code: Option<&str>) -> ErrorKind {
        match (status, code) {
            // The bucket itself is missing: no retry brings it back.
            (404, Some("NoSuchBucket")) => ErrorKind::Permanent,
            (404, _) => ErrorKind::NotFound,
            (409 | 412, _) => ErrorKind::Conflict,
            (408 | 429, _) => ErrorKind::Transient,
            // S3's idle-connection timeout and throttling answered as 400 / 403 / 503 codes.
            (_, Some("RequestTimeout" | "SlowDown" | "Throttling" | "ThrottlingException")) => {
                ErrorKind::Transient
            }
            // A server that does not implement a request never will.
            (501, _) => ErrorKind::Permanent,
            (500..=599, _) => ErrorKind::Transient,
            // Redirects (a wrong region or endpoint) and every other 4xx.
            (300..=499, _) => ErrorKind::Permanent,
            _ => ErrorKind::Transient,
        }
    }

    /// The kind of an I/O error, from a local or mounted replica directory or a socket.
    pub fn from_io(e: &io::Error) -> ErrorKind {
        use io::ErrorKind as K;
        match e.kind() {
            K::NotFound => ErrorKind::NotFound,
            K::AlreadyExists => ErrorKind::Conflict,
            K::PermissionDenied
            | K::ReadOnlyFilesystem
            | K::NotADirectory
            | K::IsADirectory
            | K::InvalidInput
            | K::InvalidData
            | K::Unsupported
            | K::FileTooLarge
            | K::CrossesDevices
            | K::TooManyLinks => ErrorKind::Permanent,
            _ if e.raw_os_error() == Some(libc::ENAMETOOLONG) => ErrorKind::Permanent,
            // EIO, ENOSPC, EDQUOT, ESTALE, timeouts, resets: the disk, the mount or the
            // network may come back.
            _ => ErrorKind::Transient,
        }
    }

    /// The word logs and messages use for the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Transient => "transient",
            ErrorKind::Permanent => "permanent",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed replica operation: its kind, where (replica URL, key or path), what (the
/// operation), and why (a message, a source error, or both).
///
/// Displays as `<url>: <operation> <key>: <message>`; the source error (an [`io::Error`], kept
/// so [`crate::metrics::is_disk_full`] can find `ENOSPC` in the chain) follows with `{:#}`, as
/// anyhow prints a chain.
#[derive(Debug)]
pub struct ReplicaError {
    kind: ErrorKind,
    url: String,
    op: String,
    key: String,
    message: Option<String>,
    source: Option<Box<dyn Error + Send + Sync + 'static>>,
}

/// What every replica operation returns.
pub type Result<T, E = ReplicaError> = std::result::Result<T, E>;

impl ReplicaError {
    /// An error of `kind` for operation `op` on `key` (an object key or a path; either may be
    /// empty) of the replica `url`, explained by `message`.
    pub fn new(
        kind: ErrorKind,
        url: &str,
        op: &str,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ReplicaError {
        ReplicaError {
            kind,
            url: url.to_string(),
            op: op.to_string(),
            key: key.into(),
            message: Some(message.into()).filter(|m| !m.is_empty()),
            source: None,
        }
    }

    /// An I/O error of operation `op` on `path`, of the kind [`ErrorKind::from_io`] gives.
    pub fn io(url: &str, op: &str, path: &std::path::Path, e: io::Error) -> ReplicaError {
        let kind = ErrorKind::from_io(&e);
        ReplicaError::io_as(kind, url, op, path, e)
    }

    /// An I/O error whose kind the caller knows better than the error code (an `EEXIST` from
    /// creating a directory is a file in the way, not a lost conditional write).
    pub fn io_as(
        kind: ErrorKind,
        url: &str,
        op: &str,
        path: &std::path::Path,
        e: io::Error,
    ) -> ReplicaError {
        ReplicaError {
            kind,
            url: url.to_string(),
            op: op.to_string(),
            key: path.display().to_string(),
            message: None,
            source: Some(Box::new(e)),
        }
    }

    /// The same error with another kind.
    pub fn with_kind(mut self, kind: ErrorKind) -> ReplicaError {
        self.kind = kind;
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether the file or object does not exist.
    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }

    /// The replica's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The operation that failed (`PUT`, `GET`, `open`, `write`...).
    pub fn op(&self) -> &str {
        &self.op
    }

    /// The object key or path the operation was on (may be empty).
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl fmt::Display for ReplicaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)?;
        let what = match (self.op.is_empty(), self.key.is_empty()) {
            (false, false) => format!("{} {}", self.op, self.key),
            (false, true) => self.op.clone(),
            (true, false) => self.key.clone(),
            (true, true) => String::new(),
        };
        if !what.is_empty() {
            write!(f, ": {what}")?;
        }
        if let Some(m) = &self.message {
            write!(f, ": {m}")?;
        }
        if f.alternate() {
            let mut cause = self.source();
            while let Some(c) = cause {
                write!(f, ": {c}")?;
                cause = c.source();
            }
        }
        Ok(())
    }
}

impl Error for ReplicaError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

/// The kind of the first [`ReplicaError`] in an error chain: `None` when the failure is not
/// the replica's (a local spool file, the database).
pub fn kind_of(e: &anyhow::Error) -> Option<ErrorKind> {
    e.chain()
        .find_map(|c| c.downcast_ref::<ReplicaError>())
        .map(ReplicaError::kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_map_to_kinds() {
        use ErrorKind::*;
        let cases: &[(u16, Option<&str>, ErrorKind)] = &[
            (404, Some("NoSuchKey"), NotFound),
            (404, None, NotFound),
            (404, Some("NoSuchBucket"), Permanent),
            (409, Some("ConditionalRequestConflict"), Conflict),
            (412, Some("PreconditionFailed"), Conflict),
            (429, None, Transient),
            (408, None, Transient),
            (400, Some("RequestTimeout"), Transient),
            (503, Some("SlowDown"), Transient),
            (500, Some("InternalError"), Transient),
            (502, None, Transient),
            (504, None, Transient),
            (501, Some("NotImplemented"), Permanent),
            (403, Some("SignatureDoesNotMatch"), Permanent),
            (403, Some("AccessDenied"), Permanent),
            (403, Some("RequestTimeTooSkewed"), Permanent),
            (400, Some("InvalidArgument"), Permanent),
            (400, Some("ExpiredToken"), Permanent),
            (405, None, Permanent),
            (301, Some("PermanentRedirect"), Permanent),
            (307, None, Permanent),
        ];
        for &(status, code, want) in cases {
            assert_eq!(
                ErrorKind::from_http_status(status, code),
                want,
                "{status} {code:?}"
            );
        }
    }

    #[test]
    fn io_errors_map_to_kinds() {
        use ErrorKind::*;
        let os = io::Error::from_raw_os_error;
        let cases = [
            (os(libc::ENOENT), NotFound),
            (os(libc::EEXIST), Conflict),
            (os(libc::EACCES), Permanent),
            (os(libc::EPERM), Permanent),
            (os(libc::EROFS), Permanent),
            (os(libc::ENOTDIR), Permanent),
            (os(libc::EISDIR), Permanent),
            (os(libc::ENAMETOOLONG), Permanent),
            (os(libc::ENOSPC), Transient),
            (os(libc::EDQUOT), Transient),
            (os(libc::EIO), Transient),
            (os(libc::ESTALE), Transient),
            (os(libc::ETIMEDOUT), Transient),
            (os(libc::ECONNRESET), Transient),
            (os(libc::ECONNREFUSED), Transient),
            (
                io::Error::new(io::ErrorKind::InvalidData, "bad json"),
                Permanent,
            ),
            (io::Error::other("something"), Transient),
        ];
        for (e, want) in cases {
            assert_eq!(ErrorKind::from_io(&e), want, "{e}");
        }
    }

    #[test]
    fn messages_carry_the_context_and_the_chain() {
        let e = ReplicaError::io(
            "file:///r",
            "open",
            std::path::Path::new("/r/ltx/0/a.ltx"),
            io::Error::from_raw_os_error(libc::ENOENT),
        );
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.is_not_found());
        assert_eq!(e.to_string(), "file:///r: open /r/ltx/0/a.ltx");
        let full = format!("{e:#}");
        assert!(
            full.starts_with("file:///r: open /r/ltx/0/a.ltx: No such file"),
            "{full}"
        );
        // Through anyhow (how most callers see it) the chain reads the same, once.
        let any = anyhow::Error::from(e);
        assert_eq!(format!("{any:#}"), full);
        assert_eq!(kind_of(&any), Some(ErrorKind::NotFound));
        assert_eq!(kind_of(&any.context("restore")), Some(ErrorKind::NotFound));
        assert_eq!(kind_of(&anyhow::anyhow!("local")), None);

        let e = ReplicaError::new(
            ErrorKind::Transient,
            "s3://b/p",
            "PUT",
            "p/0000/x.ltx",
            "HTTP 503 SlowDown",
        );
        assert_eq!(
            e.to_string(),
            "s3://b/p: PUT p/0000/x.ltx: HTTP 503 SlowDown"
        );
        assert_eq!(format!("{e:#}"), e.to_string());
        let e = ReplicaError::new(ErrorKind::Conflict, "s3://b/p", "", "k", "taken");
        assert_eq!(e.to_string(), "s3://b/p: k: taken");
    }
}
