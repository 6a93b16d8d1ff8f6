//! `keel tune check`: where a Linux host stands against the settings in tuning/README.md.
//!
//! Every check reads files under a root (`/` on a live host; a fixture tree in tests) —
//! /proc and /sys only, never changing anything, so it runs unprivileged — and says what
//! it found, what Keel recommends, and whether they agree:
//! - `Ok`: as recommended;
//! - `Differs`: readable and not as recommended (the guide says how to change it);
//! - `Unknown`: not readable here (no such file: a VM without cpufreq, say).
//!
//! Checks are data (`checks.rs`), each a file and a rule, so adding one is one entry.

pub mod apply;
pub mod checks;

use std::path::{Path, PathBuf};

/// What a check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// As recommended.
    Ok,
    /// Not as recommended.
    Differs,
    /// Could not be read on this host.
    Unknown,
}

impl Status {
    /// Lower-case name, as printed and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Differs => "differs",
            Status::Unknown => "unknown",
        }
    }
}

/// One setting's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The guide's section.
    pub section: &'static str,
    /// The setting.
    pub setting: String,
    /// What the host has (empty when unknown).
    pub current: String,
    /// What Keel recommends.
    pub recommended: &'static str,
    /// The verdict.
    pub status: Status,
    /// How `keel tune apply` sets it, when a file write does (not for limits, boot
    /// options or hardware).
    pub fix: Option<Fix>,
}

/// A setting `keel tune apply` can change: a value written to a /proc or /sys file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fix {
    /// The host file (absolute, as on the host).
    pub path: String,
    /// The value to write.
    pub value: String,
    /// The sysctl key, when it is one (persisted in /etc/sysctl.d/90-keel.conf).
    pub sysctl: Option<String>,
}

/// Reads a file under `root` (an absolute host path like "/proc/sys/vm/swappiness"),
/// trimmed; `None` when it cannot be read.
pub fn read(root: &Path, host_path: &str) -> Option<String> {
    let path: PathBuf = root.join(host_path.trim_start_matches('/'));
    std::fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_string())
}

/// Where Keel keeps its data unless told (`check_data_dir` for another place).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/keel";

/// Runs every check against the host (or fixture tree) at `root`.
pub fn check(root: &Path) -> Vec<Finding> {
    checks::all(root, Path::new(DEFAULT_DATA_DIR))
}

/// Same, for Keel's data in `data_dir` (the file-system check looks there).
pub fn check_data_dir(root: &Path, data_dir: &Path) -> Vec<Finding> {
    checks::all(root, data_dir)
}

/// The findings as a JSON array (hand-written: a flat list of strings).
pub fn to_json(findings: &[Finding]) -> String {
    fn quoted(text: &str) -> String {
        let mut out = String::with_capacity(text.len() + 2);
        out.push('"');
        for c in text.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }
    let items: Vec<String> = findings
        .iter()
        .map(|f| {
            format!(
                "{{\"section\":{},\"setting\":{},\"current\":{},\"recommended\":{},\"status\":{}}}",
                quoted(f.section),
                quoted(&f.setting),
                quoted(&f.current),
                quoted(f.recommended),
                quoted(f.status.name())
            )
        })
        .collect();
    format!("[{}]", items.join(","))
}

/// The findings as an aligned table.
pub fn to_table(findings: &[Finding]) -> String {
    let width = findings
        .iter()
        .map(|f| f.setting.len())
        .max()
        .unwrap_or(0)
        .max(7);
    let mut out = format!(
        "{:<8} {:<width$} {:<28} {}\n",
        "status", "setting", "current", "recommended"
    );
    for f in findings {
        let current = if f.current.is_empty() {
            "-"
        } else {
            &f.current
        };
        out.push_str(&format!(
            "{:<8} {:<width$} {:<28} {}\n",
            f.status.name(),
            f.setting,
            current,
            f.recommended
        ));
    }
    out
}
