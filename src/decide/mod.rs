//! The decision: which reports are admitted, which observations count, the
//! quorum rule, and the guards that decide which endpoints stay in DNS.
//!
//! Pure functions of their arguments (no I/O, no clock, no hash maps), so
//! every replica that feeds them the same log computes the same answer, and
//! the leader's pre-check, the state machine and the queries all call the
//! same rule.
//!
//! - [`admit`]: whether a report enters the state at all (rule 10: a claim
//!   is checked, never trusted).
//! - [`count`]: whether an observation counts, the tally and the quorum
//!   rule (rules 3 and 4).
//! - [`guards`]: fail open, `min_healthy`, the panic freeze and hold-down
//!   (rule 5).

pub mod admit;
pub mod count;
pub mod guards;

pub use admit::{admit, Refusal, ReportClaim};
pub use count::{counts, describe_regions, majority, quorum, rule, rule_by_regions, tally, RegionCount, Report, Tally};
pub use guards::{hold_down_until, panic_step, place, Candidate, Guards, PanicInput, PanicStep, Placement};
