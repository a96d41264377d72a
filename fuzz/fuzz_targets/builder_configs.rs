//! Feeds arbitrary settings to every builder of the standard stack; see
//! `fuzz/bodies/builder_configs.rs`, which `cargo test` also runs over the checked-in seeds.

#![no_main]

#[path = "../bodies/builder_configs.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
