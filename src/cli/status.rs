//! `litestream status`: each configured database's local state, without a daemon.

use std::path::PathBuf;

use anyhow::Result;
use argh::FromArgs;
use serde_json::json;

#[derive(FromArgs)]
/// Displays the replication status of the configured databases (local state only).
#[argh(subcommand, name = "status")]
pub struct Args {
    /// configuration file (default: $LITESTREAM_CONFIG or /etc/litestream.yml)
    #[argh(option)]
    config: Option<PathBuf>,
    /// print JSON instead of a table
    #[argh(switch)]
    json: bool,
    /// do not expand $VAR and ${VAR} in the configuration file
    #[argh(switch)]
    no_expand_env: bool,
    /// show only this database
    #[argh(positional, greedy, arg_name = "DB_PATH")]
    path: Vec<String>,
}

/// Sizes as go-humanize's `Bytes` prints them (SI units): `0 B`, `4.2 kB`, `29 kB`.
pub fn humanize_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 10 {
        return format!("{n} B");
    }
    let e = ((n as f64).ln() / 1000f64.ln()).floor() as usize;
    let e = e.min(UNITS.len() - 1);
    let val = ((n as f64) / 1000f64.powi(e as i32) * 10.0 + 0.5).floor() / 10.0;
    if val < 10.0 {
        format!("{val:.1} {}", UNITS[e])
    } else {
        format!("{val:.0} {}", UNITS[e])
    }
}

/// One row per database: status, newest local TXID, WAL size.
pub fn run(args: Args) -> Result<i32> {
    let config = super::load_config(args.config.as_deref(), args.no_expand_env)?;
    let filter = match args.path.first() {
        Some(p) => Some(super::absolute(p)?),
        None => None,
    };
    let mut rows = vec![];
    for db in config
        .dbs
        .iter()
        .filter(|d| filter.as_ref().is_none_or(|f| *f == d.path))
    {
        let (status, txid, wal) = if !db.path.exists() {
            ("no database".to_string(), "-".to_string(), "-".to_string())
        } else {
            let wal = std::fs::metadata(crate::sqlite::wal_path(&db.path)).map_or(0, |m| m.len());
            let newest = db
                .meta_path
                .join("ltx/0")
                .is_dir()
                .then(|| crate::spool::list(&db.meta_path));
            match newest {
                None => ("not initialized".into(), "-".into(), humanize_bytes(wal)),
                Some(Ok(files)) => match files.last() {
                    Some(f) => ("ok".into(), f.max.to_string(), humanize_bytes(wal)),
                    None => ("not initialized".into(), "-".into(), humanize_bytes(wal)),
                },
                Some(Err(e)) => (format!("error: {e}"), "-".into(), humanize_bytes(wal)),
            }
        };
        rows.push([db.path.display().to_string(), status, txid, wal]);
    }
    if args.json {
        let v: Vec<_> = rows
            .iter()
            .map(|[d, s, t, w]| json!({"database": d, "status": s, "local_txid": t, "wal_size": w}))
            .collect();
        super::print_json(&json!(v));
        return Ok(0);
    }
    let mut table = vec![["database", "status", "local txid", "wal size"]
        .map(String::from)
        .to_vec()];
    table.extend(rows.into_iter().map(|r| r.to_vec()));
    print!("{}", super::table(&table));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::humanize_bytes;

    #[test]
    fn sizes_match_go_humanize() {
        assert_eq!(humanize_bytes(0), "0 B");
        assert_eq!(humanize_bytes(4152), "4.2 kB");
        assert_eq!(humanize_bytes(8272), "8.3 kB");
        assert_eq!(humanize_bytes(28_872), "29 kB");
        assert_eq!(humanize_bytes(103_000), "103 kB");
        assert_eq!(humanize_bytes(999), "999 B");
    }
}
