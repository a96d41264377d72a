//! Feeds arbitrary bytes to every server-hint parser; see `fuzz/bodies/header_parsers.rs`,
//! which `cargo test` also runs over the checked-in seeds.

#![no_main]

#[path = "../bodies/header_parsers.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
