//! Checks issue 27's targets on the `layers` groups against the medians of their last run, and
//! prints them as a Markdown table, for BENCHMARKS.md.
//!
//! `cargo run -p seawall-bench --bin targets`, after
//! `cargo bench -p seawall-bench --bench layers -- 'stack/|rate_limit/(baseline|seawall|seawall_tsc|governor_direct)$|retry/|circuit_breaker/' --warm-up-time 1 --measurement-time 3`.
//!
//! An id's overhead is its median minus its group's `baseline` median, both from the same
//! run. A target compares an overhead with a multiple of a peer's overhead, or of a peer's
//! median where the issue says so (`governor_direct` is a bare call into governor, which has
//! no baseline to take away). A target whose ids have no saved result says so rather than
//! holding or failing.

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

/// Issue 27's targets on the `layers` bench, in the order.
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
    /// The overhead as a multiple of the peer's figure: the ratio.
    fn ratio(&self) -> f64 {
        self.overhead / self.peer
    }

    fn holds(&self) -> bool {
        self.overhead <= self.factor * self.peer
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
    println!("| target | overhead | peer | overhead / peer | holds |");
    println!("|---|---:|---:|---:|---|");
    for target in TARGETS {
        match target.check(median) {
            Some(checked) => println!(
                "| {} | {:.1} ns | {:.1} ns | {:.3} | {} |",
                target.describe(),
                checked.overhead,
                checked.peer,
                checked.ratio(),
                if checked.holds() { "yes" } else { "no" }
            ),
            None => println!("| {} | (no result) | | | |", target.describe()),
        }
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
        let (Peer::Overhead(peer_id) | Peer::Median(peer_id)) = target.peer;
        move |group, name| match name {
            _ if group != target.group => None,
            "baseline" => Some(baseline),
            _ if name == target.id => Some(id),
            _ if name == peer_id => Some(peer),
            _ => None,
        }
    }

    #[test]
    fn each_target_holds_its_overhead_to_a_multiple_of_its_peers_figure() {
        // The target, its three medians, then the overhead, the peer's figure and the verdict.
        let cases = [
            // Exactly at the allowance (0.4 × (1,100 − 100)) holds; a nanosecond more fails.
            (TARGETS[0], [100.0, 500.0, 1_100.0], 400.0, 1_000.0, true),
            (TARGETS[0], [100.0, 501.0, 1_100.0], 401.0, 1_000.0, false),
            // governor's whole median, not its overhead: 60 ns against 2.5 × 28 ns.
            (TARGETS[1], [70.0, 130.0, 28.0], 60.0, 28.0, true),
            (TARGETS[1], [70.0, 141.0, 28.0], 71.0, 28.0, false),
            (TARGETS[2], [300.0, 450.0, 550.0], 150.0, 250.0, true),
            (TARGETS[3], [30.0, 61.0, 330.0], 31.0, 300.0, false),
        ];
        for (target, [baseline, id, peer], overhead, peer_figure, holds) in cases {
            let checked = target
                .check(run_of(target, baseline, id, peer))
                .expect("every median is there");
            let name = target.describe();
            assert_eq!(
                checked,
                Checked {
                    overhead,
                    peer: peer_figure,
                    factor: target.factor
                },
                "{name}"
            );
            assert_eq!(checked.ratio(), overhead / peer_figure, "{name}");
            assert_eq!(checked.holds(), holds, "{name}");
        }
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
