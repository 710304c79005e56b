//! `litestream reset`: remove a database's local LTX files so the next sync starts afresh.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use argh::FromArgs;

#[derive(FromArgs)]
/// Clears local Litestream state (the spooled LTX files) for a database; the database and
/// the replica are not touched, and the next sync writes a snapshot.
#[argh(subcommand, name = "reset")]
pub struct Args {
    /// configuration file (default: $LITESTREAM_CONFIG or /etc/litestream.yml; optional here)
    #[argh(option)]
    config: Option<PathBuf>,
    /// do not expand $VAR and ${VAR} in the configuration file
    #[argh(switch)]
    no_expand_env: bool,
    /// print the files that would be removed without deleting them
    #[argh(switch)]
    dry_run: bool,
    /// database path
    #[argh(positional, greedy, arg_name = "DB_PATH")]
    path: Vec<String>,
}

/// Removes `<meta>/ltx` (or lists it with `-dry-run`).
pub fn run(args: Args) -> Result<i32> {
    let path = match args.path.as_slice() {
        [] => bail!("database path required\nTry: litestream reset /path/to/db"),
        [p] => super::absolute(p)?,
        _ => bail!("too many arguments"),
    };
    // The config only matters for a custom meta-path; without -config a missing default file
    // is not an error (as Litestream).
    let meta = match &args.config {
        Some(c) => {
            let config =
                super::load_config(Some(c), args.no_expand_env).context("cannot read config")?;
            config.db(&path).map(|d| d.meta_path.clone())
        }
        None => {
            let default = crate::config::default_config_path(crate::config::process_env);
            default
                .exists()
                .then(|| crate::config::Config::load(&default, !args.no_expand_env).ok())
                .flatten()
                .and_then(|c| c.db(&path).map(|d| d.meta_path.clone()))
        }
    }
    .unwrap_or_else(|| crate::spool::default_meta_dir(&path));
    if !path.exists() {
        bail!("database does not exist: {}", path.display());
    }
    let ltx_dir = meta.join("ltx");
    if !meta.exists() {
        println!("No local state to reset for {}", path.display());
        println!("Meta directory does not exist: {}", meta.display());
        return Ok(0);
    }
    let mut files = vec![];
    collect_files(&ltx_dir, &mut files)?;
    files.sort();
    if args.dry_run {
        println!(
            "Dry run: local Litestream state would be reset for: {}",
            path.display()
        );
        println!("Would remove: {}", ltx_dir.display());
        if files.is_empty() {
            println!("No local LTX files would be removed.");
        } else {
            println!("Files that would be removed:");
            for f in &files {
                println!("  {}", f.display());
            }
            println!("No files were removed.");
        }
        return Ok(0);
    }
    println!("Resetting local Litestream state for: {}", path.display());
    println!("Removing: {}", ltx_dir.display());
    match std::fs::remove_dir_all(&ltx_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("remove {}", ltx_dir.display())),
    }
    // The page checksums saved at the last shutdown go too: nothing local is trusted after a
    // reset.
    crate::db::discard_page_checksums(&meta);
    crate::durable::sync_dir(&meta).with_context(|| format!("sync {}", meta.display()))?;
    println!("Reset complete. Next replication sync will create a fresh snapshot.");
    Ok(0)
}

fn collect_files(dir: &std::path::Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("list {}", dir.display())),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect_files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}
