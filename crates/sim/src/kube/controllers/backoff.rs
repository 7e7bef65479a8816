//! A workload whose sync was refused a pod (admission said no) is looked at again after a
//! growing delay, as kube-controller-manager requeues a failed sync with its default rate
//! limiter: 5 ms, doubling with every failure in a row, at most 1000 s (in scenario time).
//! Without it a refused ReplicaSet would wait for an unrelated event or the full resync.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::Key;
use crate::clock::Clock;
use crate::kube::due::DueQueue;

const FIRST: Duration = Duration::from_millis(5);
const MOST: Duration = Duration::from_secs(1000);

#[derive(Default)]
pub(super) struct Backoff {
    /// Failures in a row, per workload.
    failures: HashMap<Key, u32>,
    queue: DueQueue<Key>,
}

impl Backoff {
    /// `key`'s sync failed at `now`: it is due again after its next delay.
    pub(super) fn failed(&mut self, key: &Key, now: Instant, clock: &Clock) {
        let n = self.failures.entry(key.clone()).or_insert(0);
        let delay = FIRST
            .checked_mul(1u32.checked_shl(*n).unwrap_or(u32::MAX))
            .map_or(MOST, |d| d.min(MOST));
        *n = n.saturating_add(1);
        self.queue.push(now + clock.real(delay), key.clone());
    }

    /// `key`'s sync went through: its next failure starts from the first delay again.
    pub(super) fn succeeded(&mut self, key: &Key) {
        self.failures.remove(key);
    }

    /// The workloads due for another look.
    pub(super) fn due(&mut self, now: Instant) -> Vec<Key> {
        self.queue.take_due(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_with_each_failure_in_a_row_and_a_success_starts_it_again() {
        let clock = Clock::new(1.0);
        let key = Key::Rs("ns".into(), "web".into());
        let mut b = Backoff::default();
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        b.failed(&key, t0, &clock);
        assert!(b.due(ms(4)).is_empty());
        assert_eq!(b.due(ms(5)), vec![key.clone()]);
        b.failed(&key, t0, &clock);
        assert!(b.due(ms(9)).is_empty());
        assert_eq!(b.due(ms(10)), vec![key.clone()]);
        b.succeeded(&key);
        b.failed(&key, t0, &clock);
        assert_eq!(b.due(ms(5)), vec![key.clone()]);
        for _ in 0..40 {
            b.failed(&key, t0, &clock);
        }
        assert_eq!(b.due(t0 + MOST).len(), 40, "every delay is at most 1000 s");
    }
}
