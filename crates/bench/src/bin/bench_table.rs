//! Prints a criterion group's medians as a Markdown table, for BENCHMARKS.md.
//!
//! `cargo run -p seawall-bench --bin bench_table -- <group> [id ...]`, after
//! `cargo bench -p seawall-bench --bench layers -- <group>`.

use std::path::PathBuf;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(group) = args.next() else {
        eprintln!("usage: bench_table <group> [id ...]");
        std::process::exit(2);
    };
    let root = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"))
        .join("criterion")
        .join(&group);
    let mut ids: Vec<String> = args.collect();
    if ids.is_empty() {
        let mut found: Vec<String> = std::fs::read_dir(&root)
            .map(|dir| {
                dir.filter_map(|entry| entry.ok())
                    .filter(|entry| entry.path().join("new/estimates.json").exists())
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        ids = found;
    }
    println!("| id | median | 95 % CI of the median |");
    println!("|---|---:|---|");
    for id in ids {
        let path = root.join(&id).join("new/estimates.json");
        let Some(median) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|json| json.get("median").cloned())
        else {
            println!("| {id} | (no result) | |");
            continue;
        };
        let ns = |key: &str| {
            median
                .pointer(key)
                .and_then(|v| v.as_f64())
                .unwrap_or(f64::NAN)
        };
        println!(
            "| {id} | {:.1} ns | {:.1} – {:.1} ns |",
            ns("/point_estimate"),
            ns("/confidence_interval/lower_bound"),
            ns("/confidence_interval/upper_bound")
        );
    }
}
