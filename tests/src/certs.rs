//! A throwaway PKI for TLS tests: a fresh CA and a server certificate signed
//! by it, generated in-process with rcgen.
//!
//! Nothing here touches the system trust store: [`TestPki::client_config`]
//! trusts only this CA, and a client under test must be given the CA (as PEM
//! via [`TestPki::ca_pem`], as a file via [`TestPki::write_ca_file`], or as
//! DER via [`TestPki::ca_der`]). All rustls configs use the ring provider
//! explicitly; no process-wide default provider is installed or needed.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The ring crypto provider, explicitly (never the process default).
pub fn ring_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A test CA plus one server certificate (and key) signed by it.
#[derive(Clone)]
pub struct TestPki {
    names: Vec<String>,
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    server_cert_pem: String,
    server_cert_der: CertificateDer<'static>,
    server_key_pem: String,
    server_key_der: Vec<u8>,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private key stays out of Debug output.
        f.debug_struct("TestPki")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl TestPki {
    /// A CA and a server certificate valid for `localhost` and `127.0.0.1`.
    pub fn generate() -> TestPki {
        TestPki::generate_for(&["localhost", "127.0.0.1"])
    }

    /// A CA and a server certificate valid only for `names` (DNS names or IP
    /// addresses), e.g. `&["other.example"]` for a name-mismatch test.
    ///
    /// Panics if rcgen rejects a name (this is test support).
    pub fn generate_for(names: &[&str]) -> TestPki {
        let ca_key = KeyPair::generate().expect("generate CA key");
        let mut ca_params =
            CertificateParams::new(Vec::<String>::new()).expect("CA certificate params");
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "zenws test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign CA");
        let issuer = Issuer::new(ca_params, ca_key);

        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let server_key = KeyPair::generate().expect("generate server key");
        let mut params = CertificateParams::new(names.clone()).expect("server certificate names");
        params.distinguished_name.push(
            DnType::CommonName,
            names
                .first()
                .map(String::as_str)
                .unwrap_or("zenws test server"),
        );
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let server_cert = params
            .signed_by(&server_key, &issuer)
            .expect("sign server certificate");

        TestPki {
            names,
            ca_pem: ca_cert.pem(),
            ca_der: ca_cert.der().clone(),
            server_cert_pem: server_cert.pem(),
            server_cert_der: server_cert.der().clone(),
            server_key_pem: server_key.serialize_pem(),
            server_key_der: server_key.serialize_der(),
        }
    }

    /// The names the server certificate is valid for.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// The CA certificate, DER.
    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca_der.clone()
    }

    /// The server certificate, PEM.
    pub fn server_cert_pem(&self) -> String {
        self.server_cert_pem.clone()
    }

    /// The server private key, PKCS#8 PEM.
    pub fn server_key_pem(&self) -> String {
        self.server_key_pem.clone()
    }

    /// Write the CA PEM to a new uniquely named file in `dir`; returns its path.
    pub fn write_ca_file(&self, dir: &Path) -> io::Result<PathBuf> {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = dir.join(format!(
            "zenws-test-ca-{}-{}-{}.pem",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst),
            crate::ws_util::now_us()
        ));
        std::fs::write(&path, self.ca_pem.as_bytes())?;
        Ok(path)
    }

    /// Write the CA PEM to a new uniquely named file in the system temp dir.
    pub fn write_ca_temp_file(&self) -> io::Result<PathBuf> {
        self.write_ca_file(&std::env::temp_dir())
    }

    /// A root store holding only this CA.
    pub fn root_store(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("add test CA");
        roots
    }

    /// A rustls server config presenting the server certificate (chain:
    /// server, CA); ALPN `http/1.1` is offered to clients that ask.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key_der.clone()));
        let mut cfg = ServerConfig::builder_with_provider(ring_provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.server_cert_der.clone(), self.ca_der.clone()], key)
            .expect("server certificate and key match");
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(cfg)
    }

    /// A rustls client config trusting only this CA (ALPN `http/1.1`).
    pub fn client_config(&self) -> Arc<ClientConfig> {
        let mut cfg = ClientConfig::builder_with_provider(ring_provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(self.root_store())
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_pki_has_pem_and_builds_configs() {
        let pki = TestPki::generate();
        assert!(pki.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(pki.server_key_pem().contains("PRIVATE KEY"));
        assert_eq!(pki.names(), ["localhost", "127.0.0.1"]);
        let _ = pki.server_config();
        let _ = pki.client_config();
        let path = pki.write_ca_temp_file().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), pki.ca_pem());
        std::fs::remove_file(path).unwrap();
        assert!(!format!("{pki:?}").contains("PRIVATE"));
    }

    #[test]
    fn two_pkis_are_independent() {
        assert_ne!(TestPki::generate().ca_pem(), TestPki::generate().ca_pem());
    }
}
