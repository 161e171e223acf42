//! Certificates for a TLS-only `redis-server`, generated for one run with rcgen: a CA, a server
//! certificate for 127.0.0.1 signed by it, a client certificate signed by it, and a second CA
//! that signed nothing (a client trusting only that one must refuse the server).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

use super::{LaunchError, TempDir};

/// The PEM files of one run, in a temporary directory removed on drop.
#[derive(Debug)]
pub struct TlsFiles {
    /// The CA that signed the server's and the client's certificates.
    pub ca: PathBuf,
    /// The server's certificate (SAN 127.0.0.1 and localhost) and key.
    pub server_cert: PathBuf,
    /// The server's private key.
    pub server_key: PathBuf,
    /// A client certificate signed by the CA.
    pub client_cert: PathBuf,
    /// The client certificate's private key.
    pub client_key: PathBuf,
    /// A CA that signed nothing here.
    pub other_ca: PathBuf,
    /// Whether the server asks clients for a certificate (`tls-auth-clients yes`).
    pub require_client_cert: bool,
    dir: TempDir,
}

fn generation_failed(error: rcgen::Error) -> LaunchError {
    LaunchError::SetupCommand {
        what: "generating Redis TLS certificates".to_owned(),
        detail: error.to_string(),
    }
}

fn ca(name: &str) -> Result<CertifiedIssuer<'static, KeyPair>, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate()?)
}

/// A leaf certificate for `purpose`, signed by `issuer`: its PEM and its key's PEM.
fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    name: &str,
    purpose: ExtendedKeyUsagePurpose,
) -> Result<(String, String), rcgen::Error> {
    let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
    params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![purpose];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

impl TlsFiles {
    /// Generates the certificates and writes them; `require_client_cert` makes servers started
    /// with them refuse clients without a certificate signed by the CA.
    pub fn generate(require_client_cert: bool) -> Result<Self, LaunchError> {
        let dir = TempDir::new("maos-redis-certs")?;
        let authority = ca("maos-test-redis-ca").map_err(generation_failed)?;
        let stranger = ca("maos-test-other-ca").map_err(generation_failed)?;
        let (server_cert, server_key) = leaf(
            &authority,
            "maos-test-redis",
            ExtendedKeyUsagePurpose::ServerAuth,
        )
        .map_err(generation_failed)?;
        let (client_cert, client_key) = leaf(
            &authority,
            "maos-test-client",
            ExtendedKeyUsagePurpose::ClientAuth,
        )
        .map_err(generation_failed)?;
        let write = |name: &str, text: &str| -> Result<PathBuf, LaunchError> {
            let path = dir.path().join(name);
            std::fs::write(&path, text).map_err(|source| LaunchError::Setup {
                what: format!("file {}", path.display()),
                source,
            })?;
            Ok(path)
        };
        Ok(Self {
            ca: write("ca.crt", &authority.pem())?,
            server_cert: write("server.crt", &server_cert)?,
            server_key: write("server.key", &server_key)?,
            client_cert: write("client.crt", &client_cert)?,
            client_key: write("client.key", &client_key)?,
            other_ca: write("other-ca.crt", &stranger.pem())?,
            require_client_cert,
            dir,
        })
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `redis-server` arguments serving TLS on `port` with these certificates.
    pub(super) fn server_args(&self, port: &str) -> Vec<String> {
        let path = |p: &PathBuf| p.display().to_string();
        vec![
            "--tls-port".to_owned(),
            port.to_owned(),
            "--tls-cert-file".to_owned(),
            path(&self.server_cert),
            "--tls-key-file".to_owned(),
            path(&self.server_key),
            "--tls-ca-cert-file".to_owned(),
            path(&self.ca),
            "--tls-auth-clients".to_owned(),
            if self.require_client_cert {
                "yes"
            } else {
                "no"
            }
            .to_owned(),
        ]
    }

    /// What a client that trusts the CA (and presents the client certificate) needs.
    pub(super) fn client_certificates(&self) -> redis::TlsCertificates {
        let read = |p: &PathBuf| std::fs::read(p).unwrap_or_default();
        redis::TlsCertificates {
            client_tls: Some(redis::ClientTlsConfig {
                client_cert: read(&self.client_cert),
                client_key: read(&self.client_key),
            }),
            root_cert: Some(read(&self.ca)),
        }
    }
}
