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

    fn medians(values: &[(&str, &str, f64)]) -> impl Fn(&str, &str) -> Option<f64> {
        let values: Vec<(String, String, f64)> = values
            .iter()
            .map(|(group, id, ns)| (group.to_string(), id.to_string(), *ns))
            .collect();
        move |group, id| {
            values
                .iter()
                .find(|(g, i, _)| g == group && i == id)
                .map(|(_, _, ns)| *ns)
        }
    }

    #[test]
    fn an_overhead_is_held_to_a_multiple_of_the_peers_overhead() {
        let stack = TARGETS[0];
        let run = medians(&[
            ("stack", "baseline", 100.0),
            ("stack", "seawall_full", 500.0),
            ("stack", "tower_resilience_full", 1_100.0),
        ]);
        let checked = stack.check(run).expect("every median is there");
        assert_eq!(
            checked,
            Checked {
                overhead: 400.0,
                peer: 1_000.0,
                factor: 0.4
            }
        );
        assert_eq!(checked.ratio(), 0.4);
        assert!(checked.holds(), "an overhead equal to its allowance holds");
        let slower = medians(&[
            ("stack", "baseline", 100.0),
            ("stack", "seawall_full", 501.0),
            ("stack", "tower_resilience_full", 1_100.0),
        ]);
        assert!(!stack.check(slower).expect("every median is there").holds());
    }

    #[test]
    fn the_limiters_allowance_is_a_multiple_of_governors_whole_median() {
        let limiter = TARGETS[1];
        let run = medians(&[
            ("rate_limit", "baseline", 70.0),
            ("rate_limit", "seawall_tsc", 130.0),
            ("rate_limit", "governor_direct", 28.0),
        ]);
        let checked = limiter.check(run).expect("every median is there");
        assert_eq!(
            checked,
            Checked {
                overhead: 60.0,
                peer: 28.0,
                factor: 2.5
            }
        );
        assert!(checked.holds(), "60 ns against 2.5 × 28 ns = 70 ns");
    }

    #[test]
    fn a_missing_median_gives_no_verdict() {
        let breaker = TARGETS[3];
        let run = medians(&[
            ("circuit_breaker", "baseline", 30.0),
            ("circuit_breaker", "seawall_closed", 58.0),
        ]);
        assert_eq!(breaker.check(run), None);
    }
}
