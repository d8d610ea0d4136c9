//! The snapshot document, built in the agent's own process: which WMI
//! classes and registry values make it, and how their raw values become
//! the JSON that [`super::apply_snapshot`] reads.
//!
//! Plain code, compiled and tested on every OS: the Windows adapter
//! (`native.rs`) runs each [`Query`] through WMI and hands the rows here as
//! [`Cell`]s; tests hand fixture rows. A value of the wrong type, a NULL
//! where a value belongs, or a date that is not a CIM datetime becomes a
//! one-line entry in the document's `malformed` list and a null field,
//! never a failed inventory. A class that is missing or denied is a
//! `failed` entry with its reason.

use serde_json::{Map, Value, json};

/// One WMI property value as the adapter read it, in WMI's own variant
/// types (VT_BSTR, VT_I4, VT_UI8, VT_BOOL, arrays, ...).
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// VT_NULL or VT_EMPTY: the provider gave no value.
    Null,
    /// VT_BSTR; CIM datetimes and uint64s also arrive as text.
    Text(String),
    /// Any signed integer type.
    Int(i64),
    /// Any unsigned integer type.
    UInt(u64),
    /// VT_R4 or VT_R8.
    Real(f64),
    /// VT_BOOL.
    Bool(bool),
    /// A SAFEARRAY.
    List(Vec<Cell>),
    /// A type the snapshot never expects (an embedded object, say), named.
    Other(&'static str),
}

impl Cell {
    fn describe(&self) -> String {
        match self {
            Cell::Null => "NULL".into(),
            Cell::Text(text) => format!("text {:?}", truncated(text)),
            Cell::Int(n) => format!("integer {n}"),
            Cell::UInt(n) => format!("integer {n}"),
            Cell::Real(x) => format!("real {x}"),
            Cell::Bool(b) => format!("boolean {b}"),
            Cell::List(items) => format!("a list of {}", items.len()),
            Cell::Other(kind) => (*kind).to_owned(),
        }
    }
}

fn truncated(text: &str) -> String {
    text.chars().take(40).collect()
}

/// What a property holds, so a value of another type is caught here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string; numbers are accepted and written as text.
    Text,
    /// An unsigned or signed number; numeric text is accepted (CIM sends
    /// uint64 as text).
    Number,
    /// A boolean; 0/1 are accepted, as some providers use uint16 flags.
    Flag,
    /// A CIM datetime (`yyyymmddHHMMSS.mmmmmmsUUU`), written as Unix
    /// seconds.
    Date,
    /// A list of strings.
    TextList,
    /// A list of numbers.
    NumberList,
}

/// One WMI query whose rows go into the document under `key`.
#[derive(Debug, Clone, Copy)]
pub struct Query {
    /// The document key [`super::apply_snapshot`] reads.
    pub key: &'static str,
    /// The WMI namespace.
    pub namespace: &'static str,
    /// The class.
    pub class: &'static str,
    /// A WQL condition, or empty.
    pub filter: &'static str,
    /// The properties asked for, with their kinds.
    pub fields: &'static [(&'static str, Kind)],
    /// True for a class with one instance (the document holds an object,
    /// not a list).
    pub single: bool,
    /// The inventory section a failure of this query is reported under.
    pub section: &'static str,
}

impl Query {
    /// The WQL text: only the properties the parser reads, so the
    /// provider computes nothing else.
    pub fn wql(&self) -> String {
        let fields: Vec<&str> = self.fields.iter().map(|(name, _)| *name).collect();
        let mut wql = format!("SELECT {} FROM {}", fields.join(", "), self.class);
        if !self.filter.is_empty() {
            wql.push_str(" WHERE ");
            wql.push_str(self.filter);
        }
        wql
    }
}

const CIMV2: &str = r"ROOT\CIMV2";
const STANDARD_CIMV2: &str = r"ROOT\StandardCimv2";
const ROOT_WMI: &str = r"ROOT\WMI";

use Kind::{Date, Flag, Number, NumberList, Text, TextList};

/// Hardware, OS, users and services: every query of a full inventory
/// but the security ones ([`SECURITY_QUERIES`]).
pub const INVENTORY_QUERIES: &[Query] = &[
    Query {
        key: "computer_system",
        namespace: CIMV2,
        class: "Win32_ComputerSystem",
        filter: "",
        fields: &[
            ("Manufacturer", Text),
            ("Model", Text),
            ("Domain", Text),
            ("PartOfDomain", Flag),
            ("Workgroup", Text),
            ("TotalPhysicalMemory", Number),
        ],
        single: true,
        section: "system",
    },
    Query {
        key: "bios",
        namespace: CIMV2,
        class: "Win32_BIOS",
        filter: "",
        fields: &[
            ("Manufacturer", Text),
            ("SMBIOSBIOSVersion", Text),
            ("SerialNumber", Text),
            ("ReleaseDate", Date),
        ],
        single: true,
        section: "system",
    },
    Query {
        key: "product",
        namespace: CIMV2,
        class: "Win32_ComputerSystemProduct",
        filter: "",
        fields: &[("UUID", Text), ("IdentifyingNumber", Text)],
        single: true,
        section: "system",
    },
    Query {
        key: "baseboard",
        namespace: CIMV2,
        class: "Win32_BaseBoard",
        filter: "",
        fields: &[
            ("Manufacturer", Text),
            ("Product", Text),
            ("SerialNumber", Text),
        ],
        single: true,
        section: "system",
    },
    Query {
        key: "enclosure",
        namespace: CIMV2,
        class: "Win32_SystemEnclosure",
        filter: "",
        fields: &[("ChassisTypes", NumberList)],
        single: false,
        section: "system.chassis_type",
    },
    Query {
        key: "processors",
        namespace: CIMV2,
        class: "Win32_Processor",
        filter: "",
        fields: &[
            ("Name", Text),
            ("Manufacturer", Text),
            ("NumberOfCores", Number),
            ("NumberOfLogicalProcessors", Number),
            ("MaxClockSpeed", Number),
            ("Architecture", Number),
        ],
        single: false,
        section: "cpu",
    },
    Query {
        key: "os",
        namespace: CIMV2,
        class: "Win32_OperatingSystem",
        filter: "",
        fields: &[
            ("Caption", Text),
            ("Version", Text),
            ("BuildNumber", Text),
            ("OSArchitecture", Text),
            ("InstallDate", Date),
            ("LastBootUpTime", Date),
            ("FreePhysicalMemory", Number),
        ],
        single: true,
        section: "os",
    },
    Query {
        key: "page_files",
        namespace: CIMV2,
        class: "Win32_PageFileUsage",
        filter: "",
        fields: &[("Name", Text), ("AllocatedBaseSize", Number)],
        single: false,
        section: "memory.swap_total_bytes",
    },
    Query {
        key: "memory_modules",
        namespace: CIMV2,
        class: "Win32_PhysicalMemory",
        filter: "",
        fields: &[
            ("DeviceLocator", Text),
            ("BankLabel", Text),
            ("Capacity", Number),
            ("SMBIOSMemoryType", Number),
            ("Speed", Number),
            ("ConfiguredClockSpeed", Number),
            ("Manufacturer", Text),
            ("PartNumber", Text),
            ("SerialNumber", Text),
        ],
        single: false,
        section: "memory.modules",
    },
    Query {
        key: "disk_drives",
        namespace: CIMV2,
        class: "Win32_DiskDrive",
        filter: "",
        fields: &[
            ("Index", Number),
            ("Model", Text),
            ("SerialNumber", Text),
            ("Size", Number),
            ("InterfaceType", Text),
            ("MediaType", Text),
        ],
        single: false,
        section: "storage.disks",
    },
    Query {
        key: "physical_disks",
        namespace: r"ROOT\Microsoft\Windows\Storage",
        class: "MSFT_PhysicalDisk",
        filter: "",
        fields: &[
            ("DeviceId", Text),
            ("MediaType", Number),
            ("BusType", Number),
        ],
        single: false,
        section: "storage.disks.kind",
    },
    Query {
        key: "net_adapters",
        namespace: STANDARD_CIMV2,
        class: "MSFT_NetAdapter",
        filter: "HardwareInterface = TRUE",
        fields: &[
            ("Name", Text),
            ("InterfaceDescription", Text),
            ("InterfaceIndex", Number),
            ("MacAddress", Text),
            ("MediaConnectState", Number),
            ("Speed", Number),
            ("NdisPhysicalMedium", Number),
        ],
        single: false,
        section: "network.interfaces",
    },
    Query {
        key: "net_configs",
        namespace: CIMV2,
        class: "Win32_NetworkAdapterConfiguration",
        filter: "IPEnabled = TRUE",
        fields: &[
            ("InterfaceIndex", Number),
            ("IPAddress", TextList),
            ("DefaultIPGateway", TextList),
            ("DNSServerSearchOrder", TextList),
        ],
        single: false,
        section: "network",
    },
    Query {
        key: "video",
        namespace: CIMV2,
        class: "Win32_VideoController",
        filter: "",
        fields: &[
            ("Name", Text),
            ("AdapterCompatibility", Text),
            ("DriverVersion", Text),
        ],
        single: false,
        section: "gpu",
    },
    Query {
        key: "battery_static",
        namespace: ROOT_WMI,
        class: "BatteryStaticData",
        filter: "",
        fields: &[
            ("InstanceName", Text),
            ("DeviceName", Text),
            ("ManufactureName", Text),
            ("DesignedCapacity", Number),
        ],
        single: false,
        section: "battery",
    },
    Query {
        key: "battery_full",
        namespace: ROOT_WMI,
        class: "BatteryFullChargedCapacity",
        filter: "",
        fields: &[("InstanceName", Text), ("FullChargedCapacity", Number)],
        single: false,
        section: "battery",
    },
    Query {
        key: "battery_cycles",
        namespace: ROOT_WMI,
        class: "BatteryCycleCount",
        filter: "",
        fields: &[("InstanceName", Text), ("CycleCount", Number)],
        single: false,
        section: "battery",
    },
    Query {
        key: "accounts",
        namespace: CIMV2,
        class: "Win32_UserAccount",
        filter: "LocalAccount = TRUE",
        fields: &[
            ("Name", Text),
            ("FullName", Text),
            ("SID", Text),
            ("Disabled", Flag),
        ],
        single: false,
        section: "users",
    },
    Query {
        key: "profiles",
        namespace: CIMV2,
        class: "Win32_UserProfile",
        filter: "",
        fields: &[("SID", Text), ("LastUseTime", Date)],
        single: false,
        section: "users.last_login_unix_s",
    },
    Query {
        key: "services",
        namespace: CIMV2,
        class: "Win32_Service",
        filter: "",
        fields: &[
            ("Name", Text),
            ("DisplayName", Text),
            ("State", Text),
            ("StartMode", Text),
        ],
        single: false,
        section: "services",
    },
    Query {
        key: "hotfixes",
        namespace: CIMV2,
        class: "Win32_QuickFixEngineering",
        filter: "",
        fields: &[
            ("HotFixID", Text),
            ("Description", Text),
            ("InstalledOn", Text),
        ],
        single: false,
        section: "software.hotfixes",
    },
];

/// Network adapters where `MSFT_NetAdapter` does not exist (Windows 7,
/// Wine): the older class, mapped to the newer one's shape by
/// [`adapters_from_win32`].
pub const NET_ADAPTER_FALLBACK: Query = Query {
    key: "net_adapters",
    namespace: CIMV2,
    class: "Win32_NetworkAdapter",
    filter: "PhysicalAdapter = TRUE",
    fields: &[
        ("NetConnectionID", Text),
        ("Name", Text),
        ("InterfaceIndex", Number),
        ("MACAddress", Text),
        ("NetConnectionStatus", Number),
        ("Speed", Number),
    ],
    single: false,
    section: "network.interfaces",
};

/// `Win32_NetworkAdapter` rows in `MSFT_NetAdapter`'s shape: the
/// connection's name ("Wi-Fi") where it has one, connected when
/// NetConnectionStatus is 2. The old class does not say which adapter is
/// wireless.
pub fn adapters_from_win32(rows: &Value) -> Value {
    let adapters = super::one_or_many(rows)
        .into_iter()
        .map(|row| {
            let name = match &row["NetConnectionID"] {
                Value::String(id) if !id.is_empty() => id.clone(),
                _ => row["Name"].as_str().unwrap_or_default().to_owned(),
            };
            json!({
                "Name": name,
                "InterfaceDescription": row["Name"],
                "InterfaceIndex": row["InterfaceIndex"],
                "MacAddress": row["MACAddress"],
                "MediaConnectState": if row["NetConnectionStatus"] == json!(2) { 1 } else { 2 },
                "Speed": row["Speed"],
            })
        })
        .collect();
    Value::Array(adapters)
}

/// The BitLocker namespace, which answers only over an encrypted
/// (packet-privacy) connection.
pub const BITLOCKER_NAMESPACE: &str = r"ROOT\CIMV2\Security\MicrosoftVolumeEncryption";

/// Firewall, antivirus and BitLocker: the security posture, read with
/// each inventory and, alone, every posture interval of the health
/// sampler.
pub const SECURITY_QUERIES: &[Query] = &[
    Query {
        key: "firewall_profiles",
        namespace: STANDARD_CIMV2,
        class: "MSFT_NetFirewallProfile",
        filter: "",
        fields: &[("Name", Text), ("Enabled", Flag)],
        single: false,
        section: "security.firewall",
    },
    Query {
        key: "antivirus",
        namespace: r"ROOT\SecurityCenter2",
        class: "AntiVirusProduct",
        filter: "",
        fields: &[("displayName", Text), ("productState", Number)],
        single: false,
        section: "security.antivirus",
    },
    Query {
        key: "bitlocker",
        namespace: BITLOCKER_NAMESPACE,
        class: "Win32_EncryptableVolume",
        filter: "",
        fields: &[
            ("DriveLetter", Text),
            ("ProtectionStatus", Number),
            ("ConversionStatus", Number),
            ("EncryptionMethod", Number),
        ],
        single: false,
        section: "security.encryption",
    },
];

/// The explorer.exe processes, one per signed-in desktop session; the
/// adapter asks each one's owner.
pub const SESSION_QUERY: Query = Query {
    key: "sessions",
    namespace: CIMV2,
    class: "Win32_Process",
    filter: "Name = 'explorer.exe'",
    fields: &[
        ("Handle", Text),
        ("SessionId", Number),
        ("CreationDate", Date),
    ],
    single: false,
    section: "users.sessions",
};

/// The built-in Administrators group, found by its well-known SID since
/// its name is localised.
pub const ADMIN_GROUP_QUERY: Query = Query {
    key: "admin_group",
    namespace: CIMV2,
    class: "Win32_Group",
    filter: "SID = 'S-1-5-32-544'",
    fields: &[("Name", Text), ("Domain", Text)],
    single: true,
    section: "users.admins",
};

/// The members of a group (accounts and nested groups alike).
pub fn group_members_wql(name: &str, domain: &str) -> String {
    format!(
        "ASSOCIATORS OF {{Win32_Group.Domain=\"{}\",Name=\"{}\"}} WHERE AssocClass = Win32_GroupUser",
        wql_escape(domain),
        wql_escape(name)
    )
}

/// The fields read from each member of the Administrators group.
pub const ADMIN_MEMBER_FIELDS: &[(&str, Kind)] = &[("Name", Text), ("Domain", Text), ("SID", Text)];

fn wql_escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Why a query gave nothing, as `apply_snapshot` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The namespace or class does not exist here (a Home edition, a
    /// server without Security Center, Wine).
    NotPresent,
    /// WMI refused: the agent is not an administrator.
    NotPermitted,
    /// The source exists but cannot do this here (a stub, as Wine's
    /// Windows Update Agent).
    NotSupported,
    /// Anything else.
    Failed,
}

impl Failure {
    fn name(self) -> &'static str {
        match self {
            Failure::NotPresent => "not-present",
            Failure::NotPermitted => "not-permitted",
            Failure::NotSupported => "not-supported",
            Failure::Failed => "failed",
        }
    }

    /// The failure an HRESULT from WMI stands for.
    pub fn of_hresult(hresult: i32) -> Failure {
        // Compared as their bit patterns: HRESULTs are i32 with the high
        // bit set for errors.
        match hresult as u32 {
            0x8004_100E /* WBEM_E_INVALID_NAMESPACE */
            | 0x8004_1010 /* WBEM_E_INVALID_CLASS */
            | 0x8004_1002 /* WBEM_E_NOT_FOUND */
            | 0x8004_1013 /* WBEM_E_PROVIDER_LOAD_FAILURE */ => Failure::NotPresent,
            0x8004_1003 /* WBEM_E_ACCESS_DENIED */
            | 0x8007_0005 /* E_ACCESSDENIED */ => Failure::NotPermitted,
            _ => Failure::Failed,
        }
    }

    /// An HRESULT from WMI in words, with its number for a search.
    pub fn describe_hresult(hresult: i32) -> String {
        let words = match hresult as u32 {
            0x8004_100E => "no such WMI namespace here",
            0x8004_1010 => "no such WMI class here",
            0x8004_1002 => "not found",
            0x8004_1013 => "the WMI provider did not load",
            0x8004_1003 | 0x8007_0005 => "access denied",
            0x8004_1017 => "the query is not valid here",
            _ => "WMI failed",
        };
        format!("{words} (HRESULT {:#010X})", hresult as u32)
    }

    /// The inventory's reason for a failure named in a document.
    pub fn reason_of(name: &str) -> deskpulse_proto::v1::UnavailableReason {
        use deskpulse_proto::v1::UnavailableReason;
        match name {
            "not-present" => UnavailableReason::NotPresent,
            "not-permitted" => UnavailableReason::NotPermitted,
            "not-supported" => UnavailableReason::NotSupported,
            _ => UnavailableReason::Failed,
        }
    }
}

/// The document under construction: one key per query, plus `failed`
/// (key → reason and detail) and `malformed` (the inventory field and a
/// one-line detail per refused value).
#[derive(Debug, Default)]
pub struct Document {
    doc: Map<String, Value>,
    failed: Map<String, Value>,
    malformed: Vec<Value>,
}

impl Document {
    /// Adds a query's rows, checking every value against its kind.
    pub fn rows(&mut self, query: &Query, rows: &[Vec<(String, Cell)>]) {
        let objects: Vec<Value> = rows
            .iter()
            .map(|row| self.object(query.section, query.class, query.fields, row))
            .collect();
        let value = if query.single {
            objects.into_iter().next().unwrap_or(Value::Null)
        } else {
            Value::Array(objects)
        };
        self.doc.insert(query.key.to_owned(), value);
    }

    /// One row as a JSON object with the fields' own spelling (a provider
    /// may answer `DeviceId` for `DeviceID`); a refused value is recorded
    /// under the inventory field `section`.
    pub fn object(
        &mut self,
        section: &str,
        class: &str,
        fields: &[(&str, Kind)],
        row: &[(String, Cell)],
    ) -> Value {
        let mut object = Map::new();
        for (name, kind) in fields {
            let cell = row
                .iter()
                .find(|(got, _)| got.eq_ignore_ascii_case(name))
                .map_or(&Cell::Null, |(_, cell)| cell);
            let value = match convert(*kind, cell) {
                Ok(value) => value,
                Err(why) => {
                    self.malformed.push(json!({
                        "field": section,
                        "detail": one_line(&format!("WMI {class}.{name}: {why}")),
                    }));
                    Value::Null
                }
            };
            object.insert((*name).to_owned(), value);
        }
        Value::Object(object)
    }

    /// The value under `key`, if any.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.doc.get(key)
    }

    /// Forgets that `key` failed (a fallback filled it).
    pub fn clear_failure(&mut self, key: &str) {
        self.failed.remove(key);
    }

    /// Records that a query gave nothing, and why.
    pub fn failed(&mut self, query: &Query, failure: Failure, detail: &str) {
        self.failed_key(query.key, failure, &format!("{}: {detail}", query.class));
    }

    /// Records that the source of a key gave nothing, and why.
    pub fn failed_key(&mut self, key: &str, failure: Failure, detail: &str) {
        self.failed.insert(
            key.to_owned(),
            json!({ "reason": failure.name(), "detail": one_line(detail) }),
        );
    }

    /// Records a source outside WMI's rows (a registry key) that could not
    /// be read, under the inventory field it would have filled.
    pub fn unreadable(&mut self, field: &str, detail: &str) {
        self.malformed
            .push(json!({ "field": field, "detail": one_line(detail) }));
    }

    /// Sets a key the adapter built itself (registry values, sessions).
    pub fn set(&mut self, key: &str, value: Value) {
        self.doc.insert(key.to_owned(), value);
    }

    /// Sets one field of an object key (a registry value added to the
    /// `os` row), creating the object when the query failed.
    pub fn set_field(&mut self, key: &str, field: &str, value: Value) {
        let entry = self
            .doc
            .entry(key.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        if let Value::Object(object) = entry {
            object.insert(field.to_owned(), value);
        }
    }

    /// The finished document.
    pub fn finish(mut self) -> Value {
        if !self.failed.is_empty() {
            self.doc.insert("failed".into(), Value::Object(self.failed));
        }
        if !self.malformed.is_empty() {
            self.doc
                .insert("malformed".into(), Value::Array(self.malformed));
        }
        Value::Object(self.doc)
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A value as the document holds it, or why it does not fit its kind.
/// NULL is a null field (the parser treats it as absent), except where it
/// hides inside a list.
pub fn convert(kind: Kind, cell: &Cell) -> Result<Value, String> {
    if *cell == Cell::Null {
        return Ok(Value::Null);
    }
    let wrong = || {
        Err(format!(
            "expected {}, WMI gave {}",
            kind_name(kind),
            cell.describe()
        ))
    };
    match (kind, cell) {
        (Kind::Text, Cell::Text(text)) => Ok(Value::String(text.clone())),
        (Kind::Text, Cell::Int(n)) => Ok(Value::String(n.to_string())),
        (Kind::Text, Cell::UInt(n)) => Ok(Value::String(n.to_string())),
        (Kind::Number, Cell::UInt(n)) => Ok(json!(n)),
        (Kind::Number, Cell::Int(n)) => Ok(json!(n)),
        (Kind::Number, Cell::Text(text)) => match text.trim().parse::<u64>() {
            Ok(n) => Ok(json!(n)),
            Err(_) => wrong(),
        },
        (Kind::Flag, Cell::Bool(b)) => Ok(Value::Bool(*b)),
        (Kind::Flag, Cell::UInt(n @ (0 | 1))) => Ok(Value::Bool(*n == 1)),
        (Kind::Flag, Cell::Int(n @ (0 | 1))) => Ok(Value::Bool(*n == 1)),
        (Kind::Date, Cell::Text(text)) => cim_datetime_unix(text).map(|s| json!(s)),
        (Kind::TextList | Kind::NumberList, Cell::List(items)) => {
            let item_kind = if kind == Kind::TextList {
                Kind::Text
            } else {
                Kind::Number
            };
            items
                .iter()
                .map(|item| match item {
                    Cell::Null => Err("a NULL inside a list".to_owned()),
                    item => convert(item_kind, item),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array)
        }
        _ => wrong(),
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Text => "text",
        Kind::Number => "a number",
        Kind::Flag => "a boolean",
        Kind::Date => "a CIM datetime",
        Kind::TextList => "a list of text",
        Kind::NumberList => "a list of numbers",
    }
}

/// Unix seconds of a CIM datetime, `yyyymmddHHMMSS.mmmmmmsUUU`, where
/// `sUUU` is the offset from UTC in minutes (`+060`, `-300`). Fields a
/// provider does not know are asterisks; a date needs at least its day.
pub fn cim_datetime_unix(text: &str) -> Result<i64, String> {
    let bad = |why: &str| {
        Err(format!(
            "{:?} is not a CIM datetime ({why})",
            truncated(text)
        ))
    };
    let bytes = text.as_bytes();
    if bytes.len() != 25 || bytes[14] != b'.' || !matches!(bytes[21], b'+' | b'-') {
        return bad("expected yyyymmddHHMMSS.mmmmmmsUUU");
    }
    let field = |range: std::ops::Range<usize>, unknown: i64| -> Option<i64> {
        let part = &text[range];
        if part.bytes().all(|b| b == b'*') {
            Some(unknown)
        } else if part.bytes().all(|b| b.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let (Some(year), Some(month), Some(day)) = (field(0..4, -1), field(4..6, -1), field(6..8, -1))
    else {
        return bad("a non-digit in the date");
    };
    if year < 0 || month < 0 || day < 0 {
        return bad("no date");
    }
    let (Some(hour), Some(minute), Some(second), Some(offset)) = (
        field(8..10, 0),
        field(10..12, 0),
        field(12..14, 0),
        field(22..25, 0),
    ) else {
        return bad("a non-digit in the time");
    };
    if !(1601..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return bad("out of range");
    }
    let offset = if bytes[21] == b'-' { -offset } else { offset };
    Ok(
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
            - offset * 60,
    )
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm,
/// the inverse of the one behind `iso_date`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests;
