//! The wait queue's lock and atomics, swapped for loom's under `--cfg seawall_loom` so the
//! model checker can explore every interleaving of joins, turns and hand-offs.

#[cfg(seawall_loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
#[cfg(seawall_loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};
#[cfg(not(seawall_loom))]
pub(crate) use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
#[cfg(not(seawall_loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};
