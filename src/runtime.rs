//! Starting glommio executors: one place that knows how this project configures them.
//!
//! Placement is unpinned by default (several nodes share small hosts); `io_memory` is
//! configurable because every executor pins three times that much for its rings.

use std::future::Future;

use glommio::{LocalExecutorBuilder, Placement};

/// Default registered I/O memory per executor (glommio pins 3x this).
pub const DEFAULT_IO_MEMORY_BYTES: usize = 2 * 1024 * 1024;

/// Errors starting an executor.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// glommio refused to build the executor.
    #[error("cannot start an executor: {0}")]
    Start(String),
    /// The executor thread panicked.
    #[error("the executor thread panicked")]
    Panicked,
}

/// Runs `make_future()` to completion on a new single-threaded executor (a new thread),
/// unpinned, with `io_memory_bytes` of registered I/O memory.
pub fn run_on_executor<G, F, T>(
    name: &str,
    io_memory_bytes: usize,
    make_future: G,
) -> Result<T, RuntimeError>
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let handle = LocalExecutorBuilder::new(Placement::Unbound)
        .name(name)
        .io_memory(io_memory_bytes)
        .spawn(make_future)
        .map_err(|e| RuntimeError::Start(e.to_string()))?;
    handle.join().map_err(|_| RuntimeError::Panicked)
}
