//! `vantage demo --auto`: the README's first command, played as a script.

mod common;

use common::cli;

#[test]
fn demo_shows_a_failover_a_recovery_and_a_leader_change() {
    let out = cli(&["demo", "--auto", "--net", "81"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in [
        "all three endpoints in the zone",
        "endpoint 1 decided down and removed from the zone",
        "endpoint 1 back in the zone after rise and hold_down",
        "a new leader",
        "the old leader back as a follower",
        "agents killed and files removed",
    ] {
        assert!(text.contains(step), "missing {step:?} in:\n{text}");
    }
    assert!(
        text.contains("event: ") && text.contains(" decision web/127.0.81.11 up -> down"),
        "{text}"
    );
    assert!(text.contains("dns-write"), "{text}");
}
