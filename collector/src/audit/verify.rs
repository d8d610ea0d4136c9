//! Verification of the audit log: walk the chain from seq 1, recompute each
//! hash, check each link, and hold every anchor line against the chain.
//!
//! What it catches: an edited row (its hash no longer matches), an edited
//! row whose hash was recomputed (the next row no longer links), a deleted
//! row (seq jumps), a row inserted outside the chain or past its head, a
//! whole chain rewritten
//! consistently (an anchor's hash differs at its seq), rows removed from the
//! end (the head or an anchor says more existed), and a forged or edited
//! anchor line (its signature fails). What it cannot catch: rows removed from
//! the end together with the head row since the last anchor (at most the
//! last minute's entries), and the anchor file deleted or truncated together
//! with a rewrite; someone holding the audit key can forge anything.

use std::collections::BTreeMap;

use super::chain::{self, GENESIS, Link};
use super::{Anchor, AuditAnchor, AuditError, rfc3339};
use crate::store::Store;

/// Rows read per store call while walking the chain.
const PAGE: u32 = 1000;

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Chain entries checked (up to the first problem).
    pub entries: u64,
    /// Anchor lines whose signature held.
    pub anchors: u64,
    /// The first problem found, as one line; None when the chain is intact.
    pub problem: Option<String>,
}

fn anchor_text(a: &Anchor) -> String {
    format!("anchor at seq {} ({})", a.seq, rfc3339(a.at_ms))
}

/// The anchor file read: lines with good signatures by seq, how many, and
/// the first bad line.
struct Anchors {
    by_seq: BTreeMap<i64, Vec<Anchor>>,
    good: u64,
    bad_line: Option<String>,
}

fn read_anchors(key: &AuditAnchor) -> Result<Anchors, AuditError> {
    let path = key.log_path();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(super::io("cannot read", path)(e)),
    };
    let mut by_seq: BTreeMap<i64, Vec<Anchor>> = BTreeMap::new();
    let mut good = 0;
    let mut problem = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let found = match serde_json::from_str::<Anchor>(line) {
            Err(_) => Some(format!(
                "anchor line {n} of {} is not a signed chain head (tampered?)",
                path.display()
            )),
            Ok(a) if !key.signature_holds(&a) => Some(format!(
                "{} (line {n}): the signature does not verify (tampered?)",
                anchor_text(&a)
            )),
            Ok(a) => {
                good += 1;
                by_seq.entry(a.seq).or_default().push(a);
                None
            }
        };
        if problem.is_none() {
            problem = found;
        }
    }
    Ok(Anchors {
        by_seq,
        good,
        bad_line: problem,
    })
}

fn rewritten(a: &Anchor) -> String {
    format!(
        "{} does not match the chain: the chain was rewritten",
        anchor_text(a)
    )
}

/// Walks the chain and the anchors; the first problem in chain order wins,
/// then a bad anchor line, then missing rows at the end.
pub(super) async fn verify(
    key: &AuditAnchor,
    store: &dyn Store,
) -> Result<Verification, AuditError> {
    let Anchors {
        by_seq: anchors,
        good: anchor_count,
        bad_line,
    } = read_anchors(key)?;
    // The head is read once, after the anchor file and before the walk: an
    // anchor read is never newer than this head, and entries appended while
    // the walk runs (seq above it) are left for the next verification
    // rather than mistaken for a mismatch.
    let head = store.audit_head().await?;
    let done = |entries, problem| Verification {
        entries,
        anchors: anchor_count,
        problem,
    };
    for a in anchors.get(&0).into_iter().flatten() {
        if a.hash != GENESIS {
            return Ok(done(0, Some(rewritten(a))));
        }
    }
    let mut entries = 0u64;
    let mut prev_hash = GENESIS.to_owned();
    let mut prev_id: Option<i64> = None;
    let mut last_seq = 0i64;
    while last_seq < head.seq {
        let page = store.audit_chain(last_seq, PAGE).await?;
        if page.is_empty() {
            break;
        }
        let before = last_seq;
        for row in page.iter().take_while(|r| r.seq.unwrap_or(0) <= head.seq) {
            let id = row.id;
            let seq = row.seq.unwrap_or(0);
            if seq != last_seq + 1 {
                let problem = match prev_id {
                    Some(p) => format!(
                        "audit rows between row {p} and row {id} are missing (deleted?): \
                         the chain jumps from seq {last_seq} to {seq}"
                    ),
                    None => format!(
                        "audit rows before row {id} are missing (deleted?): the chain starts \
                         at seq {seq}"
                    ),
                };
                return Ok(done(entries, Some(problem)));
            }
            let (Some(row_prev), Some(row_hash)) = (&row.prev_hash, &row.hash) else {
                return Ok(done(
                    entries,
                    Some(format!("audit row {id} has no hash (edited?)")),
                ));
            };
            if *row_prev != prev_hash {
                let problem = match prev_id {
                    Some(p) => format!("audit row {id}: prev_hash does not link to row {p}"),
                    None => format!(
                        "audit row {id}: prev_hash does not start the chain (it must be 64 zeros)"
                    ),
                };
                return Ok(done(entries, Some(problem)));
            }
            let computed = chain::entry_hash(&Link {
                seq,
                at_ms: row.at_ms,
                technician_id: row.technician_id.as_deref(),
                token_id: row.token_id.as_deref(),
                action: &row.action,
                subject: &row.subject,
                detail: &row.detail,
                prev_hash: row_prev,
            });
            if computed != *row_hash {
                return Ok(done(
                    entries,
                    Some(format!(
                        "audit row {id}: hash does not match its contents (edited?)"
                    )),
                ));
            }
            for a in anchors.get(&seq).into_iter().flatten() {
                if a.hash != *row_hash {
                    return Ok(done(entries, Some(rewritten(a))));
                }
            }
            entries += 1;
            prev_hash.clone_from(row_hash);
            prev_id = Some(id);
            last_seq = seq;
        }
        if last_seq == before {
            // Only rows past the head were left: nothing more to walk.
            break;
        }
    }
    let after = match prev_id {
        Some(id) => format!("rows after {id} are missing (truncated?)"),
        None => "every row is missing (truncated?)".to_owned(),
    };
    if let Some(id) = store.first_unchained_audit().await? {
        return Ok(done(
            entries,
            Some(format!(
                "audit row {id} is not in the chain (inserted or edited by hand?)"
            )),
        ));
    }
    // A row past the snapshot head is fine if it was appended since (its
    // commit moved the head too); one the head still does not cover was
    // put there by hand.
    if let Some(past) = store.audit_chain(head.seq, 1).await?.first() {
        let now = store.audit_head().await?;
        if past.seq.unwrap_or(0) > now.seq {
            return Ok(done(
                entries,
                Some(format!(
                    "audit row {} is past the chain head (inserted by hand?)",
                    past.id
                )),
            ));
        }
    }
    if let Some(line) = bad_line {
        return Ok(done(entries, Some(line)));
    }
    if head.seq > last_seq {
        return Ok(done(
            entries,
            Some(format!(
                "{after}: the chain head says {} entries, {last_seq} remain",
                head.seq
            )),
        ));
    }
    if head.seq != last_seq || head.hash != prev_hash {
        return Ok(done(
            entries,
            Some(format!(
                "the audit chain head (seq {}) does not match the last row (seq {last_seq}) \
                 (edited?)",
                head.seq
            )),
        ));
    }
    if let Some((_, list)) = anchors.range(last_seq + 1..).next_back()
        && let Some(a) = list.first()
    {
        return Ok(done(
            entries,
            Some(format!(
                "{after}: {} says the chain had {} entries",
                anchor_text(a),
                a.seq
            )),
        ));
    }
    Ok(done(entries, None))
}
