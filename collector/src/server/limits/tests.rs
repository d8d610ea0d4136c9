//! Failed attempts counted per source address.

use super::*;

fn addr(text: &str) -> Option<SocketAddr> {
    Some(text.parse().expect("socket address"))
}

#[test]
fn an_address_is_refused_after_its_failed_attempts_and_others_are_not() {
    let limit = FailedAttempts::with_limit("API token", 3, Duration::from_secs(60));
    for _ in 0..3 {
        limit
            .check(addr("192.0.2.1:5000"))
            .expect("not yet limited");
        limit.failed(addr("192.0.2.1:5000"));
    }
    let refused = limit
        .check(addr("192.0.2.1:6000"))
        .expect_err("limited on any port");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert!(
        refused
            .message()
            .starts_with("too many failed attempts from 192.0.2.1, retry in "),
        "{}",
        refused.message()
    );
    assert!(refused.message().ends_with(" s"));
    limit
        .check(addr("192.0.2.2:5000"))
        .expect("another address");
    limit
        .check(None)
        .expect("in-process callers are not limited");
}

#[test]
fn the_window_ends_and_ipv6_counts_by_its_64() {
    let limit = FailedAttempts::with_limit("enrollment token", 2, Duration::from_millis(50));
    limit.failed(addr("[2001:db8:1:2::5]:1"));
    limit.failed(addr("[2001:db8:1:2::6]:1"));
    limit
        .check(addr("[2001:db8:1:2::7]:1"))
        .expect_err("same /64");
    limit
        .check(addr("[2001:db8:1:3::7]:1"))
        .expect("another /64");
    std::thread::sleep(Duration::from_millis(60));
    limit
        .check(addr("[2001:db8:1:2::7]:1"))
        .expect("the window ended");
}

#[test]
fn a_host_over_its_employee_reports_is_told_why_and_others_are_not() {
    let limit = UserReports::with_limit(3, Duration::from_secs(3600));
    for _ in 0..3 {
        limit.admit("host-a").expect("within the limit");
    }
    let reason = limit.admit("host-a").expect_err("over the limit");
    assert!(
        reason.starts_with("too many employee reports from this PC: at most 3 per 60 min"),
        "{reason}"
    );
    assert!(!reason.contains('\n'));
    limit.admit("host-a").expect_err("still over");
    limit.admit("host-b").expect("another host");
}
