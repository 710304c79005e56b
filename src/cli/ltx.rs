//! `litestream ltx`: the LTX files a replica holds.

use std::path::PathBuf;

use anyhow::{bail, Result};
use argh::FromArgs;
use serde_json::json;

use crate::ltx::Level;
use crate::replica::LtxFileInfo;
use crate::timefmt;

#[derive(FromArgs)]
/// Lists the LTX files available for a database (DB_PATH from the config, or REPLICA_URL).
#[argh(subcommand, name = "ltx")]
pub struct Args {
    /// configuration file (default: $LITESTREAM_CONFIG or /etc/litestream.yml)
    #[argh(option)]
    config: Option<PathBuf>,
    /// do not expand $VAR and ${VAR} in the configuration file
    #[argh(switch)]
    no_expand_env: bool,
    /// compaction level to list: 0-9 or "all" (default: 0)
    #[argh(option, default = "String::from(\"0\")")]
    level: String,
    /// print JSON instead of a table
    #[argh(switch)]
    json: bool,
    /// DB_PATH or REPLICA_URL
    #[argh(positional, greedy, arg_name = "DB_PATH|REPLICA_URL")]
    target: Vec<String>,
}

/// Parses `-level`.
fn levels(arg: &str) -> Result<Vec<Level>> {
    if arg == "all" {
        return Ok(Level::all().collect());
    }
    match arg.parse::<u8>().map(Level::new) {
        Ok(Some(l)) => Ok(vec![l]),
        Ok(_) => bail!("invalid value {arg:?} for flag -level: level must be between 0 and 9"),
        Err(_) => {
            bail!("invalid value {arg:?} for flag -level: invalid level: must be 0-9 or \"all\"")
        }
    }
}

/// Prints the files of the chosen levels, ordered by level then TXID.
pub fn run(args: Args) -> Result<i32> {
    let levels = levels(&args.level)?;
    let client = match args.target.as_slice() {
        [] => bail!("database path or replica URL required\nTry: litestream ltx /path/to/db"),
        [t] if super::is_url(t) => {
            if args.config.is_some() {
                bail!("cannot specify a replica URL and the -config flag");
            }
            super::client_for_url(t)?
        }
        [t] => {
            let config = super::load_config(args.config.as_deref(), args.no_expand_env)?;
            let path = super::absolute(t)?;
            crate::daemon::replica_client(&*super::config_db(&config, &path)?)?
        }
        _ => bail!("too many arguments"),
    };
    let mut files: Vec<LtxFileInfo> = vec![];
    for level in levels {
        files.extend(client.ltx_files(level)?);
    }
    if args.json {
        let v: Vec<_> = files
            .iter()
            .map(|f| {
                json!({"level": f.level, "min_txid": f.min.to_string(), "max_txid": f.max.to_string(),
                       "size": f.size, "timestamp": timefmt::rfc3339_secs(f.created_ms)})
            })
            .collect();
        super::print_json(&json!(v));
        return Ok(0);
    }
    let mut rows = vec![["level", "min_txid", "max_txid", "size", "created"]
        .map(String::from)
        .to_vec()];
    for f in &files {
        rows.push(vec![
            f.level.to_string(),
            f.min.to_string(),
            f.max.to_string(),
            f.size.to_string(),
            timefmt::rfc3339_secs(f.created_ms),
        ]);
    }
    print!("{}", super::table(&rows));
    Ok(0)
}
