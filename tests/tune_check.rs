//! `keel tune check` against fixture trees shaped like /proc and /sys (real directories
//! and files) for a well-tuned and a badly tuned host, and against this live host.

use std::path::Path;
use std::process::Command;

use keel::tune::{check, Finding, Status};

fn write(root: &Path, host_path: &str, text: &str) {
    let path = root.join(host_path.trim_start_matches('/'));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("{text}\n")).unwrap();
}

fn limits(open_files: &str, locked: &str) -> String {
    format!(
        "Limit                     Soft Limit           Hard Limit           Units\n\
         Max open files            {open_files:<20} 1048576              files\n\
         Max locked memory         {locked:<20} unlimited            bytes"
    )
}

/// A host tree; `tuned` picks the recommended value of every setting, else a common
/// default that differs.
fn host(root: &Path, tuned: bool) {
    let pick = |good: &str, bad: &'static str| {
        if tuned {
            good.to_string()
        } else {
            bad.to_string()
        }
    };
    for cpu in ["cpu0", "cpu1"] {
        write(
            root,
            &format!("/sys/devices/system/cpu/{cpu}/cpufreq/scaling_governor"),
            &pick("performance", "powersave"),
        );
    }
    write(root, "/sys/devices/system/cpu/online", "0-1");
    write(
        root,
        "/sys/devices/system/clocksource/clocksource0/current_clocksource",
        &pick("tsc", "hpet"),
    );
    write(
        root,
        "/sys/kernel/mm/transparent_hugepage/enabled",
        &pick("always [madvise] never", "[always] madvise never"),
    );
    write(root, "/proc/sys/vm/swappiness", &pick("1", "60"));
    write(
        root,
        "/proc/sys/vm/dirty_background_ratio",
        &pick("5", "20"),
    );
    write(root, "/proc/sys/kernel/numa_balancing", &pick("0", "1"));
    write(root, "/proc/sys/net/core/somaxconn", &pick("4096", "128"));
    write(
        root,
        "/proc/sys/net/core/rmem_max",
        &pick("16777216", "212992"),
    );
    write(
        root,
        "/proc/sys/net/core/wmem_max",
        &pick("16777216", "212992"),
    );
    write(root, "/proc/sys/net/ipv4/tcp_autocorking", &pick("0", "1"));
    write(
        root,
        "/sys/block/nvme0n1/queue/scheduler",
        &pick("[none] mq-deadline", "none [mq-deadline]"),
    );
    write(root, "/sys/block/nvme0n1/queue/nomerges", &pick("2", "0"));
    write(root, "/sys/block/loop0/queue/scheduler", "[none]");
    if !tuned {
        write(root, "/proc/1234/comm", "irqbalance");
    }
    write(root, "/proc/1/comm", "systemd");
    write(root, "/sys/devices/system/cpu/isolated", &pick("2-15", ""));
    write(root, "/sys/devices/system/cpu/nohz_full", &pick("2-15", ""));
    write(root, "/sys/class/net/eth0/queues/rx-0/rps_cpus", "0");
    if tuned {
        write(root, "/sys/class/net/eth0/queues/rx-1/rps_cpus", "0");
    }
    write(root, "/sys/class/net/lo/queues/rx-0/rps_cpus", "0");
    write(root, "/proc/sys/net/core/busy_poll", &pick("0", "10"));
    write(
        root,
        "/sys/module/nvme/parameters/poll_queues",
        &pick("2", "0"),
    );
    write(
        root,
        "/proc/self/mounts",
        &if tuned {
            "/dev/sda1 / ext4 rw,relatime 0 0\n/dev/nvme0n1 /var/lib/keel xfs rw,noatime 0 0"
                .to_string()
        } else {
            "/dev/sda1 / ext4 rw,relatime 0 0".to_string()
        },
    );
    write(
        root,
        "/proc/self/limits",
        &if tuned {
            limits("1048576", "unlimited")
        } else {
            limits("1024", "65536")
        },
    );
}

fn by_setting<'a>(findings: &'a [Finding], setting: &str) -> &'a Finding {
    findings
        .iter()
        .find(|f| f.setting == setting)
        .unwrap_or_else(|| panic!("no finding for {setting}: {findings:?}"))
}

const SETTINGS: [&str; 20] = [
    "cpu scaling_governor",
    "irqbalance",
    "isolated cpus",
    "nohz_full cpus",
    "eth0 rx queues",
    "net.core.busy_poll",
    "nvme poll_queues",
    "file system of /var/lib/keel",
    "clocksource",
    "transparent_hugepage/enabled",
    "vm.swappiness",
    "vm.dirty_background_ratio",
    "kernel.numa_balancing",
    "net.core.somaxconn",
    "net.core.rmem_max",
    "net.core.wmem_max",
    "net.ipv4.tcp_autocorking",
    "nvme0n1 scheduler",
    "nvme0n1 nomerges",
    "max open files (soft)",
];

#[test]
fn a_well_tuned_host_is_ok_everywhere() {
    let root = tempfile::tempdir().unwrap();
    host(root.path(), true);
    let findings = check(root.path());
    for setting in SETTINGS.iter().chain(["max locked memory (soft)"].iter()) {
        assert_eq!(
            by_setting(&findings, setting).status,
            Status::Ok,
            "{setting}"
        );
    }
    assert!(
        findings
            .iter()
            .all(|f| !f.setting.starts_with("loop") && !f.setting.starts_with("lo ")),
        "loop devices and the loopback interface are not checked"
    );
    assert_eq!(
        by_setting(&findings, "cpu scaling_governor").current,
        "performance"
    );
}

#[test]
fn a_badly_tuned_host_differs_everywhere_and_the_cli_says_so() {
    let root = tempfile::tempdir().unwrap();
    host(root.path(), false);
    let findings = check(root.path());
    for setting in SETTINGS.iter().chain(["max locked memory (soft)"].iter()) {
        assert_eq!(
            by_setting(&findings, setting).status,
            Status::Differs,
            "{setting}"
        );
    }
    assert_eq!(by_setting(&findings, "vm.swappiness").current, "60");
    assert_eq!(
        by_setting(&findings, "transparent_hugepage/enabled").current,
        "always"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["tune", "check", "--json", "--root"])
        .arg(root.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "some settings differ");
    let json = String::from_utf8(output.stdout).unwrap();
    assert!(json.starts_with('[') && json.trim_end().ends_with(']'));
    assert!(json.contains(
        "{\"section\":\"Swappiness and dirty pages\",\"setting\":\"vm.swappiness\",\"current\":\"60\""
    ));
}

#[test]
fn missing_files_are_unknown_not_errors() {
    let root = tempfile::tempdir().unwrap();
    let findings = check(root.path());
    assert!(!findings.is_empty());
    assert!(findings.iter().all(|f| f.status == Status::Unknown));
}

#[test]
fn the_live_host_is_checked_in_every_section() {
    let output = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["tune", "check", "--json"])
        .output()
        .unwrap();
    assert!(matches!(output.status.code(), Some(0) | Some(1)));
    let json = String::from_utf8(output.stdout).unwrap();
    // Every section of the guide that has a check reports on this host.
    let guide =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tuning/README.md")).unwrap();
    let checked: Vec<&str> = guide
        .lines()
        .filter(|l| l.starts_with("## ") && l.contains("[checked"))
        .map(|l| l[3..].split(" **[").next().unwrap())
        .collect();
    assert!(checked.len() >= 15, "{checked:?}");
    for section in checked {
        assert!(
            json.contains(&format!("\"section\":\"{section}\"")),
            "section {section:?} not reported:\n{json}"
        );
    }
    let output = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["tune", "check"])
        .output()
        .unwrap();
    let table = String::from_utf8(output.stdout).unwrap();
    for setting in [
        "cpu scaling_governor",
        "clocksource",
        "transparent_hugepage/enabled",
        "vm.swappiness",
        "kernel.numa_balancing",
        "net.core.somaxconn",
        "net.ipv4.tcp_autocorking",
        "max locked memory (soft)",
        "max open files (soft)",
    ] {
        assert!(table.contains(setting), "{setting} missing:\n{table}");
    }
}

/// Every file under `root`, with its contents (to see that nothing changed).
fn snapshot(root: &Path) -> Vec<(std::path::PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((path, text));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn apply_is_a_dry_run_until_asked_then_revert_puts_everything_back() {
    let root = tempfile::tempdir().unwrap();
    host(root.path(), false);
    let before = snapshot(root.path());
    let keel = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(args)
            .arg("--root")
            .arg(root.path())
            .output()
            .unwrap()
    };
    // Dry run: the exact commands, no change.
    let dry = keel(&["tune", "apply"]);
    assert!(dry.status.success());
    let text = String::from_utf8(dry.stdout).unwrap();
    assert!(text.contains("sysctl -w vm.swappiness=1"), "{text}");
    assert!(
        text.contains("echo none > /sys/block/nvme0n1/queue/scheduler"),
        "{text}"
    );
    assert!(text.contains("dry run"));
    assert_eq!(snapshot(root.path()), before, "a dry run changes nothing");

    // Applied: every setting with a file fix is as recommended, sysctls persisted.
    assert!(keel(&["tune", "apply", "--yes"]).status.success());
    let findings = check(root.path());
    for setting in [
        "transparent_hugepage/enabled",
        "vm.swappiness",
        "vm.dirty_background_ratio",
        "kernel.numa_balancing",
        "net.core.somaxconn",
        "net.core.rmem_max",
        "net.core.wmem_max",
        "net.ipv4.tcp_autocorking",
        "nvme0n1 scheduler",
        "nvme0n1 nomerges",
    ] {
        assert_eq!(
            by_setting(&findings, setting).status,
            Status::Ok,
            "{setting}"
        );
    }
    // What a file write cannot fix is left alone (and still reported).
    assert_eq!(
        by_setting(&findings, "max open files (soft)").status,
        Status::Differs
    );
    let persisted = std::fs::read_to_string(root.path().join("etc/sysctl.d/90-keel.conf")).unwrap();
    assert!(persisted.contains("vm.swappiness = 1"));

    // Reverted: the host is as it was.
    let dry = keel(&["tune", "revert"]);
    assert!(String::from_utf8(dry.stdout)
        .unwrap()
        .contains("sysctl -w vm.swappiness=60"));
    assert!(keel(&["tune", "revert", "--yes"]).status.success());
    let after: Vec<_> = snapshot(root.path())
        .into_iter()
        .map(|(path, text)| (path, text.trim().to_string()))
        .collect();
    let before: Vec<_> = before
        .into_iter()
        .map(|(path, text)| (path, text.trim().to_string()))
        .collect();
    // Sysfs choice files come back as the chosen word, which the kernel accepts.
    let normalize = |list: Vec<(std::path::PathBuf, String)>| {
        list.into_iter()
            .map(|(p, t)| {
                let chosen = t
                    .split_whitespace()
                    .find(|w| w.starts_with('['))
                    .map(|w| w.trim_matches(|c| c == '[' || c == ']').to_string())
                    .unwrap_or(t);
                (p, chosen)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(normalize(after), normalize(before));
    assert!(
        !keel(&["tune", "revert"]).status.success(),
        "nothing left to revert"
    );
}
