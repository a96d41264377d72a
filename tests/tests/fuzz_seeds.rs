//! The fuzz targets' bodies run as ordinary tests over their checked-in seeds
//! (`fuzz/seeds/<target>/`, written by `fuzz/make_seeds.py`): empty input, huge numbers,
//! non-UTF-8 bytes, very long values, every setting at its extremes. So CI runs the targets'
//! checks on every change, without cargo-fuzz or a nightly compiler; `fuzz/README.md` says how
//! to fuzz them properly.

#[path = "../../fuzz/bodies/builder_configs.rs"]
mod builder_configs;
#[path = "../../fuzz/bodies/header_parsers.rs"]
mod header_parsers;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

/// Runs `body` on every seed of `target`; fails naming each seed it panicked on.
fn run_seeds(target: &str, body: fn(&[u8])) -> usize {
    let folder = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target);
    let mut seeds: Vec<PathBuf> = std::fs::read_dir(&folder)
        .expect("fuzz/seeds/<target> is there")
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    seeds.sort();
    let failed: Vec<String> = seeds
        .iter()
        .filter_map(|seed| {
            let data = std::fs::read(seed).expect("a readable seed");
            catch_unwind(AssertUnwindSafe(|| body(&data)))
                .err()
                .map(|_| seed.display().to_string())
        })
        .collect();
    assert!(failed.is_empty(), "the {target} body failed on {failed:#?}");
    seeds.len()
}

#[test]
fn the_header_parsers_body_holds_on_every_seed() {
    assert_eq!(run_seeds("header_parsers", header_parsers::run), 31);
}

#[test]
fn the_builder_configs_body_holds_on_every_seed() {
    assert_eq!(run_seeds("builder_configs", builder_configs::run), 130);
}
