//! Growing a running cluster: three nodes bootstrapped with `--peers`, three more started
//! with `--join` while idempotent producers write with acks=quorum, then `keel cluster
//! rebalance`. The producers see no error, every acknowledged record is read back once
//! and in order, and every node ends within one of the average number of replicas and
//! of leaderships. A node that joined restarts from what its join recorded.

mod support;

use std::collections::BTreeMap;
use std::process::Command;

use keel::client::{ClientError, ClusterClient, GroupStatus};
use support::writers::Writers;
use support::{join_node, keel_binary, peer_secret_file, retry, start_cluster};

const SHARDS: u32 = 3;
const PARTITIONS: u32 = 6;
const TOPIC: &str = "growing";

/// Voter replicas and leaderships per node, from `keel cluster status` rows (a learner
/// holds a copy but takes no part in the group's quorum; nodes without any count 0).
fn replicas_and_leaders(rows: &[GroupStatus], nodes: u32) -> (Vec<u32>, Vec<u32>) {
    let mut replicas: BTreeMap<u32, u32> = (1..=nodes).map(|n| (n, 0)).collect();
    let mut leaders = replicas.clone();
    for row in rows {
        if matches!(row.role.as_str(), "leader" | "follower") {
            *replicas.entry(row.node).or_default() += 1;
        }
        if row.role == "leader" {
            *leaders.entry(row.node).or_default() += 1;
        }
    }
    (
        replicas.into_values().collect(),
        leaders.into_values().collect(),
    )
}

/// Every count within one of their average.
fn within_one_of_average(counts: &[u32]) -> bool {
    let average = f64::from(counts.iter().sum::<u32>()) / counts.len() as f64;
    counts
        .iter()
        .all(|&c| (f64::from(c) - average).abs() <= 1.0)
}

#[test]
fn three_nodes_grow_to_six_and_rebalance_while_producers_write_and_nothing_is_lost() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(root.path(), 3, SHARDS);
    let bootstrap: Vec<String> = nodes.iter().map(|n| n.address(0)).collect();
    let bootstrap = bootstrap.join(",");
    let mut client = ClusterClient::new(&bootstrap);
    retry("create topic", || client.create_topic(TOPIC, PARTITIONS));
    let created = retry("the topic in the metadata", || {
        let metadata = client.refresh_metadata()?;
        match metadata.topics.contains_key(TOPIC) {
            true => Ok(metadata.epoch),
            false => Err(ClientError::Unexpected("not yet".into())),
        }
    });
    assert!(created > 0, "metadata answers carry the controller's epoch");
    let writers = Writers::start(&bootstrap, TOPIC, PARTITIONS);
    retry("first writes", || match writers.acked_count() {
        0..=20 => Err("not yet"),
        _ => Ok(()),
    });

    let through = nodes[0].address(0);
    for node in 4..=6 {
        nodes.push(join_node(root.path(), node, SHARDS, &through));
    }
    retry("the new nodes learn the controller's log", || {
        let rows = client.cluster_status()?;
        let learners: Vec<u32> = rows
            .iter()
            .filter(|r| r.group == 0 && r.role == "learner")
            .map(|r| r.node)
            .collect();
        if learners == [4, 5, 6] {
            Ok(())
        } else {
            Err(ClientError::Unexpected(format!(
                "learners {learners:?}: {rows:?}"
            )))
        }
    });

    let joined_epoch = client.refresh_metadata().unwrap().epoch;
    assert!(
        joined_epoch > created,
        "the joins changed the metadata: epoch {joined_epoch} after {created}"
    );
    assert_eq!(client.refresh_metadata().unwrap().nodes.len(), 6);

    let rebalance = Command::new(keel_binary())
        .args(["cluster", "rebalance", "--bootstrap", &bootstrap])
        .args(["--catch-up-timeout", "60s", "--timeout", "120s"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&rebalance.stdout).into_owned()
        + &String::from_utf8_lossy(&rebalance.stderr);
    assert!(rebalance.status.success(), "keel cluster rebalance: {said}");
    assert!(said.contains("nothing left to move"), "{said}");
    eprintln!("{said}");
    writers.finish_cleanly(&bootstrap, TOPIC, PARTITIONS, 20);

    // Leadership follows each group's preferred leader within the balance delay.
    let (replicas, leaders) = retry("replicas and leaders even", || {
        let rows = client.cluster_status()?;
        let (replicas, leaders) = replicas_and_leaders(&rows, 6);
        let groups = rows.iter().filter(|r| r.role == "leader").count();
        if within_one_of_average(&replicas) && within_one_of_average(&leaders) && groups == 3 {
            Ok((replicas, leaders))
        } else {
            Err(ClientError::Unexpected(format!(
                "replicas {replicas:?}, leaders {leaders:?}: {rows:?}"
            )))
        }
    });
    eprintln!("replicas per node {replicas:?}, leaders per node {leaders:?}");
    assert!(
        replicas[3..].iter().all(|&r| r > 0),
        "every new node holds a replica: {replicas:?} (leaders {leaders:?})"
    );

    // What is not a join is refused, saying why.
    let secret = peer_secret_file();
    let refused_with = |secret: &std::path::Path, args: &[&str], why: &str| {
        let out = Command::new(keel_binary())
            .args(["node", "add"])
            .args(args)
            .args(["--bootstrap", &bootstrap])
            .arg("--peer-secret-file")
            .arg(secret)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success() && said.contains(why),
            "{args:?}: {said}"
        );
    };
    let refused = |args: &[&str], why: &str| refused_with(&secret, args, why);
    // Issue 13: only a holder of the cluster's peer secret adds a node, and it is asked
    // before anything else (node 4 holds replicas: not said to a stranger).
    let wrong = root.path().join("wrong.secret");
    std::fs::write(&wrong, "not-the-cluster-secret-0123456789abcdef").unwrap();
    refused_with(&wrong, &["4", "127.0.0.1:7/20"], "does not hold");
    refused_with(
        &wrong,
        &["9", "127.0.0.1:7/20"],
        "not the cluster's peer secret",
    );
    refused(&["4", "127.0.0.1:7/20"], "holds replicas");
    refused(&["2", "127.0.0.1:7/20"], "bootstrap node");
    refused(&["9", "127.0.0.1:7/20", "--shards", "2"], "runs 3 shards");
    refused(&["9", "0.0.0.0:7/20"], "not an address");
    let taken = nodes[0].port.to_string();
    refused(&["9", &format!("127.0.0.1:{taken}/20")], "overlap");

    // A node that joined restarts from its join record: back in every group it holds.
    let joined = nodes.remove(4).restart();
    nodes.push(joined);
    retry("node 5 back", || {
        let rows = client.cluster_status()?;
        let down: Vec<&GroupStatus> = rows.iter().filter(|r| r.role == "down").collect();
        let node_five = rows.iter().filter(|r| r.node == 5).count();
        if down.is_empty() && node_five >= 2 {
            Ok(())
        } else {
            Err(ClientError::Unexpected(format!("{rows:?}")))
        }
    });
}

#[test]
fn an_original_node_hands_its_controller_vote_and_replicas_to_a_joined_node_and_leaves() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(root.path(), 3, 2);
    let bootstrap: Vec<String> = nodes.iter().map(|n| n.address(0)).collect();
    let bootstrap = bootstrap.join(",");
    let mut client = ClusterClient::new(&bootstrap);
    retry("create topic", || client.create_topic(TOPIC, PARTITIONS));
    nodes.push(join_node(root.path(), 4, 2, &nodes[1].address(0)));
    retry("node 4 learns the controller's log", || {
        let rows = client.cluster_status()?;
        match rows
            .iter()
            .any(|r| r.group == 0 && r.node == 4 && r.role == "learner")
        {
            true => Ok(()),
            false => Err(ClientError::Unexpected(format!("{rows:?}"))),
        }
    });
    let writers = Writers::start(&bootstrap, TOPIC, PARTITIONS);
    retry("first writes", || match writers.acked_count() {
        0..=20 => Err("not yet"),
        _ => Ok(()),
    });

    let keel = |args: &[&str]| {
        let out = Command::new(keel_binary())
            .args(args)
            .args(["--bootstrap", &bootstrap])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), said)
    };
    let (removed, said) = keel(&["node", "remove", "1"]);
    assert!(
        !removed && said.contains("voter of the controller group"),
        "{said}"
    );
    let (drained, said) = keel(&["node", "drain", "1", "--catch-up-timeout", "60s"]);
    assert!(drained, "keel node drain 1: {said}");
    eprintln!("{said}");
    writers.finish_cleanly(&bootstrap, TOPIC, PARTITIONS, 20);

    let (removed, said) = keel(&["node", "remove", "1"]);
    assert!(removed, "keel node remove 1: {said}");
    let rows = client.cluster_status().unwrap();
    let voters_of = |group: u32| -> Vec<u32> {
        let mut voters: Vec<u32> = rows
            .iter()
            .filter(|r| r.group == group && matches!(r.role.as_str(), "leader" | "follower"))
            .map(|r| r.node)
            .collect();
        voters.sort_unstable();
        voters
    };
    assert_eq!(voters_of(0), [2, 3, 4], "{rows:?}");
    assert_eq!(voters_of(1), [2, 3, 4], "{rows:?}");
    // Its controller replica left too: the node holds nothing and may be stopped.
    let node_one = nodes[0].data_dir.clone();
    retry("node 1 let its last replica go", || {
        let rows = client.cluster_status()?;
        let listed = rows.iter().any(|r| r.node == 1);
        match (listed, node_one.join("group-0.left").exists()) {
            (false, true) => Ok(()),
            _ => Err(ClientError::Unexpected(format!("{rows:?}"))),
        }
    });
    // Still running, it names no node to clients, itself included.
    let mut at_one = ClusterClient::new(&nodes[0].address(0));
    retry("node 1 does not name itself", || not_named(&mut at_one, 1));
    // Stopped, the others do not name it either.
    nodes[0].kill();
    retry("node 1 left the metadata", || not_named(&mut client, 1));
}

/// Ok once `client`'s metadata (asked again) names no node `node`.
fn not_named(client: &mut ClusterClient, node: u32) -> Result<(), ClientError> {
    let named: Vec<u32> = client
        .refresh_metadata()?
        .nodes
        .iter()
        .map(|n| n.0)
        .collect();
    if named.contains(&node) {
        Err(ClientError::Unexpected(format!("metadata names {named:?}")))
    } else {
        Ok(())
    }
}
