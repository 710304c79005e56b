//! The CLI's side of the control socket: one HTTP/1.1 request per connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

/// A client for one socket path, with a per-request timeout.
pub struct Client {
    socket: PathBuf,
    timeout: Option<Duration>,
}

/// A response: status and parsed JSON body.
#[derive(Debug)]
pub struct JsonResponse {
    pub status: u16,
    pub body: Value,
}

impl JsonResponse {
    /// The `error` (and `details`) of an error answer as one line.
    pub fn error_message(&self) -> String {
        let error = self
            .body
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("unknown error");
        match self.body.get("details").and_then(Value::as_str) {
            Some(d) if !d.is_empty() => format!("{error}: {d}"),
            _ => error.to_string(),
        }
    }
}

impl Client {
    /// `timeout` bounds connecting, sending and reading the whole answer (`None`: no bound).
    pub fn new(socket: &Path, timeout: Option<Duration>) -> Client {
        Client {
            socket: socket.to_path_buf(),
            timeout,
        }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn connect(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<UnixStream> {
        let mut stream = UnixStream::connect(&self.socket).map_err(|e| {
            // Litestream's words (Go's net/http error), so scripts that match them keep working.
            let go_method = if method == "GET" { "Get" } else { "Post" };
            anyhow!(
                "failed to connect to control socket: {go_method} \"http://localhost{path}\": dial unix {}: connect: {}",
                self.socket.display(),
                go_os_error(&e)
            )
        })?;
        stream.set_read_timeout(self.timeout)?;
        stream.set_write_timeout(self.timeout)?;
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        if let Some(b) = body {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes())?;
        if let Some(b) = body {
            stream.write_all(b)?;
        }
        stream.flush()?;
        Ok(stream)
    }

    /// `GET path` and parse the JSON answer.
    pub fn get(&self, path: &str) -> Result<JsonResponse> {
        self.request("GET", path, None)
    }

    /// `POST path` with a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> Result<JsonResponse> {
        self.request("POST", path, Some(body.to_string().as_bytes()))
    }

    fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<JsonResponse> {
        let stream = self.connect(method, path, body)?;
        let mut reader = BufReader::new(stream);
        let head = read_head(&mut reader).with_context(|| format!("{method} {path}"))?;
        let mut raw = Vec::new();
        if head.chunked {
            chunked_transfer::Decoder::new(reader).read_to_end(&mut raw)
        } else if let Some(n) = head.content_length {
            reader.take(n as u64).read_to_end(&mut raw)
        } else {
            reader.read_to_end(&mut raw)
        }
        .map_err(|e| timeout_hint(e, method, path))?;
        let body = serde_json::from_slice(&raw).with_context(|| {
            format!(
                "{method} {path}: answer is not JSON: {:?}",
                String::from_utf8_lossy(&raw)
            )
        })?;
        Ok(JsonResponse {
            status: head.status,
            body,
        })
    }

    /// `GET path` for a stream (`/events`): returns the status and a line reader over the body.
    pub fn stream(&self, path: &str) -> Result<(u16, Box<dyn BufRead>)> {
        let stream = self.connect("GET", path, None)?;
        stream.set_read_timeout(None)?;
        let mut reader = BufReader::new(stream);
        let head = read_head(&mut reader)?;
        let body: Box<dyn BufRead> = if head.chunked {
            Box::new(BufReader::new(chunked_transfer::Decoder::new(reader)))
        } else {
            Box::new(reader)
        };
        Ok((head.status, body))
    }
}

/// An OS error as Go prints it: `no such file or directory`, `connection refused`.
fn go_os_error(e: &std::io::Error) -> String {
    let text = match e.raw_os_error() {
        Some(code) => {
            let t = std::io::Error::from_raw_os_error(code).to_string();
            t.split(" (os error").next().unwrap_or(&t).to_string()
        }
        None => e.to_string(),
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

fn timeout_hint(e: std::io::Error, method: &str, path: &str) -> anyhow::Error {
    if matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ) {
        anyhow!("{method} {path}: timed out waiting for the daemon")
    } else {
        anyhow!("{method} {path}: {e}")
    }
}

struct Head {
    status: u16,
    content_length: Option<usize>,
    chunked: bool,
}

/// Reads the status line and headers.
fn read_head(r: &mut impl BufRead) -> Result<Head> {
    let mut buf = Vec::new();
    loop {
        let n = r
            .read_until(b'\n', &mut buf)
            .map_err(|e| timeout_hint(e, "read", "answer"))?;
        if n == 0 {
            bail!("the daemon closed the connection without answering");
        }
        if buf.ends_with(b"\r\n\r\n") || buf.ends_with(b"\n\n") {
            break;
        }
        if buf.len() > 64 * 1024 {
            bail!("answer headers too large");
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    resp.parse(&buf).context("malformed HTTP answer")?;
    let status = resp.code.context("malformed HTTP status line")?;
    let mut head = Head {
        status,
        content_length: None,
        chunked: false,
    };
    for h in resp.headers.iter() {
        let value = String::from_utf8_lossy(h.value);
        if h.name.eq_ignore_ascii_case("content-length") {
            head.content_length = value.trim().parse().ok();
        } else if h.name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            head.chunked = true;
        }
    }
    Ok(head)
}
