//! TLS client configuration (rustls with the `ring` provider).
//!
//! [`client_config`] turns a [`TlsRoots`] choice into a shareable
//! `Arc<rustls::ClientConfig>` with ALPN `http/1.1`. Build it once per
//! client configuration and share the `Arc` between connections: the
//! WebPKI variant is cached process-wide, so it is cheap anyway.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;

/// Which certificate authorities a `wss://` connection trusts.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum TlsRoots {
    /// The Mozilla root set compiled in by `webpki-roots` (the default).
    #[default]
    WebPki,
    /// PEM file with one or more CA certificates (private or test servers).
    CaFile(PathBuf),
    /// PEM bytes with one or more CA certificates.
    CaPem(Vec<u8>),
    /// A ready-made rustls configuration, used as is (ALPN, roots, client
    /// certificates and verifier are the caller's choice).
    Custom(Arc<ClientConfig>),
}

impl fmt::Debug for TlsRoots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsRoots::WebPki => f.write_str("WebPki"),
            TlsRoots::CaFile(p) => f.debug_tuple("CaFile").field(p).finish(),
            TlsRoots::CaPem(b) => write!(f, "CaPem({} bytes)", b.len()),
            TlsRoots::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// Why a TLS client configuration could not be built. Configuration
/// errors: fix the setup, retrying will not help.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// The CA file could not be read.
    ReadCaFile {
        /// The file we tried to read.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The PEM input holds no usable CA certificate (empty, not PEM,
    /// or every certificate was rejected).
    NoCertificates {
        /// Where the PEM came from (a path or `"inline PEM"`).
        origin: String,
        /// Why, in one line.
        reason: String,
    },
    /// rustls refused the configuration (e.g. no usable protocol version).
    Rustls(rustls::Error),
}

impl fmt::Display for TlsSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsSetupError::ReadCaFile { path, source } => {
                write!(f, "cannot read CA file {}: {source}", path.display())
            }
            TlsSetupError::NoCertificates { origin, reason } => {
                write!(f, "no usable CA certificate in {origin}: {reason}")
            }
            TlsSetupError::Rustls(e) => write!(f, "TLS configuration rejected: {e}"),
        }
    }
}

impl std::error::Error for TlsSetupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsSetupError::ReadCaFile { source, .. } => Some(source),
            TlsSetupError::Rustls(e) => Some(e),
            TlsSetupError::NoCertificates { .. } => None,
        }
    }
}

/// Build (or, for [`TlsRoots::WebPki`], fetch the cached) client
/// configuration: ring provider, TLS 1.2 + 1.3, ALPN `http/1.1`, SNI on.
pub fn client_config(roots: &TlsRoots) -> Result<Arc<ClientConfig>, TlsSetupError> {
    match roots {
        TlsRoots::WebPki => {
            static WEBPKI: OnceLock<Arc<ClientConfig>> = OnceLock::new();
            if let Some(c) = WEBPKI.get() {
                return Ok(c.clone());
            }
            let mut store = RootCertStore::empty();
            store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let cfg = build(store)?;
            Ok(WEBPKI.get_or_init(|| cfg).clone())
        }
        TlsRoots::CaFile(path) => {
            let pem = std::fs::read(path).map_err(|source| TlsSetupError::ReadCaFile {
                path: path.clone(),
                source,
            })?;
            build(roots_from_pem(&pem, &path_origin(path))?)
        }
        TlsRoots::CaPem(pem) => build(roots_from_pem(pem, "inline PEM")?),
        TlsRoots::Custom(cfg) => Ok(cfg.clone()),
    }
}

fn path_origin(path: &Path) -> String {
    path.display().to_string()
}

fn roots_from_pem(pem: &[u8], origin: &str) -> Result<RootCertStore, TlsSetupError> {
    let no_certs = |reason: String| TlsSetupError::NoCertificates {
        origin: origin.to_string(),
        reason,
    };
    let mut certs = Vec::new();
    for item in CertificateDer::pem_slice_iter(pem) {
        match item {
            Ok(c) => certs.push(c),
            Err(e) => return Err(no_certs(format!("malformed PEM: {e}"))),
        }
    }
    if certs.is_empty() {
        return Err(no_certs(if pem.is_empty() {
            "the input is empty".into()
        } else {
            "no -----BEGIN CERTIFICATE----- block found".into()
        }));
    }
    let mut store = RootCertStore::empty();
    let (added, rejected) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(no_certs(format!(
            "all {rejected} certificate(s) were rejected"
        )));
    }
    if rejected > 0 {
        log::warn!("{origin}: ignored {rejected} unparsable CA certificate(s)");
    }
    Ok(store)
}

fn build(store: RootCertStore) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let mut cfg =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(TlsSetupError::Rustls)?
            .with_root_certificates(store)
            .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The name the server's certificate must match: a DNS name, or an IP
/// address for IP literals (no SNI is sent for those). `None` if `host`
/// is neither.
pub fn server_name(host: &str) -> Option<ServerName<'static>> {
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(host.to_string()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn webpki_is_cached_and_has_alpn() {
        let a = client_config(&TlsRoots::default()).unwrap();
        let b = client_config(&TlsRoots::WebPki).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn ca_pem_and_file() {
        let pem = ca_pem();
        let cfg = client_config(&TlsRoots::CaPem(pem.clone().into_bytes())).unwrap();
        assert_eq!(cfg.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let dir = std::env::temp_dir().join(format!("zenws-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ca.pem");
        std::fs::write(&path, pem).unwrap();
        client_config(&TlsRoots::CaFile(path.clone())).unwrap();

        let empty = dir.join("empty.pem");
        std::fs::write(&empty, b"").unwrap();
        let err = client_config(&TlsRoots::CaFile(empty.clone())).unwrap_err();
        assert!(matches!(err, TlsSetupError::NoCertificates { .. }));
        assert!(err.to_string().contains("empty.pem"), "{err}");
        assert!(err.to_string().contains("empty"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let missing = PathBuf::from("/nonexistent/zenws/ca.pem");
        let err = client_config(&TlsRoots::CaFile(missing)).unwrap_err();
        assert!(matches!(err, TlsSetupError::ReadCaFile { .. }), "{err}");
        assert!(
            err.to_string().contains("/nonexistent/zenws/ca.pem"),
            "{err}"
        );

        let err = client_config(&TlsRoots::CaPem(b"hello, not a PEM".to_vec())).unwrap_err();
        assert!(matches!(err, TlsSetupError::NoCertificates { .. }), "{err}");

        let junk = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = client_config(&TlsRoots::CaPem(junk.to_vec())).unwrap_err();
        assert!(matches!(err, TlsSetupError::NoCertificates { .. }), "{err}");
    }

    #[test]
    fn server_names() {
        assert!(matches!(
            server_name("example.com"),
            Some(ServerName::DnsName(_))
        ));
        assert!(matches!(
            server_name("127.0.0.1"),
            Some(ServerName::IpAddress(_))
        ));
        assert!(matches!(server_name("::1"), Some(ServerName::IpAddress(_))));
        assert!(matches!(
            server_name("[::1]"),
            Some(ServerName::IpAddress(_))
        ));
        assert!(server_name("bad name").is_none());
        assert!(server_name("").is_none());
    }
}
