//! `litestream databases`: the databases of the config file and their replica type.

use std::path::PathBuf;

use anyhow::Result;
use argh::FromArgs;
use serde_json::json;

#[derive(FromArgs)]
/// Lists the databases in the configuration file.
#[argh(subcommand, name = "databases")]
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
    /// no positional arguments are taken
    #[argh(positional, greedy)]
    extra: Vec<String>,
}

/// Prints one row per configured database, those found under `dir:` entries included.
pub fn run(args: Args) -> Result<i32> {
    if !args.extra.is_empty() {
        anyhow::bail!("too many arguments");
    }
    let config = super::load_config(args.config.as_deref(), args.no_expand_env)?;
    // Databases of `dir:` entries as the daemon would find them now.
    let found: Vec<_> = config
        .dirs
        .iter()
        .flat_map(|d| {
            crate::directory::find(d)
                .into_iter()
                .map(|p| d.entry(&p))
                .collect::<Vec<_>>()
        })
        .collect();
    let rows: Vec<(String, String)> = config
        .dbs
        .iter()
        .chain(&found)
        .map(|db| {
            (
                db.path.display().to_string(),
                db.active_replica()
                    .map_or_else(String::new, |r| r.type_name()),
            )
        })
        .collect();
    if args.json {
        let v: Vec<_> = rows
            .iter()
            .map(|(p, r)| json!({"path": p, "replica": r}))
            .collect();
        super::print_json(&json!(v));
    } else {
        let mut table = vec![vec!["path".to_string(), "replica".to_string()]];
        table.extend(rows.into_iter().map(|(p, r)| vec![p, r]));
        print!("{}", super::table(&table));
    }
    Ok(0)
}
