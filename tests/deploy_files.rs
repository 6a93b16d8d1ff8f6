//! The files of `deploy/` hold: the systemd unit passes `systemd-analyze verify` (with
//! its ExecStart pointed at the binary under test) and sets the tuning guide's limits; the
//! example configuration is one `keel broker --config` reads (every key known); the
//! Grafana dashboard is JSON whose every panel queries Keel's metrics.

mod support;

use std::path::Path;
use std::process::Command;

fn deploy(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(name)
}

#[test]
fn the_systemd_unit_verifies_and_sets_the_tuning_guides_limits() {
    let found = Command::new("systemd-analyze").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "this test needs systemd-analyze: apt-get install systemd (.ci/run does)"
    );
    let unit = std::fs::read_to_string(deploy("keel.service")).unwrap();
    for line in [
        "LimitMEMLOCK=infinity",
        "LimitNOFILE=1048576",
        "KillSignal=SIGTERM",
        "Restart=on-failure",
        "ExecStart=/usr/local/bin/keel broker --config /etc/keel/keel.toml",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit sets {line}");
    }
    let dir = tempfile::tempdir().unwrap();
    let tested = dir.path().join("keel.service");
    std::fs::write(
        &tested,
        unit.replace("/usr/local/bin/keel", &support::keel_binary()),
    )
    .unwrap();
    let verified = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&tested)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );
    assert!(verified.status.success(), "systemd-analyze verify: {said}");
    assert!(
        !said.contains("keel.service:"),
        "systemd-analyze has remarks on the unit: {said}"
    );
}

#[test]
fn the_example_configuration_reads_and_names_every_port() {
    let config = keel::config::ConfigFile::read(&deploy("keel.toml.example"))
        .unwrap_or_else(|e| panic!("deploy/keel.toml.example: {e}"));
    assert_eq!(config.metrics_port, Some(9900));
    assert_eq!(config.port, Some(9700));
    assert_eq!(config.peer_port, Some(9800));
    assert!(config.peers.is_some() && config.peer_secret_file.is_some());
}

#[test]
fn every_dashboard_panel_queries_keels_metrics() {
    let text = std::fs::read_to_string(deploy("grafana-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let panels = dashboard["panels"].as_array().expect("panels");
    for title in [
        "Produce latency",
        "Leaders per node",
        "Follower lag",
        "Flush latency",
        "Elections",
    ] {
        assert!(
            panels
                .iter()
                .any(|p| p["title"].as_str().is_some_and(|t| t.starts_with(title))),
            "a panel for {title}"
        );
    }
    for panel in panels {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{panel}");
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            assert!(expr.contains("keel_"), "{expr}");
        }
    }
}
