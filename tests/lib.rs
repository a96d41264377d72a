//! Cross-crate tests of the seawall stack against real hyper servers on loopback.
//!
//! The tests live in `tests/`; this library is empty on purpose.
