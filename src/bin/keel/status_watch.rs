//! `keel cluster status --watch`: the cluster's groups refreshed every interval, one line
//! per group (its leader, term, commit index, produce rate and follower lag), until
//! Ctrl-C. On a terminal the screen is redrawn; piped, each refresh is a block of its own.
//!
//! Owns the rates between refreshes; reads nothing but `cluster_status` answers.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use keel::client::GroupStatus;

use super::{fail, ConnectArgs};

/// A group's line, from the replicas' rows.
#[derive(Debug, PartialEq)]
struct GroupLine {
    group: u32,
    /// The replica leading, if one said it leads.
    leader: Option<u32>,
    term: u64,
    commit: u64,
    /// Records stored, the most any replica applied.
    records: u64,
    /// (follower, entries behind) as the leader sees them.
    lag: Vec<(u32, u64)>,
    /// Replicas that did not answer.
    down: Vec<u32>,
}

fn group_lines(rows: &[GroupStatus]) -> Vec<GroupLine> {
    let mut by_group: BTreeMap<u32, Vec<&GroupStatus>> = BTreeMap::new();
    for row in rows {
        by_group.entry(row.group).or_default().push(row);
    }
    by_group
        .into_iter()
        .map(|(group, replicas)| {
            let leader = replicas.iter().find(|r| r.role == "leader");
            let source = leader
                .or_else(|| replicas.iter().max_by_key(|r| r.applied))
                .copied();
            // The most any replica applied: a new leader still applying its predecessor's
            // entries would read as a drop, then a burst.
            let records = replicas.iter().map(|r| r.records).max().unwrap_or(0);
            GroupLine {
                group,
                leader: leader.map(|r| r.node),
                term: replicas.iter().map(|r| r.term).max().unwrap_or(0),
                commit: source.map_or(0, |r| r.commit),
                records,
                lag: leader.map_or_else(Vec::new, |r| {
                    r.followers.iter().map(|&(n, _, lag)| (n, lag)).collect()
                }),
                down: replicas
                    .iter()
                    .filter(|r| r.role == "down")
                    .map(|r| r.node)
                    .collect(),
            }
        })
        .collect()
}

/// Records per second between two refreshes (a deleted topic lowers the count: 0).
fn rate(now: u64, before: Option<u64>, elapsed: Duration) -> f64 {
    match before {
        Some(before) if now >= before && elapsed > Duration::ZERO => {
            (now - before) as f64 / elapsed.as_secs_f64()
        }
        _ => 0.0,
    }
}

fn render(lines: &[GroupLine], before: &BTreeMap<u32, u64>, elapsed: Duration) -> String {
    let mut out = format!(
        "{:>5} {:>6} {:>6} {:>12} {:>12}  follower lag (node:entries)\n",
        "group", "leader", "term", "commit", "records/s"
    );
    for line in lines {
        let leader = line
            .leader
            .map_or_else(|| "none".to_string(), |n| n.to_string());
        let lag: Vec<String> = line.lag.iter().map(|(n, l)| format!("{n}:{l}")).collect();
        let down = if line.down.is_empty() {
            String::new()
        } else {
            format!("  down: {:?}", line.down)
        };
        out.push_str(&format!(
            "{:>5} {:>6} {:>6} {:>12} {:>12.0}  {}{down}\n",
            line.group,
            leader,
            line.term,
            line.commit,
            rate(line.records, before.get(&line.group).copied(), elapsed),
            lag.join(" ")
        ));
    }
    out
}

/// Shortest refresh interval: each refresh asks every shard of the cluster.
const MIN_WATCH_INTERVAL: Duration = Duration::from_millis(200);

/// Refreshes the status every `interval` until the process is interrupted; a refresh that
/// fails (the node asked being restarted, say) is reported and the next one tried.
pub fn watch(connect: &ConnectArgs, interval: Duration) -> ExitCode {
    if interval < MIN_WATCH_INTERVAL {
        return fail(
            "cluster status --watch",
            format!("--interval must be at least {MIN_WATCH_INTERVAL:?}"),
        );
    }
    let mut client = connect.client();
    let terminal = std::io::stdout().is_terminal();
    let mut before: BTreeMap<u32, u64> = BTreeMap::new();
    let mut last = Instant::now();
    loop {
        let rows = match client.cluster_status() {
            Ok(rows) => rows,
            Err(error) => {
                eprintln!("keel cluster status --watch: {error} (trying again)");
                std::thread::sleep(interval);
                continue;
            }
        };
        let now = Instant::now();
        let lines = group_lines(&rows);
        let screen = render(&lines, &before, now - last);
        let stamp = time::OffsetDateTime::now_utc();
        if terminal {
            print!("\x1b[2J\x1b[H");
        }
        println!(
            "keel cluster status --watch ({:02}:{:02}:{:02} UTC, every {:?}; Ctrl-C stops)\n{screen}",
            stamp.hour(),
            stamp.minute(),
            stamp.second(),
            interval
        );
        before = lines.iter().map(|l| (l.group, l.records)).collect();
        last = now;
        std::thread::sleep(interval.saturating_sub(now.elapsed()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(node: u32, role: &str, records: u64, followers: Vec<(u32, u64, u64)>) -> GroupStatus {
        GroupStatus {
            node,
            group: 1,
            role: role.to_string(),
            leader: 2,
            term: 4,
            commit: 90,
            applied: 90,
            last_index: 95,
            durable: 95,
            followers,
            members: vec![1, 2, 3],
            records,
        }
    }

    #[test]
    fn a_group_line_takes_the_leaders_view_and_the_rate_its_records() {
        let rows = vec![
            row(1, "follower", 100, Vec::new()),
            row(2, "leader", 120, vec![(1, 90, 5), (3, 0, 95)]),
            row(3, "down", 0, Vec::new()),
        ];
        let lines = group_lines(&rows);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].leader, Some(2));
        assert_eq!(lines[0].records, 120);
        let mut behind = rows.clone();
        behind[0].records = 130; // a follower applied more than the leader reported
        assert_eq!(group_lines(&behind)[0].records, 130);
        assert_eq!(lines[0].lag, vec![(1, 5), (3, 95)]);
        assert_eq!(lines[0].down, vec![3]);
        let before = BTreeMap::from([(1, 20)]);
        let screen = render(&lines, &before, Duration::from_millis(500));
        assert!(screen.contains("  1:5 3:95  down: [3]"), "{screen}");
        assert!(screen.contains("          200  "), "{screen}");
        assert_eq!(rate(10, Some(20), Duration::from_secs(1)), 0.0);
    }
}
