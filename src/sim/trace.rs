//! A run's trace: the last events, readable, for a failure's report, and a hash of all of
//! them, so two runs of one seed can be compared bit for bit.

use std::collections::VecDeque;

use raft::eraftpb::MessageType;

use crate::replication::events::DiskWork;
use crate::sim::world::Event;

/// Trace lines kept for a failure's report.
pub const TRACE_LINES: usize = 400;

/// The trace of a run.
pub struct Trace {
    lines: VecDeque<(u64, String)>,
    hash: u64,
    /// Keep every line (`--trace full`), not only the last ones.
    pub full: bool,
    /// Everything, when `full`.
    pub all: Vec<String>,
}

impl Default for Trace {
    fn default() -> Self {
        Trace::new()
    }
}

impl Trace {
    /// An empty trace.
    pub fn new() -> Trace {
        Trace {
            lines: VecDeque::with_capacity(TRACE_LINES),
            hash: 0xcbf2_9ce4_8422_2325,
            full: false,
            all: Vec::new(),
        }
    }

    fn mix(&mut self, value: u64) {
        for byte in value.to_le_bytes() {
            self.hash ^= u64::from(byte);
            self.hash = self.hash.wrapping_mul(0x100_0000_01b3);
        }
    }

    /// Records an event (hashed; its text is made only for the kept lines).
    pub fn event(&mut self, at: u64, event: &Event) {
        let (kind, node, detail) = summary(event);
        self.mix(at);
        self.mix(kind);
        self.mix(node);
        self.mix(detail);
        if kind != 1 || self.full {
            self.push(at, format!("n{node} {}", describe(event)));
        }
    }

    /// Records a note (faults, role changes).
    pub fn note(&mut self, at: u64, node: u64, text: String) {
        self.mix(at);
        self.mix(node);
        for byte in text.bytes() {
            self.mix(u64::from(byte));
        }
        self.push(at, format!("n{node} {text}"));
    }

    fn push(&mut self, at: u64, text: String) {
        let line = format!(
            "t={:06}.{:06} {text}",
            at / 1_000_000_000,
            at / 1000 % 1_000_000
        );
        if self.full {
            self.all.push(line.clone());
        }
        if self.lines.len() == TRACE_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back((at, line));
    }

    /// The hash of everything recorded.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// The kept lines.
    pub fn tail(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().map(|(_, l)| l.as_str())
    }
}

fn summary(event: &Event) -> (u64, u64, u64) {
    match event {
        Event::Tick { node, .. } => (1, *node, 0),
        Event::Deliver(d) => (2, d.to, d.from * 1000 + d.messages.len() as u64),
        Event::FlushComplete { node, flush, .. } => (3, *node, flush.0),
        Event::DiskComplete { node, op, .. } => (4, *node, op.0),
        Event::Fault => (5, 0, 0),
        Event::Restart { node } => (6, *node, 0),
        Event::Resume { node } => (7, *node, 0),
        Event::Heal => (8, 0, 0),
        Event::Client { producer, token } => (9, *token, *producer as u64),
        Event::Admin { token } => (10, 0, *token),
        Event::FaultsOff => (11, 0, 0),
        Event::Check => (12, 0, 0),
        Event::Crash { node } => (13, *node, 0),
        Event::Consume => (15, 0, 0),
        Event::ReadComplete { node, op, .. } => (14, *node, op.0),
        Event::SpaceBack { node, .. } => (17, *node, 0),
        Event::ControllerTopics { node, topics, .. } => (
            16,
            *node,
            u64::from(topics.next_id()) * 1000 + topics.list().count() as u64,
        ),
        Event::GrowState => (18, 0, 0),
        Event::ProposeGathered { node, .. } => (19, *node, 0),
        Event::GroupClient { token } => (20, 0, *token),
        Event::Mover { token } => (21, 0, *token),
    }
}

fn describe(event: &Event) -> String {
    match event {
        Event::Deliver(d) => {
            let messages: Vec<String> = d
                .messages
                .iter()
                .map(|m| {
                    let kind = m.get_msg_type();
                    let short = format!("{kind:?}").trim_start_matches("Msg").to_string();
                    match kind {
                        MessageType::MsgAppend => format!(
                            "{short}(term={} index={} entries={} commit={})",
                            m.term,
                            m.index,
                            m.entries.len(),
                            m.commit
                        ),
                        _ => format!(
                            "{short}(term={} index={} reject={})",
                            m.term, m.index, m.reject
                        ),
                    }
                })
                .collect();
            format!("from n{} {}", d.from, messages.join(" "))
        }
        Event::Tick { .. } => "tick".to_string(),
        Event::ControllerTopics { topics, .. } => {
            let ids: Vec<u32> = topics.list().map(|t| t.id).collect();
            format!("controller topics {ids:?} next id {}", topics.next_id())
        }
        Event::DiskComplete { node, op, work, .. } => {
            format!(
                "DiskComplete {{ node: {node}, op: {op:?}, work: {} }}",
                describe_work(work)
            )
        }
        other => format!("{other:?}").chars().take(120).collect(),
    }
}

/// Disk work without a snapshot's data (formatting a large state's bytes only to cut the
/// line at 120 characters cost more than the rest of a run).
fn describe_work(work: &DiskWork) -> String {
    let snapshot = |kind: &str, snapshot: &raft::eraftpb::Snapshot| {
        let metadata = snapshot.get_metadata();
        format!(
            "{kind} {{ index: {}, term: {}, {} bytes }}",
            metadata.index,
            metadata.term,
            snapshot.data.len()
        )
    };
    match work {
        DiskWork::InstallSnapshot { snapshot: s } => snapshot("InstallSnapshot", s),
        DiskWork::WriteSnapshotFile { snapshot: s } => snapshot("WriteSnapshotFile", s),
        other => format!("{other:?}"),
    }
}
