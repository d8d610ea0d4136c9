//! WMI values checked against their declared kind before the parser sees
//! them: CIM datetimes, wrong variants, HRESULT reasons, and the WQL asking
//! only for the fields read.

use deskpulse_proto::v1::{Inventory, UnavailableReason};
use serde_json::json;

use super::*;
use crate::collect::windows::apply_document;

fn row(cells: &[(&str, Cell)]) -> Vec<(String, Cell)> {
    cells
        .iter()
        .map(|(name, cell)| ((*name).to_owned(), cell.clone()))
        .collect()
}

fn query(key: &str) -> &'static Query {
    INVENTORY_QUERIES
        .iter()
        .chain(SECURITY_QUERIES)
        .find(|q| q.key == key)
        .unwrap_or_else(|| panic!("no query {key}"))
}

fn text(s: &str) -> Cell {
    Cell::Text(s.to_owned())
}

#[test]
fn cim_datetimes_with_offsets_and_unknown_fields() {
    assert_eq!(
        cim_datetime_unix("20240301000000.000000+000"),
        Ok(1_709_251_200)
    );
    // 01:00 at UTC+60 minutes is midnight UTC.
    assert_eq!(
        cim_datetime_unix("20240301010000.000000+060"),
        Ok(1_709_251_200)
    );
    assert_eq!(
        cim_datetime_unix("20240229190000.000000-300"),
        Ok(1_709_251_200)
    );
    // BIOS dates often know only the day.
    assert_eq!(
        cim_datetime_unix("20240301******.******+***"),
        Ok(1_709_251_200)
    );
    assert_eq!(
        cim_datetime_unix("16010101000000.000000+000"),
        Ok(-11_644_473_600)
    );
}

#[test]
fn malformed_cim_datetimes_are_one_line_reasons() {
    for (input, why) in [
        ("2024-03-01", "expected yyyymmddHHMMSS"),
        ("20241301000000.000000+000", "out of range"),
        ("20240230000000.000000+000", "out of range"),
        ("20240301250000.000000+000", "out of range"),
        ("00000000000000.000000+000", "out of range"),
        ("2024030100000x.000000+000", "non-digit"),
        ("********000000.000000+000", "no date"),
        ("", "expected yyyymmddHHMMSS"),
        ("20240301000000.000000+0é0", "expected yyyymmddHHMMSS"),
    ] {
        let error = cim_datetime_unix(input).expect_err(input);
        assert!(error.contains(why), "{input}: {error}");
        assert!(!error.contains('\n'));
    }
}

#[test]
fn values_are_checked_against_their_kind() {
    assert_eq!(
        convert(Kind::Number, &text(" 17179869184 ")),
        Ok(json!(17_179_869_184u64))
    );
    assert_eq!(convert(Kind::Number, &Cell::UInt(5)), Ok(json!(5)));
    assert_eq!(convert(Kind::Flag, &Cell::UInt(1)), Ok(json!(true)));
    assert_eq!(convert(Kind::Flag, &Cell::Bool(false)), Ok(json!(false)));
    assert_eq!(convert(Kind::Text, &Cell::Int(-3)), Ok(json!("-3")));
    assert_eq!(convert(Kind::Text, &Cell::Null), Ok(json!(null)));
    assert_eq!(
        convert(
            Kind::TextList,
            &Cell::List(vec![text("10.0.0.1"), text("fe80::1")])
        ),
        Ok(json!(["10.0.0.1", "fe80::1"]))
    );
    for (kind, cell, why) in [
        (
            Kind::Number,
            Cell::Bool(true),
            "expected a number, WMI gave boolean true",
        ),
        (
            Kind::Number,
            text("lots"),
            "expected a number, WMI gave text \"lots\"",
        ),
        (
            Kind::Number,
            Cell::Real(1.5),
            "expected a number, WMI gave real 1.5",
        ),
        (
            Kind::Flag,
            Cell::UInt(7),
            "expected a boolean, WMI gave integer 7",
        ),
        (
            Kind::Text,
            Cell::Other("an embedded WMI object"),
            "WMI gave an embedded WMI object",
        ),
        (Kind::Date, Cell::UInt(20240301), "expected a CIM datetime"),
        (Kind::Date, text("yesterday"), "is not a CIM datetime"),
        (Kind::TextList, text("10.0.0.1"), "expected a list of text"),
        (
            Kind::NumberList,
            Cell::List(vec![Cell::Null]),
            "a NULL inside a list",
        ),
    ] {
        let error = convert(kind, &cell).expect_err(why);
        assert!(error.contains(why), "{cell:?}: {error}");
    }
}

#[test]
fn wql_asks_only_for_the_fields_read() {
    assert_eq!(
        query("net_configs").wql(),
        "SELECT InterfaceIndex, IPAddress, DefaultIPGateway, DNSServerSearchOrder \
         FROM Win32_NetworkAdapterConfiguration WHERE IPEnabled = TRUE"
    );
    assert_eq!(
        group_members_wql("Administrators", "BUILTIN"),
        "ASSOCIATORS OF {Win32_Group.Domain=\"BUILTIN\",Name=\"Administrators\"} \
         WHERE AssocClass = Win32_GroupUser"
    );
    assert_eq!(
        group_members_wql("Adm\"ins", r"X\Y"),
        r#"ASSOCIATORS OF {Win32_Group.Domain="X\\Y",Name="Adm\"ins"} WHERE AssocClass = Win32_GroupUser"#
    );
}

#[test]
fn hresults_name_the_reason() {
    assert_eq!(
        Failure::of_hresult(0x8004_100Eu32 as i32),
        Failure::NotPresent
    );
    assert_eq!(
        Failure::of_hresult(0x8004_1010u32 as i32),
        Failure::NotPresent
    );
    assert_eq!(
        Failure::of_hresult(0x8004_1003u32 as i32),
        Failure::NotPermitted
    );
    assert_eq!(
        Failure::of_hresult(0x8007_0005u32 as i32),
        Failure::NotPermitted
    );
    assert_eq!(Failure::of_hresult(0x8000_4005u32 as i32), Failure::Failed);
    assert_eq!(
        Failure::describe_hresult(0x8004_100Eu32 as i32),
        "no such WMI namespace here (HRESULT 0x8004100E)"
    );
}

/// Rows as WMI hands them (variant types, a provider's own spelling of a
/// name, uint64 as text, CIM dates) make the inventory; what WMI refused
/// or garbled is named in `unavailable`, and the rest still arrives.
#[test]
fn rows_from_wmi_make_an_inventory_and_bad_values_are_named() {
    let mut doc = Document::default();
    doc.rows(
        query("computer_system"),
        &[row(&[
            ("Manufacturer", text("Dell Inc.")),
            ("Model", text("OptiPlex 7010")),
            ("Domain", text("corp.example.com")),
            ("PartOfDomain", Cell::Bool(true)),
            ("Workgroup", Cell::Null),
            // A wrong variant type: the memory total is dropped and named.
            ("TotalPhysicalMemory", Cell::Bool(true)),
        ])],
    );
    doc.rows(
        query("os"),
        &[row(&[
            ("Caption", text("Microsoft Windows 11 Pro")),
            ("Version", text("10.0.22631")),
            ("BuildNumber", text("22631")),
            ("InstallDate", text("20231031140000.000000+060")),
            // Out of range: dropped and named, the boot time stays unknown.
            ("LastBootUpTime", text("20241341000000.000000+000")),
            ("FreePhysicalMemory", text("1048576")),
        ])],
    );
    doc.rows(
        query("disk_drives"),
        &[row(&[
            ("index", Cell::UInt(0)),
            ("Model", text("SAMSUNG MZVL2512HCJQ")),
            ("Size", text("512105932800")),
        ])],
    );
    doc.rows(
        query("processors"),
        &[row(&[
            ("Name", text("Intel(R) Core(TM) i5-3470")),
            ("NumberOfCores", Cell::UInt(4)),
            ("NumberOfLogicalProcessors", Cell::UInt(4)),
            ("Architecture", Cell::UInt(9)),
        ])],
    );
    doc.failed(
        query("antivirus"),
        Failure::NotPresent,
        "HRESULT Call failed with: 0x8004100E",
    );
    doc.failed(
        query("bitlocker"),
        Failure::NotPermitted,
        "HRESULT Call failed with:\n 0x80041003",
    );
    doc.set_field("os", "UBR", json!(4460));
    doc.unreadable(
        "os.timezone",
        "HKLM\\SYSTEM\\...\\TimeZoneInformation: access denied",
    );
    let mut inv = Inventory::default();
    apply_document(&doc.finish(), &mut inv).expect("a document");

    let system = inv.system.as_ref().expect("system");
    assert_eq!(system.vendor, "Dell Inc.");
    let os = inv.os.as_ref().expect("os");
    assert_eq!(os.name, "Microsoft Windows 11 Pro");
    assert_eq!(os.build, "22631.4460");
    assert_eq!(os.install_date_unix_s, 1_698_757_200);
    assert_eq!(os.boot_time_unix_s, 0);
    assert_eq!(os.domain, "corp.example.com");
    let memory = inv.memory.as_ref().expect("memory");
    assert_eq!(memory.total_bytes, 0);
    assert_eq!(memory.available_bytes, 1_048_576 * 1024);
    let disks = &inv.storage.as_ref().expect("storage").disks;
    assert_eq!(
        disks[0].name, "PhysicalDrive0",
        "DeviceId-style spelling is matched"
    );
    assert_eq!(disks[0].size_bytes, 512_105_932_800);
    assert_eq!(inv.cpu.as_ref().expect("cpu").arch, "x86_64");

    let entry = |field: &str| {
        inv.unavailable
            .iter()
            .find(|u| u.field == field && !u.detail.is_empty())
            .unwrap_or_else(|| panic!("no unavailable {field}: {:?}", inv.unavailable))
    };
    let memory = entry("system");
    assert!(
        memory.detail.contains(
            "Win32_ComputerSystem.TotalPhysicalMemory: expected a number, WMI gave boolean true"
        ),
        "{}",
        memory.detail
    );
    let boot = entry("os");
    assert!(boot.detail.contains("LastBootUpTime"), "{}", boot.detail);
    assert!(boot.detail.contains("out of range"), "{}", boot.detail);
    let antivirus = entry("security.antivirus");
    assert_eq!(antivirus.reason, UnavailableReason::NotPresent as i32);
    assert!(
        antivirus.detail.contains("AntiVirusProduct"),
        "{}",
        antivirus.detail
    );
    let bitlocker = entry("security.encryption");
    assert_eq!(bitlocker.reason, UnavailableReason::NotPermitted as i32);
    assert!(!bitlocker.detail.contains('\n'), "{}", bitlocker.detail);
    assert!(entry("os.timezone").detail.contains("access denied"));
    for u in &inv.unavailable {
        assert!(!u.detail.contains('\n'), "{u:?}");
    }
}

#[test]
fn old_network_adapters_take_the_new_shape() {
    let mut doc = Document::default();
    doc.rows(
        &NET_ADAPTER_FALLBACK,
        &[
            row(&[
                ("NetConnectionID", text("Ethernet")),
                ("Name", text("Intel(R) Ethernet Connection I219-LM")),
                ("InterfaceIndex", Cell::UInt(9)),
                ("MACAddress", text("54:05:DB:AA:BB:CC")),
                ("NetConnectionStatus", Cell::UInt(2)),
                ("Speed", text("1000000000")),
            ]),
            row(&[
                ("Name", text("Wine network adapter")),
                ("InterfaceIndex", Cell::UInt(3)),
                ("NetConnectionStatus", Cell::UInt(7)),
            ]),
        ],
    );
    let rows = doc.get("net_adapters").cloned().unwrap_or_default();
    doc.set("net_adapters", adapters_from_win32(&rows));
    doc.rows(
        query("net_configs"),
        &[row(&[
            ("InterfaceIndex", Cell::UInt(9)),
            ("IPAddress", Cell::List(vec![text("10.1.2.3")])),
        ])],
    );
    let mut inv = Inventory::default();
    apply_document(&doc.finish(), &mut inv).expect("a document");
    let interfaces = &inv.network.as_ref().expect("network").interfaces;
    assert_eq!(interfaces.len(), 2);
    assert_eq!(interfaces[0].name, "Ethernet");
    assert_eq!(interfaces[0].mac, "54:05:db:aa:bb:cc");
    assert!(interfaces[0].up);
    assert_eq!(interfaces[0].speed_mbps, 1000);
    assert_eq!(interfaces[0].ipv4, ["10.1.2.3"]);
    assert_eq!(
        interfaces[1].name, "Wine network adapter",
        "no connection name"
    );
    assert!(!interfaces[1].up);
}
