//! TLS with rustls and its `ring` provider: certificates read from PEM
//! files, one server configuration per shard (rustls keeps its session
//! cache behind a mutex, so shards must not share one), the handshake under
//! a deadline, and then the connection as a sans-IO TLS [`Layer`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::{ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::{Layer, Link};

/// A TLS client's configuration (see [`client_config`]).
pub type ClientConfig = rustls::ClientConfig;

/// Where the TLS listener's certificate, key and client CA live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, the server's own first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates that sign client certificates.
    pub ca: Option<PathBuf>,
    /// Refuse clients without a certificate signed by `ca`.
    pub require_certificate: bool,
    /// The client certificate's subject CN is the client's user name (no
    /// password asked); needs `require_certificate`.
    pub use_identity_as_username: bool,
}

/// Session tickets and cached sessions each shard keeps.
const SESSION_CACHE: usize = 1024;

/// The certificates read from [`TlsFiles`], ready to make server configs.
#[derive(Debug)]
pub struct TlsSettings {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Option<Arc<RootCertStore>>,
    require: bool,
    identity: bool,
    /// Shared by every shard, so a ticket from one resumes on another.
    ticketer: Arc<dyn rustls::server::ProducesTickets>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect();
    let certs = certs.map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    Ok(certs)
}

impl TlsSettings {
    /// Reads the files and checks that they make a server config.
    ///
    /// # Errors
    /// A file that cannot be read, holds no certificate or key, or a key
    /// that does not match the certificate.
    pub fn load(files: &TlsFiles) -> Result<TlsSettings, String> {
        let chain = read_certs(&files.cert)?;
        let key = PrivateKeyDer::from_pem_file(&files.key)
            .map_err(|e| format!("{}: {e}", files.key.display()))?;
        let roots = match &files.ca {
            Some(ca) => {
                let mut store = RootCertStore::empty();
                for c in read_certs(ca)? {
                    store.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
                }
                Some(Arc::new(store))
            }
            None if files.require_certificate => {
                return Err("--require-certificate needs --ca".into());
            }
            _ if files.use_identity_as_username && !files.require_certificate => {
                return Err("--use-identity-as-username needs --require-certificate".into());
            }
            None => None,
        };
        let ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| e.to_string())?;
        let s = TlsSettings {
            chain,
            key,
            roots,
            require: files.require_certificate,
            identity: files.use_identity_as_username,
            ticketer,
        };
        s.server_config()?;
        Ok(s)
    }

    /// True when a client certificate's CN is its user name.
    pub fn identity_as_username(&self) -> bool {
        self.identity
    }

    /// A server config of its own for one shard.
    ///
    /// # Errors
    /// As [`TlsSettings::load`].
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, String> {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = match &self.roots {
            Some(roots) => {
                let v = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider());
                let v = if self.require {
                    v
                } else {
                    v.allow_unauthenticated()
                };
                builder.with_client_cert_verifier(v.build().map_err(|e| e.to_string())?)
            }
            None => builder.with_no_client_auth(),
        };
        let mut cfg = builder
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| format!("certificate and key: {e}"))?;
        cfg.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
        cfg.ticketer = self.ticketer.clone();
        // Plaintext beyond the handshake is moved out by the layer at once.
        cfg.max_fragment_size = None;
        Ok(Arc::new(cfg))
    }
}

/// Runs the server side of the handshake on `stream` and returns the
/// connection as a link (the caller bounds it with a deadline).
///
/// # Errors
/// The handshake failed: a bad or missing client certificate, a protocol
/// the config does not offer, or the socket.
pub async fn accept(
    stream: glommio::net::TcpStream,
    config: Arc<ServerConfig>,
    identity: bool,
) -> std::io::Result<Link> {
    let tls = futures_rustls::TlsAcceptor::from(config)
        .accept(stream)
        .await?;
    let (stream, conn) = tls.into_inner();
    let name = if identity {
        let cert = conn.peer_certificates().and_then(|c| c.first());
        let cn = cert.and_then(|c| common_name(c));
        if cn.is_none() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "client certificate has no subject CN to use as user name",
            ));
        }
        cn
    } else {
        None
    };
    let mut layer = Layer::tls(rustls::Connection::Server(conn));
    layer.set_identity(name);
    Ok(Link::new(stream, layer))
}

/// The first subject CN of a DER certificate.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// A client config that trusts the CA certificates in `ca` (PEM), for a
/// client of the broker (`ringmq-bench --tls`).
///
/// # Errors
/// A file that cannot be read or holds no certificate.
pub fn client_config(ca: &Path) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    for c in read_certs(ca)? {
        roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Runs the client side of the handshake on `stream`, for server `name`.
///
/// # Errors
/// The handshake failed (an untrusted certificate, the socket).
pub async fn connect(
    stream: glommio::net::TcpStream,
    config: Arc<ClientConfig>,
    name: &str,
) -> std::io::Result<Link> {
    let name = rustls_pki_types::ServerName::try_from(name.to_string())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let tls = futures_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await?;
    let (stream, conn) = tls.into_inner();
    Ok(Link::new(
        stream,
        Layer::tls(rustls::Connection::Client(conn)),
    ))
}
