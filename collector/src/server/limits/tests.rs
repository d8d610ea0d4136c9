//! Failed attempts counted per source address.

use super::*;

fn addr(text: &str) -> Option<SocketAddr> {
    Some(text.parse().expect("socket address"))
}

#[tokio::test]
async fn an_address_is_refused_after_its_failed_attempts_and_others_are_not() {
    let limit = FailedAttempts::with_limit("API token", 3, Duration::from_secs(60));
    for _ in 0..3 {
        limit
            .reserve(addr("192.0.2.1:5000"))
            .await
            .expect("not yet limited")
            .failed();
    }
    let refused = limit
        .reserve(addr("192.0.2.1:6000"))
        .await
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
    drop(
        limit
            .reserve(addr("192.0.2.2:5000"))
            .await
            .expect("another address"),
    );
    drop(
        limit
            .reserve(None)
            .await
            .expect("in-process callers are not limited"),
    );
}

#[tokio::test]
async fn the_window_ends_and_ipv6_counts_by_its_64() {
    // Long enough that a preempted test thread still makes its three
    // calls inside the window.
    let limit = FailedAttempts::with_limit("enrollment token", 2, Duration::from_secs(2));
    for peer in ["[2001:db8:1:2::5]:1", "[2001:db8:1:2::6]:1"] {
        limit.reserve(addr(peer)).await.expect("first two").failed();
    }
    limit
        .reserve(addr("[2001:db8:1:2::7]:1"))
        .await
        .expect_err("same /64");
    drop(
        limit
            .reserve(addr("[2001:db8:1:3::7]:1"))
            .await
            .expect("another /64"),
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    drop(
        limit
            .reserve(addr("[2001:db8:1:2::7]:1"))
            .await
            .expect("the window ended"),
    );
}

/// The race the reservation closes: checking first and counting after let
/// concurrent guesses all pass the check before the first failure was
/// counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_guesses_get_no_more_lookups_than_the_limit() {
    let limit = std::sync::Arc::new(FailedAttempts::with_limit(
        "API token",
        10,
        Duration::from_secs(60),
    ));
    let looked_up = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..300 {
        let (limit, looked_up) = (limit.clone(), looked_up.clone());
        set.spawn(async move {
            let attempt = limit.reserve(addr("192.0.2.9:1")).await?;
            looked_up.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            // The lookup takes a while, as a store read does under load.
            tokio::time::sleep(Duration::from_millis(20)).await;
            attempt.failed();
            Ok::<(), tonic::Status>(())
        });
    }
    let mut refused = 0;
    while let Some(joined) = set.join_next().await {
        if joined.expect("task").is_err() {
            refused += 1;
        }
    }
    assert_eq!(looked_up.load(std::sync::atomic::Ordering::SeqCst), 10);
    assert_eq!(refused, 290);
}

#[tokio::test]
async fn a_good_token_gives_its_reservation_back() {
    let limit = FailedAttempts::with_limit("API token", 2, Duration::from_secs(60));
    for _ in 0..50 {
        // Two at a time, both good: neither is ever refused.
        let first = limit.reserve(addr("192.0.2.3:1")).await.expect("first");
        let second = limit.reserve(addr("192.0.2.3:2")).await.expect("second");
        drop((first, second));
    }
    limit
        .reserve(addr("192.0.2.3:1"))
        .await
        .expect("one failure")
        .failed();
    drop(limit.reserve(addr("192.0.2.3:1")).await.expect("one left"));
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
