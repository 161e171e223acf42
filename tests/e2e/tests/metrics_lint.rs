//! `promtool check metrics` on real scrapes: the stack runs a small Task to completion, then the
//! operator's and one agent's `/metrics` are fetched over HTTP, as Prometheus would, and piped
//! through Prometheus's own linter. The scrapes are saved to
//! `<target dir>/metrics-scrape/{operator,agent}.txt`, where scripts/check-prometheus.sh finds
//! them for its check that the chart's alert rules and dashboard use only real metric names.
//!
//! promtool comes from scripts/check-prometheus.sh (or `make deps`), which extracts it into
//! `<target dir>/tools/promtool`; `PROMTOOL` or a promtool on the PATH also do. Without one the
//! test fails: a lint that silently does not run checks nothing.
//!
//! `promtool check metrics` parses the Prometheus text format (0.0.4), while MAOS serves
//! OpenMetrics, whose counter family `x` (`# HELP x`, `# TYPE x counter`) has the sample
//! `x_total`. Read as 0.0.4, such a sample is a family of its own without HELP, so promtool says
//! `x_total no help text` for every counter. Those lines, and only those (each checked against
//! the scrape's own HELP and TYPE of `x`), are format artifacts; everything else promtool says
//! fails the test. The scrape is also linted as Prometheus stores it (counter families renamed
//! `x_total`, `# EOF` dropped), which must come out clean.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use maos_e2e::cluster::repo_root;
use maos_e2e::stack::{Stack, StackConfig, condition, pool_manifest};

/// Long enough for a whole Task on a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(120);
/// What the agent logs once its HTTP server listens (with its address).
const AGENT_SERVING: &str = "serving /healthz and /metrics";

/// The target directory this test was built into (it runs from `<target>/<profile>/deps/`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    exe.ancestors()
        .nth(3)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

/// promtool: `PROMTOOL`, else `tools/promtool` in this test's target directory, in
/// `$CARGO_TARGET_DIR` or in `<repo>/target`, else the PATH. `Err` lists where it looked.
fn promtool() -> Result<PathBuf, Vec<String>> {
    if let Some(path) = std::env::var_os("PROMTOOL") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(vec![format!("PROMTOOL={}", path.display())])
        };
    }
    let mut candidates = vec![target_dir().join("tools/promtool")];
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        let dir = if dir.is_relative() {
            repo_root().join(dir)
        } else {
            dir
        };
        candidates.push(dir.join("tools/promtool"));
    }
    candidates.push(repo_root().join("target/tools/promtool"));
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        candidates.push(dir.join("promtool"));
    }
    match candidates.iter().find(|path| path.is_file()) {
        Some(path) => Ok(path.clone()),
        None => Err(candidates
            .iter()
            .map(|path| path.display().to_string())
            .collect()),
    }
}

/// What `promtool check metrics` made of one body: its exit code and every line it printed.
struct Lint {
    code: Option<i32>,
    lines: Vec<String>,
}

fn promtool_check_metrics(promtool: &PathBuf, body: &str) -> Lint {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {}: {e}", promtool.display()));
    let mut stdin = child.stdin.take().expect("promtool's stdin");
    let body = body.to_owned();
    // Written from a thread: promtool's output can never block the writer.
    let writer = std::thread::spawn(move || stdin.write_all(body.as_bytes()));
    let output = child.wait_with_output().expect("promtool's output");
    writer
        .join()
        .expect("the writer thread")
        .expect("piping the scrape into promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Lint {
        code: output.status.code(),
        lines: text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect(),
    }
}

/// The counter families the body declares (`# TYPE x counter`).
fn counter_families(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| {
            let mut words = rest.split_whitespace();
            let (name, kind) = (words.next()?, words.next()?);
            (kind == "counter").then(|| name.to_owned())
        })
        .collect()
}

/// Whether `line` of promtool is `x_total no help text` for a counter family `x` that has HELP.
fn is_openmetrics_counter_artifact(body: &str, line: &str) -> bool {
    let Some(series) = line.strip_suffix(" no help text") else {
        return false;
    };
    let Some(family) = series.strip_suffix("_total") else {
        return false;
    };
    counter_families(body).iter().any(|c| c == family)
        && body
            .lines()
            .any(|l| l.starts_with(&format!("# HELP {family} ")))
}

/// The body as Prometheus stores what it scraped: counter families named `x_total` in HELP and
/// TYPE, and no `# EOF` / `# UNIT` lines, i.e. the text format promtool parses.
fn as_text_format(body: &str) -> String {
    let counters = counter_families(body);
    let mut out = String::new();
    for line in body.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .iter()
                .any(|c| c == name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// Lints one scrape both ways; the problems that fail the test, and a report of all output.
fn lint(promtool: &PathBuf, what: &str, body: &str) -> (Vec<String>, String) {
    let mut problems = Vec::new();
    let mut report = String::new();
    let raw = promtool_check_metrics(promtool, body);
    report.push_str(&format!(
        "--- promtool check metrics < {what} (as served, OpenMetrics): exit {:?}\n",
        raw.code
    ));
    for line in &raw.lines {
        let artifact = is_openmetrics_counter_artifact(body, line);
        report.push_str(&format!(
            "    {line}{}\n",
            if artifact {
                "   [OpenMetrics counter read as text 0.0.4: not a problem]"
            } else {
                ""
            }
        ));
        if !artifact {
            problems.push(format!("{what}: {line}"));
        }
    }
    match raw.code {
        Some(0) => {}
        // 3: lint problems, each judged above.
        Some(3) if !raw.lines.is_empty() => {}
        code => problems.push(format!("{what}: promtool exited with {code:?}")),
    }
    let stored = promtool_check_metrics(promtool, &as_text_format(body));
    report.push_str(&format!(
        "--- promtool check metrics < {what} (as Prometheus stores it, text 0.0.4): exit {:?}\n",
        stored.code
    ));
    for line in &stored.lines {
        report.push_str(&format!("    {line}\n"));
        problems.push(format!("{what} (text format): {line}"));
    }
    if stored.code != Some(0) && stored.lines.is_empty() {
        problems.push(format!(
            "{what} (text format): promtool exited with {:?}",
            stored.code
        ));
    }
    (problems, report)
}

/// GET `http://{address}/metrics`, checking it answers 200 with a complete OpenMetrics body.
async fn scrape(address: &str) -> String {
    let response = reqwest::get(format!("http://{address}/metrics"))
        .await
        .unwrap_or_else(|e| panic!("GET http://{address}/metrics: {e}"));
    assert_eq!(response.status(), 200, "GET http://{address}/metrics");
    let body = response.text().await.expect("the /metrics body");
    assert!(
        body.trim_end().ends_with("# EOF"),
        "an OpenMetrics body ends with # EOF:\n{body}"
    );
    body
}

/// The agent's HTTP address from its log line (JSON `"addr":"…"` or text `addr=…`).
fn agent_address(log: &str) -> Option<String> {
    let line = log.lines().find(|l| l.contains(AGENT_SERVING))?;
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(line)
        && let Some(addr) = json.pointer("/fields/addr").and_then(|v| v.as_str())
    {
        return Some(addr.to_owned());
    }
    let value = line.split("addr=").nth(1)?.trim_start_matches('"');
    let end = value
        .find(|c: char| c.is_whitespace() || c == '"' || c == ',')
        .unwrap_or(value.len());
    Some(value[..end].to_owned())
}

fn save(name: &str, body: &str) -> PathBuf {
    let dir = target_dir().join("metrics-scrape");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_and_an_agents_metrics_pass_promtool_check_metrics() {
    // Before the stack starts: a missing promtool fails at once, and says what to do.
    let promtool = promtool().unwrap_or_else(|looked| {
        panic!(
            "promtool not found: run scripts/check-prometheus.sh --install-only (or make deps); \
             looked at:\n  {}",
            looked.join("\n  ")
        )
    });
    let mut stack = Stack::start(StackConfig::new("e2e-metrics-lint").standalone_redis())
        .await
        .expect("the stack starts");
    stack
        .apply(&pool_manifest("default", 1, 1))
        .expect("kubectl apply the pool");
    stack
        .apply(
            "apiVersion: maos.dev/v1alpha1
kind: Task
metadata: {name: lint}
spec:
  prompt: Name a prime.
  poolRef: {name: default}
  synthesize: false
  subtasks:
  - {name: only, prompt: Name a prime.}
",
        )
        .expect("kubectl apply the task");
    let task = stack.wait_task_finished("lint", DEADLINE).await;
    let succeeded = condition(&task, "Succeeded").expect("the Succeeded condition");
    assert_eq!(succeeded.status, "True", "{:?}", task.status);

    let leader = stack.wait_leader(DEADLINE).await;
    let operator = stack
        .operator(leader)
        .http_address()
        .expect("the operator logged its HTTP address")
        .to_string();
    // Scraped once the operator has counted the finished Task and its tokens.
    let operator_body = stack
        .wait_until("the operator's /metrics counts the Task", DEADLINE, || {
            let operator = operator.clone();
            async move {
                let body = scrape(&operator).await;
                (body
                    .lines()
                    .any(|l| l == "maos_tasks{phase=\"Succeeded\"} 1")
                    && body.lines().any(|l| l.starts_with("maos_tokens_total{")))
                .then_some(body)
            }
        })
        .await;

    let pod = stack
        .agent_pods("default")
        .expect("kubectl get the agent pods")
        .into_iter()
        .next()
        .expect("the pool keeps its one agent");
    let agent = stack
        .wait_until("the agent's HTTP address in its log", DEADLINE, || {
            let log = stack.kubectl(&["logs", &pod], None).unwrap_or_default();
            async move { agent_address(&log) }
        })
        .await;
    let agent_body = scrape(&agent).await;
    assert!(
        agent_body
            .lines()
            .any(|l| l.starts_with("maos_agent_subtasks_total{outcome=\"Finished\"}")),
        "the agent counted the finished work item:\n{agent_body}"
    );

    let operator_file = save("operator.txt", &operator_body);
    let agent_file = save("agent.txt", &agent_body);
    eprintln!(
        "scrapes saved: {} ({} lines), {} ({} lines)",
        operator_file.display(),
        operator_body.lines().count(),
        agent_file.display(),
        agent_body.lines().count()
    );

    let (mut problems, operator_report) = lint(&promtool, "operator /metrics", &operator_body);
    let (agent_problems, agent_report) = lint(&promtool, "agent /metrics", &agent_body);
    problems.extend(agent_problems);
    eprintln!("{operator_report}{agent_report}");
    assert!(
        problems.is_empty(),
        "promtool check metrics found problems:\n  {}\n{operator_report}{agent_report}",
        problems.join("\n  ")
    );
}

#[test]
fn the_openmetrics_artifact_filter_accepts_only_counters_with_help() {
    let body = "# HELP maos_cost_usd Model cost.\n# TYPE maos_cost_usd counter\nmaos_cost_usd_total 1.5\n\
                # HELP maos_tasks Tasks.\n# TYPE maos_tasks gauge\nmaos_tasks{phase=\"Pending\"} 0\n# EOF\n";
    assert!(is_openmetrics_counter_artifact(
        body,
        "maos_cost_usd_total no help text"
    ));
    assert!(!is_openmetrics_counter_artifact(
        body,
        "maos_tasks_total no help text"
    ));
    assert!(!is_openmetrics_counter_artifact(
        body,
        "maos_cost_usd_total counter metrics should have \"_total\" suffix"
    ));
    assert_eq!(
        as_text_format(body),
        "# HELP maos_cost_usd_total Model cost.\n# TYPE maos_cost_usd_total counter\nmaos_cost_usd_total 1.5\n\
         # HELP maos_tasks Tasks.\n# TYPE maos_tasks gauge\nmaos_tasks{phase=\"Pending\"} 0\n"
    );
}
