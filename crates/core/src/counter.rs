//! A count that every thread adds to without a locked instruction.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;
use thread_local::ThreadLocal;

/// A count added to on hot paths by many threads and read rarely (for figures).
///
/// Internal to seawall's layer crates: hidden from the docs, no stability promise.
///
/// One shared `AtomicU64` costs every request a locked read-modify-write on a cache line that
/// every core writes, which is what keeps a layer from scaling across threads. Here each
/// thread adds to its own cell, padded so that no other cell shares its cache lines, with a
/// relaxed atomic load and store: only that thread writes the cell, so no update is lost.
/// Reading adds every thread's cell up. A cell passes to a new thread only after its owner
/// has exited (`thread_local` reuses a finished thread's id), and the new owner carries on
/// from the last value stored.
///
/// Memory: the cells are allocated per thread id as threads first add (a cell is 128 bytes
/// on x86-64), besides about half a kilobyte inline; meant for a few counters per layer, not
/// one per key.
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
        let cell = match self.cells.get() {
            Some(cell) => cell,
            None => self.first_cell(),
        };
        cell.store(
            cell.load(Ordering::Relaxed).wrapping_add(by),
            Ordering::Relaxed,
        );
    }

    /// The calling thread's cell, made on its first addition. Out of line: inlined, the
    /// allocation's code gave every caller a larger, 128-byte-aligned stack frame.
    #[cold]
    #[inline(never)]
    fn first_cell(&self) -> &CachePadded<AtomicU64> {
        self.cells.get_or_default()
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

    #[test]
    fn threads_that_come_and_go_lose_no_count() {
        let counter = ThreadCounter::new();
        // One after another: each may be handed the cell of the one before, and must carry on
        // from its count.
        for _ in 0..8 {
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    for _ in 0..1_000 {
                        counter.add(1);
                    }
                });
            });
        }
        assert_eq!(counter.total(), 8_000);
    }
}
