//! Inventory limits: how many packages, services and users one inventory
//! may list, and how large its encoding may be (issue 20, "bounded memory
//! per agent").
//!
//! The collector takes them from the fleet policy and sends them to each
//! agent in the initial metadata of its session ([`HEADER`]). The agent cuts
//! what it collected to them ([`truncate`]) and names each cut list in
//! `Inventory.unavailable` with `UNAVAILABLE_REASON_TRUNCATED`, so the host
//! stays visible with what fits and the technician sees that more exists.
//! The collector does not trust that: it counts the lists of an encoded
//! report straight from the protobuf wire format ([`count_report`]), without
//! decoding a single package, and refuses a report over the limits before
//! it costs more memory than its encoded bytes.

use std::fmt;

use prost::Message;

use crate::v1::report::Payload;
use crate::v1::{Inventory, Report, Unavailable, UnavailableReason};

/// The metadata key the collector puts its limits under, in the response
/// to `AgentService.Session`.
pub const HEADER: &str = "x-deskpulse-inventory-limits";

/// Room kept below `max_bytes` for what wraps an inventory (the report's
/// key and times, the `unavailable` entries a cut adds).
const ENVELOPE_BYTES: u64 = 4 * 1024;

/// The limits of one inventory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Packages in `software.packages`.
    pub max_packages: u32,
    /// Services in `services.services`.
    pub max_services: u32,
    /// Accounts in `users.users`, and sessions in `users.sessions`.
    pub max_users: u32,
    /// The encoded report that carries the inventory, in bytes.
    pub max_bytes: u64,
}

/// How many items of each limited list a report carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Packages (in a delta: the upserted ones and a replaced list).
    pub packages: u64,
    /// Services (in a delta: the upserted ones and a replaced list).
    pub services: u64,
    /// Local accounts.
    pub users: u64,
    /// Open sessions.
    pub sessions: u64,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.packages += other.packages;
        self.services += other.services;
        self.users += other.users;
        self.sessions += other.sessions;
    }
}

/// `1234567` as `1,234,567`, for one-line messages.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A byte count for a person: `4 MiB`, `600 KiB`, `1,234 bytes`.
#[must_use]
pub fn bytes_text(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{} bytes", grouped(bytes))
    }
}

impl fmt::Display for Limits {
    /// The header's value: `packages=N,services=N,users=N,bytes=N`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "packages={},services={},users={},bytes={}",
            self.max_packages, self.max_services, self.max_users, self.max_bytes
        )
    }
}

impl std::str::FromStr for Limits {
    type Err = String;

    /// Parses the header's value; every key must be there, once.
    fn from_str(text: &str) -> Result<Self, String> {
        let (mut packages, mut services, mut users, mut bytes) = (None, None, None, None);
        for pair in text.split(',') {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("inventory limits {text:?}: {pair:?} is not key=value"))?;
            let number: u64 = value
                .trim()
                .parse()
                .map_err(|_| format!("inventory limits {text:?}: {key} is not a number"))?;
            let small = || {
                u32::try_from(number)
                    .map_err(|_| format!("inventory limits {text:?}: {key} is too large"))
            };
            let slot = match key.trim() {
                "packages" => packages.replace(small()?),
                "services" => services.replace(small()?),
                "users" => users.replace(small()?),
                "bytes" => bytes.replace(number).map(|_| 0),
                other => return Err(format!("inventory limits {text:?}: unknown key {other}")),
            };
            if slot.is_some() {
                return Err(format!("inventory limits {text:?}: {key} is given twice"));
            }
        }
        match (packages, services, users, bytes) {
            (Some(max_packages), Some(max_services), Some(max_users), Some(max_bytes)) => {
                Ok(Self {
                    max_packages,
                    max_services,
                    max_users,
                    max_bytes,
                })
            }
            _ => Err(format!(
                "inventory limits {text:?} must give packages, services, users and bytes"
            )),
        }
    }
}

impl Limits {
    /// Why a report with these counts is refused: one line naming the
    /// list, its count, the limit and the policy key; `None` within them.
    #[must_use]
    pub fn refusal(&self, counts: &Counts) -> Option<String> {
        let checks = [
            (
                counts.packages,
                self.max_packages,
                "packages",
                "max_packages",
            ),
            (
                counts.services,
                self.max_services,
                "services",
                "max_services",
            ),
            (counts.users, self.max_users, "local accounts", "max_users"),
            (
                counts.sessions,
                self.max_users,
                "user sessions",
                "max_users",
            ),
        ];
        checks
            .into_iter()
            .find(|(count, max, _, _)| *count > u64::from(*max))
            .map(|(count, max, what, key)| {
                format!(
                    "the inventory lists {} {what}, over the collector's limit of {} (policy inventory.{key}); the agent must send at most that many",
                    grouped(count),
                    grouped(u64::from(max))
                )
            })
    }

    /// Why a report of `bytes` encoded bytes is refused, if it is.
    #[must_use]
    pub fn size_refusal(&self, bytes: u64) -> Option<String> {
        (bytes > self.max_bytes).then(|| {
            format!(
                "the report is larger than the collector's limit of {} (policy inventory.max_bytes); the agent must send a smaller inventory",
                bytes_text(self.max_bytes)
            )
        })
    }
}

/// The limited lists of a decoded inventory.
#[must_use]
pub fn count_inventory(inventory: &Inventory) -> Counts {
    Counts {
        packages: inventory.software.as_ref().map_or(0, |s| s.packages.len()) as u64,
        services: inventory.services.as_ref().map_or(0, |s| s.services.len()) as u64,
        users: inventory.users.as_ref().map_or(0, |u| u.users.len()) as u64,
        sessions: inventory.users.as_ref().map_or(0, |u| u.sessions.len()) as u64,
    }
}

/// The limited lists of a decoded report: an inventory's, or what a delta
/// adds (upserted items and replaced sections; removals add nothing).
#[must_use]
pub fn count_decoded(report: &Report) -> Counts {
    match &report.payload {
        Some(Payload::Inventory(inventory)) => count_inventory(inventory),
        Some(Payload::InventoryDelta(delta)) => {
            let mut counts = delta
                .replaced
                .as_ref()
                .map(count_inventory)
                .unwrap_or_default();
            counts.packages += delta.packages_upserted.len() as u64;
            counts.services += delta.services_upserted.len() as u64;
            counts
        }
        _ => Counts::default(),
    }
}

/// The encoding does not parse as protobuf.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the report's encoding is not valid protobuf")]
pub struct ScanError;

fn varint(buf: &mut &[u8]) -> Result<u64, ScanError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = buf.split_first().ok_or(ScanError)?;
        *buf = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(ScanError)
}

/// Calls `field(number, bytes)` for each length-delimited field of one
/// message's encoding, skipping the others; nothing is copied.
fn scan<'a>(
    mut buf: &'a [u8],
    mut field: impl FnMut(u64, &'a [u8]) -> Result<(), ScanError>,
) -> Result<(), ScanError> {
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let skip = match key & 7 {
            0 => {
                varint(&mut buf)?;
                0
            }
            1 => 8,
            2 => {
                let len = usize::try_from(varint(&mut buf)?).map_err(|_| ScanError)?;
                let (bytes, rest) = buf.split_at_checked(len).ok_or(ScanError)?;
                buf = rest;
                field(key >> 3, bytes)?;
                0
            }
            5 => 4,
            _ => return Err(ScanError),
        };
        buf = buf.get(skip..).ok_or(ScanError)?;
    }
    Ok(())
}

/// Counts the occurrences of field `number` in one message's encoding.
fn occurrences(buf: &[u8], number: u64) -> Result<u64, ScanError> {
    let mut count = 0;
    scan(buf, |n, _| {
        count += u64::from(n == number);
        Ok(())
    })?;
    Ok(count)
}

/// An encoded `Inventory`'s limited lists. Repeated occurrences of a
/// section merge when decoded, so their items add up here too.
fn inventory_counts(buf: &[u8]) -> Result<Counts, ScanError> {
    let mut counts = Counts::default();
    scan(buf, |number, bytes| {
        match number {
            // software → packages (1)
            8 => counts.packages += occurrences(bytes, 1)?,
            // users → users (1) and sessions (2)
            11 => scan(bytes, |n, _| {
                counts.users += u64::from(n == 1);
                counts.sessions += u64::from(n == 2);
                Ok(())
            })?,
            // services → services (1)
            13 => counts.services += occurrences(bytes, 1)?,
            _ => {}
        }
        Ok(())
    })?;
    Ok(counts)
}

/// An encoded `Report`'s limited lists, read from the wire format alone:
/// what [`count_decoded`] gives for the decoded report, at no cost beyond
/// walking the bytes.
///
/// # Errors
/// When the bytes are not protobuf (the report would not decode either).
pub fn count_report(encoded: &[u8]) -> Result<Counts, ScanError> {
    let mut counts = Counts::default();
    scan(encoded, |number, bytes| {
        match number {
            // Report.inventory
            10 => counts.add(inventory_counts(bytes)?),
            // Report.inventory_delta: replaced (4), packages_upserted (6),
            // services_upserted (8)
            12 => scan(bytes, |n, inner| {
                match n {
                    4 => counts.add(inventory_counts(inner)?),
                    6 => counts.packages += 1,
                    8 => counts.services += 1,
                    _ => {}
                }
                Ok(())
            })?,
            _ => {}
        }
        Ok(())
    })?;
    Ok(counts)
}

/// The spool id and seq of a report from the first bytes of its encoding
/// (they are fields 1 and 2, written first), so a report refused before it
/// arrived whole can still be answered `Rejected` by its key. `None` when
/// the prefix does not hold both.
#[must_use]
pub fn report_key(prefix: &[u8]) -> Option<(String, u64)> {
    let mut buf = prefix;
    let (mut spool_id, mut seq) = (None, None);
    while spool_id.is_none() || seq.is_none() {
        let key = varint(&mut buf).ok()?;
        match (key >> 3, key & 7) {
            (1, 2) => {
                let len = usize::try_from(varint(&mut buf).ok()?).ok()?;
                let (bytes, rest) = buf.split_at_checked(len)?;
                spool_id = Some(String::from_utf8(bytes.to_vec()).ok()?);
                buf = rest;
            }
            (2, 0) => seq = Some(varint(&mut buf).ok()?),
            _ => return None,
        }
    }
    spool_id.zip(seq)
}

fn cut<T>(list: &mut Vec<T>, max: u32, field: &str, key: &str, notes: &mut Vec<Unavailable>) {
    let max = max as usize;
    if list.len() <= max {
        return;
    }
    notes.push(Unavailable {
        field: field.to_owned(),
        reason: UnavailableReason::Truncated as i32,
        detail: format!(
            "{} collected, the first {} sent: the collector's limit (policy inventory.{key})",
            grouped(list.len() as u64),
            grouped(max as u64)
        ),
    });
    list.truncate(max);
    list.shrink_to_fit();
}

/// Cuts a canonical inventory to `limits`: each list to its count, then
/// packages (the largest list) further until the encoding fits
/// `max_bytes`. Lists keep their order, so a cut inventory is canonical
/// and the same machine state cuts the same way (deltas stay small). Each
/// cut list is named in `unavailable` (`UNAVAILABLE_REASON_TRUNCATED`);
/// entries of an earlier cut are replaced. True when anything was cut.
pub fn truncate(inventory: &mut Inventory, limits: &Limits) -> bool {
    inventory
        .unavailable
        .retain(|u| u.reason != UnavailableReason::Truncated as i32);
    let mut notes = Vec::new();
    let collected_packages = inventory.software.as_ref().map_or(0, |s| s.packages.len());
    if let Some(software) = inventory.software.as_mut() {
        cut(
            &mut software.packages,
            limits.max_packages,
            "software.packages",
            "max_packages",
            &mut notes,
        );
    }
    if let Some(services) = inventory.services.as_mut() {
        cut(
            &mut services.services,
            limits.max_services,
            "services.services",
            "max_services",
            &mut notes,
        );
    }
    if let Some(users) = inventory.users.as_mut() {
        cut(
            &mut users.users,
            limits.max_users,
            "users.users",
            "max_users",
            &mut notes,
        );
        cut(
            &mut users.sessions,
            limits.max_users,
            "users.sessions",
            "max_users",
            &mut notes,
        );
    }
    let budget = limits.max_bytes.saturating_sub(ENVELOPE_BYTES);
    let mut size = inventory.encoded_len() as u64;
    if size > budget
        && let Some(software) = inventory.software.as_mut()
    {
        while size > budget && !software.packages.is_empty() {
            // Cut in proportion to the excess, a little more so one or two
            // rounds suffice; at least one package each round.
            let len = software.packages.len() as u64;
            let keep = (len * budget / size).saturating_mul(98) / 100;
            let keep = usize::try_from(keep.min(len - 1)).unwrap_or(0);
            let before = software.encoded_len() as u64;
            software.packages.truncate(keep);
            size -= before - software.encoded_len() as u64;
        }
        software.packages.shrink_to_fit();
        notes.retain(|n| n.field != "software.packages");
        notes.push(Unavailable {
            field: "software.packages".to_owned(),
            reason: UnavailableReason::Truncated as i32,
            detail: format!(
                "{} collected, the first {} sent: the collector's limit of {} per inventory (policy inventory.max_bytes)",
                grouped(collected_packages as u64),
                grouped(software.packages.len() as u64),
                bytes_text(limits.max_bytes)
            ),
        });
    }
    let truncated = !notes.is_empty();
    inventory.unavailable.extend(notes);
    truncated
}

#[cfg(test)]
mod tests;
