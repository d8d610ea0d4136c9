//! The audit chain against a real SQLite file and a real anchor file: what
//! verify accepts, and each kind of tampering it must name.

use std::sync::Arc;

use sqlx::SqlitePool;

use super::chain::{self, GENESIS, Link};
use super::{ANCHOR_LOG, AuditAnchor};
use crate::store::sqlite::SqliteStore;
use crate::store::{AuditEntry, AuditQuery, SharedStore};

const T0: i64 = 1_796_119_200_000; // 2026-12-01T10:00:00Z

struct Fixture {
    dir: tempfile::TempDir,
    store: SharedStore,
    /// A second connection pool on the same file, for the "attacker".
    raw: SqlitePool,
    anchor: AuditAnchor,
}

impl Fixture {
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("test.db");
        let store: SharedStore = Arc::new(SqliteStore::open(&path).await.expect("open store"));
        let raw = SqlitePool::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("raw pool");
        let anchor = AuditAnchor::load_or_create(dir.path()).expect("audit key");
        Self {
            dir,
            store,
            raw,
            anchor,
        }
    }

    async fn append(&self, i: i64) {
        self.store
            .append_audit(&entry(i), T0 + i * 1000)
            .await
            .expect("append");
    }

    async fn anchor_at(&self, ms: i64) {
        self.anchor
            .anchor(self.store.as_ref(), ms)
            .await
            .expect("anchor")
            .expect("a new head was anchored");
    }

    async fn problem(&self) -> String {
        let v = self
            .anchor
            .verify(self.store.as_ref())
            .await
            .expect("verify");
        v.problem.expect("verify must find the tampering")
    }

    async fn id_at_seq(&self, seq: i64) -> i64 {
        sqlx::query_scalar("SELECT id FROM audit_log WHERE seq = ?")
            .bind(seq)
            .fetch_one(&self.raw)
            .await
            .expect("row")
    }
}

fn entry(i: i64) -> AuditEntry {
    AuditEntry {
        technician_id: (i % 3 != 0).then(|| format!("tech-{}", i % 2)),
        token_id: (i % 3 != 0).then(|| format!("token-{i}")),
        action: if i % 2 == 0 {
            "diagnostic.request".into()
        } else {
            "host.tag".into()
        },
        subject: format!("host-{}", i % 4),
        detail: format!("entry {i}; a=b"),
    }
}

#[tokio::test]
async fn many_appends_verify_and_rolled_back_ones_leave_no_trace() {
    let f = Fixture::new().await;
    for i in 1..=30 {
        f.append(i).await;
        if i % 10 == 0 {
            f.anchor_at(T0 + i * 1000).await;
        }
    }
    // An action that fails after appending its audit entry rolls both back:
    // no row, and the head has not moved, so the next append links on.
    let mut tx = f.raw.begin().await.expect("begin");
    crate::store::sql::audit::append::<sqlx::Sqlite>(&mut tx, &entry(99), T0)
        .await
        .expect("append in tx");
    tx.rollback().await.expect("rollback");
    for i in 31..=40 {
        f.append(i).await;
    }
    f.anchor_at(T0 + 41_000).await;
    // An idle anchoring tick writes nothing new.
    assert!(
        f.anchor
            .anchor(f.store.as_ref(), T0 + 99_000)
            .await
            .expect("anchor")
            .is_none()
    );

    let v = f.anchor.verify(f.store.as_ref()).await.expect("verify");
    assert_eq!(v.problem, None);
    assert_eq!((v.entries, v.anchors), (40, 4));
    let details: Vec<String> = sqlx::query_scalar("SELECT detail FROM audit_log")
        .fetch_all(&f.raw)
        .await
        .expect("details");
    assert!(!details.iter().any(|d| d.contains("entry 99")));
    let head = f.store.audit_head().await.expect("head");
    assert_eq!(head.seq, 40);
}

#[tokio::test]
async fn concurrent_appends_never_fork_the_chain() {
    let f = Fixture::new().await;
    let mut tasks = Vec::new();
    for i in 1..=40 {
        let store = f.store.clone();
        tasks.push(tokio::spawn(async move {
            store.append_audit(&entry(i), T0 + i).await.expect("append");
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM audit_log ORDER BY seq")
        .fetch_all(&f.raw)
        .await
        .expect("seqs");
    assert_eq!(seqs, (1..=40).collect::<Vec<_>>());
    f.anchor_at(T0 + 100).await;
    let v = f.anchor.verify(f.store.as_ref()).await.expect("verify");
    assert_eq!((v.entries, v.problem), (40, None));
}

#[tokio::test]
async fn verifying_while_entries_are_appended_finds_no_problem() {
    let f = Fixture::new().await;
    for i in 1..=5 {
        f.append(i).await;
    }
    f.anchor_at(T0).await;
    let store = f.store.clone();
    let writer = tokio::spawn(async move {
        for i in 6..=200 {
            store.append_audit(&entry(i), T0 + i).await.expect("append");
        }
    });
    while !writer.is_finished() {
        let v = f.anchor.verify(f.store.as_ref()).await.expect("verify");
        assert_eq!(v.problem, None);
    }
    writer.await.expect("writer");
    let v = f.anchor.verify(f.store.as_ref()).await.expect("verify");
    assert_eq!((v.entries, v.problem), (200, None));
}

#[tokio::test]
async fn a_row_forged_past_the_head_is_named() {
    let f = Fixture::new().await;
    for i in 1..=5 {
        f.append(i).await;
    }
    let (prev, at): (String, i64) =
        sqlx::query_as("SELECT hash, at_ms FROM audit_log WHERE seq = 5")
            .fetch_one(&f.raw)
            .await
            .expect("row 5");
    let hash = chain::entry_hash(&Link {
        seq: 6,
        at_ms: at,
        technician_id: None,
        token_id: None,
        action: "x",
        subject: "",
        detail: "",
        prev_hash: &prev,
    });
    sqlx::query(
        "INSERT INTO audit_log (seq, at_ms, action, subject, detail, prev_hash, hash) \
         VALUES (6, ?, 'x', '', '', ?, ?)",
    )
    .bind(at)
    .bind(&prev)
    .bind(&hash)
    .execute(&f.raw)
    .await
    .expect("forged row");
    let id = f.id_at_seq(6).await;
    assert_eq!(
        f.problem().await,
        format!("audit row {id} is past the chain head (inserted by hand?)")
    );
}

#[tokio::test]
async fn an_edited_detail_is_named_by_its_row() {
    let f = Fixture::new().await;
    for i in 1..=20 {
        f.append(i).await;
    }
    f.anchor_at(T0 + 30_000).await;
    let id = f.id_at_seq(17).await;
    sqlx::query("UPDATE audit_log SET detail = 'nothing happened' WHERE id = ?")
        .bind(id)
        .execute(&f.raw)
        .await
        .expect("tamper");
    assert_eq!(
        f.problem().await,
        format!("audit row {id}: hash does not match its contents (edited?)")
    );
}

#[tokio::test]
async fn an_edit_with_its_hash_recomputed_breaks_the_next_link() {
    let f = Fixture::new().await;
    for i in 1..=20 {
        f.append(i).await;
    }
    let row: (
        i64,
        i64,
        Option<String>,
        Option<String>,
        String,
        String,
        String,
    ) = sqlx::query_as(
        "SELECT id, at_ms, actor_technician_id, actor_token_id, action, subject, prev_hash \
         FROM audit_log WHERE seq = 17",
    )
    .fetch_one(&f.raw)
    .await
    .expect("row");
    let hash = chain::entry_hash(&Link {
        seq: 17,
        at_ms: row.1,
        technician_id: row.2.as_deref(),
        token_id: row.3.as_deref(),
        action: &row.4,
        subject: "host-x",
        detail: "forged",
        prev_hash: &row.6,
    });
    sqlx::query(
        "UPDATE audit_log SET subject = 'host-x', detail = 'forged', hash = ? WHERE id = ?",
    )
    .bind(&hash)
    .bind(row.0)
    .execute(&f.raw)
    .await
    .expect("tamper");
    let next = f.id_at_seq(18).await;
    assert_eq!(
        f.problem().await,
        format!("audit row {next}: prev_hash does not link to row {}", row.0)
    );
}

#[tokio::test]
async fn a_deleted_middle_row_is_named_as_a_gap() {
    let f = Fixture::new().await;
    for i in 1..=20 {
        f.append(i).await;
    }
    let (before, gone, after) = (
        f.id_at_seq(9).await,
        f.id_at_seq(10).await,
        f.id_at_seq(11).await,
    );
    sqlx::query("DELETE FROM audit_log WHERE id = ?")
        .bind(gone)
        .execute(&f.raw)
        .await
        .expect("tamper");
    assert_eq!(
        f.problem().await,
        format!(
            "audit rows between row {before} and row {after} are missing (deleted?): \
             the chain jumps from seq 9 to 11"
        )
    );
}

/// Recomputes every hash from `from_seq` on with the public algorithm and
/// moves the head, as someone with write access to the database could.
async fn rewrite_chain(raw: &SqlitePool, from_seq: i64) {
    type Row = (
        i64,
        i64,
        Option<String>,
        Option<String>,
        String,
        String,
        String,
        String,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT seq, at_ms, actor_technician_id, actor_token_id, action, subject, detail, \
         prev_hash FROM audit_log ORDER BY seq",
    )
    .fetch_all(raw)
    .await
    .expect("rows");
    let mut prev = GENESIS.to_owned();
    for (seq, at_ms, tech, token, action, subject, detail, stored_prev) in rows {
        if seq < from_seq {
            prev = chain::entry_hash(&Link {
                seq,
                at_ms,
                technician_id: tech.as_deref(),
                token_id: token.as_deref(),
                action: &action,
                subject: &subject,
                detail: &detail,
                prev_hash: &stored_prev,
            });
            continue;
        }
        let detail = if seq == from_seq {
            "rewritten".to_owned()
        } else {
            detail
        };
        let hash = chain::entry_hash(&Link {
            seq,
            at_ms,
            technician_id: tech.as_deref(),
            token_id: token.as_deref(),
            action: &action,
            subject: &subject,
            detail: &detail,
            prev_hash: &prev,
        });
        sqlx::query("UPDATE audit_log SET detail = ?, prev_hash = ?, hash = ? WHERE seq = ?")
            .bind(&detail)
            .bind(&prev)
            .bind(&hash)
            .bind(seq)
            .execute(raw)
            .await
            .expect("rewrite");
        prev = hash;
    }
    sqlx::query("UPDATE audit_head SET hash = ? WHERE id = 1")
        .bind(&prev)
        .execute(raw)
        .await
        .expect("head");
}

#[tokio::test]
async fn a_consistent_rewrite_of_the_chain_fails_on_the_anchor() {
    let f = Fixture::new().await;
    for i in 1..=40 {
        f.append(i).await;
    }
    f.anchor_at(T0).await;
    for i in 41..=45 {
        f.append(i).await;
    }
    rewrite_chain(&f.raw, 3).await;
    assert_eq!(
        f.problem().await,
        "anchor at seq 40 (2026-12-01T10:00:00Z) does not match the chain: the chain was rewritten"
    );
}

#[tokio::test]
async fn a_tampered_anchor_line_fails_its_signature() {
    let f = Fixture::new().await;
    for i in 1..=5 {
        f.append(i).await;
    }
    f.anchor_at(T0).await;
    let path = f.dir.path().join(ANCHOR_LOG);
    let text = std::fs::read_to_string(&path).expect("anchors");
    // Move the anchor's time: the hash still matches the chain, but the
    // signature covers the time too.
    let forged = text.replace(&format!("\"at_ms\":{T0}"), &format!("\"at_ms\":{}", T0 + 1));
    assert_ne!(forged, text);
    std::fs::write(&path, forged).expect("write");
    assert_eq!(
        f.problem().await,
        "anchor at seq 5 (2026-12-01T10:00:00Z) (line 1): the signature does not verify (tampered?)"
    );

    // A line signed by another key (another data dir's) fails the same way.
    let other_dir = tempfile::tempdir().expect("tempdir");
    let other = AuditAnchor::load_or_create(other_dir.path()).expect("other key");
    let line = serde_json::to_string(&other.sign(&f.store.audit_head().await.expect("head"), T0))
        .expect("json");
    std::fs::write(&path, format!("{line}\n")).expect("write");
    assert!(f.problem().await.contains("signature does not verify"));

    std::fs::write(&path, "not json\n").expect("write");
    assert!(f.problem().await.starts_with("anchor line 1 of "));
}

#[tokio::test]
async fn rows_cut_from_the_end_are_caught_by_the_head_and_by_an_anchor() {
    let f = Fixture::new().await;
    for i in 1..=60 {
        f.append(i).await;
    }
    f.anchor_at(T0).await;
    let last_kept = f.id_at_seq(52).await;
    sqlx::query("DELETE FROM audit_log WHERE seq > 52")
        .execute(&f.raw)
        .await
        .expect("truncate");
    assert_eq!(
        f.problem().await,
        format!(
            "rows after {last_kept} are missing (truncated?): the chain head says 60 entries, \
             52 remain"
        )
    );
    // The head moved back too: the anchor still remembers 60.
    let hash: String = sqlx::query_scalar("SELECT hash FROM audit_log WHERE seq = 52")
        .fetch_one(&f.raw)
        .await
        .expect("hash");
    sqlx::query("UPDATE audit_head SET seq = 52, hash = ? WHERE id = 1")
        .bind(&hash)
        .execute(&f.raw)
        .await
        .expect("head");
    assert_eq!(
        f.problem().await,
        format!(
            "rows after {last_kept} are missing (truncated?): anchor at seq 60 \
             (2026-12-01T10:00:00Z) says the chain had 60 entries"
        )
    );
}

#[tokio::test]
async fn rows_from_before_the_chain_are_chained_once_and_a_row_added_by_hand_is_not() {
    let f = Fixture::new().await;
    // What the database looked like before migration 0008: rows without
    // chain columns, and no marker that they were chained.
    sqlx::query("DELETE FROM fleet_meta WHERE key = 'audit_legacy_chained'")
        .execute(&f.raw)
        .await
        .expect("marker");
    for i in 1..=3 {
        sqlx::query(
            "INSERT INTO audit_log (at_ms, action, subject, detail) VALUES (?, 'host.enroll', ?, '')",
        )
        .bind(T0 + i)
        .bind(format!("host-{i}"))
        .execute(&f.raw)
        .await
        .expect("legacy row");
    }
    let path = f.dir.path().join("test.db");
    let store: SharedStore = Arc::new(SqliteStore::open(&path).await.expect("reopen"));
    store.append_audit(&entry(4), T0 + 4).await.expect("append");
    let v = f.anchor.verify(store.as_ref()).await.expect("verify");
    assert_eq!((v.entries, v.problem), (4, None));

    sqlx::query("INSERT INTO audit_log (at_ms, action, subject, detail) VALUES (?, 'x', '', '')")
        .bind(T0)
        .execute(&f.raw)
        .await
        .expect("hand-made row");
    let id: i64 = sqlx::query_scalar("SELECT MAX(id) FROM audit_log")
        .fetch_one(&f.raw)
        .await
        .expect("id");
    let store: SharedStore = Arc::new(SqliteStore::open(&path).await.expect("reopen"));
    let v = f.anchor.verify(store.as_ref()).await.expect("verify");
    assert_eq!(
        v.problem,
        Some(format!(
            "audit row {id} is not in the chain (inserted or edited by hand?)"
        ))
    );
}

#[tokio::test]
async fn listing_filters_by_subject_technician_action_prefix_and_pages() {
    let f = Fixture::new().await;
    for i in 1..=12 {
        f.append(i).await;
    }
    let list = |q: AuditQuery| {
        let store = f.store.clone();
        async move { store.list_audit(&q).await.expect("list") }
    };
    let all = list(AuditQuery {
        limit: 100,
        ..AuditQuery::default()
    })
    .await;
    assert_eq!(all.len(), 12);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let host1 = list(AuditQuery {
        subject_contains: Some("host-1".into()),
        limit: 100,
        ..AuditQuery::default()
    })
    .await;
    assert_eq!(host1.len(), 3);
    let diag = list(AuditQuery {
        action_prefix: Some("diagnostic.".into()),
        limit: 100,
        ..AuditQuery::default()
    })
    .await;
    assert_eq!(diag.len(), 6);
    assert!(
        list(AuditQuery {
            action_prefix: Some("diagnostic%".into()),
            limit: 100,
            ..AuditQuery::default()
        })
        .await
        .is_empty(),
        "a prefix is text, not a LIKE pattern"
    );
    let page = list(AuditQuery {
        before_id: Some(all[4].id),
        since_ms: T0 + 3000,
        limit: 100,
        ..AuditQuery::default()
    })
    .await;
    assert_eq!(
        page.iter().map(|r| r.id).collect::<Vec<_>>(),
        all[5..10].iter().map(|r| r.id).collect::<Vec<_>>()
    );
}

#[test]
fn the_encoding_keeps_fields_apart() {
    let base = Link {
        seq: 1,
        at_ms: T0,
        technician_id: None,
        token_id: None,
        action: "a",
        subject: "ab",
        detail: "c",
        prev_hash: GENESIS,
    };
    let h = chain::entry_hash(&base);
    assert_eq!(h.len(), 64);
    let shifted = Link {
        subject: "a",
        detail: "bc",
        ..base
    };
    let empty_actor = Link {
        technician_id: Some(""),
        ..base
    };
    let moved_actor = Link {
        token_id: Some(""),
        ..base
    };
    let hashes = [
        h.clone(),
        chain::entry_hash(&shifted),
        chain::entry_hash(&empty_actor),
        chain::entry_hash(&moved_actor),
        chain::entry_hash(&Link { seq: 2, ..base }),
    ];
    for (i, a) in hashes.iter().enumerate() {
        for b in &hashes[i + 1..] {
            assert_ne!(a, b);
        }
    }
    // The documented encoding, byte by byte, so a port can check itself.
    let mut expected = b"deskpulse-audit-v1\0".to_vec();
    expected.extend(1i64.to_be_bytes());
    expected.extend(T0.to_be_bytes());
    expected.extend([0u8, 0u8]);
    for text in ["a", "ab", "c", GENESIS] {
        expected.extend(u32::try_from(text.len()).expect("len").to_be_bytes());
        expected.extend(text.as_bytes());
    }
    use sha2::Digest;
    assert_eq!(h, hex::encode(sha2::Sha256::digest(&expected)));
}
