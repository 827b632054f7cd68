//! What evald's test binaries share.
//!
//! Test binaries run at the same time (cargo runs them one after another,
//! but each runs its tests in parallel, and CI may run several suites), and
//! a box's `RLIMIT_NPROC` counts every process of its user id on the host,
//! so two binaries whose boxes share user ids can fail each other's process
//! limits. Every test binary that starts boxes takes its user ids from
//! [`uids`], one range each; a test checks that no two ranges overlap and
//! that none touches the ids of a real `evald serve` ([`uids::SERVICE`]).

#![forbid(unsafe_code)]

/// Box user id ranges, one per test binary that starts boxes.
pub mod uids {
    /// A range of box user ids: `base..base + len`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Range {
        pub base: u32,
        pub len: u32,
    }

    impl Range {
        /// The `i`-th block of `size` ids of the range (for binaries that
        /// start several sandboxes or servers); panics when it does not fit.
        pub fn block(self, i: u32, size: u32) -> u32 {
            assert!((i + 1) * size <= self.len, "block {i} of {size} ids does not fit in {self:?}");
            self.base + i * size
        }

        pub fn end(self) -> u32 {
            self.base + self.len
        }
    }

    const fn range(base: u32, len: u32) -> Range {
        Range { base, len }
    }

    /// What `evald serve` and `evald run` use by default (61000 + slots + 1):
    /// no test takes ids here.
    pub const SERVICE: Range = range(61000, 1000);

    pub const SANDBOX_UNIT: Range = range(62000, 500);
    pub const SANDBOX_ESCAPE: Range = range(62500, 500);
    pub const SANDBOX_SOAK: Range = range(63000, 1000);
    pub const SERVER_NATIVE: Range = range(64000, 500);
    pub const SERVER_PISTON: Range = range(64500, 500);
    pub const SERVER_ADMISSION: Range = range(65000, 500);
    pub const SERVER_LANGUAGES: Range = range(65500, 500);
    pub const SERVER_OPS: Range = range(66000, 500);
    pub const SERVER_SESSIONS: Range = range(66500, 500);
    pub const CLI_RUN: Range = range(67000, 1000);
    pub const CLI_HAPROXY: Range = range(68000, 500);
    pub const CLI_CLUSTER: Range = range(68500, 500);
    pub const CLI_QUEUE: Range = range(69000, 500);
    pub const CLI_ROLLING: Range = range(69500, 1000);
    pub const CLI_HARNESS: Range = range(70500, 500);
    pub const API_FUZZ: Range = range(71000, 500);
    pub const SERVER_JUDGE0: Range = range(71500, 500);
    pub const CLI_HOSTS: Range = range(72000, 500);

    /// Every range, named.
    pub const ALL: &[(&str, Range)] = &[
        ("service", SERVICE),
        ("sandbox unit", SANDBOX_UNIT),
        ("sandbox escape", SANDBOX_ESCAPE),
        ("sandbox soak", SANDBOX_SOAK),
        ("server native", SERVER_NATIVE),
        ("server piston", SERVER_PISTON),
        ("server admission", SERVER_ADMISSION),
        ("server languages", SERVER_LANGUAGES),
        ("server ops", SERVER_OPS),
        ("server sessions", SERVER_SESSIONS),
        ("cli run", CLI_RUN),
        ("cli haproxy", CLI_HAPROXY),
        ("cli cluster", CLI_CLUSTER),
        ("cli queue", CLI_QUEUE),
        ("cli rolling", CLI_ROLLING),
        ("cli harness", CLI_HARNESS),
        ("api fuzz", API_FUZZ),
        ("server judge0", SERVER_JUDGE0),
        ("cli hosts", CLI_HOSTS),
    ];
}

#[cfg(test)]
mod tests {
    use super::uids::*;

    #[test]
    fn no_two_ranges_overlap() {
        for (i, (a_name, a)) in ALL.iter().enumerate() {
            assert!(a.len > 0, "{a_name} is empty");
            for (b_name, b) in &ALL[i + 1..] {
                let apart = a.end() <= b.base || b.end() <= a.base;
                assert!(apart, "{a_name} {a:?} overlaps {b_name} {b:?}");
            }
        }
    }

    #[test]
    fn blocks_stay_inside_their_range() {
        assert_eq!(SERVER_OPS.block(0, 100), 66000);
        assert_eq!(SERVER_OPS.block(4, 100), 66400);
        let overflow = std::panic::catch_unwind(|| SERVER_OPS.block(5, 100));
        assert!(overflow.is_err(), "a block past the range's end is refused");
    }
}
