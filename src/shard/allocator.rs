//! The C allocator's settings for a broker process, set once when a node starts.
//!
//! glibc serves allocations above its mmap threshold (128 KiB at first, raised as large
//! blocks are freed) with fresh pages, and gives the top of its heap back to the kernel
//! whenever more than the trim threshold is free. A fetch answer of a megabyte lives
//! from its building until the socket took it, several at a time: under that churn the
//! heap was trimmed and grown again, and every answer paid page faults and zeroing (a
//! tenth of a leader's CPU while it fed a consumer group; the drain rate from the tail
//! cache rose from 0.86 to 1.43 GB/s with fixed thresholds). Fixed thresholds keep such
//! blocks in the heap, reused. The `keel` binary allocates through mimalloc (its global
//! allocator), so these settings matter there only for what still calls the C library's
//! malloc; they hold for any other program that runs shards on glibc. This module owns
//! nothing else and never allocates.

use crate::constants::{MALLOC_MMAP_THRESHOLD_BYTES, MALLOC_TRIM_THRESHOLD_BYTES};

/// Sets glibc's mmap and trim thresholds (fixed values also stop its own adjusting).
/// Returns false where the C library refused them (not glibc: they do not apply).
pub fn tune_for_broker() -> bool {
    // SAFETY: mallopt takes two integers and changes allocator parameters; it is safe
    // to call at any time, from any thread.
    let mmap = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD_BYTES) };
    // SAFETY: as above.
    let trim = unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD_BYTES) };
    mmap == 1 && trim == 1
}
