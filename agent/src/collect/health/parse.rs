//! Plain parsers behind the health sample: `/proc` text, `systemctl show`,
//! `smartctl -j` JSON, apt's history log and dpkg's log. No I/O here, so every one is
//! tested on fixtures.

use deskpulse_proto::v1::{DiskHealth, ServiceHealth, UnavailableReason};

/// The 1, 5 and 15 minute load averages of `/proc/loadavg`.
pub fn loadavg(text: &str) -> Option<(f32, f32, f32)> {
    let mut fields = text.split_whitespace().map(|f| f.parse::<f32>().ok());
    Some((fields.next()??, fields.next()??, fields.next()??))
}

/// Logical CPUs: the `cpuN` lines of `/proc/stat`, which the sampler reads
/// for CPU % anyway.
pub fn logical_cpus(stat: &str) -> u32 {
    let count = stat
        .lines()
        .filter(|l| {
            l.strip_prefix("cpu")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count();
    u32::try_from(count).unwrap_or(u32::MAX)
}

/// Swap in use, percent of `SwapTotal` in `/proc/meminfo`; 0 without swap.
pub fn swap_used_percent(meminfo: &str) -> f32 {
    let field = |key: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let (total, free) = (field("SwapTotal:"), field("SwapFree:"));
    if total == 0 {
        return 0.0;
    }
    total.saturating_sub(free) as f32 * 100.0 / total as f32
}

/// The watched services' states from `systemctl show
/// --property=LoadState,ActiveState -- NAMES...`, which prints one block
/// of `Key=value` lines per unit, in the order asked, separated by blank
/// lines. A unit systemd cannot find is "missing"; active, reloading and
/// activating are "running"; failed is "failed"; the rest "stopped".
/// `None` when the blocks do not match the names.
pub fn systemctl_show(text: &str, names: &[String]) -> Option<Vec<ServiceHealth>> {
    let blocks: Vec<&str> = text
        .split("\n\n")
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .collect();
    if blocks.len() != names.len() {
        return None;
    }
    let mut out = Vec::with_capacity(names.len());
    for (name, block) in names.iter().zip(blocks) {
        let value = |key: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .unwrap_or_default()
        };
        let state = match (value("LoadState"), value("ActiveState")) {
            ("", "") => return None,
            ("not-found", _) => "missing",
            (_, "active" | "reloading" | "activating") => "running",
            (_, "failed") => "failed",
            _ => "stopped",
        };
        out.push(ServiceHealth {
            name: name.clone(),
            state: state.to_owned(),
        });
    }
    Some(out)
}

/// A sysfs temperature in millidegrees Celsius, as degrees. Sensors that
/// are absent or broken read as errors or as absurd values; those are
/// dropped rather than reported as a fire.
pub fn millidegrees(text: &str) -> Option<f32> {
    let value = text.trim().parse::<i64>().ok()? as f32 / 1000.0;
    (-60.0..=200.0).contains(&value).then_some(value)
}

/// Why one disk has no SMART reading: the reason and one line saying so.
pub type SmartUnavailable = (UnavailableReason, String);

/// One disk's SMART health from `smartctl -j -H -A DEVICE` output. A disk
/// is reported only when smartctl gave an overall self-assessment
/// (`smart_status.passed`); anything else (a virtual disk, a device
/// smartctl cannot open, a USB bridge without SAT) is unavailable, with
/// smartctl's own message, never a "failed" disk.
pub fn smart(
    device: &str,
    json: &[u8],
    checked_at_unix_ms: i64,
) -> Result<DiskHealth, SmartUnavailable> {
    let doc: serde_json::Value = serde_json::from_slice(json).map_err(|e| {
        (
            UnavailableReason::Failed,
            format!("{device}: smartctl printed no JSON ({e})"),
        )
    })?;
    let Some(passed) = doc
        .pointer("/smart_status/passed")
        .and_then(serde_json::Value::as_bool)
    else {
        let messages: Vec<&str> = doc
            .pointer("/smartctl/messages")
            .and_then(serde_json::Value::as_array)
            .map(|m| {
                m.iter()
                    .filter_map(|m| m.get("string").and_then(serde_json::Value::as_str))
                    .collect()
            })
            .unwrap_or_default();
        let text = messages.join("; ");
        let lower = text.to_ascii_lowercase();
        let reason =
            if lower.contains("permission denied") || lower.contains("operation not permitted") {
                UnavailableReason::NotPermitted
            } else if lower.contains("no such device") || lower.contains("no such file") {
                UnavailableReason::NotPresent
            } else if lower.contains("unable to detect device type")
                || lower.contains("unsupported")
                || lower.contains("not supported")
                || lower.contains("unknown usb bridge")
            {
                UnavailableReason::NotSupported
            } else {
                UnavailableReason::Failed
            };
        let detail = if text.is_empty() {
            format!("{device}: smartctl gave no SMART health status")
        } else if text.contains(device) {
            format!("smartctl: {text}")
        } else {
            format!("{device}: smartctl: {text}")
        };
        return Err((reason, detail));
    };
    let text = |path: &str| {
        doc.pointer(path)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    let number = |path: &str| doc.pointer(path).and_then(serde_json::Value::as_u64);
    let nvme = doc.get("nvme_smart_health_information_log");
    let temperature = number("/temperature/current")
        .or_else(|| number("/nvme_smart_health_information_log/temperature"))
        .unwrap_or(0);
    let (reallocated, used) = if nvme.is_some() {
        (
            number("/nvme_smart_health_information_log/media_errors").unwrap_or(0),
            number("/nvme_smart_health_information_log/percentage_used").unwrap_or(0),
        )
    } else {
        let reallocated = doc
            .pointer("/ata_smart_attributes/table")
            .and_then(serde_json::Value::as_array)
            .and_then(|table| {
                table
                    .iter()
                    .find(|a| a.get("id").and_then(serde_json::Value::as_u64) == Some(5))
            })
            .and_then(|a| a.pointer("/raw/value"))
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        (reallocated, 0)
    };
    Ok(DiskHealth {
        device: device.to_owned(),
        model: text("/model_name"),
        serial: text("/serial_number"),
        passed,
        temperature_celsius: temperature as f32,
        reallocated_sectors: reallocated,
        percentage_used: u32::try_from(used).unwrap_or(u32::MAX),
        checked_at_unix_ms,
    })
}

/// Milliseconds since the epoch of `YYYY-MM-DD HH:MM:SS` (any run of
/// spaces between date and time). apt and dpkg write local time without a
/// zone; it is read as UTC, so the result can be off by the zone offset,
/// which rules counted in days do not notice.
pub fn naive_datetime_ms(text: &str) -> Option<i64> {
    let mut parts = text.split_whitespace();
    let (date, time) = (parts.next()?, parts.next()?);
    let mut d = date.split('-').map(|v| v.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':').map(|v| v.parse::<i64>().ok());
    let (h, min, s) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || min > 59 || s > 60 {
        return None;
    }
    // Howard Hinnant's days-from-civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400) + h * 3600 + min * 60 + s) * 1000)
}

/// The end of the last apt run that installed or upgraded packages without
/// an error, from `/var/log/apt/history.log`. Entries are blocks of
/// `Key: value` lines from `Start-Date:` to `End-Date:`.
pub fn apt_last_success(history: &str) -> Option<i64> {
    let mut last = None;
    let (mut changed, mut failed) = (false, false);
    for line in history.lines() {
        let line = line.trim_end();
        if line.starts_with("Start-Date:") {
            (changed, failed) = (false, false);
        } else if line.starts_with("Install:") || line.starts_with("Upgrade:") {
            changed = true;
        } else if line.starts_with("Error:") {
            failed = true;
        } else if let Some(end) = line.strip_prefix("End-Date:")
            && changed
            && !failed
            && let Some(at) = naive_datetime_ms(end)
        {
            last = Some(last.map_or(at, |l: i64| l.max(at)));
        }
    }
    last
}

/// The time of the last `status installed` line of `/var/log/dpkg.log`,
/// e.g. `2024-05-01 10:12:33 status installed libc6:amd64 2.36-9`.
pub fn dpkg_last_install(log: &str) -> Option<i64> {
    log.lines()
        .filter(|l| l.contains(" status installed "))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            naive_datetime_ms(&format!("{} {}", f.next()?, f.next()?))
        })
        .max()
}
