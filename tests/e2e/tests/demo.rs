//! `maos-testbed demo` (what `make demo` runs) as a user runs it, with its output piped: it
//! starts everything, shows the Task's phases and subtasks live as plain lines, prints the
//! outcome, speedup, tokens and result, exits 0, and leaves no process behind.
//!
//! It runs the built `maos-operator` and `maos-agent` beside `maos-testbed` (`make test` builds
//! the whole workspace; alone: `cargo build -p maos-operator -p maos-agent-runner`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Longest the demo may take here: the stand-in answers in 100 ms, but the example pool's
/// output-token rate limit makes agents wait for one another (tens of seconds).
const DEMO_PATIENCE: Duration = Duration::from_secs(300);
/// What the demo's own `--timeout-seconds` is, below [`DEMO_PATIENCE`].
const TASK_TIMEOUT_SECONDS: &str = "240";
/// How often the test looks for the demo's processes.
const SCAN_EVERY: Duration = Duration::from_millis(100);

/// One process seen while the demo ran: (pid, start time in clock ticks since boot).
type Seen = BTreeMap<u32, (u64, String)>;

#[test]
fn demo_runs_the_example_task_to_success_and_leaves_no_process_behind() {
    let dir = std::env::temp_dir().join(format!("maos-demo-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("demo dir");
    let dir = dir.canonicalize().expect("canonical dir");
    let stderr = std::fs::File::create(dir.with_extension("stderr")).expect("stderr file");
    let mut demo = Command::new(env!("CARGO_BIN_EXE_maos-testbed"))
        .args([
            "demo",
            "--dir",
            &dir.display().to_string(),
            "--latency-ms",
            "100",
            "--timeout-seconds",
            TASK_TIMEOUT_SECONDS,
        ])
        .env_remove("ANTHROPIC_API_KEY")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("maos-testbed demo starts");
    let stdout = demo.stdout.take().expect("piped stdout");
    let (lines_tx, lines_rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    // While it runs: read its output, and note every process that belongs to it.
    let mut output: Vec<String> = Vec::new();
    let mut redis_ports: Vec<u16> = Vec::new();
    let mut s3_port: Option<u16> = None;
    let mut seen = Seen::new();
    let deadline = Instant::now() + DEMO_PATIENCE;
    let status = loop {
        while let Ok(line) = lines_rx.try_recv() {
            if line.trim_start().starts_with("Redis Cluster")
                && let Some((_, ports)) = line.split_once(" ports ")
            {
                redis_ports = ports
                    .split_whitespace()
                    .filter_map(|word| word.parse().ok())
                    .collect();
            }
            if line.trim_start().starts_with("S3 ")
                && let Some((_, rest)) = line.split_once("http://127.0.0.1:")
            {
                s3_port = rest.split_whitespace().next().and_then(|p| p.parse().ok());
            }
            output.push(line);
        }
        scan_processes(&dir, &redis_ports, s3_port, &mut seen);
        if let Some(status) = demo.try_wait().expect("wait for the demo") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = demo.kill();
            let _ = demo.wait();
            panic!(
                "the demo did not finish within {DEMO_PATIENCE:?}:\n{}",
                output.join("\n")
            );
        }
        std::thread::sleep(SCAN_EVERY);
    };
    reader.join().expect("reader thread");
    output.extend(lines_rx.try_iter());
    let text = output.join("\n");
    let stderr = std::fs::read_to_string(dir.with_extension("stderr")).unwrap_or_default();
    assert!(
        status.success(),
        "the demo failed ({status}):\n{text}\n--- stderr:\n{stderr}\n--- operator log:\n{}",
        std::fs::read_to_string(dir.join("operator.log")).unwrap_or_default()
    );

    // It said which Claude it used, in its first lines.
    assert!(
        output
            .iter()
            .take(3)
            .any(|l| l.contains("Claude: the stand-in")),
        "{text}"
    );
    // The live view: plain lines (no escape codes on a pipe) with the phases as they came.
    assert!(
        !text.contains('\x1b'),
        "escape codes in piped output:\n{text}"
    );
    for expected in [
        "task vector-db-research: Planning",
        "task vector-db-research: Running",
        "task vector-db-research: Synthesizing",
        "task vector-db-research: Succeeded",
        "pool default: ",
        "  plan ",
        "  part-1 ",
        "  part-6 ",
        "  synthesize ",
    ] {
        assert!(
            output
                .iter()
                .any(|l| l.starts_with('[') && l.contains(expected)),
            "no live line with {expected:?}:\n{text}"
        );
    }
    // Subtasks were seen running on agents, and each ended Succeeded on one.
    assert!(
        output
            .iter()
            .any(|l| l.contains("  part-") && l.contains(" Running ") && l.contains("default-")),
        "no subtask seen running on an agent:\n{text}"
    );
    for subtask in ["plan", "part-1", "part-6", "synthesize"] {
        let states: Vec<&str> = output
            .iter()
            .filter(|l| l.starts_with('[') && l.contains(&format!("  {subtask} ")))
            .map(String::as_str)
            .collect();
        assert!(
            states
                .last()
                .is_some_and(|l| l.contains(" Succeeded ") && l.contains("default-")),
            "{subtask} did not end Succeeded on an agent: {states:?}"
        );
    }
    // The outcome, the speedup, the tokens and the result from the ConfigMap.
    for expected in [
        "Succeeded ",
        "speedup ",
        "tokens: ",
        "result (ConfigMap vector-db-research-result, key result",
        "Stand-in answer to: Compare the three leading open-source vector databases",
        "stopping: operator stopped",
        "checkpoint: ",
    ] {
        assert!(
            output.iter().any(|l| l.starts_with(expected)),
            "no line starting with {expected:?}:\n{text}"
        );
    }
    assert!(
        output
            .iter()
            .any(|l| l.starts_with("tokens: ") && l.contains("; cost $")),
        "no cost:\n{text}"
    );
    let speedup: f64 = output
        .iter()
        .find_map(|l| l.strip_prefix("speedup ")?.split(':').next()?.parse().ok())
        .expect("a numeric speedup");
    assert!(speedup > 0.0, "speedup {speedup}");
    // The finished Task was checkpointed to the demo's S3 server.
    assert!(
        output.iter().any(|l| l.starts_with("checkpoint: ")
            && l.contains("s3://maos-checkpoints/default/vector-db-research/")),
        "no saved checkpoint:\n{text}"
    );

    // What ran: the operator, the Redis Cluster, and more than one agent (the pool scaled).
    let kinds: BTreeMap<&str, usize> =
        seen.values().fold(BTreeMap::new(), |mut kinds, (_, what)| {
            *kinds.entry(what.as_str()).or_default() += 1;
            kinds
        });
    assert_eq!(kinds.get("maos-operator"), Some(&1), "{seen:?}");
    assert_eq!(kinds.get("redis-server"), Some(&6), "{seen:?}");
    assert_eq!(kinds.get("moto_server"), Some(&1), "{seen:?}");
    assert!(
        kinds.get("maos-agent").is_some_and(|n| *n >= 2),
        "fewer than 2 agents seen: {seen:?}"
    );
    // And none of it is left.
    let left: Vec<String> = seen
        .iter()
        .filter(|(pid, (start, _))| alive_since(**pid, *start))
        .map(|(pid, (_, what))| format!("{what} (pid {pid})"))
        .collect();
    assert!(left.is_empty(), "left running after the demo: {left:?}");

    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(dir.with_extension("stderr"));
}

/// Notes every process that is the demo's: run from its directory (agent pods), with its
/// directory in the environment (the operator, kubectl), a redis-server on its ports, or the
/// moto S3 server on its port.
fn scan_processes(dir: &Path, redis_ports: &[u16], s3_port: Option<u16>, seen: &mut Seen) {
    let me = std::process::id();
    let dir_text = dir.display().to_string();
    let ports: BTreeSet<String> = redis_ports.iter().map(|p| format!(":{p}")).collect();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me || seen.contains_key(&pid) {
            continue;
        }
        let proc_dir = entry.path();
        let cmdline = std::fs::read(proc_dir.join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        let environ = std::fs::read(proc_dir.join("environ"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let cwd = std::fs::read_link(proc_dir.join("cwd")).unwrap_or_default();
        let program = cmdline
            .split_whitespace()
            .next()
            .and_then(|p| Path::new(p).file_name())
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let moto = cmdline.contains("moto_server")
            && s3_port.is_some_and(|port| cmdline.contains(&format!("-p {port}")));
        let program = if moto {
            "moto_server".to_owned()
        } else {
            program
        };
        let ours = cwd.starts_with(dir)
            || environ.contains(&dir_text)
            || moto
            || (program == "redis-server" && ports.iter().any(|p| cmdline.contains(p.as_str())));
        // The demo process itself names the directory in its arguments.
        if !ours || program == "maos-testbed" {
            continue;
        }
        if let Some(start) = start_time(pid) {
            seen.insert(pid, (start, program));
        }
    }
}

/// The process' start time (field 22 of /proc/<pid>/stat), if it exists and is not a zombie.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(PathBuf::from(format!("/proc/{pid}/stat"))).ok()?;
    // The command name (field 2) may hold spaces; the fields after it are plain.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Whether the process seen as `pid`, started at `start`, still runs (not a reused pid).
fn alive_since(pid: u32, start: u64) -> bool {
    start_time(pid) == Some(start)
}
