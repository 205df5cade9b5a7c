//! TLS client configuration (rustls; crypto provider and default roots
//! chosen by features, see the crate's Cargo.toml).
//!
//! [`client_config`] turns a [`TlsRoots`] choice into a shareable
//! `Arc<rustls::ClientConfig>` with ALPN `http/1.1`. Build it once per
//! client configuration and share the `Arc` between connections: the
//! WebPKI and native variants are cached process-wide, so it is cheap anyway.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
#[cfg(any(feature = "webpki-roots", feature = "native-roots"))]
use std::sync::OnceLock;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;

/// Which certificate authorities a `wss://` connection trusts.
///
/// The default is [`WebPki`](TlsRoots::WebPki) with the `webpki-roots`
/// feature (on by default), else [`Native`](TlsRoots::Native) with
/// `native-roots`. Every variant exists whatever the features; one whose
/// feature is off fails at `start_client` with
/// [`TlsSetupError::RootsUnavailable`] (a configuration error, no retry).
#[derive(Clone)]
#[non_exhaustive]
pub enum TlsRoots {
    /// The Mozilla root set compiled in by `webpki-roots` (feature
    /// `webpki-roots`, on by default).
    WebPki,
    /// The platform's certificate store, read once per process through
    /// `rustls-native-certs` (feature `native-roots`).
    Native,
    /// PEM file with one or more CA certificates (private or test servers).
    CaFile(PathBuf),
    /// PEM bytes with one or more CA certificates.
    CaPem(Vec<u8>),
    /// A ready-made rustls configuration, used as is (ALPN, roots, client
    /// certificates and verifier are the caller's choice).
    Custom(Arc<ClientConfig>),
}

impl Default for TlsRoots {
    fn default() -> Self {
        if cfg!(feature = "webpki-roots") || !cfg!(feature = "native-roots") {
            TlsRoots::WebPki
        } else {
            TlsRoots::Native
        }
    }
}

impl fmt::Debug for TlsRoots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsRoots::WebPki => f.write_str("WebPki"),
            TlsRoots::Native => f.write_str("Native"),
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
    /// These roots need a feature this build does not have
    /// ([`TlsRoots::WebPki`]: `webpki-roots`; [`TlsRoots::Native`]: `native-roots`).
    RootsUnavailable {
        /// The roots asked for.
        roots: &'static str,
        /// The zenws-mio feature that provides them.
        feature: &'static str,
    },
    /// No crypto provider: the crate was built without `ring` and
    /// `aws-lc-rs`, and the application installed no process default
    /// (`rustls::crypto::CryptoProvider::install_default`).
    NoCryptoProvider,
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
            TlsSetupError::RootsUnavailable { roots, feature } => write!(
                f,
                "{roots} CA roots are not built in: enable the zenws-mio feature \"{feature}\" \
                 or give the roots yourself (TlsRoots::CaFile, CaPem or Custom)"
            ),
            TlsSetupError::NoCryptoProvider => f.write_str(
                "no TLS crypto provider: enable the zenws-mio feature \"ring\" or \"aws-lc-rs\", \
                 or install a process default (rustls::crypto::CryptoProvider::install_default)",
            ),
        }
    }
}

impl std::error::Error for TlsSetupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsSetupError::ReadCaFile { source, .. } => Some(source),
            TlsSetupError::Rustls(e) => Some(e),
            TlsSetupError::NoCertificates { .. }
            | TlsSetupError::RootsUnavailable { .. }
            | TlsSetupError::NoCryptoProvider => None,
        }
    }
}

/// Build (or, for [`TlsRoots::WebPki`] and [`TlsRoots::Native`], fetch
/// the cached) client configuration: the crate's crypto provider (see
/// [`provider`]), TLS 1.2 + 1.3, ALPN `http/1.1`, SNI on.
pub fn client_config(roots: &TlsRoots) -> Result<Arc<ClientConfig>, TlsSetupError> {
    match roots {
        #[cfg(feature = "webpki-roots")]
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
        #[cfg(not(feature = "webpki-roots"))]
        TlsRoots::WebPki => Err(TlsSetupError::RootsUnavailable {
            roots: "WebPKI (Mozilla)",
            feature: "webpki-roots",
        }),
        #[cfg(feature = "native-roots")]
        TlsRoots::Native => {
            static NATIVE: OnceLock<Arc<ClientConfig>> = OnceLock::new();
            if let Some(c) = NATIVE.get() {
                return Ok(c.clone());
            }
            let cfg = build(native_roots()?)?;
            Ok(NATIVE.get_or_init(|| cfg).clone())
        }
        #[cfg(not(feature = "native-roots"))]
        TlsRoots::Native => Err(TlsSetupError::RootsUnavailable {
            roots: "the platform's",
            feature: "native-roots",
        }),
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

/// The platform's CA certificates (`rustls-native-certs`); the certificates
/// that fail to load are logged and skipped, none at all is an error.
#[cfg(feature = "native-roots")]
fn native_roots() -> Result<RootCertStore, TlsSetupError> {
    const ORIGIN: &str = "the platform's certificate store";
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        log::warn!("{ORIGIN}: {e}");
    }
    let mut store = RootCertStore::empty();
    let (added, rejected) = store.add_parsable_certificates(found.certs);
    if rejected > 0 {
        log::warn!("{ORIGIN}: ignored {rejected} unparsable CA certificate(s)");
    }
    if added == 0 {
        return Err(TlsSetupError::NoCertificates {
            origin: ORIGIN.into(),
            reason: match found.errors.first() {
                Some(e) => format!("no certificate loaded ({e})"),
                None => "no certificate found".into(),
            },
        });
    }
    Ok(store)
}

/// The crypto provider: the process default if the application installed
/// one, else the feature's (`ring` before `aws-lc-rs` when both are on).
pub fn provider() -> Result<Arc<rustls::crypto::CryptoProvider>, TlsSetupError> {
    if let Some(p) = rustls::crypto::CryptoProvider::get_default() {
        return Ok(p.clone());
    }
    #[cfg(feature = "ring")]
    return Ok(Arc::new(rustls::crypto::ring::default_provider()));
    #[cfg(all(feature = "aws-lc-rs", not(feature = "ring")))]
    return Ok(Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    #[cfg(not(any(feature = "ring", feature = "aws-lc-rs")))]
    Err(TlsSetupError::NoCryptoProvider)
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
    let mut cfg = ClientConfig::builder_with_provider(provider()?)
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
    #[cfg(not(feature = "webpki-roots"))]
    fn roots_without_their_feature_are_a_clear_error() {
        let err = client_config(&TlsRoots::WebPki).unwrap_err();
        assert!(
            matches!(err, TlsSetupError::RootsUnavailable { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("webpki-roots"), "{err}");
    }

    #[test]
    #[cfg(feature = "native-roots")]
    fn native_roots_are_cached_or_a_typed_error() {
        match client_config(&TlsRoots::Native) {
            Ok(a) => {
                let b = client_config(&TlsRoots::Native).unwrap();
                assert!(Arc::ptr_eq(&a, &b));
                assert_eq!(a.alpn_protocols, vec![b"http/1.1".to_vec()]);
            }
            // A machine without a CA store.
            Err(e) => assert!(matches!(e, TlsSetupError::NoCertificates { .. }), "{e}"),
        }
    }

    #[test]
    #[cfg(not(feature = "native-roots"))]
    fn native_without_the_feature_is_a_clear_error() {
        let err = client_config(&TlsRoots::Native).unwrap_err();
        assert!(err.to_string().contains("native-roots"), "{err}");
    }

    #[test]
    #[cfg(feature = "webpki-roots")]
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
