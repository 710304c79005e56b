//! `litestream restore`: rebuild a database from a replica, to the latest state or a point in
//! time, verifying every file and the final database checksum (see `crate::restore`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use argh::FromArgs;
use serde_json::json;

use crate::follow;
use crate::ltx::TxId;
use crate::replica::ReplicaClient;
use crate::restore::{self, progress, Target};
use crate::timefmt;

#[derive(FromArgs)]
/// Recovers a database from a replica (DB_PATH from the config, or REPLICA_URL with -o).
#[argh(subcommand, name = "restore")]
pub struct Args {
    /// configuration file (default: $LITESTREAM_CONFIG or /etc/litestream.yml)
    #[argh(option)]
    config: Option<PathBuf>,
    /// do not expand $VAR and ${VAR} in the configuration file
    #[argh(switch)]
    no_expand_env: bool,
    /// restore up to this hex transaction ID, inclusive (default: the newest)
    #[argh(option)]
    txid: Option<String>,
    /// restore to this point in time, RFC 3339 (default: the newest)
    #[argh(option)]
    timestamp: Option<String>,
    /// output path of the restored database (default: the database path)
    #[argh(option, short = 'o')]
    output: Option<PathBuf>,
    /// exit 0 without restoring if the output database already exists
    #[argh(switch)]
    if_db_not_exists: bool,
    /// exit 0 without restoring if the replica has no backups
    #[argh(switch)]
    if_replica_exists: bool,
    /// print the restore plan and exit without writing a database
    #[argh(switch)]
    dry_run: bool,
    /// overwrite an existing output database and its -wal/-shm files
    #[argh(switch)]
    force: bool,
    /// print a JSON summary on success
    #[argh(switch)]
    json: bool,
    /// follow mode: after restoring, keep applying new changes, as tail -f does (default: off)
    #[argh(switch, short = 'f')]
    follow: bool,
    /// polling interval for follow mode (default: 1s)
    #[argh(option)]
    follow_interval: Option<String>,
    /// DB_PATH or REPLICA_URL
    #[argh(positional, greedy, arg_name = "DB_PATH|REPLICA_URL")]
    target: Vec<String>,
}

/// Parses `-txid`: hexadecimal, 1 to 16 digits (Litestream requires exactly 16).
pub fn parse_txid(s: &str) -> Result<TxId> {
    // `TxId::from_str` checks the digits; the length limit is the flag's own.
    match s.parse::<TxId>() {
        Ok(txid) if s.len() <= 16 => Ok(txid),
        _ => bail!(
            "invalid value {s:?} for flag -txid: invalid txid format (want up to 16 hex digits)"
        ),
    }
}

fn non_empty_file(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.len() > 0)
}

/// Runs the restore.
pub fn run(args: Args) -> Result<i32> {
    let started = Instant::now();
    let (source, client, output): (String, Arc<dyn ReplicaClient>, PathBuf) = match args.target.as_slice() {
        [] => bail!("database path or replica URL required\nTry: litestream restore -o /path/to/db s3://bucket/prefix"),
        [url] if super::is_url(url) => {
            if args.config.is_some() {
                bail!("cannot specify a replica URL and the -config flag");
            }
            let Some(out) = &args.output else {
                bail!("-o is required when restoring from a replica URL\nTry: litestream restore -o /path/to/db {url}");
            };
            (url.clone(), super::client_for_url(url)?, super::absolute(&out.to_string_lossy())?)
        }
        [p] => {
            let config = super::load_config(args.config.as_deref(), args.no_expand_env)?;
            let path = super::absolute(p)?;
            let db = super::config_db(&config, &path)?;
            let out = match &args.output {
                Some(o) => super::absolute(&o.to_string_lossy())?,
                None => path.clone(),
            };
            (p.clone(), crate::daemon::replica_client(&db)?, out)
        }
        _ => bail!("too many arguments"),
    };
    let target = match (&args.txid, &args.timestamp) {
        (Some(_), Some(_)) => bail!("cannot specify index & timestamp to restore"),
        (Some(t), None) => match parse_txid(t)? {
            TxId::ZERO => Target::Latest,
            t => Target::TxId(t),
        },
        (None, Some(ts)) => Target::Timestamp(timefmt::parse_rfc3339(ts).map_err(|_| {
            anyhow::anyhow!(
                "invalid -timestamp, must specify in ISO 8601 format (e.g. 2000-01-01T00:00:00Z)"
            )
        })?),
        (None, None) => Target::Latest,
    };
    let follow_interval = match &args.follow_interval {
        Some(text) => crate::duration::parse(text).map_err(|e| {
            anyhow::anyhow!("invalid value {text:?} for flag -follow-interval: {e}")
        })?,
        None => follow::DEFAULT_INTERVAL,
    };
    if args.follow {
        match target {
            Target::TxId(_) => bail!("cannot use follow mode with -txid"),
            Target::Timestamp(_) => bail!("cannot use follow mode with -timestamp"),
            Target::Latest if args.dry_run => bail!("cannot use -dry-run with -f"),
            Target::Latest => {}
        }
    }
    if args.if_db_not_exists && non_empty_file(&output) {
        log::info!(path:% = output.display(); "database already exists, skipping");
        return Ok(0);
    }
    if args.follow {
        return run_follow(
            client.as_ref(),
            &output,
            follow_interval,
            args.if_replica_exists,
        );
    }
    if !args.dry_run && !args.force && non_empty_file(&output) {
        bail!("cannot restore, output path already exists and is not empty: {}. Use -force to overwrite", output.display());
    }
    if args.if_replica_exists && restore::list_all(client.as_ref())?.is_empty() {
        log::info!(replica:% = client.url(); "no matching backups found");
        return Ok(0);
    }
    let plan = restore::plan(client.as_ref(), target).map_err(|e| {
        if restore::list_all(client.as_ref()).is_ok_and(|f| f.is_empty()) {
            anyhow::anyhow!("no matching backup files available: {e:#}")
        } else {
            e
        }
    })?;
    if args.dry_run {
        print_plan(&source, &output, client.as_ref(), &plan, args.json);
        return Ok(0);
    }
    let force = args.force || output.exists() && !non_empty_file(&output);
    let report =
        apply_showing_progress(client.as_ref(), &plan, &output, force, started, |_| Ok(()))?;
    if args.json {
        super::print_json(&json!({
            "db_path": output.display().to_string(),
            "replica": client.url(),
            "txid": report.txid.to_string(),
            "duration_ms": started.elapsed().as_millis() as u64,
            "integrity_check": "none",
            "checksum": report.checksum.to_string(),
            "files": report.files,
            "unverified_files": report.unverified_files,
        }));
    }
    Ok(0)
}

/// Applies `plan` with a progress line on a terminal, then logs the summary line, last (the
/// restore's time counted from `started`).
fn apply_showing_progress(
    client: &dyn ReplicaClient,
    plan: &restore::Plan,
    output: &Path,
    force: bool,
    started: Instant,
    before_rename: impl FnOnce(&restore::Report) -> Result<()>,
) -> Result<restore::Report> {
    let name = output.file_name().map_or_else(
        || output.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut meter = progress::Meter::stderr(&name, plan);
    let report = restore::apply_then(client, plan, output, force, before_rename, &mut |done| {
        meter.update(done)
    })?;
    meter.finish();
    if report.unverified_files > 0 {
        log::warn!(
            files = report.unverified_files,
            detail = "written by a tool that does not record them (Litestream); each file's own checksum was verified";
            "restored without database checksums"
        );
    }
    progress::log_summary(&output.display().to_string(), &report, started.elapsed());
    Ok(report)
}

/// `restore -f`: restores `output` (or resumes the follower already there, from the txid
/// beside it), then applies the replica's new files until SIGINT or SIGTERM.
fn run_follow(
    client: &dyn ReplicaClient,
    output: &Path,
    interval: Duration,
    if_replica_exists: bool,
) -> Result<i32> {
    let (at, resumed) = if let Some(txid) = follow::resume_point(client, output)? {
        log::info!(
            txid:% = txid,
            output:% = output.display();
            "resuming follow mode from crash recovery"
        );
        (txid, true)
    } else {
        if if_replica_exists && restore::list_all(client)?.is_empty() {
            log::info!(replica:% = client.url(); "no matching backups found");
            return Ok(0);
        }
        let started = Instant::now();
        let plan = restore::plan(client, Target::Latest)?;
        // The output is absent or empty: a -wal or -shm beside it belongs to no database and
        // would be replayed over ours, so they go (force), and the txid is recorded before the
        // database takes its name, so that no crash leaves it without one.
        let report = apply_showing_progress(client, &plan, output, true, started, |r| {
            follow::write_txid(output, r.txid)
        })?;
        (report.txid, false)
    };
    let stop = stop_channel()?;
    let mut follower = follow::Follower::open(client, output, at, resumed)?;
    follow::run(&mut follower, interval, &stop);
    Ok(0)
}

/// A channel that receives once SIGINT or SIGTERM arrives. A second signal ends the process
/// at once (exit 1), for a follower stuck on an unreachable replica: the database stays
/// consistent whatever the follower was doing (see `crate::follow`).
fn stop_channel() -> Result<crossbeam_channel::Receiver<()>> {
    let mut signals = signal_hook::iterator::Signals::new([libc::SIGTERM, libc::SIGINT])
        .context("install signal handlers")?;
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut signals = signals.forever();
            if signals.next().is_some() {
                let _ = tx.send(());
            }
            if let Some(sig) = signals.next() {
                log::warn!(signal = sig; "second signal, exiting without waiting");
                std::process::exit(1);
            }
        })?;
    Ok(rx)
}

fn print_plan(
    source: &str,
    output: &Path,
    client: &dyn ReplicaClient,
    plan: &restore::Plan,
    json: bool,
) {
    let first = plan.files.first().map_or(TxId::ZERO, |f| f.min);
    if json {
        let files: Vec<_> = plan
            .files
            .iter()
            .map(|f| {
                json!({"level": f.level, "name": crate::ltx::file_name(f.min, f.max), "min_txid": f.min.to_string(),
                       "max_txid": f.max.to_string(), "size": f.size, "timestamp": timefmt::rfc3339_secs(f.created_ms)})
            })
            .collect();
        super::print_json(&json!({
            "source": source, "target_path": output.display().to_string(), "replica": client.url(),
            "min_txid": first.to_string(), "max_txid": plan.txid.to_string(), "files": files,
        }));
        return;
    }
    println!("Restore plan:");
    println!("  source: {source}");
    println!("  target: {}", output.display());
    println!("  replica: {}", client.url());
    println!("  txid range: {first} - {}", plan.txid);
    println!();
    println!("Files to fetch:");
    let mut rows = vec![
        ["level", "file", "min_txid", "max_txid", "size", "timestamp"]
            .map(String::from)
            .to_vec(),
    ];
    for f in &plan.files {
        rows.push(vec![
            f.level.to_string(),
            crate::ltx::file_name(f.min, f.max),
            f.min.to_string(),
            f.max.to_string(),
            f.size.to_string(),
            timefmt::rfc3339_secs(f.created_ms),
        ]);
    }
    print!("{}", super::table(&rows));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txid_flag_accepts_hex_up_to_16_digits() {
        assert_eq!(parse_txid("0000000000000003").unwrap(), TxId::new(3));
        assert_eq!(parse_txid("a").unwrap(), TxId::new(10));
        assert_eq!(parse_txid("000000000000000A").unwrap(), TxId::new(10));
        for bad in ["", "0x3", "zz", "00000000000000001"] {
            assert!(parse_txid(bad).is_err(), "{bad}");
        }
    }
}
