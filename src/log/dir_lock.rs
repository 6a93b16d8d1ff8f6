//! The exclusive lock on a log directory: one open `CommitLog` per directory, across
//! processes and within one.
//!
//! Two mechanisms, because neither covers both cases alone:
//! - other processes: a POSIX record lock (`fcntl(F_SETLK)`) on the `LOCK` file. Unlike
//!   `flock`, it is not inherited by a child between `fork` and `exec`, so a process that
//!   spawns children (tests, tools) never keeps a closed log's directory locked for a
//!   moment after the log is gone;
//! - this process: a registry of locked directories, since record locks do not conflict
//!   within the process that holds them.
//!
//! Record locks drop when any descriptor of the file closes in the process; only this
//! module opens the `LOCK` file, once per directory (the registry guarantees it).

use std::collections::HashSet;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::log::error::{LogError, LogResult};

/// Name of the lock file inside a log directory.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// Directories locked by this process (canonical paths).
static LOCKED: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

/// Held while a log is open; releases the directory when dropped.
#[derive(Debug)]
pub struct DirLock {
    canonical: PathBuf,
    // Closing the file releases the record lock.
    _file: std::fs::File,
}

impl DirLock {
    /// Locks `dir` (which must exist), or fails with `LogError::Locked` when another open
    /// log, in this process or another, holds it.
    pub fn acquire(dir: &Path) -> LogResult<DirLock> {
        let canonical = dir
            .canonicalize()
            .map_err(|e| LogError::io("resolve directory", dir, e))?;
        let mut registry = LOCKED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let registry = registry.get_or_insert_with(HashSet::new);
        if registry.contains(&canonical) {
            return Err(LogError::Locked(dir.to_path_buf()));
        }
        let lock_path = canonical.join(LOCK_FILE_NAME);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| LogError::io("create lock file", &lock_path, e))?;
        if !record_lock(&file) {
            return Err(LogError::Locked(dir.to_path_buf()));
        }
        registry.insert(canonical.clone());
        Ok(DirLock {
            canonical,
            _file: file,
        })
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let mut registry = LOCKED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(registry) = registry.as_mut() {
            let removed = registry.remove(&self.canonical);
            debug_assert!(removed, "a held directory lock is registered");
        }
    }
}

/// Takes a write lock on the whole file without waiting; false when another process
/// holds a conflicting lock (or locking is refused).
fn record_lock(file: &std::fs::File) -> bool {
    // SAFETY: `flock` is plain data; zeroed is a valid value that is filled in below.
    let mut request: libc::flock = unsafe { std::mem::zeroed() };
    request.l_type = libc::F_WRLCK as libc::c_short;
    request.l_whence = libc::SEEK_SET as libc::c_short;
    request.l_start = 0;
    request.l_len = 0; // to the end of the file, however long it grows
                       // SAFETY: the descriptor is open for the duration of the call and `request` is a
                       // valid `flock` that outlives it.
    let result = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &request) };
    result == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_locked_once_and_free_again_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path()).unwrap();
        assert!(matches!(
            DirLock::acquire(dir.path()),
            Err(LogError::Locked(_))
        ));
        // Another spelling of the same directory is the same directory.
        let other_spelling = dir.path().join(".");
        assert!(matches!(
            DirLock::acquire(&other_spelling),
            Err(LogError::Locked(_))
        ));
        drop(first);
        let again = DirLock::acquire(dir.path()).unwrap();
        drop(again);
    }

    #[test]
    fn a_child_forked_while_the_lock_was_held_does_not_keep_it() {
        let dir = tempfile::tempdir().unwrap();
        let lock = DirLock::acquire(dir.path()).unwrap();
        // SAFETY: the child only calls async-signal-safe functions, then exits.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork failed");
        if child == 0 {
            // The child holds copies of every descriptor (as between fork and exec).
            unsafe {
                libc::usleep(500_000);
                libc::_exit(0);
            }
        }
        drop(lock);
        let again = DirLock::acquire(dir.path());
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        unsafe { libc::waitpid(child, &mut status, 0) };
        assert!(again.is_ok(), "{again:?}");
    }

    #[test]
    fn a_lock_held_by_another_process_is_refused_until_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let lock_path = dir.path().join(LOCK_FILE_NAME);
        let script = "import fcntl, sys, time\n\
                      f = open(sys.argv[1], 'a')\n\
                      fcntl.lockf(f, fcntl.LOCK_EX)\n\
                      print('locked', flush=True)\n\
                      time.sleep(60)\n";
        let mut holder = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&lock_path)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "locked");
        let refused = DirLock::acquire(dir.path());
        holder.kill().unwrap();
        holder.wait().unwrap();
        assert!(matches!(refused, Err(LogError::Locked(_))), "{refused:?}");
        assert!(DirLock::acquire(dir.path()).is_ok());
    }
}
