//! What ships in the .deb says what the binary does: the man pages name every command and flag
//! that `-h` lists, in the same words; every key litestream.yml(5) documents loads without a
//! warning; the default /etc/litestream.yml loads; the systemd unit verifies; the recipe lays
//! out the package as Debian expects, and lintian (when installed) finds no error in it.
//!
//! The .deb test runs `packaging/deb/build.sh` on the debug binary this test suite already
//! built (`--binary`), with no compression: a release build (about 7 minutes with LTO on two
//! cores) would not fit a test run. Everything else in the recipe is exercised.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_litestream")
}

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env_remove("LITESTREAM_CONFIG")
        .env_remove("LOG_LEVEL")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ls-pkg-")
        .tempdir()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// roff, read as plain text
// ---------------------------------------------------------------------------------------------

/// Splits macro arguments the way roff does: on blanks, `"..."` keeps blanks.
fn macro_args(s: &str) -> Vec<String> {
    let mut args = vec![];
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        let Some(&c) = chars.peek() else { break };
        let mut arg = String::new();
        if c == '"' {
            chars.next();
            while let Some(c) = chars.next() {
                if c == '"' {
                    if chars.peek() == Some(&'"') {
                        arg.push('"');
                        chars.next();
                        continue;
                    }
                    break;
                }
                arg.push(c);
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ' ' {
                    break;
                }
                arg.push(c);
                chars.next();
            }
        }
        args.push(arg);
    }
    args
}

/// Replaces the escapes the pages use by the characters they print.
fn unescape(s: &str) -> String {
    let mut out = s.to_string();
    for (from, to) in [
        ("\\fB", ""),
        ("\\fI", ""),
        ("\\fR", ""),
        ("\\fP", ""),
        ("\\(dq", "\""),
        ("\\(aq", "'"),
        ("\\(ti", "~"),
        ("\\(bu", "*"),
        ("\\(em", "--"),
        ("\\&", ""),
        ("\\c", ""),
        ("\\-", "-"),
        ("\\ ", " "),
        ("\\e", "\\"),
    ] {
        out = out.replace(from, to);
    }
    out
}

/// The words a roff source prints, one line per input line (macros reduced to their text).
fn roff_lines(src: &str) -> Vec<String> {
    let mut out = vec![];
    for line in src.lines() {
        if line.starts_with(".\\\"") || line.starts_with("'\\\"") {
            continue;
        }
        let Some(rest) = line.strip_prefix('.') else {
            out.push(unescape(line));
            continue;
        };
        let (name, args) = rest.split_once(' ').unwrap_or((rest, ""));
        let args = macro_args(args);
        let joined = match name {
            // Alternating fonts: the arguments touch.
            "BI" | "BR" | "IB" | "IR" | "RB" | "RI" => args.concat(),
            "B" | "I" | "SM" | "SB" | "SH" | "SS" | "IP" => args.join(" "),
            _ => continue,
        };
        out.push(unescape(&joined));
    }
    out
}

/// Collapses runs of blanks, for comparing text across line breaks.
fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The text of each `.SS` (and `.SH`) section, by heading.
fn sections(src: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let mut current = String::new();
    let mut body = String::new();
    for line in src.lines() {
        if line.starts_with(".SS ") || line.starts_with(".SH ") {
            map.insert(current.clone(), squash(&body));
            current = squash(&unescape(&macro_args(&line[4..]).join(" ")));
            body.clear();
        } else {
            for l in roff_lines(line) {
                body.push_str(&l);
                body.push('\n');
            }
        }
    }
    map.insert(current, squash(&body));
    map
}

/// Whether `text` names the flag `-name` (or `--name`) as a word of its own.
fn mentions_flag(text: &str, name: &str) -> bool {
    let needle = format!("-{name}");
    let bytes = text.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    text.match_indices(&needle).any(|(i, _)| {
        let start = if i > 0 && bytes[i - 1] == b'-' {
            i - 1
        } else {
            i
        };
        let before_ok = start == 0 || !word(bytes[start - 1]);
        let end = i + needle.len();
        let after_ok = end == bytes.len() || !word(bytes[end]);
        before_ok && after_ok
    })
}

// ---------------------------------------------------------------------------------------------
// argh help output
// ---------------------------------------------------------------------------------------------

/// One entry of an argh `Options:` or `Commands:` list.
#[derive(Debug)]
struct Entry {
    /// `--config` → `config`; a command's name as is.
    names: Vec<String>,
    description: String,
}

/// What `litestream [cmd] --help` prints: the description paragraph and the lists.
struct Help {
    description: String,
    options: Vec<Entry>,
    commands: Vec<Entry>,
}

fn parse_help(out: &str) -> Help {
    let mut description = String::new();
    let mut options: Vec<Entry> = vec![];
    let mut commands: Vec<Entry> = vec![];
    let mut list: Option<bool> = None; // Some(true): options, Some(false): commands
    for line in out.lines().skip(1) {
        match line {
            "Options:" => list = Some(true),
            "Commands:" => list = Some(false),
            _ => {}
        }
        if line.ends_with(':') && !line.starts_with(' ') {
            continue;
        }
        let Some(is_options) = list else {
            description.push_str(line);
            description.push(' ');
            continue;
        };
        let target = if is_options {
            &mut options
        } else {
            &mut commands
        };
        if line.trim().is_empty() {
            continue;
        }
        if line.starts_with("  ") && !line.starts_with("   ") {
            let body = &line[2..];
            // Names and description are two spaces apart, or one when the names fill the
            // column (`--follow-interval polling ...`); names are only ever `, `-separated.
            let gap = body.find("  ").or_else(|| {
                (1..body.len())
                    .find(|&i| body.as_bytes()[i] == b' ' && body.as_bytes()[i - 1] != b',')
            });
            let (names, desc) = gap.map_or((body, ""), |i| (&body[..i], &body[i..]));
            let names = names
                .split(',')
                .map(|n| n.trim().trim_start_matches('-').to_string())
                .collect();
            target.push(Entry {
                names,
                description: desc.trim().to_string(),
            });
        } else if let Some(last) = target.last_mut() {
            last.description.push(' ');
            last.description.push_str(line.trim());
        }
    }
    for e in options.iter_mut().chain(commands.iter_mut()) {
        e.description = squash(&e.description);
    }
    Help {
        description: squash(&description),
        options,
        commands,
    }
}

fn help(args: &[&str]) -> Help {
    let o = run(args);
    assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o.stderr));
    parse_help(&text(&o.stdout))
}

// ---------------------------------------------------------------------------------------------
// litestream(1)
// ---------------------------------------------------------------------------------------------

#[test]
fn man_page_documents_every_command_and_flag_in_the_words_of_help() {
    let page = sections(&read("man/litestream.1"));
    let top = help(&["--help"]);
    assert!(top.commands.len() >= 10, "{:?}", top.commands);
    let mut problems = vec![];
    for command in &top.commands {
        let name = &command.names[0];
        let Some(section) = page.get(name.as_str()) else {
            problems.push(format!("no `.SS {name}` section"));
            continue;
        };
        let lower = section.to_lowercase();
        let sub = help(&[name, "--help"]);
        let summary = sub.description.trim_end_matches('.').to_lowercase();
        if !lower.contains(&summary) {
            problems.push(format!(
                "{name}: the section does not say {:?}",
                sub.description
            ));
        }
        for flag in sub.options.iter().filter(|f| f.names != ["help", "help"]) {
            for n in &flag.names {
                if !mentions_flag(section, n) {
                    problems.push(format!("{name}: flag -{n} not documented"));
                }
            }
            if !lower.contains(&flag.description.to_lowercase()) {
                problems.push(format!(
                    "{name}: -{} is not described in the words of -h: {:?}",
                    flag.names.last().unwrap(),
                    flag.description
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "man/litestream.1:\n{}",
        problems.join("\n")
    );
}

#[test]
fn man_pages_carry_the_crate_version_and_render_cleanly() {
    let version = env!("CARGO_PKG_VERSION");
    for page in ["man/litestream.1", "man/litestream.yml.5"] {
        let src = read(page);
        let th = src.lines().find(|l| l.starts_with(".TH ")).unwrap();
        assert!(
            th.contains(&format!("\"litestream {version}\"")),
            "{page}: {th} (want litestream {version})"
        );
        if !have("groff") {
            eprintln!("groff not installed: {page} not rendered");
            continue;
        }
        let o = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(repo(page))
            .output()
            .unwrap();
        assert!(o.status.success(), "{page}: {}", text(&o.stderr));
        assert_eq!(text(&o.stderr), "", "{page}: groff warnings");
    }
}

// ---------------------------------------------------------------------------------------------
// litestream.yml(5) and the default config
// ---------------------------------------------------------------------------------------------

/// A key as litestream.yml(5) documents it: `.BI "key: " type` under `.SS section`.
#[derive(Debug)]
struct DocKey {
    section: String,
    key: String,
    kind: String,
    default: Option<String>,
}

fn documented_keys() -> Vec<DocKey> {
    let src = read("man/litestream.yml.5");
    let lines: Vec<&str> = src.lines().collect();
    let mut keys = vec![];
    let mut section = String::new();
    for (i, line) in lines.iter().enumerate() {
        if let Some(h) = line.strip_prefix(".SS ") {
            section = unescape(&macro_args(h).join(" "));
            continue;
        }
        let Some(rest) = line.strip_prefix(".BI ") else {
            continue;
        };
        let args = macro_args(rest);
        let Some(key) = args.first().and_then(|a| a.strip_suffix(": ")) else {
            continue;
        };
        let default = lines[i + 1..]
            .iter()
            .take_while(|l| !l.starts_with(".TP") && !l.starts_with(".S"))
            .find_map(|l| {
                let rest = l.split_once("Default: \\fB")?.1;
                Some(unescape(rest.split_once("\\fP")?.0))
            });
        keys.push(DocKey {
            section: section.clone(),
            key: unescape(key),
            kind: args.get(1).cloned().unwrap_or_default(),
            default,
        });
    }
    keys
}

/// A value of the documented type: its documented default, else a sample.
fn sample(k: &DocKey, dir: &Path) -> String {
    if let Some(d) = &k.default {
        return d.clone();
    }
    match k.kind.as_str() {
        "duration" => "1s".into(),
        "integer" => "1".into(),
        "boolean" => "true".into(),
        "string" => "x".into(),
        "glob" => "\"*.db\"".into(),
        "path" => dir.join("x").display().to_string(),
        "url" => format!("file://{}/replica", dir.display()),
        "http_url" => "http://127.0.0.1:9/ping".into(),
        "address" => "127.0.0.1:9090".into(),
        "command" => "true".into(),
        "mapping" => "{}".into(),
        "list" => "[]".into(),
        other => panic!("{k:?}: no sample value for type {other:?}; add one to tests/packaging.rs"),
    }
}

/// Configs that use `k` where its section says, each otherwise minimal.
fn configs_using(k: &DocKey, dir: &Path) -> Vec<String> {
    let v = sample(k, dir);
    let key = &k.key;
    let db = dir.join("app.db").display().to_string();
    let url = format!("file://{}/replica", dir.display());
    let in_replica = |lines: &str| format!("dbs:\n  - path: {db}\n    replica:\n{lines}");
    let replica_key = || match key.as_str() {
        "url" => in_replica(&format!("      url: {v}\n")),
        "path" => in_replica(&format!("      path: {v}\n")),
        "type" => in_replica(&format!(
            "      type: {v}\n      path: {}/r\n",
            dir.display()
        )),
        _ => in_replica(&format!("      url: {url}\n      {key}: {v}\n")),
    };
    match k.section.as_str() {
        "Top-level keys" => vec![format!("{key}: {v}\n")],
        "socket" | "logging" | "snapshot" => vec![format!("{}:\n  {key}: {v}\n", k.section)],
        "levels" => vec![format!("levels:\n  - {key}: {v}\n")],
        "dbs" => vec![match key.as_str() {
            "path" => format!("dbs:\n  - path: {v}\n    replica:\n      url: {url}\n"),
            "replica" => format!("dbs:\n  - path: {db}\n    replica: {{url: \"{url}\"}}\n"),
            "replicas" => format!("dbs:\n  - path: {db}\n    replicas: [{{url: \"{url}\"}}]\n"),
            _ => format!("dbs:\n  - path: {db}\n    {key}: {v}\n    replica:\n      url: {url}\n"),
        }],
        "Directory replication" => vec![match key.as_str() {
            "dir" => format!("dbs:\n  - dir: {v}\n    pattern: \"*.db\"\n    replica:\n      url: {url}\n"),
            "pattern" => format!(
                "dbs:\n  - dir: {}\n    pattern: {v}\n    replica:\n      url: {url}\n",
                dir.display()
            ),
            _ => format!(
                "dbs:\n  - dir: {}\n    pattern: \"*.db\"\n    {key}: {v}\n    replica:\n      url: {url}\n",
                dir.display()
            ),
        }],
        // The documented default, and a value that turns the feature on; `follow-interval`
        // is only used (without a warning) with `follow: true`.
        "Followers and promotion" => {
            let on = if k.kind == "boolean" { "true" } else { "5s" };
            let follow = if key == "follow-interval" { "    follow: true\n" } else { "" };
            [v.as_str(), on]
                .iter()
                .map(|v| format!("dbs:\n  - path: {db}\n{follow}    {key}: {v}\n    replica:\n      url: {url}\n"))
                .collect()
        }
        "replica" => vec![replica_key()],
        "Replica settings" => vec![replica_key(), format!("{key}: {v}\n")],
        other => panic!("{k:?}: keys under section {other:?} are not tested; add it here"),
    }
}

/// Loads `yaml` with `databases -config`; the exit code and the warnings, if any.
fn load(dir: &Path, name: &str, yaml: &str) -> Result<(), String> {
    let path = dir.join(name);
    std::fs::write(&path, yaml).unwrap();
    let o = run(&["databases", "-config", path.to_str().unwrap()]);
    let stderr = text(&o.stderr);
    if o.status.success() && !stderr.contains("WARN") {
        Ok(())
    } else {
        Err(format!(
            "exit {:?}, stderr:\n{stderr}--- config:\n{yaml}",
            o.status.code()
        ))
    }
}

#[test]
fn every_config_key_the_man_page_documents_loads_without_a_warning() {
    let keys = documented_keys();
    let sections: std::collections::BTreeSet<&str> =
        keys.iter().map(|k| k.section.as_str()).collect();
    for s in [
        "Top-level keys",
        "socket",
        "logging",
        "levels",
        "snapshot",
        "dbs",
        "Directory replication",
        "Followers and promotion",
        "replica",
        "Replica settings",
    ] {
        assert!(
            sections.contains(s),
            "no keys found under .SS {s}: {sections:?}"
        );
    }
    assert!(
        keys.len() >= 40,
        "only {} keys parsed: {keys:?}",
        keys.len()
    );
    let dir = tempdir();
    let mut problems = vec![];
    for (i, k) in keys.iter().enumerate() {
        for (j, yaml) in configs_using(k, dir.path()).iter().enumerate() {
            if let Err(e) = load(dir.path(), &format!("k{i}-{j}.yml"), yaml) {
                problems.push(format!("{} {:?}: {e}", k.section, k.key));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "documented keys that do not load cleanly:\n{}",
        problems.join("\n")
    );
}

#[test]
fn config_example_of_the_man_page_loads_cleanly() {
    let src = read("man/litestream.yml.5");
    let example: Vec<String> = src
        .lines()
        .skip_while(|l| *l != ".SH EXAMPLE")
        .skip_while(|l| *l != ".EX")
        .skip(1)
        .take_while(|l| *l != ".EE")
        .map(unescape)
        .collect();
    assert!(example.len() > 5, "{example:?}");
    let dir = tempdir();
    load(dir.path(), "example.yml", &(example.join("\n") + "\n")).unwrap();
}

/// The commented examples of packaging/litestream.yml: the lines between `# ---- Example...`
/// (or `# ---- Settings...`) and the next `# ----`, uncommented.
fn commented_examples(yaml: &str) -> Vec<(String, String)> {
    let mut blocks = vec![];
    let mut current: Option<(String, Vec<String>)> = None;
    for line in yaml.lines() {
        if let Some(title) = line.strip_prefix("# ---- ").filter(|t| !t.starts_with('-')) {
            current = Some((title.trim_end_matches('-').trim().to_string(), vec![]));
        } else if line.starts_with("# ----") {
            if let Some((title, lines)) = current.take() {
                blocks.push((title, lines.join("\n") + "\n"));
            }
        } else if let Some((_, lines)) = current.as_mut() {
            let l = line
                .strip_prefix("# ")
                .unwrap_or(line.trim_start_matches('#'));
            lines.push(l.to_string());
        }
    }
    assert!(current.is_none(), "unterminated example block");
    blocks
}

#[test]
fn default_config_loads_cleanly_and_so_do_its_commented_examples() {
    let dir = tempdir();
    let yaml = read("packaging/litestream.yml");
    load(dir.path(), "litestream.yml", &yaml).unwrap();
    let o = run(&[
        "databases",
        "-config",
        repo("packaging/litestream.yml").to_str().unwrap(),
    ]);
    assert_eq!(
        text(&o.stdout),
        "path  replica\n",
        "as installed it lists no database"
    );
    let blocks = commented_examples(&yaml);
    assert!(blocks.len() >= 3, "{blocks:?}");
    for (i, (title, block)) in blocks.iter().enumerate() {
        load(dir.path(), &format!("example{i}.yml"), block)
            .unwrap_or_else(|e| panic!("packaging/litestream.yml, {title:?}: {e}"));
    }
}

// ---------------------------------------------------------------------------------------------
// systemd unit
// ---------------------------------------------------------------------------------------------

/// `[Section]` → key → values (a key may repeat).
fn unit_file(src: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut map: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut section = String::new();
    for line in src.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
            map.entry(section.clone()).or_default();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("litestream.service: not key=value: {line}"));
        assert!(
            !section.is_empty(),
            "litestream.service: {line} outside a section"
        );
        map.entry(section.clone())
            .or_default()
            .entry(k.trim().to_string())
            .or_default()
            .push(v.trim().to_string());
    }
    map
}

/// systemd time spans as the unit uses them: `90`, `90s`, `2min`, `1min 30s`.
fn timespan_secs(v: &str) -> u64 {
    v.split_whitespace()
        .map(|part| {
            let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
            let n: u64 = digits.parse().unwrap_or_else(|_| panic!("timespan {v:?}"));
            match &part[digits.len()..] {
                "" | "s" | "sec" => n,
                "m" | "min" => n * 60,
                "h" => n * 3600,
                unit => panic!("timespan {v:?}: unit {unit:?}"),
            }
        })
        .sum()
}

#[test]
fn systemd_unit_is_well_formed_and_verifies() {
    let src = read("packaging/litestream.service");
    let unit = unit_file(&src);
    let get = |s: &str, k: &str| -> Option<String> {
        unit.get(s)
            .and_then(|m| m.get(k))
            .and_then(|v| v.last().cloned())
    };
    let service = |k: &str| get("Service", k);
    assert!(get("Unit", "Description").is_some());
    // The daemon speaks the notify protocol (tests/systemd.rs), and only it may.
    assert_eq!(service("Type").as_deref(), Some("notify"));
    assert_eq!(service("NotifyAccess").as_deref(), Some("main"));
    assert_eq!(service("Restart").as_deref(), Some("on-failure"));
    assert_eq!(service("KillSignal").as_deref(), Some("SIGTERM"));
    assert_eq!(
        get("Install", "WantedBy").as_deref(),
        Some("multi-user.target")
    );
    assert_eq!(
        service("EnvironmentFile").as_deref(),
        Some("-/etc/default/litestream")
    );
    // Stopping must outlast the daemon's last sync: shutdown-sync-timeout, plus the few seconds
    // its database threads get to answer.
    let stop = timespan_secs(&service("TimeoutStopSec").expect("TimeoutStopSec"));
    let sync = litestream::config::DEFAULT_SHUTDOWN_SYNC_TIMEOUT.as_secs();
    assert!(
        stop >= sync + 10,
        "TimeoutStopSec={stop}s, shutdown-sync-timeout={sync}s"
    );
    // Databases live anywhere: nothing may hide or freeze /home, /tmp, /var or /srv.
    for (k, bad) in [
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("ProtectHome", "true"),
        ("ProtectHome", "read-only"),
        ("ProtectHome", "tmpfs"),
        ("PrivateTmp", "yes"),
        ("PrivateTmp", "true"),
        ("DynamicUser", "yes"),
        ("DynamicUser", "true"),
    ] {
        assert_ne!(
            service(k).as_deref(),
            Some(bad),
            "{k}={bad} hides database paths"
        );
    }
    // ExecStart is a command line our binary accepts with the packaged config: run it with
    // -once (no database listed, no socket), with the config path moved to the checkout.
    let exec = service("ExecStart").expect("ExecStart");
    let argv: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(argv[..2], ["/usr/bin/litestream", "replicate"], "{exec}");
    let args: Vec<String> = argv[1..]
        .iter()
        .map(|a| match *a {
            "/etc/litestream.yml" => repo("packaging/litestream.yml").display().to_string(),
            a => a.to_string(),
        })
        .chain(["-once".to_string()])
        .collect();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run(&refs);
    assert!(o.status.success(), "{refs:?}: {}", text(&o.stderr));

    if !have("systemd-analyze") {
        eprintln!("systemd-analyze not installed: litestream.service checked structurally only");
        return;
    }
    // `verify` checks every directive and that ExecStart is executable: point it at this build.
    let dir = tempdir();
    let copy = dir.path().join("litestream.service");
    std::fs::write(
        &copy,
        src.replace(
            "ExecStart=/usr/bin/litestream",
            &format!("ExecStart={}", bin()),
        ),
    )
    .unwrap();
    let o = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let out = text(&o.stdout) + &text(&o.stderr);
    let about_unit: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("litestream.service"))
        .collect();
    if !o.status.success() && about_unit.is_empty() {
        eprintln!("systemd-analyze verify cannot run here ({out}); structural check only");
        return;
    }
    assert!(
        o.status.success() && about_unit.is_empty(),
        "systemd-analyze verify:\n{out}"
    );
}

// ---------------------------------------------------------------------------------------------
// The .deb
// ---------------------------------------------------------------------------------------------

fn ok(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?}: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

#[test]
fn deb_has_the_binary_unit_config_and_man_pages_where_debian_expects_them() {
    if !have("dpkg-deb") {
        eprintln!("dpkg-deb not installed: the .deb recipe is not tested");
        return;
    }
    let out = tempdir();
    let built = ok(Command::new("bash")
        .arg(repo("packaging/deb/build.sh"))
        .args(["--binary", bin(), "--compress", "none", "--out"])
        .arg(out.path())
        .env("DEB_ARCH", "amd64")
        .env_remove("DEB_MAINTAINER"));
    let deb_version = env!("CARGO_PKG_VERSION").replacen('-', "~", 1);
    let deb = out
        .path()
        .join(format!("litestream_{deb_version}_amd64.deb"));
    assert_eq!(built.trim(), deb.display().to_string());

    let listing = ok(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let entries: BTreeMap<String, String> = listing
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[5].trim_start_matches('.').to_string(),
                format!("{} {}", f[0], f[1]),
            )
        })
        .collect();
    for (path, mode) in [
        ("/usr/bin/litestream", "-rwxr-xr-x root/root"),
        ("/etc/litestream.yml", "-rw-r--r-- root/root"),
        ("/etc/default/litestream", "-rw------- root/root"),
        (
            "/lib/systemd/system/litestream.service",
            "-rw-r--r-- root/root",
        ),
        (
            "/usr/share/man/man1/litestream.1.gz",
            "-rw-r--r-- root/root",
        ),
        (
            "/usr/share/man/man5/litestream.yml.5.gz",
            "-rw-r--r-- root/root",
        ),
        (
            "/usr/share/doc/litestream/copyright",
            "-rw-r--r-- root/root",
        ),
        (
            "/usr/share/doc/litestream/changelog.gz",
            "-rw-r--r-- root/root",
        ),
        (
            "/usr/share/lintian/overrides/litestream",
            "-rw-r--r-- root/root",
        ),
    ] {
        assert_eq!(
            entries.get(path).map(String::as_str),
            Some(mode),
            "{path} in:\n{listing}"
        );
    }
    assert!(
        entries.values().all(|m| m.ends_with("root/root")),
        "files not owned by root:\n{listing}"
    );

    let field = |name: &str| ok(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(name));
    assert_eq!(field("Package").trim(), "litestream");
    assert_eq!(field("Version").trim(), deb_version);
    assert_eq!(field("Architecture").trim(), "amd64");
    assert!(field("Depends").contains("libc6"), "{}", field("Depends"));
    // The maintainer scripts call deb-systemd-helper and deb-systemd-invoke unconditionally.
    assert!(
        field("Depends").contains("init-system-helpers (>= 1.54~)"),
        "{}",
        field("Depends")
    );
    let synopsis = field("Description");
    let synopsis = synopsis.lines().next().unwrap();
    assert!(
        !synopsis.to_lowercase().starts_with("litestream"),
        "Debian's synopsis does not start with the package name: {synopsis}"
    );
    let placeholder = "litestream packagers <litestream@localhost>";
    assert_eq!(field("Maintainer").trim(), placeholder);
    let conffiles = ok(Command::new("dpkg-deb")
        .arg("-I")
        .arg(&deb)
        .arg("conffiles"));
    assert_eq!(conffiles, "/etc/litestream.yml\n/etc/default/litestream\n");
    for script in ["postinst", "prerm", "postrm"] {
        ok(Command::new("dpkg-deb").arg("-I").arg(&deb).arg(script));
    }

    // The payload is the checkout's files, byte for byte.
    let root = tempdir();
    ok(Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(root.path()));
    let file = |p: &str| std::fs::read(root.path().join(p.trim_start_matches('/'))).unwrap();
    assert_eq!(
        file("/etc/litestream.yml"),
        read("packaging/litestream.yml").as_bytes()
    );
    assert_eq!(
        file("/lib/systemd/system/litestream.service"),
        read("packaging/litestream.service").as_bytes()
    );
    for (gz, src) in [
        ("usr/share/man/man1/litestream.1.gz", "man/litestream.1"),
        (
            "usr/share/man/man5/litestream.yml.5.gz",
            "man/litestream.yml.5",
        ),
    ] {
        let plain = ok(Command::new("gzip").arg("-dc").arg(root.path().join(gz)));
        assert_eq!(plain, read(src), "{gz}");
    }
    let version = ok(Command::new(root.path().join("usr/bin/litestream")).arg("version"));
    assert_eq!(version.trim(), env!("CARGO_PKG_VERSION"));

    // The changelog of a native package: Debian's format, its top entry this version, signed
    // by the Maintainer, compressed with gzip -9n (no file name, no time: reproducible).
    let gz = file("/usr/share/doc/litestream/changelog.gz");
    assert_eq!(gz[..3], [0x1f, 0x8b, 8], "gzip, deflate");
    assert_eq!(gz[3] & 0x08, 0, "no file name in the gzip header");
    assert_eq!(gz[4..8], [0, 0, 0, 0], "no time in the gzip header");
    assert_eq!(gz[8], 2, "compressed with -9");
    let changelog = ok(Command::new("gzip")
        .arg("-dc")
        .arg(root.path().join("usr/share/doc/litestream/changelog.gz")));
    assert!(
        changelog.starts_with(&format!(
            "litestream ({deb_version}) unstable; urgency=medium\n\n  * "
        )),
        "{changelog}"
    );
    assert_eq!(
        changelog,
        read("packaging/deb/changelog").replace("@MAINTAINER@", placeholder)
    );
    let signature = changelog.lines().rfind(|l| !l.is_empty()).unwrap();
    assert!(
        signature.starts_with(&format!(" -- {placeholder}  ")),
        "{signature}"
    );

    // Every lintian override says why: it is in a paragraph that starts with a comment.
    // Built without DEB_MAINTAINER, the placeholder address is overridden too.
    let overrides = String::from_utf8(file("/usr/share/lintian/overrides/litestream")).unwrap();
    let lines: Vec<&str> = overrides.lines().collect();
    let mut reason = false;
    for line in &lines {
        if line.is_empty() {
            reason = false;
        } else if line.starts_with("# ") {
            reason = true;
        } else {
            assert!(line.starts_with("litestream: "), "{line}");
            assert!(reason, "an override without its reason: {line}");
        }
    }
    for tag in [
        "unstripped-binary-or-object",
        "non-standard-file-perm",
        "bogus-mail-host",
        "bogus-mail-host-in-debian-changelog",
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("litestream: {tag} "))),
            "{tag}: {overrides}"
        );
    }

    if have("lintian") {
        // No compression is this test's choice (speed); the recipe's default is xz.
        let o = Command::new("lintian")
            .args(["--fail-on", "error", "--suppress-tags"])
            .arg("uses-no-compression-for-control-tarball,uses-no-compression-for-data-tarball")
            .arg(&deb)
            .output()
            .unwrap();
        let report = text(&o.stdout);
        assert!(
            o.status.success() && !report.lines().any(|l| l.starts_with("E: ")),
            "lintian:\n{report}{}",
            text(&o.stderr)
        );
    } else {
        eprintln!("lintian not installed: the .deb is not linted");
    }
}

#[test]
fn deb_names_the_maintainer_it_is_given() {
    if !have("dpkg-deb") {
        eprintln!("dpkg-deb not installed: the .deb recipe is not tested");
        return;
    }
    let out = tempdir();
    let maintainer = "Jane Doe <jane@example.org>";
    let deb = ok(Command::new("bash")
        .arg(repo("packaging/deb/build.sh"))
        .args(["--binary", bin(), "--compress", "none", "--out"])
        .arg(out.path())
        .env("DEB_ARCH", "amd64")
        .env("DEB_MAINTAINER", maintainer));
    let deb = deb.trim();
    let maintainer_field = ok(Command::new("dpkg-deb").args(["-f", deb, "Maintainer"]));
    assert_eq!(maintainer_field.trim(), maintainer);
    let root = out.path().join("root");
    let changelog = ok(Command::new("gzip")
        .arg("-dc")
        .arg(root.join("usr/share/doc/litestream/changelog.gz")));
    assert!(
        changelog.contains(&format!("\n -- {maintainer}  ")),
        "{changelog}"
    );
    // A real address needs no override: none is left unused.
    let overrides =
        std::fs::read_to_string(root.join("usr/share/lintian/overrides/litestream")).unwrap();
    assert!(!overrides.contains("bogus-mail-host"), "{overrides}");
}

#[test]
fn deb_recipe_refuses_a_version_the_changelog_does_not_have() {
    // The recipe in a copy of the tree whose Cargo.toml has moved on to a version the
    // changelog has no entry for: it stops before building anything, and says what to add.
    let tree = tempdir();
    let deb_dir = tree.path().join("packaging/deb");
    std::fs::create_dir_all(&deb_dir).unwrap();
    for name in ["build.sh", "changelog"] {
        std::fs::copy(repo(&format!("packaging/deb/{name}")), deb_dir.join(name)).unwrap();
    }
    std::fs::write(
        tree.path().join("Cargo.toml"),
        "[package]\nname = \"litestream\"\nversion = \"9.9.9-rc.1\"\n",
    )
    .unwrap();
    let o = Command::new("bash")
        .arg(deb_dir.join("build.sh"))
        .args(["--binary", bin(), "--out"])
        .arg(tree.path().join("out"))
        .env("DEB_ARCH", "amd64")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("add an entry for 9.9.9~rc.1"),
        "{}",
        text(&o.stderr)
    );
    assert!(!tree.path().join("out").exists(), "nothing built");
}

/// Runs a maintainer script with `deb-systemd-helper`, `deb-systemd-invoke` and `systemctl`
/// replaced by stubs that log their arguments, and /run, /etc moved under `sandbox`;
/// `systemd_running` creates the directory the scripts test for.
fn maintainer_script(name: &str, args: &[&str], systemd_running: bool) -> Vec<String> {
    let sandbox = tempdir();
    let s = sandbox.path().display().to_string();
    let stubs = sandbox.path().join("bin");
    std::fs::create_dir_all(&stubs).unwrap();
    let log = sandbox.path().join("calls");
    for tool in ["deb-systemd-helper", "deb-systemd-invoke", "systemctl"] {
        let path = stubs.join(tool);
        std::fs::write(
            &path,
            format!("#!/bin/sh\necho \"{tool} $*\" >>'{}'\n", log.display()),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    if systemd_running {
        std::fs::create_dir_all(sandbox.path().join("run/systemd/system")).unwrap();
    }
    let script = read(&format!("packaging/deb/{name}"))
        .replace("/run/", &format!("{s}/run/"))
        .replace("/etc/", &format!("{s}/etc/"));
    let path = sandbox.path().join(name);
    std::fs::write(&path, script).unwrap();
    let o = Command::new("sh")
        .arg(&path)
        .args(args)
        .env("PATH", format!("{}:/usr/bin:/bin", stubs.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{name} {args:?}: {}", text(&o.stderr));
    std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn maintainer_scripts_enable_start_restart_and_stop_the_service() {
    for name in ["postinst", "prerm", "postrm"] {
        let o = Command::new("sh")
            .arg("-n")
            .arg(repo(&format!("packaging/deb/{name}")))
            .output();
        assert!(o.unwrap().status.success(), "{name}: sh -n");
    }
    let calls = maintainer_script("postinst", &["configure", ""], true);
    assert!(
        calls.contains(&"deb-systemd-helper enable litestream.service".into()),
        "{calls:?}"
    );
    assert!(
        calls.contains(&"deb-systemd-invoke start litestream.service".into()),
        "{calls:?}"
    );
    let calls = maintainer_script("postinst", &["configure", "0.0.1"], true);
    assert!(
        calls.contains(&"deb-systemd-invoke restart litestream.service".into()),
        "{calls:?}"
    );
    let calls = maintainer_script("postinst", &["configure", ""], false);
    assert!(
        calls.contains(&"deb-systemd-helper enable litestream.service".into()),
        "{calls:?}"
    );
    assert!(
        !calls.iter().any(|c| c.starts_with("deb-systemd-invoke")),
        "{calls:?}"
    );
    let calls = maintainer_script("prerm", &["remove"], true);
    assert_eq!(calls, ["deb-systemd-invoke stop litestream.service"]);
    let calls = maintainer_script("prerm", &["upgrade", "0.2.0"], true);
    assert!(
        calls.is_empty(),
        "an upgrade restarts in postinst, not here: {calls:?}"
    );
    let calls = maintainer_script("postrm", &["remove"], true);
    assert!(
        calls.contains(&"deb-systemd-helper mask litestream.service".into()),
        "{calls:?}"
    );
    let calls = maintainer_script("postrm", &["purge"], false);
    assert!(
        calls.contains(&"deb-systemd-helper purge litestream.service".into()),
        "{calls:?}"
    );
}
