//! Exactly one rustls crypto provider (aws-lc-rs) is compiled in. With two, rustls cannot pick a
//! default and building a kube client or opening a `rediss://` connection panics at run time;
//! these tests exercise both paths so that panic cannot come back unnoticed.

use kube::config::{KubeConfigOptions, Kubeconfig};

const KUBECONFIG: &str = r#"
apiVersion: v1
kind: Config
current-context: test
clusters:
- name: test
  cluster: {server: "https://127.0.0.1:9", insecure-skip-tls-verify: true}
users:
- name: test
  user: {token: not-a-real-token}
contexts:
- name: test
  context: {cluster: test, user: test, namespace: default}
"#;

#[tokio::test]
async fn kube_client_builds_from_a_kubeconfig_and_fails_cleanly_when_unreachable() {
    let kubeconfig = Kubeconfig::from_yaml(KUBECONFIG).expect("kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config builds");
    let client = kube::Client::try_from(config).expect("client builds with the rustls connector");
    // Port 9 (discard) is closed on loopback: an error, never a panic.
    assert!(client.apiserver_version().await.is_err());
}

#[tokio::test]
async fn rediss_connection_reaches_the_tls_handshake_without_panicking() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // A peer that accepts and hangs up, so the client gets as far as starting TLS.
    let peer = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            drop(socket);
        }
    });
    let client = redis::Client::open(format!("rediss://127.0.0.1:{port}/#insecure"))
        .expect("rediss URL parses");
    let result = client.get_multiplexed_async_connection().await;
    assert!(
        result.is_err(),
        "a peer that hangs up cannot complete a TLS handshake"
    );
    peer.abort();
}
