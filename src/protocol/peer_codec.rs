//! Raft messages to and from peer frames (`schemas/peer.fbs`), field for field, so a
//! message crosses the network unchanged, and the hello that opens a peer connection.
//! Decoding verifies the frame first and refuses unknown message or entry types: a peer's
//! bytes are input like any other. Whether a decoded frame is *admitted* (sender, group,
//! message types) is `transport::ingress`'s job.

use flatbuffers::{FlatBufferBuilder, WIPOffset};
use raft::eraftpb::{
    ConfState, Entry, EntryType, Message, MessageType, Snapshot, SnapshotMetadata,
};

use crate::protocol::byte_vector::byte_vector;
use crate::protocol::codec::verifier_options;
use crate::protocol::error::ProtocolError;
use crate::protocol::peer_wire as wire;

/// File identifier of peer frames.
pub const PEER_IDENTIFIER: &str = "KPR1";

/// Version of the peer protocol a hello announces; a node refuses a hello with another.
/// 2: the connection opens with the receiver's challenge, the hello proves the secret.
pub const PEER_FORMAT_VERSION: u16 = 2;

/// `PeerHello.auth_method`: no proof of identity (always refused).
pub const AUTH_METHOD_NONE: u8 = 0;

/// `PeerHello.auth_method`: an HMAC-SHA256 with the cluster's shared secret over the
/// receiver's challenge and the hello (`security::PeerSecret::hello_proof`).
pub const AUTH_METHOD_SECRET: u8 = 1;

/// `PeerHello.auth_method`: the connection is mutual TLS; its certificate names the node
/// (`security::tls::certificate_names_node`). Refused on a plain connection.
pub const AUTH_METHOD_TLS: u8 = 2;

/// The hello that opens a peer connection (`PeerHello` in the schema).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerHello {
    /// The sending node.
    pub node_id: u32,
    /// The replica group the connection carries.
    pub group: u32,
    /// The sender's peer protocol version.
    pub format_version: u16,
    /// How the sender proves its identity (`AUTH_METHOD_SECRET`).
    pub auth_method: u8,
    /// The proof (empty with `AUTH_METHOD_NONE`).
    pub auth_data: Vec<u8>,
}

impl PeerHello {
    /// A hello from `node_id` for `group` without a proof (always refused: tests use it).
    pub fn new(node_id: u32, group: u32) -> PeerHello {
        PeerHello {
            node_id,
            group,
            format_version: PEER_FORMAT_VERSION,
            auth_method: AUTH_METHOD_NONE,
            auth_data: Vec::new(),
        }
    }

    /// A hello from `node_id` for `group` over mutual TLS (its certificate proves it).
    pub fn over_tls(node_id: u32, group: u32) -> PeerHello {
        PeerHello {
            auth_method: AUTH_METHOD_TLS,
            ..PeerHello::new(node_id, group)
        }
    }

    /// This build's hello from `node_id` for `group`, proving the cluster's secret.
    pub fn proven(node_id: u32, group: u32, proof: Vec<u8>) -> PeerHello {
        PeerHello {
            auth_method: AUTH_METHOD_SECRET,
            auth_data: proof,
            ..PeerHello::new(node_id, group)
        }
    }
}

/// A decoded peer frame.
#[derive(Debug, PartialEq)]
pub struct PeerMessages {
    /// The node that sent it.
    pub from_node: u32,
    /// The replica group (shard index).
    pub group: u32,
    /// The Raft messages, in the order they were sent.
    pub messages: Vec<Message>,
    /// The hello, on the first frame of a connection.
    pub hello: Option<PeerHello>,
    /// The challenge, on the receiver's one frame.
    pub challenge: Option<PeerChallenge>,
}

/// The receiver's challenge that opens a peer connection (`PeerChallenge`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerChallenge {
    /// The receiving node.
    pub node_id: u32,
    /// The nonce the sender's hello proof must cover.
    pub nonce: Vec<u8>,
}

fn message_type_from(value: u8) -> Option<MessageType> {
    use MessageType::*;
    const TYPES: [MessageType; 19] = [
        MsgHup,
        MsgBeat,
        MsgPropose,
        MsgAppend,
        MsgAppendResponse,
        MsgRequestVote,
        MsgRequestVoteResponse,
        MsgSnapshot,
        MsgHeartbeat,
        MsgHeartbeatResponse,
        MsgUnreachable,
        MsgSnapStatus,
        MsgCheckQuorum,
        MsgTransferLeader,
        MsgTimeoutNow,
        MsgReadIndex,
        MsgReadIndexResp,
        MsgRequestPreVote,
        MsgRequestPreVoteResponse,
    ];
    TYPES.get(usize::from(value)).copied()
}

fn entry_type_from(value: u8) -> Option<EntryType> {
    match value {
        0 => Some(EntryType::EntryNormal),
        1 => Some(EntryType::EntryConfChange),
        2 => Some(EntryType::EntryConfChangeV2),
        _ => None,
    }
}

fn build_entry<'a>(
    builder: &mut FlatBufferBuilder<'a>,
    entry: &Entry,
) -> WIPOffset<wire::PeerEntry<'a>> {
    let data = byte_vector(builder, &entry.data);
    let context = byte_vector(builder, &entry.context);
    wire::PeerEntry::create(
        builder,
        &wire::PeerEntryArgs {
            entry_type: entry.get_entry_type() as u8,
            term: entry.term,
            index: entry.index,
            data: Some(data),
            context: Some(context),
        },
    )
}

fn build_snapshot<'a>(
    builder: &mut FlatBufferBuilder<'a>,
    snapshot: &Snapshot,
) -> WIPOffset<wire::PeerSnapshot<'a>> {
    let metadata = snapshot.get_metadata();
    let conf = metadata.get_conf_state();
    let voters = builder.create_vector(&conf.voters);
    let learners = builder.create_vector(&conf.learners);
    let voters_outgoing = builder.create_vector(&conf.voters_outgoing);
    let learners_next = builder.create_vector(&conf.learners_next);
    let data = byte_vector(builder, &snapshot.data);
    wire::PeerSnapshot::create(
        builder,
        &wire::PeerSnapshotArgs {
            index: metadata.index,
            term: metadata.term,
            voters: Some(voters),
            learners: Some(learners),
            voters_outgoing: Some(voters_outgoing),
            learners_next: Some(learners_next),
            auto_leave: conf.auto_leave,
            data: Some(data),
        },
    )
}

fn build_message<'a>(
    builder: &mut FlatBufferBuilder<'a>,
    message: &Message,
) -> WIPOffset<wire::RaftMessage<'a>> {
    let entries: Vec<_> = message
        .entries
        .iter()
        .map(|entry| build_entry(builder, entry))
        .collect();
    let entries = builder.create_vector(&entries);
    let snapshot = message
        .snapshot
        .as_ref()
        .map(|snapshot| build_snapshot(builder, snapshot));
    let context = byte_vector(builder, &message.context);
    wire::RaftMessage::create(
        builder,
        &wire::RaftMessageArgs {
            msg_type: message.get_msg_type() as u8,
            to: message.to,
            from: message.from,
            term: message.term,
            log_term: message.log_term,
            index: message.index,
            entries: Some(entries),
            commit: message.commit,
            commit_term: message.commit_term,
            snapshot,
            request_snapshot: message.request_snapshot,
            reject: message.reject,
            reject_hint: message.reject_hint,
            context: Some(context),
            priority: message.priority,
        },
    )
}

/// An encoded peer frame behind its 4-byte length prefix, in the buffer it was built in
/// (the prefix is written in front of the frame: sent without another copy).
pub struct PrefixedFrame {
    buffer: Vec<u8>,
    start: usize,
}

impl PrefixedFrame {
    /// The frame itself.
    pub fn payload(&self) -> &[u8] {
        &self.buffer[self.start + FRAME_PREFIX_BYTES..]
    }

    /// The length prefix and the frame, as written to a connection. The prefix of a frame
    /// of 4 GiB or more is wrong: such a frame is only ever sent in chunks (`payload`).
    pub fn with_prefix(&self) -> &[u8] {
        &self.buffer[self.start..]
    }
}

const FRAME_PREFIX_BYTES: usize = 4;

/// Encodes the messages of one Ready pass for one peer.
pub fn encode_peer_frame(from_node: u32, group: u32, messages: &[Message]) -> Vec<u8> {
    encode_prefixed_peer_frame(from_node, group, messages)
        .payload()
        .to_vec()
}

/// Encodes the messages of one Ready pass for one peer, behind its length prefix.
pub fn encode_prefixed_peer_frame(
    from_node: u32,
    group: u32,
    messages: &[Message],
) -> PrefixedFrame {
    let capacity = 256
        + messages
            .iter()
            .map(|m| 128 + m.entries.iter().map(|e| e.data.len() + 64).sum::<usize>())
            .sum::<usize>();
    let mut builder = FlatBufferBuilder::with_capacity(capacity);
    let built: Vec<_> = messages
        .iter()
        .map(|message| build_message(&mut builder, message))
        .collect();
    let messages = builder.create_vector(&built);
    let frame = wire::PeerFrame::create(
        &mut builder,
        &wire::PeerFrameArgs {
            from_node,
            group,
            messages: Some(messages),
            hello: None,
            challenge: None,
        },
    );
    builder.finish(frame, Some(PEER_IDENTIFIER));
    let (mut buffer, head) = builder.collapse();
    let length = u32::try_from(buffer.len() - head).unwrap_or(u32::MAX);
    if head < FRAME_PREFIX_BYTES {
        // The estimate left no room in front (never seen): one copy.
        let mut prefixed = Vec::with_capacity(buffer.len() - head + FRAME_PREFIX_BYTES);
        prefixed.extend_from_slice(&length.to_le_bytes());
        prefixed.extend_from_slice(&buffer[head..]);
        return PrefixedFrame {
            buffer: prefixed,
            start: 0,
        };
    }
    let start = head - FRAME_PREFIX_BYTES;
    buffer[start..head].copy_from_slice(&length.to_le_bytes());
    PrefixedFrame { buffer, start }
}

/// Encodes the first frame of a peer connection: the hello, no messages.
pub fn encode_peer_hello(hello: &PeerHello) -> Vec<u8> {
    let mut builder = FlatBufferBuilder::with_capacity(128 + hello.auth_data.len());
    let auth_data = byte_vector(&mut builder, &hello.auth_data);
    let built = wire::PeerHello::create(
        &mut builder,
        &wire::PeerHelloArgs {
            node_id: hello.node_id,
            group: hello.group,
            format_version: hello.format_version,
            auth_method: hello.auth_method,
            auth_data: Some(auth_data),
        },
    );
    let frame = wire::PeerFrame::create(
        &mut builder,
        &wire::PeerFrameArgs {
            from_node: hello.node_id,
            group: hello.group,
            messages: None,
            hello: Some(built),
            challenge: None,
        },
    );
    builder.finish(frame, Some(PEER_IDENTIFIER));
    builder.finished_data().to_vec()
}

/// Encodes the receiver's one frame of a peer connection: its challenge, for `group`.
pub fn encode_peer_challenge(challenge: &PeerChallenge, group: u32) -> Vec<u8> {
    let mut builder = FlatBufferBuilder::with_capacity(128 + challenge.nonce.len());
    let nonce = byte_vector(&mut builder, &challenge.nonce);
    let built = wire::PeerChallenge::create(
        &mut builder,
        &wire::PeerChallengeArgs {
            node_id: challenge.node_id,
            nonce: Some(nonce),
        },
    );
    let frame = wire::PeerFrame::create(
        &mut builder,
        &wire::PeerFrameArgs {
            from_node: challenge.node_id,
            group,
            messages: None,
            hello: None,
            challenge: Some(built),
        },
    );
    builder.finish(frame, Some(PEER_IDENTIFIER));
    builder.finished_data().to_vec()
}

fn decode_challenge(challenge: wire::PeerChallenge<'_>) -> PeerChallenge {
    PeerChallenge {
        node_id: challenge.node_id(),
        nonce: challenge
            .nonce()
            .map(|v| v.bytes().to_vec())
            .unwrap_or_default(),
    }
}

fn decode_hello(hello: wire::PeerHello<'_>) -> PeerHello {
    PeerHello {
        node_id: hello.node_id(),
        group: hello.group(),
        format_version: hello.format_version(),
        auth_method: hello.auth_method(),
        auth_data: hello
            .auth_data()
            .map(|v| v.bytes().to_vec())
            .unwrap_or_default(),
    }
}

fn decode_entry(entry: wire::PeerEntry<'_>) -> Result<Entry, ProtocolError> {
    let entry_type = entry_type_from(entry.entry_type()).ok_or_else(|| {
        ProtocolError::Malformed(format!("unknown entry type {}", entry.entry_type()))
    })?;
    let mut out = Entry {
        term: entry.term(),
        index: entry.index(),
        ..Default::default()
    };
    out.set_entry_type(entry_type);
    out.data = entry
        .data()
        .map(|v| v.bytes().to_vec())
        .unwrap_or_default()
        .into();
    out.context = entry
        .context()
        .map(|v| v.bytes().to_vec())
        .unwrap_or_default()
        .into();
    Ok(out)
}

fn decode_snapshot(snapshot: wire::PeerSnapshot<'_>) -> Snapshot {
    let list =
        |v: Option<flatbuffers::Vector<'_, u64>>| v.map(|v| v.iter().collect()).unwrap_or_default();
    let conf_state = ConfState {
        voters: list(snapshot.voters()),
        learners: list(snapshot.learners()),
        voters_outgoing: list(snapshot.voters_outgoing()),
        learners_next: list(snapshot.learners_next()),
        auto_leave: snapshot.auto_leave(),
        ..Default::default()
    };
    let mut metadata = SnapshotMetadata {
        index: snapshot.index(),
        term: snapshot.term(),
        ..Default::default()
    };
    metadata.set_conf_state(conf_state);
    let mut out = Snapshot {
        data: snapshot
            .data()
            .map(|v| v.bytes().to_vec())
            .unwrap_or_default()
            .into(),
        ..Default::default()
    };
    out.set_metadata(metadata);
    out
}

fn decode_message(message: wire::RaftMessage<'_>) -> Result<Message, ProtocolError> {
    let msg_type = message_type_from(message.msg_type()).ok_or_else(|| {
        ProtocolError::Malformed(format!("unknown message type {}", message.msg_type()))
    })?;
    let mut out = Message {
        to: message.to(),
        from: message.from(),
        term: message.term(),
        log_term: message.log_term(),
        index: message.index(),
        commit: message.commit(),
        commit_term: message.commit_term(),
        request_snapshot: message.request_snapshot(),
        reject: message.reject(),
        reject_hint: message.reject_hint(),
        priority: message.priority(),
        ..Default::default()
    };
    out.set_msg_type(msg_type);
    out.context = message
        .context()
        .map(|v| v.bytes().to_vec())
        .unwrap_or_default()
        .into();
    out.entries = message
        .entries()
        .iter()
        .flatten()
        .map(decode_entry)
        .collect::<Result<Vec<_>, _>>()?
        .into();
    if let Some(snapshot) = message.snapshot() {
        out.set_snapshot(decode_snapshot(snapshot));
    }
    Ok(out)
}

/// Whether `bytes` carry the peer file identifier (any length: flatbuffers'
/// `buffer_has_identifier` panics on fewer than 8 bytes).
pub fn is_peer_frame(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && flatbuffers::buffer_has_identifier(bytes, PEER_IDENTIFIER, false)
}

/// Verifies and decodes a peer frame.
pub fn decode_peer_frame(bytes: &[u8]) -> Result<PeerMessages, ProtocolError> {
    if !is_peer_frame(bytes) {
        return Err(ProtocolError::Malformed("not a peer frame".to_string()));
    }
    let options = verifier_options(bytes.len());
    let frame = wire::root_as_peer_frame_with_opts(&options, bytes)
        .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    let messages = frame
        .messages()
        .iter()
        .flatten()
        .map(decode_message)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PeerMessages {
        from_node: frame.from_node(),
        group: frame.group(),
        messages,
        hello: frame.hello().map(decode_hello),
        challenge: frame.challenge().map(decode_challenge),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample_messages() -> Vec<Message> {
        let mut append = Message {
            to: 2,
            from: 1,
            term: 7,
            log_term: 6,
            index: 99,
            commit: 98,
            commit_term: 6,
            ..Default::default()
        };
        append.set_msg_type(MessageType::MsgAppend);
        let mut conf = Entry {
            term: 7,
            index: 101,
            data: b"conf".to_vec().into(),
            context: b"ctx".to_vec().into(),
            ..Default::default()
        };
        conf.set_entry_type(EntryType::EntryConfChangeV2);
        append.entries = vec![
            Entry {
                term: 7,
                index: 100,
                data: vec![9u8; 300].into(),
                ..Default::default()
            },
            conf,
        ]
        .into();
        let mut vote = Message {
            to: 3,
            from: 1,
            term: 8,
            reject: true,
            reject_hint: 44,
            priority: -2,
            context: b"campaign".to_vec().into(),
            ..Default::default()
        };
        vote.set_msg_type(MessageType::MsgRequestPreVoteResponse);
        let mut snapshot_message = Message {
            to: 2,
            from: 1,
            term: 8,
            request_snapshot: 5,
            ..Default::default()
        };
        snapshot_message.set_msg_type(MessageType::MsgSnapshot);
        let mut metadata = SnapshotMetadata {
            index: 500,
            term: 7,
            ..Default::default()
        };
        metadata.set_conf_state(ConfState {
            voters: vec![1, 2, 3],
            learners: vec![4],
            auto_leave: true,
            ..Default::default()
        });
        let mut snapshot = Snapshot {
            data: b"state".to_vec().into(),
            ..Default::default()
        };
        snapshot.set_metadata(metadata);
        snapshot_message.set_snapshot(snapshot);
        let mut heartbeat = Message {
            to: 2,
            from: 1,
            term: 8,
            commit: 120,
            ..Default::default()
        };
        heartbeat.set_msg_type(MessageType::MsgHeartbeat);
        vec![append, vote, snapshot_message, heartbeat]
    }

    #[test]
    fn every_field_of_every_message_survives_the_trip() {
        let messages = sample_messages();
        let decoded = decode_peer_frame(&encode_peer_frame(4, 2, &messages)).unwrap();
        assert_eq!(
            decoded,
            PeerMessages {
                from_node: 4,
                group: 2,
                messages,
                hello: None,
                challenge: None,
            }
        );
    }

    /// The prefixed frame is the frame behind its length, as `append_frame` writes it.
    #[test]
    fn a_prefixed_frame_is_its_length_then_the_frame() {
        for messages in [sample_messages(), Vec::new()] {
            let prefixed = encode_prefixed_peer_frame(4, 2, &messages);
            let mut expected = Vec::new();
            crate::protocol::frame::append_frame(&mut expected, prefixed.payload()).unwrap();
            assert_eq!(prefixed.with_prefix(), expected.as_slice());
            assert_eq!(
                decode_peer_frame(prefixed.payload()).unwrap().messages,
                messages
            );
        }
    }

    #[test]
    fn a_hello_round_trips_in_a_frame_without_messages() {
        let mut hello = PeerHello::new(3, 5);
        assert_eq!(
            (hello.format_version, hello.auth_method),
            (PEER_FORMAT_VERSION, AUTH_METHOD_NONE)
        );
        hello.auth_method = 7;
        hello.auth_data = b"proof".to_vec();
        let decoded = decode_peer_frame(&encode_peer_hello(&hello)).unwrap();
        assert_eq!(
            decoded,
            PeerMessages {
                from_node: 3,
                group: 5,
                messages: Vec::new(),
                hello: Some(hello),
                challenge: None,
            }
        );
        let challenge = PeerChallenge {
            node_id: 2,
            nonce: vec![9; 32],
        };
        let decoded = decode_peer_frame(&encode_peer_challenge(&challenge, 5)).unwrap();
        assert_eq!((decoded.from_node, decoded.group), (2, 5));
        assert!(decoded.messages.is_empty() && decoded.hello.is_none());
        assert_eq!(decoded.challenge, Some(challenge));
    }

    #[test]
    fn every_message_type_round_trips() {
        for value in 0..19u8 {
            let mut message = Message {
                to: 1,
                from: 2,
                ..Default::default()
            };
            message.set_msg_type(message_type_from(value).unwrap());
            let decoded =
                decode_peer_frame(&encode_peer_frame(1, 0, std::slice::from_ref(&message)))
                    .unwrap();
            assert_eq!(decoded.messages, vec![message]);
        }
        assert_eq!(message_type_from(19), None);
    }

    #[test]
    fn frames_of_any_length_are_told_apart_without_panicking() {
        for length in 0..12 {
            assert!(!is_peer_frame(&vec![0u8; length]));
        }
        assert!(is_peer_frame(&encode_peer_frame(1, 0, &[])));
        assert!(!is_peer_frame(
            &crate::protocol::codec::encode_fetch_request(1, "t", 0, 0, 1, 0)
        ));
    }

    #[test]
    fn unknown_types_and_foreign_bytes_are_refused() {
        let mut frame = encode_peer_frame(1, 0, &sample_messages()[3..]);
        assert!(decode_peer_frame(b"definitely not a frame").is_err());
        let client = crate::protocol::codec::encode_fetch_request(1, "t", 0, 0, 1, 0);
        assert!(
            decode_peer_frame(&client).is_err(),
            "a client frame is not a peer frame"
        );
        // Find the msg_type byte of the heartbeat (8) and make it unknown.
        let position = frame.iter().rposition(|&b| b == 8).unwrap();
        frame[position] = 200;
        let _ = decode_peer_frame(&frame); // refused or decoded, never a panic
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]
        #[test]
        fn mutated_frames_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
            let mut frame = encode_peer_frame(1, 0, &sample_messages());
            for (position, value) in flips {
                let at = position.index(frame.len());
                frame[at] = value;
            }
            let _ = decode_peer_frame(&frame);
        }
    }
}
