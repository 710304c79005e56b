//! The `litestream` command line: argh commands, one file per subcommand.
//!
//! Flags are Go style as in Litestream (`-config`, `-if-db-not-exists`, `-flag=value`); they
//! are rewritten to argh's `--flag value` before parsing, so both spellings work. Errors print
//! `Error: ...` on stderr and exit 1; `-h` prints the usage and exits 0 (Litestream's codes).

mod control;
mod databases;
mod events;
mod ltx;
mod replicate;
mod reset;
mod restore;
mod role;
mod status;
mod version;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use argh::FromArgs;

use crate::config::{self, Config, DbConfig};
use crate::replica::url::ReplicaTarget;
use crate::replica::{self, ReplicaClient};

#[derive(FromArgs)]
/// litestream replicates SQLite databases to a file or S3 replica and restores them.
struct Cli {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Databases(databases::Args),
    Demote(role::DemoteArgs),
    Events(events::Args),
    Info(control::InfoArgs),
    List(control::ListArgs),
    Ltx(ltx::Args),
    Promote(role::PromoteArgs),
    Register(control::RegisterArgs),
    Replicate(replicate::Args),
    Reset(reset::Args),
    Restore(restore::Args),
    Start(control::StartArgs),
    Status(status::Args),
    Stop(control::StopArgs),
    Sync(control::SyncArgs),
    Txid(control::TxidArgs),
    Unregister(control::UnregisterArgs),
    Version(version::Args),
}

/// Flags that take no value: `-json=true` / `-json=false` are rewritten for them (a test
/// checks that every command's switches are here).
const SWITCHES: &[&str] = &[
    "json",
    "wait",
    "dry-run",
    "force",
    "if-db-not-exists",
    "if-replica-exists",
    "once",
    "no-expand-env",
    "restore-if-db-not-exists",
    "verbose",
    "f",
    "follow",
    "help",
];

/// Rewrites Go-style flags for argh: `-name` → `--name`, `-name=v` → `--name v`, boolean
/// `-name=false` dropped. Single letters (`-o`, `-h`) and everything after `--` are kept.
pub fn normalize_args(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut rest = false;
    for arg in args {
        if rest || arg == "--" || !arg.starts_with('-') || arg == "-" {
            rest |= arg == "--";
            out.push(arg.clone());
            continue;
        }
        let body = arg.trim_start_matches('-');
        if arg == "-h" {
            out.push("--help".to_string());
            continue;
        }
        if body.is_empty() || (arg.len() == 2 && !arg.starts_with("--")) {
            out.push(arg.clone());
            continue;
        }
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let flag = if name.len() == 1 {
            format!("-{name}")
        } else {
            format!("--{name}")
        };
        match value {
            Some("false" | "0" | "f" | "F" | "FALSE" | "False") if SWITCHES.contains(&name) => {}
            Some(_) if SWITCHES.contains(&name) => out.push(flag),
            Some(v) => {
                out.push(flag);
                out.push(v.to_string());
            }
            None => out.push(flag),
        }
    }
    out
}

/// Runs the CLI with the process arguments; returns the exit code.
pub fn main() -> i32 {
    let args: Vec<String> = std::env::args().collect();
    let normalized = normalize_args(&args[1..]);
    if normalized.is_empty() {
        let _ = Cli::from_args(&["litestream"], &["--help"]).map_err(|e| print!("{}", e.output));
        return 1;
    }
    let refs: Vec<&str> = normalized.iter().map(String::as_str).collect();
    let cli = match Cli::from_args(&["litestream"], &refs) {
        Ok(cli) => cli,
        Err(early) => {
            return match early.status {
                Ok(()) => {
                    print!("{}", early.output);
                    0
                }
                Err(()) => {
                    eprintln!("Error: {}", early.output.trim_end());
                    1
                }
            };
        }
    };
    if !matches!(cli.command, Command::Replicate(_)) {
        // One-shot commands log to stderr so their stdout stays parseable; the daemon
        // configures its own logging from the config.
        crate::logging::init(
            crate::config::LogLevel::Info,
            crate::config::LogFormat::Text,
            true,
        );
    }
    let result = match cli.command {
        Command::Databases(a) => databases::run(a),
        Command::Demote(a) => role::demote(a),
        Command::Events(a) => events::run(a),
        Command::Info(a) => control::info(a),
        Command::List(a) => control::list(a),
        Command::Ltx(a) => ltx::run(a),
        Command::Promote(a) => role::promote(a),
        Command::Register(a) => control::register(a),
        Command::Replicate(a) => replicate::run(a),
        Command::Reset(a) => reset::run(a),
        Command::Restore(a) => restore::run(a),
        Command::Start(a) => control::start(a),
        Command::Status(a) => status::run(a),
        Command::Stop(a) => control::stop(a),
        Command::Sync(a) => control::sync(a),
        Command::Txid(a) => control::txid(a),
        Command::Unregister(a) => control::unregister(a),
        Command::Version(a) => version::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            1
        }
    }
}

/// Loads the config named by `-config`, `$LITESTREAM_CONFIG`, or `/etc/litestream.yml`.
pub fn load_config(path: Option<&Path>, no_expand_env: bool) -> Result<Config> {
    let (config, warnings) = load_config_with_warnings(path, no_expand_env)?;
    for warning in &warnings {
        warning.log();
    }
    Ok(config)
}

/// [`load_config`], with the warnings handed back for a caller whose logger does not exist
/// yet (`replicate` reads its log settings from this very file).
pub fn load_config_with_warnings(
    path: Option<&Path>,
    no_expand_env: bool,
) -> Result<(Config, Vec<config::ConfigWarning>)> {
    let path = path.map_or_else(
        || config::default_config_path(config::process_env),
        Path::to_path_buf,
    );
    if !path.exists() {
        bail!("config file not found: {}", path.display());
    }
    Ok(Config::load_with_warnings(&path, !no_expand_env)?)
}

/// Whether a positional argument is a replica URL rather than a database path.
pub fn is_url(arg: &str) -> bool {
    arg.contains("://")
}

/// A database path from the command line, made absolute against the working directory.
pub fn absolute(path: &str) -> Result<PathBuf> {
    let p = PathBuf::from(path);
    if p.is_absolute() {
        return Ok(p);
    }
    Ok(std::env::current_dir()
        .context("current directory")?
        .join(p))
}

/// The config entry of a database given on the command line.
pub fn config_db<'a>(config: &'a Config, path: &Path) -> Result<Cow<'a, DbConfig>> {
    config
        .db(path)
        .with_context(|| format!("database not found in config: {}", path.display()))
}

/// A replica client for a URL given on the command line (no config involved).
pub fn client_for_url(url: &str) -> Result<Arc<dyn ReplicaClient>> {
    let target = replica::url::parse_replica_url(url)?;
    let target = match target {
        ReplicaTarget::S3(s3) => ReplicaTarget::S3(s3.with_env_credentials(config::process_env)),
        other => other,
    };
    replica::open_client(url, &target)
}

/// Formats rows like Go's `text/tabwriter` with padding 2: columns aligned, the last column
/// not padded.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; cols];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                line.push_str(&" ".repeat(widths[i] - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Pretty JSON with two-space indentation, as Litestream prints `-json` output.
pub fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(args: &[&str]) -> Vec<String> {
        normalize_args(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn go_style_flags_become_argh_flags() {
        assert_eq!(
            n(&["restore", "-config", "x.yml", "-o", "out", "db"]),
            ["restore", "--config", "x.yml", "-o", "out", "db"]
        );
        assert_eq!(
            n(&["sync", "-timeout=5", "--wait", "db"]),
            ["sync", "--timeout", "5", "--wait", "db"]
        );
        assert_eq!(n(&["list", "-json=true"]), ["list", "--json"]);
        assert_eq!(n(&["list", "-json=false"]), ["list"]);
        assert_eq!(
            n(&["restore", "--", "-weird.db"]),
            ["restore", "--", "-weird.db"]
        );
    }

    #[test]
    fn every_switch_of_every_command_takes_go_booleans() {
        let help = |args: &[&str]| match Cli::from_args(&["litestream"], args) {
            Err(e) if e.status.is_ok() => e.output,
            _ => panic!("{args:?}: no help"),
        };
        let top = help(&["--help"]);
        let commands: Vec<&str> = top
            .lines()
            .skip_while(|l| !l.starts_with("Commands:"))
            .skip(1)
            // A command starts its line; its description may go on over indented lines.
            .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert!(
            commands.contains(&"promote") && commands.contains(&"demote"),
            "{top}"
        );
        let mut missing = vec![];
        let mut seen = 0;
        for cmd in commands {
            let text = help(&[cmd, "--help"]);
            let usage = text.lines().next().unwrap_or_default();
            // In the usage line a switch is `[--json]` or `[-f]`, an option `[--timeout <timeout>]`.
            for item in usage.split('[').skip(1) {
                let item = item.split(']').next().unwrap_or_default();
                if !item.starts_with('-') || item.contains('<') || item == "--help" {
                    continue;
                }
                let name = item.trim_start_matches('-');
                seen += 1;
                // A short switch's long name is on its line of the options list: `-f, --follow`.
                let long = text
                    .lines()
                    .find_map(|l| l.trim_start().strip_prefix(&format!("{item}, --")))
                    .and_then(|rest| rest.split_whitespace().next());
                for n in std::iter::once(name).chain(long) {
                    if !SWITCHES.contains(&n) {
                        missing.push(format!("{cmd} -{n}"));
                    }
                }
            }
        }
        assert!(seen >= 20, "only {seen} switches found");
        assert!(missing.is_empty(), "not in SWITCHES: {missing:?}");
        assert_eq!(n(&["restore", "-f=true", "x"]), ["restore", "-f", "x"]);
        assert_eq!(n(&["restore", "-f=false", "x"]), ["restore", "x"]);
        assert_eq!(
            n(&["restore", "-follow=true", "x"]),
            ["restore", "--follow", "x"]
        );
    }

    #[test]
    fn table_pads_like_tabwriter() {
        let t = table(&[
            vec!["path".into(), "replica".into()],
            vec!["/tmp/lsref/app.db".into(), "file".into()],
        ]);
        assert_eq!(t, "path               replica\n/tmp/lsref/app.db  file\n");
    }
}
