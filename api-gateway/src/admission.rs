//! Admission control: how many triggers a token may make per minute, and how many downloads this
//! gateway streams at once. (The limit on reports waiting for a worker is counted in MySQL, where every
//! replica sees it: `reports::create_or_share`.)

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::TokenDigest;

const WINDOW: Duration = Duration::from_secs(60);

/// At most `limit` triggers per token in any 60 seconds (a sliding window of the admitted triggers'
/// times). Kept in this process: with several gateway replicas a token may trigger `limit` times on
/// each.
pub struct TriggerLimiter {
    limit: usize,
    admitted: Mutex<HashMap<TokenDigest, VecDeque<Instant>>>,
}

impl TriggerLimiter {
    pub fn new(per_minute: u32) -> TriggerLimiter {
        TriggerLimiter { limit: per_minute.max(1) as usize, admitted: Mutex::new(HashMap::new()) }
    }

    /// Counts a trigger of `token` at `now`, or says in how many whole seconds it would be admitted.
    pub fn admit(&self, token: &TokenDigest, now: Instant) -> Result<Admitted<'_>, u64> {
        let mut admitted = self.admitted.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Forget the windows of tokens that have been quiet for a minute, so the map stays small.
        admitted.retain(|_, times| times.back().is_some_and(|last| now.duration_since(*last) < WINDOW));
        let times = admitted.entry(*token).or_default();
        while times.front().is_some_and(|first| now.duration_since(*first) >= WINDOW) {
            times.pop_front();
        }
        if times.len() >= self.limit {
            let oldest = times.front().copied().unwrap_or(now);
            let wait = WINDOW.saturating_sub(now.duration_since(oldest));
            return Err((wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1));
        }
        times.push_back(now);
        Ok(Admitted { limiter: self, token: *token, at: now })
    }
}

/// A trigger counted against its token's limit; [`Admitted::refund`] uncounts it (nothing was created).
pub struct Admitted<'a> {
    limiter: &'a TriggerLimiter,
    token: TokenDigest,
    at: Instant,
}

impl Admitted<'_> {
    pub fn refund(self) {
        let mut admitted = self.limiter.admitted.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(times) = admitted.get_mut(&self.token)
            && let Some(position) = times.iter().rposition(|at| *at == self.at)
        {
            times.remove(position);
        }
    }
}

/// At most `limit` downloads streamed at once by this gateway; a permit lives as long as its stream.
#[derive(Clone)]
pub struct DownloadSlots {
    slots: Arc<Semaphore>,
}

impl DownloadSlots {
    pub fn new(limit: usize) -> DownloadSlots {
        DownloadSlots { slots: Arc::new(Semaphore::new(limit.max(1))) }
    }

    pub fn try_take(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_gets_its_limit_per_minute_and_then_the_wait() {
        let limiter = TriggerLimiter::new(2);
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let start = Instant::now();
        assert!(limiter.admit(&a, start).is_ok());
        assert!(limiter.admit(&a, start + Duration::from_secs(10)).is_ok());
        assert_eq!(limiter.admit(&a, start + Duration::from_millis(20_500)).err(), Some(40));
        assert!(limiter.admit(&b, start + Duration::from_secs(20)).is_ok(), "another token has its own limit");
        assert!(limiter.admit(&a, start + Duration::from_secs(60)).is_ok(), "the first trigger left the window");
        assert_eq!(limiter.admit(&a, start + Duration::from_secs(60)).err(), Some(10));
    }

    #[test]
    fn a_refunded_trigger_does_not_count() {
        let limiter = TriggerLimiter::new(1);
        let now = Instant::now();
        limiter.admit(&[0; 32], now).expect("admitted").refund();
        assert!(limiter.admit(&[0; 32], now).is_ok());
    }

    #[test]
    fn download_slots_are_given_back_when_dropped() {
        let slots = DownloadSlots::new(1);
        let held = slots.try_take().expect("a slot");
        assert!(slots.try_take().is_none());
        drop(held);
        assert!(slots.try_take().is_some());
    }
}
