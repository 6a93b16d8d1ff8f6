//! TLS for a node's client port and peer port, and for clients: PEM files read, rustls
//! configurations built (TLS 1.3, ring), reloaded on demand (SIGHUP) without dropping a
//! connection.
//!
//! ```text
//! tls_cert + tls_key                ─▶ client port: TLS (no client certificate asked)
//! tls_cert + tls_key + tls_ca       ─▶ client port: TLS, a client certificate from the CA
//!                                      optional (its name is the client's principal)
//!                                   ─▶ peer port: mutual TLS, both certificates from the
//!                                      CA; a peer's names its node: DNS `keel-node-N`
//! ```
//!
//! A node's certificate serves both ports: it names the host clients reach it by (IP or
//! DNS) and `keel-node-N`. A peer connection's hello from node N is admitted only if the
//! certificate the connection was opened with names `keel-node-N`
//! (`certificate_names_node`), so a node's certificate cannot speak for another node.
//!
//! Owns reading the files and the configurations; never opens a socket.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Why TLS settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds nothing usable.
    #[error("TLS {what} {path}: {reason}")]
    File {
        /// Which file (certificate, key, CA).
        what: &'static str,
        /// Its path.
        path: String,
        /// Why.
        reason: String,
    },
    /// rustls refused the combination (a key that is not the certificate's, ...).
    #[error("TLS settings: {0}")]
    Config(String),
}

/// A node's TLS files (`tls_cert`, `tls_key`, `tls_ca`), and the node they are for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The node: with a CA its certificate must name it (`keel-node-N`), or its peers
    /// would refuse every connection of its.
    pub node: u64,
    /// The node's certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The cluster's CA (PEM): peers' and clients' certificates must chain to it.
    pub ca: Option<PathBuf>,
}

/// The name a node's certificate carries for the peer port (a DNS subject alt name).
pub fn node_name(node: u64) -> String {
    format!("keel-node-{node}")
}

/// Whether `certificate` (already verified against the CA) names node `node`.
pub fn certificate_names_node(certificate: &CertificateDer<'_>, node: u64) -> bool {
    let Ok(cert) = webpki::EndEntityCert::try_from(certificate) else {
        return false;
    };
    let Ok(name) = ServerName::try_from(node_name(node)) else {
        return false;
    };
    cert.verify_is_valid_for_subject_name(&name).is_ok()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::File {
        what,
        path: path.display().to_string(),
        reason: error.to_string(),
    })
}

/// The certificates in a PEM file (at least one).
pub fn load_certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(what, path)?;
    let failed = |reason: String| TlsError::File {
        what,
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| failed(e.to_string()))?;
    if certs.is_empty() {
        return Err(failed("no PEM certificate in it".into()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read("key", path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::File {
        what: "key",
        path: path.display().to_string(),
        reason: format!("no PEM private key in it ({e})"),
    })
}

fn load_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certificates("CA", path)? {
        roots.add(cert).map_err(|e| TlsError::File {
            what: "CA",
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    }
    Ok(Arc::new(roots))
}

fn config_error(error: impl std::fmt::Display) -> TlsError {
    TlsError::Config(error.to_string())
}

/// The configurations made from one reading of a node's files.
struct Loaded {
    client_port: Arc<ServerConfig>,
    peer_acceptor: Option<Arc<ServerConfig>>,
    peer_connector: Option<Arc<ClientConfig>>,
}

impl Loaded {
    fn read(files: &TlsFiles) -> Result<Loaded, TlsError> {
        let certs = load_certificates("certificate", &files.cert)?;
        let key = load_key(&files.key)?;
        let roots = files.ca.as_deref().map(load_roots).transpose()?;
        if roots.is_some() && !certificate_names_node(&certs[0], files.node) {
            return Err(TlsError::File {
                what: "certificate",
                path: files.cert.display().to_string(),
                reason: format!(
                    "does not name {} (a DNS subject alt name): with tls_ca the nodes speak \
                     mutual TLS and check that name",
                    node_name(files.node)
                ),
            });
        }
        let versions = [&rustls::version::TLS13];
        let server = || {
            ServerConfig::builder_with_provider(provider())
                .with_protocol_versions(&versions)
                .map_err(config_error)
        };
        let client_port = match &roots {
            Some(roots) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                        .allow_unauthenticated()
                        .build()
                        .map_err(config_error)?;
                server()?.with_client_cert_verifier(verifier)
            }
            None => server()?.with_no_client_auth(),
        }
        .with_single_cert(certs.clone(), key.clone_key())
        .map_err(config_error)?;
        let (peer_acceptor, peer_connector) = match &roots {
            Some(roots) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                        .build()
                        .map_err(config_error)?;
                let acceptor = server()?
                    .with_client_cert_verifier(verifier)
                    .with_single_cert(certs.clone(), key.clone_key())
                    .map_err(config_error)?;
                let server_verifier =
                    WebPkiServerVerifier::builder_with_provider(roots.clone(), provider())
                        .build()
                        .map_err(config_error)?;
                let connector = ClientConfig::builder_with_provider(provider())
                    .with_protocol_versions(&versions)
                    .map_err(config_error)?
                    .with_webpki_verifier(server_verifier)
                    .with_client_auth_cert(certs, key)
                    .map_err(config_error)?;
                (Some(Arc::new(acceptor)), Some(Arc::new(connector)))
            }
            None => (None, None),
        };
        Ok(Loaded {
            client_port: Arc::new(client_port),
            peer_acceptor,
            peer_connector,
        })
    }
}

/// A node's TLS configurations, shared by its shards; `reload` reads the files again
/// (new connections use the new ones, open ones keep theirs).
pub struct NodeTls {
    files: TlsFiles,
    loaded: RwLock<Arc<Loaded>>,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeTls({:?})", self.files)
    }
}

impl NodeTls {
    /// Reads the files.
    pub fn load(files: TlsFiles) -> Result<Arc<NodeTls>, TlsError> {
        let loaded = Loaded::read(&files)?;
        Ok(Arc::new(NodeTls {
            files,
            loaded: RwLock::new(Arc::new(loaded)),
        }))
    }

    /// Reads the files again; on an error the configurations in use stay.
    pub fn reload(&self) -> Result<(), TlsError> {
        let loaded = Arc::new(Loaded::read(&self.files)?);
        *self.loaded.write().unwrap_or_else(|p| p.into_inner()) = loaded;
        Ok(())
    }

    fn current(&self) -> Arc<Loaded> {
        self.loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The files it reads.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// For the client port.
    pub fn client_port(&self) -> Arc<ServerConfig> {
        self.current().client_port.clone()
    }

    /// For the peer port (mutual TLS; `None` without a CA).
    pub fn peer_acceptor(&self) -> Option<Arc<ServerConfig>> {
        self.current().peer_acceptor.clone()
    }

    /// For peer links (mutual TLS; `None` without a CA).
    pub fn peer_connector(&self) -> Option<Arc<ClientConfig>> {
        self.current().peer_connector.clone()
    }
}

impl NodeTls {
    /// A client's settings for this node's own calls to the cluster (a join): the CA to
    /// trust and its own certificate; `None` without a CA.
    pub fn as_client(&self) -> Result<Option<Arc<ClientConfig>>, TlsError> {
        let Some(ca) = &self.files.ca else {
            return Ok(None);
        };
        client_config(ca, Some((&self.files.cert, &self.files.key))).map(Some)
    }
}

/// A client's TLS configuration: the CA the brokers' certificates chain to, and the
/// client's own certificate and key when it authenticates with one.
pub fn client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = load_roots(ca)?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certificates("certificate", cert)?, load_key(key)?)
            .map_err(config_error)?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}
