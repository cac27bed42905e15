//! The history checker's own tests: hand-written histories, each with one planted anomaly the
//! checker must name, and legal histories it must accept (concurrency and unknown outcomes allow
//! more than one answer).

mod common;

use common::history::{check, write_outcome, Call, Op, Outcome};

fn op(id: usize, call: Call, invoked: u64, completed: u64, outcome: Outcome) -> Op {
    Op { id, client: format!("c{id}"), call, invoked, completed, outcome }
}

fn add(delta: i64) -> Call {
    Call::Add { counter: "c".into(), delta }
}

fn read() -> Call {
    Call::Read { counter: "c".into() }
}

fn enter(plate: &str) -> Call {
    Call::Enter { lot: "l".into(), plate: plate.into() }
}

fn exit(plate: &str) -> Call {
    Call::Exit { lot: "l".into(), plate: plate.into() }
}

fn lot(capacity: u32, plates: &[&str]) -> Outcome {
    Outcome::Lot { capacity, plates: plates.iter().map(|p| p.to_string()).collect() }
}

fn read_lot() -> Call {
    Call::ReadLot { lot: "l".into() }
}

fn unknown() -> Outcome {
    Outcome::Unknown("deadline".into())
}

/// Asserts a violation whose rule mentions `what` and whose ops include every id in `ids`.
fn assert_caught(history: &[Op], what: &str, ids: &[usize]) {
    let violations = check(history);
    let Some(v) = violations.iter().find(|v| v.rule.contains(what)) else {
        panic!("expected a violation about {what:?}, got {violations:#?}")
    };
    for id in ids {
        assert!(v.ops.iter().any(|op| op.id == *id), "op #{id} is not named in {v}");
    }
}

#[test]
fn concurrent_and_unknown_adds_may_or_may_not_be_seen() {
    let history = [
        op(0, add(1), 0, 10, Outcome::Value(1)),
        op(1, add(1), 20, 60, Outcome::Value(2)), // concurrent with both reads below
        op(2, add(5), 25, 30, unknown()),         // may apply at any time after 25
        op(3, read(), 30, 40, Outcome::Value(1)),
        op(4, read(), 41, 50, Outcome::Value(7)),
        op(5, read(), 70, 80, Outcome::Value(7)),
        op(6, add(3), 100, 110, Outcome::Failed("InvalidArgument".into())), // never applied
        op(7, read(), 120, 130, Outcome::Value(7)),
    ];
    let violations = check(&history);
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn a_stale_read_that_misses_an_acknowledged_add_is_caught() {
    let history = [
        op(0, add(1), 0, 10, Outcome::Value(1)),
        op(1, add(1), 20, 30, Outcome::Value(2)),
        op(2, read(), 40, 50, Outcome::Value(1)),
    ];
    assert_caught(&history, "allow only 2..=2", &[2, 1]);
}

#[test]
fn a_read_that_counts_an_add_invoked_after_it_is_caught() {
    let history = [
        op(0, add(1), 0, 10, Outcome::Value(1)),
        op(1, read(), 20, 30, Outcome::Value(3)),
        op(2, add(2), 40, 50, Outcome::Value(3)),
    ];
    assert_caught(&history, "allow only 1..=1", &[1]);
}

#[test]
fn a_failed_add_that_shows_up_is_caught() {
    let history =
        [op(0, add(4), 0, 10, Outcome::Failed("FailedPrecondition".into())), op(1, read(), 20, 30, Outcome::Value(4))];
    assert_caught(&history, "allow only 0..=0", &[1]);
}

#[test]
fn an_add_whose_returned_value_omits_itself_is_caught() {
    let history = [op(0, add(1), 0, 10, Outcome::Value(1)), op(1, add(1), 20, 30, Outcome::Value(1))];
    assert_caught(&history, "allow only 2..=2", &[1]);
}

#[test]
fn a_counter_that_goes_backwards_between_reads_is_caught() {
    // Each read alone fits the bounds (the unknown add may or may not have applied), but once one
    // read saw it, a later read cannot un-see it.
    let history = [
        op(0, add(1), 0, 10, unknown()),
        op(1, read(), 20, 30, Outcome::Value(1)),
        op(2, read(), 40, 50, Outcome::Value(0)),
    ];
    assert_caught(&history, "went backwards", &[1, 2]);
}

#[test]
fn legal_lot_histories_pass() {
    let history = [
        op(0, enter("A"), 0, 10, Outcome::Done),
        op(1, enter("B"), 0, 10, Outcome::Done),
        op(2, enter("C"), 5, 15, Outcome::Failed("FailedPrecondition: lot l is full".into())),
        op(3, read_lot(), 20, 30, lot(2, &["A", "B"])),
        op(4, exit("A"), 25, 60, Outcome::Done), // concurrent with the next read: either answer is fine
        op(5, read_lot(), 40, 50, lot(2, &["B"])),
        op(6, enter("D"), 70, 80, unknown()),
        op(7, read_lot(), 90, 95, lot(2, &["B", "D"])),
        op(8, read_lot(), 96, 99, lot(2, &["B", "D"])),
    ];
    let violations = check(&history);
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn an_acknowledged_entry_missing_from_a_later_read_is_caught() {
    let history = [op(0, enter("A"), 0, 10, Outcome::Done), op(1, read_lot(), 20, 30, lot(5, &[]))];
    assert_caught(&history, "acknowledged entry is missing", &[0, 1]);
}

#[test]
fn an_acknowledged_exit_not_reflected_is_caught() {
    let history = [
        op(0, enter("A"), 0, 10, Outcome::Done),
        op(1, exit("A"), 20, 30, Outcome::Done),
        op(2, read_lot(), 40, 50, lot(5, &["A"])),
    ];
    assert_caught(&history, "acknowledged exit is not reflected", &[1, 2]);
}

#[test]
fn a_plate_nobody_entered_is_caught() {
    let history =
        [op(0, enter("A"), 0, 10, Outcome::Failed("AlreadyExists".into())), op(1, read_lot(), 20, 30, lot(5, &["A"]))];
    assert_caught(&history, "no entry that may have applied", &[1]);
}

#[test]
fn an_over_full_or_duplicated_lot_read_is_caught() {
    let plates = ["A", "B", "C"].map(|p| p.to_string());
    let mut history: Vec<Op> = plates.iter().enumerate().map(|(i, p)| op(i, enter(p), 0, 100, unknown())).collect();
    history.push(op(3, read_lot(), 10, 20, lot(2, &["A", "B", "C"])));
    assert_caught(&history, "3 cars listed, 3 distinct, 2 spaces", &[3]);
    history[3] = op(3, read_lot(), 10, 20, lot(5, &["A", "A"]));
    assert_caught(&history, "2 cars listed, 1 distinct", &[3]);
}

#[test]
fn more_acknowledged_cars_than_spaces_are_caught_without_a_read_between() {
    // Both entries were acknowledged and nothing left, so two cars are inside a one-space lot. The
    // only read comes much later, after both exited: the reads alone would not show it.
    let history = [
        op(0, enter("A"), 0, 10, Outcome::Done),
        op(1, enter("B"), 20, 30, Outcome::Done),
        op(2, exit("A"), 40, 50, Outcome::Done),
        op(3, exit("B"), 40, 50, Outcome::Done),
        op(4, read_lot(), 60, 70, lot(1, &[])),
    ];
    assert_caught(&history, "2 acknowledged cars are inside at once, 1 spaces", &[0, 1]);
}

#[test]
fn statuses_that_do_not_say_whether_a_write_applied_are_unknown() {
    assert!(matches!(write_outcome(&tonic::Status::failed_precondition("full")), Outcome::Failed(_)));
    assert!(matches!(write_outcome(&tonic::Status::already_exists("inside")), Outcome::Failed(_)));
    assert!(matches!(write_outcome(&tonic::Status::unavailable("no quorum")), Outcome::Unknown(_)));
    assert!(matches!(write_outcome(&tonic::Status::deadline_exceeded("late")), Outcome::Unknown(_)));
    assert!(matches!(write_outcome(&tonic::Status::internal("?")), Outcome::Unknown(_)));
}
