//! Certificate files for the TLS tests (made with `keel::security::certs`).

use std::path::{Path, PathBuf};

use keel::security::certs::{Authority, Issued, Validity};

/// Writes `issued` as NAME.crt and NAME.key in `dir`.
pub fn write_pair(dir: &Path, name: &str, issued: &Issued) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    (cert, key)
}

/// Writes the CA's certificate as NAME.crt in `dir`.
pub fn write_ca(dir: &Path, name: &str, ca: &Authority) -> PathBuf {
    let path = dir.join(format!("{name}.crt"));
    std::fs::write(&path, ca.cert_pem()).unwrap();
    path
}

/// Ended yesterday.
pub fn expired() -> Validity {
    let now = time::OffsetDateTime::now_utc();
    Validity {
        not_before: now - time::Duration::days(30),
        not_after: now - time::Duration::days(1),
    }
}
