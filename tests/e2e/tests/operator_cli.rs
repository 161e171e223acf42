//! The `maos-operator` binary as a user meets it before anything works: without the MAOS CRDs
//! installed it refuses to start and says how to install them.

use std::process::Command;
use std::time::Duration;

use maos_e2e::apiserver::{Testbed, TestbedConfig};
use maos_e2e::launch::redis::RedisServer;

#[test]
fn without_the_crds_the_operator_exits_saying_how_to_install_them() {
    let operator =
        maos_e2e::binaries::find("maos-operator", "maos-operator").expect("maos-operator is built");
    let testbed = Testbed::start(TestbedConfig::default()).expect("testbed");
    let redis = RedisServer::start().expect("redis-server");

    let mut child = Command::new(operator)
        .args(["run", "--http-addr", "127.0.0.1:0", "--log-format", "text"])
        .env("KUBECONFIG", testbed.kubeconfig_path())
        .env("MAOS_REDIS_URLS", redis.url())
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start maos-operator");
    // It must stop on its own; a hang is a failure, not something to wait out.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("poll the operator").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the operator kept running without its CRDs");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("operator output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("CustomResourceDefinitions are not installed"),
        "{stderr}"
    );
    assert!(stderr.contains("kubectl apply -f crds/"), "{stderr}");
    assert!(
        !stderr.contains("Stack backtrace"),
        "a user error, not a crash: {stderr}"
    );
}
