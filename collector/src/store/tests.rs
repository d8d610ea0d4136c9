//! The store contract: behaviour every backend must show. One suite: each
//! test is an `async fn(TestDb)` listed once in [`contract!`], which runs
//! it as `sqlite::NAME` against a fresh SQLite file and as `postgres::NAME`
//! against a fresh PostgreSQL database.
//!
//! The PostgreSQL variants need `DESKPULSE_TEST_DATABASE_URL`, an admin URL
//! such as `postgres://postgres@127.0.0.1:5432/postgres` (`.ci/run` sets it
//! after `cargo xtask pg`). Each test creates its own `dp_test_*` database
//! through it and drops it afterwards. Without the variable they skip
//! loudly, or fail when `CI=true`, so CI never skips them silently (D31).

use std::future::Future;

use sqlx::{Connection, PgConnection};

use super::*;
use crate::clock::{Clock, ManualClock};

mod lookups;
use lookups::*;
mod revocation;
use revocation::*;
mod suggestions;
use suggestions::*;
mod web;
use web::*;
mod problems;
use problems::*;
mod employee;
use employee::*;

/// Names the variable the PostgreSQL contract tests need.
const PG_URL_VAR: &str = "DESKPULSE_TEST_DATABASE_URL";

/// Databases of runs older than this are left-overs (a test that panicked
/// before its cleanup, a killed run) and are dropped by the next run.
const STALE_AFTER_SECS: u64 = 3600;

/// The backends the contract runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// One test's fresh, empty database with the store open on it.
struct TestDb {
    /// Its URL: opening it again is what a restarted collector, or a second
    /// replica, does.
    url: String,
    /// The store, open on `url`.
    store: SharedStore,
    /// Keeps a SQLite database's directory for the test's lifetime.
    _dir: Option<tempfile::TempDir>,
}

/// Where a PostgreSQL test database lives, to drop it after the test.
struct PgDatabase {
    admin_url: String,
    name: String,
}

/// Runs `test` on a fresh database of `backend`, then drops the database,
/// whether the test passed or panicked.
async fn run<F, Fut>(backend: Backend, test: F)
where
    F: FnOnce(TestDb) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (url, dir, pg) = match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}", dir.path().join("test.db").display());
            (url, Some(dir), None)
        }
        Backend::Postgres => {
            let Some(pg) = create_pg_database().await else {
                return;
            };
            (with_database(&pg.admin_url, &pg.name), None, Some(pg))
        }
    };
    // On its own task, so a panic (in opening, too) comes back here as a
    // value and the database is dropped before the panic goes on.
    let outcome = tokio::spawn(async move {
        let store = backend::open(&url).await.expect("open the store");
        test(TestDb {
            url,
            store,
            _dir: dir,
        })
        .await;
    })
    .await;
    if let Some(pg) = pg {
        drop_pg_database(&pg).await;
    }
    if let Err(error) = outcome {
        match error.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(error) => panic!("contract test did not finish: {error}"),
        }
    }
}

/// The admin URL, or `None` after saying loudly why the test is skipped.
fn pg_admin_url() -> Option<String> {
    match std::env::var(PG_URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "{PG_URL_VAR} is not set: with CI=true the PostgreSQL contract tests \
                     must run (e.g. {PG_URL_VAR}=postgres://postgres@127.0.0.1:5432/postgres)"
                );
            }
            // Straight to the stderr handle, once per run: the test
            // harness captures eprintln! of passing tests, which would
            // make the skip silent.
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED: set {PG_URL_VAR} to run the PostgreSQL contract tests \
                     (e.g. postgres://postgres@127.0.0.1:5432/postgres)"
                );
            });
            None
        }
    }
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Creates `dp_test_<unix secs>_<random>`, first dropping the left-overs
/// of runs more than an hour old.
async fn create_pg_database() -> Option<PgDatabase> {
    let admin_url = pg_admin_url()?;
    let mut admin = PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {PG_URL_VAR}={admin_url}: {e}"));
    let names: Vec<String> =
        sqlx::query_scalar(r"SELECT datname FROM pg_database WHERE datname LIKE 'dp\_test\_%'")
            .fetch_all(&mut admin)
            .await
            .expect("list test databases");
    let now = unix_secs();
    for name in names {
        let created = name
            .strip_prefix("dp_test_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        if created.is_some_and(|at| at + STALE_AFTER_SECS < now) {
            // Best effort: another run may be dropping it too.
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
            )))
            .execute(&mut admin)
            .await;
        }
    }
    let name = format!(
        "dp_test_{now}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("create test database {name}: {e}"));
    let _ = admin.close().await;
    Some(PgDatabase { admin_url, name })
}

/// Best effort: a database left behind is dropped by a later run.
async fn drop_pg_database(pg: &PgDatabase) {
    let Ok(mut admin) = PgConnection::connect(&pg.admin_url).await else {
        return;
    };
    // FORCE: the store's pool may still be closing its connections.
    let dropped = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
        pg.name
    )))
    .execute(&mut admin)
    .await;
    if let Err(error) = dropped {
        eprintln!("could not drop test database {}: {error}", pg.name);
    }
    let _ = admin.close().await;
}

/// `url` with its database replaced by `name`, query string kept.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let path = base[authority..]
        .find('/')
        .map_or(base.len(), |i| authority + i);
    let mut out = format!("{}/{name}", &base[..path]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// Lists the contract tests once; generates `sqlite::NAME` and
/// `postgres::NAME` for each (only the latter for those after
/// `postgres only:`). A test function left out of the list is dead
/// code, which the lints refuse, so none is forgotten.
macro_rules! contract {
    ($($name:ident),* $(,)?; postgres only: $($pg_name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::run(super::Backend::Sqlite, super::$name).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::run(super::Backend::Postgres, super::$name).await;
                }
            )*
            $(
                #[tokio::test]
                async fn $pg_name() {
                    super::run(super::Backend::Postgres, super::$pg_name).await;
                }
            )*
        }
    };
}

mod ca_rotation;
use ca_rotation::a_ca_rotation_moves_hosts_over_and_retires_the_old_ca_only_when_empty_or_forced;
mod triage;
use triage::{
    a_rule_that_fires_queues_its_triage_as_audited_jobs_for_its_ticket,
    an_offline_ticket_gets_the_last_health_and_changes_instead_of_runs,
};

contract! {
    an_opened_ticket_gets_earlier_human_resolutions_and_never_auto_ones,
    a_rule_ticket_is_suggested_fixes_of_its_rule_and_software,
    hostile_report_text_reaches_the_lookup_only_as_words,
    change_correlation_counts_other_hosts_with_the_change_and_the_rule_open,
    a_renewed_certificate_waits_beside_the_current_one_until_first_used,
    enrollment_tokens_expire_and_run_out,
    a_token_is_checked_without_being_spent,
    a_failed_issue_does_not_use_up_the_token,
    known_hardware_under_an_ordinary_token_gets_a_new_host_and_one_ticket,
    only_a_relink_token_relinks_and_only_its_own_host,
    an_approved_relink_request_takes_the_host_over_and_a_denied_one_stays_apart,
    reports_are_stored_once_and_old_ones_never_overwrite_new_state,
    the_latest_health_is_the_last_received_and_a_hosts_clock_is_recorded,
    a_stored_inventory_that_cannot_be_read_is_an_error_naming_its_host,
    keys_below_what_the_spool_still_holds_are_forgotten_and_no_others,
    hosts_page_in_order_and_lookups_report_ambiguity,
    an_exact_host_id_wins_over_a_host_name_that_copies_it,
    an_audited_change_commits_with_its_entry_or_not_at_all,
    presence_follows_streams_goodbyes_and_silence,
    what_an_agent_cannot_run_is_kept_per_host_until_its_next_hello,
    api_tokens_authenticate_their_technician_and_keep_roles,
    the_fleet_ca_is_recorded_once_and_a_different_one_is_a_mismatch,
    fleet_queries_use_each_ecosystems_version_order_and_the_facts,
    health_history_is_downsampled_to_hours_then_purged,
    deltas_that_do_not_fit_ask_for_a_resync_and_changes_are_logged,
    a_full_disk_opens_one_ticket_resolves_after_quiet_and_reopens,
    a_rule_in_seconds_says_its_seconds_in_the_worklog,
    the_ticket_workflow_meets_response_pauses_while_waiting_and_escalates,
    an_always_on_host_that_goes_silent_gets_one_offline_ticket_and_a_laptop_none,
    the_next_timer_is_read_from_the_store_and_fires_at_its_due_time,
    inventory_changes_open_tickets_once_and_the_first_inventory_none,
    an_employee_report_opens_a_ticket_with_its_sample_and_is_stored_once,
    a_report_key_raises_one_ticket_even_from_a_rolled_back_spool,
    the_same_report_text_from_a_host_counts_on_its_open_ticket,
    a_public_note_is_shown_as_public_and_audited_and_a_private_one_is_not,
    a_report_key_names_its_ticket_and_the_reporter_sees_only_their_own,
    a_reporters_tickets_are_bounded_newest_first,
    ticket_updated_says_what_changed_and_who_with_public_note_text_only,
    an_applied_policy_is_kept_across_restarts_and_drives_evaluation,
    tickets_filter_by_assignee,
    jobs_are_queued_delivered_finished_once_and_only_by_their_host,
    a_request_past_its_ttl_expires_visibly_and_a_queued_one_cancels,
    a_result_for_a_job_with_a_ticket_lands_in_the_tickets_worklog,
    a_hostile_agents_result_is_capped_at_its_catalog_cap_and_its_times_clamped,
    timer_passes_on_two_replicas_at_once_fire_each_due_timer_once,
    the_knowledge_base_finds_resolved_tickets_best_match_first,
    audit_appends_from_two_replicas_form_one_chain_and_edits_are_named,
    every_ticket_change_is_audited_in_its_transaction_and_a_refused_one_not,
    a_revoked_host_is_refused_with_every_certificate,
    a_retired_host_leaves_the_fleet_with_its_tickets_closed_and_its_history_kept,
    api_tokens_expire_are_revoked_and_the_last_admin_stays,
    a_revoked_enrollment_token_enrolls_nothing,
    a_ca_rotation_moves_hosts_over_and_retires_the_old_ca_only_when_empty_or_forced,
    software_filters_ignore_case_take_globs_and_name_the_versions,
    the_os_filter_finds_a_codename,
    jobs_are_found_by_a_unique_start_of_their_id,
    tickets_go_only_to_technicians_who_exist,
    a_ticket_reopened_by_hand_has_no_current_resolution,
    local_accounts_are_made_once_reset_and_deleted_with_their_sessions,
    a_web_session_holds_while_its_api_token_works,
    the_latest_health_of_a_page_of_hosts_is_read_at_once,
    presence_by_os_counts_as_is_online_decides,
    a_rule_that_fires_queues_its_triage_as_audited_jobs_for_its_ticket,
    an_offline_ticket_gets_the_last_health_and_changes_instead_of_runs,
    tickets_of_one_rule_on_enough_hosts_in_the_window_make_one_problem,
    employees_reporting_the_same_words_from_many_pcs_make_one_problem,
    many_ordinary_hosts_raise_a_problems_priority_above_its_tickets,
    a_problem_names_the_change_its_hosts_share,
    resolving_a_problem_resolves_its_open_tickets_each_through_the_ticket_path,
    a_problem_follows_its_tickets_resolved_one_by_one_reopened_and_retired,
    problem_events_reach_the_webhook_outbox_with_the_problem,
    problem_events_reach_chat_and_mail_by_the_problems_priority;
    // One SQLite database has one collector: no other cache to reach.
    postgres only:
    two_replicas_opening_tickets_at_once_make_one_problem,
    a_policy_applied_by_one_replica_reaches_the_others,
    a_replica_that_stops_saying_it_is_alive_loses_its_streams,
}

fn cert(host_id: &str) -> Result<HostCert, String> {
    Ok(HostCert {
        cert_pem: format!("PEM for {host_id}"),
        serial_hex: "01".into(),
        sha256_hex: format!("sha-{host_id}"),
        ca_sha256: "ca-1".into(),
    })
}

fn request(token: &str, uuid: &str) -> EnrollRequest {
    EnrollRequest {
        token_sha256: crate::secrets::token_hash(token),
        hostname: "pc-1".into(),
        hardware_uuid: uuid.into(),
        hardware_serial: String::new(),
        source_addr: "192.0.2.7".into(),
        csr_der: b"csr".to_vec(),
    }
}

async fn token(store: &SharedStore, token: &str, expires_at_ms: i64, uses: u32) {
    store
        .create_enrollment_token(
            &NewEnrollmentToken {
                id: uuid::Uuid::new_v4().to_string(),
                token_sha256: crate::secrets::token_hash(token),
                expires_at_ms,
                uses,
                created_by: "test".into(),
                relink_host: None,
            },
            &AuditEntry::system("test", "", ""),
            0,
        )
        .await
        .expect("create token");
}

fn host_id(outcome: &EnrollOutcome) -> String {
    match outcome {
        EnrollOutcome::Enrolled { host_id, .. } => host_id.clone(),
        other => panic!("expected enrolled, got {other:?}"),
    }
}

async fn a_renewed_certificate_waits_beside_the_current_one_until_first_used(db: TestDb) {
    let store = db.store.clone();
    let host = enrolled_host(&store).await;
    let current = format!("sha-{host}");
    let next = HostCert {
        cert_pem: "renewed PEM".into(),
        serial_hex: "02".into(),
        sha256_hex: "sha-renewed".into(),
        ca_sha256: "ca-1".into(),
    };
    // Only the current certificate may renew.
    assert!(
        !store
            .record_cert_renewal(&host, "sha-other", &next, 1)
            .await
            .expect("renew")
    );
    assert!(
        store
            .record_cert_renewal(&host, &current, &next, 1)
            .await
            .expect("renew")
    );
    // Until the renewed one is used, the current one still opens sessions.
    assert_eq!(
        store
            .present_host_cert(&host, &current)
            .await
            .expect("present"),
        CertStanding::Current
    );
    assert_eq!(
        store
            .present_host_cert(&host, "sha-renewed")
            .await
            .expect("present"),
        CertStanding::Renewed
    );
    assert_eq!(
        store
            .present_host_cert(&host, "sha-renewed")
            .await
            .expect("present"),
        CertStanding::Current
    );
    assert_eq!(
        store
            .present_host_cert(&host, &current)
            .await
            .expect("present"),
        CertStanding::Superseded
    );
    assert_eq!(
        store
            .host_cert_sha256(&host)
            .await
            .expect("read")
            .as_deref(),
        Some("sha-renewed")
    );
    assert_eq!(
        store
            .present_host_cert("no-such-host", "sha-renewed")
            .await
            .expect("present"),
        CertStanding::UnknownHost
    );
}

async fn enrollment_tokens_expire_and_run_out(db: TestDb) {
    let store = db.store.clone();
    let clock = ManualClock::new(1_000_000);
    token(&store, "once", clock.now_ms() + 60_000, 1).await;
    let first = store
        .enroll(&request("once", ""), clock.now_ms(), &cert)
        .await
        .expect("enroll");
    host_id(&first);
    let again = store
        .enroll(&request("once", ""), clock.now_ms(), &cert)
        .await
        .expect("enroll");
    assert_eq!(again, EnrollOutcome::UsedToken);

    token(&store, "later", clock.now_ms() + 60_000, 5).await;
    clock.advance(std::time::Duration::from_secs(61));
    let late = store
        .enroll(&request("later", ""), clock.now_ms(), &cert)
        .await
        .expect("enroll");
    assert_eq!(late, EnrollOutcome::ExpiredToken);

    let unknown = store
        .enroll(&request("nope", ""), clock.now_ms(), &cert)
        .await
        .expect("enroll");
    assert_eq!(unknown, EnrollOutcome::UnknownToken);
}

async fn a_token_is_checked_without_being_spent(db: TestDb) {
    let store = db.store.clone();
    let now = 1_000_000;
    token(&store, "once", now + 60_000, 1).await;
    let hash = crate::secrets::token_hash;
    for _ in 0..3 {
        let refusal = store
            .enrollment_token_refusal(&hash("once"), now)
            .await
            .expect("check");
        assert_eq!(refusal, None);
    }
    let check = |token: &'static str, at: i64| {
        let store = store.clone();
        async move {
            store
                .enrollment_token_refusal(&hash(token), at)
                .await
                .expect("check")
        }
    };
    assert_eq!(
        check("once", now + 60_000).await,
        Some(EnrollOutcome::ExpiredToken)
    );
    assert_eq!(check("nope", now).await, Some(EnrollOutcome::UnknownToken));
    host_id(
        &store
            .enroll(&request("once", ""), now, &cert)
            .await
            .expect("enroll"),
    );
    assert_eq!(check("once", now).await, Some(EnrollOutcome::UsedToken));
}

async fn a_failed_issue_does_not_use_up_the_token(db: TestDb) {
    let store = db.store.clone();
    token(&store, "t", i64::MAX, 1).await;
    let failing = |_: &str| -> Result<HostCert, String> { Err("signer offline".into()) };
    let error = store
        .enroll(&request("t", ""), 0, &failing)
        .await
        .expect_err("fails");
    assert!(error.to_string().contains("signer offline"));
    let outcome = store
        .enroll(&request("t", ""), 0, &cert)
        .await
        .expect("enroll");
    host_id(&outcome);
}

async fn known_hardware_under_an_ordinary_token_gets_a_new_host_and_one_ticket(db: TestDb) {
    let store = db.store.clone();
    token(&store, "t", i64::MAX, 4).await;
    let a = store
        .enroll(&request("t", "uuid-1"), 1, &cert)
        .await
        .expect("enroll");
    // The same hardware again, twice, under an ordinary token: new hosts,
    // never the first one's id (issue 20).
    let b = store
        .enroll(&request("t", "uuid-1"), 2, &cert)
        .await
        .expect("enroll");
    let c = store
        .enroll(&request("t", "uuid-1"), 3, &cert)
        .await
        .expect("enroll");
    let d = store
        .enroll(&request("t", "uuid-2"), 4, &cert)
        .await
        .expect("enroll");
    assert!(matches!(
        b,
        EnrollOutcome::Enrolled {
            relinked: false,
            ..
        }
    ));
    let ids = [host_id(&a), host_id(&b), host_id(&c), host_id(&d)];
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), 4, "{ids:?}");
    // The first host's certificate is still its current one.
    assert_eq!(
        store.host_cert_sha256(&ids[0]).await.expect("cert"),
        Some(format!("sha-{}", ids[0]))
    );
    let tickets = store
        .list_tickets(&TicketQuery {
            rule: Some(crate::rules::DUPLICATE_IDENTITY_RULE.into()),
            limit: 10,
            ..TicketQuery::default()
        })
        .await
        .expect("tickets");
    // b's claim ticketed a; c's claim matched a and b: a's ticket counts
    // it again, and b gets one of its own.
    let on = |host: &str| tickets.iter().filter(|t| t.host_id == host).count();
    assert_eq!(
        (on(&ids[0]), on(&ids[1]), on(&ids[3])),
        (1, 1, 0),
        "{tickets:?}"
    );
    let first = tickets
        .iter()
        .find(|t| t.host_id == ids[0])
        .expect("ticket");
    assert_eq!(first.occurrences, 2, "{first:?}");
    assert_eq!(first.subject, "uuid uuid-1");
}

async fn only_a_relink_token_relinks_and_only_its_own_host(db: TestDb) {
    let store = db.store.clone();
    token(&store, "t", i64::MAX, 1).await;
    let a = host_id(
        &store
            .enroll(&request("t", "uuid-1"), 1, &cert)
            .await
            .expect("enroll"),
    );
    let relink = |name: &str, host: &str| NewEnrollmentToken {
        id: uuid::Uuid::new_v4().to_string(),
        token_sha256: crate::secrets::token_hash(name),
        expires_at_ms: i64::MAX,
        uses: 1,
        created_by: "test".into(),
        relink_host: Some(host.to_owned()),
    };
    store
        .create_enrollment_token(&relink("r", &a), &AuditEntry::system("test", "", ""), 0)
        .await
        .expect("token");
    // Re-linked by the admin's say, whatever hardware the agent now reads
    // (a replaced mainboard keeps its host).
    let again = store
        .enroll(&request("r", "uuid-9"), 2, &cert)
        .await
        .expect("enroll");
    assert_eq!(host_id(&again), a);
    assert!(matches!(
        again,
        EnrollOutcome::Enrolled { relinked: true, .. }
    ));
    assert!(matches!(
        store.enroll(&request("r", "uuid-9"), 3, &cert).await,
        Ok(EnrollOutcome::UsedToken)
    ));
    store
        .create_enrollment_token(
            &relink("gone", "no-such-host"),
            &AuditEntry::system("test", "", ""),
            0,
        )
        .await
        .expect("token");
    assert!(matches!(
        store.enroll(&request("gone", "uuid-1"), 4, &cert).await,
        Ok(EnrollOutcome::RelinkHostGone)
    ));
}

fn decision(id: i64, approve: bool) -> RelinkDecision {
    RelinkDecision {
        id,
        approve,
        by: "ada".into(),
        audit: AuditEntry::system("", "", ""),
    }
}

fn reissued(csr: &[u8], host_id: &str) -> Result<HostCert, String> {
    assert_eq!(csr, b"csr", "approval signs the CSR kept with the request");
    Ok(HostCert {
        cert_pem: format!("relinked PEM for {host_id}"),
        serial_hex: "02".into(),
        sha256_hex: format!("sha-relinked-{host_id}"),
        ca_sha256: "ca-1".into(),
    })
}

async fn an_approved_relink_request_takes_the_host_over_and_a_denied_one_stays_apart(db: TestDb) {
    let store = db.store.clone();
    token(&store, "t", i64::MAX, 3).await;
    let a = host_id(
        &store
            .enroll(&request("t", "uuid-1"), 1, &cert)
            .await
            .expect("enroll"),
    );
    let b = host_id(
        &store
            .enroll(&request("t", "uuid-1"), 2, &cert)
            .await
            .expect("enroll"),
    );
    // The interim host reports meanwhile.
    let report = IncomingReport {
        host_id: b.clone(),
        spool_id: "spool-b".into(),
        seq: 1,
        held_from_seq: 0,
        collected_at_ms: 3,
        payload: ReportPayload::Inventory {
            inventory: named_inventory("pc-1"),
            hostname: "pc-1".into(),
            os_name: "Debian".into(),
            os_version: "12".into(),
            facts: Box::default(),
        },
    };
    store
        .store_reports(std::slice::from_ref(&report), 3)
        .await
        .expect("store");
    let pending = store.relink_requests(false).await.expect("list");
    assert_eq!(pending.len(), 1, "{pending:?}");
    let asked = &pending[0];
    assert_eq!(
        (
            asked.claimed_host_id.as_str(),
            asked.new_host_id.as_str(),
            asked.status.as_str()
        ),
        (a.as_str(), b.as_str(), "pending")
    );
    assert_eq!(
        (asked.source_addr.as_str(), asked.hardware_uuid.as_str()),
        ("192.0.2.7", "uuid-1")
    );

    // Unknown ids and a failing issuer change nothing.
    assert_eq!(
        store
            .decide_relink(&decision(9999, true), &reissued, 4)
            .await
            .expect("decide"),
        Err(RelinkRefusal::NotFound(9999))
    );
    let failing = |_: &[u8], _: &str| -> Result<HostCert, String> { Err("no CA".into()) };
    assert!(matches!(
        store
            .decide_relink(&decision(asked.id, true), &failing, 4)
            .await,
        Err(StoreError::Issue(_))
    ));
    assert_eq!(store.relink_requests(false).await.expect("list").len(), 1);
    assert!(store.host_detail(&b).await.expect("detail").is_some());

    // The old installation had asked for a renewal it has not presented:
    // the take-over ends that certificate too.
    let renewed = HostCert {
        cert_pem: "renewed".into(),
        serial_hex: "03".into(),
        sha256_hex: "sha-renewed-a".into(),
        ca_sha256: "ca-1".into(),
    };
    assert!(
        store
            .record_cert_renewal(&a, &format!("sha-{a}"), &renewed, 4)
            .await
            .expect("renew")
    );
    let approved = store
        .decide_relink(&decision(asked.id, true), &reissued, 5)
        .await
        .expect("decide")
        .expect("approved");
    assert_eq!(
        (approved.status.as_str(), approved.decided_by.as_deref()),
        ("approved", Some("ada"))
    );
    // The claimed host's previous certificate stops working; the interim
    // host is gone, and its certificate is answered with the new one.
    assert_eq!(
        store
            .present_host_cert(&a, &format!("sha-{a}"))
            .await
            .expect("present"),
        CertStanding::Superseded
    );
    assert_eq!(
        store
            .present_host_cert(&a, &format!("sha-relinked-{a}"))
            .await
            .expect("present"),
        CertStanding::Current
    );
    assert_eq!(
        store
            .present_host_cert(&a, "sha-renewed-a")
            .await
            .expect("present"),
        CertStanding::Superseded
    );
    assert_eq!(
        store
            .present_host_cert(&b, &format!("sha-{b}"))
            .await
            .expect("present"),
        CertStanding::Relinked {
            host_id: a.clone(),
            cert_pem: format!("relinked PEM for {a}"),
        }
    );
    assert_eq!(
        store
            .present_host_cert(&b, "sha-other")
            .await
            .expect("present"),
        CertStanding::UnknownHost
    );
    assert!(store.host_detail(&b).await.expect("detail").is_none());
    assert!(store.find_hosts(&b).await.expect("find").is_empty());
    // The report b stored moved with it: sent again as a, it is a duplicate.
    let again = IncomingReport {
        host_id: a.clone(),
        ..report
    };
    assert_eq!(
        store.store_reports(&[again], 6).await.expect("store"),
        vec![ReportOutcome::Duplicate]
    );
    let duplicate_tickets = |status: Option<&str>| {
        let store = store.clone();
        let status = status.map(str::to_owned);
        async move {
            store
                .list_tickets(&TicketQuery {
                    rule: Some(crate::rules::DUPLICATE_IDENTITY_RULE.into()),
                    status,
                    limit: 10,
                    ..TicketQuery::default()
                })
                .await
                .expect("tickets")
        }
    };
    let resolved = duplicate_tickets(Some("resolved")).await;
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    let (_, worklog) = store
        .ticket(resolved[0].id)
        .await
        .expect("ticket")
        .expect("found");
    assert!(
        worklog
            .iter()
            .any(|w| w.note.contains(&format!("re-link request {}", asked.id))),
        "{worklog:?}"
    );
    assert_eq!(
        store
            .decide_relink(&decision(asked.id, false), &reissued, 7)
            .await
            .expect("decide"),
        Err(RelinkRefusal::Decided(approved.clone()))
    );

    // Another claim, denied: it stays a host of its own, and the new
    // duplicate ticket stays open with a note.
    let c = host_id(
        &store
            .enroll(&request("t", "uuid-1"), 8, &cert)
            .await
            .expect("enroll"),
    );
    let second = store.relink_requests(false).await.expect("list");
    assert_eq!(second.len(), 1, "{second:?}");
    let denied = store
        .decide_relink(&decision(second[0].id, false), &reissued, 9)
        .await
        .expect("decide")
        .expect("denied");
    assert_eq!(denied.status, "denied");
    assert_eq!(
        store.host_cert_sha256(&c).await.expect("cert"),
        Some(format!("sha-{c}"))
    );
    assert_eq!(
        store.host_cert_sha256(&a).await.expect("cert"),
        Some(format!("sha-relinked-{a}"))
    );
    assert!(store.relink_requests(false).await.expect("list").is_empty());
    assert_eq!(store.relink_requests(true).await.expect("list").len(), 2);
    let open: Vec<_> = duplicate_tickets(None)
        .await
        .into_iter()
        .filter(|t| t.status != "resolved")
        .collect();
    assert_eq!(open.len(), 1, "{open:?}");
    let (_, worklog) = store
        .ticket(open[0].id)
        .await
        .expect("ticket")
        .expect("found");
    assert!(
        worklog.iter().any(|w| w.note.contains("denied")),
        "{worklog:?}"
    );
}

async fn reports_are_stored_once_and_old_ones_never_overwrite_new_state(db: TestDb) {
    let store = db.store.clone();
    token(&store, "t", i64::MAX, 1).await;
    let id = host_id(
        &store
            .enroll(&request("t", ""), 0, &cert)
            .await
            .expect("enroll"),
    );
    let inventory = |seq: u64, at: i64, name: &str| IncomingReport {
        host_id: id.clone(),
        spool_id: "s".into(),
        seq,
        held_from_seq: 0,
        collected_at_ms: at,
        payload: ReportPayload::Inventory {
            inventory: named_inventory(name),
            hostname: name.into(),
            os_name: "Debian".into(),
            os_version: "12".into(),
            facts: Box::default(),
        },
    };
    store
        .store_reports(&[inventory(2, 200, "new")], 1000)
        .await
        .expect("store");
    // Older report arriving late, and a duplicate of the new one.
    store
        .store_reports(&[inventory(1, 100, "old"), inventory(2, 100, "dup")], 2000)
        .await
        .expect("store");
    let detail = store.host_detail(&id).await.expect("detail").expect("host");
    assert_eq!(detail.row.hostname, "new");
    assert_eq!(
        detail.inventory,
        Some((prost::Message::encode_to_vec(&*named_inventory("new")), 200))
    );
    assert_eq!(detail.row.last_seen_at_ms, Some(2000));
}

/// Issue 20, clocks that lie: one sample dated 2100 used to freeze a
/// host's latest health for good, since only a sample claiming a later
/// time could replace it. The latest is now the one received last.
async fn the_latest_health_is_the_last_received_and_a_hosts_clock_is_recorded(db: TestDb) {
    use crate::clockskew::ClockReading;
    use crate::model::HostClock;
    const YEAR_2100: i64 = 4_102_444_800_000;
    let store = db.store.clone();
    let id = enrolled_host(&store).await;
    store
        .store_reports(&[health_report(&id, 1, YEAR_2100, 10.0, 20.0)], 1_000)
        .await
        .expect("store");
    store
        .store_reports(&[health_report(&id, 2, 500, 30.0, 40.0)], 2_000)
        .await
        .expect("store");
    let detail = store.host_detail(&id).await.expect("detail").expect("host");
    assert_eq!(detail.health.map(|(_, at)| at), Some(500));
    // Within a batch too, the last received wins.
    store
        .store_reports(
            &[
                health_report(&id, 3, i64::MAX, 10.0, 20.0),
                health_report(&id, 4, 700, 30.0, 40.0),
            ],
            3_000,
        )
        .await
        .expect("store");
    let detail = store.host_detail(&id).await.expect("detail").expect("host");
    assert_eq!(detail.health.map(|(_, at)| at), Some(700));
    assert_eq!(detail.clock, HostClock::default(), "nothing measured yet");

    let three_hours_behind = -3 * 3_600_000;
    store
        .record_clock(
            &id,
            &ClockReading {
                offset_ms: Some(three_hours_behind),
                measured_at_ms: 2_000,
                clamped: 1,
                last_claim_ms: Some(YEAR_2100),
            },
        )
        .await
        .expect("record");
    // A reading without an offset (an older agent) keeps the one measured.
    store
        .record_clock(
            &id,
            &ClockReading {
                offset_ms: None,
                measured_at_ms: 3_000,
                clamped: 2,
                last_claim_ms: Some(i64::MAX),
            },
        )
        .await
        .expect("record");
    let detail = store.host_detail(&id).await.expect("detail").expect("host");
    assert_eq!(
        detail.clock,
        HostClock {
            offset: Some((three_hours_behind, 2_000)),
            clamped_reports: 3,
            last_clamped_claim_ms: Some(i64::MAX),
        }
    );
    // An unknown host is no error and changes nothing.
    store
        .record_clock("no-such-host", &ClockReading::default())
        .await
        .expect("record for nobody");
}

/// An encoded inventory whose host name is `name`.
fn named_inventory(name: &str) -> Box<deskpulse_proto::v1::Inventory> {
    use deskpulse_proto::v1::{Inventory, OsInfo};
    Box::new(Inventory {
        os: Some(OsInfo {
            hostname: name.into(),
            ..OsInfo::default()
        }),
        ..Inventory::default()
    })
}

async fn a_stored_inventory_that_cannot_be_read_is_an_error_naming_its_host(db: TestDb) {
    let store = db.store.clone();
    token(&store, "t", i64::MAX, 2).await;
    let id = host_id(
        &store
            .enroll(&request("t", "hw-1"), 0, &cert)
            .await
            .expect("enroll"),
    );
    let report = |seq: u64, payload: ReportPayload| IncomingReport {
        host_id: id.clone(),
        spool_id: "s".into(),
        seq,
        held_from_seq: 0,
        collected_at_ms: i64::try_from(seq).expect("small") * 100,
        payload,
    };
    let full = |name: &str| ReportPayload::Inventory {
        inventory: named_inventory(name),
        hostname: name.into(),
        os_name: String::new(),
        os_version: String::new(),
        facts: Box::default(),
    };
    store
        .store_reports(&[report(1, full("pc-1"))], 1000)
        .await
        .expect("store");
    // 0x6e is field 13 with wire type 6, which does not exist.
    let garbage = if db.url.starts_with("postgres") {
        format!("UPDATE hosts SET inventory = '\\x6e6577'::bytea WHERE id = '{id}'")
    } else {
        format!("UPDATE host_inventories SET inventory = X'6e6577' WHERE host_id = '{id}'")
    };
    tamper(&db, garbage).await;
    let failed = store
        .store_reports(&[report(2, full("pc-2"))], 2000)
        .await
        .expect_err("a stored inventory that cannot be decoded is an error");
    let said = failed.to_string();
    assert!(
        said.contains(&id) && said.contains("cannot be decoded"),
        "{said}"
    );
    // Nothing of the failed batch was stored.
    let detail = store.host_detail(&id).await.expect("detail").expect("host");
    assert_eq!(detail.row.hostname, "pc-1");
    // What the store is handed is decoded already, in the session: only a
    // stored inventory can be unreadable.
}

async fn keys_below_what_the_spool_still_holds_are_forgotten_and_no_others(db: TestDb) {
    let store = db.store.clone();
    token(&store, "t", i64::MAX, 1).await;
    let id = host_id(
        &store
            .enroll(&request("t", ""), 0, &cert)
            .await
            .expect("enroll"),
    );
    let sample = |spool: &str, seq: u64, held_from_seq: u64| IncomingReport {
        spool_id: spool.into(),
        held_from_seq,
        ..health_report(
            &id,
            seq,
            1000 * i64::try_from(seq).expect("small"),
            5.0,
            10.0,
        )
    };
    let outcomes = |reports: Vec<IncomingReport>| {
        let store = store.clone();
        async move { store.store_reports(&reports, 0).await.expect("store") }
    };
    use ReportOutcome::{Duplicate, Stored};
    assert_eq!(
        outcomes(vec![
            sample("s", 1, 1),
            sample("s", 2, 1),
            sample("s", 3, 1),
            sample("other", 1, 1)
        ])
        .await,
        [Stored, Stored, Stored, Stored]
    );
    // A resend in the same batch as the report that lets its key go is
    // still caught.
    assert_eq!(
        outcomes(vec![sample("s", 2, 1), sample("s", 4, 3)]).await,
        [Duplicate, Stored]
    );
    // Keys below 3 are gone (only an agent that broke D14 would send them
    // again); 3 and up, and the other spool's, are kept.
    assert_eq!(
        outcomes(vec![
            sample("s", 1, 1),
            sample("s", 3, 1),
            sample("s", 4, 1),
            sample("other", 1, 1)
        ])
        .await,
        [Stored, Duplicate, Duplicate, Duplicate]
    );
    // A claim past the report's own seq forgets nothing from the report on.
    assert_eq!(outcomes(vec![sample("s", 5, 99)]).await, [Stored]);
    assert_eq!(
        outcomes(vec![sample("s", 4, 1), sample("s", 5, 1)]).await,
        [Stored, Duplicate]
    );
}

async fn hosts_page_in_order_and_lookups_report_ambiguity(db: TestDb) {
    let store = db.store.clone();
    token(&store, "t", i64::MAX, 10).await;
    let mut ids = Vec::new();
    for name in ["carol", "alice", "bob", "alice"] {
        let mut req = request("t", "");
        req.hostname = name.into();
        ids.push(host_id(
            &store.enroll(&req, 0, &cert).await.expect("enroll"),
        ));
    }
    let first = store
        .list_hosts(&HostQuery::default(), None, 2)
        .await
        .expect("page 1");
    assert_eq!(
        first
            .iter()
            .map(|h| h.hostname.as_str())
            .collect::<Vec<_>>(),
        ["alice", "alice"]
    );
    let last = first.last().expect("last");
    let rest = store
        .list_hosts(&HostQuery::default(), Some((&last.hostname, &last.id)), 10)
        .await
        .expect("page 2");
    assert_eq!(
        rest.iter().map(|h| h.hostname.as_str()).collect::<Vec<_>>(),
        ["bob", "carol"]
    );

    assert_eq!(store.find_hosts("ALICE").await.expect("find").len(), 2);
    assert_eq!(store.find_hosts("bob").await.expect("find").len(), 1);
    assert_eq!(store.find_hosts(&ids[0]).await.expect("find")[0].id, ids[0]);
    assert!(store.find_hosts("zed").await.expect("find").is_empty());
}

async fn an_exact_host_id_wins_over_a_host_name_that_copies_it(db: TestDb) {
    let store = db.store.clone();
    token(&store, "t", i64::MAX, 3).await;
    let victim = host_id(
        &store
            .enroll(&request("t", ""), 0, &cert)
            .await
            .expect("enroll"),
    );
    // Two hostile hosts: one named as the victim's id (in capitals, as a
    // technician might paste it), one as its first 8 characters.
    let mut copies = Vec::new();
    for name in [victim.to_ascii_uppercase(), victim[..8].to_owned()] {
        let mut req = request("t", "");
        req.hostname = name;
        copies.push(host_id(
            &store.enroll(&req, 0, &cert).await.expect("enroll"),
        ));
    }
    for query in [victim.clone(), victim.to_ascii_uppercase()] {
        let found = store.find_hosts(&query).await.expect("find");
        assert_eq!(
            found.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
            [victim.as_str()],
            "{query}"
        );
    }
    // A prefix that is also a host name is ambiguous, not the name's.
    let found = store.find_hosts(&victim[..8]).await.expect("find");
    assert!(found.iter().any(|h| h.id == victim), "{found:?}");
    assert!(found.iter().any(|h| h.id == copies[1]), "{found:?}");
}

/// Every audited change of a technician or admin, with the audit log made
/// to refuse appends by a trigger: each must fail and leave nothing
/// changed.
async fn an_audited_change_commits_with_its_entry_or_not_at_all(db: TestDb) {
    let store = db.store.clone();
    let entry = || AuditEntry::system("test", "", "");
    let host = enrolled_host(&store).await;
    let hook = NewWebhook {
        url: "https://hooks.example.com/".into(),
        events: vec![crate::model::TicketEvent::Opened],
        secret: "s".repeat(32),
        created_by: "admin".into(),
        route: crate::model::WebhookRoute::default(),
    };
    let hook_id = store
        .add_webhook(&hook, &|_: &i64| entry(), 0)
        .await
        .expect("add webhook");
    store
        .create_job(&ping_job(&host, "job-1", i64::MAX), 0)
        .await
        .expect("create job");
    let head = store.audit_head().await.expect("head");

    if db.url.starts_with("postgres") {
        tamper(
            &db,
            "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'the audit log refuses'; END $$"
                .into(),
        )
        .await;
        tamper(
            &db,
            "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log \
             FOR EACH ROW EXECUTE FUNCTION refuse_audit()"
                .into(),
        )
        .await;
    } else {
        tamper(
            &db,
            "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log \
             BEGIN SELECT RAISE(ABORT, 'the audit log refuses'); END"
                .into(),
        )
        .await;
    }

    store
        .set_tag(&host, "site", "berlin", &entry(), 1)
        .await
        .expect_err("tag without its audit entry");
    assert!(store.tags(&host).await.expect("tags").is_empty());

    store
        .add_webhook(&hook, &|_: &i64| entry(), 1)
        .await
        .expect_err("webhook without its audit entry");
    store
        .set_webhook_enabled(hook_id, false, &entry(), 1)
        .await
        .expect_err("pause without its audit entry");
    store
        .remove_webhook(hook_id, &entry(), 1)
        .await
        .expect_err("removal without its audit entry");
    let hooks = store.list_webhooks().await.expect("webhooks");
    assert_eq!(hooks.len(), 1);
    assert!(hooks[0].enabled);

    store
        .create_enrollment_token(
            &NewEnrollmentToken {
                id: "refused".into(),
                token_sha256: crate::secrets::token_hash("refused"),
                expires_at_ms: i64::MAX,
                uses: 1,
                created_by: "test".into(),
                relink_host: None,
            },
            &entry(),
            1,
        )
        .await
        .expect_err("enrollment token without its audit entry");
    assert!(
        !matches!(
            store.enroll(&request("refused", ""), 1, &cert).await,
            Ok(EnrollOutcome::Enrolled { .. })
        ),
        "the enrollment token whose audit failed must not exist"
    );

    store
        .create_api_token(
            &NewApiToken {
                technician_name: "mallory".into(),
                role: Role::Admin,
                token_id: "id-mallory".into(),
                token_sha256: crate::secrets::token_hash("dpt_mallory"),
                expires_at_ms: None,
            },
            &|_: &String| entry(),
            1,
        )
        .await
        .expect_err("API token without its audit entry");
    assert!(
        store
            .authenticate(&crate::secrets::token_hash("dpt_mallory"), 0)
            .await
            .expect("authenticate")
            .caller()
            .is_none()
    );

    let policy = "[[rule]]\nname = \"cpu-saturated\"\nenabled = false\n";
    store
        .apply_policy(policy, "admin", None, &|_: &PolicyRecord| entry(), 1)
        .await
        .expect_err("policy without its audit entry");
    assert_eq!(store.policy().await.expect("policy").version, 0);
    let reopened = backend::open(&db.url).await.expect("reopen");
    assert_eq!(reopened.policy().await.expect("policy").version, 0);

    store
        .cancel_job("job-1", &|_: &JobRow| entry(), 1)
        .await
        .expect_err("cancel without its audit entry");
    let job = store.job("job-1").await.expect("job").expect("exists");
    assert_eq!(job.state, "queued");
    assert!(!job.cancel_requested);

    assert_eq!(store.audit_head().await.expect("head"), head);
}

async fn presence_follows_streams_goodbyes_and_silence(db: TestDb) {
    let store = db.store.clone();
    token(&store, "t", i64::MAX, 1).await;
    let id = host_id(
        &store
            .enroll(&request("t", ""), 0, &cert)
            .await
            .expect("enroll"),
    );
    let row = |store: SharedStore, id: String| async move {
        store.find_hosts(&id).await.expect("find").remove(0)
    };
    assert!(
        !row(store.clone(), id.clone()).await.is_online(0),
        "never seen"
    );

    let session = SessionOpen {
        host_id: id.clone(),
        replica: "r1".into(),
        agent_version: "1".into(),
        health_interval_secs: 60,
        ..SessionOpen::default()
    };
    store.session_opened(&session, 1000).await.expect("open");
    assert!(
        row(store.clone(), id.clone()).await.is_online(10_000_000),
        "holds a stream"
    );

    // Another replica's close does not clear this replica's stream.
    store
        .session_closed(&id, "r2", None, 2000)
        .await
        .expect("close");
    assert!(row(store.clone(), id.clone()).await.is_online(10_000_000));

    // A lost connection: online until three intervals of silence.
    store
        .session_closed(&id, "r1", None, 2000)
        .await
        .expect("close");
    let lost = row(store.clone(), id.clone()).await;
    assert!(lost.is_online(2000 + 180_000));
    assert!(!lost.is_online(2000 + 180_001));

    // A goodbye: offline at once.
    store.session_opened(&session, 3000).await.expect("open");
    store
        .session_closed(&id, "r1", Some("sleep"), 3000)
        .await
        .expect("close");
    let gone = row(store.clone(), id.clone()).await;
    assert!(!gone.is_online(3001));
    assert_eq!(gone.goodbye_reason.as_deref(), Some("sleep"));
}

async fn what_an_agent_cannot_run_is_kept_per_host_until_its_next_hello(db: TestDb) {
    let store = db.store.clone();
    token(&store, "t", i64::MAX, 2).await;
    let mut hosts = Vec::new();
    for _ in 0..2 {
        let enrolled = store
            .enroll(&request("t", ""), 0, &cert)
            .await
            .expect("enroll");
        hosts.push(host_id(&enrolled));
    }
    let before = store.host_diagnostics(&hosts[0]).await.expect("read");
    assert_eq!(before.unavailable, [], "nothing said yet");
    let mut session = SessionOpen {
        host_id: hosts[0].clone(),
        replica: "r1".into(),
        agent_version: "1".into(),
        health_interval_secs: 60,
        catalog_version: 1,
        enabled_diagnostics: vec!["ping".into(), "traceroute".into(), "dns_lookup".into()],
        unavailable_diagnostics: vec![
            ("ping".into(), "ping is not installed".into()),
            (
                "traceroute".into(),
                "tracepath is not installed, nor, say, x".into(),
            ),
        ],
    };
    store.session_opened(&session, 1000).await.expect("open");
    let said = store.host_diagnostics(&hosts[0]).await.expect("read");
    assert_eq!(said.enabled, ["ping", "traceroute", "dns_lookup"]);
    assert_eq!(said.unavailable, session.unavailable_diagnostics);
    assert_eq!(
        said.unavailable_reason("ping"),
        Some("ping is not installed")
    );
    assert_eq!(said.unavailable_reason("dns_lookup"), None);
    let other = store.host_diagnostics(&hosts[1]).await.expect("read");
    assert_eq!(other.unavailable, [], "per host");
    // Installed since: the next Hello clears it.
    session.unavailable_diagnostics.clear();
    store.session_opened(&session, 2000).await.expect("open");
    let now = store.host_diagnostics(&hosts[0]).await.expect("read");
    assert_eq!(now.unavailable, []);
}

async fn api_tokens_authenticate_their_technician_and_keep_roles(db: TestDb) {
    let store = db.store.clone();
    let make = |name: &str, role: Role, token: &str| NewApiToken {
        technician_name: name.into(),
        role,
        token_id: uuid::Uuid::new_v4().to_string(),
        token_sha256: crate::secrets::token_hash(token),
        expires_at_ms: None,
    };
    assert!(!store.has_technicians().await.expect("count"));
    let tech = store
        .create_api_token(
            &make("tina", Role::Technician, "a"),
            &|_: &String| AuditEntry::system("test", "", ""),
            0,
        )
        .await
        .expect("create");
    let again = store
        .create_api_token(
            &make("tina", Role::Technician, "b"),
            &|_: &String| AuditEntry::system("test", "", ""),
            0,
        )
        .await
        .expect("second token");
    assert_eq!(tech, again, "the same technician gets another token");
    let clash = store
        .create_api_token(
            &make("tina", Role::Admin, "c"),
            &|_: &String| AuditEntry::system("test", "", ""),
            0,
        )
        .await;
    assert!(matches!(clash, Err(StoreError::Conflict(_))));
    let caller = store
        .authenticate(&crate::secrets::token_hash("b"), 0)
        .await
        .expect("auth")
        .caller()
        .expect("known");
    assert_eq!(
        (caller.name.as_str(), caller.role),
        ("tina", Role::Technician)
    );
    assert!(
        store
            .authenticate(&crate::secrets::token_hash("c"), 0)
            .await
            .expect("auth")
            .caller()
            .is_none()
    );
}

async fn the_fleet_ca_is_recorded_once_and_a_different_one_is_a_mismatch(db: TestDb) {
    let store = db.store.clone();
    assert_eq!(
        store.record_fleet_ca("aa").await.expect("record"),
        CaRecord::Recorded
    );
    assert_eq!(
        store.record_fleet_ca("aa").await.expect("record"),
        CaRecord::Matches
    );
    assert_eq!(
        store.record_fleet_ca("bb").await.expect("record"),
        CaRecord::Mismatch("aa".into())
    );
}

fn inventory_report(host: &str, seq: u64, facts: InventoryFacts) -> IncomingReport {
    IncomingReport {
        host_id: host.to_owned(),
        spool_id: "s".into(),
        seq,
        held_from_seq: 0,
        collected_at_ms: i64::try_from(seq).expect("small"),
        payload: ReportPayload::Inventory {
            inventory: Box::default(),
            hostname: format!("pc-{seq}"),
            os_name: "Debian GNU/Linux".into(),
            os_version: "12".into(),
            facts: Box::new(facts),
        },
    }
}

fn pkg(ecosystem: &str, name: &str, version: &str) -> PackageKey {
    PackageKey {
        ecosystem: ecosystem.into(),
        name: name.into(),
        version: version.into(),
    }
}

async fn ids(store: &SharedStore, query: &HostQuery) -> Vec<String> {
    let mut ids: Vec<String> = store
        .list_hosts(query, None, 100)
        .await
        .expect("list")
        .into_iter()
        .map(|h| h.id)
        .collect();
    ids.sort();
    ids
}

async fn fleet_queries_use_each_ecosystems_version_order_and_the_facts(db: TestDb) {
    let store = db.store.clone();
    token(&store, "t", i64::MAX, 3).await;
    let a = host_id(
        &store
            .enroll(&request("t", "a"), 0, &cert)
            .await
            .expect("enroll"),
    );
    let b = host_id(
        &store
            .enroll(&request("t", "b"), 0, &cert)
            .await
            .expect("enroll"),
    );
    let c = host_id(
        &store
            .enroll(&request("t", "c"), 0, &cert)
            .await
            .expect("enroll"),
    );
    let facts = |packages: Vec<PackageKey>, user: &str, ip: &str, free: f32| InventoryFacts {
        packages,
        facts: vec![
            ("user", user.into()),
            ("ip", ip.into()),
            ("os", "debian gnu/linux 12".into()),
            ("model", "lenovo thinkpad t14".into()),
        ],
        free: vec![("/".into(), free)],
    };
    store
        .store_reports(
            &[
                inventory_report(
                    &a,
                    1,
                    facts(
                        vec![
                            pkg("dpkg", "openssl", "3.0.11-1~deb12u2"),
                            pkg("dpkg", "firefox-esr", "115.6.0esr-1"),
                        ],
                        "alice",
                        "10.1.2.3",
                        50.0,
                    ),
                ),
                inventory_report(
                    &b,
                    2,
                    facts(
                        vec![pkg("dpkg", "openssl", "3.0.13-1~deb12u1")],
                        "bob",
                        "10.1.2.4",
                        5.0,
                    ),
                ),
                inventory_report(
                    &c,
                    3,
                    facts(
                        vec![pkg("rpm", "openssl", "1:3.0.7-24.el9")],
                        "carol",
                        "10.1.2.5",
                        80.0,
                    ),
                ),
            ],
            10,
        )
        .await
        .expect("store");
    let soft = |name: &str, op: Option<(VersionOp, &str)>| HostQuery {
        software: Some((name.into(), op.map(|(o, v)| (o, v.to_owned())))),
        ..HostQuery::default()
    };
    // Debian: 3.0.11-1~deb12u2 < 3.0.13; RPM: 1:3.0.7 has an epoch, so it is newer.
    assert_eq!(
        ids(&store, &soft("openssl", Some((VersionOp::Less, "3.0.13")))).await,
        vec![a.clone()]
    );
    let mut all = vec![a.clone(), b.clone(), c.clone()];
    all.sort();
    assert_eq!(
        ids(&store, &soft("openssl", Some((VersionOp::Less, "2:0")))).await,
        all
    );
    assert_eq!(
        ids(&store, &soft("firefox-esr", None)).await,
        vec![a.clone()]
    );
    assert!(ids(&store, &soft("nothing", None)).await.is_empty());
    let q = |f: fn(&mut HostQuery)| {
        let mut q = HostQuery::default();
        f(&mut q);
        q
    };
    assert_eq!(
        ids(&store, &q(|q| q.user = Some("bob".into()))).await,
        vec![b.clone()]
    );
    assert_eq!(
        ids(&store, &q(|q| q.ip = Some("10.1.2.5".into()))).await,
        vec![c.clone()]
    );
    assert_eq!(
        ids(&store, &q(|q| q.disk_free_below = Some(10.0))).await,
        vec![b.clone()]
    );
    assert_eq!(
        ids(&store, &q(|q| q.model = Some("thinkpad".into())))
            .await
            .len(),
        3
    );
    assert_eq!(
        ids(&store, &q(|q| q.os = Some("gnu/linux 12".into())))
            .await
            .len(),
        3
    );

    // A new inventory replaces the software: openssl upgraded on a.
    store
        .store_reports(
            &[inventory_report(
                &a,
                4,
                facts(
                    vec![pkg("dpkg", "openssl", "3.0.13-1~deb12u1")],
                    "alice",
                    "10.1.2.3",
                    50.0,
                ),
            )],
            20,
        )
        .await
        .expect("store");
    assert!(
        ids(&store, &soft("openssl", Some((VersionOp::Less, "3.0.13"))))
            .await
            .is_empty()
    );
    assert!(
        ids(&store, &soft("firefox-esr", None)).await.is_empty(),
        "removed packages leave"
    );

    // Tags.
    store
        .set_tag(&b, "site", "berlin", &AuditEntry::system("test", "", ""), 0)
        .await
        .expect("tag");
    assert_eq!(
        ids(
            &store,
            &q(|q| q.tags = vec![("site".into(), "berlin".into())])
        )
        .await,
        vec![b.clone()]
    );
    store
        .set_tag(&b, "site", "", &AuditEntry::system("test", "", ""), 0)
        .await
        .expect("untag");
    assert!(store.tags(&b).await.expect("tags").is_empty());

    // Offline: never seen is offline; a stream makes it online.
    let offline = q(|q| q.offline_at_ms = Some(1_000_000));
    assert_eq!(ids(&store, &offline).await.len(), 3);
    store
        .session_opened(
            &SessionOpen {
                host_id: a.clone(),
                replica: "r".into(),
                agent_version: "1".into(),
                health_interval_secs: 60,
                ..SessionOpen::default()
            },
            1_000_000,
        )
        .await
        .expect("open");
    assert!(!ids(&store, &offline).await.contains(&a));
}

/// Applies `text` as the policy at `at_ms`, audited as the system; it
/// must be valid.
async fn apply_valid_policy(
    store: &SharedStore,
    text: &str,
    at_ms: i64,
) -> std::sync::Arc<PolicyRecord> {
    store
        .apply_policy(
            text,
            "admin",
            None,
            &|_: &PolicyRecord| AuditEntry::system("test", "", ""),
            at_ms,
        )
        .await
        .expect("store")
        .expect("valid")
}

async fn enrolled_host(store: &SharedStore) -> String {
    token(store, "h", i64::MAX, 1).await;
    host_id(
        &store
            .enroll(&request("h", ""), 0, &cert)
            .await
            .expect("enroll"),
    )
}

fn health_report(host: &str, seq: u64, at_ms: i64, cpu: f32, disk: f32) -> IncomingReport {
    IncomingReport {
        host_id: host.to_owned(),
        spool_id: "s".into(),
        seq,
        held_from_seq: 0,
        collected_at_ms: at_ms,
        payload: health_payload(
            Vec::new(),
            HealthReading {
                cpu_percent: cpu,
                memory_used_percent: 50.0,
                disk_used_max_percent: disk,
                // The second sample of a run reports no sensor.
                temperature_max_celsius: (seq != 2).then_some(40.0 + cpu / 10.0),
            },
        ),
    }
}

/// A health payload whose rule readings follow from its history reading
/// and free space, as `facts::health_readings` makes them from a sample.
fn health_payload(free: Vec<(String, f32)>, reading: HealthReading) -> ReportPayload {
    use crate::rules::model::Metric;
    let mut readings = vec![
        (
            Metric::CpuPercent,
            String::new(),
            f64::from(reading.cpu_percent),
        ),
        (
            Metric::MemoryUsedPercent,
            String::new(),
            f64::from(reading.memory_used_percent),
        ),
    ];
    readings.extend(free.iter().map(|(mount, free)| {
        (
            Metric::DiskUsedPercent,
            mount.clone(),
            f64::from(100.0 - free),
        )
    }));
    ReportPayload::Health {
        encoded: Vec::new(),
        free,
        reading,
        readings,
    }
}

async fn health_history_is_downsampled_to_hours_then_purged(db: TestDb) {
    let store = db.store.clone();
    let id = enrolled_host(&store).await;
    let hour = 3_600_000;
    // Two hours of samples every 20 minutes, from hour 10 on.
    let reports: Vec<IncomingReport> = (0..6)
        .map(|i| {
            health_report(
                &id,
                i + 1,
                10 * hour + i64::try_from(i).expect("small") * 20 * 60_000,
                10.0 * (i + 1) as f32,
                60.0 + i as f32,
            )
        })
        .collect();
    let outcomes = store.store_reports(&reports, 0).await.expect("store");
    assert!(outcomes.iter().all(|o| *o == ReportOutcome::Stored));
    let raw = store.health_history(&id, 0).await.expect("history");
    assert_eq!(raw.len(), 6);
    assert!(raw.iter().all(|p| p.resolution_s == 0 && p.samples == 1));
    assert_eq!(raw[0].temperature_max_celsius, Some(41.0));
    assert_eq!(raw[1].temperature_max_celsius, None, "no sensor is not 0");

    // Fold everything before 11:30: only hour 10 is whole.
    let (folded, purged) = store
        .downsample_health(11 * hour + hour / 2, 0)
        .await
        .expect("downsample");
    assert_eq!((folded, purged), (3, 0));
    let history = store.health_history(&id, 0).await.expect("history");
    assert_eq!(history.len(), 4, "{history:?}");
    let hourly = &history[0];
    assert_eq!(
        (hourly.at_ms, hourly.resolution_s, hourly.samples),
        (10 * hour, 3600, 3)
    );
    assert!(
        (hourly.cpu_percent - 20.0).abs() < 0.01,
        "average of 10, 20, 30"
    );
    assert!((hourly.cpu_max_percent - 30.0).abs() < 0.01);
    assert!((hourly.disk_used_max_percent - 62.0).abs() < 0.01);
    assert_eq!(
        hourly.temperature_max_celsius,
        Some(43.0),
        "the hottest of 41, none and 43"
    );

    // Folding again adds nothing twice; purging drops the old hour.
    assert_eq!(
        store.downsample_health(11 * hour, 0).await.expect("again"),
        (0, 0)
    );
    let (_, purged) = store
        .downsample_health(11 * hour, 11 * hour)
        .await
        .expect("purge");
    assert_eq!(purged, 1);
    assert_eq!(
        store.health_history(&id, 0).await.expect("history").len(),
        3
    );
    assert_eq!(
        store
            .health_history(&id, 11 * hour + 10 * 60_000)
            .await
            .expect("window")
            .len(),
        2,
        "the window starts where asked"
    );
}

async fn deltas_that_do_not_fit_ask_for_a_resync_and_changes_are_logged(db: TestDb) {
    use deskpulse_proto::v1::{Inventory, OsInfo, Package, SoftwareInfo};
    use prost::Message;

    let store = db.store.clone();
    let id = enrolled_host(&store).await;
    let inventory = |version: &str| {
        let mut inv = Inventory {
            os: Some(OsInfo {
                hostname: "pc-1".into(),
                ..OsInfo::default()
            }),
            software: Some(SoftwareInfo {
                packages: vec![Package {
                    ecosystem: "dpkg".into(),
                    name: "openssl".into(),
                    version: version.into(),
                    arch: "amd64".into(),
                    ..Package::default()
                }],
                ..SoftwareInfo::default()
            }),
            ..Inventory::default()
        };
        deskpulse_proto::delta::canonicalize(&mut inv);
        inv
    };
    let report = |seq: u64, payload: ReportPayload| IncomingReport {
        host_id: id.clone(),
        spool_id: "s".into(),
        seq,
        held_from_seq: 0,
        collected_at_ms: i64::try_from(seq).expect("small") * 1000,
        payload,
    };
    let delta = |from: &Inventory, to: &Inventory| ReportPayload::InventoryDelta {
        delta: Box::new(deskpulse_proto::delta::diff(from, to)),
    };
    let (v1, v2, v3) = (
        inventory("3.0.11-1"),
        inventory("3.0.13-1"),
        inventory("3.0.15-1"),
    );

    // A delta before any inventory: nothing to apply it to.
    let out = store
        .store_reports(&[report(1, delta(&v1, &v2))], 0)
        .await
        .expect("store");
    assert!(
        matches!(&out[0], ReportOutcome::Resync(why) if why.contains("no inventory")),
        "{out:?}"
    );

    let full = ReportPayload::Inventory {
        inventory: Box::new(v1.clone()),
        hostname: "pc-1".into(),
        os_name: String::new(),
        os_version: String::new(),
        facts: Box::default(),
    };
    let out = store
        .store_reports(&[report(2, full), report(3, delta(&v1, &v2))], 0)
        .await
        .expect("store");
    assert_eq!(out, [ReportOutcome::Stored, ReportOutcome::Stored]);
    // The same delta again is a duplicate; one from the wrong base resyncs.
    let out = store
        .store_reports(&[report(3, delta(&v1, &v2)), report(4, delta(&v1, &v3))], 0)
        .await
        .expect("store");
    assert_eq!(out[0], ReportOutcome::Duplicate);
    assert!(
        matches!(&out[1], ReportOutcome::Resync(why) if why.contains("base")),
        "{out:?}"
    );

    let detail = store.host_detail(&id).await.expect("detail").expect("host");
    let stored =
        Inventory::decode(detail.inventory.expect("inventory").0.as_slice()).expect("decode");
    assert_eq!(stored, v2);

    let changes = store
        .list_changes(&ChangeQuery {
            host_id: Some(id.clone()),
            since_ms: 0,
            sections: vec!["software".into()],
            limit: 10,
        })
        .await
        .expect("changes");
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].item, "package dpkg/openssl:amd64");
    assert_eq!(
        (
            changes[0].old_value.as_deref(),
            changes[0].new_value.as_deref()
        ),
        (Some("3.0.11-1"), Some("3.0.13-1"))
    );
    let all = store
        .list_changes(&ChangeQuery {
            limit: 10,
            ..ChangeQuery::default()
        })
        .await
        .expect("changes");
    assert_eq!(all.len(), 2, "the baseline and the upgrade: {all:?}");
    assert_eq!(all[1].section, "inventory");
    assert_eq!(store.purge_changes(2_500).await.expect("purge"), 1);
}

fn disk_sample(host: &str, seq: u64, at_ms: i64, used: f32) -> IncomingReport {
    IncomingReport {
        host_id: host.to_owned(),
        spool_id: "rules".into(),
        seq,
        held_from_seq: 0,
        collected_at_ms: at_ms,
        payload: health_payload(
            vec![("/".into(), 100.0 - used), ("/boot".into(), 70.0)],
            HealthReading {
                cpu_percent: 5.0,
                memory_used_percent: 40.0,
                disk_used_max_percent: used,
                temperature_max_celsius: None,
            },
        ),
    }
}

async fn a_full_disk_opens_one_ticket_resolves_after_quiet_and_reopens(db: TestDb) {
    let store = db.store.clone();
    let id = enrolled_host(&store).await;
    store
        .set_tag(
            &id,
            "criticality",
            "high",
            &AuditEntry::system("test", "", ""),
            0,
        )
        .await
        .expect("tag");
    let min = 60_000;
    let open = TicketQuery {
        open_only: true,
        limit: 10,
        ..TicketQuery::default()
    };
    // 95 % for 12 minutes: disk-full (> 90 for 10 min) fires once; the
    // disk-almost-full rule (> 80 for 1 h) is still pending.
    for m in 0..12u64 {
        let at = i64::try_from(m).expect("small") * min;
        store
            .store_reports(&[disk_sample(&id, m + 1, at, 95.0)], at)
            .await
            .expect("store");
    }
    let tickets = store.list_tickets(&open).await.expect("list");
    assert_eq!(tickets.len(), 1, "{tickets:?}");
    let ticket = &tickets[0];
    assert_eq!(
        (ticket.rule.as_str(), ticket.subject.as_str()),
        ("disk-full", "/")
    );
    assert_eq!(ticket.priority, "P1", "high impact x high severity");
    assert_eq!(ticket.status, "new");
    assert_eq!(ticket.title, "disk-full: / is 95% full");
    assert_eq!(ticket.occurrences, 1);
    assert!(
        ticket.evidence.contains("\"value\":95"),
        "{}",
        ticket.evidence
    );

    // Inside the hysteresis band (between 85 and 90): nothing changes.
    store
        .store_reports(&[disk_sample(&id, 20, 12 * min, 88.0)], 12 * min)
        .await
        .expect("store");
    assert_eq!(
        store.advance_rule_timers(40 * min).await.expect("timers"),
        0
    );
    // Recovered, then the quiet period (15 min) passes with no sample.
    store
        .store_reports(&[disk_sample(&id, 21, 13 * min, 50.0)], 13 * min)
        .await
        .expect("store");
    assert_eq!(
        store.advance_rule_timers(20 * min).await.expect("timers"),
        0
    );
    assert_eq!(
        store.advance_rule_timers(29 * min).await.expect("timers"),
        1
    );
    assert!(store.list_tickets(&open).await.expect("list").is_empty());
    let all = TicketQuery {
        limit: 10,
        ..TicketQuery::default()
    };
    let resolved = store.list_tickets(&all).await.expect("list");
    assert_eq!(resolved[0].status, "resolved");
    assert_eq!(resolved[0].resolution.as_deref(), Some(AUTO_RESOLUTION));
    // It only recovered by itself: the knowledge base leaves it out unless
    // asked (issue 21).
    let full = ["full".to_owned()];
    assert!(
        store
            .search_kb(&full, 10, false)
            .await
            .expect("search")
            .is_empty()
    );
    let asked = store.search_kb(&full, 10, true).await.expect("search");
    assert_eq!(
        asked.iter().map(|h| h.ticket_id).collect::<Vec<_>>(),
        [ticket.id]
    );

    // Fires again within the reopen window: the same ticket, one flap.
    for m in 30..42u64 {
        let at = i64::try_from(m).expect("small") * min;
        store
            .store_reports(&[disk_sample(&id, 100 + m, at, 97.0)], at)
            .await
            .expect("store");
    }
    let reopened = store.list_tickets(&open).await.expect("list");
    assert_eq!(reopened.len(), 1);
    assert_eq!(reopened[0].id, ticket.id);
    assert_eq!(
        (reopened[0].status.as_str(), reopened[0].flaps),
        ("open", 1)
    );
    // Reopened: the title shows the value that fired it again, and the old
    // resolution is no longer current (issue 21).
    assert_eq!(reopened[0].title, "disk-full: / is 97% full");
    assert_eq!(reopened[0].resolution, None);
}

/// Durations print as the policy wrote them (issue 21): a 20 s rule's
/// worklog says `for 20s`, a 30 s quiet period `for 30s`, never `0 min`;
/// the reading is rounded for people and exact in the evidence.
async fn a_rule_in_seconds_says_its_seconds_in_the_worklog(db: TestDb) {
    let store = db.store.clone();
    let text = r#"
[tickets]
quiet = "30s"

[[rule]]
name = "disk-full"
metric = "disk_used_percent"
op = ">"
threshold = 90
recover = 85
for = "20s"
severity = "high"
"#;
    apply_valid_policy(&store, text, 1).await;
    let id = enrolled_host(&store).await;
    let s = 1_000;
    for (seq, at) in [(1, 0), (2, 10 * s), (3, 25 * s)] {
        store
            .store_reports(&[disk_sample(&id, seq, at, 95.37)], at)
            .await
            .expect("store");
    }
    let tickets = store.list_tickets(&open_tickets()).await.expect("list");
    assert_eq!(tickets.len(), 1, "{tickets:?}");
    assert_eq!(tickets[0].title, "disk-full: / is 95.4% full");
    assert!(
        tickets[0].evidence.contains("\"value\":95.37"),
        "exact in JSON: {}",
        tickets[0].evidence
    );
    store
        .store_reports(&[disk_sample(&id, 4, 30 * s, 50.0)], 30 * s)
        .await
        .expect("store");
    assert_eq!(
        store.advance_rule_timers(61 * s).await.expect("timers"),
        1,
        "resolved 30 s after recovering"
    );
    let (_, worklog) = store
        .ticket(tickets[0].id)
        .await
        .expect("ticket")
        .expect("found");
    let notes: Vec<&str> = worklog.iter().map(|w| w.note.as_str()).collect();
    assert_eq!(
        notes,
        [
            "opened by rule disk-full: disk_used_percent > 90 for 20s (value 95.4%)",
            "auto-resolved: the condition recovered and stayed recovered for 30s",
        ]
    );
}

async fn the_ticket_workflow_meets_response_pauses_while_waiting_and_escalates(db: TestDb) {
    let store = db.store.clone();
    let id = enrolled_host(&store).await;
    let t0 = 1_000_000;
    let min = 60_000;
    let ticket = store
        .create_ticket(
            &id,
            "Outlook keeps crashing",
            None,
            "alice",
            &AuditEntry::system("", "", ""),
            t0,
        )
        .await
        .expect("create");
    assert_eq!(
        (ticket.status.as_str(), ticket.priority.as_str()),
        ("new", "P3")
    );
    assert_eq!(ticket.responded_at_ms, None);

    // Nobody responds within the P3 target (4 h): escalated once, not twice.
    assert_eq!(store.advance_sla(t0 + 5 * 60 * min).await.expect("sla"), 1);
    assert_eq!(store.advance_sla(t0 + 6 * 60 * min).await.expect("sla"), 0);
    let (row, log) = store.ticket(ticket.id).await.expect("get").expect("some");
    assert_eq!(row.escalation, 1);
    assert!(
        log.iter()
            .any(|e| e.note.contains("SLA response target missed")),
        "{log:?}"
    );

    let change = |c: TicketChange, at: i64| {
        let store = store.clone();
        async move {
            store
                .update_ticket(
                    ticket.id,
                    &c,
                    "bob",
                    &crate::store::AuditEntry::system("test", "", ""),
                    at,
                )
                .await
                .expect("update")
        }
    };
    technician(&store, "bob", Role::Technician).await;
    let assigned = change(TicketChange::Assign("bob".into()), t0 + 7 * 60 * min)
        .await
        .expect("assign");
    assert_eq!(assigned.status, "open", "assigning a new ticket opens it");
    assert_eq!(assigned.responded_at_ms, Some(t0 + 7 * 60 * min));
    let due = assigned.resolution_due_ms;
    change(TicketChange::Status("waiting".into()), t0 + 8 * 60 * min)
        .await
        .expect("waiting");
    let resumed = change(
        TicketChange::Status("in_progress".into()),
        t0 + 10 * 60 * min,
    )
    .await
    .expect("resume");
    assert_eq!(
        resumed.resolution_due_ms,
        due + 2 * 60 * min,
        "waiting paused the clock"
    );

    let refused = change(TicketChange::Status("done".into()), t0).await;
    assert!(matches!(refused, Err(TicketRefusal::Invalid(ref m)) if m.contains("unknown status")));
    let refused = change(TicketChange::Reopen, t0).await;
    assert!(matches!(refused, Err(TicketRefusal::Invalid(_))));
    let resolved = change(
        TicketChange::Resolve("reinstalled the Outlook add-in".into()),
        t0 + 11 * 60 * min,
    )
    .await
    .expect("resolve");
    assert_eq!(resolved.status, "resolved");
    assert_eq!(
        resolved.resolution.as_deref(),
        Some("reinstalled the Outlook add-in")
    );
    let reopened = change(TicketChange::Reopen, t0 + 12 * 60 * min)
        .await
        .expect("reopen");
    assert_eq!(reopened.status, "open");
    assert_eq!(
        store
            .update_ticket(
                9999,
                &TicketChange::Escalate,
                "bob",
                &crate::store::AuditEntry::system("test", "", ""),
                t0
            )
            .await
            .expect("update"),
        Err(TicketRefusal::NotFound)
    );

    // A resolved ticket closes once the reopen window (24 h) has passed.
    change(TicketChange::Resolve("again".into()), t0 + 13 * 60 * min)
        .await
        .expect("resolve");
    store
        .advance_sla(t0 + 13 * 60 * min + 25 * 60 * min * 60)
        .await
        .expect("sla");
    let (row, log) = store.ticket(ticket.id).await.expect("get").expect("some");
    assert_eq!(row.status, "closed");
    let authors: Vec<&str> = log.iter().map(|e| e.author.as_str()).collect();
    assert_eq!(authors.first(), Some(&"alice"));
    assert!(authors.contains(&"system") && authors.contains(&"bob"));
}

/// A full inventory report carrying a real encoded inventory, with the
/// facts taken from it as the server does at the boundary.
fn full_inventory(
    host: &str,
    seq: u64,
    at_ms: i64,
    inv: &deskpulse_proto::v1::Inventory,
) -> IncomingReport {
    IncomingReport {
        host_id: host.to_owned(),
        spool_id: "inv".into(),
        seq,
        held_from_seq: 0,
        collected_at_ms: at_ms,
        payload: ReportPayload::Inventory {
            inventory: Box::new(inv.clone()),
            hostname: "pc-1".into(),
            os_name: "Debian GNU/Linux".into(),
            os_version: "12".into(),
            facts: Box::new(crate::facts::inventory_facts(inv)),
        },
    }
}

fn open_tickets() -> TicketQuery {
    TicketQuery {
        open_only: true,
        limit: 50,
        ..TicketQuery::default()
    }
}

async fn an_always_on_host_that_goes_silent_gets_one_offline_ticket_and_a_laptop_none(db: TestDb) {
    use deskpulse_proto::v1::{Inventory, SystemInfo};
    let store = db.store.clone();
    let min = 60_000;
    let desktop = enrolled_host(&store).await;
    token(&store, "l", i64::MAX, 1).await;
    let laptop = host_id(
        &store
            .enroll(&request("l", "laptop-uuid"), 0, &cert)
            .await
            .expect("enroll"),
    );
    for (host, chassis) in [(&desktop, "desktop"), (&laptop, "notebook")] {
        let inv = Inventory {
            system: Some(SystemInfo {
                chassis_type: chassis.into(),
                ..SystemInfo::default()
            }),
            ..Inventory::default()
        };
        store
            .store_reports(&[full_inventory(host, 1, 0, &inv)], 0)
            .await
            .expect("store");
    }
    // Seen at 0 with a 60 s interval: online for 3 min, then offline; the
    // offline rule (> 10 min) fires once the silence passes 10 minutes.
    assert_eq!(store.advance_rule_timers(9 * min).await.expect("timers"), 0);
    assert_eq!(
        store.advance_rule_timers(11 * min).await.expect("timers"),
        1
    );
    assert_eq!(
        store.advance_rule_timers(12 * min).await.expect("timers"),
        0
    );
    let tickets = store.list_tickets(&open_tickets()).await.expect("list");
    assert_eq!(tickets.len(), 1, "{tickets:?}");
    assert_eq!(
        (tickets[0].host_id.as_str(), tickets[0].rule.as_str()),
        (desktop.as_str(), "offline")
    );
    assert_eq!(tickets[0].title, "offline: offline for 11 min");

    // The laptop tagged always-on gets one too; always-on=no opts out.
    store
        .set_tag(
            &laptop,
            "always-on",
            "yes",
            &AuditEntry::system("test", "", ""),
            0,
        )
        .await
        .expect("tag");
    store.advance_rule_timers(13 * min).await.expect("timers");
    assert_eq!(
        store
            .list_tickets(&open_tickets())
            .await
            .expect("list")
            .len(),
        2
    );

    // The desktop comes back: the ticket resolves after the quiet period.
    store
        .session_opened(
            &SessionOpen {
                host_id: desktop.clone(),
                replica: "r1".into(),
                agent_version: "0.1.0".into(),
                health_interval_secs: 60,
                ..SessionOpen::default()
            },
            14 * min,
        )
        .await
        .expect("session");
    store.advance_rule_timers(15 * min).await.expect("timers");
    store.advance_rule_timers(31 * min).await.expect("timers");
    let open: Vec<String> = store
        .list_tickets(&open_tickets())
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.host_id)
        .collect();
    assert_eq!(
        open,
        std::slice::from_ref(&laptop),
        "the desktop's ticket auto-resolved"
    );
}

/// A host whose first inventory, at 0, says it is a desktop: always on,
/// so the offline rule watches it (D18). Its report's seq is 1.
async fn desktop_host(store: &SharedStore) -> String {
    use deskpulse_proto::v1::{Inventory, SystemInfo};
    let desktop = enrolled_host(store).await;
    let inv = Inventory {
        system: Some(SystemInfo {
            chassis_type: "desktop".into(),
            ..SystemInfo::default()
        }),
        ..Inventory::default()
    };
    store
        .store_reports(&[full_inventory(&desktop, 1, 0, &inv)], 0)
        .await
        .expect("store");
    desktop
}

async fn the_next_timer_is_read_from_the_store_and_fires_at_its_due_time(db: TestDb) {
    let store = db.store.clone();
    let min = 60_000;
    let quiet = 15 * min;
    assert_eq!(store.next_timer_due(0).await.expect("due"), None);
    let desktop = desktop_host(&store).await;
    assert_eq!(
        store.advance_rule_timers(11 * min).await.expect("timers"),
        1
    );
    let ticket = store.list_tickets(&open_tickets()).await.expect("list")[0].clone();
    // Nothing due before the offline ticket's SLA response target.
    let due = store.next_timer_due(11 * min).await.expect("due");
    assert_eq!(due, Some(ticket.response_due_ms + 1));

    // The desktop streams again: due at once. The pass between sweeps
    // starts its quiet period then, and resolves it when it ends, to the
    // millisecond.
    let back = 11 * min + 20_000;
    store
        .session_opened(
            &SessionOpen {
                host_id: desktop.clone(),
                replica: "r1".into(),
                agent_version: "0.1.0".into(),
                health_interval_secs: 60,
                ..SessionOpen::default()
            },
            back,
        )
        .await
        .expect("session");
    assert_eq!(store.next_timer_due(back).await.expect("due"), Some(back));
    store.advance_due_rule_timers(back).await.expect("timers");
    let due = store.next_timer_due(back).await.expect("due");
    assert_eq!(due, Some((back + quiet).min(ticket.response_due_ms + 1)));
    assert_eq!(
        store
            .advance_due_rule_timers(back + quiet - 1)
            .await
            .expect("timers"),
        0
    );
    assert_eq!(
        store
            .advance_due_rule_timers(back + quiet)
            .await
            .expect("timers"),
        1
    );
    assert!(
        store
            .list_tickets(&open_tickets())
            .await
            .expect("list")
            .is_empty()
    );
}

async fn inventory_changes_open_tickets_once_and_the_first_inventory_none(db: TestDb) {
    use deskpulse_proto::v1::{Inventory, LocalUser, MemoryInfo, UsersInfo};
    let store = db.store.clone();
    let id = enrolled_host(&store).await;
    let pc = |gib: u64, admins: &[&str]| Inventory {
        memory: Some(MemoryInfo {
            total_bytes: gib << 30,
            ..MemoryInfo::default()
        }),
        users: Some(UsersInfo {
            users: admins
                .iter()
                .map(|n| LocalUser {
                    name: (*n).into(),
                    admin: true,
                    ..LocalUser::default()
                })
                .collect(),
            ..UsersInfo::default()
        }),
        ..Inventory::default()
    };
    let mut seq = 0;
    let mut send = async |inv: Inventory, at: i64| {
        seq += 1;
        store
            .store_reports(&[full_inventory(&id, seq, at, &inv)], at)
            .await
            .expect("store");
    };
    send(pc(16, &["root"]), 1_000).await; // a baseline fires nothing
    assert!(
        store
            .list_tickets(&open_tickets())
            .await
            .expect("list")
            .is_empty()
    );
    send(pc(16, &["root"]), 2_000).await;
    assert!(
        store
            .list_tickets(&open_tickets())
            .await
            .expect("list")
            .is_empty()
    );
    send(pc(8, &["root", "mallory"]), 3_000).await;
    let mut tickets = store.list_tickets(&open_tickets()).await.expect("list");
    tickets.sort_by(|a, b| a.rule.cmp(&b.rule));
    let seen: Vec<(&str, &str, &str)> = tickets
        .iter()
        .map(|t| (t.rule.as_str(), t.subject.as_str(), t.priority.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("memory-decreased", "", "P2"),
            ("new-local-admin", "mallory", "P2")
        ]
    );
    assert!(
        tickets[0].evidence.contains("16.0 GiB -> 8.0 GiB"),
        "{}",
        tickets[0].evidence
    );
    // The same change again counts an occurrence on the open ticket.
    send(pc(16, &["root"]), 4_000).await;
    send(pc(8, &["root"]), 5_000).await;
    let again = store.list_tickets(&open_tickets()).await.expect("list");
    assert_eq!(again.len(), 2);
    let memory = again
        .iter()
        .find(|t| t.rule == "memory-decreased")
        .expect("memory");
    assert_eq!(memory.occurrences, 2);
}

async fn an_employee_report_opens_a_ticket_with_its_sample_and_is_stored_once(db: TestDb) {
    let store = db.store.clone();
    let id = enrolled_host(&store).await;
    let issue = IncomingReport {
        host_id: id.clone(),
        spool_id: "s".into(),
        seq: 7,
        held_from_seq: 0,
        collected_at_ms: 5_000,
        payload: ReportPayload::UserIssue {
            text: "Outlook keeps crashing\nsince this morning".into(),
            os_user: "alice".into(),
            report_key: None,
            health: serde_json::json!({"cpu_percent": 97.0}),
            reporter_email: None,
        },
    };
    store
        .store_reports(std::slice::from_ref(&issue), 6_000)
        .await
        .expect("store");
    // A resend after a lost acknowledgement is the same report (D14).
    store.store_reports(&[issue], 7_000).await.expect("store");
    let tickets = store.list_tickets(&open_tickets()).await.expect("list");
    assert_eq!(tickets.len(), 1);
    let t = &tickets[0];
    assert_eq!(t.title, "reported by alice: Outlook keeps crashing");
    assert_eq!(t.rule, "user-report");
    let evidence: serde_json::Value = serde_json::from_str(&t.evidence).expect("json");
    assert_eq!(evidence["reported_by"], "alice");
    assert_eq!(evidence["health"]["cpu_percent"], 97.0);
    let (_, log) = store.ticket(t.id).await.expect("get").expect("exists");
    assert_eq!(log[0].author, "alice");
}

/// Issue 20: a report sent again after the agent's spool was rolled back
/// comes under a seq whose received key the collector has forgotten, but
/// with the key the employee's report was made with; that raises nothing.
async fn a_report_key_raises_one_ticket_even_from_a_rolled_back_spool(db: TestDb) {
    use crate::store::sql::tickets::USER_REPORT_KEY_RETENTION_MS;
    let store = db.store.clone();
    let id = enrolled_host(&store).await;
    let key = "0b5f8a7e-3c1d-4e2a-9f60-2d7c1a9b4e11";
    let issue = |seq: u64, held_from_seq: u64, report_key: Option<&str>| IncomingReport {
        host_id: id.clone(),
        spool_id: "s".into(),
        seq,
        held_from_seq,
        collected_at_ms: 5_000,
        payload: ReportPayload::UserIssue {
            // Texts differ by seq: the same text would fold into its open
            // ticket, which is not what this test is about.
            text: format!("The printer eats paper ({seq})"),
            os_user: "alice".into(),
            report_key: report_key.map(str::to_owned),
            health: serde_json::Value::Null,
            reporter_email: None,
        },
    };
    let count = || async {
        store
            .list_tickets(&TicketQuery {
                rule: Some("user-report".into()),
                ..open_tickets()
            })
            .await
            .expect("list")
            .len()
    };
    store
        .store_reports(&[issue(1, 1, Some(key))], 6_000)
        .await
        .expect("store");
    // Acknowledged; the spool moves on, so the collector forgets seq 1.
    store
        .store_reports(
            &[issue(2, 2, Some("9d1e6a52-8f3b-4c07-b1a4-6e2f0c8d7a33"))],
            7_000,
        )
        .await
        .expect("store");
    assert_eq!(count().await, 2);
    // The state dir restored from before the acknowledgement: seq 1 again.
    store
        .store_reports(&[issue(1, 1, Some(key))], 8_000)
        .await
        .expect("store");
    assert_eq!(
        count().await,
        2,
        "the rolled-back report raised a second ticket"
    );
    // An older agent sends no key: every report raises a ticket, as before.
    store
        .store_reports(&[issue(3, 3, None)], 9_000)
        .await
        .expect("store");
    store
        .store_reports(&[issue(4, 4, None)], 9_500)
        .await
        .expect("store");
    assert_eq!(count().await, 4);
    // A key is forgotten a year on, when the host next reports.
    let later = 6_000 + USER_REPORT_KEY_RETENTION_MS + 1;
    store
        .store_reports(&[issue(5, 5, Some(key))], later)
        .await
        .expect("store");
    assert_eq!(count().await, 5);
}

async fn the_same_report_text_from_a_host_counts_on_its_open_ticket(db: TestDb) {
    let store = db.store.clone();
    let id = enrolled_host(&store).await;
    let report = |seq: u64, user: &str, text: &str| IncomingReport {
        host_id: id.clone(),
        spool_id: "s".into(),
        seq,
        held_from_seq: 0,
        collected_at_ms: 5_000,
        payload: ReportPayload::UserIssue {
            text: text.into(),
            os_user: user.into(),
            report_key: None,
            health: serde_json::Value::Null,
            reporter_email: None,
        },
    };
    // The attack: one host sends the same text 500 times, under users it
    // chose, in one batch.
    let flood: Vec<_> = (1..=500)
        .map(|seq| report(seq, &format!("user{seq}"), "printer on fire"))
        .collect();
    store.store_reports(&flood, 6_000).await.expect("store");
    store
        .store_reports(&[report(501, "bob", "printer on fire")], 7_000)
        .await
        .expect("store");
    store
        .store_reports(&[report(502, "bob", "VPN drops")], 8_000)
        .await
        .expect("store");
    let tickets = store.list_tickets(&open_tickets()).await.expect("list");
    assert_eq!(tickets.len(), 2, "{tickets:?}");
    let printer = tickets
        .iter()
        .find(|t| t.title.contains("printer on fire"))
        .expect("the printer ticket");
    assert_eq!(printer.occurrences, 501);
    let (_, log) = store
        .ticket(printer.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(log.len(), 501);
    assert_eq!(log[500].author, "bob");
    assert_eq!(log[500].note, "reported again from the PC by bob");
}

async fn an_applied_policy_is_kept_across_restarts_and_drives_evaluation(db: TestDb) {
    let TestDb {
        url, store, _dir, ..
    } = db;
    assert_eq!(store.policy().await.expect("policy").version, 0);
    let refused = store
        .apply_policy(
            "[[rule]]\nname = \"x\"\n",
            "admin",
            None,
            &|_: &PolicyRecord| AuditEntry::system("test", "", ""),
            1,
        )
        .await
        .expect("store");
    assert_eq!(
        refused.expect_err("bad").as_str(),
        "line 1: rule x: metric is required"
    );
    let text = r#"
[sla.P3]
response = "1h"
resolution = "10h"

[business_hours]
timezone = "UTC"
days = ["mon", "tue", "wed", "thu", "fri"]
hours = "09:00-17:00"

[[rule]]
name = "disk-full"
metric = "disk_used_percent"
op = ">"
threshold = 50
recover = 40
severity = "medium"
"#;
    let applied = apply_valid_policy(&store, text, 2).await;
    assert_eq!(applied.version, 1);
    // A file checked against the defaults (version 0) by a second admin
    // is refused now that version 1 is in force; nothing is written.
    let stale = store
        .apply_policy(
            text,
            "other-admin",
            Some(0),
            &|_: &PolicyRecord| AuditEntry::system("test", "", ""),
            3,
        )
        .await
        .expect("store");
    assert_eq!(
        stale.expect_err("stale").as_str(),
        "policy version 1 was applied while this file was checked against version 0; run the command again"
    );
    assert_eq!(store.policy().await.expect("policy").version, 1);
    drop(store);

    let store = backend::open(&url).await.expect("reopen");
    let record = store.policy().await.expect("policy");
    assert_eq!((record.version, record.applied_by.as_str()), (1, "admin"));
    let id = enrolled_host(&store).await;
    // Monday 2026-12-07 16:00Z: 60 % full fires the stricter disk-full at
    // once (no duration); P3 resolution is 10 business hours: 1 h on
    // Monday, 8 h on Tuesday, 1 h on Wednesday.
    let monday = 1_796_659_200_000; // 2026-12-07T16:00:00Z
    store
        .store_reports(&[disk_sample(&id, 1, monday, 60.0)], monday)
        .await
        .expect("store");
    let tickets = store.list_tickets(&open_tickets()).await.expect("list");
    assert_eq!(tickets.len(), 1, "{tickets:?}");
    assert_eq!(tickets[0].priority, "P3");
    assert_eq!(tickets[0].response_due_ms, monday + 3_600_000);
    assert_eq!(
        tickets[0].resolution_due_ms,
        monday + 24 * 3_600_000 + 18 * 3_600_000,
        "Wednesday 10:00"
    );
}

/// Replicas share one database (D2, D7): a policy applied through one must
/// reach the others' caches, also after their listener lost its connection.
async fn a_policy_applied_by_one_replica_reaches_the_others(db: TestDb) {
    let replica = backend::open(&db.url).await.expect("open a second replica");
    assert_eq!(replica.policy().await.expect("policy").version, 0);
    let first = apply_valid_policy(
        &db.store,
        "[[rule]]\nname = \"a\"\nmetric = \"cpu_percent\"\nop = \">\"\nthreshold = 90\nseverity = \"low\"\n",
        1,
    )
    .await;
    replica_reaches(&replica, &first).await;

    // Cut every listener off; the one that reconnects must not miss an
    // apply made while it was away.
    let cut: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .fetch_all(&mut PgConnection::connect(&db.url).await.expect("connect"))
    .await
    .expect("terminate the listeners");
    assert_eq!(cut, [true, true], "one listener per replica");
    let second = apply_valid_policy(
        &db.store,
        "[[rule]]\nname = \"b\"\nmetric = \"cpu_percent\"\nop = \">\"\nthreshold = 95\nseverity = \"low\"\n",
        2,
    )
    .await;
    replica_reaches(&replica, &second).await;
}

/// Polls until `replica` holds `applied` (notifications are asynchronous).
async fn replica_reaches(replica: &SharedStore, applied: &PolicyRecord) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let seen = replica.policy().await.expect("policy");
        if seen.version == applied.version {
            assert_eq!(seen.text, applied.text);
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the other replica still has policy version {}, not {}",
            seen.version,
            applied.version
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn tickets_filter_by_assignee(db: TestDb) {
    let store = db.store.clone();
    let id = enrolled_host(&store).await;
    technician(&store, "alice", Role::Technician).await;
    let mine = store
        .create_ticket(
            &id,
            "printer",
            None,
            "alice",
            &AuditEntry::system("", "", ""),
            1,
        )
        .await
        .expect("create");
    store
        .create_ticket(
            &id,
            "vpn",
            None,
            "alice",
            &AuditEntry::system("", "", ""),
            1,
        )
        .await
        .expect("create");
    store
        .update_ticket(
            mine.id,
            &TicketChange::Assign("alice".into()),
            "alice",
            &crate::store::AuditEntry::system("test", "", ""),
            2,
        )
        .await
        .expect("update")
        .expect("allowed");
    let assigned = store
        .list_tickets(&TicketQuery {
            assignee: Some("alice".into()),
            limit: 10,
            ..TicketQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(assigned.iter().map(|t| t.id).collect::<Vec<_>>(), [mine.id]);
}

fn ping_job(host: &str, id: &str, expires_at_ms: i64) -> NewJob {
    use prost::Message;
    let params =
        deskpulse_proto::catalog::parse("ping", &[("host".to_string(), "127.0.0.1".to_string())])
            .expect("valid");
    NewJob {
        id: id.into(),
        host_id: host.into(),
        diagnostic: "ping".into(),
        params: params.encode_to_vec(),
        params_text: deskpulse_proto::catalog::describe(&params),
        risk: "read-only".into(),
        requester: crate::store::JobRequester::Technician(Caller {
            technician_id: "t1".into(),
            name: "alice".into(),
            role: Role::Technician,
            token_id: "k1".into(),
            expires_at_ms: None,
            last_used_at_ms: None,
        }),
        ticket_id: None,
        expires_at_ms,
    }
}

fn result_report(host: &str, seq: u64, job: &str, outcome: &str) -> IncomingReport {
    IncomingReport {
        host_id: host.into(),
        spool_id: "diag".into(),
        seq,
        held_from_seq: 0,
        collected_at_ms: 2_000,
        payload: ReportPayload::DiagnosticResult(Box::new(JobResult {
            job_id: job.into(),
            outcome: outcome.into(),
            exit_code: 0,
            output: b"64 bytes from 127.0.0.1\n".to_vec(),
            truncated: false,
            started_at_ms: 1_500,
            finished_at_ms: 1_900,
            reason: String::new(),
        })),
    }
}

async fn jobs_are_queued_delivered_finished_once_and_only_by_their_host(db: TestDb) {
    let store = db.store.clone();
    let host = enrolled_host(&store).await;
    token(&store, "o", i64::MAX, 1).await;
    let other = host_id(
        &store
            .enroll(&request("o", "other-uuid"), 0, &cert)
            .await
            .expect("enroll"),
    );
    let id = "00000000-0000-4000-8000-000000000001";
    let job = store
        .create_job(&ping_job(&host, id, 100_000), 1_000)
        .await
        .expect("create");
    assert_eq!(
        (job.state.as_str(), job.params_text.as_str()),
        ("queued", "host=127.0.0.1")
    );
    let due = store.deliverable_jobs(&host, 1_000).await.expect("due");
    assert_eq!(due.len(), 1);
    assert!(
        store
            .deliverable_jobs(&other, 1_000)
            .await
            .expect("due")
            .is_empty()
    );
    store.job_sent(id, 1_100).await.expect("sent");
    // Another host cannot finish this host's job.
    store
        .store_reports(&[result_report(&other, 1, id, "completed")], 1_200)
        .await
        .expect("store");
    assert_eq!(
        store.job(id).await.expect("get").expect("job").state,
        "sent"
    );
    store
        .store_reports(&[result_report(&host, 1, id, "completed")], 1_300)
        .await
        .expect("store");
    let done = store.job(id).await.expect("get").expect("job");
    assert_eq!(
        (done.state.as_str(), done.exit_code),
        ("completed", Some(0))
    );
    assert_eq!(done.output, b"64 bytes from 127.0.0.1\n");
    // A second result for a finished job changes nothing.
    store
        .store_reports(&[result_report(&host, 2, id, "failed")], 1_400)
        .await
        .expect("store");
    assert_eq!(
        store.job(id).await.expect("get").expect("job").state,
        "completed"
    );
    assert!(
        store
            .deliverable_jobs(&host, 1_500)
            .await
            .expect("due")
            .is_empty()
    );
}

/// Issue 20: an enrolled agent that sends more output than ping's catalog
/// cap (16 KiB) and times that cannot be (a finish in the future, a start
/// before the job existed, a run far past ping's 30 s timeout, a negative
/// duration) gets neither stored as sent, and the job's reason says so.
async fn a_hostile_agents_result_is_capped_at_its_catalog_cap_and_its_times_clamped(db: TestDb) {
    let store = db.store.clone();
    let host = enrolled_host(&store).await;
    let cap = deskpulse_proto::catalog::spec("ping")
        .expect("ping")
        .output_cap;
    let created = 1_000_000;
    let now = 1_100_000;
    let cases: [(&str, i64, i64, usize); 4] = [
        // (job, started, finished, output bytes)
        (
            "00000000-0000-4000-8000-0000000000a1",
            created + 10,
            now + 86_400_000,
            64,
        ),
        ("00000000-0000-4000-8000-0000000000a2", -5, created + 20, 64),
        (
            "00000000-0000-4000-8000-0000000000a3",
            created + 90_000,
            created + 10,
            64,
        ),
        (
            "00000000-0000-4000-8000-0000000000a4",
            created,
            now,
            cap * 4,
        ),
    ];
    for (seq, (id, started, finished, bytes)) in cases.iter().enumerate() {
        store
            .create_job(&ping_job(&host, id, i64::MAX), created)
            .await
            .expect("create");
        store.job_sent(id, created).await.expect("sent");
        let mut report = result_report(&host, seq as u64 + 1, id, "completed");
        if let ReportPayload::DiagnosticResult(result) = &mut report.payload {
            result.started_at_ms = *started;
            result.finished_at_ms = *finished;
            result.output = vec![b'x'; *bytes];
            result.reason = "agent says".into();
        }
        store.store_reports(&[report], now).await.expect("store");
        let job = store.job(id).await.expect("get").expect("job");
        let (kept_start, kept_finish) = (
            job.started_at_ms.expect("started"),
            job.finished_at_ms.expect("finished"),
        );
        assert!(
            created <= kept_start && kept_start <= kept_finish && kept_finish <= now,
            "{id}: stored {kept_start}..{kept_finish}"
        );
        assert!(
            kept_finish - kept_start <= 40_000,
            "{id}: longer than the timeout"
        );
        assert!(
            job.output.len() <= cap,
            "{id}: {} bytes kept",
            job.output.len()
        );
        let reason = job.reason.unwrap_or_default();
        assert!(
            reason.starts_with("agent says; collector: "),
            "{id}: {reason}"
        );
    }
    let last = store.job(cases[3].0).await.expect("get").expect("job");
    assert!(last.truncated);
    assert!(
        last.reason
            .unwrap_or_default()
            .contains(&format!("kept the catalog cap of {cap}")),
        "the cut is said"
    );
    let first = store.job(cases[0].0).await.expect("get").expect("job");
    assert!(
        first
            .reason
            .unwrap_or_default()
            .contains("were impossible; clamped"),
        "the clamp is said"
    );
}

async fn a_request_past_its_ttl_expires_visibly_and_a_queued_one_cancels(db: TestDb) {
    let store = db.store.clone();
    let host = enrolled_host(&store).await;
    let stale = "00000000-0000-4000-8000-000000000002";
    let queued = "00000000-0000-4000-8000-000000000003";
    store
        .create_job(&ping_job(&host, stale, 60_000), 0)
        .await
        .expect("create");
    store
        .create_job(&ping_job(&host, queued, 600_000), 0)
        .await
        .expect("create");
    assert!(store.expire_jobs(59_999).await.expect("expire").is_empty());
    let expired = store.expire_jobs(60_000).await.expect("expire");
    assert_eq!(
        expired.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        [stale]
    );
    let row = store.job(stale).await.expect("get").expect("job");
    assert_eq!(row.state, "expired");
    assert!(
        row.reason.as_deref().unwrap_or("").contains("expired"),
        "{row:?}"
    );
    let due = store.deliverable_jobs(&host, 60_000).await.expect("due");
    assert_eq!(
        due.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        [queued]
    );
    let cancelled = store
        .cancel_job(
            queued,
            &|_: &JobRow| AuditEntry::system("test", "", ""),
            61_000,
        )
        .await
        .expect("cancel")
        .expect("job");
    assert_eq!(cancelled.state, "cancelled");
    assert!(
        store
            .deliverable_jobs(&host, 62_000)
            .await
            .expect("due")
            .is_empty()
    );
    assert!(
        store
            .cancel_job("nope", &|_: &JobRow| AuditEntry::system("test", "", ""), 0)
            .await
            .expect("cancel")
            .is_none()
    );
}

async fn a_result_for_a_job_with_a_ticket_lands_in_the_tickets_worklog(db: TestDb) {
    let store = db.store.clone();
    let host = enrolled_host(&store).await;
    let ticket = store
        .create_ticket(
            &host,
            "network drops",
            None,
            "alice",
            &AuditEntry::system("", "", ""),
            500,
        )
        .await
        .expect("ticket");
    let id = "00000000-0000-4000-8000-000000000004";
    let mut job = ping_job(&host, id, 100_000);
    job.ticket_id = Some(ticket.id);
    store.create_job(&job, 1_000).await.expect("create");
    store.job_sent(id, 1_100).await.expect("sent");
    store
        .store_reports(&[result_report(&host, 1, id, "completed")], 1_300)
        .await
        .expect("store");
    let (_, log) = store.ticket(ticket.id).await.expect("get").expect("ticket");
    let note = &log.last().expect("a worklog entry").note;
    assert!(
        note.starts_with(&format!(
            "diagnostic job {id}: ping host=127.0.0.1: completed exit 0"
        )) && note.contains("64 bytes from 127.0.0.1"),
        "{note}"
    );
}

async fn timer_passes_on_two_replicas_at_once_fire_each_due_timer_once(db: TestDb) {
    // Two stores on one database: two replicas (on SQLite, two pools on
    // one file), each running its maintenance pass.
    let store = db.store.clone();
    let replica = backend::open(&db.url).await.expect("open a second replica");
    let min = 60_000;
    token(&store, "many", i64::MAX, 4).await;
    let mut hosts = Vec::new();
    for i in 0..4 {
        let outcome = store
            .enroll(&request("many", &format!("uuid-{i}")), 0, &cert)
            .await
            .expect("enroll");
        hosts.push(host_id(&outcome));
    }
    // Each host: disk-full fires (95 % for 12 min), then recovers at 13
    // min, so its quiet period (15 min) ends at 28 min.
    for host in &hosts {
        for m in 0..12u64 {
            let at = i64::try_from(m).expect("small") * min;
            store
                .store_reports(&[disk_sample(host, m + 1, at, 95.0)], at)
                .await
                .expect("store");
        }
        store
            .store_reports(&[disk_sample(host, 50, 13 * min, 50.0)], 13 * min)
            .await
            .expect("store");
    }
    let (a, b) = tokio::join!(
        store.advance_rule_timers(29 * min),
        replica.advance_rule_timers(29 * min)
    );
    let fired = a.expect("timers") + b.expect("timers");
    // A pass that skipped a claimed host leaves it for the next one.
    let later = store.advance_rule_timers(30 * min).await.expect("timers")
        + replica.advance_rule_timers(30 * min).await.expect("timers");
    assert_eq!(fired + later, 4, "one resolve per host: {fired} + {later}");
    let tickets = store
        .list_tickets(&TicketQuery {
            limit: 10,
            ..TicketQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(tickets.len(), 4, "{tickets:?}");
    for ticket in tickets {
        assert_eq!(ticket.status, "resolved", "{ticket:?}");
        let (_, log) = store.ticket(ticket.id).await.expect("get").expect("found");
        let resolves = log
            .iter()
            .filter(|e| e.note.starts_with("auto-resolved"))
            .count();
        assert_eq!(resolves, 1, "{log:?}");
    }
}

async fn the_knowledge_base_finds_resolved_tickets_best_match_first(db: TestDb) {
    let store = db.store.clone();
    let host = enrolled_host(&store).await;
    let resolve = |title: &'static str, resolution: &'static str| {
        let store = store.clone();
        let host = host.clone();
        async move {
            let t = store
                .create_ticket(
                    &host,
                    title,
                    None,
                    "alice",
                    &AuditEntry::system("", "", ""),
                    1,
                )
                .await
                .expect("ticket");
            store
                .update_ticket(
                    t.id,
                    &TicketChange::Resolve(resolution.into()),
                    "alice",
                    &crate::store::AuditEntry::system("test", "", ""),
                    2,
                )
                .await
                .expect("update")
                .expect("resolved");
            t.id
        }
    };
    let printer = resolve(
        "Printing stops",
        "The print spooler crashed on a corrupt driver; reinstalled the driver",
    )
    .await;
    let vpn = resolve("VPN drops every hour", "Renewed the VPN certificate").await;
    let disk = resolve("Disk almost full", "Deleted old crash dumps").await;
    // Open: not a past resolution, however well it matches.
    store
        .create_ticket(
            &host,
            "Spooler crashed driver",
            None,
            "alice",
            &AuditEntry::system("", "", ""),
            3,
        )
        .await
        .expect("open ticket");
    let words = |text: &str| text.split(' ').map(str::to_owned).collect::<Vec<_>>();

    let hits = store
        .search_kb(&words("spooler crash driver"), 10, false)
        .await
        .expect("search");
    // Three words (stemmed: "crashed") beat one ("crash dumps").
    assert_eq!(
        hits.iter().map(|h| h.ticket_id).collect::<Vec<_>>(),
        [printer, disk],
        "{hits:?}"
    );
    assert!(hits[0].rank < hits[1].rank, "{hits:?}");
    assert_eq!(hits[0].hostname, "pc-1");
    assert_eq!(hits[0].resolved_at_ms, Some(2));
    assert!(hits[0].resolution.contains("corrupt driver"));

    let by_title = store
        .search_kb(&words("hour"), 10, false)
        .await
        .expect("search");
    assert_eq!(
        by_title.iter().map(|h| h.ticket_id).collect::<Vec<_>>(),
        [vpn]
    );
    // Query syntax of either engine is only text.
    for odd in [
        "\"vpn",
        "vpn*",
        "NEAR(vpn)",
        "-vpn",
        "vpn:*",
        "!vpn",
        "(",
        "or",
    ] {
        store
            .search_kb(&[odd.to_owned()], 10, false)
            .await
            .unwrap_or_else(|e| panic!("{odd:?}: {e}"));
    }
    // Reopened: out of the knowledge base until it resolves again.
    store
        .update_ticket(
            vpn,
            &TicketChange::Reopen,
            "alice",
            &crate::store::AuditEntry::system("test", "", ""),
            4,
        )
        .await
        .expect("update")
        .expect("reopened");
    assert!(
        store
            .search_kb(&words("certificate"), 10, false)
            .await
            .expect("search")
            .is_empty()
    );
}

/// Runs `sql` on a connection of its own, outside the store: what someone
/// with write access to the database could do.
async fn tamper(db: &TestDb, sql: String) {
    let sql = sqlx::AssertSqlSafe(sql);
    if db.url.starts_with("postgres") {
        let mut conn = PgConnection::connect(&db.url).await.expect("connect");
        sqlx::query(sql).execute(&mut conn).await.expect("tamper");
    } else {
        let mut conn = sqlx::SqliteConnection::connect(&db.url)
            .await
            .expect("connect");
        sqlx::query(sql).execute(&mut conn).await.expect("tamper");
    }
}

async fn audit_appends_from_two_replicas_form_one_chain_and_edits_are_named(db: TestDb) {
    let dir = tempfile::tempdir().expect("temp dir");
    let anchor = crate::audit::AuditAnchor::load_or_create(dir.path()).expect("audit key");
    let replica = backend::open(&db.url).await.expect("open a second replica");
    let entry = |i: i64| AuditEntry {
        technician_id: (i % 3 != 0).then(|| format!("tech-{}", i % 2)),
        token_id: None,
        action: "host.tag".into(),
        subject: format!("host-{}", i % 4),
        detail: format!("entry {i}; \u{e9}t\u{e9}"),
    };
    let mut tasks = Vec::new();
    for i in 1..=40 {
        let store = if i % 2 == 0 {
            db.store.clone()
        } else {
            replica.clone()
        };
        tasks.push(tokio::spawn(async move {
            store
                .append_audit(&entry(i), 1_000 + i)
                .await
                .expect("append");
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let chain = db.store.audit_chain(0, 100).await.expect("chain");
    assert_eq!(
        chain.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=40).map(Some).collect::<Vec<_>>()
    );
    anchor
        .anchor(db.store.as_ref(), 2_000)
        .await
        .expect("anchor")
        .expect("a new head was anchored");
    let verified = anchor.verify(db.store.as_ref()).await.expect("verify");
    assert_eq!((verified.entries, verified.problem), (40, None));

    let edited = chain[16].id;
    tamper(
        &db,
        format!("UPDATE audit_log SET detail = 'nothing happened' WHERE id = {edited}"),
    )
    .await;
    let verified = anchor.verify(db.store.as_ref()).await.expect("verify");
    assert_eq!(
        verified.problem.as_deref(),
        Some(format!("audit row {edited}: hash does not match its contents (edited?)").as_str())
    );
}

async fn every_ticket_change_is_audited_in_its_transaction_and_a_refused_one_not(db: TestDb) {
    let store = db.store.clone();
    let host = enrolled_host(&store).await;
    let alice = AuditEntry {
        technician_id: Some("tech-alice".into()),
        token_id: Some("token-alice".into()),
        action: String::new(),
        subject: String::new(),
        detail: String::new(),
    };
    let ticket = store
        .create_ticket(&host, "printer jams", None, "alice", &alice, 1_000)
        .await
        .expect("ticket");
    let changes = [
        TicketChange::Assign("alice".into()),
        TicketChange::Status("in_progress".into()),
        TicketChange::Note("swapped the fuser".into()),
        TicketChange::Escalate,
        TicketChange::Resolve("new fuser".into()),
        TicketChange::Reopen,
    ];
    technician(&store, "alice", Role::Technician).await;
    for (at, change) in (2_000..).zip(&changes) {
        store
            .update_ticket(ticket.id, change, "alice", &alice, at)
            .await
            .expect("update")
            .expect("applied");
    }
    // Refused changes leave no entry: an unknown status, a reopen of an
    // open ticket, a ticket that does not exist.
    for (id, change) in [
        (ticket.id, TicketChange::Status("done".into())),
        (ticket.id, TicketChange::Reopen),
        (9_999, TicketChange::Note("lost".into())),
    ] {
        let refused = store
            .update_ticket(id, &change, "alice", &alice, 3_000)
            .await
            .expect("update");
        assert!(refused.is_err(), "{change:?}");
    }
    let query = AuditQuery {
        action_prefix: Some("ticket.".into()),
        limit: 100,
        ..AuditQuery::default()
    };
    let mut entries = store.list_audit(&query).await.expect("audit");
    entries.reverse();
    let seen: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e.action.as_str(), e.detail.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("ticket.create", "printer jams"),
            ("ticket.assign", "assigned to alice"),
            ("ticket.status", "status open -> in_progress"),
            ("ticket.note", "swapped the fuser"),
            ("ticket.escalate", "escalated to level 1"),
            ("ticket.resolve", "resolved: new fuser"),
            ("ticket.reopen", "reopened by hand"),
        ]
    );
    let subject = format!("ticket {} on host {host}", ticket.id);
    for entry in &entries {
        assert_eq!(entry.subject, subject);
        assert_eq!(entry.technician_id.as_deref(), Some("tech-alice"));
        assert_eq!(entry.token_id.as_deref(), Some("token-alice"));
    }
    // `audit --host` finds them by the host's id, and the listing can name
    // the host.
    let by_host = AuditQuery {
        subject_contains: Some(host.clone()),
        action_prefix: Some("ticket.".into()),
        limit: 100,
        ..AuditQuery::default()
    };
    assert_eq!(store.list_audit(&by_host).await.expect("audit").len(), 7);
    let names = store
        .hostnames(&[host.as_str(), "no-such-host"])
        .await
        .expect("names");
    assert_eq!(names.len(), 1);
    assert_eq!(names[&host], "pc-1");
}

async fn a_retired_host_leaves_the_fleet_with_its_tickets_closed_and_its_history_kept(db: TestDb) {
    use deskpulse_proto::v1::{Inventory, SystemInfo};
    let store = db.store.clone();
    let min = 60_000;
    let gone = enrolled_host(&store).await;
    token(&store, "second", i64::MAX, 1).await;
    let kept = host_id(
        &store
            .enroll(&request("second", "uuid-kept"), 0, &cert)
            .await
            .expect("enroll"),
    );
    // Both desktops, silent: each gets an offline ticket; the one to
    // retire has a manual ticket too.
    for (seq, host) in [(1, &gone), (1, &kept)] {
        let inv = Inventory {
            system: Some(SystemInfo {
                chassis_type: "desktop".into(),
                ..SystemInfo::default()
            }),
            ..Inventory::default()
        };
        store
            .store_reports(&[full_inventory(host, seq, 0, &inv)], 0)
            .await
            .expect("store");
    }
    store.advance_rule_timers(11 * min).await.expect("timers");
    let manual = store
        .create_ticket(
            &gone,
            "monitor flickers",
            None,
            "alice",
            &AuditEntry::system("", "", ""),
            11 * min,
        )
        .await
        .expect("ticket");
    let open_of = |host: String| {
        let store = store.clone();
        async move {
            store
                .list_tickets(&open_tickets())
                .await
                .expect("list")
                .into_iter()
                .filter(|t| t.host_id == host)
                .map(|t| t.id)
                .collect::<Vec<_>>()
        }
    };
    let mut before = open_of(gone.clone()).await;
    before.sort_unstable();
    assert_eq!(before.len(), 2, "an offline and a manual ticket");

    let admin = AuditEntry {
        technician_id: Some("tech-admin".into()),
        token_id: Some("token-admin".into()),
        action: "host.retire".into(),
        subject: gone.clone(),
        detail: "reason \"sold\"".into(),
    };
    let outcome = store
        .retire_host(&gone, "admin", "sold", &admin, 12 * min)
        .await
        .expect("retire");
    assert_eq!(outcome, RetireOutcome::Retired(before.clone()));
    assert!(open_of(gone.clone()).await.is_empty());
    let (closed, log) = store.ticket(manual.id).await.expect("read").expect("kept");
    assert_eq!(closed.status, "closed");
    assert!(
        log.iter()
            .any(|e| e.author == "admin" && e.note == "the host was retired by admin: sold"),
        "{log:?}"
    );

    // Out of the lists unless asked for; its history and its host row stay.
    let listed = |retired| HostQuery {
        retired,
        ..HostQuery::default()
    };
    assert_eq!(
        ids(&store, &listed(RetiredHosts::Excluded)).await,
        std::slice::from_ref(&kept)
    );
    assert_eq!(
        ids(&store, &listed(RetiredHosts::Only)).await,
        std::slice::from_ref(&gone)
    );
    assert_eq!(ids(&store, &listed(RetiredHosts::Included)).await.len(), 2);
    let detail = store
        .host_detail(&gone)
        .await
        .expect("detail")
        .expect("kept");
    let retired = detail.retired.expect("retired");
    assert_eq!(
        (retired.at_ms, retired.by.as_str(), retired.reason.as_str()),
        (12 * min, "admin", "sold")
    );
    assert_eq!(detail.row.retired_at_ms, Some(12 * min));
    // Its certificate is revoked with it.
    assert_eq!(detail.revoked.map(|r| r.at_ms), Some(12 * min));
    assert!(matches!(
        store
            .present_host_cert(&gone, &cert(&gone).expect("cert").sha256_hex)
            .await
            .expect("cert"),
        CertStanding::Revoked { .. }
    ));

    // Time passes: no offline ticket for it again, the other host's stays.
    store.advance_rule_timers(90 * min).await.expect("timers");
    assert!(open_of(gone.clone()).await.is_empty());
    assert_eq!(open_of(kept.clone()).await.len(), 1);

    // Once only, and only a host.
    assert_eq!(
        store
            .retire_host(&gone, "admin", "again", &admin, 13 * min)
            .await
            .expect("retire"),
        RetireOutcome::AlreadyRetired(12 * min)
    );
    assert_eq!(
        store
            .retire_host("no-such-host", "admin", "", &admin, 13 * min)
            .await
            .expect("retire"),
        RetireOutcome::Unknown
    );
    let audit = store
        .list_audit(&AuditQuery {
            action_prefix: Some("host.retire".into()),
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .expect("audit");
    assert_eq!(audit.len(), 1);
    let listed_ids: Vec<String> = before.iter().map(i64::to_string).collect();
    assert_eq!(
        audit[0].detail,
        format!(
            "reason \"sold\"; open tickets closed: {}",
            listed_ids.join(", ")
        )
    );
}

async fn a_replica_that_stops_saying_it_is_alive_loses_its_streams(db: TestDb) {
    let store = db.store.clone();
    let other = backend::open(&db.url).await.expect("open a second replica");
    token(&store, "two", i64::MAX, 2).await;
    let mut hosts = Vec::new();
    for uuid in ["uuid-a", "uuid-b"] {
        hosts.push(host_id(
            &store
                .enroll(&request("two", uuid), 0, &cert)
                .await
                .expect("enroll"),
        ));
    }
    let min = 60_000;
    for (host, replica) in hosts.iter().zip(["replica-a", "replica-b"]) {
        store
            .session_opened(
                &SessionOpen {
                    host_id: host.clone(),
                    replica: replica.into(),
                    agent_version: "1".into(),
                    health_interval_secs: 60,
                    catalog_version: 0,
                    enabled_diagnostics: Vec::new(),
                    unavailable_diagnostics: Vec::new(),
                },
                0,
            )
            .await
            .expect("open session");
    }
    let replica_of = |store: SharedStore, id: String| async move {
        store
            .find_hosts(&id)
            .await
            .expect("find")
            .remove(0)
            .session_replica
    };
    assert_eq!(
        store
            .replica_alive("replica-a", 0, min)
            .await
            .expect("alive"),
        0
    );
    assert_eq!(
        other
            .replica_alive("replica-b", 0, min)
            .await
            .expect("alive"),
        0
    );
    // B keeps beating; A goes silent for longer than the stale time.
    other
        .replica_alive("replica-b", min / 2, min)
        .await
        .expect("alive");
    assert_eq!(
        other
            .replica_alive("replica-b", 2 * min, min)
            .await
            .expect("alive"),
        1,
        "A's one stream is cleared"
    );
    assert_eq!(replica_of(store.clone(), hosts[0].clone()).await, None);
    assert_eq!(
        replica_of(store.clone(), hosts[1].clone()).await.as_deref(),
        Some("replica-b")
    );
    // A that comes back beats again and keeps what it opens from then on.
    assert_eq!(
        store
            .replica_alive("replica-a", 2 * min, min)
            .await
            .expect("alive"),
        0
    );
}
