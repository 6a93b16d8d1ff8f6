//! `ClusterClient`: talks to a Keel node (or cluster) from one bootstrap address. It knows
//! where each partition lives from the metadata, keeps one connection per shard, and
//! retries what is safe to retry (wrong shard, not leader, unknown topic, connection
//! refused), refreshing metadata in between.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;

use crate::client::connection::{ClientSecurity, Connection};
use crate::client::error::ClientError;
use crate::constants::INDETERMINATE_WRITE_WORDS;
use crate::protocol::codec::{
    check_record_batch, decode_response, encode_fetch_request, encode_metadata_request,
    encode_produce_request, encode_request, PartitionBatchData,
};
use crate::protocol::records::RecordBatch;
use crate::protocol::wire::{self, Acks, Response};

/// How long an operation is retried before giving up: elections take 100-300 ms, a
/// whole cluster's restart seconds.
pub const RETRY_BUDGET: Duration = Duration::from_secs(8);

/// Pause between attempts (doubles up to `MAX_BACKOFF`). Short and capped low: the pause
/// is what a client adds to a fail-over after the new leader exists (a retry is a metadata
/// request to a live node, cheap), so a new leader is found within `MAX_BACKOFF` of its
/// election. A doubling pause up to 500 ms added ~150 ms to the election's ~150 ms.
const FIRST_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_millis(20);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Where a partition lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionPlace {
    /// Address of the shard that owns it.
    pub address: String,
}

/// What the client knows of the cluster.
#[derive(Clone, Debug, Default)]
pub struct Metadata {
    /// Topics: name → partition count.
    pub topics: HashMap<String, u32>,
    /// (topic, partition) → place.
    pub places: HashMap<(String, u32), PartitionPlace>,
    /// Address of the controller shard (shard 0 of the first node).
    pub controller: Option<String>,
    /// Shard 0 of every node.
    pub node_addresses: Vec<String>,
    /// Every node: (id, host, shard-0 port, shards).
    pub nodes: Vec<(u32, String, u16, u32)>,
    /// The controller's applied index the answer reflects: larger is newer.
    pub epoch: u64,
}

impl Metadata {
    /// Shard 0's address of node `node`, if listed.
    fn node_address(&self, node: u32) -> Option<String> {
        self.nodes
            .iter()
            .find(|(id, ..)| *id == node)
            .map(|(_, host, port, _)| format!("{host}:{port}"))
    }
}

/// One group's state from a status answer.
fn group_status(status: &wire::GroupStatus<'_>) -> GroupStatus {
    GroupStatus {
        node: status.node(),
        group: status.group(),
        role: status.role().unwrap_or("unknown").to_string(),
        leader: status.leader(),
        term: status.term(),
        commit: status.commit(),
        applied: status.applied(),
        last_index: status.last_index(),
        durable: status.durable(),
        followers: status
            .followers()
            .iter()
            .flatten()
            .map(|f| (f.node(), f.matched(), f.lag()))
            .collect(),
        members: status.members().iter().flatten().collect(),
        records: status.records(),
    }
}

/// Most other nodes asked for metadata when an answer is older than what the client
/// knows (each a quick answer at most).
const MAX_METADATA_RETRIES: usize = 8;

/// Of `answers`, the newest that is at least as new as `known` (none: keep what is
/// known).
#[allow(clippy::type_complexity)]
fn newest(
    known: u64,
    answers: Vec<(Metadata, Vec<((String, u32), Vec<u32>)>)>,
) -> Option<(Metadata, Vec<((String, u32), Vec<u32>)>)> {
    answers
        .into_iter()
        .filter(|(m, _)| m.epoch >= known)
        .max_by_key(|(m, _)| m.epoch)
}

/// Rows with role "down" for each member of a group that gave no answer for it: the
/// members as the answering replicas' configurations name them, and for a group none of
/// whose replicas answered, as the answering nodes' placements (`placed`) name them.
fn missing_replicas(rows: &[GroupStatus], placed: &[(u32, u32)]) -> Vec<GroupStatus> {
    use std::collections::BTreeSet;
    let answered: BTreeSet<(u32, u32)> = rows.iter().map(|r| (r.group, r.node)).collect();
    let answered_groups: BTreeSet<u32> = rows.iter().map(|r| r.group).collect();
    let expected: BTreeSet<(u32, u32)> = rows
        .iter()
        .flat_map(|r| r.members.iter().map(|&node| (r.group, node)))
        .chain(
            placed
                .iter()
                .copied()
                .filter(|(group, _)| !answered_groups.contains(group)),
        )
        .collect();
    expected
        .difference(&answered)
        .map(|&(group, node)| GroupStatus {
            node,
            group,
            role: "down".to_string(),
            leader: 0,
            term: 0,
            commit: 0,
            applied: 0,
            last_index: 0,
            durable: 0,
            followers: Vec::new(),
            members: Vec::new(),
            records: 0,
        })
        .collect()
}

/// (group, node) for every member of every group a status answer's placement lists.
fn placed_members(status: &wire::StatusResponse<'_>) -> Vec<(u32, u32)> {
    status
        .placement()
        .iter()
        .flatten()
        .flat_map(|place| {
            let group = place.group();
            let members = place.members().map(|m| m.iter().collect::<Vec<u64>>());
            members
                .unwrap_or_default()
                .into_iter()
                .filter_map(move |node| u32::try_from(node).ok().map(|node| (group, node)))
        })
        .collect()
}

/// A metadata answer: what it says, and the partitions whose leader it does not know
/// with their group's replicas.
#[allow(clippy::type_complexity)]
fn parse_metadata(
    answer: &[u8],
) -> Result<(Metadata, Vec<((String, u32), Vec<u32>)>), ClientError> {
    let response = decode_response(answer)?;
    check_response(&response)?;
    let metadata = response
        .body_as_metadata_response()
        .ok_or_else(|| ClientError::Unexpected("not a metadata answer".into()))?;
    let mut fresh = Metadata {
        epoch: metadata.epoch(),
        ..Metadata::default()
    };
    let mut nodes = HashMap::new();
    for node in metadata.nodes().iter().flatten() {
        let host = node.host().unwrap_or("127.0.0.1").to_string();
        fresh.nodes.push((
            node.node_id(),
            host.clone(),
            node.base_port(),
            node.shards(),
        ));
        nodes.insert(node.node_id(), (host, node.base_port()));
    }
    // The answering node lists itself first: it answered, so topic changes go there
    // first (its answer points on to the controller's leader).
    if let Some((_, host, port, _)) = fresh.nodes.first() {
        fresh.controller = Some(format!("{host}:{port}"));
    }
    fresh.node_addresses = nodes
        .values()
        .map(|(host, port)| format!("{host}:{port}"))
        .collect();
    let mut unknown = Vec::new();
    for topic in metadata.topics().iter().flatten() {
        if topic
            .error()
            .is_some_and(|e| e.code() != wire::ErrorCode::None)
        {
            // A topic named in the request and refused: not one this client may use.
            continue;
        }
        let name = topic.name().unwrap_or_default().to_string();
        let mut count = 0;
        for partition in topic.partitions().iter().flatten() {
            count += 1;
            let key = (name.clone(), partition.partition());
            match nodes
                .get(&partition.leader_node())
                .filter(|_| partition.leader_node() != 0)
            {
                Some((host, port)) => {
                    let address = format!("{host}:{}", u32::from(*port) + partition.shard());
                    fresh.places.insert(key, PartitionPlace { address });
                }
                None => {
                    let replicas = partition.replicas().iter().flatten().collect();
                    unknown.push((key, replicas));
                }
            }
        }
        fresh.topics.insert(name, count);
    }
    Ok((fresh, unknown))
}

/// One replica's view of its group (`keel cluster status`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupStatus {
    /// The replica's node.
    pub node: u32,
    /// The replica group.
    pub group: u32,
    /// leader, follower, learner, candidate, pre-candidate; "down" when it did not answer.
    pub role: String,
    /// Leader node as this replica knows it (0: unknown).
    pub leader: u32,
    /// Term.
    pub term: u64,
    /// Commit index.
    pub commit: u64,
    /// Applied index.
    pub applied: u64,
    /// Last log index.
    pub last_index: u64,
    /// Durable log index.
    pub durable: u64,
    /// (follower node, matched index, lag), from a leader.
    pub followers: Vec<(u32, u64, u64)>,
    /// The group's members as this replica's configuration names them.
    pub members: Vec<u32>,
    /// Records stored in the group's partitions as this replica applied them (0 from a
    /// node that does not say): its rate is the group's produce rate.
    pub records: u64,
}

/// A record read back. Its key and value are views of the fetch answer that brought
/// them (no copy; the answer's memory is freed when the last of its records goes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumedRecord {
    /// Its offset in the partition.
    pub offset: u64,
    /// Key, if any.
    pub key: Option<Bytes>,
    /// Value.
    pub value: Bytes,
}

/// What a fetch returned.
#[derive(Clone, Debug, Default)]
pub struct Fetched {
    /// One past the last committed offset.
    pub high_watermark: u64,
    /// Records from the requested offset on.
    pub records: Vec<ConsumedRecord>,
}

/// A fetch answer's high watermark and its batches (base offset, batch), every batch's
/// crc and form checked.
pub(crate) fn checked_batches(
    answer: &[u8],
) -> Result<(u64, Vec<(u64, RecordBatch<'_>)>), ClientError> {
    let response = decode_response(answer)?;
    check_response(&response)?;
    let fetched = response
        .body_as_fetch_response()
        .ok_or_else(|| ClientError::Unexpected("not a fetch answer".into()))?;
    let mut batches = Vec::new();
    for stored in fetched.batches().iter().flatten() {
        let bytes = stored.batch().map(|v| v.bytes()).unwrap_or(&[]);
        let batch = check_record_batch(bytes, stored.crc32c(), usize::MAX)?;
        batches.push((stored.base_offset(), batch));
    }
    Ok((fetched.high_watermark(), batches))
}

/// Decodes a fetch answer (every batch's crc checked) into the records from `offset` on;
/// their keys and values are views of `answer`.
pub(crate) fn decode_fetch_answer(answer: Bytes, offset: u64) -> Result<Fetched, ClientError> {
    let (high_watermark, batches) = checked_batches(&answer)?;
    // A part of the answer by its bytes (a flatbuffers vector inside it).
    let view = |part: &[u8]| answer.slice_ref(part);
    let mut out = Fetched {
        high_watermark,
        records: Vec::new(),
    };
    for (base_offset, batch) in batches {
        for record in batch.records().iter().flatten() {
            let record_offset = base_offset + u64::from(record.offset_delta());
            if record_offset < offset {
                continue;
            }
            out.records.push(ConsumedRecord {
                offset: record_offset,
                key: record.key().map(|k| view(k.bytes())),
                value: record.value().map(|v| view(v.bytes())).unwrap_or_default(),
            });
        }
    }
    Ok(out)
}

/// How long a broker may take to acknowledge a produce request by default.
pub const PRODUCE_TIMEOUT: Duration = Duration::from_secs(30);

/// A client of one cluster.
pub struct ClusterClient {
    request_timeout: Duration,
    security: ClientSecurity,
    bootstrap: Vec<String>,
    connections: HashMap<String, Connection>,
    metadata: Metadata,
}

fn broker_error(error: wire::Error<'_>) -> ClientError {
    ClientError::Broker {
        code: error.code(),
        message: error.message().unwrap_or_default().to_string(),
        leader_address: error.leader_address().map(str::to_string),
    }
}

/// A produce answer's error as the client reports it. An answer saying the write may or
/// may not have been stored (proposed, then the leader changed or the request timed out)
/// is `Unacknowledged`, like a lost answer, though its code is retriable: a plain retry
/// could store the batch twice; the idempotent producer retries it (same sequence
/// numbers) and no longer takes it for certainly not stored.
pub(crate) fn produce_refusal(error: ClientError) -> ClientError {
    let fate_unknown = matches!(
        &error,
        ClientError::Broker { code, message, .. }
            if matches!(*code, wire::ErrorCode::NotLeader | wire::ErrorCode::RequestTimedOut)
                && message.contains(INDETERMINATE_WRITE_WORDS)
    );
    if fate_unknown {
        ClientError::Unacknowledged(Box::new(error))
    } else {
        error
    }
}

/// A metadata request naming `topic`.
fn encode_named_metadata_request(correlation_id: u64, topic: &str) -> Vec<u8> {
    let mut builder = flatbuffers::FlatBufferBuilder::with_capacity(128);
    let name = builder.create_string(topic);
    let topics = builder.create_vector(&[name]);
    let body = wire::MetadataRequest::create(
        &mut builder,
        &wire::MetadataRequestArgs {
            topics: Some(topics),
        },
    );
    encode_request(
        &mut builder,
        correlation_id,
        wire::RequestBody::MetadataRequest,
        body.as_union_value(),
    )
}

pub(crate) fn check_response(response: &Response<'_>) -> Result<(), ClientError> {
    match response.error() {
        Some(error) if error.code() != wire::ErrorCode::None => Err(broker_error(error)),
        _ => Ok(()),
    }
}

/// How long the client waits for an answer that a node gives at once (metadata, status)
/// before it asks another or reports the node down: a stopped node must not hold a
/// metadata refresh or the status listing for a produce's long timeout.
const QUICK_ANSWER_TIMEOUT: Duration = Duration::from_secs(3);

impl ClusterClient {
    /// A client that starts from `bootstrap`: "host:port" of any shard, or several
    /// separated by commas (tried in turn when one does not answer).
    pub fn new(bootstrap: &str) -> ClusterClient {
        ClusterClient::with_security(bootstrap, ClientSecurity::default())
    }

    /// A client that starts from `bootstrap` and connects as `security` says (TLS).
    pub fn with_security(bootstrap: &str, security: ClientSecurity) -> ClusterClient {
        ClusterClient {
            request_timeout: crate::client::connection::DEFAULT_REQUEST_TIMEOUT,
            security,
            bootstrap: bootstrap
                .split(',')
                .map(|a| a.trim().to_string())
                .filter(|a| !a.is_empty())
                .collect(),
            connections: HashMap::new(),
            metadata: Metadata::default(),
        }
    }

    /// How this client connects (TLS settings).
    pub fn security(&self) -> &ClientSecurity {
        &self.security
    }

    /// Sets how long to wait for each answer (default 35 s, above the broker's 30 s
    /// produce timeout). A shorter one gives up sooner on a leader that stopped answering;
    /// a produce whose answer did not come in time is reported `Unacknowledged`.
    pub fn set_request_timeout(&mut self, timeout: Duration) {
        self.request_timeout = timeout;
        for connection in self.connections.values_mut() {
            connection.set_request_timeout(timeout);
        }
    }

    /// Drops a failed connection and the metadata that led to it (the next request asks
    /// the cluster again where things are).
    fn forget(&mut self, address: &str) {
        self.connections.remove(address);
        self.metadata.places.clear();
    }

    fn connection(&mut self, address: &str) -> Result<&mut Connection, ClientError> {
        if !self.connections.contains_key(address) {
            let mut connection =
                Connection::connect_with(address, CONNECT_TIMEOUT, &self.security)?;
            connection.set_request_timeout(self.request_timeout);
            self.connections.insert(address.to_string(), connection);
        }
        self.connections
            .get_mut(address)
            .ok_or_else(|| ClientError::Closed(address.to_string()))
    }

    /// Sends a request built by `build(correlation_id)` to `address`, returns the answer.
    pub(crate) fn call(
        &mut self,
        address: &str,
        build: impl FnOnce(u64) -> Vec<u8>,
    ) -> Result<bytes::Bytes, ClientError> {
        let connection = self.connection(address)?;
        let id = connection.next_correlation_id();
        let result = connection.call(id, &build(id));
        if result.is_err() {
            self.forget(address);
        }
        result
    }

    /// Runs `attempt` until it succeeds, fails for good, or `RETRY_BUDGET` runs out;
    /// refreshes metadata between attempts.
    pub(crate) fn with_retries<T>(
        &mut self,
        mut attempt: impl FnMut(&mut Self) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let mut backoff = FIRST_BACKOFF;
        let mut last = None;
        let started = std::time::Instant::now();
        let mut attempts = 0;
        while attempts == 0 || started.elapsed() < RETRY_BUDGET {
            attempts += 1;
            match attempt(self) {
                Ok(value) => return Ok(value),
                Err(error) if error.is_retriable() => {
                    last = Some(error);
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    let _ = self.refresh_metadata();
                }
                Err(error) => return Err(error),
            }
        }
        Err(ClientError::GaveUp {
            attempts,
            last: Box::new(last.unwrap_or_else(|| ClientError::Unexpected("no attempt".into()))),
        })
    }

    /// Addresses to ask for cluster-wide things: the bootstrap list, then every known
    /// node's shard 0.
    fn candidates(&self) -> Vec<String> {
        let mut candidates = self.bootstrap.clone();
        for address in &self.metadata.node_addresses {
            if !candidates.contains(address) {
                candidates.push(address.clone());
            }
        }
        candidates
    }

    /// Calls the first candidate that answers; follows NotLeader/WrongShard hints.
    pub(crate) fn call_cluster(
        &mut self,
        first: Option<String>,
        build: impl Fn(u64) -> Vec<u8>,
    ) -> Result<bytes::Bytes, ClientError> {
        let mut queue: Vec<String> = first.into_iter().chain(self.candidates()).collect();
        let mut last = ClientError::Closed("no address to try".to_string());
        let mut hops = 0;
        while let Some(address) = (!queue.is_empty()).then(|| queue.remove(0)) {
            hops += 1;
            if hops > 16 {
                break;
            }
            let answer = match self.call(&address, &build) {
                Ok(answer) => answer,
                // Another node would refuse the same credentials: one guess, not one per
                // node.
                Err(error @ ClientError::Authentication { .. }) => return Err(error),
                Err(error) => {
                    last = error;
                    continue;
                }
            };
            let redirect = match decode_response(&answer)?.error() {
                Some(error)
                    if matches!(
                        error.code(),
                        wire::ErrorCode::NotLeader | wire::ErrorCode::WrongShard
                    ) =>
                {
                    error.leader_address().map(str::to_string)
                }
                _ => None,
            };
            match redirect {
                Some(hint) if hint != address => queue.insert(0, hint),
                _ => return Ok(answer),
            }
        }
        Err(last)
    }

    /// Asks the cluster where everything is. A node knows the leaders of the groups it
    /// holds a replica of; a partition whose leader the answering node does not know is
    /// asked of a node holding its group (each such node once).
    pub fn refresh_metadata(&mut self) -> Result<&Metadata, ClientError> {
        let fresh = self.with_quick_answers(Self::ask_metadata)?;
        self.metadata = fresh;
        Ok(&self.metadata)
    }

    fn ask_metadata(&mut self) -> Result<Metadata, ClientError> {
        let answer = self.call_cluster(None, encode_metadata_request)?;
        let (mut fresh, mut unknown) = parse_metadata(&answer)?;
        if fresh.epoch < self.metadata.epoch {
            // That node's controller replica is behind what this client saw: another
            // node's answer, else what the client knows.
            let mut others = self.metadata.node_addresses.clone();
            others.extend(self.bootstrap.iter().cloned());
            others.sort();
            others.dedup();
            let mut answers = Vec::new();
            for address in others.iter().take(MAX_METADATA_RETRIES) {
                if let Ok(answer) = self.call(address, encode_metadata_request) {
                    answers.extend(parse_metadata(&answer).ok());
                }
                if answers.iter().any(|(m, _)| m.epoch >= self.metadata.epoch) {
                    break;
                }
            }
            match newest(self.metadata.epoch, answers) {
                Some(newer) => (fresh, unknown) = newer,
                None => return Ok(self.metadata.clone()),
            }
        }
        let mut asked = Vec::new();
        for (key, replicas) in unknown {
            for node in replicas {
                if fresh.places.contains_key(&key) {
                    break;
                }
                if asked.contains(&node) {
                    continue;
                }
                asked.push(node);
                let Some(address) = fresh.node_address(node) else {
                    continue;
                };
                // Best effort: a node that does not answer leaves its partitions to
                // the next replica, or unknown (retriable for a producer).
                if let Ok(answer) = self.call(&address, encode_metadata_request) {
                    if let Ok((theirs, _)) = parse_metadata(&answer) {
                        for (key, place) in theirs.places {
                            fresh.places.entry(key).or_insert(place);
                        }
                    }
                }
            }
        }
        Ok(fresh)
    }

    /// The metadata known (refreshed when empty).
    pub fn metadata(&mut self) -> Result<&Metadata, ClientError> {
        if self.metadata.controller.is_none() {
            self.refresh_metadata()?;
        }
        Ok(&self.metadata)
    }

    pub(crate) fn controller(&mut self) -> Result<String, ClientError> {
        let fallback = self.bootstrap.first().cloned().unwrap_or_default();
        Ok(self.metadata()?.controller.clone().unwrap_or(fallback))
    }

    /// Creates a topic with the cluster's replication factor.
    pub fn create_topic(&mut self, name: &str, partitions: u32) -> Result<(), ClientError> {
        self.create_topic_with(name, partitions, 0)
    }

    /// Creates a topic with `replication_factor` replicas (1, 3 or 5; 0: the
    /// cluster's). Another factor than the cluster's gets a replica group of its own.
    pub fn create_topic_with(
        &mut self,
        name: &str,
        partitions: u32,
        replication_factor: u16,
    ) -> Result<(), ClientError> {
        // While the controller elects its leader (a cluster just started) the request is
        // refused before anything is proposed: it is asked again. A creation whose
        // outcome was lost is asked again too, and then answered TopicAlreadyExists.
        self.with_retries(|client| client.create_topic_once(name, partitions, replication_factor))
    }

    fn create_topic_once(
        &mut self,
        name: &str,
        partitions: u32,
        replication_factor: u16,
    ) -> Result<(), ClientError> {
        let controller = self.controller()?;
        let answer = self.call_cluster(Some(controller), |id| {
            let mut builder = flatbuffers::FlatBufferBuilder::new();
            let name = builder.create_string(name);
            let body = wire::CreateTopicRequest::create(
                &mut builder,
                &wire::CreateTopicRequestArgs {
                    name: Some(name),
                    partitions,
                    replication_factor,
                },
            );
            encode_request(
                &mut builder,
                id,
                wire::RequestBody::CreateTopicRequest,
                body.as_union_value(),
            )
        })?;
        check_response(&decode_response(&answer)?)?;
        self.refresh_metadata()?;
        Ok(())
    }

    /// Deletes a topic.
    pub fn delete_topic(&mut self, name: &str) -> Result<(), ClientError> {
        let controller = self.controller()?;
        let answer = self.call_cluster(Some(controller), |id| {
            let mut builder = flatbuffers::FlatBufferBuilder::new();
            let name = builder.create_string(name);
            let body = wire::DeleteTopicRequest::create(
                &mut builder,
                &wire::DeleteTopicRequestArgs { name: Some(name) },
            );
            encode_request(
                &mut builder,
                id,
                wire::RequestBody::DeleteTopicRequest,
                body.as_union_value(),
            )
        })?;
        check_response(&decode_response(&answer)?)?;
        self.refresh_metadata()?;
        Ok(())
    }

    /// Asks every shard of every node for its groups' state; a member of a group (as any
    /// answering replica's configuration names it) that gives no answer for it is listed
    /// with role "down".
    pub fn cluster_status(&mut self) -> Result<Vec<GroupStatus>, ClientError> {
        // A node that does not answer is reported down after a short wait, not after a
        // produce's long one.
        self.with_quick_answers(Self::cluster_status_within)
    }

    /// Runs `calls` waiting at most `QUICK_ANSWER_TIMEOUT` for each answer.
    fn with_quick_answers<T>(&mut self, calls: impl FnOnce(&mut Self) -> T) -> T {
        let saved = self.request_timeout;
        self.set_request_timeout(saved.min(QUICK_ANSWER_TIMEOUT));
        let result = calls(self);
        self.set_request_timeout(saved);
        result
    }

    fn cluster_status_within(&mut self) -> Result<Vec<GroupStatus>, ClientError> {
        self.refresh_metadata()?;
        let nodes = self.metadata.nodes.clone();
        let mut out = Vec::new();
        let mut placed = std::collections::BTreeSet::new();
        for (_, host, base_port, shards) in nodes {
            for shard in 0..shards {
                let address = format!("{host}:{}", u32::from(base_port) + shard);
                let answer = self.call(&address, |id| {
                    let mut builder = flatbuffers::FlatBufferBuilder::new();
                    let body =
                        wire::StatusRequest::create(&mut builder, &wire::StatusRequestArgs {});
                    encode_request(
                        &mut builder,
                        id,
                        wire::RequestBody::StatusRequest,
                        body.as_union_value(),
                    )
                });
                let parsed = answer.ok().and_then(|answer| {
                    let response = decode_response(&answer).ok()?;
                    let status = response.body_as_status_response()?;
                    let groups: Vec<GroupStatus> =
                        status.groups()?.iter().map(|s| group_status(&s)).collect();
                    Some((groups, placed_members(&status)))
                });
                if let Some((groups, members)) = parsed {
                    out.extend(groups);
                    placed.extend(members);
                }
            }
        }
        let placed: Vec<(u32, u32)> = placed.into_iter().collect();
        out.extend(missing_replicas(&out, &placed));
        out.sort_by_key(|s| (s.group, s.node));
        Ok(out)
    }

    /// Lists topics: (name, partitions), by name.
    pub fn list_topics(&mut self) -> Result<Vec<(String, u32)>, ClientError> {
        let answer = self.call_cluster(None, |id| {
            let mut builder = flatbuffers::FlatBufferBuilder::new();
            let body =
                wire::ListTopicsRequest::create(&mut builder, &wire::ListTopicsRequestArgs {});
            encode_request(
                &mut builder,
                id,
                wire::RequestBody::ListTopicsRequest,
                body.as_union_value(),
            )
        })?;
        let response = decode_response(&answer)?;
        check_response(&response)?;
        let list = response
            .body_as_list_topics_response()
            .ok_or_else(|| ClientError::Unexpected("not a topic list".into()))?;
        Ok(list
            .topics()
            .iter()
            .flatten()
            .map(|t| (t.name().unwrap_or_default().to_string(), t.partitions()))
            .collect())
    }

    /// Sends a produce request for one partition's batch without waiting; returns the
    /// shard address and correlation id to collect the answer with `produce_answer`.
    pub fn produce_send(
        &mut self,
        topic: &str,
        partition: u32,
        batch: &[u8],
        crc32c: u32,
        acks: Acks,
    ) -> Result<(String, u64), ClientError> {
        self.produce_send_within(topic, partition, batch, crc32c, acks, PRODUCE_TIMEOUT)
    }

    /// `produce_send` with the time the broker may take to acknowledge (it answers
    /// RequestTimedOut after it).
    pub fn produce_send_within(
        &mut self,
        topic: &str,
        partition: u32,
        batch: &[u8],
        crc32c: u32,
        acks: Acks,
        timeout: Duration,
    ) -> Result<(String, u64), ClientError> {
        let timeout_ms = timeout.as_millis().clamp(1, u128::from(u32::MAX)) as u32;
        let address = self.place(topic, partition)?;
        let connection = self.connection(&address)?;
        let id = connection.next_correlation_id();
        let batches = [PartitionBatchData {
            partition,
            batch,
            crc32c,
        }];
        let sent = connection.send(&encode_produce_request(
            id, topic, acks, timeout_ms, &batches,
        ));
        if let Err(error) = sent {
            self.forget(&address);
            return Err(ClientError::Unacknowledged(Box::new(error)));
        }
        Ok((address, id))
    }

    /// Waits for the answer to a `produce_send`; returns the batch's base offset.
    pub fn produce_answer(
        &mut self,
        address: &str,
        correlation_id: u64,
        partition: u32,
    ) -> Result<u64, ClientError> {
        let connection = self.connection(address)?;
        let answer = match connection.receive(correlation_id) {
            Ok(answer) => answer,
            Err(error) => {
                self.forget(address);
                return Err(ClientError::Unacknowledged(Box::new(error)));
            }
        };
        let response = decode_response(&answer)?;
        check_response(&response)?;
        let produced = response
            .body_as_produce_response()
            .ok_or_else(|| ClientError::Unexpected("not a produce answer".into()))?;
        let result = produced
            .results()
            .and_then(|results| results.iter().find(|r| r.partition() == partition))
            .ok_or_else(|| ClientError::Unexpected("no result for the partition".into()))?;
        match result.error() {
            Some(error) if error.code() != wire::ErrorCode::None => {
                Err(produce_refusal(broker_error(error)))
            }
            _ => Ok(result.base_offset()),
        }
    }

    /// The address of the shard that leads `topic/partition` (from metadata, refreshed
    /// when it does not know).
    pub(crate) fn place(&mut self, topic: &str, partition: u32) -> Result<String, ClientError> {
        let key = (topic.to_string(), partition);
        if !self.metadata()?.places.contains_key(&key) {
            self.refresh_metadata()?;
        }
        match self.metadata.places.get(&key) {
            Some(place) => Ok(place.address.clone()),
            // The partition exists but its group has no known leader (an election is on):
            // retriable.
            None if self
                .metadata
                .topics
                .get(topic)
                .is_some_and(|&count| partition < count) =>
            {
                Err(ClientError::Broker {
                    code: wire::ErrorCode::NotLeader,
                    message: format!("no leader known for {topic}/{partition} yet"),
                    leader_address: None,
                })
            }
            None if self.metadata.topics.contains_key(topic) => Err(ClientError::Broker {
                code: wire::ErrorCode::UnknownPartition,
                message: format!("topic {topic:?} has no partition {partition}"),
                leader_address: None,
            }),
            // Not listed: it does not exist yet, or this client may not see it (then the
            // broker says so, and that is not retried).
            None => Err(self.topic_refusal(topic).unwrap_or(ClientError::Broker {
                code: wire::ErrorCode::UnknownTopic,
                message: format!("no topic {topic:?}"),
                leader_address: None,
            })),
        }
    }

    /// The broker's refusal of a topic this client may not describe (`NotAuthorized`),
    /// asked by name; `None` when there is none (or no answer).
    fn topic_refusal(&mut self, topic: &str) -> Option<ClientError> {
        if self.security.credentials.is_none() && self.security.tls.is_none() {
            return None;
        }
        let answer = self
            .call_cluster(None, |id| encode_named_metadata_request(id, topic))
            .ok()?;
        let response = decode_response(&answer).ok()?;
        let metadata = response.body_as_metadata_response()?;
        let refused = metadata
            .topics()?
            .iter()
            .find(|t| t.name() == Some(topic))?
            .error()
            .filter(|e| e.code() != wire::ErrorCode::None)?;
        Some(broker_error(refused))
    }

    /// Sends one batch (from `encode_record_batch`) to a partition; returns the offset of
    /// its first record (`u64::MAX` with `Acks::None`). Retries only what was certainly not
    /// stored (wrong shard, not leader, unknown topic before creation propagated).
    pub fn produce(
        &mut self,
        topic: &str,
        partition: u32,
        batch: &[u8],
        crc32c: u32,
        acks: Acks,
    ) -> Result<u64, ClientError> {
        // Connecting may be retried; once the request is sent, a lost answer leaves its
        // fate unknown and is reported Unacknowledged (not retried here).
        self.with_retries(|client| {
            let (address, id) = client.produce_send(topic, partition, batch, crc32c, acks)?;
            client.produce_answer(&address, id, partition)
        })
    }

    /// Reads records of a partition from `offset`, waiting up to `max_wait` for some.
    pub fn fetch(
        &mut self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: u32,
        max_wait: Duration,
    ) -> Result<Fetched, ClientError> {
        self.with_retries(|client| {
            let address = client.place(topic, partition)?;
            let wait_ms = max_wait.as_millis().min(u128::from(u32::MAX)) as u32;
            let answer = client.call(&address, |id| {
                encode_fetch_request(id, topic, partition, offset, max_bytes, wait_ms)
            })?;
            decode_fetch_answer(answer, offset)
        })
    }

    /// A partition's first kept offset and its end (one past the last committed offset).
    pub fn partition_offsets(
        &mut self,
        topic: &str,
        partition: u32,
    ) -> Result<(u64, u64), ClientError> {
        self.with_retries(|client| {
            let address = client.place(topic, partition)?;
            let answer = client.call(&address, |id| {
                let mut builder = flatbuffers::FlatBufferBuilder::new();
                let name = builder.create_string(topic);
                let body = wire::PartitionOffsetsRequest::create(
                    &mut builder,
                    &wire::PartitionOffsetsRequestArgs {
                        topic: Some(name),
                        partition,
                    },
                );
                encode_request(
                    &mut builder,
                    id,
                    wire::RequestBody::PartitionOffsetsRequest,
                    body.as_union_value(),
                )
            })?;
            let response = decode_response(&answer)?;
            check_response(&response)?;
            let offsets = response
                .body_as_partition_offsets_response()
                .ok_or_else(|| ClientError::Unexpected("not a partition offsets answer".into()))?;
            Ok((offsets.start_offset(), offsets.high_watermark()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer_of(epoch: u64) -> Vec<u8> {
        let mut builder = flatbuffers::FlatBufferBuilder::new();
        let body = wire::MetadataResponse::create(
            &mut builder,
            &wire::MetadataResponseArgs {
                epoch,
                ..Default::default()
            },
        );
        let response = wire::Response::create(
            &mut builder,
            &wire::ResponseArgs {
                correlation_id: 1,
                body_type: wire::ResponseBody::MetadataResponse,
                body: Some(body.as_union_value()),
                ..Default::default()
            },
        );
        builder.finish(response, Some(crate::protocol::codec::MESSAGE_IDENTIFIER));
        builder.finished_data().to_vec()
    }

    #[test]
    fn a_metadata_answer_older_than_what_is_known_is_not_taken() {
        let parsed = |epoch| parse_metadata(&answer_of(epoch)).unwrap();
        assert_eq!(parsed(17).0.epoch, 17);
        let chosen = newest(10, vec![parsed(7), parsed(12), parsed(11)]);
        assert_eq!(chosen.map(|(m, _)| m.epoch), Some(12), "the newest");
        assert!(
            newest(10, vec![parsed(7), parsed(9)]).is_none(),
            "all stale"
        );
        assert_eq!(newest(10, vec![parsed(10)]).map(|(m, _)| m.epoch), Some(10));
    }
}
