//! The command line as a user meets it: `replicate` forms (-exec, -once,
//! -restore-if-db-not-exists, DB_PATH REPLICA_URL), `databases`, `ltx`, `status`, `reset`,
//! `version`, Go-style flags, `$LITESTREAM_CONFIG` and `$VAR` expansion, exit codes.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn version_help_and_unknown_commands() {
    let o = run(&["version"]);
    assert!(o.status.success());
    assert_eq!(stdout(&o).trim(), env!("CARGO_PKG_VERSION"));
    let o = run(&["restore", "-h"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        stdout(&o).contains("-txid") || stdout(&o).contains("--txid"),
        "{}",
        stdout(&o)
    );
    let o = run(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).starts_with("Error: "), "{}", stderr(&o));
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(1));
    let o = run(&["restore", "-bogus", "x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("bogus"), "{}", stderr(&o));
}

#[test]
fn once_exec_and_positional_forms() {
    let dir = TestDir::new();
    let db = dir.path("app.db");
    let conn = create_db(&db);
    conn.execute("INSERT INTO t(v) VALUES ('a')", []).unwrap();
    let replica = format!("file://{}", dir.path("replica").display());
    let socket = dir.path("ls.sock");
    // A config with only a socket, so the positional form does not touch /var/run.
    // -once: one waited sync, then exit 0; the replica has the row.
    let o = Command::new(bin())
        .args(["replicate", "-once", db.to_str().unwrap(), &replica])
        .env("XDG_RUNTIME_DIR", dir.dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let out = dir.path("once.db");
    restore(&replica, &out, &[]);
    assert_eq!(ids(&out), vec![1]);
    // -exec: the daemon exits when the child does, with the child's exit code, after a final
    // sync of what the child wrote.
    let script = format!(
        "sqlite3 {} \"INSERT INTO t(v) VALUES ('from-exec')\"; exit 3",
        db.display()
    );
    let config = write_config(dir.dir.path(), &[(&db, &replica)], "", "");
    let o = Command::new(bin())
        .args([
            "replicate",
            "-config",
            config.to_str().unwrap(),
            "-exec",
            &script,
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}{}", stdout(&o), stderr(&o));
    let out = dir.path("exec.db");
    restore(&replica, &out, &[]);
    assert_eq!(
        ids(&out),
        vec![1, 2],
        "the child's write was synced on the way out"
    );
    assert!(!socket.exists(), "the socket is removed on shutdown");
    // SIGTERM is forwarded to the child; the daemon waits for it and exits 0.
    let mut child = Command::new(bin())
        .args([
            "replicate",
            "-config",
            config.to_str().unwrap(),
            "-exec",
            "trap 'exit 0' TERM; while :; do sleep 0.05; done",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(10), "socket", || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    });
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    // One database path and no URL.
    let o = run(&["replicate", db.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("must specify at least one replica URL"),
        "{}",
        stderr(&o)
    );
    let o = run(&[
        "replicate",
        "-once",
        "-exec",
        "true",
        db.to_str().unwrap(),
        &replica,
    ]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn restore_if_db_not_exists_before_replicating() {
    let dir = TestDir::new();
    let db = dir.path("app.db");
    let conn = create_db(&db);
    for _ in 0..10 {
        conn.execute("INSERT INTO t(v) VALUES ('x')", []).unwrap();
    }
    drop(conn);
    let replica = format!("file://{}", dir.path("replica").display());
    let config = write_config(dir.dir.path(), &[(&db, &replica)], "", "");
    let o = run(&["replicate", "-once", "-config", config.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Lose the database (and its local state); start with -restore-if-db-not-exists.
    for f in ["app.db", "app.db-wal", "app.db-shm"] {
        let _ = std::fs::remove_file(dir.path(f));
    }
    std::fs::remove_dir_all(dir.path(".app.db-litestream")).unwrap();
    let before = stdout(&run(&["ltx", "-level", "all", &replica]));
    let o = run(&[
        "replicate",
        "-once",
        "-restore-if-db-not-exists",
        "-config",
        config.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("restore completed"), "{}", stdout(&o));
    assert_eq!(ids(&db).len(), 10);
    // The restored database is exactly the replica's newest state (its checksum says so): the
    // daemon recognises it and writes nothing new.
    assert_eq!(stdout(&run(&["ltx", "-level", "all", &replica])), before);
    // The daemon continued the replica's TXIDs instead of starting over at 1.
    let o = run(&["ltx", "-json", &replica]);
    let files: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let maxes: Vec<&str> = files
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["max_txid"].as_str().unwrap())
        .collect();
    let mut sorted = maxes.clone();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        maxes.len(),
        "no txid written twice: {maxes:?}"
    );
}

#[test]
fn inspection_commands_match_litestream_formats() {
    let dir = TestDir::new();
    let db = dir.path("app.db");
    create_db(&db)
        .execute("INSERT INTO t(v) VALUES ('x')", [])
        .unwrap();
    let replica_dir = dir.path("replica");
    let replica = format!("file://{}", replica_dir.display());
    // $VAR expansion in the config, found through $LITESTREAM_CONFIG.
    let config = dir.path("ls.yml");
    std::fs::write(
        &config,
        format!(
            "dbs:\n  - path: {}\n    replica:\n      url: file://${{REPLICA_DIR}}\n",
            db.display()
        ),
    )
    .unwrap();
    let with_env = |args: &[&str]| {
        Command::new(bin())
            .args(args)
            .env("LITESTREAM_CONFIG", &config)
            .env("REPLICA_DIR", &replica_dir)
            .output()
            .unwrap()
    };
    let o = with_env(&["databases"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let want = format!(
        "path{}replica\n{}  file\n",
        " ".repeat(db.display().to_string().len() - 4 + 2),
        db.display()
    );
    assert_eq!(stdout(&o), want);
    // status before any replication: not initialized.
    let o = with_env(&["status"]);
    assert!(stdout(&o).contains("not initialized"), "{}", stdout(&o));
    let o = with_env(&["replicate", "-once"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = with_env(&["status", "-json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["status"], "ok");
    assert_eq!(v[0]["local_txid"], "0000000000000001");
    // ltx: by database path (from the config) and by URL, the same rows.
    let by_path = stdout(&with_env(&["ltx", db.to_str().unwrap()]));
    let by_url = stdout(&run(&["ltx", &replica]));
    assert_eq!(by_path, by_url);
    assert!(by_path.starts_with("level  min_txid          max_txid          size  created\n0      0000000000000001  0000000000000001  "), "{by_path}");
    let o = run(&["ltx", "-level", "10", &replica]);
    assert_eq!(o.status.code(), Some(1));
    // Double-dash flags work too.
    let o = run(&["ltx", "--level", "all", "--json", &replica]);
    assert!(o.status.success());
    // reset: dry run lists, then removes the local LTX files.
    let o = with_env(&["reset", "-dry-run", db.to_str().unwrap()]);
    assert!(
        stdout(&o).contains("0000000000000001-0000000000000001.ltx"),
        "{}",
        stdout(&o)
    );
    assert!(dir.path(".app.db-litestream/ltx/0").exists());
    let o = with_env(&["reset", db.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!dir.path(".app.db-litestream/ltx").exists());
    let o = with_env(&["status"]);
    assert!(stdout(&o).contains("not initialized"), "{}", stdout(&o));
}
