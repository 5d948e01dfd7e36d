//! Completed reports never change, so their status is kept in memory: a poll of a finished report
//! costs no database round trip. Running and Failed reports are always read from MySQL (a Failed report
//! can still be completed by a duplicate delivery of its job). A report leaves the cache when it expires
//! (read after its expiry, or by the relay's sweep).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chrono::NaiveDateTime;
use shared_model::models::versions::DataVersion;

use crate::routes::reports::AboutBody;

/// What a Complete report answers, less what depends on the request (the download URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedReport {
    /// The report's `now`, RFC 3339; `None` for a report of no poll at all.
    pub as_of: Option<String>,
    pub stores: u32,
    pub csv_bytes: Option<u64>,
    /// The report whose chunks hold the CSV (itself, or the report it shares).
    pub csv_report_id: String,
    pub data_version: Option<DataVersion>,
    /// From then on the report answers 410 (UTC).
    pub expires_at: NaiveDateTime,
    /// Its times and options, as the answer writes them.
    pub about: AboutBody,
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

    /// The cached report, unless it is absent or expired at `now` (then it is forgotten and read from
    /// MySQL, which answers 410).
    pub fn get(&self, report_id: &str, now: NaiveDateTime) -> Option<Arc<CompletedReport>> {
        // A poisoned lock only means another thread panicked mid-insert; the map itself is still whole.
        let found = {
            let entries = self.entries.read().unwrap_or_else(|poisoned| poisoned.into_inner());
            entries.get(report_id).cloned()
        };
        match found {
            Some(report) if report.expires_at <= now => {
                self.entries.write().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(report_id);
                None
            }
            found => found,
        }
    }

    /// Forgets every report expired at `now`; returns how many.
    pub fn forget_expired(&self, now: NaiveDateTime) -> usize {
        let mut entries = self.entries.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let before = entries.len();
        entries.retain(|_, report| report.expires_at > now);
        before - entries.len()
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

    fn at(second: u32) -> NaiveDateTime {
        chrono::NaiveDate::from_ymd_opt(2026, 12, 1).and_then(|d| d.and_hms_opt(12, 0, second)).expect("date")
    }

    fn report(stores: u32) -> Arc<CompletedReport> {
        expiring(stores, at(59))
    }

    fn expiring(stores: u32, expires_at: NaiveDateTime) -> Arc<CompletedReport> {
        Arc::new(CompletedReport {
            as_of: None,
            stores,
            csv_bytes: Some(10),
            csv_report_id: "a".into(),
            data_version: None,
            expires_at,
            about: AboutBody::default(),
        })
    }

    #[test]
    fn an_expired_report_is_forgotten() {
        let cache = CompletedReports::new(10);
        cache.insert("a", expiring(1, at(10)));
        cache.insert("b", expiring(2, at(20)));
        cache.insert("c", expiring(3, at(30)));
        assert_eq!(cache.get("a", at(9)).map(|r| r.stores), Some(1));
        assert_eq!(cache.get("a", at(10)), None, "expired at its expiry");
        assert_eq!(cache.forget_expired(at(25)), 1, "b");
        assert_eq!(cache.get("b", at(0)), None, "forgotten, whatever the clock says");
        assert_eq!(cache.get("c", at(25)).map(|r| r.stores), Some(3));
    }

    #[test]
    fn keeps_at_most_its_capacity() {
        let cache = CompletedReports::new(2);
        cache.insert("a", report(1));
        cache.insert("b", report(2));
        cache.insert("c", report(3));
        let kept = ["a", "b", "c"].iter().filter(|id| cache.get(id, at(0)).is_some()).count();
        assert_eq!(kept, 2);
        assert_eq!(cache.get("c", at(0)).map(|r| r.stores), Some(3));
    }

    #[test]
    fn a_zero_capacity_cache_keeps_nothing() {
        let cache = CompletedReports::new(0);
        cache.insert("a", report(1));
        assert_eq!(cache.get("a", at(0)), None);
    }
}
