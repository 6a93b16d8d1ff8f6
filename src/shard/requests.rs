//! Answers client requests on one shard: produce, fetch, metadata and topic admin.
//!
//! Every request is checked before anything is proposed: topic and partition exist, the
//! partition is this shard's (else `WrongShard` with the right address), the batch passes
//! its crc32c and the verifier. Topic changes are the controller's (shard 0): other shards
//! answer `WrongShard` pointing there.

use std::rc::Rc;
use std::time::{Duration, Instant};

use flatbuffers::{FlatBufferBuilder, WIPOffset};

use crate::broker::log_entry::BrokerEntry;
use crate::broker::replica_moves::NodeService;
use crate::broker::state::{Applied, PlacedGroup, TopicInfo};
use crate::constants::{
    CATCH_UP_RECHECK, CONTROLLER_CATCH_UP_WAIT, FETCH_ANSWER_BYTES_PER_BATCH,
    FETCH_ANSWER_HEADROOM_BYTES, INDETERMINATE_WRITE_WORDS, MAX_BATCHES_PER_FETCH,
};
use crate::controller::{GroupId, CONTROLLER_GROUP};
use crate::log::LogError;
use crate::metrics::ShardMetrics;
use crate::protocol::byte_vector::byte_vector;
use crate::protocol::codec::{check_record_batch, MESSAGE_IDENTIFIER};
use crate::protocol::wire::{self, Acks, ErrorCode, Request, ResponseBody};
use crate::replication::ShardError;
use crate::shard::answer_frame::AnswerFrame;
use crate::shard::client_auth::Caller;
use crate::shard::group_driver::{Pending, ShardCore};
use crate::shard::group_requests;
use crate::shard::hosted_groups::HostedGroups;
use crate::shard::{access_requests, authorize, join_requests, move_requests};

/// Most partitions one topic may have.
pub const MAX_PARTITIONS: u32 = 4096;

/// Most topics one metadata request may name (clients name one, to learn why a topic is
/// not listed).
pub const MAX_NAMED_TOPICS: usize = 64;

/// Longest fetch long-poll.
pub const MAX_FETCH_WAIT: Duration = Duration::from_secs(30);

/// An error to put in an answer.
#[derive(Clone, Debug)]
pub struct WireError {
    /// Code.
    pub code: ErrorCode,
    /// Human-readable message.
    pub message: String,
    /// Where to go instead, for NotLeader / WrongShard.
    pub leader_address: Option<String>,
}

impl WireError {
    pub(super) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        WireError {
            code,
            message: message.into(),
            leader_address: None,
        }
    }

    /// The request belongs to `owner`, which this shard does not run: the answer
    /// points at `owner`'s replica on this node, else at its leader, else at its first
    /// voter (whose answer points on to the leader).
    pub(super) fn wrong_shard(core: &ShardCore, owner: GroupId) -> Self {
        let leader = core.leader_of(owner);
        let first_voter = core.placement().replicas(owner).first().copied();
        let address = [
            Some(core.config.node_id),
            Some(leader),
            first_voter.map(|n| n as u32),
        ]
        .into_iter()
        .flatten()
        .filter(|&node| node != 0)
        .find_map(|node| core.replica_address(node, owner));
        WireError {
            code: ErrorCode::WrongShard,
            message: format!("served by replica group {}", owner.0),
            leader_address: address,
        }
    }

    pub(super) fn not_leader(core: &ShardCore) -> Self {
        WireError {
            code: ErrorCode::NotLeader,
            message: "this replica does not lead the group".to_string(),
            leader_address: core.leader_address(),
        }
    }

    pub(super) fn from_shard(error: &ShardError) -> Self {
        let code = match error {
            // Retriable: the client finds the leader again. An indeterminate write says so
            // in words the client knows (an idempotent producer's retry is stored once).
            ShardError::Indeterminate => {
                return WireError::new(
                    ErrorCode::NotLeader,
                    format!(
                        "leadership changed before the write was committed: it \
                         {INDETERMINATE_WRITE_WORDS}"
                    ),
                )
            }
            ShardError::NotLeader => ErrorCode::NotLeader,
            ShardError::Storage(_) => ErrorCode::StorageFull,
            ShardError::Overloaded => ErrorCode::RequestTimedOut,
            ShardError::ShuttingDown => ErrorCode::ShuttingDown,
            ShardError::MembershipRefused(_) => ErrorCode::InvalidRequest,
            // Retriable: the change under way is applied within a round trip or two.
            ShardError::MembershipPending => ErrorCode::RequestTimedOut,
        };
        WireError::new(code, error.to_string())
    }
}

fn build_error<'a>(
    builder: &mut FlatBufferBuilder<'a>,
    error: &WireError,
) -> WIPOffset<wire::Error<'a>> {
    let message = builder.create_string(&error.message);
    let leader_address = error
        .leader_address
        .as_ref()
        .map(|a| builder.create_string(a));
    wire::Error::create(
        builder,
        &wire::ErrorArgs {
            code: error.code,
            message: Some(message),
            leader_node: 0,
            leader_address,
        },
    )
}

pub(super) fn finish_response(
    mut builder: FlatBufferBuilder<'_>,
    correlation_id: u64,
    body_type: ResponseBody,
    body: Option<WIPOffset<flatbuffers::UnionWIPOffset>>,
    error: Option<&WireError>,
) -> AnswerFrame {
    let error = error.map(|e| build_error(&mut builder, e));
    let response = wire::Response::create(
        &mut builder,
        &wire::ResponseArgs {
            correlation_id,
            error,
            body_type,
            body,
        },
    );
    builder.finish(response, Some(MESSAGE_IDENTIFIER));
    AnswerFrame::from_finished(builder)
}

/// A response carrying only an error.
pub fn error_response(correlation_id: u64, error: &WireError) -> AnswerFrame {
    finish_response(
        FlatBufferBuilder::with_capacity(256),
        correlation_id,
        ResponseBody::NONE,
        None,
        Some(error),
    )
}

/// Answers one verified request of `caller` (once it may make it: `shard::authorize`).
pub async fn handle_request(
    groups: &HostedGroups,
    request: Request<'_>,
    caller: &Caller,
) -> AnswerFrame {
    let correlation_id = request.correlation_id();
    if let Err(refused) = authorize::check(groups, caller, &request) {
        groups.metrics().rejected(refused.code);
        return error_response(correlation_id, &refused);
    }
    let core = &groups.for_request(&request);
    // Taken only by the answers that list topics (never on a produce's or fetch's path).
    let caller_rules = std::cell::OnceCell::new();
    let refusal = |topic: &str| {
        caller_rules
            .get_or_init(|| authorize::CallerRules::of(groups, caller))
            .describe_refusal(topic)
    };
    let visible = |topic: &str| refusal(topic).is_none();
    let result = match request.body_type() {
        wire::RequestBody::ProduceRequest => match request.body_as_produce_request() {
            Some(produce) => Ok(handle_produce(groups, correlation_id, produce).await),
            None => Err(WireError::new(
                ErrorCode::MalformedFrame,
                "produce body missing",
            )),
        },
        wire::RequestBody::FetchRequest => match request.body_as_fetch_request() {
            Some(fetch) => handle_fetch(core, correlation_id, fetch)
                .await
                .inspect(|(answer, waited)| {
                    groups
                        .metrics()
                        .fetched(answer.frame().len() as u64, *waited)
                })
                .map(|(answer, _)| answer),
            None => Err(WireError::new(
                ErrorCode::MalformedFrame,
                "fetch body missing",
            )),
        },
        wire::RequestBody::MetadataRequest => {
            let named = request.body_as_metadata_request().and_then(|m| m.topics());
            named_topics(named)
                .map(|named| handle_metadata(core, correlation_id, (&named, &refusal)))
        }
        wire::RequestBody::ListTopicsRequest => {
            Ok(handle_list_topics(core, correlation_id, &visible))
        }
        wire::RequestBody::StatusRequest => Ok(handle_status(groups, correlation_id)),
        wire::RequestBody::ListGroupsRequest => {
            Ok(group_requests::list_groups(groups, correlation_id))
        }
        wire::RequestBody::CreateTopicRequest => match request.body_as_create_topic_request() {
            Some(create) => handle_create_topic(core, correlation_id, create).await,
            None => Err(WireError::new(
                ErrorCode::MalformedFrame,
                "create body missing",
            )),
        },
        wire::RequestBody::DeleteTopicRequest => match request.body_as_delete_topic_request() {
            Some(delete) => handle_delete_topic(core, correlation_id, delete).await,
            None => Err(WireError::new(
                ErrorCode::MalformedFrame,
                "delete body missing",
            )),
        },
        wire::RequestBody::PartitionOffsetsRequest => {
            match request.body_as_partition_offsets_request() {
                Some(asked) => handle_partition_offsets(core, correlation_id, asked),
                None => Err(WireError::new(ErrorCode::MalformedFrame, "body missing")),
            }
        }
        wire::RequestBody::MoveReplicaRequest => match request.body_as_move_replica_request() {
            Some(asked) => move_requests::handle_move_replica(core, correlation_id, asked).await,
            None => Err(WireError::new(ErrorCode::MalformedFrame, "body missing")),
        },
        wire::RequestBody::ChangeMembershipRequest => {
            match request.body_as_change_membership_request() {
                Some(asked) => {
                    move_requests::handle_change_membership(core, correlation_id, asked).await
                }
                None => Err(WireError::new(ErrorCode::MalformedFrame, "body missing")),
            }
        }
        wire::RequestBody::SetNodeStateRequest => match request.body_as_set_node_state_request() {
            Some(asked) => move_requests::handle_set_node_state(core, correlation_id, asked).await,
            None => Err(WireError::new(ErrorCode::MalformedFrame, "body missing")),
        },
        wire::RequestBody::JoinClusterRequest => match request.body_as_join_cluster_request() {
            Some(asked) => join_requests::handle_join_cluster(core, correlation_id, asked).await,
            None => Err(WireError::new(ErrorCode::MalformedFrame, "body missing")),
        },
        wire::RequestBody::PlanMovesRequest => match request.body_as_plan_moves_request() {
            Some(asked) => move_requests::handle_plan_moves(core, correlation_id, asked).await,
            None => Err(WireError::new(ErrorCode::MalformedFrame, "body missing")),
        },
        wire::RequestBody::ChangeUserRequest => match request.body_as_change_user_request() {
            Some(asked) => access_requests::handle_change_user(core, correlation_id, asked).await,
            None => Err(WireError::new(ErrorCode::MalformedFrame, "body missing")),
        },
        wire::RequestBody::ListUsersRequest => {
            access_requests::handle_list_users(core, correlation_id).await
        }
        wire::RequestBody::ChangeAclRequest => match request.body_as_change_acl_request() {
            Some(asked) => access_requests::handle_change_acl(core, correlation_id, asked).await,
            None => Err(WireError::new(ErrorCode::MalformedFrame, "body missing")),
        },
        wire::RequestBody::ListAclsRequest => match request.body_as_list_acls_request() {
            Some(asked) => access_requests::handle_list_acls(core, correlation_id, asked).await,
            None => Err(WireError::new(ErrorCode::MalformedFrame, "body missing")),
        },
        wire::RequestBody::AuthenticateRequest => Err(WireError::new(
            ErrorCode::AuthenticationFailed,
            "this broker does not authenticate clients (client_auth is off): connect \
             without --user",
        )),
        body if group_requests::is_group_request(body) => {
            group_requests::handle(core, correlation_id, &request, &visible).await
        }
        _ => Err(WireError::new(ErrorCode::InvalidRequest, "unknown request")),
    };
    result.unwrap_or_else(|error| {
        groups.metrics().rejected(error.code);
        error_response(correlation_id, &error)
    })
}

pub(super) fn topic_or_error(core: &ShardCore, name: Option<&str>) -> Result<TopicInfo, WireError> {
    let name = name.ok_or_else(|| WireError::new(ErrorCode::InvalidRequest, "topic missing"))?;
    core.state()
        .request_topics()
        .get(name)
        .cloned()
        .ok_or_else(|| WireError::new(ErrorCode::UnknownTopic, format!("no topic {name:?}")))
}

pub(super) fn check_partition(
    core: &ShardCore,
    topic: &TopicInfo,
    partition: u32,
) -> Result<(), WireError> {
    if partition >= topic.partitions {
        return Err(WireError::new(
            ErrorCode::UnknownPartition,
            format!(
                "topic {:?} has {} partitions, not {partition}",
                topic.name, topic.partitions
            ),
        ));
    }
    let owner = core.placement().group_of_partition(topic, partition);
    if owner != core.group {
        return Err(WireError::wrong_shard(core, owner));
    }
    if !core.is_leader() {
        return Err(WireError::not_leader(core));
    }
    Ok(())
}

struct PartitionOutcome {
    partition: u32,
    result: Result<u64, WireError>,
}

/// Checks one partition's batch and proposes it; returns what to wait for.
fn submit_batch(
    core: &Rc<ShardCore>,
    topic: &TopicInfo,
    entry: wire::PartitionBatch<'_>,
    acks: Acks,
) -> Result<(Pending, u64), WireError> {
    check_partition(core, topic, entry.partition())?;
    let bytes = entry.batch().map(|v| v.bytes()).unwrap_or(&[]);
    let batch = check_record_batch(bytes, entry.crc32c(), core.config.max_batch_bytes as usize)
        .map_err(|error| WireError::new(error.code(), error.to_string()))?;
    let record_count = batch.records().map_or(0, |r| r.len()) as u32;
    let data = BrokerEntry::RecordBatch {
        topic_id: topic.id,
        partition: entry.partition(),
        record_count,
        batch_crc32c: entry.crc32c(),
        // The leader's clock, written into the log: replicas expire idle producers by it.
        proposed_at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        batch: bytes,
    }
    .encode();
    core.submit(data, acks != Acks::None)
        .map(|pending| (pending, u64::from(record_count)))
        .map_err(|error| WireError::from_shard(&error))
}

/// A stored batch's base offset, and whether it was stored before (an idempotent resend).
async fn await_batch(pending: Pending, deadline: Instant) -> Result<(u64, bool), WireError> {
    let left = deadline.saturating_duration_since(Instant::now());
    match glommio::timer::timeout(left, async { Ok(pending.wait().await) }).await {
        Ok(Ok(Applied::Batch { base_offset, .. })) => Ok((base_offset, false)),
        Ok(Ok(Applied::Duplicate { base_offset })) => Ok((base_offset, true)),
        // acks=none: accepted, not waited for.
        Ok(Ok(Applied::Nothing)) => Ok((u64::MAX, false)),
        Ok(Ok(Applied::UnknownTopic)) => Err(WireError::new(
            ErrorCode::UnknownTopic,
            "the topic was deleted before the batch was stored",
        )),
        Ok(Ok(Applied::OutOfSequence { expected, refusal })) => Err(WireError::new(
            refusal.code(),
            format!("batch refused: {refusal} (expected sequence {expected})"),
        )),
        Ok(Ok(_)) => Err(WireError::new(
            ErrorCode::InternalError,
            "entry applied as something else",
        )),
        Ok(Err(error)) => Err(WireError::from_shard(&error)),
        Err(_) => Err(WireError::new(
            ErrorCode::RequestTimedOut,
            format!("not acknowledged in time: it {INDETERMINATE_WRITE_WORDS}"),
        )),
    }
}

/// A partition's batch proposed (what to wait for, its records), or refused.
type Submitted = Result<(Pending, u64), WireError>;

/// Waits for each partition's batch, counting it: what each came to, and the request's
/// result (the first refusal's code).
async fn await_partitions(
    metrics: &ShardMetrics,
    acks: Acks,
    submitted: Vec<(u32, u64, Submitted)>,
    deadline: Instant,
) -> (Vec<PartitionOutcome>, Result<(), ErrorCode>) {
    let mut outcomes = Vec::with_capacity(submitted.len());
    let mut answered = Ok(());
    for (partition, bytes, submission) in submitted {
        let (result, records) = match submission {
            Ok((pending, records)) => (await_batch(pending, deadline).await, records),
            Err(error) => (Err(error), 0),
        };
        match &result {
            Ok((_, true)) => metrics.produce_duplicate(acks, records, bytes),
            Ok((_, false)) => metrics.produce_batch(acks, Ok(()), records, bytes),
            Err(error) => metrics.produce_batch(acks, Err(error.code), records, bytes),
        }
        answered = answered.and(result.as_ref().map(|_| ()).map_err(|e| e.code));
        let result = result.map(|(offset, _)| offset);
        outcomes.push(PartitionOutcome { partition, result });
    }
    (outcomes, answered)
}

async fn handle_produce(
    groups: &HostedGroups,
    correlation_id: u64,
    produce: wire::ProduceRequest<'_>,
) -> AnswerFrame {
    let (started, acks, metrics) = (Instant::now(), produce.acks(), groups.metrics());
    let topic = match topic_or_error(&groups.first(), produce.topic()) {
        Ok(topic) => topic,
        Err(error) => {
            metrics.produce_answered(acks, Err(error.code), started.elapsed());
            metrics.rejected(error.code);
            return error_response(correlation_id, &error);
        }
    };
    let deadline = Instant::now() + Duration::from_millis(u64::from(produce.timeout_ms().max(1)));
    // Propose every partition's batch first (one flush can take them all), then wait.
    let submitted: Vec<(u32, u64, _)> = produce
        .batches()
        .iter()
        .flatten()
        .map(|entry| {
            let core = &groups.for_partition(&topic, entry.partition());
            let bytes = entry.batch().map_or(0, |b| b.len() as u64);
            let submitted = submit_batch(core, &topic, entry, acks);
            (entry.partition(), bytes, submitted)
        })
        .collect();
    let (outcomes, answered) = await_partitions(metrics, acks, submitted, deadline).await;
    metrics.produce_answered(acks, answered, started.elapsed());
    let mut builder = FlatBufferBuilder::with_capacity(256);
    let results: Vec<_> = outcomes
        .iter()
        .map(|outcome| {
            let (error, base_offset) = match &outcome.result {
                Ok(offset) => (None, *offset),
                Err(error) => (Some(build_error(&mut builder, error)), 0),
            };
            wire::PartitionProduceResult::create(
                &mut builder,
                &wire::PartitionProduceResultArgs {
                    partition: outcome.partition,
                    error,
                    base_offset,
                },
            )
        })
        .collect();
    let results = builder.create_vector(&results);
    let topic_name = builder.create_string(&topic.name);
    let body = wire::ProduceResponse::create(
        &mut builder,
        &wire::ProduceResponseArgs {
            topic: Some(topic_name),
            results: Some(results),
        },
    );
    finish_response(
        builder,
        correlation_id,
        ResponseBody::ProduceResponse,
        Some(body.as_union_value()),
        None,
    )
}

async fn handle_fetch(
    core: &Rc<ShardCore>,
    correlation_id: u64,
    fetch: wire::FetchRequest<'_>,
) -> Result<(AnswerFrame, bool), WireError> {
    let topic = topic_or_error(core, fetch.topic())?;
    check_partition(core, &topic, fetch.partition())?;
    if !core.serves_reads() {
        // A new leader answers reads once it has applied what its predecessors committed.
        return Err(WireError::not_leader(core));
    }
    let deadline =
        Instant::now() + Duration::from_millis(u64::from(fetch.max_wait_ms())).min(MAX_FETCH_WAIT);
    let mut waited = false;
    loop {
        let (locations, start_offset, high_watermark) = {
            let state = core.state();
            match state.partition(topic.id, fetch.partition()) {
                // A bounded slice, found by a binary search: a poll's cost does not
                // grow with the partition.
                Some(index) => (
                    index
                        .fetch_window(fetch.offset(), MAX_BATCHES_PER_FETCH)
                        .to_vec(),
                    index.start_offset(),
                    index.high_watermark(),
                ),
                None => (Vec::new(), 0, 0),
            }
        };
        if fetch.offset() < start_offset {
            return Err(WireError::new(
                ErrorCode::OffsetOutOfRange,
                format!(
                    "offset {} was removed by retention; the partition starts at {start_offset}",
                    fetch.offset()
                ),
            ));
        }
        if fetch.offset() > high_watermark {
            return Err(WireError::new(
                ErrorCode::OffsetOutOfRange,
                format!(
                    "offset {} is past the end ({high_watermark})",
                    fetch.offset()
                ),
            ));
        }
        let now = Instant::now();
        if locations.is_empty() && now < deadline {
            let arrival = core.data_arrival();
            waited = true;
            let _ =
                glommio::timer::timeout(deadline - now, async { Ok(arrival.recv().await) }).await;
            continue;
        }
        let answer = read_batches(
            core,
            correlation_id,
            &topic,
            fetch.partition(),
            fetch.max_bytes(),
            high_watermark,
            &locations,
        )
        .await?;
        return Ok((answer, waited));
    }
}

async fn read_batches(
    core: &Rc<ShardCore>,
    correlation_id: u64,
    topic: &TopicInfo,
    partition: u32,
    max_bytes: u32,
    high_watermark: u64,
    locations: &[crate::broker::state::BatchLocation],
) -> Result<AnswerFrame, WireError> {
    let mut batches = Vec::new();
    let mut total = 0usize;
    // The answer stays within the frame limit, whatever `max_bytes` asks (its first batch
    // always fits: config keeps the frame limit above the largest batch and the headroom).
    let answer_limit =
        (core.config.max_frame_bytes as usize).saturating_sub(FETCH_ANSWER_HEADROOM_BYTES);
    let mut answer_bytes = 0usize;
    let indexes: Vec<u64> = locations.iter().map(|l| l.log_index).collect();
    if !indexes.windows(2).all(|pair| pair[0] < pair[1]) {
        return Err(WireError::new(
            ErrorCode::InternalError,
            "the partition's index is out of log order",
        ));
    }
    // About what the answer takes (an entry's payload is its batch and a few bytes of
    // framing); the loop below decides exactly. One read of the log for all of them.
    let read_bytes = (max_bytes as usize).min(answer_limit) + FETCH_ANSWER_BYTES_PER_BATCH;
    let entries = match core.log.read_indexes(&indexes, read_bytes as u64).await {
        Ok(entries) => entries,
        // Retention removed the first entry after the index was read: the offset is
        // gone, as the next fetch would be told (not an internal error).
        Err(LogError::Compacted { .. }) => {
            return Err(WireError::new(
                ErrorCode::OffsetOutOfRange,
                format!(
                    "offset {} was removed by retention while it was read",
                    locations.first().map_or(0, |l| l.base_offset)
                ),
            ))
        }
        Err(error) => return Err(WireError::new(ErrorCode::InternalError, error.to_string())),
    };
    // Room for the whole answer at once: a builder growing from a small buffer copied
    // what it held at every doubling.
    let read: usize = entries.iter().map(|entry| entry.data.len()).sum();
    let mut builder = FlatBufferBuilder::with_capacity(
        read + entries.len() * FETCH_ANSWER_BYTES_PER_BATCH + FETCH_ANSWER_HEADROOM_BYTES,
    );
    for (location, entry) in locations.iter().zip(&entries) {
        assert_eq!(entry.index, location.log_index, "a sparse read in order");
        let Ok(BrokerEntry::RecordBatch {
            batch,
            batch_crc32c,
            ..
        }) = BrokerEntry::decode(&entry.data)
        else {
            return Err(WireError::new(
                ErrorCode::InternalError,
                "index points at a non-batch entry",
            ));
        };
        let batch_answer_bytes = batch.len() + FETCH_ANSWER_BYTES_PER_BATCH;
        if !batches.is_empty()
            && (total + batch.len() > max_bytes as usize
                || answer_bytes + batch_answer_bytes > answer_limit)
        {
            break;
        }
        total += batch.len();
        answer_bytes += batch_answer_bytes;
        let bytes = byte_vector(&mut builder, batch);
        batches.push(wire::FetchedBatch::create(
            &mut builder,
            &wire::FetchedBatchArgs {
                base_offset: location.base_offset,
                crc32c: batch_crc32c,
                batch: Some(bytes),
            },
        ));
    }
    let batches = builder.create_vector(&batches);
    let topic_name = builder.create_string(&topic.name);
    let body = wire::FetchResponse::create(
        &mut builder,
        &wire::FetchResponseArgs {
            topic: Some(topic_name),
            partition,
            high_watermark,
            batches: Some(batches),
        },
    );
    Ok(finish_response(
        builder,
        correlation_id,
        ResponseBody::FetchResponse,
        Some(body.as_union_value()),
        None,
    ))
}

/// The topics a metadata request names: distinct, valid names, at most
/// `MAX_NAMED_TOPICS` (an answer about each named topic it may not see stays small).
fn named_topics<'a>(
    named: Option<flatbuffers::Vector<'a, flatbuffers::ForwardsUOffset<&'a str>>>,
) -> Result<Vec<&'a str>, WireError> {
    let mut names: Vec<&str> = named
        .iter()
        .flatten()
        .filter(|n| valid_topic_name(n))
        .collect();
    names.sort_unstable();
    names.dedup();
    if names.len() > MAX_NAMED_TOPICS {
        return Err(WireError::new(
            ErrorCode::InvalidRequest,
            format!("a metadata request names at most {MAX_NAMED_TOPICS} topics (none: all)"),
        ));
    }
    Ok(names)
}

/// Why the caller may not describe a topic, if it may not.
type TopicRefusal<'a> = &'a dyn Fn(&str) -> Option<WireError>;

/// Every topic the caller may describe; a topic the request names that it may not is
/// answered with `NotAuthorized` (whether it exists or not: the refusal tells nothing).
fn handle_metadata(
    core: &Rc<ShardCore>,
    correlation_id: u64,
    (named, refusal): (&[&str], TopicRefusal<'_>),
) -> AnswerFrame {
    let visible = |topic: &str| refusal(topic).is_none();
    let mut builder = FlatBufferBuilder::with_capacity(1024);
    // This node first (clients take it as the one that answered), then every other
    // node whose address is known: the bootstrap's and those that joined. A removed node
    // is named by no one, itself included (clients are not sent to it), unless a group
    // was placed on it anyway (a topic created as it was removed): its partitions stay
    // reachable.
    let mut known: Vec<(u32, String, u16)> = Vec::new();
    {
        let placement = core.placement();
        let named = |node: u64| {
            !placement.is_removed(node)
                || (0..placement.shards()).any(|shard| !placement.groups_on(node, shard).is_empty())
        };
        if named(u64::from(core.config.node_id)) {
            known.push((
                core.config.node_id,
                core.config.host.clone(),
                core.config.base_port,
            ));
        }
        for node in placement.node_ids() {
            if let Some(peer) = placement
                .address_of(node)
                .filter(|p| p.node_id != core.config.node_id && named(node))
            {
                known.push((peer.node_id, peer.host.clone(), peer.base_port));
            }
        }
    }
    let nodes: Vec<_> = known
        .iter()
        .map(|(node_id, host, base_port)| {
            let host = builder.create_string(host);
            wire::NodeMetadata::create(
                &mut builder,
                &wire::NodeMetadataArgs {
                    node_id: *node_id,
                    host: Some(host),
                    base_port: *base_port,
                    shards: core.config.shards,
                },
            )
        })
        .collect();
    let nodes = builder.create_vector(&nodes);
    let topics: Vec<TopicInfo> = core
        .state()
        .request_topics()
        .list()
        .filter(|topic| visible(&topic.name))
        .cloned()
        .collect();
    let mut topic_offsets = Vec::with_capacity(topics.len());
    for topic in &topics {
        let partitions: Vec<_> = (0..topic.partitions)
            .map(|partition| {
                let group = core.placement().group_of_partition(topic, partition);
                let replicas: Vec<u32> = core
                    .placement()
                    .replicas(group)
                    .iter()
                    .map(|&node| node as u32)
                    .collect();
                let replicas = builder.create_vector(&replicas);
                let leader_node = core.leader_of(group);
                let shard = client_shard(core, group, leader_node);
                wire::PartitionMetadata::create(
                    &mut builder,
                    &wire::PartitionMetadataArgs {
                        partition,
                        leader_node,
                        shard,
                        replicas: Some(replicas),
                    },
                )
            })
            .collect();
        let partitions = builder.create_vector(&partitions);
        let name = builder.create_string(&topic.name);
        topic_offsets.push(wire::TopicMetadata::create(
            &mut builder,
            &wire::TopicMetadataArgs {
                name: Some(name),
                error: None,
                partitions: Some(partitions),
            },
        ));
    }
    for name in named {
        if let Some(refused) = refusal(name) {
            let error = build_error(&mut builder, &refused);
            let name = builder.create_string(name);
            topic_offsets.push(wire::TopicMetadata::create(
                &mut builder,
                &wire::TopicMetadataArgs {
                    name: Some(name),
                    error: Some(error),
                    partitions: None,
                },
            ));
        }
    }
    let topics = builder.create_vector(&topic_offsets);
    let body = wire::MetadataResponse::create(
        &mut builder,
        &wire::MetadataResponseArgs {
            nodes: Some(nodes),
            topics: Some(topics),
            epoch: core.metadata_epoch(),
        },
    );
    finish_response(
        builder,
        correlation_id,
        ResponseBody::MetadataResponse,
        Some(body.as_union_value()),
        None,
    )
}

fn handle_list_topics(
    core: &Rc<ShardCore>,
    correlation_id: u64,
    visible: &dyn Fn(&str) -> bool,
) -> AnswerFrame {
    let mut builder = FlatBufferBuilder::with_capacity(512);
    let topics: Vec<TopicInfo> = core
        .state()
        .request_topics()
        .list()
        .filter(|topic| visible(&topic.name))
        .cloned()
        .collect();
    let summaries: Vec<_> = topics
        .iter()
        .map(|topic| {
            let name = builder.create_string(&topic.name);
            wire::TopicSummary::create(
                &mut builder,
                &wire::TopicSummaryArgs {
                    name: Some(name),
                    partitions: topic.partitions,
                },
            )
        })
        .collect();
    let summaries = builder.create_vector(&summaries);
    let body = wire::ListTopicsResponse::create(
        &mut builder,
        &wire::ListTopicsResponseArgs {
            topics: Some(summaries),
        },
    );
    finish_response(
        builder,
        correlation_id,
        ResponseBody::ListTopicsResponse,
        Some(body.as_union_value()),
        None,
    )
}

/// Topic names: 1 to 200 characters of letters, digits, `.`, `_` and `-`.
pub fn valid_topic_name(name: &str) -> bool {
    (1..=200).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// The shard clients reach `group` at: the one running it on its leader, else on this
/// node, else on its first voter (a client told no leader asks that node).
fn client_shard(core: &ShardCore, group: GroupId, leader: u32) -> u32 {
    let first_voter = core.placement().replicas(group).first().copied();
    [
        Some(u64::from(leader)),
        Some(u64::from(core.config.node_id)),
        first_voter,
    ]
    .into_iter()
    .flatten()
    .find_map(|node| core.placement().shard_on(node, group))
    .unwrap_or(0)
}

/// Topic changes go to the controller group's leader (shard 0 of its leader node).
pub(super) async fn controller_only(core: &ShardCore) -> Result<(), WireError> {
    if core.group != CONTROLLER_GROUP {
        // Straight to the controller's leader when it is known.
        let leader = core.leader_of(CONTROLLER_GROUP);
        let at_leader = (leader != 0)
            .then(|| core.replica_address(leader, CONTROLLER_GROUP))
            .flatten();
        let wrong_shard = WireError::wrong_shard(core, CONTROLLER_GROUP);
        return Err(WireError {
            message: "topic changes are made by the controller group".to_string(),
            leader_address: at_leader.or(wrong_shard.leader_address),
            ..wrong_shard
        });
    }
    // A new leader answers (and checks requests against its tables) once it has applied
    // what its predecessors committed: until then the users, rules and topics it holds
    // may be those of before its term. It waits for that here, a bounded time (clients
    // do not retry a "not leader" that names the node they asked).
    let deadline = Instant::now() + CONTROLLER_CATCH_UP_WAIT;
    while core.is_leader() && !core.serves_reads() && Instant::now() < deadline {
        glommio::timer::sleep(CATCH_UP_RECHECK).await;
    }
    if !core.serves_reads() {
        return Err(WireError::not_leader(core));
    }
    Ok(())
}

async fn handle_create_topic(
    core: &Rc<ShardCore>,
    correlation_id: u64,
    create: wire::CreateTopicRequest<'_>,
) -> Result<AnswerFrame, WireError> {
    controller_only(core).await?;
    let name = create.name().unwrap_or_default();
    if !valid_topic_name(name) {
        return Err(WireError::new(
            ErrorCode::InvalidRequest,
            format!("invalid topic name {name:?}: use 1-200 of [A-Za-z0-9._-]"),
        ));
    }
    if create.partitions() == 0 || create.partitions() > MAX_PARTITIONS {
        return Err(WireError::new(
            ErrorCode::InvalidRequest,
            format!("partitions must be 1 to {MAX_PARTITIONS}"),
        ));
    }
    if core.state().topics.get(name).is_some() {
        return Err(WireError::new(
            ErrorCode::TopicAlreadyExists,
            format!("topic {name:?} exists"),
        ));
    }
    let topic_id = core.reserve_topic_id();
    let (groups, new_groups) = groups_of_new_topic(core, topic_id, &create)?;
    let data = BrokerEntry::CreateTopic {
        topic_id,
        partitions: create.partitions(),
        name,
        groups,
        new_groups,
    }
    .encode();
    match propose_admin(core, data).await? {
        Applied::TopicsChanged => {}
        _ if core.state().topics.get(name).is_none() => {
            // A creation raced this one to the new group's id: nothing was created.
            return Err(WireError::new(
                ErrorCode::NotLeader,
                format!("topic {name:?} not created: a concurrent creation took its group's id; ask again"),
            ));
        }
        _ => {
            return Err(WireError::new(
                ErrorCode::TopicAlreadyExists,
                format!("topic {name:?} exists"),
            ))
        }
    }
    let mut builder = FlatBufferBuilder::with_capacity(128);
    let name = builder.create_string(name);
    let body = wire::CreateTopicResponse::create(
        &mut builder,
        &wire::CreateTopicResponseArgs { name: Some(name) },
    );
    Ok(finish_response(
        builder,
        correlation_id,
        ResponseBody::CreateTopicResponse,
        Some(body.as_union_value()),
        None,
    ))
}

/// Where a new topic's partitions go. With the cluster's replication factor (asked as
/// 0, or the same number): spread over the data groups. With another: a new group of
/// that many replicas, placed on the least loaded nodes and shards, holds them all.
fn groups_of_new_topic(
    core: &ShardCore,
    topic_id: u32,
    create: &wire::CreateTopicRequest<'_>,
) -> Result<(Vec<u32>, Vec<PlacedGroup>), WireError> {
    let partitions = create.partitions();
    let asked = u32::from(create.replication_factor());
    let nodes = core.placement().node_ids();
    // The bootstrap data groups' size: nodes that joined later do not enlarge them.
    let cluster = core
        .config
        .replication_factor
        .min(core.config.voters().len() as u32);
    if asked == 0 || asked == cluster {
        let groups = core.placement().groups_for_new_topic(topic_id, partitions);
        return Ok((groups, Vec::new()));
    }
    if ![1, 3, 5].contains(&asked) {
        return Err(WireError::new(
            ErrorCode::InvalidRequest,
            format!("replication factor must be 1, 3 or 5, not {asked}"),
        ));
    }
    if asked as usize > nodes.len() {
        return Err(WireError::new(
            ErrorCode::InvalidRequest,
            format!(
                "replication factor {asked} needs {asked} nodes; the cluster has {}",
                nodes.len()
            ),
        ));
    }
    // Only on nodes the controller's leader hears from: a group placed on a node that
    // is down would have no replica running. Too few of them is for now (retriable).
    // Never on a node draining or removed.
    let mut live = core.live_nodes(&nodes);
    {
        let state = core.state();
        live.retain(|&node| state.topics.moves().node_state(node) == NodeService::Active);
    }
    let mut placed = core
        .placement()
        .place_new_group(0, &live, asked as usize)
        .map_err(|error| {
            WireError::new(
                ErrorCode::NotEnoughReplicas,
                format!("{error} (nodes heard from by the controller's leader)"),
            )
        })?;
    // The id is taken only once the group can be placed: ids skip nothing.
    placed.id = core.reserve_group_id();
    Ok((vec![placed.id; partitions as usize], vec![placed]))
}

/// Proposes an admin change (topics, consumer groups) and waits (bounded) for it to be
/// applied.
pub(super) async fn propose_admin(
    core: &Rc<ShardCore>,
    data: Vec<u8>,
) -> Result<Applied, WireError> {
    let pending = core
        .submit(data, true)
        .map_err(|error| WireError::from_shard(&error))?;
    match glommio::timer::timeout(crate::constants::ADMIN_TIMEOUT, async {
        Ok(pending.wait().await)
    })
    .await
    {
        Ok(answer) => answer.map_err(|error| WireError::from_shard(&error)),
        Err(_) => Err(WireError::new(
            ErrorCode::RequestTimedOut,
            "the change was not committed in time (it may still be)",
        )),
    }
}

async fn handle_delete_topic(
    core: &Rc<ShardCore>,
    correlation_id: u64,
    delete: wire::DeleteTopicRequest<'_>,
) -> Result<AnswerFrame, WireError> {
    controller_only(core).await?;
    let topic = topic_or_error(core, delete.name())?;
    let data = BrokerEntry::DeleteTopic { topic_id: topic.id }.encode();
    propose_admin(core, data).await?;
    let mut builder = FlatBufferBuilder::with_capacity(128);
    let name = builder.create_string(&topic.name);
    let body = wire::DeleteTopicResponse::create(
        &mut builder,
        &wire::DeleteTopicResponseArgs { name: Some(name) },
    );
    Ok(finish_response(
        builder,
        correlation_id,
        ResponseBody::DeleteTopicResponse,
        Some(body.as_union_value()),
        None,
    ))
}

/// A partition's first kept offset and end, from its leader.
fn handle_partition_offsets(
    core: &Rc<ShardCore>,
    correlation_id: u64,
    asked: wire::PartitionOffsetsRequest<'_>,
) -> Result<AnswerFrame, WireError> {
    let topic = topic_or_error(core, asked.topic())?;
    check_partition(core, &topic, asked.partition())?;
    if !core.serves_reads() {
        return Err(WireError::not_leader(core));
    }
    let (start_offset, high_watermark) = core
        .state()
        .partition(topic.id, asked.partition())
        .map_or((0, 0), |p| (p.start_offset(), p.high_watermark()));
    let mut builder = FlatBufferBuilder::with_capacity(128);
    let name = builder.create_string(&topic.name);
    let body = wire::PartitionOffsetsResponse::create(
        &mut builder,
        &wire::PartitionOffsetsResponseArgs {
            topic: Some(name),
            partition: asked.partition(),
            start_offset,
            high_watermark,
        },
    );
    Ok(finish_response(
        builder,
        correlation_id,
        ResponseBody::PartitionOffsetsResponse,
        Some(body.as_union_value()),
        None,
    ))
}

/// The state of every group this shard runs.
fn handle_status(groups: &HostedGroups, correlation_id: u64) -> AnswerFrame {
    let mut builder = FlatBufferBuilder::with_capacity(512);
    let statuses: Vec<_> = groups
        .all()
        .iter()
        .map(|core| group_status(&mut builder, core))
        .collect();
    let groups_list = builder.create_vector(&statuses);
    let moves: Vec<_> = groups
        .moves_under_way()
        .iter()
        .map(|moving| {
            wire::MoveStatus::create(
                &mut builder,
                &wire::MoveStatusArgs {
                    group: moving.group,
                    from_node: moving.from,
                    to_node: moving.to.0,
                    to_shard: moving.to.1,
                },
            )
        })
        .collect();
    let moves = builder.create_vector(&moves);
    let states = groups.inactive_nodes();
    let of = |wanted: NodeService| -> Vec<u64> {
        states
            .iter()
            .filter(|(_, s)| *s == wanted)
            .map(|(n, _)| *n)
            .collect()
    };
    let draining = builder.create_vector(&of(NodeService::Draining));
    let removed = builder.create_vector(&of(NodeService::Removed));
    let placement: Vec<_> = groups
        .placed_members()
        .iter()
        .map(|(group, members)| {
            let members = builder.create_vector(members);
            wire::GroupMembers::create(
                &mut builder,
                &wire::GroupMembersArgs {
                    group: *group,
                    members: Some(members),
                },
            )
        })
        .collect();
    let placement = builder.create_vector(&placement);
    let body = wire::StatusResponse::create(
        &mut builder,
        &wire::StatusResponseArgs {
            groups: Some(groups_list),
            moves: Some(moves),
            draining: Some(draining),
            removed: Some(removed),
            placement: Some(placement),
        },
    );
    finish_response(
        builder,
        correlation_id,
        ResponseBody::StatusResponse,
        Some(body.as_union_value()),
        None,
    )
}

fn group_status<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    core: &ShardCore,
) -> WIPOffset<wire::GroupStatus<'b>> {
    let status = core.status();
    let followers: Vec<_> = status
        .followers
        .iter()
        .map(|&(node, matched, lag)| {
            wire::FollowerStatus::create(builder, &wire::FollowerStatusArgs { node, matched, lag })
        })
        .collect();
    let followers = builder.create_vector(&followers);
    let members: Vec<u32> = {
        let membership = core.membership_view().membership;
        let mut members: Vec<u64> = membership
            .voters
            .iter()
            .chain(&membership.outgoing)
            .chain(&membership.learners)
            .copied()
            .collect();
        members.sort_unstable();
        members.dedup();
        members
            .into_iter()
            .filter_map(|n| u32::try_from(n).ok())
            .collect()
    };
    let members = builder.create_vector(&members);
    let role = builder.create_string(status.role);
    let records = core.state().records_stored();
    wire::GroupStatus::create(
        builder,
        &wire::GroupStatusArgs {
            node: core.config.node_id,
            group: core.group.0,
            role: Some(role),
            leader: status.leader,
            term: status.term,
            commit: status.commit,
            applied: status.applied,
            last_index: status.last_index,
            durable: status.durable,
            followers: Some(followers),
            members: Some(members),
            records,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client tells an indeterminate write from a refusal by these words
    /// (`client::cluster::produce_refusal`): only the first says them.
    #[test]
    fn only_an_indeterminate_write_is_answered_with_the_indeterminate_words() {
        let indeterminate = WireError::from_shard(&ShardError::Indeterminate);
        assert_eq!(indeterminate.code, ErrorCode::NotLeader);
        assert!(indeterminate.message.contains(INDETERMINATE_WRITE_WORDS));
        for refused in [
            ShardError::NotLeader,
            ShardError::Overloaded,
            ShardError::ShuttingDown,
        ] {
            let answer = WireError::from_shard(&refused);
            assert!(
                !answer.message.contains(INDETERMINATE_WRITE_WORDS),
                "{refused}"
            );
        }
    }
}
