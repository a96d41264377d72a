//! Prints a criterion group's medians as a Markdown table, for BENCHMARKS.md.
//!
//! `cargo run -p seawall-bench --bin bench_table -- <group> [id ...]`, after
//! `cargo bench -p seawall-bench --bench layers -- <group>`.

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(group) = args.next() else {
        eprintln!("usage: bench_table <group> [id ...]");
        std::process::exit(2);
    };
    let root = seawall_bench::criterion_group_dir(&group);
    let mut ids: Vec<String> = args.collect();
    if ids.is_empty() {
        let mut found: Vec<String> = std::fs::read_dir(&root)
            .map(|dir| {
                dir.filter_map(|entry| entry.ok())
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .filter(|id| seawall_bench::criterion_estimates_path(&group, id).exists())
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        ids = found;
    }
    println!("| id | median | 95 % CI of the median |");
    println!("|---|---:|---|");
    for id in ids {
        let Some(median) = seawall_bench::criterion_median(&group, &id) else {
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
