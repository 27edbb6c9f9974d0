//! TLS 1.3 identities and verification for QUIC, with the ring provider only.
//!
//! A node without a configured certificate creates a self-signed one in
//! `<data-dir>/tls/` on first start and logs its SHA-256 fingerprint.
//! Clients trust a server by a CA file (normal WebPKI checks) or by pinning
//! that fingerprint — never by switching verification off.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// TLS set-up failures, each naming the file or value involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate or key file could not be read or written.
    #[error("tls file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("tls file {path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A fingerprint that is not 64 hex digits.
    #[error("bad certificate fingerprint {0:?}: expected 64 hex digits (SHA-256), colons allowed")]
    BadFingerprint(String),
    /// Generating a certificate failed.
    #[error("generating a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("tls configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// A client-certificate verifier could not be built.
    #[error("client certificate verifier: {0}")]
    Verifier(String),
    /// The TLS config cannot carry QUIC (it lacks a TLS 1.3 initial suite).
    #[error("tls configuration unusable for QUIC: {0}")]
    Quic(String),
}

/// The one crypto provider: ring (a second one makes rustls's defaults panic).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain with its private key.
#[derive(Debug)]
pub struct Identity {
    /// End-entity certificate first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Identity {
    /// Loads a PEM certificate chain and a PEM private key.
    pub fn load(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
        let pem = |path: &Path, reason: String| TlsError::Pem {
            path: path.to_path_buf(),
            reason,
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(|e| pem(cert, e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem(cert, e.to_string()))?;
        if chain.is_empty() {
            return Err(pem(cert, "no CERTIFICATE block".into()));
        }
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem(key, e.to_string()))?;
        Ok(Identity {
            chain,
            key: key_der,
        })
    }

    /// The SHA-256 fingerprint of the end-entity certificate, lowercase hex.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.chain[0])
    }
}

/// SHA-256 of a DER certificate, as 64 lowercase hex digits.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, cert.as_ref()))
}

/// Parses a fingerprint given as hex (colons and case ignored).
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], TlsError> {
    let clean: String = text.chars().filter(|c| *c != ':').collect();
    let mut out = [0u8; 32];
    hex::decode_to_slice(&clean, &mut out).map_err(|_| TlsError::BadFingerprint(text.into()))?;
    Ok(out)
}

/// Paths of the generated identity inside a data directory.
pub fn default_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("tls");
    (dir.join("server.crt"), dir.join("server.key"))
}

/// Loads `<data-dir>/tls/server.{crt,key}`, creating a self-signed pair for
/// `names` (DNS names or IP addresses) on first start. Returns whether it
/// was created.
pub fn load_or_create(data_dir: &Path, names: &[String]) -> Result<(Identity, bool), TlsError> {
    let (cert_path, key_path) = default_paths(data_dir);
    if cert_path.exists() && key_path.exists() {
        return Identity::load(&cert_path, &key_path).map(|id| (id, false));
    }
    let generated = rcgen::generate_simple_self_signed(names.to_vec())?;
    let dir = cert_path.parent().unwrap_or(data_dir);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Io { path, source }
    };
    fs::create_dir_all(dir).map_err(io(dir))?;
    write_atomic(
        &key_path,
        generated.signing_key.serialize_pem().as_bytes(),
        true,
    )
    .map_err(io(&key_path))?;
    write_atomic(&cert_path, generated.cert.pem().as_bytes(), false).map_err(io(&cert_path))?;
    Identity::load(&cert_path, &key_path).map(|id| (id, true))
}

/// Writes a file via a temporary name, fsyncs it, and renames it into place
/// (a crash never leaves a half-written key). Keys get mode 0600.
fn write_atomic(path: &Path, bytes: &[u8], secret: bool) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// How a client decides to trust a server.
#[derive(Debug, Clone)]
pub enum ServerTrust {
    /// Certificates in this PEM file are the trusted roots (name checked).
    CaFile(PathBuf),
    /// The server's end-entity certificate must have this SHA-256 digest.
    Pin([u8; 32]),
}

/// Builds a rustls server config: TLS 1.3 only, the given ALPN, no 0-RTT,
/// and client certificates required when `client_ca` is given.
pub fn server_config(
    identity: &Identity,
    alpn: &[&[u8]],
    client_ca: Option<&Path>,
) -> Result<rustls::ServerConfig, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let roots = Arc::new(load_roots(path)?);
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider())
                    .build()
                    .map_err(|e| TlsError::Verifier(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(identity.chain.clone(), identity.key.clone_key())?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // 0-RTT data is replayable; a replayed write must never apply twice.
    config.max_early_data_size = 0;
    Ok(config)
}

/// Builds a rustls client config for `trust`, offering `alpn`, with an
/// optional client certificate (mutual TLS).
pub fn client_config(
    trust: &ServerTrust,
    alpn: &[&[u8]],
    client_identity: Option<&Identity>,
) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = match trust {
        ServerTrust::CaFile(path) => builder.with_root_certificates(load_roots(path)?),
        ServerTrust::Pin(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCert {
                pin: *pin,
                algorithms: provider().signature_verification_algorithms,
            })),
    };
    let mut config = match client_identity {
        None => builder.with_no_client_auth(),
        Some(id) => builder.with_client_auth_cert(id.chain.clone(), id.key.clone_key())?,
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.enable_early_data = false;
    Ok(config)
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let pem = |reason: String| TlsError::Pem {
        path: path.to_path_buf(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| pem(e.to_string()))? {
        let cert = cert.map_err(|e| pem(e.to_string()))?;
        roots.add(cert).map_err(|e| pem(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(pem("no CERTIFICATE block".into()));
    }
    Ok(roots)
}

/// Trusts exactly one certificate, by its SHA-256 digest. The handshake
/// signature is still verified, so the peer must hold that certificate's key.
#[derive(Debug)]
struct PinnedCert {
    pin: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
        if crate::net::constant_time_eq(digest.as_ref(), &self.pin) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_identity_is_reused_and_fingerprint_parses() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let (first, created) = load_or_create(dir.path(), &names).unwrap();
        assert!(created);
        let (second, created) = load_or_create(dir.path(), &names).unwrap();
        assert!(!created, "second start reuses the files");
        assert_eq!(first.fingerprint(), second.fingerprint());
        let pin = parse_fingerprint(&first.fingerprint().to_uppercase()).unwrap();
        assert_eq!(hex::encode(pin), first.fingerprint());
        assert!(parse_fingerprint("abc").is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(default_paths(dir.path()).1)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "private key is not readable by others");
        }
    }

    #[test]
    fn bad_pem_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        fs::write(&cert, "not a pem").unwrap();
        let err = Identity::load(&cert, &cert).unwrap_err();
        assert!(err.to_string().contains("c.pem"), "{err}");
    }
}
