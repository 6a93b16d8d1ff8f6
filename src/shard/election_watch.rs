//! Why a shard's replica stood for election or lost its leadership, in the log: the
//! driver's wall-clock view of what the replica was fed before its role changed (how long
//! since each peer's last message, the longest gap between its last ticks), written once per
//! change, at warn level (a campaign with no leader known before, as at a start, at
//! info). An election costs the group its writes for a while; an operator needs to know
//! whether the leader went silent, the network held its messages, or this shard's own
//! thread ran late.
//!
//! Owns only timestamps. Never feeds the replica, never decides anything: it watches.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// What the watch remembers between role changes.
pub struct ElectionWatch {
    inner: RefCell<Watched>,
}

struct Watched {
    /// When the last tick was fed.
    last_tick: Option<Instant>,
    /// The gaps between the last ticks (at most `RECENT_TICK_GAPS`), oldest first.
    recent_tick_gaps: VecDeque<Duration>,
    /// When each peer's last messages were fed.
    last_heard: BTreeMap<u64, Instant>,
    /// The role after the last input.
    role: &'static str,
    /// The leader known after the last input (0: none).
    leader: u64,
}

impl ElectionWatch {
    pub fn new(role: &'static str) -> ElectionWatch {
        ElectionWatch {
            inner: RefCell::new(Watched {
                last_tick: None,
                recent_tick_gaps: VecDeque::with_capacity(RECENT_TICK_GAPS),
                last_heard: BTreeMap::new(),
                role,
                leader: 0,
            }),
        }
    }

    /// A tick is being fed now.
    pub fn tick(&self) {
        let now = Instant::now();
        let mut watched = self.inner.borrow_mut();
        if let Some(last) = watched.last_tick {
            if watched.recent_tick_gaps.len() == RECENT_TICK_GAPS {
                watched.recent_tick_gaps.pop_front();
            }
            watched.recent_tick_gaps.push_back(now - last);
        }
        watched.last_tick = Some(now);
    }

    /// Messages of `peer` are being fed now.
    pub fn heard(&self, peer: u64) {
        self.inner
            .borrow_mut()
            .last_heard
            .insert(peer, Instant::now());
    }

    /// The replica's role after an input: a change to a campaign or away from leading is
    /// logged with what the watch saw before it (and returned).
    pub fn role_now(
        &self,
        shard: u32,
        leader: u64,
        term: u64,
        role: &'static str,
    ) -> Option<Logged> {
        let mut watched = self.inner.borrow_mut();
        let before = std::mem::replace(&mut watched.role, role);
        let leader_before = std::mem::replace(&mut watched.leader, leader);
        if before == role {
            return None;
        }
        let heard = heard_summary(&watched.last_heard);
        let worst_tick_gap_ms = watched.worst_recent_tick_gap().as_millis() as u64;
        if role == "pre-candidate" || (role == "candidate" && before != "pre-candidate") {
            if leader_before == 0 {
                // A start, or a campaign after a lost one: nothing new to explain.
                tracing::info!(shard, term, %heard, "standing for election");
            } else {
                tracing::warn!(
                    shard,
                    term,
                    leader = leader_before,
                    %heard,
                    worst_tick_gap_ms,
                    "standing for election against the leader last heard of"
                );
            }
            Some(Logged::Campaign)
        } else if before == "leader" {
            tracing::warn!(
                shard,
                term,
                new_leader = leader,
                role,
                %heard,
                worst_tick_gap_ms,
                "no longer leading"
            );
            Some(Logged::LeadershipLost)
        } else {
            None
        }
    }
}

/// Tick gaps remembered: the last election timeout's worth at the longest default (20
/// ticks), and some.
const RECENT_TICK_GAPS: usize = 32;

impl Watched {
    /// The longest of the recent gaps between ticks.
    fn worst_recent_tick_gap(&self) -> Duration {
        self.recent_tick_gaps
            .iter()
            .copied()
            .max()
            .unwrap_or(Duration::ZERO)
    }
}

/// What a role change was logged as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logged {
    /// A follower stood for election.
    Campaign,
    /// A leader stepped down.
    LeadershipLost,
}

/// "node 2: 153 ms ago, node 3: 4 ms ago".
fn heard_summary(last_heard: &BTreeMap<u64, Instant>) -> String {
    let now = Instant::now();
    let parts: Vec<String> = last_heard
        .iter()
        .map(|(peer, at)| format!("node {peer}: {} ms ago", (now - *at).as_millis()))
        .collect();
    if parts.is_empty() {
        "no peer yet".to_string()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{heard_summary, ElectionWatch, Logged, RECENT_TICK_GAPS};

    #[test]
    fn only_a_campaign_or_a_lost_leadership_is_logged() {
        let watch = ElectionWatch::new("follower");
        watch.tick();
        watch.heard(2);
        assert_eq!(watch.role_now(0, 2, 1, "follower"), None);
        assert_eq!(
            watch.role_now(0, 0, 1, "pre-candidate"),
            Some(Logged::Campaign)
        );
        // The pre-vote's candidate is the same campaign.
        assert_eq!(watch.role_now(0, 0, 2, "candidate"), None);
        assert_eq!(watch.role_now(0, 1, 2, "leader"), None);
        assert_eq!(
            watch.role_now(0, 3, 3, "follower"),
            Some(Logged::LeadershipLost)
        );
        // Voted out of a campaign, or back from a failure: nothing to explain.
        assert_eq!(
            watch.role_now(0, 0, 3, "pre-candidate"),
            Some(Logged::Campaign)
        );
        assert_eq!(watch.role_now(0, 3, 3, "follower"), None);
    }

    #[test]
    fn the_summary_names_every_peer_heard() {
        let watch = ElectionWatch::new("follower");
        assert_eq!(
            heard_summary(&watch.inner.borrow().last_heard),
            "no peer yet"
        );
        watch.heard(3);
        watch.heard(2);
        let summary = heard_summary(&watch.inner.borrow().last_heard);
        assert!(
            summary.starts_with("node 2: ") && summary.contains(", node 3: "),
            "{summary}"
        );
    }

    /// Only the last ticks' gaps count: a stall long ago says nothing about an election
    /// now.
    #[test]
    fn the_worst_tick_gap_is_of_the_last_ticks_only() {
        let watch = ElectionWatch::new("follower");
        watch.tick();
        std::thread::sleep(Duration::from_millis(30));
        watch.tick();
        assert!(watch.inner.borrow().worst_recent_tick_gap() >= Duration::from_millis(30));
        for _ in 0..RECENT_TICK_GAPS {
            watch.tick();
        }
        let watched = watch.inner.borrow();
        assert_eq!(watched.recent_tick_gaps.len(), RECENT_TICK_GAPS);
        assert!(watched.worst_recent_tick_gap() < Duration::from_millis(30));
    }
}
