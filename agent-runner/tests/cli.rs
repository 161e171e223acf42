//! The `maos-agent` binary's command line: its help documents every setting and its
//! environment variable, and it refuses to start without an API key.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_maos-agent");

#[test]
fn help_names_every_environment_variable() {
    let output = Command::new(BIN).arg("--help").output().expect("runs");
    let help = String::from_utf8_lossy(&output.stdout);
    for variable in [
        "MAOS_AGENT_NAME",
        "MAOS_POOL_UID",
        "MAOS_REDIS_URLS",
        "MAOS_REDIS_PASSWORD",
        "MAOS_MODEL",
        "MAOS_MAX_TURNS",
        "MAOS_HEARTBEAT_SECONDS",
    ] {
        assert!(
            help.contains(variable),
            "--help does not mention {variable}"
        );
    }
}

#[test]
fn without_an_api_key_it_exits_with_a_clear_error() {
    let output = Command::new(BIN)
        .env_clear()
        .args([
            "--agent-name",
            "a",
            "--pool-uid",
            "p",
            "--redis-urls",
            "redis://127.0.0.1:1",
        ])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ANTHROPIC_API_KEY is not set"), "{stderr}");
}
