//! Proposals gathered per node, as the driver gathers those of one executor pass
//! (`ShardCore::gather`): every proposal a node gets within `GATHER_NS` of the first goes
//! to its replica in one `Input::Propose`, so batches of several clients' entries (some
//! waiting, some not) meet every fault the simulator injects.
//!
//! It checks nothing itself; a crash loses what a node gathered (its clients time out).

use crate::replication::events::{Input, Proposal};
use crate::sim::world::{Event, World};

/// How long a node gathers proposals before handing them to its replica (about one
/// executor pass of the driver).
const GATHER_NS: u64 = 20_000;

impl World {
    /// Adds a proposal to those `node` is gathering; the first schedules the hand-over.
    pub(crate) fn propose(&mut self, node: u64, proposal: Proposal) {
        let now = self.now;
        let Some(n) = self.nodes.get_mut(&node).filter(|n| n.up) else {
            return;
        };
        if n.gathered.is_empty() {
            let incarnation = n.incarnation;
            self.schedule(
                now + GATHER_NS,
                Event::ProposeGathered { node, incarnation },
            );
        }
        if let Some(n) = self.nodes.get_mut(&node) {
            n.gathered.push(proposal);
        }
    }

    /// Hands what `node` gathered to its replica, in order.
    pub(crate) fn propose_gathered(&mut self, node: u64, incarnation: u64) {
        let Some(n) = self
            .nodes
            .get_mut(&node)
            .filter(|n| n.up && n.incarnation == incarnation)
        else {
            return;
        };
        let proposals = std::mem::take(&mut n.gathered);
        if proposals.len() > 1 {
            self.stats.gathered_inputs += 1;
        }
        if !proposals.is_empty() {
            self.feed(node, Input::Propose { proposals });
        }
    }
}
