//! `maos-testbed up` as a user runs it: it prints a kubeconfig that the real kubectl uses.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

use maos_e2e::cluster::KUBECTL;

#[test]
fn up_prints_a_kubeconfig_that_kubectl_uses() {
    let dir = std::env::temp_dir().join(format!("maos-testbed-bin-{}", std::process::id()));
    let mut testbed = Command::new(env!("CARGO_BIN_EXE_maos-testbed"))
        .args(["up", "--dir", &dir.display().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("maos-testbed starts");
    let mut lines = BufReader::new(testbed.stdout.take().expect("stdout is piped")).lines();
    let kubeconfig = lines.next().expect("a first line").expect("readable");
    let export = lines.next().expect("a second line").expect("readable");
    assert_eq!(export, format!("export KUBECONFIG={kubeconfig}"));

    let output = Command::new(KUBECTL)
        .env("KUBECONFIG", &kubeconfig)
        .env("KUBECACHEDIR", dir.join("kube-cache"))
        .args([
            "get",
            "namespace",
            "default",
            "-o",
            "jsonpath={.status.phase}",
        ])
        .output()
        .expect("kubectl runs");
    // Stop the testbed we started, by its own handle (its PID), before asserting.
    let _ = testbed.kill();
    let _ = testbed.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "Active");
}
