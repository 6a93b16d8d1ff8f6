//! Certificates for a cluster made here: a CA, node certificates (naming `keel-node-N`
//! for the peer port and the hosts clients reach the node by) and client certificates
//! (their common name is the client's principal). For `keel dev --secure` and the tests;
//! a production cluster brings its own CA.
//!
//! Owns making them (rcgen: ECDSA P-256 keys); never reads or writes a file.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use crate::security::tls::node_name;

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot make a certificate: {0}")]
pub struct CertError(String);

fn failed(error: rcgen::Error) -> CertError {
    CertError(error.to_string())
}

/// A certificate and its private key, PEM.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

/// When a certificate is valid: from `not_before` to `not_after`.
#[derive(Clone, Copy, Debug)]
pub struct Validity {
    /// Start.
    pub not_before: OffsetDateTime,
    /// End.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From an hour ago (clocks a little apart) for `days` days.
    pub fn days_from_now(days: i64) -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(days),
        }
    }
}

/// A certificate authority.
pub struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
    key_pem: String,
}

impl Authority {
    /// A new CA named `name`, valid for ten years.
    pub fn new(name: &str) -> Result<Authority, CertError> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let validity = Validity::days_from_now(3650);
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let key = KeyPair::generate().map_err(failed)?;
        let key_pem = key.serialize_pem();
        let issuer = CertifiedIssuer::self_signed(params, key).map_err(failed)?;
        Ok(Authority { issuer, key_pem })
    }

    /// The CA's certificate.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA's private key (keep it off the nodes).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A node's certificate: for the peer port (`keel-node-N`, client and server) and the
    /// client port (`hosts`: IP addresses or DNS names).
    pub fn issue_node(
        &self,
        node: u64,
        hosts: &[&str],
        validity: Validity,
    ) -> Result<Issued, CertError> {
        let mut names = vec![node_name(node)];
        names.extend(hosts.iter().map(|h| h.to_string()));
        let usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.issue(&node_name(node), names, usages, validity)
    }

    /// A client's certificate, its common name `principal`.
    pub fn issue_client(&self, principal: &str, validity: Validity) -> Result<Issued, CertError> {
        let usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(principal, Vec::new(), usages, validity)
    }

    fn issue(
        &self,
        common_name: &str,
        names: Vec<String>,
        usages: Vec<ExtendedKeyUsagePurpose>,
        validity: Validity,
    ) -> Result<Issued, CertError> {
        let mut params = CertificateParams::new(names).map_err(failed)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = usages;
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let key = KeyPair::generate().map_err(failed)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(failed)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}
