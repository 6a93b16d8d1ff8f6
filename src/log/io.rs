//! The thin layer between the CommitLog and the runtime's files (glommio DMA files).
//!
//! Everything the log does to a file goes through here, so the runtime could be swapped
//! (glommio's last release is from 2024). It owns two pitfalls of glommio on this platform:
//! every executor thread must read a non-empty DMA file before touching new ones (else every
//! later read fails with EOPNOTSUPP), and `DmaFile::create` is write-only.

use std::cell::Cell;
use std::path::Path;
use std::rc::Rc;

use glommio::io::{DmaFile, OpenOptions};

use crate::constants::BLOCK_SIZE_BYTES;
use crate::log::config::SyncMethod;
use crate::log::error::{LogError, LogResult};

thread_local! {
    static THREAD_PRIMED: Cell<bool> = const { Cell::new(false) };
}

const PROBE_FILE_NAME: &str = ".dma-probe";

/// Makes glommio probe polled-I/O support on a real non-empty file, once per thread.
///
/// glommio records per thread, on the first DMA file opened, whether the device supports
/// polled I/O; an empty first file makes it record "supported" and every later DMA read on
/// the thread fails with os error 95. Reading a 4 KiB file first avoids it.
pub async fn prime_thread(dir: &Path) -> LogResult<()> {
    if THREAD_PRIMED.with(|primed| primed.get()) {
        return Ok(());
    }
    // A file the log already holds does as well, and needs no space (a full disk).
    if let Some(existing) = non_empty_file_in(dir) {
        read_first_block(&existing, "probe with").await?;
    } else {
        let path = dir.join(PROBE_FILE_NAME);
        std::fs::write(&path, vec![0u8; BLOCK_SIZE_BYTES as usize])
            .map_err(|e| LogError::io("write probe file", &path, e))?;
        read_first_block(&path, "probe file").await?;
        std::fs::remove_file(&path).map_err(|e| LogError::io("remove probe file", &path, e))?;
    }
    THREAD_PRIMED.with(|primed| primed.set(true));
    Ok(())
}

async fn read_first_block(path: &Path, what: &'static str) -> LogResult<()> {
    let file = DmaFile::open(path)
        .await
        .map_err(|e| glommio_error(what, path, e))?;
    file.read_at(0, BLOCK_SIZE_BYTES as usize)
        .await
        .map_err(|e| glommio_error(what, path, e))?;
    file.close().await.map_err(|e| glommio_error(what, path, e))
}

/// A regular file of at least one block in `dir` (a segment), if there is one.
fn non_empty_file_in(dir: &Path) -> Option<std::path::PathBuf> {
    std::fs::read_dir(dir).ok()?.flatten().find_map(|entry| {
        let metadata = entry.metadata().ok()?;
        let name = entry.file_name();
        let usable = metadata.is_file()
            && metadata.len() >= BLOCK_SIZE_BYTES
            && name
                .to_string_lossy()
                .ends_with(crate::log::segment::SEGMENT_SUFFIX);
        usable.then(|| entry.path())
    })
}

/// Converts a glommio error into a `LogError::Io` naming the operation and path, keeping
/// the OS error (so callers can tell ENOSPC or EIO apart).
pub fn glommio_error(
    operation: &'static str,
    path: &Path,
    error: glommio::GlommioError<()>,
) -> LogError {
    let source = match error {
        glommio::GlommioError::IoError(source) => source,
        glommio::GlommioError::EnhancedIoError { source, .. } => source,
        other => std::io::Error::other(other.to_string()),
    };
    LogError::io(operation, path, source)
}

/// Opens (creating if asked) a file for O_DIRECT reads and writes.
pub async fn open_read_write(path: &Path, create: bool) -> LogResult<Rc<DmaFile>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .dma_open(path)
        .await
        .map_err(|e| glommio_error("open", path, e))?;
    Ok(Rc::new(file))
}

/// Opens an existing segment file for the flush's writes (and reads): with `O_DSYNC` when
/// writes are to be durable on completion (`SyncMethod::DsyncWrites`).
pub async fn open_segment(path: &Path, sync: SyncMethod) -> LogResult<Rc<DmaFile>> {
    let mut options = OpenOptions::new();
    options.read(true).write(true);
    if sync == SyncMethod::DsyncWrites {
        options.custom_flags(libc::O_DSYNC);
    }
    let file = options
        .dma_open(path)
        .await
        .map_err(|e| glommio_error("open", path, e))?;
    Ok(Rc::new(file))
}

/// Copies `bytes` into an aligned buffer padded with zeros to whole blocks.
pub fn aligned_buffer_from(bytes: &[u8]) -> glommio::io::DmaBuffer {
    let length = align_up(bytes.len() as u64) as usize;
    let mut buffer = glommio::allocate_dma_buffer_global(length.max(BLOCK_SIZE_BYTES as usize));
    let target = buffer.as_bytes_mut();
    target[..bytes.len()].copy_from_slice(bytes);
    target[bytes.len()..].fill(0);
    buffer
}

/// Writes a whole aligned buffer at an aligned position; a short write is an error.
pub async fn write_all_at(
    file: &DmaFile,
    path: &Path,
    buffer: glommio::io::DmaBuffer,
    position: u64,
) -> LogResult<()> {
    assert_aligned(position, buffer.len());
    let expected = buffer.len();
    let written = file
        .write_at(buffer, position)
        .await
        .map_err(|e| glommio_error("write", path, e))?;
    check_written(path, position, written, expected)
}

/// Writes a whole shared aligned buffer at an aligned position (the caller keeps the
/// buffer for reuse); a short write is an error.
pub async fn write_shared_at(
    file: &DmaFile,
    path: &Path,
    buffer: Rc<glommio::io::DmaBuffer>,
    position: u64,
) -> LogResult<()> {
    assert_aligned(position, buffer.len());
    let expected = buffer.len();
    let written = file
        .write_rc_at(buffer, position)
        .await
        .map_err(|e| glommio_error("write", path, e))?;
    check_written(path, position, written, expected)
}

/// O_DIRECT offsets and lengths are whole blocks: anything else is a bug of ours.
fn assert_aligned(position: u64, length: usize) {
    assert_eq!(position % BLOCK_SIZE_BYTES, 0, "unaligned write position");
    assert_eq!(
        length as u64 % BLOCK_SIZE_BYTES,
        0,
        "unaligned write length"
    );
}

/// A short write is an error (O_DIRECT writes to a regular file should never be short).
fn check_written(path: &Path, position: u64, written: usize, expected: usize) -> LogResult<()> {
    if written == expected {
        return Ok(());
    }
    Err(LogError::io(
        "write",
        path,
        std::io::Error::new(
            std::io::ErrorKind::WriteZero,
            format!("short write: {written} of {expected} bytes at {position}"),
        ),
    ))
}

/// Reads up to `length` bytes at `position` (any alignment); fewer at end of file.
pub async fn read_at(
    file: &DmaFile,
    path: &Path,
    position: u64,
    length: usize,
) -> LogResult<Vec<u8>> {
    let result = file
        .read_at(position, length)
        .await
        .map_err(|e| glommio_error("read", path, e))?;
    Ok(result.to_vec())
}

/// Makes written data durable.
pub async fn fdatasync(file: &DmaFile, path: &Path) -> LogResult<()> {
    file.fdatasync()
        .await
        .map_err(|e| glommio_error("fdatasync", path, e))
}

/// `sync_directory` on the executor's blocking thread: a directory's fsync commits the
/// file system's journal and can take tens of milliseconds on a busy disk, which the
/// shard's thread must spend on ticks and heartbeats instead.
pub async fn sync_directory_off_thread(dir: &Path) -> LogResult<()> {
    let dir = dir.to_path_buf();
    glommio::executor()
        .spawn_blocking(move || sync_directory(&dir))
        .await
}

/// Makes a directory's entries (created, renamed, removed files) durable. Blocks: on a
/// shard's thread, use `sync_directory_off_thread`.
pub fn sync_directory(dir: &Path) -> LogResult<()> {
    let handle = std::fs::File::open(dir).map_err(|e| LogError::io("open directory", dir, e))?;
    handle
        .sync_all()
        .map_err(|e| LogError::io("fsync directory", dir, e))
}

/// Rounds up to a multiple of the block size.
pub fn align_up(value: u64) -> u64 {
    value.div_ceil(BLOCK_SIZE_BYTES) * BLOCK_SIZE_BYTES
}

/// Rounds down to a multiple of the block size.
pub fn align_down(value: u64) -> u64 {
    value / BLOCK_SIZE_BYTES * BLOCK_SIZE_BYTES
}
