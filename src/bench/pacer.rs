//! Paces an open-loop load generator: wakes it at each intended send time, as precisely
//! as the runtime allows.
//!
//! glommio's timers fire some tens of microseconds late on a quiet executor. An open-loop
//! benchmark counts latency from the intended send time, so that lateness would be charged
//! to the system under test. The pacer learns the timer's typical lateness, asks for a
//! wake-up that much earlier, and covers what is left by spinning on the clock.
//!
//! It spins without yielding: a task that yields in a loop keeps its queue runnable and
//! glommio then does not poll for I/O completions until its preemption timer fires, which
//! starves the very flushes being measured. The spin is short (the timer's jitter around
//! the learned lateness) and capped at `MAX_SPIN`.

use std::time::{Duration, Instant};

/// Longest stretch the pacer spins (yielding) before a send time.
pub const MAX_SPIN: Duration = Duration::from_micros(100);

/// Tracks how late timers fire and sleeps accordingly.
#[derive(Debug)]
pub struct Pacer {
    lateness_estimate: Duration,
}

impl Default for Pacer {
    fn default() -> Self {
        Pacer {
            lateness_estimate: Duration::from_micros(40),
        }
    }
}

impl Pacer {
    /// Waits until `due` (returns at once if it has passed). Returns whether it slept on
    /// a timer (that is, let the executor poll for I/O meanwhile).
    pub async fn wait_until(&mut self, due: Instant) -> bool {
        let now = Instant::now();
        if due <= now {
            return false;
        }
        let mut slept = false;
        let early = self.lateness_estimate.min(MAX_SPIN);
        if due - now > early {
            let target = due - early;
            glommio::timer::sleep(target - now).await;
            slept = true;
            let woke = Instant::now();
            // Learn the lateness: a slow moving average of how far past `target` we woke.
            let late = woke.saturating_duration_since(target).min(MAX_SPIN * 4);
            self.lateness_estimate = (self.lateness_estimate * 7 + late) / 8;
        }
        let spin_until = due.min(Instant::now() + MAX_SPIN);
        while Instant::now() < spin_until {
            std::hint::spin_loop();
        }
        slept
    }
}
