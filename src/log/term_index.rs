//! Index → term lookup for every entry of the log, kept in memory as runs of equal terms.
//!
//! Terms change rarely (once per election), so the runs stay few; lookups are a binary
//! search. Answers for indexes from the compaction point up to the last index.

/// Runs of equal terms: `(first index of the run, term)`, indexes and terms increasing.
#[derive(Clone, Debug, Default)]
pub struct TermIndex {
    runs: Vec<(u64, u64)>,
    last_index: u64,
}

impl TermIndex {
    /// An index whose last known entry is `last_index` with `last_term` (the compaction
    /// point of an empty log, or (0, 0)).
    pub fn new(last_index: u64, last_term: u64) -> Self {
        TermIndex {
            runs: vec![(last_index, last_term)],
            last_index,
        }
    }

    /// Records the next entry.
    pub fn push(&mut self, index: u64, term: u64) {
        assert_eq!(index, self.last_index + 1, "term index fed out of order");
        let last_term = self.last_term();
        assert!(
            term >= last_term,
            "terms must not decrease: {term} after {last_term}"
        );
        if term != last_term {
            self.runs.push((index, term));
        }
        self.last_index = index;
    }

    /// Records the entries `first..=last`, all of `term` (a run read from an index file).
    pub fn push_run(&mut self, first: u64, last: u64, term: u64) {
        assert_eq!(first, self.last_index + 1, "term index fed out of order");
        assert!(last >= first);
        assert!(term >= self.last_term(), "terms must not decrease");
        if term != self.last_term() {
            self.runs.push((first, term));
        }
        self.last_index = last;
    }

    /// Term of `index`, if it is between the first known index and the last.
    pub fn term(&self, index: u64) -> Option<u64> {
        let first = self.runs.first()?.0;
        if index < first || index > self.last_index {
            return None;
        }
        let position = self.runs.partition_point(|&(start, _)| start <= index);
        Some(self.runs[position - 1].1)
    }

    /// Last index covered.
    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    /// Term of the last index.
    pub fn last_term(&self) -> u64 {
        self.runs.last().map_or(0, |&(_, term)| term)
    }

    /// Forgets every index above `last_kept`.
    pub fn truncate_after(&mut self, last_kept: u64) {
        assert!(
            last_kept >= self.runs[0].0,
            "truncating below the first known index"
        );
        self.runs.retain(|&(start, _)| start <= last_kept);
        self.last_index = last_kept.min(self.last_index);
    }

    /// Forgets every index below `first_kept` (which stays answerable).
    pub fn forget_before(&mut self, first_kept: u64) {
        let Some(term) = self.term(first_kept) else {
            return;
        };
        self.runs.retain(|&(start, _)| start > first_kept);
        self.runs.insert(0, (first_kept, term));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_follow_runs_truncation_and_compaction() {
        let mut index = TermIndex::new(0, 0);
        for (i, term) in [(1, 1), (2, 1), (3, 2), (4, 2), (5, 4)] {
            index.push(i, term);
        }
        assert_eq!(index.term(0), Some(0));
        assert_eq!(index.term(2), Some(1));
        assert_eq!(index.term(4), Some(2));
        assert_eq!(index.term(5), Some(4));
        assert_eq!(index.term(6), None);
        index.truncate_after(3);
        assert_eq!((index.last_index(), index.last_term()), (3, 2));
        index.push(4, 5);
        assert_eq!(index.term(4), Some(5));
        index.forget_before(2);
        assert_eq!(index.term(1), None);
        assert_eq!(index.term(2), Some(1));
        assert_eq!(index.term(3), Some(2));
    }
}
