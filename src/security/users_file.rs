//! A node's own users (`users_file`): SCRAM credentials an operator gives a node in a
//! file, for the superuser who creates every other user (`keel user create`, replicated
//! in the controller group). A line per user, made by `keel user hash`:
//!
//! ```text
//! # comments and blank lines are skipped
//! NAME:SCRAM-SHA-256:ITERATIONS:SALT:STORED_KEY:SERVER_KEY     (the last three base64)
//! ```
//!
//! Owns the format; never holds a password (only what `scram::StoredCredential` holds),
//! never authenticates anyone itself.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use crate::broker::access::{credential_fits, valid_user_name};
use crate::constants::MAX_USERS;
use crate::security::scram::StoredCredential;

const MECHANISM: &str = "SCRAM-SHA-256";

/// The line of `name` with `credential`.
pub fn credential_line(name: &str, credential: &StoredCredential) -> String {
    format!(
        "{name}:{MECHANISM}:{}:{}:{}:{}",
        credential.iterations,
        BASE64.encode(&credential.salt),
        BASE64.encode(credential.stored_key),
        BASE64.encode(credential.server_key)
    )
}

fn key(text: &str) -> Option<[u8; 32]> {
    BASE64.decode(text).ok()?.try_into().ok()
}

fn parse_line(line: &str) -> Option<(String, StoredCredential)> {
    let fields: Vec<&str> = line.split(':').collect();
    let [name, mechanism, iterations, salt, stored_key, server_key] = fields[..] else {
        return None;
    };
    let credential = StoredCredential {
        salt: BASE64.decode(salt).ok()?,
        iterations: iterations.parse().ok()?,
        stored_key: key(stored_key)?,
        server_key: key(server_key)?,
    };
    (valid_user_name(name) && mechanism == MECHANISM && credential_fits(&credential))
        .then(|| (name.to_string(), credential))
}

/// The users of a users file's text; an error names the first bad line.
pub fn parse_users(text: &str) -> Result<BTreeMap<String, StoredCredential>, String> {
    let mut users = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, credential) = parse_line(line).ok_or_else(|| {
            format!(
                "line {}: not NAME:{MECHANISM}:ITERATIONS:SALT:STORED_KEY:SERVER_KEY \
                 (make one with `keel user hash NAME --password-file FILE`)",
                number + 1
            )
        })?;
        if users.insert(name.clone(), credential).is_some() {
            return Err(format!("line {}: user {name:?} twice", number + 1));
        }
        if users.len() > MAX_USERS {
            return Err(format!("more than {MAX_USERS} users"));
        }
    }
    Ok(users)
}

/// The users of the file at `path`.
pub fn load_users(path: &std::path::Path) -> Result<BTreeMap<String, StoredCredential>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read users file {}: {e}", path.display()))?;
    // Credentials are not passwords, but an offline guess at one starts from them.
    crate::security::peer_secret::warn_if_shared(path, "the users file");
    parse_users(&text).map_err(|e| format!("users file {}: {e}", path.display()))
}

/// The principal a client certificate names: its subject's common name, else its first
/// DNS name; `None` if it names neither (or does not parse: it was verified already, so
/// that is a certificate this code cannot read, not an attack).
pub fn certificate_principal(der: &[u8]) -> Option<String> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    let common_name = certificate
        .subject()
        .iter_common_name()
        .find_map(|cn| cn.as_str().ok().map(str::to_string));
    let dns_name = || {
        let names = certificate.subject_alternative_name().ok()??;
        names
            .value
            .general_names
            .iter()
            .find_map(|name| match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => Some(dns.to_string()),
                _ => None,
            })
    };
    common_name.or_else(dns_name).filter(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;

    #[test]
    fn a_credential_line_reads_back_and_bad_lines_are_named() {
        let credential = StoredCredential::from_password("pw", b"0123456789abcdef", 4096);
        let text = format!(
            "# the superuser\n\n{}\n",
            credential_line("admin", &credential)
        );
        let users = parse_users(&text).unwrap();
        assert_eq!(users.get("admin"), Some(&credential));
        let line = credential_line("admin", &credential);
        for bad in [
            line.replace("SCRAM-SHA-256", "PLAIN"),
            line.replace(":4096:", ":10:"),
            line.replacen("admin", "ad min", 1),
            line.rsplit_once(':').unwrap().0.to_string(),
            format!("{line}\n{line}"),
        ] {
            let error = parse_users(&bad).unwrap_err();
            assert!(error.starts_with("line "), "{error}");
        }
    }

    #[test]
    fn a_client_certificate_names_its_common_name() {
        let authority = crate::security::certs::Authority::new("test CA").unwrap();
        let validity = crate::security::certs::Validity::days_from_now(1);
        let issued = authority.issue_client("alice", validity).unwrap();
        let der = rustls_pki_types::CertificateDer::from_pem_slice(issued.cert_pem.as_bytes());
        let der = der.unwrap();
        assert_eq!(certificate_principal(&der), Some("alice".to_string()));
        assert_eq!(certificate_principal(b"not a certificate"), None);
    }
}
