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

/// Every check against `root`, for Keel's data in `data_dir`.
pub fn all(root: &Path, data_dir: &Path) -> Vec<Finding> {
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

    // Interrupts: irqbalance either stopped or told to keep off Keel's cores.
    let processes: Vec<String> = entries(root, "/proc")
        .into_iter()
        .filter(|pid| pid.parse::<u32>().is_ok())
        .collect();
    let irqbalance_running = processes
        .iter()
        .any(|pid| read(root, &format!("/proc/{pid}/comm")).as_deref() == Some("irqbalance"));
    let banned = ["/etc/default/irqbalance", "/etc/sysconfig/irqbalance"]
        .iter()
        .filter_map(|path| read(root, path))
        .flat_map(|text| {
            text.lines()
                .map(str::trim)
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.strip_prefix("IRQBALANCE_BANNED_CPULIST="))
                .map(|v| v.trim_matches('"').to_string())
                .collect::<Vec<_>>()
        })
        .next();
    let irq_state = match (irqbalance_running, &banned) {
        (false, _) => "irqbalance not running".to_string(),
        (true, Some(list)) => format!("irqbalance banned from {list}"),
        (true, None) => "irqbalance on every core".to_string(),
    };
    findings.push(finding(
        "IRQ affinity and irqbalance versus the cores Keel pins",
        "irqbalance",
        (!processes.is_empty()).then_some(irq_state),
        "stopped, or banned from Keel's cores",
        |v| v != "irqbalance on every core",
    ));

    for (name, path) in [
        ("isolated cpus", "/sys/devices/system/cpu/isolated"),
        ("nohz_full cpus", "/sys/devices/system/cpu/nohz_full"),
    ] {
        findings.push(finding(
            "isolcpus and nohz_full",
            name,
            read(root, path).map(|v| if v.is_empty() { "none".to_string() } else { v }),
            "Keel's pinned cores (dedicated hosts)",
            |v| v != "none",
        ));
    }

    // NICs with their receive queues (physical or virtual; not loopback).
    let nics: Vec<String> = entries(root, "/sys/class/net")
        .into_iter()
        .filter(|nic| nic != "lo" && !nic.starts_with("ifb") && !nic.starts_with("veth"))
        .collect();
    if nics.is_empty() {
        findings.push(finding(
            "NIC queues (RSS, RPS, XPS) and interrupt coalescing",
            "network interfaces",
            None,
            "one rx queue per interrupt core (at least 2)",
            |_| false,
        ));
    }
    for nic in nics {
        let queues = entries(root, &format!("/sys/class/net/{nic}/queues"))
            .iter()
            .filter(|q| q.starts_with("rx-"))
            .count();
        findings.push(finding(
            "NIC queues (RSS, RPS, XPS) and interrupt coalescing",
            format!("{nic} rx queues"),
            (queues > 0).then(|| queues.to_string()),
            "one per interrupt core (at least 2)",
            at_least(2),
        ));
    }

    findings.push(sysctl(
        root,
        "Busy polling",
        "net.core.busy_poll",
        "0, or 50 on dedicated hosts",
        "0",
        |v| number(v).is_some_and(|n| n == 0 || n >= 50),
    ));

    findings.push(finding(
        "Polled I/O queues (IOPOLL)",
        "nvme poll_queues",
        read(root, "/sys/module/nvme/parameters/poll_queues"),
        "Keel's shard count (dedicated NVMe hosts)",
        |v| number(v).is_some_and(|n| n > 0),
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
    let devices: Vec<String> = entries(root, "/sys/block")
        .into_iter()
        .filter(|device| {
            !["loop", "ram", "zram"]
                .iter()
                .any(|prefix| device.starts_with(prefix))
        })
        .collect();
    if devices.is_empty() {
        findings.push(finding(
            "Disk scheduler, merges and queue depth",
            "block devices",
            None,
            "none (NVMe); none or mq-deadline",
            |_| false,
        ));
    }
    for device in devices {
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

    // The file system holding Keel's data (the mount covering it).
    let mounts = read(root, "/proc/self/mounts").unwrap_or_default();
    let data_dir = data_dir.to_string_lossy();
    let mount = mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, point, kind, options) = (
                fields.next()?,
                fields.next()?,
                fields.next()?,
                fields.next()?,
            );
            let covers = data_dir == point
                || point == "/"
                || data_dir.starts_with(&format!("{}/", point.trim_end_matches('/')));
            covers.then(|| (point.len(), format!("{kind} {options}")))
        })
        .max_by_key(|(length, _)| *length)
        .map(|(_, found)| found);
    findings.push(finding(
        "File system and mount options",
        format!("file system of {data_dir}"),
        mount,
        "xfs or ext4, noatime, barriers on",
        |v| {
            let mut parts = v.split_whitespace();
            let kind = parts.next().unwrap_or_default();
            let options = parts.next().unwrap_or_default();
            (kind == "xfs" || kind == "ext4")
                && options.split(',').any(|o| o == "noatime")
                && !options.split(',').any(|o| o == "nobarrier")
        },
    ));

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
