//! Splitting the messages for one peer into frames below the receiver's frame limit.
//!
//! The messages of one Ready pass for a peer share frames, but a frame may not exceed the
//! receiver's `max_frame_bytes` (it refuses bigger ones). raft-rs's `batch_append` merges
//! appends, and many appends can be ready at once, so one Ready pass can hold more than a
//! frame. `split_into_frames` packs messages into frames in order, greedily, by an upper
//! bound of their encoded size (`encoded_size_estimate`, checked against the encoder by a
//! property test), and cuts a `MsgAppend` too big for one frame into consecutive appends:
//!
//! ```text
//! MsgAppend{index 10, log_term 3, entries 11..=40}   (too big for one frame)
//!   ─▶ MsgAppend{index 10, log_term 3, entries 11..=25}
//!      MsgAppend{index 25, log_term term(25), entries 26..=40}   same term, commit, ...
//! ```
//!
//! Each chunk is a well-formed append that follows the previous one (its `index` and
//! `log_term` are the previous chunk's last entry's), so the follower appends them one
//! after the other and answers each. A single entry always fits (config validation keeps
//! `max_entry_payload_bytes + PEER_FRAME_HEADROOM_BYTES` within the frame limit); a
//! message that cannot be cut (a snapshot larger than the limit) gets a frame of its own,
//! which the caller sends as chunks (`chunks`: each within the limit, joined back by the
//! receiving connection).
//!
//! Pure (no I/O, no glommio): the simulator calls it too.

use raft::eraftpb::{Entry, Message, MessageType};

/// Upper bound of a `PeerFrame`'s own bytes besides its messages: the root offset and
/// file identifier, the frame table and its vtable, the messages vector's length,
/// alignment padding.
pub const PEER_FRAME_FIXED_BYTES: usize = 128;

/// Upper bound of a `RaftMessage`'s fixed bytes: its table (ten 8-byte fields, three
/// offsets, two one-byte fields), its vtable (15 fields), each field's alignment padding,
/// and its offset in the frame's messages vector.
const MESSAGE_FIXED_BYTES: usize = 256;

/// Upper bound of a vector's bytes besides its elements: the length and alignment.
const VECTOR_FIXED_BYTES: usize = 16;

/// Upper bound of a `PeerEntry`'s bytes besides its data and context: table, vtable,
/// padding, the two vectors' fixed bytes, its offset in the entries vector.
const ENTRY_FIXED_BYTES: usize = 128;

/// Upper bound of a `PeerSnapshot`'s bytes besides its member lists' ids and its data.
const SNAPSHOT_FIXED_BYTES: usize = 256;

/// An upper bound of the bytes `message` adds to a peer frame
/// (`encode_peer_frame(.., messages).len() <= PEER_FRAME_FIXED_BYTES + Σ estimate`).
pub fn encoded_size_estimate(message: &Message) -> usize {
    let entries: usize = message.entries.iter().map(entry_size_estimate).sum();
    let snapshot = message.snapshot.as_ref().map_or(0, |snapshot| {
        let conf = snapshot.get_metadata().get_conf_state();
        let members = conf.voters.len()
            + conf.learners.len()
            + conf.voters_outgoing.len()
            + conf.learners_next.len();
        SNAPSHOT_FIXED_BYTES + 8 * members + snapshot.data.len()
    });
    MESSAGE_FIXED_BYTES + 2 * VECTOR_FIXED_BYTES + message.context.len() + entries + snapshot
}

fn entry_size_estimate(entry: &Entry) -> usize {
    ENTRY_FIXED_BYTES + entry.data.len() + entry.context.len()
}

/// Packs `messages` into frames, in order, each estimated at most `max_frame_bytes`
/// encoded; a `MsgAppend` too big for a frame is cut into consecutive appends first.
pub fn split_into_frames(messages: Vec<Message>, max_frame_bytes: usize) -> Vec<Vec<Message>> {
    let budget = max_frame_bytes.saturating_sub(PEER_FRAME_FIXED_BYTES);
    let mut frames = Vec::new();
    let mut current: Vec<Message> = Vec::new();
    let mut current_bytes = 0;
    for message in messages {
        let pieces = if message.get_msg_type() == MessageType::MsgAppend
            && message.entries.len() > 1
            && encoded_size_estimate(&message) > budget
        {
            split_append(message, budget)
        } else {
            vec![message]
        };
        for piece in pieces {
            let size = encoded_size_estimate(&piece);
            if !current.is_empty() && current_bytes + size > budget {
                frames.push(std::mem::take(&mut current));
                current_bytes = 0;
            }
            current_bytes += size;
            current.push(piece);
        }
    }
    if !current.is_empty() {
        frames.push(current);
    }
    frames
}

/// Cuts an append into consecutive appends of at most `budget` estimated bytes each (an
/// entry too big for any is alone in its chunk). Every chunk keeps the message's fields
/// (term, commit, ...); the first keeps its `index`/`log_term`, each later one takes the
/// previous chunk's last entry's index and term.
fn split_append(mut message: Message, budget: usize) -> Vec<Message> {
    let entries = message.take_entries().into_vec();
    let header_bytes = encoded_size_estimate(&message);
    let mut chunks: Vec<Vec<Entry>> = Vec::new();
    let mut chunk: Vec<Entry> = Vec::new();
    let mut chunk_bytes = header_bytes;
    for entry in entries {
        let size = entry_size_estimate(&entry);
        if !chunk.is_empty() && chunk_bytes + size > budget {
            chunks.push(std::mem::take(&mut chunk));
            chunk_bytes = header_bytes;
        }
        chunk_bytes += size;
        chunk.push(entry);
    }
    chunks.push(chunk);
    let (mut index, mut log_term) = (message.index, message.log_term);
    chunks
        .into_iter()
        .map(|entries| {
            let mut piece = message.clone();
            piece.index = index;
            piece.log_term = log_term;
            if let Some(last) = entries.last() {
                (index, log_term) = (last.index, last.term);
            }
            piece.set_entries(entries.into());
            piece
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::constants::PEER_FRAME_HEADROOM_BYTES;
    use crate::protocol::peer_codec::encode_peer_frame;
    use proptest::prelude::*;
    use raft::eraftpb::{ConfState, EntryType, Snapshot, SnapshotMetadata};

    fn entry(index: u64, term: u64, data_bytes: usize) -> Entry {
        Entry {
            index,
            term,
            data: vec![index as u8; data_bytes].into(),
            ..Default::default()
        }
    }

    fn append(index: u64, log_term: u64, entries: Vec<Entry>) -> Message {
        let mut message = Message {
            to: 2,
            from: 1,
            term: 9,
            index,
            log_term,
            commit: index + 3,
            commit_term: 8,
            ..Default::default()
        };
        message.set_msg_type(MessageType::MsgAppend);
        message.set_entries(entries.into());
        message
    }

    fn of_type(msg_type: MessageType, commit: u64) -> Message {
        let mut message = Message {
            to: 2,
            from: 1,
            term: 9,
            commit,
            ..Default::default()
        };
        message.set_msg_type(msg_type);
        message
    }

    fn encoded_bytes(frame: &[Message]) -> usize {
        encode_peer_frame(1, 0, frame).len()
    }

    /// Undoes the cutting: every input message in order, each cut append's chunks
    /// chained (same fields; each chunk follows the previous one's last entry) and
    /// covering exactly its entries.
    fn assert_same_messages(input: &[Message], frames: &[Vec<Message>]) {
        let mut output = frames.iter().flatten().peekable();
        for original in input {
            let first = output.next().expect("every message is sent");
            if original.get_msg_type() != MessageType::MsgAppend
                || first.entries.len() == original.entries.len()
            {
                assert_eq!(first, original, "unchanged and in order");
                continue;
            }
            let mut entries: Vec<Entry> = first.entries.to_vec();
            let mut expected = original.clone();
            expected.set_entries(first.entries.clone());
            assert_eq!(first, &expected, "the first chunk keeps index and log_term");
            while entries.len() < original.entries.len() {
                let chunk = output.next().expect("the rest of a cut append");
                let last = entries.last().expect("chunks are never empty");
                let mut expected = original.clone();
                expected.index = last.index;
                expected.log_term = last.term;
                expected.set_entries(chunk.entries.clone());
                assert_eq!(chunk, &expected, "a chunk follows the previous one");
                assert!(!chunk.entries.is_empty());
                entries.extend(chunk.entries.iter().cloned());
            }
            assert_eq!(entries, original.entries.to_vec(), "the same entries");
        }
        assert!(output.next().is_none(), "nothing more");
    }

    #[test]
    fn small_messages_share_one_frame_in_order() {
        let input = vec![
            append(10, 3, vec![entry(11, 3, 100), entry(12, 4, 100)]),
            of_type(MessageType::MsgHeartbeat, 5),
            of_type(MessageType::MsgRequestVote, 0),
        ];
        let frames = split_into_frames(input.clone(), 1 << 20);
        assert_eq!(frames, vec![input]);
        assert!(split_into_frames(Vec::new(), 1 << 20).is_empty());
    }

    #[test]
    fn a_big_append_is_cut_into_chained_appends_each_frame_below_the_limit() {
        let limit = 20_000;
        let entries: Vec<Entry> = (11..111).map(|i| entry(i, 3 + i / 50, 1000)).collect();
        let input = vec![
            of_type(MessageType::MsgHeartbeat, 7),
            append(10, 3, entries),
            of_type(MessageType::MsgHeartbeat, 8),
        ];
        let frames = split_into_frames(input.clone(), limit);
        assert!(frames.len() >= 6, "{} frames", frames.len());
        for frame in &frames {
            assert!(encoded_bytes(frame) <= limit);
        }
        assert_same_messages(&input, &frames);
        let chunks: Vec<&Message> = frames.iter().flatten().skip(1).take(2).collect();
        assert_eq!((chunks[0].index, chunks[0].log_term), (10, 3));
        let last = chunks[0].entries.last().unwrap();
        assert_eq!(
            (chunks[1].index, chunks[1].log_term),
            (last.index, last.term)
        );
    }

    #[test]
    fn an_entry_of_the_largest_payload_fits_a_frame_with_the_headroom() {
        let payload = 1 << 20;
        let limit = payload + PEER_FRAME_HEADROOM_BYTES as usize;
        let mut big = entry(12, 3, payload - 10);
        big.context = vec![1u8; 10].into();
        let input = vec![append(10, 3, vec![entry(11, 3, 10), big, entry(13, 3, 10)])];
        let frames = split_into_frames(input.clone(), limit);
        for frame in &frames {
            assert!(encoded_bytes(frame) <= limit);
        }
        assert_same_messages(&input, &frames);
    }

    #[test]
    fn a_message_that_cannot_be_cut_gets_a_frame_of_its_own() {
        let mut snapshot_message = of_type(MessageType::MsgSnapshot, 0);
        let mut snapshot = Snapshot {
            data: vec![0u8; 5000].into(),
            ..Default::default()
        };
        snapshot.mut_metadata().index = 4;
        snapshot_message.set_snapshot(snapshot);
        let heartbeat = of_type(MessageType::MsgHeartbeat, 1);
        let input = vec![
            heartbeat.clone(),
            snapshot_message.clone(),
            heartbeat.clone(),
        ];
        let frames = split_into_frames(input, 2000);
        assert_eq!(
            frames,
            vec![
                vec![heartbeat.clone()],
                vec![snapshot_message],
                vec![heartbeat]
            ]
        );
    }

    fn any_entry() -> impl Strategy<Value = Entry> {
        (any::<u64>(), any::<u64>(), 0usize..400, 0usize..40, 0u8..3).prop_map(
            |(index, term, data, context, kind)| {
                let mut entry = Entry {
                    index,
                    term,
                    data: vec![7u8; data].into(),
                    context: vec![8u8; context].into(),
                    ..Default::default()
                };
                entry.set_entry_type(match kind {
                    0 => EntryType::EntryNormal,
                    1 => EntryType::EntryConfChange,
                    _ => EntryType::EntryConfChangeV2,
                });
                entry
            },
        )
    }

    fn any_message() -> impl Strategy<Value = Message> {
        (
            (0u8..19, any::<[u64; 10]>(), any::<bool>(), any::<i64>()),
            proptest::collection::vec(any_entry(), 0..6),
            proptest::option::of((
                proptest::collection::vec(any::<u64>(), 0..8),
                proptest::collection::vec(any::<u64>(), 0..4),
                0usize..500,
            )),
            0usize..50,
        )
            .prop_map(
                |((kind, fields, reject, priority), entries, snapshot, context)| {
                    let mut message = Message {
                        to: fields[0],
                        from: fields[1],
                        term: fields[2],
                        log_term: fields[3],
                        index: fields[4],
                        commit: fields[5],
                        commit_term: fields[6],
                        request_snapshot: fields[7],
                        reject_hint: fields[8],
                        reject,
                        priority,
                        context: vec![3u8; context].into(),
                        ..Default::default()
                    };
                    let types = [
                        MessageType::MsgAppend,
                        MessageType::MsgHeartbeat,
                        MessageType::MsgSnapshot,
                        MessageType::MsgRequestVote,
                        MessageType::MsgTimeoutNow,
                    ];
                    message.set_msg_type(types[usize::from(kind) % types.len()]);
                    message.set_entries(entries.into());
                    if let Some((voters, learners, data)) = snapshot {
                        let mut metadata = SnapshotMetadata {
                            index: fields[9],
                            term: fields[2],
                            ..Default::default()
                        };
                        metadata.set_conf_state(ConfState {
                            voters,
                            learners_next: learners,
                            auto_leave: reject,
                            ..Default::default()
                        });
                        let mut snapshot = Snapshot {
                            data: vec![5u8; data].into(),
                            ..Default::default()
                        };
                        snapshot.set_metadata(metadata);
                        message.set_snapshot(snapshot);
                    }
                    message
                },
            )
    }

    /// A chain of appends like a leader's: consecutive entries, any sizes.
    fn any_append() -> impl Strategy<Value = Message> {
        (
            1u64..1000,
            proptest::collection::vec((0usize..3000, 0u64..3), 1..40),
        )
            .prop_map(|(index, sizes)| {
                let mut term = 5;
                let entries = sizes
                    .iter()
                    .enumerate()
                    .map(|(i, &(bytes, bump))| {
                        term += bump;
                        entry(index + 1 + i as u64, term, bytes)
                    })
                    .collect();
                append(index, 5, entries)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// The estimate bounds what the encoder writes, for one message and for many.
        #[test]
        fn the_estimate_bounds_the_encoded_size(
            messages in proptest::collection::vec(any_message(), 0..6),
        ) {
            for message in &messages {
                let encoded = encoded_bytes(std::slice::from_ref(message));
                prop_assert!(encoded <= PEER_FRAME_FIXED_BYTES + encoded_size_estimate(message));
            }
            let estimated: usize = messages.iter().map(encoded_size_estimate).sum();
            prop_assert!(encoded_bytes(&messages) <= PEER_FRAME_FIXED_BYTES + estimated);
        }

        /// Any mix of appends and small messages: order kept, cut appends chained over
        /// the same entries, every frame below the limit.
        #[test]
        fn frames_keep_order_and_stay_below_the_limit(
            messages in proptest::collection::vec(
                prop_oneof![any_append(), any_message().prop_filter(
                    "no snapshot bigger than a frame",
                    |m| encoded_size_estimate(m) < 4000 || m.get_msg_type() == MessageType::MsgAppend,
                )],
                0..8,
            ),
            limit in 8000usize..40_000,
        ) {
            let frames = split_into_frames(messages.clone(), limit);
            for frame in &frames {
                prop_assert!(!frame.is_empty());
                prop_assert!(encoded_bytes(frame) <= limit, "{} > {limit}", encoded_bytes(frame));
            }
            assert_same_messages(&messages, &frames);
        }
    }
}
