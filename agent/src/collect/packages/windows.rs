//! Windows software from the registry's Uninstall keys, 64-bit
//! (`HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall`), 32-bit
//! (`HKLM\SOFTWARE\WOW6432Node\…\Uninstall`) and per user
//! (`HKU\<SID>\…\Uninstall`), plus hotfixes.
//!
//! Everything works on [`RegKeys`], a map of key paths to values. The
//! Windows adapter fills it by reading the keys in process (`winreg`, no
//! `reg.exe`); the fixture tests fill it from `.reg` export text, as
//! regedit and `reg export` write it (UTF-16LE with a BOM, or UTF-8),
//! through [`parse_reg`]. [`uninstall_entries`] is the same code for both.

use std::collections::BTreeMap;

use deskpulse_proto::v1::{Hotfix, Package};

/// A registry value as exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegValue {
    /// REG_SZ.
    String(String),
    /// REG_DWORD.
    Dword(u32),
    /// REG_EXPAND_SZ or REG_MULTI_SZ, decoded.
    Strings(Vec<String>),
    /// Any other type, raw bytes.
    Binary(Vec<u8>),
}

/// Key path → (value name → value), in file order of keys.
pub type RegKeys = BTreeMap<String, BTreeMap<String, RegValue>>;

/// Decodes the bytes of a `.reg` file: UTF-16LE with BOM, or UTF-8.
pub fn decode(bytes: &[u8]) -> String {
    if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        let units: Vec<u16> = rest
            .chunks_exact(2)
            .map(|p| u16::from_le_bytes([p[0], p[1]]))
            .collect();
        return String::from_utf16_lossy(&units);
    }
    String::from_utf8_lossy(bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)).into_owned()
}

fn unquote(text: &str) -> Option<(String, &str)> {
    let rest = text.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = rest.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                if let Some((_, next)) = chars.next() {
                    out.push(next);
                }
            }
            '"' => return Some((out, &rest[i + 1..])),
            c => out.push(c),
        }
    }
    None
}

fn hex_bytes(text: &str) -> Vec<u8> {
    text.split(',')
        .filter_map(|b| u8::from_str_radix(b.trim(), 16).ok())
        .collect()
}

fn utf16_strings(bytes: &[u8]) -> Vec<String> {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|p| u16::from_le_bytes([p[0], p[1]]))
        .collect();
    String::from_utf16_lossy(&units)
        .split('\0')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn parse_value(data: &str) -> Option<RegValue> {
    if let Some((s, _)) = unquote(data) {
        return Some(RegValue::String(s));
    }
    if let Some(hex) = data.strip_prefix("dword:") {
        return u32::from_str_radix(hex.trim(), 16)
            .ok()
            .map(RegValue::Dword);
    }
    if let Some(hex) = data
        .strip_prefix("hex(2):")
        .or_else(|| data.strip_prefix("hex(7):"))
    {
        return Some(RegValue::Strings(utf16_strings(&hex_bytes(hex))));
    }
    let (_, hex) = data.split_once(':')?;
    Some(RegValue::Binary(hex_bytes(hex)))
}

/// Parses `.reg` export text into keys and values. Unknown lines are
/// skipped; a value line may continue over lines ending in `\`.
pub fn parse_reg(text: &str) -> RegKeys {
    let mut keys = RegKeys::new();
    let mut current: Option<String> = None;
    let mut pending = String::new();
    for raw in text.lines() {
        let line = raw.trim_end_matches('\r');
        if let Some(cont) = line.strip_suffix('\\')
            && !pending.is_empty() | line.contains('=')
        {
            pending.push_str(cont.trim_start());
            continue;
        }
        let line = if pending.is_empty() {
            line.trim().to_owned()
        } else {
            let joined = format!("{pending}{}", line.trim_start());
            pending.clear();
            joined
        };
        if let Some(path) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            if path.starts_with('-') {
                current = None;
                continue;
            }
            keys.entry(path.to_owned()).or_default();
            current = Some(path.to_owned());
            continue;
        }
        let Some(key) = &current else { continue };
        let (name, data) = if let Some(rest) = line.strip_prefix('@') {
            (String::new(), rest.strip_prefix('=').unwrap_or(""))
        } else if let Some((name, rest)) = unquote(&line) {
            (name, rest.strip_prefix('=').unwrap_or(""))
        } else {
            continue;
        };
        if let Some(value) = parse_value(data)
            && let Some(values) = keys.get_mut(key)
        {
            values.insert(name, value);
        }
    }
    keys
}

fn text(values: &BTreeMap<String, RegValue>, name: &str) -> String {
    match values.get(name) {
        Some(RegValue::String(s)) => s.trim().to_owned(),
        Some(RegValue::Strings(list)) => list.first().cloned().unwrap_or_default(),
        _ => String::new(),
    }
}

/// `YYYYMMDD` as seconds since the epoch (midnight UTC), 0 when malformed.
pub fn install_date(value: &str) -> i64 {
    let v = value.trim();
    if v.len() != 8 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    let (y, m, d) = (
        v[..4].parse::<i64>().unwrap_or(0),
        v[4..6].parse::<i64>().unwrap_or(0),
        v[6..].parse::<i64>().unwrap_or(0),
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return 0;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe - 719_468) * 86_400
}

/// Where an Uninstall key sits: 64-bit, 32-bit or per user.
fn source_of(path: &str) -> &'static str {
    let upper = path.to_ascii_uppercase();
    if upper.starts_with("HKEY_USERS") || upper.starts_with("HKEY_CURRENT_USER") {
        "registry-user"
    } else if upper.contains("WOW6432NODE") {
        "registry-hklm-32"
    } else {
        "registry-hklm-64"
    }
}

/// Installed programs from the Uninstall keys, as "Apps & features" lists
/// them: entries with a DisplayName, minus system components and updates
/// that belong to a parent entry.
pub fn uninstall_entries(keys: &RegKeys) -> Vec<Package> {
    let mut out = Vec::new();
    for (path, values) in keys {
        let Some((parent, _)) = path.rsplit_once('\\') else {
            continue;
        };
        if !parent.to_ascii_lowercase().ends_with("\\uninstall") {
            continue;
        }
        let name = text(values, "DisplayName");
        if name.is_empty()
            || matches!(values.get("SystemComponent"), Some(RegValue::Dword(1)))
            || !text(values, "ParentKeyName").is_empty()
        {
            continue;
        }
        out.push(Package {
            ecosystem: "windows".into(),
            name,
            version: text(values, "DisplayVersion"),
            arch: if source_of(path) == "registry-hklm-32" {
                "x86".into()
            } else {
                String::new()
            },
            publisher: text(values, "Publisher"),
            install_date_unix_s: install_date(&text(values, "InstallDate")),
            source: source_of(path).into(),
            ..Package::default()
        });
    }
    out
}

/// Hotfixes from `Get-CimInstance Win32_QuickFixEngineering | ConvertTo-Json`.
pub fn hotfixes(json: &str) -> Vec<Hotfix> {
    hotfixes_from(&serde_json::from_str(json).unwrap_or_default())
}

/// Hotfixes from an already parsed array (or single object, as
/// `ConvertTo-Json` writes a one-element list).
pub fn hotfixes_from(value: &serde_json::Value) -> Vec<Hotfix> {
    one_or_many(value)
        .iter()
        .filter_map(|h| {
            let id = h["HotFixID"].as_str()?.trim().to_owned();
            // InstalledOn comes as M/D/YYYY text, or a CIM date object.
            let date = h["InstalledOn"]["DateTime"]
                .as_str()
                .or(h["InstalledOn"].as_str())
                .unwrap_or("");
            let parts: Vec<&str> = date
                .split(|c: char| c == '/' || c.is_whitespace())
                .collect();
            let installed = match parts.as_slice() {
                [m, d, y, ..] => install_date(&format!("{y:0>4}{m:0>2}{d:0>2}")),
                _ => 0,
            };
            Some(Hotfix {
                id,
                description: h["Description"].as_str().unwrap_or("").to_owned(),
                installed_unix_s: installed,
            })
        })
        .collect()
}

/// The items of a JSON array, or the value itself when `ConvertTo-Json`
/// collapsed a one-element list into an object; nothing for null.
pub fn one_or_many(value: &serde_json::Value) -> Vec<&serde_json::Value> {
    match value {
        serde_json::Value::Array(items) => items.iter().collect(),
        serde_json::Value::Null => Vec::new(),
        single => vec![single],
    }
}

#[cfg(windows)]
pub use adapter::collect;

/// The thin Windows adapter: read each Uninstall root, both registry
/// views and every loaded user hive, into [`RegKeys`].
#[cfg(windows)]
mod adapter {
    use std::collections::BTreeMap;

    use deskpulse_proto::v1::Package;
    use winreg::enums::{HKEY_LOCAL_MACHINE, HKEY_USERS, KEY_READ, KEY_WOW64_64KEY, RegType};
    use winreg::{RegKey, RegValue as RawValue};

    use super::{RegKeys, RegValue};

    const UNINSTALL: &str = r"SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall";

    /// A value as the parser knows it.
    fn value(raw: &RawValue) -> RegValue {
        let utf16 = || super::utf16_strings(&raw.bytes);
        match raw.vtype {
            RegType::REG_SZ | RegType::REG_EXPAND_SZ => {
                RegValue::String(utf16().into_iter().next().unwrap_or_default())
            }
            RegType::REG_MULTI_SZ => RegValue::Strings(utf16()),
            RegType::REG_DWORD if raw.bytes.len() == 4 => RegValue::Dword(u32::from_le_bytes([
                raw.bytes[0],
                raw.bytes[1],
                raw.bytes[2],
                raw.bytes[3],
            ])),
            _ => RegValue::Binary(raw.bytes.to_vec()),
        }
    }

    /// Every subkey of `root\path` with its values, under the path the
    /// parser expects (`HKEY_LOCAL_MACHINE\...`, with `WOW6432Node` for
    /// the 32-bit view, as an export names it).
    fn read(root: &RegKey, shown: &str, path: &str, flags: u32, keys: &mut RegKeys) {
        let Ok(uninstall) = root.open_subkey_with_flags(path, KEY_READ | flags) else {
            return;
        };
        for name in uninstall.enum_keys().flatten() {
            let Ok(entry) = uninstall.open_subkey_with_flags(&name, KEY_READ | flags) else {
                continue;
            };
            let values: BTreeMap<String, RegValue> = entry
                .enum_values()
                .flatten()
                .map(|(name, raw)| (name, value(&raw)))
                .collect();
            keys.insert(format!(r"{shown}\{name}"), values);
        }
    }

    /// Installed programs of the machine and of every loaded user hive.
    pub fn collect() -> Vec<Package> {
        let mut keys = RegKeys::new();
        let hklm = RegKey::predef(HKEY_LOCAL_MACHINE);
        read(
            &hklm,
            &format!(r"HKEY_LOCAL_MACHINE\{UNINSTALL}"),
            UNINSTALL,
            KEY_WOW64_64KEY,
            &mut keys,
        );
        // The 32-bit programs' key, named by its physical path rather than
        // through KEY_WOW64_32KEY: where there is no WOW64 (Wine's 64-bit
        // prefix) the flag is ignored and would list every 64-bit program
        // twice; the physical path simply does not exist there.
        let wow = r"SOFTWARE\WOW6432Node\Microsoft\Windows\CurrentVersion\Uninstall";
        read(
            &hklm,
            &format!(r"HKEY_LOCAL_MACHINE\{wow}"),
            wow,
            KEY_WOW64_64KEY,
            &mut keys,
        );
        let users = RegKey::predef(HKEY_USERS);
        for sid in users.enum_keys().flatten() {
            // Real accounts only; `_Classes` hives hold no Uninstall key.
            if sid.starts_with("S-1-5-21-") && !sid.ends_with("_Classes") {
                read(
                    &users,
                    &format!(r"HKEY_USERS\{sid}\{UNINSTALL}"),
                    &format!(r"{sid}\{UNINSTALL}"),
                    0,
                    &mut keys,
                );
            }
        }
        super::uninstall_entries(&keys)
    }
}

#[cfg(test)]
mod tests;
