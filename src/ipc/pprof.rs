//! `/debug/pprof/*`: the profiles a Rust process can honestly produce.
//!
//! `profile` is a real sampling CPU profile (the pprof crate, in Go's profile.proto format so
//! `go tool pprof` reads it; `?format=svg` gives a flamegraph). `goroutine` and `threadcreate`
//! list the OS threads (named after what they do: `db:app.db`, `upload-2`, `ipc`) with their
//! kernel state, since threads are this daemon's goroutines. `cmdline` is the command line.
//! `heap`, `allocs`, `block`, `mutex` and `trace` need Go's runtime instrumentation; they answer
//! 501 with a JSON explanation rather than an empty or fake profile.

use std::fs;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::json;
use tiny_http::{Header, Request, Response, StatusCode};

use super::handlers::Ctx;

/// Only one CPU profile can run at a time (the sampler is process-wide).
static PROFILER: Mutex<()> = Mutex::new(());
/// Longest profile accepted, in seconds.
const MAX_PROFILE_SECONDS: u64 = 300;

/// Serves `/debug/pprof{rest}`.
pub fn handle(rq: Request, rest: &str, query: &str, ctx: &Ctx) {
    let name = rest.trim_start_matches('/');
    if *rq.method() != tiny_http::Method::Get {
        let r = json_response(
            405,
            json!({"error": "method not allowed", "details": "pprof endpoints accept GET"}),
        )
        .with_header(Header::from_bytes("Allow", "GET").expect("static header"));
        let _ = rq.respond(r);
        return;
    }
    let response = match name {
        "" => json_response(200, index()),
        "profile" => {
            let _long = ctx.long_requests.begin();
            cpu_profile(query)
        }
        "goroutine" | "threadcreate" => threads(query),
        "cmdline" => text_response(200, std::env::args().collect::<Vec<_>>().join("\x00")),
        "heap" | "allocs" => not_implemented(
            name,
            "heap and allocation profiles need an allocation-tracking allocator, which this build does not link \
             (it uses the system allocator to stay small); see /metrics for resident memory",
        ),
        "block" | "mutex" => not_implemented(
            name,
            "blocking and mutex-contention profiles are Go runtime features with no equivalent for OS threads; \
             use /debug/pprof/profile (CPU) and /debug/pprof/goroutine (what each thread waits on)",
        ),
        "trace" => not_implemented(name, "execution traces are a Go runtime feature; use /debug/pprof/profile"),
        _ => json_response(404, json!({"error": "not found", "details": format!("no profile {name:?}; see /debug/pprof/")})),
    };
    let _ = rq.respond(response);
}

fn index() -> serde_json::Value {
    json!({
        "profiles": {
            "profile": "CPU profile, ?seconds=N (default 30), ?format=svg for a flamegraph",
            "goroutine": "every thread with its name and kernel state (?debug=1|2 text, ?format=json)",
            "threadcreate": "same as goroutine",
            "cmdline": "the command line",
            "heap": "not available (501)",
            "allocs": "not available (501)",
            "block": "not available (501)",
            "mutex": "not available (501)",
            "trace": "not available (501)",
        }
    })
}

fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

type Body = Response<std::io::Cursor<Vec<u8>>>;

fn json_response(status: u16, body: serde_json::Value) -> Body {
    Response::from_string(format!("{body}\n"))
        .with_status_code(StatusCode(status))
        .with_header(Header::from_bytes("Content-Type", "application/json").expect("static header"))
}

fn text_response(status: u16, body: String) -> Body {
    Response::from_string(body)
        .with_status_code(StatusCode(status))
        .with_header(
            Header::from_bytes("Content-Type", "text/plain; charset=utf-8").expect("static header"),
        )
}

fn not_implemented(name: &str, why: &str) -> Body {
    json_response(
        501,
        json!({"error": format!("{name} profile not available"), "details": why}),
    )
}

/// The flamegraph of a profile window in which no sample was taken.
fn no_samples_svg(seconds: u64) -> String {
    format!(
        "<?xml version=\"1.0\" standalone=\"no\"?>\n<svg version=\"1.1\" width=\"600\" height=\"40\" xmlns=\"http://www.w3.org/2000/svg\"><text x=\"10\" y=\"25\">no CPU samples in {seconds}s: the daemon was idle; ask for more ?seconds=</text></svg>\n"
    )
}

/// Samples the CPU for `seconds` and returns profile.proto (or an SVG flamegraph).
fn cpu_profile(query: &str) -> Body {
    let seconds = match query_value(query, "seconds").map(str::parse::<u64>) {
        None => 30,
        Some(Ok(s)) if (1..=MAX_PROFILE_SECONDS).contains(&s) => s,
        Some(_) => {
            return json_response(
                400,
                json!({"error": "invalid seconds", "details": format!("want an integer from 1 to {MAX_PROFILE_SECONDS}")}),
            )
        }
    };
    let svg = query_value(query, "format") == Some("svg");
    let Ok(_only_one) = PROFILER.try_lock() else {
        return json_response(
            409,
            json!({"error": "a CPU profile is already running", "details": "try again when it finishes"}),
        );
    };
    let guard = match pprof::ProfilerGuardBuilder::default()
        .frequency(99)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
    {
        Ok(g) => g,
        Err(e) => {
            return json_response(
                500,
                json!({"error": "cannot start the CPU profiler", "details": e.to_string()}),
            )
        }
    };
    // The profile covers this interval: waiting is the measurement, not synchronisation.
    std::thread::sleep(Duration::from_secs(seconds));
    let report = match guard.report().build() {
        Ok(r) => r,
        Err(e) => {
            return json_response(
                500,
                json!({"error": "cannot build the CPU profile", "details": e.to_string()}),
            )
        }
    };
    let mut body = Vec::new();
    if svg {
        if let Err(e) = report.flamegraph(&mut body) {
            return json_response(
                500,
                json!({"error": "cannot render the flamegraph", "details": e.to_string()}),
            );
        }
        if body.is_empty() {
            // pprof writes nothing for a window without samples (an idle daemon): answer a
            // valid image that says so, not an empty body a browser shows as broken.
            body = no_samples_svg(seconds).into_bytes();
        }
        return Response::from_data(body).with_header(
            Header::from_bytes("Content-Type", "image/svg+xml").expect("static header"),
        );
    }
    let encoded = report.pprof().map_err(|e| e.to_string()).and_then(|p| {
        use pprof::protos::Message;
        p.encode(&mut body).map_err(|e| e.to_string())
    });
    match encoded {
        Ok(()) => Response::from_data(body)
            .with_header(
                Header::from_bytes("Content-Type", "application/octet-stream")
                    .expect("static header"),
            )
            .with_header(
                Header::from_bytes("Content-Disposition", "attachment; filename=\"profile\"")
                    .expect("static header"),
            ),
        Err(e) => json_response(
            500,
            json!({"error": "cannot encode the CPU profile", "details": e}),
        ),
    }
}

/// One thread of this process, from /proc.
struct ThreadInfo {
    tid: u32,
    name: String,
    state: String,
    wchan: String,
    cpu_ticks: u64,
}

fn read_threads() -> Vec<ThreadInfo> {
    let mut out = vec![];
    let Ok(dir) = fs::read_dir("/proc/self/task") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(tid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let base = entry.path();
        let name = fs::read_to_string(base.join("comm"))
            .unwrap_or_default()
            .trim()
            .to_string();
        let stat = fs::read_to_string(base.join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: state is the first, utime and stime the 12th and 13th.
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = after.split_whitespace().collect();
        let state = fields.first().map_or("?", |s| s).to_string();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let wchan = fs::read_to_string(base.join("wchan"))
            .unwrap_or_default()
            .trim()
            .to_string();
        out.push(ThreadInfo {
            tid,
            name,
            state: state_name(&state),
            wchan,
            cpu_ticks: ticks(11) + ticks(12),
        });
    }
    out.sort_by_key(|t| t.tid);
    out
}

fn state_name(s: &str) -> String {
    match s {
        "R" => "running",
        "S" => "sleeping",
        "D" => "disk wait",
        "T" | "t" => "stopped",
        "Z" => "zombie",
        other => other,
    }
    .to_string()
}

/// Threads as text (Go's `debug=1|2` style) or JSON (`?format=json`).
fn threads(query: &str) -> Body {
    let threads = read_threads();
    if query_value(query, "format") == Some("json") {
        let list: Vec<_> = threads
            .iter()
            .map(|t| json!({"tid": t.tid, "name": t.name, "state": t.state, "wchan": t.wchan, "cpu_ticks": t.cpu_ticks}))
            .collect();
        return json_response(200, json!({"count": list.len(), "threads": list}));
    }
    let mut text = format!("threads: total {}\n\n", threads.len());
    for t in &threads {
        let wait = if t.wchan.is_empty() || t.wchan == "0" {
            String::new()
        } else {
            format!(", in {}", t.wchan)
        };
        text.push_str(&format!(
            "thread {} [{}{}]: {}\n    cpu_ticks={}\n\n",
            t.tid, t.state, wait, t.name, t.cpu_ticks
        ));
    }
    text_response(200, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_without_samples_is_a_valid_svg_that_says_so() {
        let svg = no_samples_svg(3);
        assert!(
            svg.contains("<svg") && svg.trim_end().ends_with("</svg>"),
            "{svg}"
        );
        assert!(svg.contains("no CPU samples in 3s"), "{svg}");
    }

    #[test]
    fn thread_list_includes_named_threads() {
        let (started_tx, started_rx) = crossbeam_channel::bounded(1);
        let h = std::thread::Builder::new()
            .name("db:probe.db".into())
            .spawn(move || {
                started_tx.send(()).unwrap();
                std::thread::park_timeout(Duration::from_secs(5))
            })
            .unwrap();
        started_rx.recv().unwrap();
        let names: Vec<String> = read_threads().into_iter().map(|t| t.name).collect();
        assert!(names.iter().any(|n| n == "db:probe.db"), "{names:?}");
        h.thread().unpark();
        h.join().unwrap();
    }
}
