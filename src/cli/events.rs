//! `litestream events`: print the daemon's event stream, one JSON object per line.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{bail, Result};
use argh::FromArgs;

use crate::ipc::client::Client;

#[derive(FromArgs)]
/// Prints the event stream (init, tx, replicated, primaryChange) as newline-delimited JSON
/// until interrupted or the daemon stops.
#[argh(subcommand, name = "events")]
pub struct Args {
    /// control socket (default: /var/run/litestream.sock, else $XDG_RUNTIME_DIR/litestream.sock)
    #[argh(option)]
    socket: Option<PathBuf>,
    /// only events of this database
    #[argh(option)]
    db: Option<String>,
}

/// Streams until the daemon closes the connection.
pub fn run(args: Args) -> Result<i32> {
    let socket = args
        .socket
        .unwrap_or_else(crate::ipc::server::client_socket_path);
    let client = Client::new(&socket, None);
    let mut path = "/events".to_string();
    if let Some(db) = &args.db {
        let abs = super::absolute(db)?;
        path.push_str(&format!(
            "?db={}",
            super::control::query_escape(&abs.to_string_lossy())
        ));
    }
    let (status, mut body) = client.stream(&path)?;
    if status != 200 {
        let mut text = String::new();
        body.read_to_string(&mut text)?;
        bail!("events failed: {}", text.trim());
    }
    let stdout = std::io::stdout();
    let mut line = String::new();
    loop {
        line.clear();
        if body.read_line(&mut line)? == 0 {
            return Ok(0);
        }
        // Blank lines are the server's keep-alive heartbeats.
        if line.trim().is_empty() {
            continue;
        }
        let mut out = stdout.lock();
        out.write_all(line.as_bytes())?;
        out.flush()?;
    }
}
