//! A shard's Raft snapshots on disk, next to its log: `data_dir/shard-<i>.snapshots/`,
//! one file per snapshot named by its index. A snapshot is the applied state at a log
//! index (`broker::snapshot`) with the index's term and the group's configuration.
//!
//! The snapshot at the log's compaction point is what a restart starts from (the entries
//! after it are applied again) and what a follower behind the compaction point is sent.
//! Files are written whole (temporary file, fsync, rename, fsync of the directory) and
//! carry a crc32c; they are small (topics, partitions' next offsets, producers' last
//! sequences), so plain blocking file calls are used.
//!
//! ```text
//! file: magic "KSSF" | version u16 | index u64 | term u64
//!       | voters, learners, voters_outgoing, learners_next: count u32, u64s
//!       | auto_leave u8 | data length u64 | data | crc32c u32 (of all before it)
//! ```
//! Version 1 files (voters and learners only, no auto_leave) are still read.

use std::io::Write;
use std::path::{Path, PathBuf};

use raft::eraftpb::{ConfState, Snapshot};

use crate::broker::snapshot::Reader;

const MAGIC: &[u8; 4] = b"KSSF";
/// Version 2 keeps the whole configuration, joint ones too (version 1 lost
/// `voters_outgoing`, `learners_next` and `auto_leave`: `sim_store_agrees` seed 0x5).
const VERSION: u16 = 2;
const VERSION_TWO_LISTS: u16 = 1;
const SUFFIX: &str = ".snapshot";
const TEMPORARY_SUFFIX: &str = ".snapshot.tmp";

/// What went wrong with a snapshot file.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    /// The file system refused.
    #[error("{what} {path}: {source}")]
    Io {
        /// The operation.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is damaged.
    #[error("snapshot file {path} is damaged: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn io_error(what: &'static str, path: &Path, source: std::io::Error) -> SnapshotFileError {
    SnapshotFileError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The snapshot directory of one shard.
#[derive(Clone)]
pub struct SnapshotFiles {
    dir: PathBuf,
}

impl SnapshotFiles {
    /// Opens (creating) the directory and removes half-written files a crash left.
    pub fn open(dir: &Path) -> Result<SnapshotFiles, SnapshotFileError> {
        std::fs::create_dir_all(dir).map_err(|e| io_error("create directory", dir, e))?;
        let files = SnapshotFiles {
            dir: dir.to_path_buf(),
        };
        for entry in std::fs::read_dir(dir).map_err(|e| io_error("list", dir, e))? {
            let entry = entry.map_err(|e| io_error("list", dir, e))?;
            if entry
                .file_name()
                .to_string_lossy()
                .ends_with(TEMPORARY_SUFFIX)
            {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(|e| io_error("remove", &path, e))?;
            }
        }
        Ok(files)
    }

    fn path_of(&self, index: u64) -> PathBuf {
        self.dir.join(format!("{index:020}{SUFFIX}"))
    }

    /// Indexes of the snapshots on disk, ascending.
    pub fn indexes(&self) -> Result<Vec<u64>, SnapshotFileError> {
        let mut indexes = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(|e| io_error("list", &self.dir, e))? {
            let entry = entry.map_err(|e| io_error("list", &self.dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(index) = name
                .strip_suffix(SUFFIX)
                .and_then(|stem| stem.parse::<u64>().ok())
            {
                indexes.push(index);
            }
        }
        indexes.sort_unstable();
        Ok(indexes)
    }

    /// Writes `snapshot` durably (replacing one at the same index).
    pub fn write(&self, snapshot: &Snapshot) -> Result<(), SnapshotFileError> {
        let metadata = snapshot.get_metadata();
        let conf = metadata.get_conf_state();
        let mut out = Vec::with_capacity(64 + snapshot.data.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&metadata.index.to_le_bytes());
        out.extend_from_slice(&metadata.term.to_le_bytes());
        let lists = [
            &conf.voters,
            &conf.learners,
            &conf.voters_outgoing,
            &conf.learners_next,
        ];
        for list in lists {
            out.extend_from_slice(&(list.len() as u32).to_le_bytes());
            for id in list {
                out.extend_from_slice(&id.to_le_bytes());
            }
        }
        out.push(u8::from(conf.auto_leave));
        out.extend_from_slice(&(snapshot.data.len() as u64).to_le_bytes());
        out.extend_from_slice(&snapshot.data);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());

        let path = self.path_of(metadata.index);
        let temporary = self
            .dir
            .join(format!("{:020}{TEMPORARY_SUFFIX}", metadata.index));
        let mut file =
            std::fs::File::create(&temporary).map_err(|e| io_error("create", &temporary, e))?;
        file.write_all(&out)
            .map_err(|e| io_error("write", &temporary, e))?;
        file.sync_all()
            .map_err(|e| io_error("fsync", &temporary, e))?;
        drop(file);
        std::fs::rename(&temporary, &path).map_err(|e| io_error("rename", &path, e))?;
        self.sync_directory()
    }

    /// Reads the snapshot at `index`.
    pub fn read(&self, index: u64) -> Result<Snapshot, SnapshotFileError> {
        let path = self.path_of(index);
        let bytes = std::fs::read(&path).map_err(|e| io_error("read", &path, e))?;
        decode(&bytes).map_err(|reason| SnapshotFileError::Damaged {
            path: path.clone(),
            reason: reason.to_string(),
        })
    }

    /// `write` on the executor's blocking thread (a state's bytes written and synced, the
    /// directory synced: never on a shard's thread); gives the snapshot back.
    pub async fn write_off_thread(
        &self,
        snapshot: Snapshot,
    ) -> (Snapshot, Result<(), SnapshotFileError>) {
        let files = self.clone();
        glommio::executor()
            .spawn_blocking(move || {
                let written = files.write(&snapshot);
                (snapshot, written)
            })
            .await
    }

    /// `remove_below` on the executor's blocking thread.
    pub async fn remove_below_off_thread(&self, index: u64) -> Result<(), SnapshotFileError> {
        let files = self.clone();
        glommio::executor()
            .spawn_blocking(move || files.remove_below(index))
            .await
    }

    /// Removes every snapshot below `index`.
    pub fn remove_below(&self, index: u64) -> Result<(), SnapshotFileError> {
        let mut removed = false;
        for old in self.indexes()?.into_iter().filter(|&i| i < index) {
            let path = self.path_of(old);
            std::fs::remove_file(&path).map_err(|e| io_error("remove", &path, e))?;
            removed = true;
        }
        if removed {
            self.sync_directory()?;
        }
        Ok(())
    }

    fn sync_directory(&self) -> Result<(), SnapshotFileError> {
        std::fs::File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| io_error("fsync directory", &self.dir, e))
    }
}

fn decode(bytes: &[u8]) -> Result<Snapshot, &'static str> {
    if bytes.len() < 4 {
        return Err("too short");
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let mut crc_bytes = [0u8; 4];
    crc_bytes.copy_from_slice(crc);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc_bytes) {
        return Err("checksum mismatch");
    }
    let mut reader = Reader { bytes: body };
    let malformed = |_| "truncated or malformed";
    if reader.take(4).map_err(malformed)? != MAGIC {
        return Err("not a snapshot file");
    }
    let list_count = match reader.u16().map_err(malformed)? {
        VERSION => 4,
        VERSION_TWO_LISTS => 2,
        _ => return Err("unsupported version"),
    };
    let index = reader.u64().map_err(malformed)?;
    let term = reader.u64().map_err(malformed)?;
    let mut lists = Vec::with_capacity(4);
    for _ in 0..list_count {
        let count = reader.count(8).map_err(malformed)?;
        let mut list = Vec::with_capacity(count);
        for _ in 0..count {
            list.push(reader.u64().map_err(malformed)?);
        }
        lists.push(list);
    }
    lists.resize(4, Vec::new());
    let auto_leave = match list_count {
        4 => match reader.take(1).map_err(malformed)? {
            [0] => false,
            [1] => true,
            _ => return Err("auto_leave is neither 0 nor 1"),
        },
        _ => false,
    };
    let length = reader.u64().map_err(malformed)?;
    let length = usize::try_from(length).map_err(|_| "data length")?;
    let data = reader.take(length).map_err(malformed)?.to_vec();
    if !reader.bytes.is_empty() {
        return Err("trailing bytes");
    }
    let mut snapshot = Snapshot {
        data: data.into(),
        ..Default::default()
    };
    let metadata = snapshot.mut_metadata();
    metadata.index = index;
    metadata.term = term;
    let learners_next = lists.pop().unwrap_or_default();
    let voters_outgoing = lists.pop().unwrap_or_default();
    let learners = lists.pop().unwrap_or_default();
    let voters = lists.pop().unwrap_or_default();
    metadata.set_conf_state(ConfState {
        voters,
        learners,
        voters_outgoing,
        learners_next,
        auto_leave,
        ..Default::default()
    });
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(index: u64) -> Snapshot {
        let mut snapshot = Snapshot {
            data: vec![7u8; 100].into(),
            ..Default::default()
        };
        snapshot.mut_metadata().index = index;
        snapshot.mut_metadata().term = 3;
        snapshot.mut_metadata().set_conf_state(ConfState {
            voters: vec![1, 2, 3],
            ..Default::default()
        });
        snapshot
    }

    #[test]
    fn snapshots_round_trip_are_listed_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let files = SnapshotFiles::open(&dir.path().join("snaps")).unwrap();
        for index in [10, 30, 20] {
            files.write(&snapshot(index)).unwrap();
        }
        assert_eq!(files.indexes().unwrap(), vec![10, 20, 30]);
        assert_eq!(files.read(20).unwrap(), snapshot(20));
        files.remove_below(30).unwrap();
        assert_eq!(files.indexes().unwrap(), vec![30]);
    }

    /// Regression (`sim_store_agrees` seed 0x5): a joint configuration comes back whole
    /// (version 1 files kept only voters and learners); version 1 files are still read.
    #[test]
    fn a_joint_configuration_round_trips_and_version_one_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let files = SnapshotFiles::open(&dir.path().join("snaps")).unwrap();
        let mut joint = snapshot(40);
        joint.mut_metadata().set_conf_state(ConfState {
            voters: vec![1, 2, 4],
            learners: vec![5],
            voters_outgoing: vec![1, 2, 3],
            learners_next: vec![3],
            auto_leave: true,
            ..Default::default()
        });
        files.write(&joint).unwrap();
        assert_eq!(files.read(40).unwrap(), joint);

        let old = snapshot(7);
        let metadata = old.get_metadata();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&VERSION_TWO_LISTS.to_le_bytes());
        bytes.extend_from_slice(&metadata.index.to_le_bytes());
        bytes.extend_from_slice(&metadata.term.to_le_bytes());
        for list in [
            &metadata.get_conf_state().voters,
            &metadata.get_conf_state().learners,
        ] {
            bytes.extend_from_slice(&(list.len() as u32).to_le_bytes());
            for id in list {
                bytes.extend_from_slice(&id.to_le_bytes());
            }
        }
        bytes.extend_from_slice(&(old.data.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&old.data);
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&bytes).unwrap(), old);
    }

    #[test]
    fn a_damaged_file_is_refused_and_a_half_written_one_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snaps");
        let files = SnapshotFiles::open(&path).unwrap();
        files.write(&snapshot(5)).unwrap();
        let file = path.join(format!("{:020}{SUFFIX}", 5));
        let mut bytes = std::fs::read(&file).unwrap();
        for position in 0..bytes.len() {
            bytes[position] ^= 1;
            assert!(decode(&bytes).is_err());
            bytes[position] ^= 1;
        }
        bytes[30] ^= 1;
        std::fs::write(&file, &bytes).unwrap();
        assert!(matches!(
            files.read(5),
            Err(SnapshotFileError::Damaged { .. })
        ));
        std::fs::write(path.join("00000000000000000009.snapshot.tmp"), b"half").unwrap();
        let files = SnapshotFiles::open(&path).unwrap();
        assert_eq!(files.indexes().unwrap(), vec![5]);
    }
}
