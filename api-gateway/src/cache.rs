//! Completed reports never change, so their status is kept in memory: a poll of a finished report
//! costs no database round trip. Running and Failed reports are always read from MySQL (a Failed report
//! can still be completed by a duplicate delivery of its job).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// What a Complete report answers, less what depends on the request (the download URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedReport {
    /// The report's `now`, RFC 3339; `None` for a report of no poll at all.
    pub as_of: Option<String>,
    pub stores: u32,
    pub csv_bytes: Option<u64>,
}

pub struct CompletedReports {
    capacity: usize,
    entries: RwLock<HashMap<String, Arc<CompletedReport>>>,
}

impl CompletedReports {
    /// A cache of at most `capacity` reports; 0 keeps nothing.
    pub fn new(capacity: usize) -> Self {
        Self { capacity, entries: RwLock::new(HashMap::new()) }
    }

    pub fn get(&self, report_id: &str) -> Option<Arc<CompletedReport>> {
        // A poisoned lock only means another thread panicked mid-insert; the map itself is still whole.
        let entries = self.entries.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        entries.get(report_id).cloned()
    }

    pub fn insert(&self, report_id: &str, report: Arc<CompletedReport>) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(report_id) {
            // Any entry will do: an evicted report is read from MySQL again on its next poll.
            if let Some(victim) = entries.keys().next().cloned() {
                entries.remove(&victim);
            }
        }
        entries.insert(report_id.to_owned(), report);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(stores: u32) -> Arc<CompletedReport> {
        Arc::new(CompletedReport { as_of: None, stores, csv_bytes: Some(10) })
    }

    #[test]
    fn keeps_at_most_its_capacity() {
        let cache = CompletedReports::new(2);
        cache.insert("a", report(1));
        cache.insert("b", report(2));
        cache.insert("c", report(3));
        let kept = ["a", "b", "c"].iter().filter(|id| cache.get(id).is_some()).count();
        assert_eq!(kept, 2);
        assert_eq!(cache.get("c").map(|r| r.stores), Some(3));
    }

    #[test]
    fn a_zero_capacity_cache_keeps_nothing() {
        let cache = CompletedReports::new(0);
        cache.insert("a", report(1));
        assert_eq!(cache.get("a"), None);
    }
}
