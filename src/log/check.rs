//! `keel log check DIR`: reports what opening a log directory would find and do, without
//! changing anything.

use std::fmt::Write as _;
use std::path::Path;

use crate::log::error::LogError;
use crate::log::meta::read_meta_file;
use crate::log::recovery::plan_recovery;

/// The verdict of a check, with its process exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckVerdict {
    /// Opening would change nothing.
    Clean = 0,
    /// Opening would repair something (cut a torn tail, delete leftovers).
    WouldRepair = 1,
    /// Opening would fail: damaged data in the middle of the log.
    Corrupt = 2,
    /// The directory could not be read.
    Unreadable = 3,
}

/// Inspects `dir` and returns a human-readable report and the verdict. `deep` reads and
/// checks every entry of every segment; otherwise sealed segments with a valid index file
/// are taken from it, as opening the log does.
pub fn check_log_directory(
    dir: &Path,
    max_payload_bytes: u32,
    deep: bool,
) -> (String, CheckVerdict) {
    let mut report = String::new();
    if !dir.is_dir() {
        return (
            format!("{}: not a directory\n", dir.display()),
            CheckVerdict::Unreadable,
        );
    }
    let meta = match read_meta_file(dir) {
        Ok(Some(meta)) => meta,
        Ok(None) => {
            let _ = writeln!(
                report,
                "{}: no meta file (a new or empty log)",
                dir.display()
            );
            Default::default()
        }
        Err(error) => return (format!("{}: {error}\n", dir.display()), verdict_of(&error)),
    };
    let _ = writeln!(
        report,
        "hard state: term {} vote {} commit {}\ncompaction point: index {} term {}\nvoters: {:?} learners: {:?}",
        meta.hard_state.term,
        meta.hard_state.vote,
        meta.hard_state.commit,
        meta.compaction_index,
        meta.compaction_term,
        meta.conf_state.voters,
        meta.conf_state.learners
    );
    if let Some(fence) = meta.truncation_fence {
        let _ = writeln!(
            report,
            "interrupted suffix truncation: log ends at offset {} of segment {}",
            fence.offset, fence.segment_first_index
        );
    }
    let plan = match plan_recovery(dir, &meta, max_payload_bytes, !deep) {
        Ok(plan) => plan,
        Err(error) => {
            let _ = writeln!(report, "CORRUPT: {error}");
            return (report, verdict_of(&error));
        }
    };
    for segment in &plan.keep {
        let range = match segment.entry_count() {
            0 => "no entries".to_string(),
            _ => format!("indexes {}..={}", segment.first_index, segment.last_index),
        };
        let source = if segment.from_index_file {
            " (from its index file)"
        } else {
            ""
        };
        let _ = writeln!(
            report,
            "segment {}: {} entries, {range}, {} bytes of data in a {} byte file{source}",
            segment.path.display(),
            segment.entry_count(),
            segment.data_end,
            segment.file_length
        );
    }
    let _ = writeln!(
        report,
        "first index {}, last index {}",
        meta.compaction_index + 1,
        plan.last_index(&meta)
    );
    if let Some(cut) = &plan.tail_cut {
        let why = cut
            .defect
            .map_or("interrupted truncation".to_string(), |d| format!("{d:?}"));
        let why = if cut.torn_write {
            format!("{why}, a block of an unsynced write that never landed")
        } else {
            why
        };
        let _ = writeln!(
            report,
            "would cut the tail at {} offset {} (index {} onwards is gone: {why}), erasing up to offset {}",
            cut.path.display(),
            cut.offset,
            cut.first_lost_index,
            cut.erase_end
        );
    }
    for path in &plan.delete {
        let _ = writeln!(report, "would delete {}", path.display());
    }
    if plan.is_clean() {
        let _ = writeln!(report, "clean: opening changes nothing");
        (report, CheckVerdict::Clean)
    } else {
        (report, CheckVerdict::WouldRepair)
    }
}

fn verdict_of(error: &LogError) -> CheckVerdict {
    match error {
        LogError::Corruption { .. } => CheckVerdict::Corrupt,
        _ => CheckVerdict::Unreadable,
    }
}
