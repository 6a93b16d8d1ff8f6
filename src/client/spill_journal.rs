//! The producer's spill journal: record batches that could not reach the cluster, kept
//! durably on local disk in the order they were sent, until they are replayed.
//!
//! It stores whole batches as encoded for the wire (with their idempotent producer id and
//! sequence numbers), so a replayed batch is byte for byte the one that may already have
//! reached the cluster before the outage: the leader recognizes it as a duplicate.
//!
//! On disk, in the journal's directory:
//! ```text
//! 00000000000000000001.spill   frames, appended and fsynced; a new file every
//!                              `file_bytes`; named by its number
//! checkpoint                   (file number, offset) of the first frame not yet
//!                              replayed, with a crc32c; replaced atomically
//! LOCK                         held while a producer has the journal open
//! producer                     the producer's id and epoch (`producer_identity`)
//! ```
//! A frame is `[length u32][crc32c u32][payload]`, the crc over the payload; the payload
//! is `[written_at_micros u64][partition u32][batch crc32c u32][topic length u16][topic]
//! [batch]`. Opening the journal cuts a torn tail (a bad frame with nothing valid after
//! it in the newest file) and refuses damage anywhere else, naming file and offset. An
//! append that fails part-way (a full disk) is cut back to the last whole frame at once,
//! so a later append never lands after torn bytes.
//!
//! Bounds: `limit_bytes` in all (appends beyond fail with `SpillError::Full`, never a
//! silent drop) and frames up to `MAX_FRAME_BYTES`.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::log::dir_lock::DirLock;
use crate::log::LogError;

/// Largest frame (a batch with its header).
pub const MAX_FRAME_BYTES: usize = 16 << 20;

const FRAME_HEADER_BYTES: usize = 8;
const FILE_SUFFIX: &str = ".spill";
const CHECKPOINT: &str = "checkpoint";
const CHECKPOINT_TMP: &str = "checkpoint.tmp";

/// What went wrong with the journal.
#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    /// The file system refused.
    #[error("spill journal: {what} {path}: {source}")]
    Io {
        /// The operation.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The journal holds `limit` bytes already: the record is not spilled.
    #[error("spill journal full: {used} of {limit} bytes used; the record was not accepted")]
    Full {
        /// Bytes in the journal.
        used: u64,
        /// The limit.
        limit: u64,
    },
    /// Another producer (in this process or another) has the journal open.
    #[error("spill journal {0} is in use by another producer")]
    Locked(PathBuf),
    /// An earlier append failed in a way that leaves the journal's end unknown (its fsync
    /// failed, or it could not be cut back): nothing more is appended until it is reopened.
    #[error("spill journal unusable until reopened: {0}")]
    Unusable(String),
    /// A batch larger than a frame may be.
    #[error("batch of {0} bytes is too large for the spill journal")]
    TooLarge(usize),
    /// Damage that is not a torn tail: records after it would be lost if it were skipped.
    #[error("spill journal damaged in {path} at offset {offset}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

fn io_error(what: &'static str, path: &Path, source: std::io::Error) -> SpillError {
    SpillError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Where a frame is: file number and offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct JournalPosition {
    /// The file's number.
    pub file: u64,
    /// Offset of the frame in it.
    pub offset: u64,
}

/// A batch read back from the journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpilledBatch {
    /// Where its frame starts.
    pub position: JournalPosition,
    /// Where the next frame starts (what `mark_replayed` takes once this one is in).
    pub next: JournalPosition,
    /// When it was spilled.
    pub written_at: SystemTime,
    /// Its topic.
    pub topic: String,
    /// Its partition.
    pub partition: u32,
    /// The encoded batch, as it was (or would have been) sent.
    pub batch: Vec<u8>,
    /// The batch's crc32c.
    pub crc32c: u32,
}

/// What the journal holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpillStatus {
    /// Batches not yet replayed.
    pub pending_batches: u64,
    /// Bytes of files holding them.
    pub bytes: u64,
    /// Age of the oldest pending batch.
    pub oldest_age: Option<Duration>,
}

struct JournalFile {
    number: u64,
    path: PathBuf,
    length: u64,
}

/// An open spill journal (one per producer; not shared between processes).
pub struct SpillJournal {
    _lock: DirLock,
    dir: PathBuf,
    limit_bytes: u64,
    file_bytes: u64,
    files: VecDeque<JournalFile>,
    writer: Option<File>,
    /// Number the next new file gets (never reused: a lower number than the checkpoint's
    /// file would read as replayed).
    next_file_number: u64,
    checkpoint: JournalPosition,
    /// Appends go to a file numbered at least this (a checkpoint moved, or may have moved,
    /// to a fresh file: what a lower file held would read as replayed).
    min_append_file: u64,
    /// (position, next, written_at) of every pending frame, oldest first.
    pending: VecDeque<(JournalPosition, JournalPosition, SystemTime)>,
    /// Why appends are refused (a failed fsync, or a failed append that could not be cut
    /// back); `None` while the journal is usable.
    unusable: Option<String>,
}

/// Where the journal stood before an append, to cut a failed one back to.
struct AppendStart {
    files: usize,
    last_length: Option<u64>,
    pending: usize,
}

impl SpillJournal {
    /// Opens (or creates) the journal in `dir`; returns it with every batch not yet
    /// replayed, in the order they were spilled.
    pub fn open(
        dir: &Path,
        limit_bytes: u64,
        file_bytes: u64,
    ) -> Result<(SpillJournal, Vec<SpilledBatch>), SpillError> {
        std::fs::create_dir_all(dir).map_err(|e| io_error("create directory", dir, e))?;
        let lock = DirLock::acquire(dir).map_err(|error| match error {
            LogError::Locked(path) => SpillError::Locked(path),
            other => io_error("lock", dir, std::io::Error::other(other.to_string())),
        })?;
        let checkpoint = read_checkpoint(dir)?;
        let numbers = file_numbers(dir)?;
        let mut journal = SpillJournal {
            _lock: lock,
            dir: dir.to_path_buf(),
            limit_bytes,
            file_bytes: file_bytes.max(1),
            files: VecDeque::new(),
            writer: None,
            next_file_number: numbers
                .last()
                .map_or(1, |n| n + 1)
                .max(checkpoint.file)
                .max(1),
            checkpoint,
            min_append_file: checkpoint.file,
            pending: VecDeque::new(),
            unusable: None,
        };
        let mut batches = Vec::new();
        let newest = numbers.last().copied();
        for number in numbers {
            let path = journal.path_of(number);
            if number < checkpoint.file {
                // Wholly replayed; its removal was interrupted.
                std::fs::remove_file(&path).map_err(|e| io_error("remove", &path, e))?;
                continue;
            }
            let bytes = std::fs::read(&path).map_err(|e| io_error("read", &path, e))?;
            let scan = scan_file(&path, number, &bytes, Some(number) == newest)?;
            if scan.valid_length < bytes.len() as u64 {
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| io_error("open", &path, e))?;
                file.set_len(scan.valid_length)
                    .map_err(|e| io_error("truncate a torn tail of", &path, e))?;
                file.sync_all().map_err(|e| io_error("fsync", &path, e))?;
            }
            for batch in scan.batches {
                if batch.position >= checkpoint {
                    journal
                        .pending
                        .push_back((batch.position, batch.next, batch.written_at));
                    batches.push(batch);
                }
            }
            journal.files.push_back(JournalFile {
                number,
                path,
                length: scan.valid_length,
            });
        }
        Ok((journal, batches))
    }

    fn path_of(&self, number: u64) -> PathBuf {
        file_path(&self.dir, number)
    }

    /// Bytes of the journal's files.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.length).sum()
    }

    /// Batches waiting, their bytes and the oldest one's age.
    pub fn status(&self) -> SpillStatus {
        SpillStatus {
            pending_batches: self.pending.len() as u64,
            bytes: self.bytes(),
            oldest_age: self
                .pending
                .front()
                .and_then(|(_, _, at)| at.elapsed().ok()),
        }
    }

    /// Appends batches and makes them durable (one fsync for all) before returning where
    /// each starts and where the next frame starts. Fails without writing anything if
    /// they would exceed the limit. A failed append (a full disk, say, part-way through
    /// a frame) is cut back to the journal's last whole frame before the error returns,
    /// so later appends never follow torn bytes; if even that fails, or the fsync failed,
    /// the journal refuses every later append (`SpillError::Unusable`).
    pub fn append(
        &mut self,
        batches: &[(&str, u32, &[u8], u32)],
    ) -> Result<Vec<(JournalPosition, JournalPosition)>, SpillError> {
        if let Some(reason) = &self.unusable {
            return Err(SpillError::Unusable(reason.clone()));
        }
        let now = SystemTime::now();
        let frames: Vec<Vec<u8>> = batches
            .iter()
            .map(|(topic, partition, batch, crc)| encode_frame(now, topic, *partition, batch, *crc))
            .collect::<Result<_, _>>()?;
        let adding: u64 = frames.iter().map(|f| f.len() as u64).sum();
        let used = self.bytes();
        if used + adding > self.limit_bytes {
            return Err(SpillError::Full {
                used,
                limit: self.limit_bytes,
            });
        }
        let before = AppendStart {
            files: self.files.len(),
            last_length: self.files.back().map(|f| f.length),
            pending: self.pending.len(),
        };
        match self.write_frames(now, frames) {
            Ok(positions) => Ok(positions),
            Err((error, synced)) => {
                if let Err(cut_error) = self.roll_back(&before) {
                    self.unusable = Some(format!("{error}; then {cut_error}"));
                } else if synced {
                    // Never retry an fsync: what the failed one left is unknown.
                    self.unusable = Some(error.to_string());
                }
                Err(error)
            }
        }
    }

    /// Writes frames after the newest one (rolling files at `file_bytes`), then fsyncs.
    /// On failure also says whether it was the fsync that failed.
    fn write_frames(
        &mut self,
        now: SystemTime,
        frames: Vec<Vec<u8>>,
    ) -> Result<Vec<(JournalPosition, JournalPosition)>, (SpillError, bool)> {
        let mut positions = Vec::with_capacity(frames.len());
        for frame in frames {
            let needs_new_file = match self.files.back() {
                None => true,
                Some(last) => {
                    last.number < self.min_append_file
                        || (last.length > 0 && last.length + frame.len() as u64 > self.file_bytes)
                }
            };
            if needs_new_file || self.writer.is_none() {
                self.open_writer(needs_new_file).map_err(|e| (e, false))?;
            }
            let (Some(file), Some(writer)) = (self.files.back_mut(), self.writer.as_mut()) else {
                let missing = std::io::Error::other("no file to append to");
                return Err((
                    io_error("open a journal file in", &self.dir, missing),
                    false,
                ));
            };
            let position = JournalPosition {
                file: file.number,
                offset: file.length,
            };
            writer
                .write_all(&frame)
                .map_err(|e| (io_error("write", &file.path, e), false))?;
            file.length += frame.len() as u64;
            let next = JournalPosition {
                file: file.number,
                offset: file.length,
            };
            self.pending.push_back((position, next, now));
            positions.push((position, next));
        }
        if let (Some(writer), Some(file)) = (self.writer.as_ref(), self.files.back()) {
            writer
                .sync_data()
                .map_err(|e| (io_error("fsync", &file.path, e), true))?;
        }
        Ok(positions)
    }

    /// Undoes a failed append: files it started are removed, the file it appended to is
    /// cut back to its length before (whatever part of a frame reached it goes).
    fn roll_back(&mut self, before: &AppendStart) -> Result<(), SpillError> {
        self.writer = None;
        self.pending.truncate(before.pending);
        while self.files.len() > before.files {
            if let Some(started) = self.files.pop_back() {
                match std::fs::remove_file(&started.path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(io_error("remove", &started.path, e))
                    }
                    _ => {}
                }
            }
        }
        let (Some(file), Some(length)) = (self.files.back_mut(), before.last_length) else {
            return Ok(());
        };
        file.length = length;
        let handle = OpenOptions::new()
            .write(true)
            .open(&file.path)
            .map_err(|e| io_error("open", &file.path, e))?;
        handle
            .set_len(length)
            .map_err(|e| io_error("cut a failed append from", &file.path, e))?;
        handle
            .sync_all()
            .map_err(|e| io_error("fsync", &file.path, e))
    }

    /// Opens the newest file for appending, or a new one after it.
    fn open_writer(&mut self, new_file: bool) -> Result<(), SpillError> {
        if let Some(writer) = self.writer.take() {
            if let Some(file) = self.files.back() {
                writer
                    .sync_data()
                    .map_err(|e| io_error("fsync", &file.path, e))?;
            }
        }
        if new_file {
            let number = self.next_file_number;
            self.next_file_number += 1;
            let path = self.path_of(number);
            self.files.push_back(JournalFile {
                number,
                path,
                length: 0,
            });
        }
        let Some(file) = self.files.back() else {
            return Ok(());
        };
        let mut writer = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file.path)
            .map_err(|e| io_error("open", &file.path, e))?;
        writer
            .seek(SeekFrom::End(0))
            .map_err(|e| io_error("seek", &file.path, e))?;
        if new_file {
            sync_directory(&self.dir)?;
        }
        self.writer = Some(writer);
        Ok(())
    }

    /// Records that every batch before `next` is in the cluster: the checkpoint moves
    /// there (durably) and wholly replayed files are deleted (all of them once nothing is
    /// pending: the next spill starts a new file).
    pub fn mark_replayed(&mut self, next: JournalPosition) -> Result<(), SpillError> {
        if next <= self.checkpoint {
            return Ok(());
        }
        // The pending list (and the status read from it) changes only once the checkpoint
        // is saved: after a failed save the caller sends the batch again.
        let replayed = self
            .pending
            .iter()
            .take_while(|(p, _, _)| *p < next)
            .count();
        let checkpoint = if replayed == self.pending.len() {
            // Everything is in the cluster: the checkpoint moves to a file not yet written,
            // and the next spill starts it. Done before the save: a save that fails after
            // its rename may still have moved the checkpoint there, and a spill into the
            // current file would then sit below it (deleted as replayed at the next open).
            self.writer = None;
            let fresh = JournalPosition {
                file: self.next_file_number,
                offset: 0,
            };
            self.next_file_number += 1;
            self.min_append_file = fresh.file;
            fresh
        } else {
            next
        };
        write_checkpoint(&self.dir, checkpoint)?;
        self.pending.drain(..replayed);
        self.checkpoint = checkpoint;
        let mut removed = false;
        while self
            .files
            .front()
            .is_some_and(|f| f.number < checkpoint.file)
        {
            if let Some(done) = self.files.pop_front() {
                std::fs::remove_file(&done.path).map_err(|e| io_error("remove", &done.path, e))?;
                removed = true;
            }
        }
        if removed {
            sync_directory(&self.dir)?;
        }
        Ok(())
    }
}

/// What the journal in `dir` holds, read without changing anything (a torn tail is not
/// counted; damage elsewhere is an error). For a journal no producer has open.
pub fn inspect(dir: &Path) -> Result<SpillStatus, SpillError> {
    let checkpoint = read_checkpoint(dir)?;
    let numbers = file_numbers(dir)?;
    let newest = numbers.last().copied();
    let mut status = SpillStatus::default();
    for number in numbers.into_iter().filter(|&n| n >= checkpoint.file) {
        let path = file_path(dir, number);
        let bytes = std::fs::read(&path).map_err(|e| io_error("read", &path, e))?;
        let scan = scan_file(&path, number, &bytes, Some(number) == newest)?;
        status.bytes += scan.valid_length;
        for batch in scan.batches.iter().filter(|b| b.position >= checkpoint) {
            status.pending_batches += 1;
            if status.oldest_age.is_none() {
                status.oldest_age = batch.written_at.elapsed().ok();
            }
        }
    }
    Ok(status)
}

/// The journal file with number `number`.
fn file_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:020}{FILE_SUFFIX}"))
}

/// Numbers of the journal files in `dir`, ascending.
fn file_numbers(dir: &Path) -> Result<Vec<u64>, SpillError> {
    let mut numbers = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_error("list", dir, e))? {
        let entry = entry.map_err(|e| io_error("list", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(number) = name
            .strip_suffix(FILE_SUFFIX)
            .and_then(|stem| stem.parse::<u64>().ok())
        {
            numbers.push(number);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

fn encode_frame(
    now: SystemTime,
    topic: &str,
    partition: u32,
    batch: &[u8],
    crc32c: u32,
) -> Result<Vec<u8>, SpillError> {
    let topic_bytes = topic.as_bytes();
    let payload_length = 8 + 4 + 4 + 2 + topic_bytes.len() + batch.len();
    if payload_length + FRAME_HEADER_BYTES > MAX_FRAME_BYTES || topic_bytes.len() > 0xFFFF {
        return Err(SpillError::TooLarge(batch.len()));
    }
    let micros = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let mut payload = Vec::with_capacity(payload_length);
    payload.extend_from_slice(&micros.to_le_bytes());
    payload.extend_from_slice(&partition.to_le_bytes());
    payload.extend_from_slice(&crc32c.to_le_bytes());
    payload.extend_from_slice(&(topic_bytes.len() as u16).to_le_bytes());
    payload.extend_from_slice(topic_bytes);
    payload.extend_from_slice(batch);
    let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// The frame at `offset`, if a whole valid one is there: (payload range end, payload).
fn frame_at(bytes: &[u8], offset: usize) -> Option<(usize, &[u8])> {
    let header = bytes.get(offset..offset + FRAME_HEADER_BYTES)?;
    let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if length < 18 || length + FRAME_HEADER_BYTES > MAX_FRAME_BYTES {
        return None;
    }
    let start = offset + FRAME_HEADER_BYTES;
    let payload = bytes.get(start..start + length)?;
    (crc32c::crc32c(payload) == crc).then_some((start + length, payload))
}

struct Scan {
    batches: Vec<SpilledBatch>,
    valid_length: u64,
}

fn scan_file(path: &Path, number: u64, bytes: &[u8], newest: bool) -> Result<Scan, SpillError> {
    let mut batches = Vec::new();
    let mut offset = 0usize;
    while offset < bytes.len() {
        match frame_at(bytes, offset)
            .and_then(|(end, payload)| decode_payload(payload).map(|decoded| (end, decoded)))
        {
            Some((end, (written_at, topic, partition, crc32c, batch))) => {
                batches.push(SpilledBatch {
                    position: JournalPosition {
                        file: number,
                        offset: offset as u64,
                    },
                    next: JournalPosition {
                        file: number,
                        offset: end as u64,
                    },
                    written_at,
                    topic,
                    partition,
                    batch,
                    crc32c,
                });
                offset = end;
            }
            None => {
                // A torn tail: only in the newest file, and with no valid frame after it.
                let valid_later = (offset + 1..bytes.len()).any(|o| frame_at(bytes, o).is_some());
                if newest && !valid_later {
                    return Ok(Scan {
                        batches,
                        valid_length: offset as u64,
                    });
                }
                return Err(SpillError::Corrupt {
                    path: path.to_path_buf(),
                    offset: offset as u64,
                    reason: if newest {
                        "a damaged frame followed by valid ones".to_string()
                    } else {
                        "a damaged frame in a file that was complete".to_string()
                    },
                });
            }
        }
    }
    Ok(Scan {
        batches,
        valid_length: bytes.len() as u64,
    })
}

/// (written at, topic, partition, batch crc32c, batch) of a frame's payload.
fn decode_payload(payload: &[u8]) -> Option<(SystemTime, String, u32, u32, Vec<u8>)> {
    let micros = u64::from_le_bytes(payload.get(0..8)?.try_into().ok()?);
    let partition = u32::from_le_bytes(payload.get(8..12)?.try_into().ok()?);
    let crc32c = u32::from_le_bytes(payload.get(12..16)?.try_into().ok()?);
    let topic_length = u16::from_le_bytes(payload.get(16..18)?.try_into().ok()?) as usize;
    let topic = std::str::from_utf8(payload.get(18..18 + topic_length)?)
        .ok()?
        .to_string();
    let batch = payload.get(18 + topic_length..)?.to_vec();
    Some((
        UNIX_EPOCH + Duration::from_micros(micros),
        topic,
        partition,
        crc32c,
        batch,
    ))
}

fn read_checkpoint(dir: &Path) -> Result<JournalPosition, SpillError> {
    let path = dir.join(CHECKPOINT);
    let mut bytes = Vec::new();
    match File::open(&path) {
        Ok(mut file) => {
            file.read_to_end(&mut bytes)
                .map_err(|e| io_error("read", &path, e))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(JournalPosition { file: 0, offset: 0 })
        }
        Err(e) => return Err(io_error("open", &path, e)),
    }
    let corrupt = |reason: &str| SpillError::Corrupt {
        path: path.clone(),
        offset: 0,
        reason: reason.to_string(),
    };
    if bytes.len() != 20 {
        return Err(corrupt("checkpoint is not 20 bytes"));
    }
    let crc = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
    if crc32c::crc32c(&bytes[..16]) != crc {
        return Err(corrupt("checkpoint checksum mismatch"));
    }
    let mut file = [0u8; 8];
    let mut offset = [0u8; 8];
    file.copy_from_slice(&bytes[0..8]);
    offset.copy_from_slice(&bytes[8..16]);
    Ok(JournalPosition {
        file: u64::from_le_bytes(file),
        offset: u64::from_le_bytes(offset),
    })
}

fn write_checkpoint(dir: &Path, position: JournalPosition) -> Result<(), SpillError> {
    let mut bytes = Vec::with_capacity(20);
    bytes.extend_from_slice(&position.file.to_le_bytes());
    bytes.extend_from_slice(&position.offset.to_le_bytes());
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let temporary = dir.join(CHECKPOINT_TMP);
    let mut file = File::create(&temporary).map_err(|e| io_error("create", &temporary, e))?;
    file.write_all(&bytes)
        .map_err(|e| io_error("write", &temporary, e))?;
    file.sync_all()
        .map_err(|e| io_error("fsync", &temporary, e))?;
    let path = dir.join(CHECKPOINT);
    std::fs::rename(&temporary, &path).map_err(|e| io_error("rename", &path, e))?;
    sync_directory(dir)
}

fn sync_directory(dir: &Path) -> Result<(), SpillError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("fsync directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: u32) -> Vec<u8> {
        format!("batch-{n}-")
            .repeat(1 + n as usize % 7)
            .into_bytes()
    }

    fn spill(
        journal: &mut SpillJournal,
        range: std::ops::Range<u32>,
    ) -> Vec<(JournalPosition, JournalPosition)> {
        let batches: Vec<Vec<u8>> = range.clone().map(batch).collect();
        let entries: Vec<(&str, u32, &[u8], u32)> = range
            .clone()
            .zip(&batches)
            .map(|(n, b)| ("orders", n % 3, b.as_slice(), n))
            .collect();
        journal.append(&entries).unwrap()
    }

    fn numbers(batches: &[SpilledBatch]) -> Vec<u32> {
        batches.iter().map(|b| b.crc32c).collect()
    }

    /// A checkpoint that cannot be saved changes nothing: the batches stay pending (and
    /// counted), and a later save that works takes them off as if the first never ran.
    #[test]
    fn a_failed_checkpoint_save_leaves_the_journal_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = SpillJournal::open(dir.path(), 1 << 20, 512).unwrap();
        let positions = spill(&mut journal, 0..3);
        // A directory where the checkpoint's temporary file goes: its creation fails.
        let blocker = dir.path().join(CHECKPOINT_TMP);
        std::fs::create_dir(&blocker).unwrap();
        for (_, next) in [positions[0], positions[2]] {
            assert!(journal.mark_replayed(next).is_err());
            assert_eq!(
                journal.status().pending_batches,
                3,
                "a failed save took batches off"
            );
        }
        std::fs::remove_dir(&blocker).unwrap();
        journal.mark_replayed(positions[0].1).unwrap();
        assert_eq!(journal.status().pending_batches, 2);
        spill(&mut journal, 3..4);
        journal.mark_replayed(positions[2].1).unwrap();
        assert_eq!(journal.status().pending_batches, 1);
        drop(journal);
        let (_, pending) = SpillJournal::open(dir.path(), 1 << 20, 512).unwrap();
        assert_eq!(numbers(&pending), vec![3]);
    }

    /// A save that fails after its rename (the directory's fsync) may have moved the
    /// checkpoint to a fresh file: a batch spilled after it must not go into a file below
    /// that checkpoint, where the next open would delete it as replayed.
    #[test]
    fn a_spill_after_a_failed_save_never_sits_below_the_checkpoint_it_may_have_left() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = SpillJournal::open(dir.path(), 1 << 20, 512).unwrap();
        let positions = spill(&mut journal, 0..2);
        let fresh = JournalPosition {
            file: journal.next_file_number,
            offset: 0,
        };
        let blocker = dir.path().join(CHECKPOINT_TMP);
        std::fs::create_dir(&blocker).unwrap();
        assert!(journal.mark_replayed(positions[1].1).is_err());
        std::fs::remove_dir(&blocker).unwrap();
        // As if the rename had landed before the failure.
        write_checkpoint(dir.path(), fresh).unwrap();
        spill(&mut journal, 2..3);
        drop(journal);
        let (_, pending) = SpillJournal::open(dir.path(), 1 << 20, 512).unwrap();
        assert_eq!(
            numbers(&pending),
            vec![2],
            "the batch spilled after the failed save is lost"
        );
    }

    #[test]
    fn batches_come_back_in_order_after_reopen_and_replayed_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, pending) = SpillJournal::open(dir.path(), 1 << 20, 512).unwrap();
        assert!(pending.is_empty());
        spill(&mut journal, 0..10);
        spill(&mut journal, 10..30);
        assert_eq!(journal.status().pending_batches, 30);
        drop(journal);
        let (mut journal, pending) = SpillJournal::open(dir.path(), 1 << 20, 512).unwrap();
        assert_eq!(numbers(&pending), (0..30).collect::<Vec<_>>());
        assert!(pending
            .iter()
            .all(|b| b.topic == "orders" && b.batch == batch(b.crc32c)));
        assert!(journal.files.len() > 2, "files roll at 512 bytes");
        // The first 12 are in the cluster.
        journal.mark_replayed(pending[11].next).unwrap();
        assert_eq!(journal.status().pending_batches, 18);
        drop(journal);
        let (mut journal, pending) = SpillJournal::open(dir.path(), 1 << 20, 512).unwrap();
        assert_eq!(numbers(&pending), (12..30).collect::<Vec<_>>());
        // All of them: the files go, and new spills come back alone.
        journal.mark_replayed(pending[17].next).unwrap();
        assert_eq!(journal.status(), SpillStatus::default());
        spill(&mut journal, 30..33);
        drop(journal);
        let (_, pending) = SpillJournal::open(dir.path(), 1 << 20, 512).unwrap();
        assert_eq!(numbers(&pending), vec![30, 31, 32]);
        let files = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(FILE_SUFFIX)
            })
            .count();
        assert_eq!(files, 1, "replayed files are deleted");
    }

    #[test]
    fn a_torn_tail_is_cut_at_every_byte_and_spilling_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = SpillJournal::open(dir.path(), 1 << 20, 1 << 20).unwrap();
        spill(&mut journal, 0..5);
        let path = journal.files[0].path.clone();
        drop(journal);
        let whole = std::fs::read(&path).unwrap();
        let last_start = {
            let (_, pending) = SpillJournal::open(dir.path(), 1 << 20, 1 << 20).unwrap();
            pending[4].position.offset as usize
        };
        for cut in last_start..whole.len() {
            std::fs::write(&path, &whole[..cut]).unwrap();
            let (mut journal, pending) = SpillJournal::open(dir.path(), 1 << 20, 1 << 20).unwrap();
            assert_eq!(numbers(&pending), vec![0, 1, 2, 3], "cut at {cut}");
            assert_eq!(std::fs::metadata(&path).unwrap().len(), last_start as u64);
            spill(&mut journal, 4..5);
            drop(journal);
            let (_, pending) = SpillJournal::open(dir.path(), 1 << 20, 1 << 20).unwrap();
            assert_eq!(numbers(&pending), vec![0, 1, 2, 3, 4]);
        }
    }

    #[test]
    fn damage_before_valid_frames_is_reported_with_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = SpillJournal::open(dir.path(), 1 << 20, 1 << 20).unwrap();
        let positions = spill(&mut journal, 0..5);
        let path = journal.files[0].path.clone();
        drop(journal);
        let mut bytes = std::fs::read(&path).unwrap();
        let target = positions[2].0.offset as usize + FRAME_HEADER_BYTES + 3;
        bytes[target] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        match SpillJournal::open(dir.path(), 1 << 20, 1 << 20) {
            Err(SpillError::Corrupt {
                path: reported,
                offset,
                ..
            }) => {
                assert_eq!(reported, path);
                assert_eq!(offset, positions[2].0.offset);
            }
            other => panic!("expected corruption, got {:?}", other.map(|(_, p)| p.len())),
        }
    }

    #[test]
    fn a_second_producer_cannot_open_the_same_journal() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = SpillJournal::open(dir.path(), 1 << 20, 1 << 20).unwrap();
        assert!(matches!(
            SpillJournal::open(dir.path(), 1 << 20, 1 << 20),
            Err(SpillError::Locked(_))
        ));
        drop(journal);
        assert!(SpillJournal::open(dir.path(), 1 << 20, 1 << 20).is_ok());
    }

    #[test]
    fn inspect_counts_what_is_pending_without_changing_anything() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = SpillJournal::open(dir.path(), 1 << 20, 256).unwrap();
        let positions = spill(&mut journal, 0..10);
        journal.mark_replayed(positions[3].1).unwrap();
        let status = inspect(dir.path()).unwrap();
        assert_eq!(status.pending_batches, 6);
        assert_eq!(status.bytes, journal.bytes());
        assert!(status.oldest_age.is_some());
    }

    #[test]
    fn a_full_journal_refuses_without_writing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = SpillJournal::open(dir.path(), 300, 1 << 20).unwrap();
        let big = vec![7u8; 200];
        journal.append(&[("t", 0, &big, 1)]).unwrap();
        let before = journal.bytes();
        match journal.append(&[("t", 0, &big, 2)]) {
            Err(SpillError::Full { used, limit }) => {
                assert_eq!((used, limit), (before, 300));
            }
            other => panic!("expected Full, got {other:?}"),
        }
        assert_eq!(journal.bytes(), before);
        drop(journal);
        let (_, pending) = SpillJournal::open(dir.path(), 300, 1 << 20).unwrap();
        assert_eq!(pending.len(), 1);
    }

    /// Unmounts the test's tmpfs even when an assertion fails.
    struct Mount(PathBuf);

    impl Drop for Mount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }

    fn is_root() -> bool {
        std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
            status
                .lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
    }

    /// Issue 11, item 17: an append that fails part-way through a frame (the disk filled
    /// up) must not leave torn bytes for the next append to follow: the journal cuts back
    /// to its last whole frame, later appends succeed once there is room, and reopening
    /// reads every whole frame (before the fix it refused the journal as damaged).
    #[test]
    fn an_append_torn_by_a_full_disk_is_cut_back_and_the_journal_goes_on() {
        if !is_root() {
            eprintln!("skipped: mounting a tmpfs needs root");
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let mount_point = root.path().join("small");
        std::fs::create_dir(&mount_point).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
            .arg(&mount_point)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs");
        let _mount = Mount(mount_point.clone());
        let filler = mount_point.join("filler");
        std::fs::write(&filler, vec![1u8; 96 << 10]).unwrap();
        let dir = mount_point.join("journal");
        let (mut journal, _) = SpillJournal::open(&dir, 64 << 20, 64 << 20).unwrap();
        // Frames of 10,034 bytes: not a multiple of the page size, so the disk fills up
        // in the middle of one.
        let big = |n: u8| vec![n; 10_000];
        let mut appended = Vec::new();
        let error = loop {
            let n = appended.len() as u8;
            match journal.append(&[("t", 0, &big(n), u32::from(n))]) {
                Ok(_) => appended.push(u32::from(n)),
                Err(error) => break error,
            }
            assert!(appended.len() < 100, "the tmpfs never filled up");
        };
        assert!(matches!(error, SpillError::Io { .. }), "{error}");
        assert!(!appended.is_empty());
        // Room again: appends succeed and go right after the last whole frame.
        std::fs::remove_file(&filler).unwrap();
        for n in 200..203u8 {
            journal.append(&[("t", 0, &big(n), u32::from(n))]).unwrap();
            appended.push(u32::from(n));
        }
        drop(journal);
        let (_, pending) = SpillJournal::open(&dir, 64 << 20, 64 << 20).unwrap();
        assert_eq!(numbers(&pending), appended);
        assert!(pending.iter().all(|b| b.batch == big(b.crc32c as u8)));
    }
}
