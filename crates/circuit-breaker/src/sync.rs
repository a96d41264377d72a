//! Atomics, swapped for loom's under `--cfg seawall_loom` so the model checker can explore
//! every interleaving of the breaker's state word.

#[cfg(seawall_loom)]
pub(crate) use loom::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
#[cfg(not(seawall_loom))]
pub(crate) use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
