//! Consumer group requests of `ClusterClient`: join, heartbeat, leave, offset commit and
//! fetch, list, describe, delete. Each goes to the group's coordinating shard (its
//! address from the metadata, then the broker's `WrongShard`/`NotLeader` hints) and is
//! retried while the error is retriable (an election, a coordinator moving).

use flatbuffers::{FlatBufferBuilder, ForwardsUOffset, Vector, WIPOffset};

use crate::broker::groups::{AssignStrategy, GroupMode};
use crate::client::cluster::{check_response, ClusterClient};
use crate::client::error::ClientError;
use crate::controller::placement::coordinator_index;
use crate::protocol::codec::{decode_response, encode_request};
use crate::protocol::wire::{self, RequestBody};

/// A topic's partition.
pub type TopicPartition = (String, u32);

/// How a member joins.
#[derive(Clone, Debug)]
pub struct JoinOptions {
    /// The application's name (member ids start with it).
    pub client: String,
    /// Stable name of this instance (its offsets in broadcasting mode); empty: none.
    pub instance: String,
    /// Clustering (each partition to one member) or broadcasting (every member reads all).
    pub mode: GroupMode,
    /// How partitions are dealt out (clustering).
    pub strategy: AssignStrategy,
    /// Without a heartbeat this long, the member is removed.
    pub session_timeout_ms: u32,
}

impl Default for JoinOptions {
    fn default() -> Self {
        JoinOptions {
            client: "consumer".to_string(),
            instance: String::new(),
            mode: GroupMode::Clustering,
            strategy: AssignStrategy::Sticky,
            session_timeout_ms: crate::constants::DEFAULT_SESSION_TIMEOUT_MS,
        }
    }
}

/// A member's place in its group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    /// Its id.
    pub member_id: String,
    /// The group's generation.
    pub generation: u64,
    /// Its partitions, sorted.
    pub assignment: Vec<TopicPartition>,
}

/// A committed offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupOffset {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// The next offset to consume.
    pub offset: u64,
    /// What the committer attached.
    pub metadata: String,
    /// Whose (broadcasting mode); empty: the group's.
    pub instance: String,
}

/// One member as `describe_group` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMemberInfo {
    /// Its id.
    pub member_id: String,
    /// Its application's name.
    pub client: String,
    /// Its instance.
    pub instance: String,
    /// Its session timeout.
    pub session_timeout_ms: u32,
    /// Its partitions.
    pub assignment: Vec<TopicPartition>,
}

/// A group as its coordinator holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDescription {
    /// Name.
    pub name: String,
    /// Generation.
    pub generation: u64,
    /// Clustering or broadcasting.
    pub mode: GroupMode,
    /// Assignment strategy.
    pub strategy: AssignStrategy,
    /// Members.
    pub members: Vec<GroupMemberInfo>,
    /// Committed offsets.
    pub offsets: Vec<GroupOffset>,
}

/// A group as `list_groups` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupSummary {
    /// Name.
    pub name: String,
    /// Members.
    pub members: u32,
    /// Generation.
    pub generation: u64,
    /// Clustering or broadcasting.
    pub mode: GroupMode,
}

fn assignment_of(
    list: Option<Vector<'_, ForwardsUOffset<wire::TopicPartitions<'_>>>>,
) -> Vec<TopicPartition> {
    let mut out: Vec<TopicPartition> = list
        .iter()
        .flatten()
        .flat_map(|tp| {
            let topic = tp.topic().unwrap_or_default().to_string();
            tp.partitions()
                .into_iter()
                .flatten()
                .map(move |p| (topic.clone(), p))
        })
        .collect();
    out.sort();
    out
}

fn offsets_of(
    list: Option<Vector<'_, ForwardsUOffset<wire::PartitionOffset<'_>>>>,
) -> Vec<GroupOffset> {
    list.iter()
        .flatten()
        .map(|o| GroupOffset {
            topic: o.topic().unwrap_or_default().to_string(),
            partition: o.partition(),
            offset: u64::try_from(o.offset()).unwrap_or(0),
            metadata: o.metadata().unwrap_or_default().to_string(),
            instance: o.instance().unwrap_or_default().to_string(),
        })
        .collect()
}

fn unexpected(what: &str) -> ClientError {
    ClientError::Unexpected(format!("not a {what} answer"))
}

/// Encodes a request whose body `build` makes.
fn request<'b, T>(
    id: u64,
    kind: RequestBody,
    build: impl FnOnce(&mut FlatBufferBuilder<'b>) -> WIPOffset<T>,
) -> Vec<u8> {
    let mut builder = FlatBufferBuilder::new();
    let body = build(&mut builder);
    encode_request(&mut builder, id, kind, body.as_union_value())
}

impl ClusterClient {
    /// Where to send a group's requests first: its coordinating shard on the first node
    /// (the shard's answer points to its leader when that is elsewhere). A guess from
    /// the bootstrap placement (group i on shard i of every node): a wrong one is
    /// answered with the right address.
    fn coordinator_hint(&mut self, group: &str) -> Option<String> {
        let (_, host, base_port, shards) = self.metadata().ok()?.nodes.first()?.clone();
        let shard = coordinator_index(group, shards.max(1));
        Some(format!("{host}:{}", u32::from(base_port) + shard))
    }

    /// Sends a group request (retried while retriable) and checks its answer's error.
    fn group_call(
        &mut self,
        group: &str,
        build: impl Fn(u64) -> Vec<u8>,
    ) -> Result<bytes::Bytes, ClientError> {
        self.with_retries(|client| {
            let hint = client.coordinator_hint(group);
            let answer = client.call_cluster(hint, &build)?;
            check_response(&decode_response(&answer)?)?;
            Ok(answer)
        })
    }

    /// Joins `group` subscribed to `topics` (`member_id` empty: as a new member), once
    /// the join is committed.
    pub fn join_group(
        &mut self,
        group: &str,
        member_id: &str,
        topics: &[String],
        options: &JoinOptions,
    ) -> Result<Membership, ClientError> {
        let answer = self.group_call(group, |id| {
            request(id, RequestBody::JoinGroupRequest, |b| {
                let names: Vec<_> = topics.iter().map(|t| b.create_string(t)).collect();
                let args = wire::JoinGroupRequestArgs {
                    group: Some(b.create_string(group)),
                    member_id: Some(b.create_string(member_id)),
                    client: Some(b.create_string(&options.client)),
                    instance: Some(b.create_string(&options.instance)),
                    mode: wire::GroupMode(options.mode.code()),
                    strategy: wire::AssignStrategy(options.strategy.code()),
                    session_timeout_ms: options.session_timeout_ms,
                    topics: Some(b.create_vector(&names)),
                };
                wire::JoinGroupRequest::create(b, &args)
            })
        })?;
        let response = decode_response(&answer)?;
        let joined = response
            .body_as_join_group_response()
            .ok_or_else(|| unexpected("join"))?;
        Ok(Membership {
            member_id: joined.member_id().unwrap_or_default().to_string(),
            generation: joined.generation(),
            assignment: assignment_of(joined.assignment()),
        })
    }

    /// Keeps a member's session alive; answers the group's generation and the member's
    /// partitions (a new generation: a rebalance happened).
    pub fn heartbeat(
        &mut self,
        group: &str,
        member_id: &str,
        generation: u64,
    ) -> Result<Membership, ClientError> {
        let answer = self.group_call(group, |id| {
            request(id, RequestBody::HeartbeatRequest, |b| {
                let args = wire::HeartbeatRequestArgs {
                    group: Some(b.create_string(group)),
                    member_id: Some(b.create_string(member_id)),
                    generation,
                };
                wire::HeartbeatRequest::create(b, &args)
            })
        })?;
        let response = decode_response(&answer)?;
        let beat = response
            .body_as_heartbeat_response()
            .ok_or_else(|| unexpected("heartbeat"))?;
        Ok(Membership {
            member_id: member_id.to_string(),
            generation: beat.generation(),
            assignment: assignment_of(beat.assignment()),
        })
    }

    /// Leaves the group (its partitions go to the others at once).
    pub fn leave_group(&mut self, group: &str, member_id: &str) -> Result<(), ClientError> {
        self.group_call(group, |id| {
            request(id, RequestBody::LeaveGroupRequest, |b| {
                let args = wire::LeaveGroupRequestArgs {
                    group: Some(b.create_string(group)),
                    member_id: Some(b.create_string(member_id)),
                };
                wire::LeaveGroupRequest::create(b, &args)
            })
        })?;
        Ok(())
    }

    /// Commits offsets (the next offset to consume per partition) once a majority has
    /// them. A member commits at its generation; `member_id` empty commits for a group
    /// without members.
    pub fn commit_offsets(
        &mut self,
        group: &str,
        member_id: &str,
        generation: u64,
        offsets: &[(TopicPartition, u64, String)],
    ) -> Result<(), ClientError> {
        self.group_call(group, |id| {
            request(id, RequestBody::OffsetCommitRequest, |b| {
                let built: Vec<_> = offsets
                    .iter()
                    .map(|((topic, partition), offset, metadata)| {
                        let args = wire::PartitionOffsetArgs {
                            topic: Some(b.create_string(topic)),
                            partition: *partition,
                            offset: i64::try_from(*offset).unwrap_or(i64::MAX),
                            metadata: Some(b.create_string(metadata)),
                            instance: None,
                        };
                        wire::PartitionOffset::create(b, &args)
                    })
                    .collect();
                let args = wire::OffsetCommitRequestArgs {
                    group: Some(b.create_string(group)),
                    member_id: Some(b.create_string(member_id)),
                    generation,
                    offsets: Some(b.create_vector(&built)),
                };
                wire::OffsetCommitRequest::create(b, &args)
            })
        })?;
        Ok(())
    }

    /// The committed offsets of a group (of `instance` in broadcasting mode), for
    /// `topics` (empty: all).
    pub fn fetch_offsets(
        &mut self,
        group: &str,
        instance: &str,
        topics: &[String],
    ) -> Result<Vec<GroupOffset>, ClientError> {
        let answer = self.group_call(group, |id| {
            request(id, RequestBody::OffsetFetchRequest, |b| {
                let names: Vec<_> = topics.iter().map(|t| b.create_string(t)).collect();
                let args = wire::OffsetFetchRequestArgs {
                    group: Some(b.create_string(group)),
                    instance: Some(b.create_string(instance)),
                    topics: Some(b.create_vector(&names)),
                };
                wire::OffsetFetchRequest::create(b, &args)
            })
        })?;
        let response = decode_response(&answer)?;
        let fetched = response
            .body_as_offset_fetch_response()
            .ok_or_else(|| unexpected("offset fetch"))?;
        Ok(offsets_of(fetched.offsets()))
    }

    /// A group as its coordinator holds it.
    pub fn describe_group(&mut self, group: &str) -> Result<GroupDescription, ClientError> {
        let answer = self.group_call(group, |id| {
            request(id, RequestBody::DescribeGroupRequest, |b| {
                let args = wire::DescribeGroupRequestArgs {
                    group: Some(b.create_string(group)),
                };
                wire::DescribeGroupRequest::create(b, &args)
            })
        })?;
        let response = decode_response(&answer)?;
        let found = response
            .body_as_describe_group_response()
            .ok_or_else(|| unexpected("describe"))?;
        let members = found
            .members()
            .iter()
            .flatten()
            .map(|m| GroupMemberInfo {
                member_id: m.member_id().unwrap_or_default().to_string(),
                client: m.client().unwrap_or_default().to_string(),
                instance: m.instance().unwrap_or_default().to_string(),
                session_timeout_ms: m.session_timeout_ms(),
                assignment: assignment_of(m.assignment()),
            })
            .collect();
        Ok(GroupDescription {
            name: group.to_string(),
            generation: found.generation(),
            mode: GroupMode::from_code(found.mode().0).unwrap_or(GroupMode::Clustering),
            strategy: AssignStrategy::from_code(found.strategy().0)
                .unwrap_or(AssignStrategy::Sticky),
            members,
            offsets: offsets_of(found.offsets()),
        })
    }

    /// Deletes an empty group and its offsets.
    pub fn delete_group(&mut self, group: &str) -> Result<(), ClientError> {
        self.group_call(group, |id| {
            request(id, RequestBody::DeleteGroupRequest, |b| {
                let args = wire::DeleteGroupRequestArgs {
                    group: Some(b.create_string(group)),
                };
                wire::DeleteGroupRequest::create(b, &args)
            })
        })?;
        Ok(())
    }

    /// Every group of the cluster: asks every shard of every node for the groups
    /// coordinated by the replica groups it leads, and joins the answers (a group
    /// listed twice, by an old leader and a new one, once).
    pub fn list_groups(&mut self) -> Result<Vec<GroupSummary>, ClientError> {
        let nodes = self.refresh_metadata()?.nodes.clone();
        let mut out: Vec<GroupSummary> = Vec::new();
        let mut answered = false;
        let mut last = None;
        for (_, host, base_port, shards) in nodes {
            for shard in 0..shards {
                let address = format!("{host}:{}", u32::from(base_port) + shard);
                let answer = match self.call(&address, |id| {
                    request(id, RequestBody::ListGroupsRequest, |b| {
                        wire::ListGroupsRequest::create(b, &wire::ListGroupsRequestArgs {})
                    })
                }) {
                    Ok(answer) => answer,
                    Err(error) => {
                        last = Some(error);
                        continue;
                    }
                };
                let response = decode_response(&answer)?;
                check_response(&response)?;
                answered = true;
                let listed = response
                    .body_as_list_groups_response()
                    .ok_or_else(|| unexpected("list groups"))?;
                for g in listed.groups().iter().flatten() {
                    let name = g.name().unwrap_or_default().to_string();
                    if out.iter().any(|known| known.name == name) {
                        continue;
                    }
                    out.push(GroupSummary {
                        name,
                        members: g.members(),
                        generation: g.generation(),
                        mode: GroupMode::from_code(g.mode().0).unwrap_or(GroupMode::Clustering),
                    });
                }
            }
        }
        if !answered {
            return Err(last.unwrap_or_else(|| unexpected("list groups")));
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}
