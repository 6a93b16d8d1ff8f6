//! `keel dev --secure`: a CA, a certificate for each node (naming keel-node-N, 127.0.0.1
//! and localhost) and one for a client (common name "admin"), and the superuser "admin"
//! with a random password (`admin.password` for clients, its credential in `users` for
//! the nodes' --users-file), made once into `DATA_DIR/tls` and kept for later runs; the
//! nodes get them as --tls-cert, --tls-key and --tls-ca (TLS for clients, mutual TLS
//! between nodes; without --tls-ca with `--peer-security secret`: the nodes keep to the
//! shared secret) and --client-auth --superuser admin --users-file (SCRAM or the client
//! certificate).
//!
//! Owns those files; the private keys and the password are readable by their owner only.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use keel::security::certs::{Authority, Issued, Validity};

/// Days the certificates made here are valid.
const DEV_CERTIFICATE_DAYS: i64 = 365;

/// The superuser `keel dev --secure` makes.
const SUPERUSER: &str = "admin";

/// The directory of the files, made on the first run for `nodes` nodes (and again if a
/// node's files are missing: a run with more nodes).
pub(crate) fn prepare(data_dir: &Path, nodes: u32) -> Result<PathBuf, String> {
    let dir = data_dir.join("tls");
    let names = [
        "ca.crt".to_string(),
        "client.crt".into(),
        "client.key".into(),
        "admin.password".into(),
        "users".into(),
    ];
    let node_files = (1..=nodes).flat_map(|n| [format!("node-{n}.crt"), format!("node-{n}.key")]);
    let complete = names
        .into_iter()
        .chain(node_files)
        .all(|name| dir.join(name).exists());
    if complete {
        return Ok(dir);
    }
    let fail = |e: &dyn std::fmt::Display| format!("cannot make {}: {e}", dir.display());
    std::fs::create_dir_all(&dir).map_err(|e| fail(&e))?;
    let ca = Authority::new("keel dev CA").map_err(|e| fail(&e))?;
    write(&dir.join("ca.crt"), &ca.cert_pem(), 0o644)?;
    write(&dir.join("ca.key"), ca.key_pem(), 0o600)?;
    let valid = Validity::days_from_now(DEV_CERTIFICATE_DAYS);
    for node in 1..=nodes {
        let issued = ca
            .issue_node(u64::from(node), &["127.0.0.1", "localhost"], valid)
            .map_err(|e| fail(&e))?;
        write_pair(&dir, &format!("node-{node}"), &issued)?;
    }
    let client = ca.issue_client(SUPERUSER, valid).map_err(|e| fail(&e))?;
    write_pair(&dir, "client", &client)?;
    write_superuser(&dir)?;
    Ok(dir)
}

/// The superuser's random password (for clients) and its credential (for the nodes).
fn write_superuser(dir: &Path) -> Result<(), String> {
    let password = keel::security::PeerSecret::generate_text()
        .map_err(|e| format!("cannot make a password: {e}"))?;
    let password = password.trim();
    write(&dir.join("admin.password"), &format!("{password}\n"), 0o600)?;
    let credential = keel::client::access_calls::new_credential(password)
        .map_err(|e| format!("cannot make a credential: {e}"))?;
    let line = keel::security::users_file::credential_line(SUPERUSER, &credential);
    let text =
        format!("# keel dev --secure: the superuser (its password in admin.password)\n{line}\n");
    write(&dir.join("users"), &text, 0o600)
}

fn write_pair(dir: &Path, name: &str, issued: &Issued) -> Result<(), String> {
    write(&dir.join(format!("{name}.crt")), &issued.cert_pem, 0o644)?;
    write(&dir.join(format!("{name}.key")), &issued.key_pem, 0o600)
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .and_then(|mut file| {
            file.write_all(text.as_bytes())?;
            file.sync_all()
        })
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Node `node`'s TLS flags; with `mutual`, the CA too (mutual TLS between the nodes,
/// client certificates accepted), else the nodes keep to the shared secret.
pub(crate) fn node_args(dir: &Path, node: u32, mutual: bool) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "--tls-cert".into(),
        dir.join(format!("node-{node}.crt")).into(),
        "--tls-key".into(),
        dir.join(format!("node-{node}.key")).into(),
        "--client-auth".into(),
        "--superuser".into(),
        SUPERUSER.into(),
        "--users-file".into(),
        dir.join("users").into(),
    ];
    if mutual {
        args.extend(["--tls-ca".into(), dir.join("ca.crt").into()]);
    }
    args
}

/// The flags a client gives to reach the cluster as the superuser: TLS and SCRAM.
pub(crate) fn client_flags(dir: &Path) -> String {
    format!(
        "--tls-ca {} --user {SUPERUSER} --password-file {}",
        dir.join("ca.crt").display(),
        dir.join("admin.password").display(),
    )
}

/// The flags of the superuser's client certificate instead of its password.
pub(crate) fn certificate_flags(dir: &Path) -> String {
    format!(
        "--tls-ca {} --tls-cert {} --tls-key {}",
        dir.join("ca.crt").display(),
        dir.join("client.crt").display(),
        dir.join("client.key").display()
    )
}
