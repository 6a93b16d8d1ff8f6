//! Fault injection during a run's safety phase: crashes, pauses, partitions, connection
//! resets, clogged paths, failed flushes, refused appends and planned stops. At most a
//! minority of the nodes is down (crashed, paused or failed) at once, so the group can
//! make progress between faults.

use crate::replication::events::Input;
use crate::replication::log_store::StorageFailure;
use crate::sim::profile::{FaultKind, FAULT_KINDS};
use crate::sim::world::{Event, World};

/// Injects one fault of an enabled kind.
pub fn inject(world: &mut World) {
    let kinds: Vec<FaultKind> = FAULT_KINDS
        .iter()
        .copied()
        .filter(|k| world.profile.has(*k))
        .collect();
    if kinds.is_empty() {
        return;
    }
    let kind = kinds[world.fault_rng().range(0, kinds.len() as u64) as usize];
    let nodes = world.profile.nodes;
    // Nodes 1..=n, unless replicas moved (`world::membership`): the same draws either way.
    let in_play = world.nodes_in_play();
    let pick = |world: &mut World| pick(world, &in_play);
    let node = pick(world);
    let now = world.now;
    let may_take_down = down_count(world) < (nodes - 1) / 2 && node_is_healthy(world, node);
    match kind {
        FaultKind::Crash if may_take_down => world.crash(node),
        FaultKind::Pause if may_take_down => {
            let until = now + world.fault_rng().range(50_000_000, 1_500_000_000);
            world.pause(node, until);
        }
        FaultKind::Partition => partition(world, &in_play),
        FaultKind::Reset => {
            let other = pick(world);
            if other != node {
                world.reset_path(node, other);
            }
        }
        FaultKind::Clog => {
            let other = pick(world);
            let until = now + world.fault_rng().range(50_000_000, 500_000_000);
            world.network().path(node, other).clogged_until = until;
        }
        FaultKind::DiskFailure if may_take_down => {
            let failure = if world.fault_rng().chance(1, 2) {
                StorageFailure::NoSpace
            } else {
                StorageFailure::Io {
                    detail: "injected EIO".to_string(),
                }
            };
            if let Some(n) = world.nodes.get_mut(&node) {
                n.fail_next_flush = Some(failure);
            }
        }
        FaultKind::AppendRefusal if may_take_down => {
            if let Some(n) = world.nodes.get_mut(&node) {
                n.store.log.borrow_mut().refuse_next_append = true;
            }
        }
        FaultKind::HandOver if may_take_down => {
            let leader = world
                .nodes
                .values()
                .find(|n| n.replica.as_ref().is_some_and(|r| r.is_leader()))
                .map(|n| n.id);
            if let Some(leader) = leader {
                world.feed(leader, Input::HandOver);
            }
        }
        _ => return,
    }
    world.count_fault(kind);
    world.trace.note(now, node, format!("fault {kind:?}"));
}

fn pick(world: &mut World, ids: &[u64]) -> u64 {
    ids[world.fault_rng().range(0, ids.len() as u64) as usize]
}

fn node_is_healthy(world: &World, id: u64) -> bool {
    world.nodes.get(&id).is_some_and(|n| {
        n.up && !n.paused
            && n.fail_next_flush.is_none()
            && !n.store.log.borrow().refuse_next_append
            && n.replica.as_ref().is_some_and(|r| r.failure().is_none())
    })
}

fn down_count(world: &World) -> u64 {
    world
        .nodes
        .values()
        .filter(|n| n.in_play && !node_is_healthy(world, n.id))
        .count() as u64
}

/// Cuts the network: one node isolated, random halves, or one direction only; heals
/// after a while.
fn partition(world: &mut World, ids: &[u64]) {
    let now = world.now;
    let shape = world.fault_rng().range(0, 3);
    let side: Vec<bool> = match shape {
        0 => {
            let isolated = pick(world, ids);
            ids.iter().map(|&id| id == isolated).collect()
        }
        _ => ids.iter().map(|_| world.fault_rng().chance(1, 2)).collect(),
    };
    let one_way = shape == 2;
    for (i, &a) in ids.iter().enumerate() {
        for (j, &b) in ids.iter().enumerate() {
            if a != b && side[i] != side[j] {
                if one_way && side[i] {
                    continue;
                }
                world.network().path(a, b).blocked = true;
            }
        }
    }
    let heal = now + world.fault_rng().range(100_000_000, 2_000_000_000);
    world.schedule(heal, Event::Heal);
}
