//! TLS 1.3 identities and verification for QUIC, with the ring provider only.
//!
//! A node without a configured certificate creates a self-signed one in
//! `<data-dir>/tls/` on first start and logs its SHA-256 fingerprint.
//! Clients trust a server by a CA file (normal WebPKI checks) or by pinning
//! that fingerprint — never by switching verification off.
//!
//! Node-to-node (replication) links use mutual TLS instead: every node holds
//! a certificate signed by the cluster CA ([`ClusterTls`]) and both ends of
//! a link verify the other's against that CA, over ALPN [`REPL_ALPN`] (or
//! another node-link protocol, such as the cluster-metadata group's, which
//! the same endpoint may offer beside it).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::{Deserialize, Serialize};

/// The QUIC ALPN protocol id of node-to-node (replication) links. It differs
/// from the client protocol's (`strata/1`), so a client endpoint and a
/// replication endpoint never complete a handshake with each other.
pub const REPL_ALPN: &[u8] = b"strata-repl/1";

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
    /// A private key that does not belong to the certificate it is paired with.
    #[error("private key {key} does not belong to certificate {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A node certificate the cluster CA does not vouch for (another CA,
    /// expired, or lacking the server or client purpose).
    #[error("certificate {cert} is not valid under the cluster CA {ca} {purpose}: {reason}")]
    NotTrusted {
        /// The node certificate file.
        cert: PathBuf,
        /// The CA certificate file.
        ca: PathBuf,
        /// "as a server" or "as a client".
        purpose: &'static str,
        /// What the verifier said.
        reason: String,
    },
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
    ///
    /// # Errors
    ///
    /// [`TlsError::Io`] when a file cannot be read, [`TlsError::Pem`] when it
    /// holds no certificate or key; both name the file.
    pub fn load(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
        let chain = parse_certs(cert, &read_file(cert)?)?;
        let key_der = parse_key(key, &read_file(key)?)?;
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

pub use crate::sync::write_atomic;

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
    let client_roots = client_ca.map(load_roots).transpose()?;
    build_server_config(identity, alpn, client_roots.map(Arc::new))
}

/// [`server_config`] with the client CA roots already loaded.
fn build_server_config(
    identity: &Identity,
    alpn: &[&[u8]],
    client_roots: Option<Arc<RootCertStore>>,
) -> Result<rustls::ServerConfig, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = match client_roots {
        None => builder.with_no_client_auth(),
        Some(roots) => builder.with_client_cert_verifier(client_verifier(roots)?),
    };
    let mut config = builder.with_single_cert(identity.chain.clone(), identity.key.clone_key())?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // 0-RTT data is replayable; a replayed write must never apply twice.
    config.max_early_data_size = 0;
    Ok(config)
}

/// A verifier that requires a client certificate chaining to `roots`.
fn client_verifier(roots: Arc<RootCertStore>) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))
}

/// How a client config checks the server's certificate, files already read.
enum ServerCheck {
    /// WebPKI: chains to these roots and carries the server name.
    Roots(Arc<RootCertStore>),
    /// The end-entity certificate's SHA-256 digest.
    Pin([u8; 32]),
}

/// Builds a rustls client config for `trust`, offering `alpn`, with an
/// optional client certificate (mutual TLS).
pub fn client_config(
    trust: &ServerTrust,
    alpn: &[&[u8]],
    client_identity: Option<&Identity>,
) -> Result<rustls::ClientConfig, TlsError> {
    let check = match trust {
        ServerTrust::CaFile(path) => ServerCheck::Roots(Arc::new(load_roots(path)?)),
        ServerTrust::Pin(pin) => ServerCheck::Pin(*pin),
    };
    build_client_config(check, alpn, client_identity)
}

/// [`client_config`] with the trust files already read.
fn build_client_config(
    check: ServerCheck,
    alpn: &[&[u8]],
    client_identity: Option<&Identity>,
) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = match check {
        ServerCheck::Roots(roots) => builder.with_root_certificates(roots),
        ServerCheck::Pin(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCert {
                pin,
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

/// The files of a node's cluster identity: the CA every node trusts, and
/// this node's certificate (signed by that CA) with its key. The same
/// certificate serves both ends of a link, so it must allow server and
/// client authentication. `strata-admin gen-certs` makes such a set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterTls {
    /// PEM file with the cluster CA certificate(s).
    pub ca: PathBuf,
    /// PEM certificate chain of this node, end-entity first.
    pub cert: PathBuf,
    /// PEM private key of `cert`.
    pub key: PathBuf,
}

impl ClusterTls {
    /// Reads the three files and checks them against each other, so that a
    /// wrong file is reported at start rather than as a failed handshake.
    ///
    /// # Errors
    ///
    /// Each error names the file at fault: [`TlsError::Io`] (missing or
    /// unreadable), [`TlsError::Pem`] (not PEM, or not a certificate / key),
    /// [`TlsError::KeyMismatch`] (the key is not the certificate's), and
    /// [`TlsError::NotTrusted`] (the certificate does not verify under the
    /// CA for both server and client use, e.g. another CA or expired).
    pub fn load(&self) -> Result<ClusterIdentity, TlsError> {
        let roots = Arc::new(load_roots(&self.ca)?);
        let identity = Identity::load(&self.cert, &self.key)?;
        let end_entity = &identity.chain[0];
        let intermediates = &identity.chain[1..];
        let parsed = ParsedCertificate::try_from(end_entity).map_err(|e| TlsError::Pem {
            path: self.cert.clone(),
            reason: format!("not a valid X.509 certificate: {e}"),
        })?;
        let signing_key = provider()
            .key_provider
            .load_private_key(identity.key.clone_key())
            .map_err(|e| TlsError::Pem {
                path: self.key.clone(),
                reason: format!("unusable private key: {e}"),
            })?;
        match CertifiedKey::new(identity.chain.clone(), signing_key).keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(_) => {
                return Err(TlsError::KeyMismatch {
                    cert: self.cert.clone(),
                    key: self.key.clone(),
                });
            }
        }
        let not_trusted = |purpose, e: rustls::Error| TlsError::NotTrusted {
            cert: self.cert.clone(),
            ca: self.ca.clone(),
            purpose,
            reason: e.to_string(),
        };
        let now = UnixTime::now();
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &roots,
            intermediates,
            now,
            provider().signature_verification_algorithms.all,
        )
        .map_err(|e| not_trusted("as a server", e))?;
        client_verifier(roots.clone())?
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(|e| not_trusted("as a client", e))?;
        let name = super::der::subject_common_name(end_entity).ok_or_else(|| TlsError::Pem {
            path: self.cert.clone(),
            reason: "the certificate's subject has no common name (the node name); \
                     make node certificates with `strata-admin gen-certs`"
                .into(),
        })?;
        Ok(ClusterIdentity {
            identity,
            roots,
            name,
        })
    }
}

/// The node name in the cluster certificate a link's peer presented (its
/// subject common name). The handshake has verified the certificate
/// against the cluster CA, so the name is the peer's identity.
pub fn peer_name(conn: &quinn::Connection) -> Option<String> {
    let identity = conn.peer_identity()?;
    let chain = identity.downcast_ref::<Vec<CertificateDer<'static>>>()?;
    super::der::subject_common_name(chain.first()?)
}

/// A node's loaded cluster identity ([`ClusterTls::load`]): builds the
/// QUIC configs of node-to-node links, where each end proves itself with a
/// certificate from the cluster CA.
#[derive(Debug, Clone)]
pub struct ClusterIdentity {
    /// This node's certificate chain and key.
    identity: Identity,
    /// The cluster CA: the only issuer trusted for peers, both directions.
    roots: Arc<RootCertStore>,
    /// The node name: the certificate's subject common name.
    name: String,
}

impl ClusterIdentity {
    /// This node's name, from its certificate: who it is to other nodes.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This node's id, derived from its name.
    pub fn node_id(&self) -> crate::types::NodeId {
        crate::types::NodeId::of_name(&self.name)
    }

    /// The SHA-256 fingerprint of this node's certificate, lowercase hex.
    pub fn fingerprint(&self) -> String {
        self.identity.fingerprint()
    }

    /// The config of the accepting end of a link: TLS 1.3 only, ALPN
    /// [`REPL_ALPN`], no 0-RTT, and a client certificate signed by the
    /// cluster CA required (a peer without one is refused in the handshake).
    ///
    /// # Errors
    ///
    /// rustls or quinn refusing the configuration.
    pub fn server_config(
        &self,
        transport: Arc<quinn::TransportConfig>,
    ) -> Result<quinn::ServerConfig, TlsError> {
        self.server_config_for(transport, &[REPL_ALPN])
    }

    /// [`Self::server_config`] offering the protocols `alpns` (in order of
    /// preference): one endpoint serves several node-link protocols, and
    /// the handshake tells which one a link speaks ([`crate::net::link::Link::alpn`]).
    ///
    /// # Errors
    ///
    /// rustls or quinn refusing the configuration.
    pub fn server_config_for(
        &self,
        transport: Arc<quinn::TransportConfig>,
        alpns: &[&[u8]],
    ) -> Result<quinn::ServerConfig, TlsError> {
        let crypto = build_server_config(&self.identity, alpns, Some(self.roots.clone()))?;
        crate::net::quic_server(crypto, transport)
    }

    /// The config of the connecting end of a link: presents this node's
    /// certificate and verifies the peer's against the cluster CA with the
    /// usual WebPKI name check (the name given to `connect` must be one of
    /// the peer certificate's SANs). ALPN [`REPL_ALPN`], no 0-RTT.
    ///
    /// # Errors
    ///
    /// rustls or quinn refusing the configuration.
    pub fn client_config(
        &self,
        transport: Arc<quinn::TransportConfig>,
    ) -> Result<quinn::ClientConfig, TlsError> {
        self.client_config_for(transport, REPL_ALPN)
    }

    /// [`Self::client_config`] offering the one protocol `alpn`: a link
    /// speaks exactly what its opener asked for, or is refused.
    ///
    /// # Errors
    ///
    /// rustls or quinn refusing the configuration.
    pub fn client_config_for(
        &self,
        transport: Arc<quinn::TransportConfig>,
        alpn: &[u8],
    ) -> Result<quinn::ClientConfig, TlsError> {
        let crypto = build_client_config(
            ServerCheck::Roots(self.roots.clone()),
            &[alpn],
            Some(&self.identity),
        )?;
        crate::net::quic_client(crypto, transport)
    }
}

/// Reads a whole file, naming it on failure.
fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The PEM certificates of `pem` (read from `path`, named in errors).
fn parse_certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |reason: String| TlsError::Pem {
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM file: {e}")))?;
    if certs.is_empty() {
        return Err(bad(
            "no CERTIFICATE block (expected a PEM certificate)".into()
        ));
    }
    Ok(certs)
}

/// The PEM private key of `pem` (read from `path`, named in errors).
fn parse_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        reason: match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no PRIVATE KEY block (expected a PEM private key)".into()
            }
            other => format!("not a PEM file: {other}"),
        },
    })
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in parse_certs(path, &read_file(path)?)? {
        roots.add(cert).map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
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
    use super::test_certs::{node_cert, test_ca, write_cluster_files};
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

    /// An identity built without [`ClusterTls::load`]'s checks, to play a
    /// peer the cluster must refuse.
    fn unchecked_identity(ca_pem: &str, (cert, key): &(String, String)) -> ClusterIdentity {
        let here = Path::new("test");
        let mut roots = RootCertStore::empty();
        for cert in parse_certs(here, ca_pem.as_bytes()).unwrap() {
            roots.add(cert).unwrap();
        }
        ClusterIdentity {
            identity: Identity {
                chain: parse_certs(here, cert.as_bytes()).unwrap(),
                key: parse_key(here, key.as_bytes()).unwrap(),
            },
            roots: Arc::new(roots),
            name: "unchecked".into(),
        }
    }

    fn transport() -> Arc<quinn::TransportConfig> {
        crate::net::TransportLimits::default().transport_config()
    }

    const BOUND: std::time::Duration = std::time::Duration::from_secs(10);

    /// What each end of one attempted link saw.
    struct Outcome {
        /// The accepting end: handshake, then one byte echoed back plus one.
        server: Result<(), String>,
        /// The connecting end: the reply to the byte 7.
        client: Result<Vec<u8>, String>,
    }

    /// Serves one connection with `server` on loopback and connects to it
    /// with `client` as "localhost"; both ends are bounded by [`BOUND`].
    async fn link(server: &ClusterIdentity, client: quinn::ClientConfig) -> Outcome {
        let loopback: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        let server_endpoint =
            crate::net::endpoint(loopback, Some(server.server_config(transport()).unwrap()))
                .unwrap();
        let addr = server_endpoint.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            let incoming = server_endpoint
                .accept()
                .await
                .expect("an incoming connection");
            let conn = incoming.await.map_err(|e| e.to_string())?;
            let (mut send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
            let mut byte = [0u8; 1];
            recv.read_exact(&mut byte)
                .await
                .map_err(|e| e.to_string())?;
            send.write_all(&[byte[0] + 1])
                .await
                .map_err(|e| e.to_string())?;
            send.finish().map_err(|e| e.to_string())?;
            // The client closes once it has the reply.
            conn.closed().await;
            Ok(())
        });
        let client_endpoint = crate::net::endpoint(loopback, None).unwrap();
        let exchange = async {
            let conn = client_endpoint
                .connect_with(client, addr, "localhost")
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())?;
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
            send.write_all(&[7]).await.map_err(|e| e.to_string())?;
            send.finish().map_err(|e| e.to_string())?;
            let reply = recv.read_to_end(16).await.map_err(|e| e.to_string())?;
            conn.close(0u32.into(), b"done");
            Ok(reply)
        };
        let client = tokio::time::timeout(BOUND, exchange)
            .await
            .expect("the client finishes in time");
        let server = tokio::time::timeout(BOUND, accept)
            .await
            .expect("the server finishes in time")
            .unwrap();
        Outcome { server, client }
    }

    #[tokio::test]
    async fn cluster_nodes_with_ca_signed_certs_link() {
        let dir = tempfile::tempdir().unwrap();
        let ca = test_ca("cluster");
        let n1 = write_cluster_files(dir.path(), &ca, "n1", &node_cert(&ca, "n1"));
        let n2 = write_cluster_files(dir.path(), &ca, "n2", &node_cert(&ca, "n2"));
        let server = n1.load().unwrap();
        let client = n2.load().unwrap().client_config(transport()).unwrap();
        let outcome = link(&server, client).await;
        assert_eq!(outcome.client, Ok(vec![8]));
        assert_eq!(outcome.server, Ok(()));
    }

    #[tokio::test]
    async fn client_cert_from_another_ca_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = test_ca("cluster");
        let server = write_cluster_files(dir.path(), &ca, "n1", &node_cert(&ca, "n1"))
            .load()
            .unwrap();
        // Trusts the cluster CA (so it accepts the server) but presents a
        // certificate from a CA of its own.
        let other = test_ca("other");
        let rogue = unchecked_identity(&ca.pem, &node_cert(&other, "n2"));
        let outcome = link(&server, rogue.client_config(transport()).unwrap()).await;
        let err = outcome.server.unwrap_err();
        assert!(err.contains("UnknownIssuer"), "{err}");
        assert!(outcome.client.is_err(), "{:?}", outcome.client);
    }

    #[tokio::test]
    async fn client_without_cert_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = test_ca("cluster");
        let files = write_cluster_files(dir.path(), &ca, "n1", &node_cert(&ca, "n1"));
        let server = files.load().unwrap();
        let anonymous = crate::net::quic_client_config(
            &ServerTrust::CaFile(files.ca.clone()),
            &[REPL_ALPN],
            None,
            &crate::net::TransportLimits::default(),
        )
        .unwrap();
        let outcome = link(&server, anonymous).await;
        let err = outcome.server.unwrap_err();
        assert!(err.contains("no certificates"), "{err}");
        assert!(outcome.client.is_err(), "{:?}", outcome.client);
    }

    #[tokio::test]
    async fn server_cert_from_another_ca_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = test_ca("cluster");
        let client = write_cluster_files(dir.path(), &ca, "n2", &node_cert(&ca, "n2"))
            .load()
            .unwrap()
            .client_config(transport())
            .unwrap();
        let other = test_ca("other");
        let rogue = unchecked_identity(&ca.pem, &node_cert(&other, "n1"));
        let outcome = link(&rogue, client).await;
        let err = outcome.client.unwrap_err();
        assert!(err.contains("UnknownIssuer"), "{err}");
        assert!(outcome.server.is_err(), "{:?}", outcome.server);
    }

    #[test]
    fn cluster_load_names_the_file_at_fault() {
        let dir = tempfile::tempdir().unwrap();
        let ca = test_ca("cluster");
        let n1_pair = node_cert(&ca, "n1");
        let n1 = write_cluster_files(dir.path(), &ca, "n1", &n1_pair);
        let n2 = write_cluster_files(dir.path(), &ca, "n2", &node_cert(&ca, "n2"));
        let message = |files: ClusterTls| files.load().unwrap_err().to_string();

        let missing = dir.path().join("missing.crt");
        let err = message(ClusterTls {
            ca: missing.clone(),
            ..n1.clone()
        });
        assert!(err.contains("missing.crt"), "{err}");

        // A key where a certificate belongs, and the other way round.
        let err = message(ClusterTls {
            cert: n1.key.clone(),
            ..n1.clone()
        });
        assert!(
            err.contains("n1.key") && err.contains("CERTIFICATE"),
            "{err}"
        );
        let err = message(ClusterTls {
            key: n1.cert.clone(),
            ..n1.clone()
        });
        assert!(
            err.contains("n1.crt") && err.contains("PRIVATE KEY"),
            "{err}"
        );

        let err = message(ClusterTls {
            key: n2.key.clone(),
            ..n1.clone()
        });
        assert!(
            err.contains("n2.key") && err.contains("does not belong"),
            "{err}"
        );

        let other = test_ca("other");
        let other_dir = dir.path().join("other");
        fs::create_dir(&other_dir).unwrap();
        let foreign = write_cluster_files(&other_dir, &other, "n3", &node_cert(&other, "n3"));
        let err = message(ClusterTls {
            ca: n1.ca.clone(),
            ..foreign
        });
        assert!(
            err.contains("n3.crt") && err.contains("UnknownIssuer"),
            "{err}"
        );
    }
}

/// Test certificates: a cluster CA and node certificates it signs, for the
/// node-link tests of every module.
#[cfg(test)]
pub(crate) mod test_certs {
    use std::fs;
    use std::path::Path;

    use super::{ClusterIdentity, ClusterTls};

    /// A test CA: its PEM certificate and an issuer that signs with it.
    pub(crate) struct TestCa {
        /// The CA certificate, PEM.
        pub(crate) pem: String,
        issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    }

    pub(crate) fn test_ca(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        TestCa {
            pem,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A node certificate signed by `ca` for `name` (its common name, so
    /// its node name) and the SANs `name`, localhost and 127.0.0.1, usable
    /// as server and client: (cert PEM, key PEM).
    pub(crate) fn node_cert(ca: &TestCa, name: &str) -> (String, String) {
        let sans = vec![name.to_string(), "localhost".into(), "127.0.0.1".into()];
        let mut params = rcgen::CertificateParams::new(sans).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Writes a CA and a node's files into `dir` and returns their paths.
    pub(crate) fn write_cluster_files(
        dir: &Path,
        ca: &TestCa,
        node: &str,
        pair: &(String, String),
    ) -> ClusterTls {
        let files = ClusterTls {
            ca: dir.join("ca.crt"),
            cert: dir.join(format!("{node}.crt")),
            key: dir.join(format!("{node}.key")),
        };
        fs::write(&files.ca, &ca.pem).unwrap();
        fs::write(&files.cert, &pair.0).unwrap();
        fs::write(&files.key, &pair.1).unwrap();
        files
    }

    /// Loaded identities of nodes `names`, all signed by one fresh CA whose
    /// files go to `dir`.
    pub(crate) fn cluster_identities(dir: &Path, names: &[&str]) -> Vec<ClusterIdentity> {
        let ca = test_ca("cluster");
        names
            .iter()
            .map(|name| {
                write_cluster_files(dir, &ca, name, &node_cert(&ca, name))
                    .load()
                    .unwrap()
            })
            .collect()
    }
}
