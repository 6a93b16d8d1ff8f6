//! The checks of `keel tune check`, one per setting, in the order of tuning/README.md.

use std::path::Path;

use crate::tune::{read, Finding, Fix, Status};

fn finding(
    section: &'static str,
    setting: impl Into<String>,
    current: Option<String>,
    recommended: &'static str,
    is_ok: impl Fn(&str) -> bool,
) -> Finding {
    let status = match &current {
        None => Status::Unknown,
        Some(value) if is_ok(value) => Status::Ok,
        Some(_) => Status::Differs,
    };
    Finding {
        section,
        setting: setting.into(),
        current: current.unwrap_or_default(),
        recommended,
        status,
        fix: None,
    }
}

/// A finding for a sysctl, which `keel tune apply` can set.
fn sysctl(
    root: &Path,
    section: &'static str,
    key: &str,
    recommended: &'static str,
    value: &str,
    is_ok: impl Fn(&str) -> bool,
) -> Finding {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    let mut found = finding(section, key, read(root, &path), recommended, is_ok);
    found.fix = Some(Fix {
        path,
        value: value.to_string(),
        sysctl: Some(key.to_string()),
    });
    found
}

/// Adds a sysfs write to a finding.
fn with_sysfs(mut found: Finding, path: String, value: &str) -> Finding {
    found.fix = Some(Fix {
        path,
        value: value.to_string(),
        sysctl: None,
    });
    found
}

/// The selected word of a sysfs choice list ("always [madvise] never" -> "madvise").
fn selected(choices: &str) -> String {
    choices
        .split_whitespace()
        .find(|w| w.starts_with('[') && w.ends_with(']'))
        .map(|w| w.trim_matches(|c| c == '[' || c == ']').to_string())
        .unwrap_or_else(|| choices.to_string())
}

fn number(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// A soft limit from a `/proc/<pid>/limits` file ("unlimited" as u64::MAX).
fn soft_limit(limits: &str, name: &str) -> Option<String> {
    let line = limits.lines().find(|l| l.starts_with(name))?;
    line[name.len()..]
        .split_whitespace()
        .next()
        .map(str::to_string)
}

fn at_least(minimum: u64) -> impl Fn(&str) -> bool {
    move |value: &str| value == "unlimited" || number(value).is_some_and(|n| n >= minimum)
}

fn at_most(maximum: u64) -> impl Fn(&str) -> bool {
    move |value: &str| number(value).is_some_and(|n| n <= maximum)
}

/// Names of the entries of a directory under `root` (sorted), empty when unreadable.
fn entries(root: &Path, host_dir: &str) -> Vec<String> {
    let dir = root.join(host_dir.trim_start_matches('/'));
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|list| {
            list.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Every check against `root`.
pub fn all(root: &Path) -> Vec<Finding> {
    let mut findings = Vec::new();

    // CPU frequency governor: every CPU's, which a VM may not expose at all.
    let cpus: Vec<String> = entries(root, "/sys/devices/system/cpu")
        .into_iter()
        .filter(|n| {
            n.strip_prefix("cpu")
                .is_some_and(|rest| rest.parse::<u32>().is_ok())
        })
        .collect();
    let governors: Vec<String> = cpus
        .iter()
        .filter_map(|cpu| {
            read(
                root,
                &format!("/sys/devices/system/cpu/{cpu}/cpufreq/scaling_governor"),
            )
        })
        .collect();
    let governor = if governors.is_empty() {
        None
    } else {
        let mut distinct = governors.clone();
        distinct.sort();
        distinct.dedup();
        Some(distinct.join(","))
    };
    findings.push(finding(
        "CPU frequency governor and C-states",
        "cpu scaling_governor",
        governor,
        "performance",
        |v| v == "performance",
    ));

    findings.push(finding(
        "Clock source",
        "clocksource",
        read(
            root,
            "/sys/devices/system/clocksource/clocksource0/current_clocksource",
        ),
        "tsc",
        |v| v == "tsc",
    ));

    findings.push(with_sysfs(
        finding(
            "Transparent huge pages",
            "transparent_hugepage/enabled",
            read(root, "/sys/kernel/mm/transparent_hugepage/enabled").map(|v| selected(&v)),
            "madvise (or never)",
            |v| v == "madvise" || v == "never",
        ),
        "/sys/kernel/mm/transparent_hugepage/enabled".to_string(),
        "madvise",
    ));

    let swap = "Swappiness and dirty pages";
    findings.push(sysctl(
        root,
        swap,
        "vm.swappiness",
        "1 (at most 10)",
        "1",
        at_most(10),
    ));
    findings.push(sysctl(
        root,
        swap,
        "vm.dirty_background_ratio",
        "5 (at most 10)",
        "5",
        at_most(10),
    ));
    findings.push(sysctl(
        root,
        "NUMA",
        "kernel.numa_balancing",
        "0 (Keel places memory per core itself)",
        "0",
        |v| v == "0",
    ));
    let buffers = "Socket buffers and backlog";
    findings.push(sysctl(
        root,
        buffers,
        "net.core.somaxconn",
        "4096 (at least 1024)",
        "4096",
        at_least(1024),
    ));
    for key in ["net.core.rmem_max", "net.core.wmem_max"] {
        findings.push(sysctl(
            root,
            buffers,
            key,
            "16777216 (at least 4 MiB)",
            "16777216",
            at_least(4 << 20),
        ));
    }
    findings.push(sysctl(
        root,
        "TCP for small latency-sensitive frames",
        "net.ipv4.tcp_autocorking",
        "0",
        "0",
        |v| v == "0",
    ));

    // Block devices that hold data (not loop, RAM or compressed-RAM devices).
    for device in entries(root, "/sys/block") {
        if ["loop", "ram", "zram"]
            .iter()
            .any(|prefix| device.starts_with(prefix))
        {
            continue;
        }
        let nvme = device.starts_with("nvme");
        let scheduler = format!("/sys/block/{device}/queue/scheduler");
        findings.push(with_sysfs(
            finding(
                "Disk scheduler, merges and queue depth",
                format!("{device} scheduler"),
                read(root, &scheduler).map(|v| selected(&v)),
                "none (NVMe); none or mq-deadline",
                move |v| v == "none" || (!nvme && v == "mq-deadline"),
            ),
            scheduler,
            "none",
        ));
        if nvme {
            let nomerges = format!("/sys/block/{device}/queue/nomerges");
            findings.push(with_sysfs(
                finding(
                    "Disk scheduler, merges and queue depth",
                    format!("{device} nomerges"),
                    read(root, &nomerges),
                    "2",
                    |v| v == "2",
                ),
                nomerges,
                "2",
            ));
        }
    }

    // Limits of the process running the check: run it as the user Keel runs as.
    let limits = read(root, "/proc/self/limits");
    findings.push(finding(
        "Memlock limit for io_uring",
        "max locked memory (soft)",
        limits
            .as_deref()
            .and_then(|l| soft_limit(l, "Max locked memory")),
        "unlimited (at least 64 MiB)",
        at_least(64 << 20),
    ));
    findings.push(finding(
        "Open-file limit",
        "max open files (soft)",
        limits
            .as_deref()
            .and_then(|l| soft_limit(l, "Max open files")),
        "1048576 (at least 65536)",
        at_least(65_536),
    ));
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_read_sysfs_shapes() {
        assert_eq!(selected("always [madvise] never"), "madvise");
        assert_eq!(selected("[none] mq-deadline"), "none");
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 1048576              files\n\
                      Max locked memory         unlimited            unlimited            bytes\n";
        assert_eq!(
            soft_limit(limits, "Max open files").as_deref(),
            Some("1024")
        );
        assert_eq!(
            soft_limit(limits, "Max locked memory").as_deref(),
            Some("unlimited")
        );
        assert!(at_least(10)("unlimited"));
        assert!(!at_most(10)("60"));
    }
}
