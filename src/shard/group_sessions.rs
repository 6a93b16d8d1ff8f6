//! Consumer group members' sessions on a coordinating shard: when each member was last
//! heard (join, heartbeat) and the removal of members silent for their session timeout.
//!
//! Liveness is the leader's alone and never replicated: a new leader starts every member's
//! session afresh (a full timeout from when it begins to serve), so a leader change never
//! removes a live member. A removal is a leave entry carrying the generation it was
//! decided at: applied after a rebalance the member took part in again, it is void.
//! Owns only the deadlines; it never changes a group itself.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::broker::group_entry::GroupEntry;
use crate::broker::groups::{ConsumerGroups, GroupApplied, GroupRefusal};
use crate::broker::log_entry::BrokerEntry;
use crate::broker::state::Applied;
use crate::constants::SESSION_CHECK_INTERVAL;
use crate::shard::group_driver::ShardCore;

struct Session {
    deadline: Instant,
    /// A removal is proposed and not yet answered.
    removing: bool,
}

/// Deadlines of the members of the groups this shard coordinates (bounded by the
/// groups' own bounds: one per member).
#[derive(Default)]
pub struct GroupSessions {
    sessions: BTreeMap<(String, String), Session>,
}

/// A member to remove: group, member, the generation it was decided at.
type Removal = (String, String, u64);

impl GroupSessions {
    /// The member was heard from: its session runs `timeout_ms` from now.
    pub fn touch(&mut self, group: &str, member: &str, timeout_ms: u32) {
        let deadline = Instant::now() + Duration::from_millis(u64::from(timeout_ms));
        let key = (group.to_string(), member.to_string());
        self.sessions.insert(
            key,
            Session {
                deadline,
                removing: false,
            },
        );
    }

    /// The member left.
    pub fn forget(&mut self, group: &str, member: &str) {
        self.sessions
            .remove(&(group.to_string(), member.to_string()));
    }

    /// Not leading: every session starts again with the next leadership.
    pub fn clear(&mut self) {
        self.sessions.clear();
    }

    /// Brings the sessions in line with the groups (a member not yet tracked starts a
    /// full timeout now; a member gone is dropped) and returns the members whose session
    /// ran out, marked as being removed.
    fn expired(&mut self, now: Instant, groups: &ConsumerGroups) -> Vec<Removal> {
        let mut live = BTreeMap::new();
        for (name, group) in groups.list() {
            for (id, member) in &group.members {
                let key = (name.clone(), id.clone());
                let session = self.sessions.remove(&key).unwrap_or(Session {
                    deadline: now + Duration::from_millis(u64::from(member.session_timeout_ms)),
                    removing: false,
                });
                live.insert(key, (session, group.generation));
            }
        }
        // What is left belongs to members no longer in their group.
        self.sessions.clear();
        let mut removals = Vec::new();
        for ((group, member), (mut session, generation)) in live {
            if session.deadline <= now && !session.removing {
                session.removing = true;
                removals.push((group.clone(), member.clone(), generation));
            }
            self.sessions.insert((group, member), session);
        }
        removals
    }

    /// A removal was refused because the group moved on: it is tried again at the next
    /// check, with the new generation.
    fn retry(&mut self, group: &str, member: &str) {
        if let Some(session) = self
            .sessions
            .get_mut(&(group.to_string(), member.to_string()))
        {
            session.removing = false;
        }
    }
}

/// Checks the sessions every `SESSION_CHECK_INTERVAL` while the shard leads and serves,
/// and proposes the removal of each member whose session ran out.
pub async fn expire_sessions(core: Rc<ShardCore>) {
    while !core.stopping.get() {
        glommio::timer::sleep(SESSION_CHECK_INTERVAL).await;
        if !core.serves_reads() {
            core.sessions.borrow_mut().clear();
            continue;
        }
        let removals = {
            let state = core.state();
            core.sessions
                .borrow_mut()
                .expired(Instant::now(), state.consumer_groups())
        };
        for removal in removals {
            let core = core.clone();
            core.clone().spawn(remove_member(core, removal));
        }
    }
}

async fn remove_member(core: Rc<ShardCore>, (group, member, generation): Removal) {
    tracing::info!(%group, %member, generation, "consumer group member's session ran out: removing it");
    let data = BrokerEntry::Group(GroupEntry::Leave {
        group: &group,
        member: &member,
        generation: Some(generation),
    })
    .encode();
    let answer = match core.submit(data, true) {
        Ok(pending) => pending.wait().await,
        Err(error) => Err(error),
    };
    let mut sessions = core.sessions.borrow_mut();
    match answer {
        Ok(Applied::Group(GroupApplied::Left { .. }))
        | Ok(Applied::Group(GroupApplied::Refused(
            GroupRefusal::UnknownMember { .. } | GroupRefusal::UnknownGroup(_),
        ))) => sessions.forget(&group, &member),
        // A rebalance came first, or the proposal failed (leadership moved): try again.
        _ => sessions.retry(&group, &member),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::groups::{AssignStrategy, GroupMode, Join};

    fn groups_with(members: &[&str]) -> ConsumerGroups {
        let mut groups = ConsumerGroups::default();
        for (i, client) in members.iter().enumerate() {
            let join = Join {
                group: "g",
                member_id: "",
                client,
                instance: "",
                mode: GroupMode::Clustering,
                strategy: AssignStrategy::Sticky,
                session_timeout_ms: 1_000,
                topics: vec![1],
            };
            groups.join(i as u64 + 1, join, &|_| 4);
        }
        groups
    }

    /// A member never heard by this leader gets a full timeout from the first check; one
    /// silent past it is removed once (not again while the removal is pending), and
    /// again after a refusal.
    #[test]
    fn silent_members_are_removed_once_their_session_runs_out() {
        let groups = groups_with(&["a", "b"]);
        let mut sessions = GroupSessions::default();
        let start = Instant::now();
        assert!(sessions.expired(start, &groups).is_empty());
        sessions.touch("g", "b-2", 60_000);
        let later = start + Duration::from_millis(1_500);
        let removals = sessions.expired(later, &groups);
        assert_eq!(removals, vec![("g".to_string(), "a-1".to_string(), 2)]);
        assert!(
            sessions.expired(later, &groups).is_empty(),
            "pending: not twice"
        );
        sessions.retry("g", "a-1");
        assert_eq!(sessions.expired(later, &groups).len(), 1);
    }

    /// Members that left the group are dropped from the sessions.
    #[test]
    fn members_gone_from_the_group_are_dropped() {
        let mut sessions = GroupSessions::default();
        sessions.touch("g", "gone", 1);
        let removals = sessions.expired(Instant::now() + Duration::from_secs(5), &groups_with(&[]));
        assert!(removals.is_empty());
        assert!(sessions.sessions.is_empty());
    }
}
