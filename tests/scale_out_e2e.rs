//! Clusters larger than their replication factor, as real broker processes on loopback:
//! six nodes, three replicas per data group. Each node holds only the groups placed on
//! it (its data directory says so), producers write to every partition with
//! acks=quorum through a kill -9 of a node, and every acknowledged record is read back
//! exactly once, in order.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel::client::{ClientError, ClusterClient};
use keel::controller::{GroupId, Placement};
use keel::protocol::codec::{encode_record_batch, BatchProducer, RecordData};
use keel::protocol::wire::Acks;
use support::{read_partition, retry, start_cluster_with};

const NODES: u32 = 6;
const PARTITIONS: u32 = 6;

fn batch_of(partition: u32, first: u64) -> (Vec<u8>, u32) {
    let records: Vec<RecordData> = (first..first + 5)
        .map(|n| RecordData {
            value: format!("p{partition}-{n}").into_bytes(),
            ..Default::default()
        })
        .collect();
    encode_record_batch(BatchProducer::default(), 0, &records)
}

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

#[test]
fn six_nodes_hold_three_replicas_each_and_lose_nothing_to_a_kill() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster_with(root.path(), NODES, 1, &["--replication-factor", "3"]);
    let bootstrap: Vec<String> = nodes.iter().map(|n| n.address(0)).collect();
    let bootstrap = bootstrap.join(",");
    let mut client = ClusterClient::new(&bootstrap);
    retry("create topic", || client.create_topic("wide", PARTITIONS));

    // Each node runs the controller (a voter or a learner) and only its data groups.
    let node_ids: Vec<u64> = (1..=u64::from(NODES)).collect();
    let placement = Placement::bootstrap(1, &node_ids, 3);
    for node in 1..=NODES {
        let placed: BTreeSet<u32> = placement
            .groups_on(u64::from(node), 0)
            .into_iter()
            .map(|g| g.0)
            .collect();
        let on_disk = groups_on_disk(&root.path().join(format!("node-{node}")));
        assert_eq!(on_disk, placed, "node {node}'s groups");
        assert!(placed.len() < placement.group_count() as usize);
    }
    let status = retry("every group led", || {
        let rows = client.cluster_status()?;
        let led: BTreeSet<u32> = rows
            .iter()
            .filter(|r| r.role == "leader")
            .map(|r| r.group)
            .collect();
        if led.len() == placement.group_count() as usize {
            Ok(rows)
        } else {
            Err(ClientError::Unexpected(format!(
                "not every group led: {rows:?}"
            )))
        }
    });
    for group in 1..placement.group_count() {
        let rows = status.iter().filter(|r| r.group == group).count();
        assert_eq!(rows, 3, "group {group} has three replicas: {status:?}");
    }
    let learners: BTreeSet<u32> = status
        .iter()
        .filter(|r| r.group == 0 && r.role == "learner")
        .map(|r| r.node)
        .collect();
    assert_eq!(
        learners,
        BTreeSet::from([4, 5, 6]),
        "the controller's learners"
    );

    // Producers on every partition; a node holding data groups is killed meanwhile.
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(u32, u64, u64)>>> = Arc::default();
    let maybe: Arc<Mutex<Vec<(u32, u64)>>> = Arc::default();
    let producer = {
        let (stop, acked, maybe, bootstrap) = (
            stop.clone(),
            acked.clone(),
            maybe.clone(),
            bootstrap.clone(),
        );
        std::thread::spawn(move || {
            let mut client = ClusterClient::new(&bootstrap);
            let mut next = vec![0u64; PARTITIONS as usize];
            while !stop.load(Ordering::Relaxed) {
                for partition in 0..PARTITIONS {
                    let first = next[partition as usize];
                    let (batch, crc) = batch_of(partition, first);
                    match client.produce("wide", partition, &batch, crc, Acks::Quorum) {
                        Ok(offset) => acked.lock().unwrap().push((partition, offset, first)),
                        Err(ClientError::Unacknowledged(_)) => {
                            maybe.lock().unwrap().push((partition, first))
                        }
                        Err(error) => panic!("produce to {partition} failed for good: {error}"),
                    }
                    next[partition as usize] += 5;
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(1000));
    let victim = (1..placement.group_count())
        .flat_map(|g| placement.replicas(GroupId(g)).to_vec())
        .find(|&node| node > 3)
        .expect("a data group on a node that is no controller voter");
    let before_kill = acked.lock().unwrap().len();
    nodes[victim as usize - 1].kill();
    std::thread::sleep(Duration::from_millis(2500));
    stop.store(true, Ordering::Relaxed);
    producer.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(before_kill > 10, "progress before the kill: {before_kill}");
    assert!(
        acked.len() > before_kill + 10,
        "progress after the kill: {before_kill} -> {}",
        acked.len()
    );

    // Every acknowledged batch is there, once, in order, on every partition.
    let mut client = ClusterClient::new(&bootstrap);
    let maybe = maybe.lock().unwrap().clone();
    for partition in 0..PARTITIONS {
        let stored = read_partition(&mut client, "wide", partition);
        let mine: Vec<_> = acked.iter().filter(|(p, ..)| *p == partition).collect();
        assert!(!mine.is_empty(), "partition {partition} took writes");
        for &&(_, offset, first) in &mine {
            for k in 0..5 {
                assert_eq!(
                    stored[(offset + k) as usize],
                    format!("p{partition}-{}", first + k),
                    "acknowledged record at {partition}/{}",
                    offset + k
                );
            }
        }
        let values: Vec<u64> = stored
            .iter()
            .map(|v| v.rsplit('-').next().unwrap().parse().unwrap())
            .collect();
        assert!(
            values.windows(2).all(|w| w[0] < w[1]),
            "once, in send order"
        );
        let unsure = maybe.iter().filter(|(p, _)| *p == partition).count();
        assert!(stored.len() >= mine.len() * 5 && stored.len() <= (mine.len() + unsure) * 5);
    }
}

/// Topics with another replication factor than the cluster's get a replica group of
/// their own, placed by the controller: one replica for `one`, five for `five`, on six
/// nodes. The group's files exist on exactly its nodes; it comes back after a restart of
/// its node (the node learns its groups from its controller replica); `five` takes
/// writes through a kill -9 of one of its nodes; a factor the cluster cannot give is
/// refused with a reason.
#[test]
fn topics_with_their_own_replication_factor_get_groups_of_their_own() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster_with(root.path(), NODES, 1, &["--replication-factor", "3"]);
    let bootstrap: Vec<String> = nodes.iter().map(|n| n.address(0)).collect();
    let bootstrap = bootstrap.join(",");
    let mut client = ClusterClient::new(&bootstrap);
    retry("create one", || client.create_topic_with("one", 2, 1));
    retry("create five", || client.create_topic_with("five", 2, 5));
    match client.create_topic_with("seven", 1, 7) {
        Err(ClientError::Broker { message, .. }) => {
            assert!(message.contains("1, 3 or 5"), "{message}")
        }
        other => panic!("a factor of 7 was not refused: {other:?}"),
    }
    let bootstrap_groups = Placement::bootstrap(1, &(1..=6).collect::<Vec<u64>>(), 3).group_count();
    let (one_group, five_group) = (bootstrap_groups, bootstrap_groups + 1);
    let holders = |group: u32| -> BTreeSet<u32> {
        (1..=NODES)
            .filter(|n| groups_on_disk(&root.path().join(format!("node-{n}"))).contains(&group))
            .collect()
    };
    let one_nodes = retry("one's group started", || {
        let held = holders(one_group);
        if held.len() == 1 {
            Ok(held)
        } else {
            Err(format!("one's group on {held:?}"))
        }
    });
    let five_nodes = retry("five's group started", || {
        let held = holders(five_group);
        if held.len() == 5 {
            Ok(held)
        } else {
            Err(format!("five's group on {held:?}"))
        }
    });

    let produce = |client: &mut ClusterClient, topic: &str, partition: u32, first: u64| {
        let (batch, crc) = batch_of(partition, first);
        retry("produce", || {
            client.produce(topic, partition, &batch, crc, Acks::Quorum)
        })
    };
    for partition in 0..2 {
        for round in 0..3 {
            produce(&mut client, "one", partition, round * 5);
            produce(&mut client, "five", partition, round * 5);
        }
    }
    // The node holding `one`'s only replica restarts; the group comes back with it.
    let one_node = *one_nodes.iter().next().unwrap() as usize;
    let restarted = nodes.remove(one_node - 1).restart();
    nodes.insert(one_node - 1, restarted);
    // A node of `five`'s group other than that one dies; `five` goes on.
    let victim = *five_nodes
        .iter()
        .find(|&&n| n as usize != one_node)
        .unwrap() as usize;
    nodes[victim - 1].kill();
    for partition in 0..2 {
        produce(&mut client, "five", partition, 15);
        produce(&mut client, "one", partition, 15);
    }
    let mut client = ClusterClient::new(&bootstrap);
    for topic in ["one", "five"] {
        for partition in 0..2 {
            let stored = read_partition(&mut client, topic, partition);
            let expected: Vec<String> = (0..20).map(|n| format!("p{partition}-{n}")).collect();
            assert_eq!(stored, expected, "{topic}/{partition}");
        }
    }
    // With its only replica down, `one`'s group is still listed: down, on that node.
    nodes[one_node - 1].kill();
    retry("one's group listed down", || {
        let status = client.cluster_status()?;
        let rows: Vec<(u32, String)> = status
            .iter()
            .filter(|r| r.group == one_group)
            .map(|r| (r.node, r.role.clone()))
            .collect();
        if rows == [(one_node as u32, "down".to_string())] {
            Ok(())
        } else {
            Err(ClientError::Unexpected(format!("one's group: {rows:?}")))
        }
    });
}

/// Leaderships spread over the nodes: six nodes of two shards, every group ends led by
/// the leader its placement prefers, and every node leads within one of the average.
#[test]
fn leaderships_spread_evenly_over_six_nodes() {
    let root = tempfile::tempdir().unwrap();
    let nodes = start_cluster_with(root.path(), NODES, 2, &["--leader-balance-delay", "200ms"]);
    let ids: Vec<u64> = (1..=u64::from(NODES)).collect();
    let placement = Placement::bootstrap(2, &ids, 3);
    let mut client = ClusterClient::new(&nodes[0].address(0));
    let leaders = retry("every group led by its preferred leader", || {
        let rows = client.cluster_status()?;
        let led: Vec<(u32, u32)> = rows
            .iter()
            .filter(|r| r.role == "leader")
            .map(|r| (r.group, r.node))
            .collect();
        let wanted: Vec<(u32, u32)> = placement
            .group_ids()
            .into_iter()
            .map(|g| (g.0, placement.preferred_leader(g).unwrap() as u32))
            .collect();
        if led == wanted {
            Ok(led)
        } else {
            Err(ClientError::Unexpected(format!(
                "led {led:?}, preferred {wanted:?}"
            )))
        }
    });
    let per_node: Vec<usize> = (1..=NODES)
        .map(|node| leaders.iter().filter(|(_, n)| *n == node).count())
        .collect();
    let (low, high) = (
        per_node.iter().min().unwrap(),
        per_node.iter().max().unwrap(),
    );
    assert!(high - low <= 1, "leaderships per node: {per_node:?}");
}

/// `keel topic create` while the controller elects a leader (its leader was just
/// killed) waits the election out (it was refused "NotLeader: this replica does not lead
/// the group"), and the CLI's --replication-factor gives the topic a group of its own.
#[test]
fn the_cli_creates_topics_while_the_controller_elects() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster_with(root.path(), 3, 1, &[]);
    let bootstrap: Vec<String> = nodes.iter().map(|n| n.address(0)).collect();
    let mut client = ClusterClient::new(&bootstrap.join(","));
    let leader = retry("a controller leader", || {
        let status = client.cluster_status()?;
        status
            .iter()
            .find(|r| r.group == 0 && r.role == "leader")
            .map(|r| r.node)
            .ok_or_else(|| ClientError::Unexpected(format!("{status:?}")))
    });
    nodes[leader as usize - 1].kill();
    let survivors: Vec<String> = (1..=3u32)
        .filter(|&n| n != leader)
        .map(|n| bootstrap[n as usize - 1].clone())
        .collect();
    let survivors = survivors.join(",");
    for (topic, factor) in [("early", None), ("single", Some("1"))] {
        let mut command = std::process::Command::new(support::keel_binary());
        command.args([
            "topic",
            "create",
            topic,
            "--partitions",
            "2",
            "--bootstrap",
            &survivors,
        ]);
        if let Some(factor) = factor {
            command.args(["--replication-factor", factor]);
        }
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "keel topic create {topic}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // The new group is placed on a node the controller's leader hears from, not on the
    // killed one.
    let mut client = ClusterClient::new(&survivors);
    retry("the single-replica group runs", || {
        let status = client.cluster_status()?;
        let groups: BTreeSet<u32> = status.iter().map(|r| r.group).collect();
        let single = *groups.iter().max().unwrap();
        let running = status
            .iter()
            .filter(|r| r.group == single && r.role != "down")
            .count();
        if groups.len() == 2 && running == 1 {
            Ok(())
        } else {
            Err(ClientError::Unexpected(format!("{status:?}")))
        }
    });
}
