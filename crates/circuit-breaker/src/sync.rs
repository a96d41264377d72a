//! Atomics, swapped for loom's under `--cfg seawall_loom` so the model checker can explore
//! every interleaving of the breaker's state word.

#[cfg(seawall_loom)]
pub(crate) use loom::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
#[cfg(not(seawall_loom))]
pub(crate) use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

#[cfg(seawall_loom)]
pub(crate) use model::ThreadCounter;
#[cfg(not(seawall_loom))]
pub(crate) use seawall_core::ThreadCounter;

/// A count with one cell per thread, as `seawall_core::ThreadCounter` keeps it (each thread
/// loads and stores its own cell, a reader adds the cells up), on loom's atomics so that the
/// models explore a reader racing the threads that add.
#[cfg(seawall_loom)]
mod model {
    use super::{AtomicU64, Ordering};

    /// More cells than a model has threads (loom runs at most four besides the main one).
    const CELLS: usize = 5;

    loom::lazy_static! {
        /// The next thread's cell, from zero in every execution of a model.
        static ref NEXT_CELL: std::sync::atomic::AtomicUsize =
            std::sync::atomic::AtomicUsize::new(0);
    }

    loom::thread_local! {
        static CELL: usize = NEXT_CELL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    #[derive(Debug)]
    pub(crate) struct ThreadCounter {
        cells: [AtomicU64; CELLS],
    }

    impl Default for ThreadCounter {
        fn default() -> Self {
            Self {
                cells: std::array::from_fn(|_| AtomicU64::new(0)),
            }
        }
    }

    impl ThreadCounter {
        pub(crate) fn add(&self, by: u64) {
            let cell = &self.cells[CELL.with(|cell| *cell)];
            cell.store(
                cell.load(Ordering::Relaxed).wrapping_add(by),
                Ordering::Relaxed,
            );
        }

        pub(crate) fn total(&self) -> u64 {
            // Cells no thread has taken yet hold zero: reading them would only widen the
            // model's search.
            let taken = NEXT_CELL.load(std::sync::atomic::Ordering::Relaxed);
            self.cells[..taken.min(CELLS)].iter().fold(0, |sum, cell| {
                sum.wrapping_add(cell.load(Ordering::Relaxed))
            })
        }
    }
}
