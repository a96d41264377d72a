//! A count that every thread adds to without a locked instruction.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;
use thread_local::ThreadLocal;

/// A count added to on hot paths by many threads and read rarely (for figures).
///
/// One shared `AtomicU64` costs every request a locked read-modify-write on a cache line that
/// every core writes, which is what keeps a layer from scaling across threads. Here each
/// thread adds to its own cell, padded to a cache line of its own, with a plain load and
/// store (only that thread ever writes the cell, so no update is lost); reading adds every
/// thread's cell up.
#[derive(Default)]
pub struct ThreadCounter {
    cells: ThreadLocal<CachePadded<AtomicU64>>,
}

impl ThreadCounter {
    /// A count of zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `by` to the calling thread's cell.
    #[inline]
    pub fn add(&self, by: u64) {
        let cell = self.cells.get_or_default();
        cell.store(
            cell.load(Ordering::Relaxed).wrapping_add(by),
            Ordering::Relaxed,
        );
    }

    /// The sum over every thread that ever added (a thread's cell outlives the thread). A
    /// reading taken while others add may miss their latest additions, never double them.
    pub fn total(&self) -> u64 {
        self.cells.iter().fold(0, |sum, cell| {
            sum.wrapping_add(cell.load(Ordering::Relaxed))
        })
    }
}

impl fmt::Debug for ThreadCounter {
    /// The total, not the calling thread's cell.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ThreadCounter").field(&self.total()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_threads_additions_count_and_outlive_the_thread() {
        let counter = ThreadCounter::new();
        std::thread::scope(|scope| {
            for thread in 1..=4u64 {
                let counter = &counter;
                scope.spawn(move || {
                    for _ in 0..10_000 {
                        counter.add(thread);
                    }
                });
            }
        });
        counter.add(5);
        // 10,000 × (1 + 2 + 3 + 4) from the finished threads, and 5 from this one.
        assert_eq!(counter.total(), 100_005);
        assert_eq!(format!("{counter:?}"), "ThreadCounter(100005)");
    }
}
