//! A producer's idempotent identity: its id, its epoch and, per partition, the next
//! sequence number. Batches carry (id, epoch, base sequence); the broker stores a batch
//! only if it comes next (or starts an epoch at sequence 0) and answers a retried one
//! with its first offset (`broker::producers`).
//!
//! The epoch is bumped — every partition's sequence goes back to 0 — whenever the
//! producer cannot know whether a batch was stored (its answer never came within the
//! delivery timeout) or the broker refused a batch's sequence (it forgot the producer, or
//! a gap): the next batch of every partition then starts the new epoch, which the broker
//! accepts whatever it stored before. With a spill journal, the id and epoch are kept in
//! its directory (`producer`, written whole: temporary file, fsync, rename) and the epoch
//! is bumped at each start, so a restarted producer fences what its previous run left in
//! flight and the broker's table does not fill with a new id per start. Without a journal
//! each start takes a new random id at epoch 0. Past epoch `u16::MAX` a new id is taken.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::client::spill_journal::SpillError;
use crate::protocol::codec::BatchProducer;

const FILE: &str = "producer";
const TEMPORARY_FILE: &str = "producer.tmp";
const MAGIC: &[u8; 4] = b"KPID";
const VERSION: u8 = 1;
/// magic, version, id u64, epoch u16, crc32c u32.
const FILE_BYTES: usize = 4 + 1 + 8 + 2 + 4;

/// The identity batches are sent with.
#[derive(Debug)]
pub struct Identity {
    producer_id: u64,
    epoch: u16,
    next_sequence: BTreeMap<(String, u32), u32>,
    /// Where it is kept (`None`: not kept).
    file: Option<PathBuf>,
}

fn random_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (nanos ^ (u64::from(std::process::id()) << 40)).max(1)
}

fn io_error(what: &'static str, path: &Path, source: std::io::Error) -> SpillError {
    SpillError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

impl Identity {
    /// A new random id at epoch 0, not kept anywhere.
    pub fn ephemeral() -> Identity {
        Identity {
            producer_id: random_id(),
            epoch: 0,
            next_sequence: BTreeMap::new(),
            file: None,
        }
    }

    /// The identity kept in `dir` (a new one if there is none), with its epoch bumped and
    /// the bump durable before it is returned.
    pub fn load_and_bump(dir: &Path) -> Result<Identity, SpillError> {
        let path = dir.join(FILE);
        let mut identity = match std::fs::read(&path) {
            Ok(bytes) => Identity::decode(&path, &bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Identity::ephemeral(),
            Err(e) => return Err(io_error("read", &path, e)),
        };
        identity.file = Some(path);
        identity.bump()?;
        Ok(identity)
    }

    fn decode(path: &Path, bytes: &[u8]) -> Result<Identity, SpillError> {
        let corrupt = |reason: &str| SpillError::Corrupt {
            path: path.to_path_buf(),
            offset: 0,
            reason: reason.to_string(),
        };
        if bytes.len() != FILE_BYTES || &bytes[..4] != MAGIC || bytes[4] != VERSION {
            return Err(corrupt("not a producer identity of version 1"));
        }
        let mut crc = [0u8; 4];
        crc.copy_from_slice(&bytes[15..19]);
        if crc32c::crc32c(&bytes[..15]) != u32::from_le_bytes(crc) {
            return Err(corrupt("producer identity checksum mismatch"));
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&bytes[5..13]);
        Ok(Identity {
            producer_id: u64::from_le_bytes(id),
            epoch: u16::from_le_bytes([bytes[13], bytes[14]]),
            next_sequence: BTreeMap::new(),
            file: None,
        })
    }

    fn store(&self) -> Result<(), SpillError> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut bytes = Vec::with_capacity(FILE_BYTES);
        bytes.extend_from_slice(MAGIC);
        bytes.push(VERSION);
        bytes.extend_from_slice(&self.producer_id.to_le_bytes());
        bytes.extend_from_slice(&self.epoch.to_le_bytes());
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        let temporary = dir.join(TEMPORARY_FILE);
        let mut file =
            std::fs::File::create(&temporary).map_err(|e| io_error("create", &temporary, e))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| io_error("write", &temporary, e))?;
        std::fs::rename(&temporary, path).map_err(|e| io_error("rename", path, e))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error("fsync directory", dir, e))
    }

    /// Starts a new epoch: every partition's sequence goes back to 0 (past `u16::MAX`, a
    /// new id at epoch 0). Kept durably first when the identity is kept; if that fails the
    /// new epoch is still used (a later start may then reuse an epoch, which the broker
    /// refuses as stale and the producer bumps past).
    pub fn bump(&mut self) -> Result<(), SpillError> {
        match self.epoch.checked_add(1) {
            Some(epoch) => self.epoch = epoch,
            None => {
                self.producer_id = random_id();
                self.epoch = 0;
            }
        }
        self.next_sequence.clear();
        self.store()
    }

    /// The producer fields of the next batch of `key`, which holds `record_count` records
    /// (its sequence numbers are taken).
    pub fn take(&mut self, key: &(String, u32), record_count: u32) -> BatchProducer {
        let sequence = self.next_sequence.get(key).copied().unwrap_or(0);
        self.next_sequence
            .insert(key.clone(), sequence.wrapping_add(record_count));
        BatchProducer {
            producer_id: self.producer_id,
            producer_epoch: self.epoch,
            base_sequence: sequence,
        }
    }

    /// Gives back the sequence numbers of `key`'s last batch (`producer`, `record_count`
    /// records), which was certainly not stored; nothing if anything was taken since.
    pub fn give_back(&mut self, key: &(String, u32), producer: BatchProducer, record_count: u32) {
        let current = producer.producer_id == self.producer_id
            && producer.producer_epoch == self.epoch
            && self.next_sequence.get(key).copied()
                == Some(producer.base_sequence.wrapping_add(record_count));
        if current {
            self.next_sequence
                .insert(key.clone(), producer.base_sequence);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_identity_keeps_its_id_and_bumps_its_epoch_at_each_load_and_bump() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = Identity::load_and_bump(dir.path()).unwrap();
        let key = ("t".to_string(), 0);
        assert_eq!(first.take(&key, 5).base_sequence, 0);
        assert_eq!(first.take(&key, 5).base_sequence, 5);
        first.bump().unwrap();
        let batch = first.take(&key, 2);
        assert_eq!(batch.base_sequence, 0);
        first.give_back(&key, batch, 2);
        assert_eq!(first.take(&key, 1).base_sequence, 0);
        let second = Identity::load_and_bump(dir.path()).unwrap();
        assert_eq!(second.producer_id, first.producer_id);
        assert_eq!(second.epoch, first.epoch + 1);
        std::fs::write(dir.path().join(FILE), b"garbage").unwrap();
        assert!(matches!(
            Identity::load_and_bump(dir.path()),
            Err(SpillError::Corrupt { .. })
        ));
    }
}
