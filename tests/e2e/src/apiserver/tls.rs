//! The testbed's certificates and kubeconfig: a CA generated at start, a serving certificate for
//! the loopback address signed by it, and a kubeconfig that carries the CA, URL and bearer token.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Why the TLS material could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rcgen refused the certificate parameters.
    #[error("generating a certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused the generated key or certificate.
    #[error("building the TLS server configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The kubeconfig could not be written.
    #[error("writing the kubeconfig {path}: {source}")]
    Kubeconfig {
        /// Where it should have been written.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A freshly generated CA and the serving certificate it signed, both for this run only.
pub struct ServingCertificates {
    /// The CA certificate in PEM, as clients must trust it.
    pub ca_pem: String,
    /// The server's rustls configuration (HTTP/1.1 via ALPN).
    pub server_config: Arc<rustls::ServerConfig>,
}

/// Generates a CA and a serving certificate valid for `127.0.0.1`, `::1` and `localhost`.
pub fn generate() -> Result<ServingCertificates, TlsError> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "maos-testbed-ca");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let mut params = CertificateParams::new(vec!["localhost".to_string()])?;
    params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    params
        .subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
    params
        .distinguished_name
        .push(DnType::CommonName, "maos-testbed-apiserver");
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone(), CertificateDer::from(ca.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )?;
    // Only HTTP/1.1 is served; kubectl and kube-rs negotiate down to it.
    server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ServingCertificates {
        ca_pem: ca.pem(),
        server_config: Arc::new(server_config),
    })
}

/// Renders a kubeconfig with one cluster, user and context named `maos-testbed`.
pub fn kubeconfig_yaml(addr: SocketAddr, ca_pem: &str, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: maos-testbed\n  cluster:\n    server: https://{addr}\n    certificate-authority-data: {ca}\nusers:\n- name: maos-testbed\n  user:\n    token: {token}\ncontexts:\n- name: maos-testbed\n  context:\n    cluster: maos-testbed\n    user: maos-testbed\n    namespace: default\ncurrent-context: maos-testbed\npreferences: {{}}\n"
    )
}

/// Writes the kubeconfig readable by the owner only, since it holds the bearer token.
pub fn write_kubeconfig(path: &Path, yaml: &str) -> Result<(), TlsError> {
    let err = |source| TlsError::Kubeconfig {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    std::fs::write(path, yaml).map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    }
    Ok(())
}
