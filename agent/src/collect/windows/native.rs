//! The Windows adapter: WMI over COM (the `wmi` crate) and the registry
//! (`winreg`), in the agent's own process. It only reads: it turns WMI
//! variants into [`Cell`]s and registry values into JSON, and leaves every
//! decision to the plain code of [`super::snapshot`] and
//! [`super::apply_document`].

use std::collections::HashMap;
use std::sync::Mutex;

use deskpulse_proto::v1::{Inventory, SecurityInfo, UnavailableReason};
use serde_json::{Value, json};
use winreg::RegKey;
use winreg::enums::{HKEY_LOCAL_MACHINE, KEY_READ, KEY_WOW64_64KEY};
use wmi::{AuthLevel, Variant, WMIConnection, WMIError};

use super::snapshot::{
    ADMIN_GROUP_QUERY, ADMIN_MEMBER_FIELDS, BITLOCKER_NAMESPACE, Cell, Document, Failure,
    INVENTORY_QUERIES, NET_ADAPTER_FALLBACK, Query, SECURITY_QUERIES, SESSION_QUERY,
    adapters_from_win32, group_members_wql,
};
use crate::collect::unavailable;

const NT_CURRENT_VERSION: &str = r"SOFTWARE\Microsoft\Windows NT\CurrentVersion";
const LOGON_UI: &str = r"SOFTWARE\Microsoft\Windows\CurrentVersion\Authentication\LogonUI";
const TIME_ZONE: &str = r"SYSTEM\CurrentControlSet\Control\TimeZoneInformation";

/// Registry keys whose presence means a reboot is pending, by the name
/// the document gives each flag.
const REBOOT_KEYS: &[(&str, &str)] = &[
    (
        "component-servicing",
        r"SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending",
    ),
    (
        "windows-update",
        r"SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired",
    ),
];

/// One WMI connection per namespace for the length of a collection:
/// connecting costs 20-50 ms, a query about 1 ms.
#[derive(Default)]
struct Connections {
    open: HashMap<&'static str, Result<WMIConnection, (Failure, String)>>,
}

impl Connections {
    fn get(&mut self, namespace: &'static str) -> Result<&WMIConnection, (Failure, String)> {
        self.open
            .entry(namespace)
            .or_insert_with(|| connect(namespace))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Runs a query into the document, or records why it gave nothing.
    fn query(&mut self, doc: &mut Document, query: &Query) -> Option<Vec<Vec<(String, Cell)>>> {
        let rows = self
            .get(query.namespace)
            .and_then(|conn| rows(conn, &query.wql()).map_err(|e| failure_of(&e)));
        match rows {
            Ok(rows) => {
                doc.rows(query, &rows);
                Some(rows)
            }
            Err((failure, detail)) => {
                doc.failed(query, failure, &detail);
                None
            }
        }
    }
}

fn connect(namespace: &str) -> Result<WMIConnection, (Failure, String)> {
    let named = |error: WMIError| {
        let (failure, detail) = failure_of(&error);
        (failure, format!("WMI namespace {namespace}: {detail}"))
    };
    let conn = WMIConnection::with_namespace_path(namespace).map_err(named)?;
    if namespace == BITLOCKER_NAMESPACE {
        // BitLocker's provider refuses calls that are not encrypted.
        conn.set_proxy_blanket(AuthLevel::PktPrivacy)
            .map_err(named)?;
    }
    Ok(conn)
}

fn failure_of(error: &WMIError) -> (Failure, String) {
    match error {
        WMIError::HResultError { hres } => {
            (Failure::of_hresult(*hres), Failure::describe_hresult(*hres))
        }
        _ => (Failure::Failed, error.to_string()),
    }
}

fn rows(conn: &WMIConnection, wql: &str) -> Result<Vec<Vec<(String, Cell)>>, WMIError> {
    let rows: Vec<HashMap<String, Variant>> = conn.raw_query(wql)?;
    Ok(rows
        .into_iter()
        .map(|row| row.into_iter().map(|(k, v)| (k, cell(v))).collect())
        .collect())
}

fn cell(variant: Variant) -> Cell {
    match variant {
        Variant::Empty | Variant::Null => Cell::Null,
        Variant::String(s) => Cell::Text(s),
        Variant::I1(n) => Cell::Int(n.into()),
        Variant::I2(n) => Cell::Int(n.into()),
        Variant::I4(n) => Cell::Int(n.into()),
        Variant::I8(n) => Cell::Int(n),
        Variant::UI1(n) => Cell::UInt(n.into()),
        Variant::UI2(n) => Cell::UInt(n.into()),
        Variant::UI4(n) => Cell::UInt(n.into()),
        Variant::UI8(n) => Cell::UInt(n),
        Variant::R4(x) => Cell::Real(x.into()),
        Variant::R8(x) => Cell::Real(x),
        Variant::Bool(b) => Cell::Bool(b),
        Variant::Array(items) => Cell::List(items.into_iter().map(cell).collect()),
        Variant::Unknown(_) => Cell::Other("an unknown COM object"),
        Variant::Object(_) => Cell::Other("an embedded WMI object"),
    }
}

/// One WMI collection at a time in this process: an inventory and a
/// posture probe can overlap on the blocking pool, and Wine's WMI provider
/// crashes when two threads query it at once. Windows' own would not mind;
/// the wait is a few milliseconds either way.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Fills the Windows sections from WMI and the registry. Nothing here
/// fails the inventory: a class or key that is missing or denied becomes
/// an unavailable entry with its reason.
pub fn collect(inv: &mut Inventory) {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut conns = Connections::default();
    let mut doc = Document::default();
    for query in INVENTORY_QUERIES.iter().chain(SECURITY_QUERIES) {
        conns.query(&mut doc, query);
    }
    let adapters = NET_ADAPTER_FALLBACK.key;
    if doc.get(adapters).is_none() && conns.query(&mut doc, &NET_ADAPTER_FALLBACK).is_some() {
        let rows = doc.get(adapters).cloned().unwrap_or_default();
        doc.set(adapters, adapters_from_win32(&rows));
        doc.clear_failure(adapters);
    }
    os_registry(&mut doc);
    sessions(&mut conns, &mut doc);
    admins(&mut conns, &mut doc);
    last_logon(&mut doc);
    doc.set("reboot_flags", reboot_flags());
    pending_updates(&mut doc);
    if let Err(error) = super::apply_document(&doc.finish(), inv) {
        unavailable(inv, "system", UnavailableReason::Failed, error);
    }
}

/// The security section alone, for the health sampler's posture: three
/// queries and two registry keys, cheap enough for its interval.
pub fn security_now(inv: &mut Inventory) -> SecurityInfo {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut conns = Connections::default();
    let mut doc = Document::default();
    for query in SECURITY_QUERIES {
        conns.query(&mut doc, query);
    }
    doc.set("reboot_flags", reboot_flags());
    pending_updates(&mut doc);
    super::security(&doc.finish(), inv)
}

/// The Windows Update Agent's count, kept for an hour
/// ([`super::updates`]).
fn pending_updates(doc: &mut Document) {
    match super::updates::pending() {
        Ok(count) => doc.set("pending_updates", json!(count)),
        Err((failure, detail)) => doc.failed_key("pending_updates", failure, &detail),
    }
}

fn hklm(path: &str) -> std::io::Result<RegKey> {
    // The 64-bit view, whatever this build's bitness: that is where the
    // OS keeps these values.
    RegKey::predef(HKEY_LOCAL_MACHINE).open_subkey_with_flags(path, KEY_READ | KEY_WOW64_64KEY)
}

/// A REG_SZ or REG_DWORD value as JSON; null when absent or of another
/// type.
fn reg_value(key: &RegKey, name: &str) -> Value {
    if let Ok(text) = key.get_value::<String, _>(name) {
        Value::String(text)
    } else if let Ok(number) = key.get_value::<u32, _>(name) {
        json!(number)
    } else {
        Value::Null
    }
}

/// The update revision, the marketing version and the time zone, which
/// WMI does not know.
fn os_registry(doc: &mut Document) {
    match hklm(NT_CURRENT_VERSION) {
        Ok(key) => {
            doc.set_field("os", "UBR", reg_value(&key, "UBR"));
            doc.set_field("os", "DisplayVersion", reg_value(&key, "DisplayVersion"));
        }
        Err(error) => doc.unreadable("os.build", &format!(r"HKLM\{NT_CURRENT_VERSION}: {error}")),
    }
    if let Ok(key) = hklm(TIME_ZONE) {
        doc.set_field("os", "TimeZone", reg_value(&key, "TimeZoneKeyName"));
    }
}

fn last_logon(doc: &mut Document) {
    let value = match hklm(LOGON_UI) {
        Ok(key) => json!({
            "User": reg_value(&key, "LastLoggedOnUser"),
            "SID": reg_value(&key, "LastLoggedOnUserSID"),
        }),
        Err(_) => Value::Null,
    };
    doc.set("last_logon", value);
}

fn reboot_flags() -> Value {
    let mut flags: Vec<Value> = REBOOT_KEYS
        .iter()
        .filter(|(_, path)| hklm(path).is_ok())
        .map(|(flag, _)| json!(flag))
        .collect();
    let renames = hklm(r"SYSTEM\CurrentControlSet\Control\Session Manager")
        .and_then(|key| key.get_raw_value("PendingFileRenameOperations"));
    if renames.is_ok_and(|raw| raw.bytes.iter().any(|b| *b != 0)) {
        flags.push(json!("file-rename"));
    }
    Value::Array(flags)
}

/// Signed-in desktop sessions: each explorer.exe, its owner (the
/// `GetOwner` method) and its start.
fn sessions(conns: &mut Connections, doc: &mut Document) {
    let query = &SESSION_QUERY;
    let conn = match conns.get(query.namespace) {
        Ok(conn) => conn,
        Err((failure, detail)) => return doc.failed(query, failure, &detail),
    };
    let rows = match rows(conn, &query.wql()) {
        Ok(rows) => rows,
        Err(error) => {
            let (failure, detail) = failure_of(&error);
            return doc.failed(query, failure, &detail);
        }
    };
    let mut sessions = Vec::new();
    for row in &rows {
        let object = doc.object(query.section, query.class, query.fields, row);
        let Some(handle) = object["Handle"].as_str() else {
            continue;
        };
        let path = format!("Win32_Process.Handle=\"{handle}\"");
        let owner = conn.exec_method(&path, "GetOwner", None).ok().flatten();
        let property = |name: &str| match owner.as_ref().map(|o| o.get_property(name)) {
            Some(Ok(Variant::String(text))) => text,
            _ => String::new(),
        };
        sessions.push(json!({
            "user": property("User"),
            "domain": property("Domain"),
            "started": object["CreationDate"],
            "session": object["SessionId"],
        }));
    }
    doc.set(query.key, Value::Array(sessions));
}

/// Members of the built-in Administrators group.
fn admins(conns: &mut Connections, doc: &mut Document) {
    let group = conns
        .get(ADMIN_GROUP_QUERY.namespace)
        .and_then(|conn| rows(conn, &ADMIN_GROUP_QUERY.wql()).map_err(|e| failure_of(&e)));
    let members = group.and_then(|group| {
        let Some(row) = group.first() else {
            return Err((Failure::NotPresent, "no group with SID S-1-5-32-544".into()));
        };
        let group = doc.object(
            ADMIN_GROUP_QUERY.section,
            ADMIN_GROUP_QUERY.class,
            ADMIN_GROUP_QUERY.fields,
            row,
        );
        let name = group["Name"].as_str().unwrap_or("Administrators");
        let domain = group["Domain"].as_str().unwrap_or("BUILTIN");
        let conn = conns.get(ADMIN_GROUP_QUERY.namespace)?;
        rows(conn, &group_members_wql(name, domain)).map_err(|e| failure_of(&e))
    });
    match members {
        Ok(members) => {
            let admins = members
                .iter()
                .map(|row| doc.object("users.admins", "Win32_GroupUser", ADMIN_MEMBER_FIELDS, row))
                .collect();
            doc.set("admins", Value::Array(admins));
        }
        Err((failure, detail)) => {
            doc.failed_key(
                "admins",
                failure,
                &format!("Administrators group: {detail}"),
            );
        }
    }
}
