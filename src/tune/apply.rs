//! `keel tune apply` and `keel tune revert`: set what `check` found different to the
//! recommended value, and put it back. Both print the exact commands and change nothing
//! unless asked (`--yes`).
//!
//! Apply writes the values now (the /proc or /sys file) and makes the sysctls persistent
//! in `/etc/sysctl.d/90-keel.conf`; sysfs settings (huge pages, disk scheduler) last until
//! reboot, and the guide says how to make them permanent. Before changing anything it
//! records every old value in `/var/lib/keel/tune-revert` (tab-separated path and value),
//! which `revert` reads back. Limits and boot options are never touched.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::tune::Finding;

/// Where the old values are kept, under the root.
pub const REVERT_STATE: &str = "var/lib/keel/tune-revert";
/// The persistent sysctl file, under the root.
pub const SYSCTL_FILE: &str = "etc/sysctl.d/90-keel.conf";

/// What went wrong applying or reverting.
#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    /// A file could not be read or written (not root?).
    #[error("{what} {path}: {source}")]
    Io {
        /// The operation.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Nothing was applied, so there is nothing to revert.
    #[error("nothing to revert: {0} does not exist")]
    NothingToRevert(PathBuf),
}

fn io_error(what: &'static str, path: &Path, source: std::io::Error) -> TuneError {
    TuneError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// One change: a host file from one value to another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The setting's name.
    pub setting: String,
    /// The host file.
    pub path: String,
    /// Its value before.
    pub from: String,
    /// Its value after.
    pub to: String,
    /// The sysctl key, when it is one.
    pub sysctl: Option<String>,
}

impl Change {
    /// The shell command that makes this change now.
    pub fn command(&self) -> String {
        match &self.sysctl {
            Some(key) => format!("sysctl -w {key}={}", self.to),
            None => format!("echo {} > {}", self.to, self.path),
        }
    }
}

/// The changes that bring every differing setting with a fix to its recommended value.
pub fn plan_apply(findings: &[Finding]) -> Vec<Change> {
    findings
        .iter()
        .filter(|f| f.status == crate::tune::Status::Differs)
        .filter_map(|f| {
            f.fix.as_ref().map(|fix| Change {
                setting: f.setting.clone(),
                path: fix.path.clone(),
                from: f.current.clone(),
                to: fix.value.clone(),
                sysctl: fix.sysctl.clone(),
            })
        })
        .collect()
}

fn host_file(root: &Path, host_path: &str) -> PathBuf {
    root.join(host_path.trim_start_matches('/'))
}

/// Makes the changes: records the old values, writes the new ones, persists the sysctls.
pub fn apply(root: &Path, changes: &[Change]) -> Result<(), TuneError> {
    let state = root.join(REVERT_STATE);
    if let Some(parent) = state.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io_error("create", parent, e))?;
    }
    // Old values first (an earlier, unreverted apply keeps its older values).
    let mut recorded = read_state(&state).unwrap_or_default();
    for change in changes {
        if !recorded.iter().any(|(path, _)| path == &change.path) {
            recorded.push((change.path.clone(), change.from.clone()));
        }
    }
    write_state(&state, &recorded)?;
    for change in changes {
        let path = host_file(root, &change.path);
        std::fs::write(&path, format!("{}\n", change.to))
            .map_err(|e| io_error("write", &path, e))?;
    }
    let sysctls: Vec<String> = changes
        .iter()
        .filter_map(|c| c.sysctl.as_ref().map(|key| format!("{key} = {}", c.to)))
        .collect();
    if !sysctls.is_empty() {
        let file = root.join(SYSCTL_FILE);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_error("create", parent, e))?;
        }
        let mut text = String::from("# Written by keel tune apply; keel tune revert removes it.\n");
        for line in sysctls {
            text.push_str(&line);
            text.push('\n');
        }
        std::fs::write(&file, text).map_err(|e| io_error("write", &file, e))?;
    }
    Ok(())
}

/// The changes that put back what `apply` changed.
pub fn plan_revert(root: &Path) -> Result<Vec<Change>, TuneError> {
    let state = root.join(REVERT_STATE);
    let recorded = read_state(&state).ok_or_else(|| TuneError::NothingToRevert(state.clone()))?;
    Ok(recorded
        .into_iter()
        .map(|(path, from)| {
            let now = crate::tune::read(root, &path).unwrap_or_default();
            let sysctl = path
                .strip_prefix("/proc/sys/")
                .map(|key| key.replace('/', "."));
            Change {
                setting: sysctl.clone().unwrap_or_else(|| path.clone()),
                path,
                from: now,
                to: from,
                sysctl,
            }
        })
        .collect())
}

/// Puts the old values back, removes the persistent sysctl file and the record.
pub fn revert(root: &Path, changes: &[Change]) -> Result<(), TuneError> {
    for change in changes {
        let path = host_file(root, &change.path);
        std::fs::write(&path, format!("{}\n", change.to))
            .map_err(|e| io_error("write", &path, e))?;
    }
    for file in [root.join(SYSCTL_FILE), root.join(REVERT_STATE)] {
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("remove", &file, e)),
        }
    }
    Ok(())
}

fn read_state(path: &Path) -> Option<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .filter_map(|line| {
                let (path, value) = line.split_once('\t')?;
                Some((path.to_string(), value.to_string()))
            })
            .collect(),
    )
}

fn write_state(path: &Path, values: &[(String, String)]) -> Result<(), TuneError> {
    let mut file = std::fs::File::create(path).map_err(|e| io_error("create", path, e))?;
    for (host_path, value) in values {
        writeln!(file, "{host_path}\t{value}").map_err(|e| io_error("write", path, e))?;
    }
    file.sync_all().map_err(|e| io_error("fsync", path, e))
}
