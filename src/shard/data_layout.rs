//! Where a node keeps each replica group's files in its data directory: one log
//! directory, one snapshot directory and one space reserve per group, named by the
//! group (a shard may run several groups, and a group's files stay put whichever shard
//! runs it).
//!
//! ```text
//! data_dir/group-<g>/                 the group's CommitLog
//! data_dir/group-<g>.snapshots/       snapshots of its applied state
//! data_dir/group-<g>.space-reserve    the space held back for it (`no_space`)
//! data_dir/group-<g>.left             its replica here left the group for good
//! ```
//!
//! Data directories written before groups had their own names used `shard-<i>` for
//! group *i* (group *i* always ran on shard *i*); `adopt_shard_names` renames them once,
//! at start, before any shard opens a file. Owns file names only; never reads a file.

use std::path::{Path, PathBuf};

use crate::controller::GroupId;

/// The log directory of `group`.
pub fn log_dir(data_dir: &Path, group: GroupId) -> PathBuf {
    data_dir.join(format!("group-{}", group.0))
}

/// The snapshot directory of `group`.
pub fn snapshot_dir(data_dir: &Path, group: GroupId) -> PathBuf {
    data_dir.join(format!("group-{}.snapshots", group.0))
}

/// The space reserve file of `group`.
pub fn space_reserve(data_dir: &Path, group: GroupId) -> PathBuf {
    data_dir.join(format!("group-{}.space-reserve", group.0))
}

/// Whether `data_dir` holds the log of any group (a node that ran before).
pub fn holds_any_group(data_dir: &Path) -> bool {
    std::fs::read_dir(data_dir).is_ok_and(|entries| {
        entries.flatten().any(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            name.strip_prefix("group-")
                .is_some_and(|id| id.parse::<u32>().is_ok())
        })
    })
}

/// The marker saying this node's replica of `group` left it for good.
pub fn left_marker(data_dir: &Path, group: GroupId) -> PathBuf {
    data_dir.join(format!("group-{}.left", group.0))
}

/// Whether this node's replica of `group` left it for good (it is never opened again).
pub fn has_left(data_dir: &Path, group: GroupId) -> bool {
    left_marker(data_dir, group).exists()
}

/// Marks `group` left, durably (file and directory synced) before its files go: a crash
/// in the middle of deleting them never reopens a partial log.
pub fn mark_left(data_dir: &Path, group: GroupId) -> std::io::Result<()> {
    let marker = std::fs::File::create(left_marker(data_dir, group))?;
    marker.sync_all()?;
    std::fs::File::open(data_dir)?.sync_all()
}

/// Removes every file of `group` (its replica left this node for good).
pub fn remove_group_files(data_dir: &Path, group: GroupId) -> std::io::Result<()> {
    for dir in [log_dir(data_dir, group), snapshot_dir(data_dir, group)] {
        match std::fs::remove_dir_all(&dir) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
    }
    match std::fs::remove_file(space_reserve(data_dir, group)) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// Renames the files of a data directory written with shard names (`shard-<i>`,
/// `shard-<i>.snapshots`, `shard-<i>.space-reserve`) to their group's names. A name
/// whose group name exists too is left alone and reported: which one holds the group
/// is not for this function to guess.
pub fn adopt_shard_names(data_dir: &Path) -> std::io::Result<Vec<String>> {
    let mut renamed = Vec::new();
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return Ok(renamed);
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(new_name) = group_name_of(&name) else {
            continue;
        };
        let target = data_dir.join(&new_name);
        if target.exists() {
            return Err(std::io::Error::other(format!(
                "{} and {} both exist in {}: move one away",
                name,
                new_name,
                data_dir.display()
            )));
        }
        std::fs::rename(entry.path(), &target)?;
        renamed.push(format!("{name} -> {new_name}"));
    }
    if !renamed.is_empty() {
        crate::log::io::sync_directory(data_dir)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
    }
    Ok(renamed)
}

/// `shard-<i>[suffix]` → `group-<i>[suffix]` for the suffixes this layout uses.
fn group_name_of(name: &str) -> Option<String> {
    let rest = name.strip_prefix("shard-")?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let (number, suffix) = rest.split_at(digits);
    if number.is_empty() || !["", ".snapshots", ".space-reserve"].contains(&suffix) {
        return None;
    }
    Some(format!("group-{number}{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data directory of shard names comes up with group names; nothing else moves.
    #[test]
    fn shard_named_files_are_renamed_to_their_group() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["shard-0", "shard-0.snapshots", "shard-12"] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        std::fs::write(dir.path().join("shard-0/segment"), b"kept").unwrap();
        std::fs::write(dir.path().join("shard-3.space-reserve"), b"").unwrap();
        std::fs::write(dir.path().join("shard-x"), b"").unwrap();
        std::fs::write(dir.path().join("shard-1.other"), b"").unwrap();
        let mut renamed = adopt_shard_names(dir.path()).unwrap();
        renamed.sort();
        assert_eq!(renamed.len(), 4, "{renamed:?}");
        let group_0 = log_dir(dir.path(), GroupId(0));
        assert_eq!(std::fs::read(group_0.join("segment")).unwrap(), b"kept");
        assert!(snapshot_dir(dir.path(), GroupId(0)).is_dir());
        assert!(log_dir(dir.path(), GroupId(12)).is_dir());
        assert!(space_reserve(dir.path(), GroupId(3)).is_file());
        assert!(dir.path().join("shard-x").exists());
        assert!(dir.path().join("shard-1.other").exists());
        assert!(adopt_shard_names(dir.path()).unwrap().is_empty());
    }

    /// Both names present: the start stops and says so, rather than pick one.
    #[test]
    fn a_shard_name_next_to_its_group_name_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("shard-0")).unwrap();
        std::fs::create_dir(dir.path().join("group-0")).unwrap();
        let error = adopt_shard_names(dir.path()).unwrap_err();
        assert!(error.to_string().contains("both exist"), "{error}");
    }
}
