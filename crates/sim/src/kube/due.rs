//! Things due at an instant — pods turning Ready, terminating pods going — taken in time
//! order. The controllers look every few milliseconds; with thousands of pods waiting, a tick
//! takes only what is due instead of walking (and moving) everything that is not.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::time::Instant;

/// A queue of items, each due at an instant; equal instants keep their order of arrival.
pub struct DueQueue<T> {
    heap: BinaryHeap<Entry<T>>,
    seq: u64,
}

struct Entry<T> {
    at: Instant,
    seq: u64,
    item: T,
}

// The heap is a max-heap: the entry due first (then the one queued first) is the greatest.
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<T> Eq for Entry<T> {}

impl<T> Default for DueQueue<T> {
    fn default() -> Self {
        DueQueue {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }
}

impl<T> DueQueue<T> {
    /// `item` is due at `at`.
    pub fn push(&mut self, at: Instant, item: T) {
        self.seq += 1;
        self.heap.push(Entry {
            at,
            seq: self.seq,
            item,
        });
    }

    /// The items due at or before `now`, earliest first; the rest stay.
    pub fn take_due(&mut self, now: Instant) -> Vec<T> {
        let mut due = Vec::new();
        while self.heap.peek().is_some_and(|e| e.at <= now) {
            if let Some(e) = self.heap.pop() {
                due.push(e.item);
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_what_is_due_is_taken_earliest_first_ties_in_arrival_order() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut q = DueQueue::default();
        q.push(at(30), "c");
        q.push(at(10), "a");
        q.push(at(50), "e");
        q.push(at(10), "b");
        q.push(at(40), "d");
        assert!(q.take_due(at(5)).is_empty());
        assert_eq!(q.take_due(at(30)), vec!["a", "b", "c"]);
        assert!(q.take_due(at(30)).is_empty());
        assert_eq!(q.take_due(at(100)), vec!["d", "e"]);
    }
}
