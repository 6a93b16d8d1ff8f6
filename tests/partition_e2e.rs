//! A network partition, with the nodes as separate hosts (network namespaces joined by a
//! bridge): the leader is cut off from the other two while clients can still reach every
//! node. The old leader must stop acknowledging writes (check-quorum makes it step down),
//! the majority must elect a new leader and go on, and once the partition heals the old
//! leader rejoins as a follower without disrupting the new leader (pre-vote), drops what
//! it appended alone, and catches up. Every acknowledged record is there exactly once, in
//! order; nothing sent to the cut-off leader is.
//!
//! Needs root (namespaces, routes), as the rest of the suite's system tests do.

mod support;

use std::time::{Duration, Instant};

use keel::client::connection::Connection;
use keel::client::{ClientError, ClusterClient, GroupStatus};
use keel::protocol::codec::{
    decode_response, encode_produce_request, encode_record_batch, BatchProducer,
    PartitionBatchData, RecordData,
};
use keel::protocol::wire::{Acks, ErrorCode};
use support::netns::TestNet;
use support::{retry, Broker};

const PORT: u16 = 9700;

fn batch_of(prefix: &str, first: u64) -> (Vec<u8>, u32) {
    let records: Vec<RecordData> = (first..first + 10)
        .map(|n| RecordData {
            value: format!("{prefix}{n}").into_bytes(),
            ..Default::default()
        })
        .collect();
    encode_record_batch(BatchProducer::default(), 0, &records)
}

/// One produce request to exactly this node (no redirects, no retries): the base offset
/// if the node acknowledged the batch, else what it said (or that it did not answer).
fn produce_here(connection: &mut Connection, batch: &[u8], crc32c: u32) -> Result<u64, String> {
    let id = connection.next_correlation_id();
    let request = encode_produce_request(
        id,
        "split",
        Acks::Quorum,
        400,
        &[PartitionBatchData {
            partition: 0,
            batch,
            crc32c,
        }],
    );
    let answer = connection.call(id, &request).map_err(|e| e.to_string())?;
    let response = decode_response(&answer).map_err(|e| e.to_string())?;
    if let Some(error) = response.error().filter(|e| e.code() != ErrorCode::None) {
        return Err(format!("{:?}", error.code()));
    }
    let result = response
        .body_as_produce_response()
        .and_then(|p| p.results())
        .and_then(|r| r.iter().next())
        .ok_or("no result")?;
    match result.error() {
        Some(error) if error.code() != ErrorCode::None => Err(format!("{:?}", error.code())),
        _ => Ok(result.base_offset()),
    }
}

/// Group 0's status rows once every answering replica agrees on one leader.
fn settled_status(client: &mut ClusterClient, expect_answering: usize) -> Vec<GroupStatus> {
    retry("settled status", || {
        let rows = client.cluster_status()?;
        let answering: Vec<_> = rows.iter().filter(|r| r.role != "down").collect();
        let leaders: Vec<_> = answering.iter().filter(|r| r.role == "leader").collect();
        let agreed = leaders.len() == 1
            && answering.len() == expect_answering
            && answering
                .iter()
                .all(|r| r.leader == leaders[0].node && r.term == leaders[0].term);
        if agreed {
            Ok(rows)
        } else {
            Err(ClientError::Unexpected(format!("not settled: {rows:?}")))
        }
    })
}

#[test]
fn a_partitioned_leader_stops_acknowledging_and_the_majority_goes_on() {
    let net = TestNet::create(3);
    let root = tempfile::tempdir().unwrap();
    let peers: Vec<String> = (0..3)
        .map(|i| format!("{}={}:{PORT}", i + 1, net.address(i)))
        .collect();
    let peers = peers.join(",");
    let nodes: Vec<Broker> = (0..3)
        .map(|i| {
            // Leader balancing off: the test checks that the healed node does not take
            // the group back (by an election or by a planned hand-over).
            let args = [
                "--node-id",
                &(i + 1).to_string(),
                "--peers",
                &peers,
                "--leader-balance-delay",
                "off",
            ];
            Broker::start_in_namespace(
                &net.namespace(i),
                &net.address(i),
                &root.path().join(format!("node-{}", i + 1)),
                PORT,
                &args.map(String::from),
            )
        })
        .collect();
    let everyone: Vec<String> = nodes.iter().map(|n| n.address(0)).collect();
    let mut client = ClusterClient::new(&everyone.join(","));
    retry("create topic", || client.create_topic("split", 1));
    let mut acked: Vec<(u64, u64)> = Vec::new();
    let mut next = 0;
    for _ in 0..20 {
        let (batch, crc) = batch_of("a", next);
        let offset = retry("produce", || {
            client.produce("split", 0, &batch, crc, Acks::Quorum)
        });
        acked.push((offset, next));
        next += 10;
    }
    let before = settled_status(&mut client, 3);
    let old = before.iter().find(|r| r.role == "leader").unwrap().clone();
    let old_index = old.node - 1;

    // Cut the leader off. A client that still reaches it keeps writing to it directly.
    net.isolate(old_index);
    let cut_at = Instant::now();
    let mut direct = Connection::connect(
        &nodes[old_index as usize].address(0),
        Duration::from_secs(2),
    )
    .expect("the test reaches the cut-off node");
    direct.set_request_timeout(Duration::from_secs(3));
    let mut lonely_sent = 0u64;
    let mut lonely_refusals = Vec::new();
    while cut_at.elapsed() < Duration::from_millis(1500) {
        let (batch, crc) = batch_of("lonely", lonely_sent);
        match produce_here(&mut direct, &batch, crc) {
            Ok(offset) => panic!("the cut-off leader acknowledged a write at offset {offset}"),
            Err(refusal) => lonely_refusals.push(refusal),
        }
        lonely_sent += 10;
    }
    assert!(lonely_sent > 0);
    eprintln!(
        "cut-off leader: {} batches refused ({:?} first, {:?} last)",
        lonely_refusals.len(),
        lonely_refusals.first(),
        lonely_refusals.last()
    );

    // The majority has a new leader and takes writes.
    let majority: Vec<String> = (0..3u32)
        .filter(|&i| i != old_index)
        .map(|i| nodes[i as usize].address(0))
        .collect();
    let mut majority_client = ClusterClient::new(&majority.join(","));
    majority_client.set_request_timeout(Duration::from_millis(800));
    for _ in 0..20 {
        let (batch, crc) = batch_of("a", next);
        let offset = retry("produce on the majority", || {
            majority_client.produce("split", 0, &batch, crc, Acks::Quorum)
        });
        acked.push((offset, next));
        next += 10;
    }
    let during = majority_client.cluster_status().unwrap();
    let new_leader = during
        .iter()
        .find(|r| r.role == "leader" && r.node != old.node)
        .unwrap_or_else(|| panic!("a new leader on the majority side: {during:?}"));
    assert!(new_leader.term > old.term);
    // The cut-off node no longer believes it leads (check-quorum).
    let cut_off = during.iter().find(|r| r.node == old.node).unwrap();
    assert_ne!(cut_off.role, "leader", "{during:?}");
    assert!(
        lonely_refusals.iter().any(|r| r.contains("NotLeader")),
        "the cut-off node said it no longer leads: {lonely_refusals:?}"
    );

    // Heal: the old leader rejoins as a follower of the same leader and term (it did not
    // disrupt it), and catches up.
    net.heal(old_index);
    let (batch, crc) = batch_of("a", next);
    acked.push((
        retry("produce after healing", || {
            majority_client.produce("split", 0, &batch, crc, Acks::Quorum)
        }),
        next,
    ));
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        let rows = settled_status(&mut client, 3);
        let leader = rows.iter().find(|r| r.role == "leader").unwrap().clone();
        let rejoined = rows.iter().find(|r| r.node == old.node).unwrap().clone();
        if rejoined.applied == leader.commit || Instant::now() > deadline {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let leader = after.iter().find(|r| r.role == "leader").unwrap();
    assert_eq!(
        leader.node, new_leader.node,
        "healing caused no election: {after:?}"
    );
    assert_eq!(
        leader.term, new_leader.term,
        "healing caused no new term: {after:?}"
    );
    let rejoined = after.iter().find(|r| r.node == old.node).unwrap();
    assert_eq!(rejoined.role, "follower");
    assert_eq!(rejoined.applied, leader.commit, "caught up: {after:?}");

    // Every acknowledged record once, in order; nothing the cut-off leader took.
    let mut stored = Vec::new();
    let mut offset = 0;
    loop {
        let fetched = retry("fetch", || {
            client.fetch("split", 0, offset, 1 << 20, Duration::ZERO)
        });
        if fetched.records.is_empty() {
            break;
        }
        for record in fetched.records {
            assert_eq!(record.offset, offset);
            stored.push(String::from_utf8(record.value.to_vec()).unwrap());
            offset += 1;
        }
    }
    assert_eq!(
        stored.len(),
        acked.len() * 10,
        "exactly the acknowledged records"
    );
    for (offset, first) in acked {
        for k in 0..10 {
            assert_eq!(stored[(offset + k) as usize], format!("a{}", first + k));
        }
    }
    drop(nodes);
}
