//! Replica moves between broker processes on loopback: four nodes, three replicas per
//! data group, so each group has a node it can move to. `keel cluster move` moves a
//! replica (its leader's, so leadership moves first) while idempotent producers write
//! with acks=quorum: the producers see no error, every acknowledged record is read back
//! once and in order, the group ends on its new nodes, and the node it left deletes its
//! files.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use keel::client::{ClientError, ClusterClient, GroupStatus};
use keel::controller::{GroupId, Placement};
use support::writers::{check_every_acknowledged_record, Writers};
use support::{keel_binary, retry, start_cluster, start_cluster_with};

const NODES: u32 = 4;
const PARTITIONS: u32 = 2;
const TOPIC: &str = "moving";

/// The groups whose files a node's data directory holds.
fn groups_on_disk(node_dir: &std::path::Path) -> BTreeSet<u32> {
    std::fs::read_dir(node_dir)
        .unwrap()
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_prefix("group-")?.parse().ok()
        })
        .collect()
}

/// `group`'s rows of `keel cluster status` once it has a leader and `count` replicas.
fn group_rows(client: &mut ClusterClient, group: u32, count: usize) -> Vec<GroupStatus> {
    retry("the group settled", || {
        let rows: Vec<GroupStatus> = client
            .cluster_status()?
            .into_iter()
            .filter(|r| r.group == group && r.role != "down")
            .collect();
        let leaders = rows.iter().filter(|r| r.role == "leader").count();
        if leaders == 1 && rows.len() == count {
            Ok(rows)
        } else {
            Err(ClientError::Unexpected(format!("not settled: {rows:?}")))
        }
    })
}

/// A cluster of `NODES` nodes with the topic created: the nodes, the bootstrap list, a
/// client, the node ids and the placement every node computes.
struct Cluster {
    nodes: Vec<support::Broker>,
    bootstrap: String,
    client: ClusterClient,
    node_ids: Vec<u64>,
    placement: Placement,
}

fn cluster_with_topic(root: &std::path::Path) -> Cluster {
    cluster_with_topic_and(root, NODES, &[])
}

/// `cluster_with_topic` of `count` nodes with `extra` flags for each.
fn cluster_with_topic_and(root: &std::path::Path, count: u32, extra: &[&str]) -> Cluster {
    let nodes = if extra.is_empty() {
        start_cluster(root, count, 1)
    } else {
        start_cluster_with(root, count, 1, extra)
    };
    let bootstrap: Vec<String> = nodes.iter().map(|n| n.address(0)).collect();
    let bootstrap = bootstrap.join(",");
    let mut client = ClusterClient::new(&bootstrap);
    retry("create topic", || client.create_topic(TOPIC, PARTITIONS));
    let node_ids: Vec<u64> = (1..=u64::from(count)).collect();
    let placement = Placement::bootstrap(1, &node_ids, 3);
    Cluster {
        nodes,
        bootstrap,
        client,
        node_ids,
        placement,
    }
}

/// Runs `keel cluster move`; its output.
fn keel_cluster_move(bootstrap: &str, group: u32, from: u64, to: u64) -> std::process::Output {
    Command::new(keel_binary())
        .args(["cluster", "move", "--bootstrap", bootstrap])
        .args(["--group", &group.to_string()])
        .args(["--from", &from.to_string(), "--to", &to.to_string()])
        .args(["--timeout", "60s"])
        .output()
        .expect("run keel cluster move")
}

#[test]
fn a_leaders_replica_moves_to_another_node_while_producers_write_and_nothing_is_lost() {
    let root = tempfile::tempdir().unwrap();
    let Cluster {
        mut nodes,
        bootstrap,
        mut client,
        node_ids,
        placement,
    } = cluster_with_topic(root.path());
    let group = 1;
    let members: BTreeSet<u64> = placement.members(GroupId(group)).into_iter().collect();
    let to = *node_ids.iter().find(|n| !members.contains(n)).unwrap();
    let rows = group_rows(&mut client, group, 3);
    let from = u64::from(rows.iter().find(|r| r.role == "leader").unwrap().node);

    let writers = Writers::start(&bootstrap, TOPIC, PARTITIONS);
    std::thread::sleep(Duration::from_millis(1000));
    let before = writers.acked_count();
    let moved = keel_cluster_move(&bootstrap, group, from, to);
    let during = writers.acked_count() - before;
    std::thread::sleep(Duration::from_millis(1000));
    let (acked, errors) = writers.stop();
    let output = String::from_utf8_lossy(&moved.stdout).into_owned()
        + &String::from_utf8_lossy(&moved.stderr);
    println!("{output}");
    assert!(
        moved.status.success(),
        "keel cluster move failed:\n{output}"
    );
    assert!(output.contains("replica moved"), "{output}");
    assert!(errors.is_empty(), "the producers saw errors: {errors:?}");
    assert!(during > 10, "writes went on during the move: {during}");

    // The group runs on its new nodes, one of them leading; the old node let it go.
    let rows = group_rows(&mut client, group, 3);
    let now: BTreeSet<u64> = rows.iter().map(|r| u64::from(r.node)).collect();
    let mut expected = members.clone();
    expected.remove(&from);
    expected.insert(to);
    assert_eq!(now, expected, "{rows:?}");
    let from_dir = root.path().join(format!("node-{from}"));
    retry("the old replica's files deleted", || {
        let on_disk = groups_on_disk(&from_dir);
        if on_disk.contains(&group) {
            Err(format!("node {from} still holds {on_disk:?}"))
        } else {
            Ok(())
        }
    });
    assert!(groups_on_disk(&root.path().join(format!("node-{to}"))).contains(&group));
    assert!(
        from_dir.join(format!("group-{group}.left")).exists(),
        "the old node marks the group left before deleting its files"
    );
    check_every_acknowledged_record(&bootstrap, TOPIC, PARTITIONS, &acked);

    // Restarted, the old node does not bring the group back; the new one rejoins it.
    for node in [from, to] {
        let broker = nodes.remove(node as usize - 1);
        nodes.insert(node as usize - 1, broker.restart());
    }
    let rows = group_rows(&mut client, group, 3);
    let now: BTreeSet<u64> = rows.iter().map(|r| u64::from(r.node)).collect();
    assert_eq!(now, expected, "after the restarts: {rows:?}");
    assert!(!groups_on_disk(&from_dir).contains(&group));
    check_every_acknowledged_record(&bootstrap, TOPIC, PARTITIONS, &acked);
}

/// The controller's leader, also holding a replica of the group, is killed (kill -9)
/// while its replica is moved away, and so is the `keel cluster move` doing it; asked
/// again, the move resumes from where the group is and ends. The killed node, started
/// again, no longer holds the group. Producers see no error; nothing acknowledged is lost.
#[test]
fn a_move_interrupted_by_a_kill_of_the_controllers_leader_and_of_the_mover_resumes() {
    let root = tempfile::tempdir().unwrap();
    let Cluster {
        mut nodes,
        bootstrap,
        mut client,
        node_ids,
        placement,
    } = cluster_with_topic(root.path());
    let controller_rows = group_rows(&mut client, 0, NODES as usize);
    let leader = u64::from(
        controller_rows
            .iter()
            .find(|r| r.role == "leader")
            .unwrap()
            .node,
    );
    let group = (1..placement.group_count())
        .find(|&g| placement.members(GroupId(g)).contains(&leader))
        .expect("a data group on the controller's leader");
    let members: BTreeSet<u64> = placement.members(GroupId(group)).into_iter().collect();
    let to = *node_ids.iter().find(|n| !members.contains(n)).unwrap();
    group_rows(&mut client, group, 3);

    let writers = Writers::start(&bootstrap, TOPIC, PARTITIONS);
    std::thread::sleep(Duration::from_millis(500));
    // The mover starts; at its first step both it and the controller's leader die.
    let mut mover = Command::new(keel_binary())
        .args(["cluster", "move", "--bootstrap", &bootstrap])
        .args(["--group", &group.to_string()])
        .args(["--from", &leader.to_string(), "--to", &to.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run keel cluster move");
    let mut first_line = String::new();
    let mut stdout = std::io::BufReader::new(mover.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut stdout, &mut first_line).unwrap();
    nodes[leader as usize - 1].kill();
    let _ = mover.kill();
    let _ = mover.wait();

    let moved = keel_cluster_move(&bootstrap, group, leader, to);
    let output = String::from_utf8_lossy(&moved.stdout).into_owned()
        + &String::from_utf8_lossy(&moved.stderr);
    println!("first mover: {first_line}second mover:\n{output}");
    assert!(
        moved.status.success(),
        "keel cluster move failed:\n{output}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let (acked, errors) = writers.stop();
    // A request in flight to the killed node is unacknowledged (then sent again with
    // the same sequence, and stored once); nothing else goes wrong.
    let other: Vec<_> = errors
        .iter()
        .filter(|e| !e.contains("unacknowledged"))
        .collect();
    assert!(other.is_empty(), "the producers saw errors: {errors:?}");

    let mut expected = members.clone();
    expected.remove(&leader);
    expected.insert(to);
    let rows = group_rows(&mut client, group, 3);
    let now: BTreeSet<u64> = rows.iter().map(|r| u64::from(r.node)).collect();
    assert_eq!(now, expected, "{rows:?}");
    check_every_acknowledged_record(&bootstrap, TOPIC, PARTITIONS, &acked);

    // Started again, the old leader learns from the controller that the group left it.
    let broker = nodes.remove(leader as usize - 1);
    nodes.insert(leader as usize - 1, broker.restart());
    let leader_dir = root.path().join(format!("node-{leader}"));
    retry("the old replica's files deleted", || {
        let on_disk = groups_on_disk(&leader_dir);
        if on_disk.contains(&group) {
            Err(format!("node {leader} still holds {on_disk:?}"))
        } else {
            Ok(())
        }
    });
    let rows = group_rows(&mut client, group, 3);
    let now: BTreeSet<u64> = rows.iter().map(|r| u64::from(r.node)).collect();
    assert_eq!(now, expected, "after the restart: {rows:?}");
    check_every_acknowledged_record(&bootstrap, TOPIC, PARTITIONS, &acked);
}

/// `keel node drain` moves every data replica off a node while producers write: the
/// dry run lists the moves, the drain makes them, the node ends holding only the
/// controller, a second drain finds nothing to move, and nothing acknowledged is lost.
#[test]
fn draining_a_node_moves_every_replica_off_it_while_producers_write() {
    let root = tempfile::tempdir().unwrap();
    let Cluster {
        nodes: _nodes,
        bootstrap,
        mut client,
        node_ids,
        placement,
    } = cluster_with_topic(root.path());
    // The node holding the most data groups.
    let victim = *node_ids
        .iter()
        .max_by_key(|&&n| {
            (1..placement.group_count())
                .filter(|&g| placement.members(GroupId(g)).contains(&n))
                .count()
        })
        .unwrap();
    let victim_dir = root.path().join(format!("node-{victim}"));
    let held: BTreeSet<u32> = groups_on_disk(&victim_dir)
        .into_iter()
        .filter(|&g| g != 0)
        .collect();
    assert!(!held.is_empty());
    for group in 1..placement.group_count() {
        group_rows(&mut client, group, 3);
    }

    let drain = |extra: &[&str]| {
        let output = Command::new(keel_binary())
            .args([
                "node",
                "drain",
                &victim.to_string(),
                "--bootstrap",
                &bootstrap,
            ])
            .args(extra)
            .output()
            .expect("run keel node drain");
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "keel node drain failed:\n{text}");
        text
    };
    // A controller voter's vote moves too (its controller replica stays, a learner).
    let vote = usize::from(placement.replicas(GroupId(0)).contains(&victim));
    let dry = drain(&["--dry-run"]);
    assert!(
        dry.contains(&format!("{} move(s) planned", held.len() + vote)),
        "{dry}"
    );
    assert_eq!(
        groups_on_disk(&victim_dir).len(),
        held.len() + 1,
        "a dry run moves nothing"
    );

    let writers = Writers::start(&bootstrap, TOPIC, PARTITIONS);
    std::thread::sleep(Duration::from_millis(500));
    let text = drain(&[]);
    println!("{text}");
    std::thread::sleep(Duration::from_millis(500));
    let (acked, errors) = writers.stop();
    assert!(errors.is_empty(), "the producers saw errors: {errors:?}");
    assert!(
        text.contains(&format!("{} replica(s) moved", held.len() + vote)),
        "{text}"
    );

    for &group in &held {
        let rows = group_rows(&mut client, group, 3);
        assert!(
            rows.iter().all(|r| u64::from(r.node) != victim),
            "group {group} left node {victim}: {rows:?}"
        );
    }
    retry("the drained node's files deleted", || {
        let on_disk = groups_on_disk(&victim_dir);
        if on_disk == BTreeSet::from([0]) {
            Ok(())
        } else {
            Err(format!("node {victim} still holds {on_disk:?}"))
        }
    });
    assert!(drain(&[]).contains("0 replica(s) moved"));
    check_every_acknowledged_record(&bootstrap, TOPIC, PARTITIONS, &acked);

    // The status says it drains; a node holding data cannot be removed; the drained one
    // can come back, or (drained again) be removed, its controller replica with it.
    let keel = |args: &[&str]| {
        let output = Command::new(keel_binary())
            .args(args)
            .args(["--bootstrap", &bootstrap])
            .output()
            .expect("run keel");
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        (output.status.success(), text)
    };
    let (_, status) = keel(&["cluster", "status"]);
    assert!(
        status.contains(&format!("nodes draining: [{victim}]")),
        "{status}"
    );
    let holder = *placement
        .members(GroupId(1))
        .iter()
        .find(|&&n| n != victim)
        .unwrap();
    let (removed, text) = keel(&["node", "remove", &holder.to_string()]);
    assert!(!removed, "{text}");
    assert!(
        text.contains("drain it first") || text.contains("voter of the controller group"),
        "{text}"
    );
    let (active, text) = keel(&["node", "activate", &victim.to_string()]);
    assert!(active && text.contains("is active"), "{text}");
    let (_, status) = keel(&["cluster", "status"]);
    assert!(!status.contains("nodes draining"), "{status}");
    assert!(drain(&[]).contains("0 replica(s) moved"));
    let (removed, text) = keel(&["node", "remove", &victim.to_string()]);
    assert!(removed && text.contains("removed"), "{text}");
    retry(
        "the removed node's controller replica gone",
        || match groups_on_disk(&victim_dir).is_empty() {
            true => Ok(()),
            false => Err(format!("{:?}", groups_on_disk(&victim_dir))),
        },
    );
}

/// A move whose new replica cannot catch up (its node is stopped, SIGSTOP) shows in
/// `keel cluster status` as under way; once the node runs again, the move asked again
/// ends, and the status lists no move.
#[test]
fn a_move_under_way_shows_in_the_status_and_ends_once_its_node_runs() {
    let root = tempfile::tempdir().unwrap();
    let Cluster {
        nodes,
        bootstrap,
        mut client,
        node_ids,
        placement,
    } = cluster_with_topic(root.path());
    let group = 1;
    let members: BTreeSet<u64> = placement.members(GroupId(group)).into_iter().collect();
    let to = *node_ids.iter().find(|n| !members.contains(n)).unwrap();
    let from = *members.iter().max().unwrap();
    group_rows(&mut client, group, 3);
    // Status asked of a node that runs (the stopped one would not answer).
    let ask = nodes
        .iter()
        .enumerate()
        .find(|(i, _)| *i as u64 + 1 != to)
        .map(|(_, n)| n.address(0))
        .unwrap();

    nodes[to as usize - 1].signal("STOP");
    let mover_log = root.path().join("mover.txt");
    let mut mover = Command::new(keel_binary())
        .args(["cluster", "move", "--bootstrap", &ask])
        .args(["--group", &group.to_string()])
        .args(["--from", &from.to_string(), "--to", &to.to_string()])
        .env("KEEL_LOG", "keel=debug")
        .stdout(std::fs::File::create(&mover_log).unwrap())
        .stderr(std::fs::File::create(root.path().join("mover.err")).unwrap())
        .spawn()
        .expect("run keel cluster move");
    let started = std::time::Instant::now();
    let status = retry("the move listed as under way", || {
        let output = Command::new(keel_binary())
            .args(["cluster", "status", "--bootstrap", &ask])
            .output()
            .expect("run keel cluster status");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let line = format!("group    {group}: node {from} -> node {to}");
        if text.contains("moves under way:") && text.contains(&line) {
            Ok(text)
        } else {
            let mover = std::fs::read_to_string(&mover_log).unwrap_or_default();
            let errors = std::fs::read_to_string(root.path().join("mover.err")).unwrap_or_default();
            let tail: String = errors.lines().rev().take(15).collect::<Vec<_>>().join("\n");
            Err(format!(
                "after {:?}:\n{text}\nthe mover said:\n{mover}\n{tail}",
                started.elapsed()
            ))
        }
    });
    println!("{status}");
    let _ = mover.kill();
    let _ = mover.wait();

    nodes[to as usize - 1].signal("CONT");
    let moved = keel_cluster_move(&bootstrap, group, from, to);
    let output = String::from_utf8_lossy(&moved.stdout).into_owned()
        + &String::from_utf8_lossy(&moved.stderr);
    assert!(
        moved.status.success(),
        "keel cluster move failed:\n{output}"
    );
    let rows = group_rows(&mut client, group, 3);
    let now: BTreeSet<u64> = rows.iter().map(|r| u64::from(r.node)).collect();
    let mut expected = members.clone();
    expected.remove(&from);
    expected.insert(to);
    assert_eq!(now, expected, "{rows:?}");
    assert!(client.moves_under_way().unwrap().is_empty());
}

/// The nodes holding `group`'s three replicas.
fn members_of(client: &mut ClusterClient, group: u32) -> BTreeSet<u64> {
    group_rows(client, group, 3)
        .iter()
        .map(|r| u64::from(r.node))
        .collect()
}

/// The catch-up budget bounds a stall, not the catch-up: a move to a node that stopped
/// (SIGSTOP) rolls back once its learner's lag set no new low for `--catch-up-timeout`,
/// and a move whose catch-up takes several times that budget, paced but steady, ends
/// (to another node: a node never takes back a group it was in, so five nodes).
#[test]
fn a_stalled_catch_up_rolls_back_and_a_slow_steady_one_ends() {
    let root = tempfile::tempdir().unwrap();
    // 2 MiB/s to a learner: about 16 MiB of log takes about 8 s to copy.
    let Cluster {
        nodes,
        bootstrap,
        mut client,
        node_ids,
        ..
    } = cluster_with_topic_and(root.path(), 5, &["--learner-rate", "2MiB"]);
    let filled = Command::new(keel_binary())
        .args([
            "bench",
            "produce",
            "--bootstrap",
            &bootstrap,
            "--topic",
            TOPIC,
        ])
        .args([
            "--rate",
            "64",
            "--duration",
            "1s",
            "--record-bytes",
            "32KiB",
        ])
        .args(["--records-per-request", "8", "--acks", "quorum"])
        .output()
        .expect("run keel bench produce");
    assert!(filled.status.success(), "{filled:?}");
    // The group that took the writes: the data group whose leader's log is longest.
    let rows = client.cluster_status().unwrap();
    let leader = rows
        .iter()
        .filter(|r| r.group != 0 && r.role == "leader")
        .max_by_key(|r| r.last_index)
        .unwrap();
    let group = leader.group;
    let members: BTreeSet<u64> = members_of(&mut client, group);
    let spares: Vec<u64> = node_ids
        .iter()
        .copied()
        .filter(|n| !members.contains(n))
        .collect();
    // The stopped node must not lead the controller group: a stopped process still
    // accepts connections, and the mover's records would wait for the client's timeout.
    let controller_leader = rows
        .iter()
        .find(|r| r.group == 0 && r.role == "leader")
        .map(|r| u64::from(r.node));
    let (stopped, to) = if Some(spares[0]) == controller_leader {
        (spares[1], spares[0])
    } else {
        (spares[0], spares[1])
    };
    let from = *members
        .iter()
        .find(|&&n| n != u64::from(leader.node))
        .unwrap();
    let move_with_budget = |ask: &str, to: u64| {
        let output = Command::new(keel_binary())
            .args(["cluster", "move", "--bootstrap", ask])
            .args(["--group", &group.to_string()])
            .args(["--from", &from.to_string(), "--to", &to.to_string()])
            .args(["--catch-up-timeout", "3s", "--timeout", "120s"])
            .output()
            .expect("run keel cluster move");
        let said = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        println!("{said}");
        (output.status.success(), said)
    };
    // Asked of a node that runs (the stopped one would not answer).
    let ask = nodes[from as usize - 1].address(0);

    nodes[stopped as usize - 1].signal("STOP");
    let started = std::time::Instant::now();
    let (moved, said) = move_with_budget(&ask, stopped);
    nodes[stopped as usize - 1].signal("CONT");
    assert!(!moved, "a move to a stopped node ended: {said}");
    assert!(said.contains("the move rolled back"), "{said}");
    assert!(started.elapsed() < Duration::from_secs(60), "{said}");
    let now: BTreeSet<u64> = members_of(&mut client, group);
    assert_eq!(now, members, "the group is as before the move");
    assert!(client.moves_under_way().unwrap().is_empty());

    let started = std::time::Instant::now();
    let (moved, said) = move_with_budget(&ask, to);
    let took = started.elapsed();
    assert!(moved, "a paced move making progress rolled back: {said}");
    assert!(
        took > Duration::from_secs(6),
        "the catch-up took {took:?}: not twice the 3 s budget, the test proves nothing"
    );
    let now: BTreeSet<u64> = members_of(&mut client, group);
    let mut expected = members.clone();
    expected.remove(&from);
    expected.insert(to);
    assert_eq!(now, expected);
    assert!(
        said.contains(&format!("node {to} at index")),
        "progress printed: {said}"
    );
}
