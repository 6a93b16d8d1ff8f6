//! Connections being opened (a TLS handshake, a peer hello not yet come), bounded per
//! listener: a new connection beyond the bound evicts the oldest one still opening,
//! rather than being refused. A flood of connections that never finish opening (slow
//! handshakes, silent sockets) then costs a bounded amount of memory and work and keeps
//! churning itself, while a client that opens at once (in milliseconds) still gets in.
//!
//! Owns the slots and their eviction; never reads or writes a connection.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};

/// The connections being opened on one listener.
pub struct Opening {
    capacity: usize,
    next_id: Cell<u64>,
    /// Oldest first: (slot id, its eviction signal).
    pending: RefCell<VecDeque<(u64, LocalSender<()>)>>,
}

/// A connection's place while it opens; dropped (opened, failed, timed out) it frees the
/// place.
pub struct OpeningSlot {
    id: u64,
    opening: Rc<Opening>,
    evicted: LocalReceiver<()>,
}

impl Opening {
    /// Room for `capacity` connections opening at once (at least 1).
    pub fn new(capacity: usize) -> Rc<Opening> {
        Rc::new(Opening {
            capacity: capacity.max(1),
            next_id: Cell::new(0),
            pending: RefCell::new(VecDeque::new()),
        })
    }

    /// A place for a new connection; when full, the oldest connection still opening is
    /// evicted (its `evicted` resolves). Answers whether one was.
    pub fn enter(self: &Rc<Self>) -> (OpeningSlot, bool) {
        let mut pending = self.pending.borrow_mut();
        let evicted = if pending.len() >= self.capacity {
            if let Some((_, signal)) = pending.pop_front() {
                let _ = signal.try_send(());
            }
            true
        } else {
            false
        };
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (signal, receiver) = local_channel::new_bounded(1);
        pending.push_back((id, signal));
        let slot = OpeningSlot {
            id,
            opening: self.clone(),
            evicted: receiver,
        };
        (slot, evicted)
    }

    /// Connections opening now.
    pub fn len(&self) -> usize {
        self.pending.borrow().len()
    }

    /// Whether none is opening.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl OpeningSlot {
    /// Resolves once a newer connection took this one's place.
    pub async fn evicted(&self) {
        // The signal, or its sender dropped: both only happen on eviction (the slot's own
        // entry is removed only when the slot is dropped).
        let _ = self.evicted.recv().await;
    }

    /// Resolves once evicted or after `timeout`, whichever comes first: why the
    /// connection is out of time (naming `what` it did not finish).
    pub async fn out_of_time(&self, timeout: std::time::Duration, what: &str) -> String {
        let evicted = futures_lite::future::or(
            async {
                glommio::timer::sleep(timeout).await;
                false
            },
            async {
                self.evicted().await;
                true
            },
        );
        if evicted.await {
            format!("no {what} yet, evicted by newer connections (too many at once)")
        } else {
            format!("no {what} within {timeout:?}")
        }
    }
}

impl Drop for OpeningSlot {
    fn drop(&mut self) {
        self.opening
            .pending
            .borrow_mut()
            .retain(|(id, _)| *id != self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_set_evicts_its_oldest_and_frees_places_on_drop() {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(|| async {
                let opening = Opening::new(2);
                let (first, evicted) = opening.enter();
                assert!(!evicted);
                let (second, _) = opening.enter();
                let (third, evicted) = opening.enter();
                assert!(evicted, "the third evicts the first");
                assert_eq!(opening.len(), 2);
                first.evicted().await;
                drop(second);
                assert_eq!(opening.len(), 1);
                let (_fourth, evicted) = opening.enter();
                assert!(!evicted, "a freed place is taken without eviction");
                let not_evicted = futures_lite::future::or(
                    async {
                        third.evicted().await;
                        true
                    },
                    async {
                        glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
                        false
                    },
                )
                .await;
                assert!(!not_evicted, "a connection within the bound is left alone");
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
