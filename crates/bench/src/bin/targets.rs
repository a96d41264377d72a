//! Checks issue 27's targets on the `layers` groups against the medians of their last run, and
//! prints them as a Markdown table, for BENCHMARKS.md.
//!
//! `cargo run -p seawall-bench --bin targets`, after
//! `cargo bench -p seawall-bench --bench layers -- 'stack/|rate_limit/(baseline|seawall|seawall_tsc|governor_direct)$|retry/|circuit_breaker/' --warm-up-time 1 --measurement-time 3`.
//!
//! An id's overhead is its median minus its group's `baseline` median, both from the same
//! run. A target compares an overhead with a multiple of a peer's overhead, or of a peer's
//! median where the issue says so (`governor_direct` is a bare call into governor, which has
//! no baseline to take away). A target whose ids have no saved result, or whose results were
//! saved too far apart to come from one run (a narrower `cargo bench` since leaves the others
//! as they were), says so rather than holding or failing.

use std::time::Duration;

/// How far apart a target's three results may have been saved and still count as one run's:
/// a group of the command above takes about a minute.
const ONE_RUN: Duration = Duration::from_secs(300);

/// What a target's allowance is a multiple of.
#[derive(Debug, Clone, Copy)]
enum Peer {
    /// The peer id's overhead above the group's `baseline`.
    Overhead(&'static str),
    /// The peer id's median as it is.
    Median(&'static str),
}

/// One target: `id − baseline ≤ factor × peer`, within `group`.
#[derive(Debug, Clone, Copy)]
struct Target {
    group: &'static str,
    id: &'static str,
    factor: f64,
    peer: Peer,
}

/// Issue 27's targets on the `layers` bench, in the issue's order.
const TARGETS: [Target; 4] = [
    Target {
        group: "stack",
        id: "seawall_full",
        factor: 0.4,
        peer: Peer::Overhead("tower_resilience_full"),
    },
    Target {
        group: "rate_limit",
        id: "seawall_tsc",
        factor: 2.5,
        peer: Peer::Median("governor_direct"),
    },
    Target {
        group: "retry",
        id: "seawall_ok",
        factor: 0.8,
        peer: Peer::Overhead("tower_resilience_ok"),
    },
    Target {
        group: "circuit_breaker",
        id: "seawall_closed",
        factor: 0.1,
        peer: Peer::Overhead("tower_resilience_closed"),
    },
];

/// A target's figures from one run, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Checked {
    overhead: f64,
    /// The peer's overhead, or its median (see [`Peer`]).
    peer: f64,
    factor: f64,
}

impl Checked {
    /// What the overhead may be: the factor times the peer's figure.
    fn allowance(&self) -> f64 {
        self.factor * self.peer
    }

    /// The overhead as a multiple of the peer's figure (the issue's ratio), when the peer's
    /// figure is above zero.
    fn ratio(&self) -> Option<f64> {
        (self.peer > 0.0).then(|| self.overhead / self.peer)
    }

    fn holds(&self) -> bool {
        self.overhead <= self.allowance()
    }
}

impl Target {
    /// The target's figures, from `median(group, id)`; `None` when a median is missing.
    fn check(&self, median: impl Fn(&str, &str) -> Option<f64>) -> Option<Checked> {
        let baseline = median(self.group, "baseline")?;
        let overhead = median(self.group, self.id)? - baseline;
        let peer = match self.peer {
            Peer::Overhead(id) => median(self.group, id)? - baseline,
            Peer::Median(id) => median(self.group, id)?,
        };
        Some(Checked {
            overhead,
            peer,
            factor: self.factor,
        })
    }

    /// The ids the target reads, `baseline` first.
    fn ids(&self) -> [&'static str; 3] {
        let (Peer::Overhead(peer) | Peer::Median(peer)) = self.peer;
        ["baseline", self.id, peer]
    }

    fn describe(&self) -> String {
        let peer = match self.peer {
            Peer::Overhead(id) => format!("({id} − baseline)"),
            Peer::Median(id) => id.to_owned(),
        };
        format!(
            "{}: {} − baseline ≤ {} × {peer}",
            self.group, self.id, self.factor
        )
    }
}

fn main() {
    let median = |group: &str, id: &str| {
        seawall_bench::criterion_median(group, id)?
            .get("point_estimate")?
            .as_f64()
    };
    println!("| target | overhead | allowance | overhead / peer | holds |");
    println!("|---|---:|---:|---:|---|");
    for target in TARGETS {
        let Some(checked) = target.check(median) else {
            println!("| {} | (no result) | | | |", target.describe());
            continue;
        };
        let saved: Vec<_> = target
            .ids()
            .iter()
            .filter_map(|id| seawall_bench::criterion_saved_at(target.group, id))
            .collect();
        let apart = saved
            .iter()
            .max()
            .zip(saved.iter().min())
            .and_then(|(last, first)| last.duration_since(*first).ok())
            .unwrap_or_default();
        let verdict = if apart > ONE_RUN {
            format!("not one run's (saved {} s apart)", apart.as_secs())
        } else if checked.holds() {
            "yes".to_owned()
        } else {
            "no".to_owned()
        };
        println!(
            "| {} | {:.1} ns | {:.1} ns | {} | {verdict} |",
            target.describe(),
            checked.overhead,
            checked.allowance(),
            checked
                .ratio()
                .map_or_else(|| "(peer ≤ 0)".to_owned(), |ratio| format!("{ratio:.3}")),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run in which `target`'s group has these medians for its `baseline`, its id and its
    /// peer's id, and nothing else.
    fn run_of(
        target: Target,
        baseline: f64,
        id: f64,
        peer: f64,
    ) -> impl Fn(&str, &str) -> Option<f64> {
        let [_, _, peer_id] = target.ids();
        move |group, name| match name {
            _ if group != target.group => None,
            "baseline" => Some(baseline),
            _ if name == target.id => Some(id),
            _ if name == peer_id => Some(peer),
            _ => None,
        }
    }

    #[test]
    fn the_targets_are_the_issues() {
        let described = TARGETS.map(|target| target.describe());
        assert_eq!(
            described,
            [
                "stack: seawall_full − baseline ≤ 0.4 × (tower_resilience_full − baseline)",
                "rate_limit: seawall_tsc − baseline ≤ 2.5 × governor_direct",
                "retry: seawall_ok − baseline ≤ 0.8 × (tower_resilience_ok − baseline)",
                "circuit_breaker: seawall_closed − baseline ≤ 0.1 × (tower_resilience_closed \
                 − baseline)",
            ]
        );
        // Every id is one the `layers` bench measures.
        let bench = include_str!("../../benches/layers.rs");
        for target in TARGETS {
            for id in target.ids() {
                assert!(
                    bench.contains(&format!("\"{id}\"")),
                    "{}/{id}",
                    target.group
                );
            }
        }
    }

    #[test]
    fn each_target_holds_at_its_allowance_and_fails_past_it() {
        // The target, its baseline's and its peer's medians, then the peer's figure and the
        // allowance it gives.
        let cases = [
            (TARGETS[0], 100.0, 1_100.0, 1_000.0, 400.0),
            // governor's whole median, not an overhead: 2.5 × 28 ns.
            (TARGETS[1], 70.0, 28.0, 28.0, 70.0),
            (TARGETS[2], 300.0, 550.0, 250.0, 200.0),
            (TARGETS[3], 30.0, 330.0, 300.0, 30.0),
        ];
        for (target, baseline, peer, peer_figure, allowance) in cases {
            let name = target.describe();
            for (overhead, holds) in [(allowance, true), (allowance + 1.0, false)] {
                let checked = target
                    .check(run_of(target, baseline, baseline + overhead, peer))
                    .expect("every median is there");
                assert_eq!(checked.overhead, overhead, "{name}");
                assert_eq!(checked.peer, peer_figure, "{name}");
                assert_eq!(checked.allowance(), allowance, "{name}");
                assert_eq!(checked.holds(), holds, "{name} at {overhead} ns");
            }
        }
        let at_a_peer_of_zero = TARGETS[0]
            .check(run_of(TARGETS[0], 100.0, 150.0, 100.0))
            .expect("every median is there");
        assert_eq!(at_a_peer_of_zero.ratio(), None);
        assert!(!at_a_peer_of_zero.holds());
    }

    #[test]
    fn a_missing_median_gives_no_verdict() {
        let breaker = TARGETS[3];
        let run = run_of(breaker, 30.0, 58.0, 330.0);
        let without_peer = |group: &str, id: &str| {
            (id != "tower_resilience_closed")
                .then(|| run(group, id))
                .flatten()
        };
        assert!(breaker.check(&run).is_some());
        assert_eq!(breaker.check(without_peer), None);
    }
}
