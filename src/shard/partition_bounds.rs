//! The bounds of a partition another group of this node holds (its first kept offset and
//! its end), for a coordinator checking a commit: asked of the shard running that group
//! (over the shards' mesh, or on this shard when it runs both), answered from that
//! group's applied state. A group this node does not hold is not asked (the commit goes
//! unchecked, as on a timeout).
//!
//! A follower's end may trail its leader's by a moment: the holder waits (up to
//! `BOUNDS_CATCH_UP_WAIT`) for its end to reach the offset asked before answering, so a
//! member committing what it just read from the leader is not refused; an offset past the
//! leader's end waits that long, then is refused. Owns no state; never blocks the holder
//! (the wait is a task of its own, bounded by `MAX_BOUNDS_WAITS`).

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::constants::{BOUNDS_CATCH_UP_WAIT, CATCH_UP_RECHECK, MAX_BOUNDS_WAITS};
use crate::controller::GroupId;
use crate::shard::group_driver::ShardCore;

/// A question to the shard holding a partition.
#[derive(Debug, Clone)]
pub struct BoundsQuery {
    /// The group holding the partition.
    pub group: GroupId,
    /// The partition's topic id.
    pub topic_id: u32,
    /// The partition.
    pub partition: u32,
    /// Wait (a little) for the end to reach this.
    pub at_least: u64,
    /// Where the answer goes: (first kept offset, end).
    pub reply: flume::Sender<(u64, u64)>,
}

thread_local! {
    /// Answers of this shard waiting for its end to catch up.
    static WAITING: Cell<usize> = const { Cell::new(0) };
}

/// Answers `query` on the holding shard.
pub async fn answer(core: Rc<ShardCore>, query: BoundsQuery) {
    let may_wait = WAITING.with(|waiting| waiting.get()) < MAX_BOUNDS_WAITS;
    WAITING.with(|waiting| waiting.set(waiting.get() + 1));
    let deadline = Instant::now() + BOUNDS_CATCH_UP_WAIT;
    let bounds = loop {
        let bounds = core
            .state()
            .partition(query.topic_id, query.partition)
            .map_or((0, 0), |p| (p.start_offset(), p.high_watermark()));
        let now = Instant::now();
        if bounds.1 >= query.at_least || core.serves_reads() || !may_wait || now >= deadline {
            break bounds;
        }
        // New data wakes the wait; a new leader's catch-up (no data of its own) is seen
        // at the next look.
        let arrival = core.data_arrival();
        let wait = (deadline - now).min(CATCH_UP_RECHECK);
        let _ = glommio::timer::timeout(wait, async { Ok(arrival.recv().await) }).await;
    };
    WAITING.with(|waiting| waiting.set(waiting.get() - 1));
    let _ = query.reply.send(bounds);
}

/// Asks shard `shard` of this node for a partition's bounds; `None` when no answer came
/// in time (the caller does without the check).
pub async fn ask(
    core: &ShardCore,
    (shard, group): (u32, GroupId),
    topic_id: u32,
    partition: u32,
    at_least: u64,
) -> Option<(u64, u64)> {
    let (reply, answer) = flume::bounded(1);
    let query = BoundsQuery {
        group,
        topic_id,
        partition,
        at_least,
        reply,
    };
    core.ask_shard(shard, query);
    let patience = BOUNDS_CATCH_UP_WAIT + Duration::from_secs(1);
    glommio::timer::timeout(patience, async { Ok(answer.recv_async().await.ok()) })
        .await
        .ok()
        .flatten()
}
