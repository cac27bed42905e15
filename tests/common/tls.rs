//! Certificates made at test run time with rcgen: a CA, and certificates it signs for 127.0.0.1 and
//! localhost, good for both ends of a TLS link. Written as PEM files, as an operator would have them.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

pub struct Pki {
    dir: PathBuf,
    name: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    /// A new CA named `name`, its certificate written to `dir/name-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA cert");
        let pki = Pki { dir: dir.to_path_buf(), name: name.to_string(), issuer };
        std::fs::write(pki.ca_path(), pki.issuer.pem()).expect("write the CA");
        pki
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    /// Issues a certificate for `who` and writes it and its key; returns their paths.
    pub fn issue(&self, who: &str) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).expect("cert params");
        params.distinguished_name.push(DnType::CommonName, who);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &*self.issuer).expect("sign");
        let cert_path = self.dir.join(format!("{}-{who}.pem", self.name));
        let key_path = self.dir.join(format!("{}-{who}.key", self.name));
        std::fs::write(&cert_path, cert.pem()).expect("write the certificate");
        std::fs::write(&key_path, key.serialize_pem()).expect("write the key");
        (cert_path, key_path)
    }

    /// A client that trusts this CA and presents no certificate.
    pub fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(self.issuer.pem()))
    }

    /// A certificate this CA issued, with its key, as a TLS client presents it.
    pub fn identity(&self, who: &str) -> Identity {
        let (cert, key) = self.issue(who);
        Identity::from_pem(std::fs::read(cert).expect("cert"), std::fs::read(key).expect("key"))
    }
}
