//! The connection cap's arithmetic and the gate's pushing out of pending
//! sockets.

use super::*;

#[test]
fn the_cap_keeps_the_reserve_below_the_open_file_limit() {
    let limits = ConnectionLimits::for_open_file_limit(1024, None).expect("limits");
    assert_eq!(limits.max_connections, 1024 - 256);
    assert_eq!(limits.max_pending, (1024 - 256) / 4);
    let limits = ConnectionLimits::for_open_file_limit(1_000_000, None).expect("limits");
    assert_eq!(limits.max_pending, MAX_PENDING);
    let limits = ConnectionLimits::for_open_file_limit(u64::MAX, Some(5000)).expect("limits");
    assert_eq!(limits.max_connections, 5000);
}

#[test]
fn a_cap_that_does_not_fit_is_a_one_line_error() {
    let error = ConnectionLimits::for_open_file_limit(1024, Some(2000)).expect_err("too many");
    assert!(error.contains("at most 768"), "{error}");
    assert!(!error.contains('\n'));
    let error = ConnectionLimits::for_open_file_limit(1024, Some(0)).expect_err("zero");
    assert!(error.contains("at least 1"), "{error}");
    let error = ConnectionLimits::for_open_file_limit(200, None).expect_err("too low");
    assert!(error.contains("too low"), "{error}");
}

fn gate(max_connections: usize, max_pending: usize) -> Arc<Gate> {
    Arc::new(Gate {
        limits: ConnectionLimits {
            max_connections,
            max_pending,
            handshake_deadline: HANDSHAKE_DEADLINE,
        },
        state: Mutex::new(GateState::default()),
    })
}

#[test]
fn a_new_socket_pushes_out_the_oldest_pending_one_and_established_ones_stay() {
    let gate = gate(3, 2);
    let (mut first, first_out) = gate.take_slot().expect("slot");
    assert!(first.establish());
    let (_second, second_out) = gate.take_slot().expect("slot");
    let (_third, third_out) = gate.take_slot().expect("slot");
    // Full: the next pushes out the oldest pending socket, never the
    // established one.
    let (_fourth, _) = gate.take_slot().expect("slot");
    assert!(second_out.is_cancelled());
    assert!(!third_out.is_cancelled());
    assert!(!first_out.is_cancelled());
    let open = {
        let state = gate.lock();
        state.pending.len() + state.established
    };
    assert_eq!(open, 3);
}

#[test]
fn with_every_slot_established_a_new_socket_is_refused_until_one_closes() {
    let gate = gate(2, 2);
    let (mut a, _) = gate.take_slot().expect("slot");
    let (mut b, _) = gate.take_slot().expect("slot");
    assert!(a.establish() && b.establish());
    assert!(gate.take_slot().is_none());
    drop(a);
    assert!(gate.take_slot().is_some());
}

#[test]
fn a_pushed_out_socket_cannot_establish() {
    let gate = gate(1, 1);
    let (mut old, _) = gate.take_slot().expect("slot");
    let (_new, _) = gate.take_slot().expect("slot");
    assert!(!old.establish());
}
