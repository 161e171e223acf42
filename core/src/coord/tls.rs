//! TLS for `rediss://` connections: the CA bundle that verifies the servers and, for servers
//! that ask for one, a client certificate, read from PEM files (in pods: mounted from Secrets).

use std::fmt;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The TLS material of Redis connections; `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTls {
    /// PEM certificates that verify the servers; `None`: the system's roots.
    ca: Option<Vec<u8>>,
    /// PEM client certificate chain and private key.
    client: Option<(Vec<u8>, Vec<u8>)>,
}

/// Why TLS material cannot be used; each names the file (or setting) at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// Which file it is meant to be.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file holds no PEM item of the kind it must hold.
    #[error("{what} {path} holds no {expected}: {detail}")]
    Pem {
        /// Which file it is meant to be.
        what: &'static str,
        /// Where (or the setting that held it).
        path: String,
        /// What kind of PEM item it must hold.
        expected: &'static str,
        /// What the PEM parser said.
        detail: String,
    },
    /// A client certificate without its key, or a key without its certificate.
    #[error(
        "a Redis client certificate needs both the certificate and the key; only the {given} is set"
    )]
    HalfClientIdentity {
        /// Which of the two was given.
        given: &'static str,
    },
}

impl RedisTls {
    /// Material from PEM files: `ca` (else the system's roots) and an optional client
    /// certificate `cert` with its `key`; `None` when no file is named.
    pub fn from_files(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<Option<Self>, TlsError> {
        let read = |what: &'static str, path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                what,
                path: path.to_owned(),
                source,
            })
        };
        let ca = ca
            .map(|path| Ok::<_, TlsError>((read("Redis CA bundle", path)?, path)))
            .transpose()?;
        let client = match (cert, key) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(TlsError::HalfClientIdentity {
                    given: "certificate",
                });
            }
            (None, Some(_)) => return Err(TlsError::HalfClientIdentity { given: "key" }),
            (Some(cert), Some(key)) => Some((
                (read("Redis client certificate", cert)?, cert),
                (read("Redis client key", key)?, key),
            )),
        };
        if ca.is_none() && client.is_none() {
            return Ok(None);
        }
        let ca = ca
            .map(|(pem, path)| {
                check_certificates(&pem, "Redis CA bundle", &path.display().to_string())?;
                Ok::<_, TlsError>(pem)
            })
            .transpose()?;
        let client = client
            .map(|((cert, cert_path), (key, key_path))| {
                check_certificates(
                    &cert,
                    "Redis client certificate",
                    &cert_path.display().to_string(),
                )?;
                check_key(&key, &key_path.display().to_string())?;
                Ok::<_, TlsError>((cert, key))
            })
            .transpose()?;
        Ok(Some(Self { ca, client }))
    }

    /// `base` (or material with nothing else) verifying servers with the CA bundle `pem`,
    /// given as text (`origin` names where it came from, for errors): how agents get the
    /// operator's bundle, since their pods mount no file for it.
    pub fn with_ca_pem(base: Option<Self>, pem: &[u8], origin: &str) -> Result<Self, TlsError> {
        check_certificates(pem, "Redis CA bundle", origin)?;
        Ok(Self {
            ca: Some(pem.to_vec()),
            client: base.and_then(|b| b.client),
        })
    }

    /// The CA bundle, if one was given (public data: agents get it in their environment).
    pub fn ca_pem(&self) -> Option<&[u8]> {
        self.ca.as_deref()
    }

    /// The same material as redis-rs takes it.
    pub(super) fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: self
                .client
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: self.ca.clone(),
        }
    }
}

impl fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTls")
            .field("ca", &self.ca.as_ref().map(|_| "<PEM>"))
            .field(
                "client",
                &self
                    .client
                    .as_ref()
                    .map(|_| "<certificate and redacted key>"),
            )
            .finish()
    }
}

/// At least one certificate, and nothing that is not one.
fn check_certificates(pem: &[u8], what: &'static str, path: &str) -> Result<(), TlsError> {
    let invalid = |detail: String| TlsError::Pem {
        what,
        path: path.to_owned(),
        expected: "PEM certificate",
        detail,
    };
    let mut count = 0;
    for certificate in CertificateDer::pem_slice_iter(pem) {
        certificate.map_err(|e| invalid(e.to_string()))?;
        count += 1;
    }
    if count == 0 {
        return Err(invalid("no BEGIN CERTIFICATE block".to_owned()));
    }
    Ok(())
}

/// One private key (PKCS#8, PKCS#1 or SEC1).
fn check_key(pem: &[u8], path: &str) -> Result<(), TlsError> {
    PrivateKeyDer::from_pem_slice(pem)
        .map(|_| ())
        .map_err(|e| TlsError::Pem {
            what: "Redis client key",
            path: path.to_owned(),
            expected: "PEM private key",
            detail: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("maos-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    #[test]
    fn no_file_means_no_tls_material() {
        assert!(
            RedisTls::from_files(None, None, None)
                .expect("ok")
                .is_none()
        );
    }

    #[test]
    fn a_missing_or_wrong_file_is_named_in_the_error() {
        let dir = dir("wrong");
        let missing = dir.join("absent.pem");
        let error = RedisTls::from_files(Some(&missing), None, None).expect_err("missing");
        assert!(error.to_string().contains("absent.pem"), "{error}");
        let text = file(&dir, "ca.pem", "not a certificate\n");
        let error = RedisTls::from_files(Some(&text), None, None).expect_err("not PEM");
        let shown = error.to_string();
        assert!(
            shown.contains("ca.pem") && shown.contains("PEM certificate"),
            "{shown}"
        );
    }

    #[test]
    fn a_client_certificate_needs_its_key() {
        let dir = dir("half");
        let cert = file(&dir, "tls.crt", "x");
        let error = RedisTls::from_files(None, Some(&cert), None).expect_err("half");
        assert!(
            error.to_string().contains("only the certificate"),
            "{error}"
        );
        let error = RedisTls::from_files(None, None, Some(&cert)).expect_err("half");
        assert!(error.to_string().contains("only the key"), "{error}");
    }
}
