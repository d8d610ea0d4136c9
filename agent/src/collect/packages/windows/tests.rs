//! Windows programs and hotfixes from `.reg` exports (UTF-8 and UTF-16) and
//! WMI JSON, with their install dates.

use super::*;

const EXPORT: &str = r#"Windows Registry Editor Version 5.00

[HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall]

[HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall\{90160000-008C-0000-1000-0000000FF1CE}]
"DisplayName"="Microsoft Office Professional Plus 2016"
"DisplayVersion"="16.0.4266.1001"
"Publisher"="Microsoft Corporation"
"InstallDate"="20230914"
"EstimatedSize"=dword:00000a2c
"InstallLocation"=hex(2):43,00,3a,00,5c,00,50,00,72,00,6f,00,67,00,72,00,61,00,\
  6d,00,20,00,46,00,69,00,6c,00,65,00,73,00,00,00

[HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall\Connection Manager]
"SystemComponent"=dword:00000001
"DisplayName"="Connection Manager"

[HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall\KB5034441]
"DisplayName"="Security Update for Office (KB5034441)"
"ParentKeyName"="Office16.PROPLUS"

[HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall\NoName]
"UninstallString"="C:\\Windows\\uninst.exe"

[HKEY_LOCAL_MACHINE\SOFTWARE\WOW6432Node\Microsoft\Windows\CurrentVersion\Uninstall\7-Zip]
"DisplayName"="7-Zip 23.01"
"DisplayVersion"="23.01"
"Publisher"="Igor Pavlov"
"InstallDate"="2024-01-02"

[HKEY_USERS\S-1-5-21-1004336348-1177238915-682003330-1001\Software\Microsoft\Windows\CurrentVersion\Uninstall\Spotify]
"DisplayName"="Spotify"
"DisplayVersion"="1.2.26.1187.g36b715a1"
"Publisher"="Spotify AB"
"Comment"="Say \"hi\""
"#;

#[test]
fn uninstall_keys_become_programs() {
    let keys = parse_reg(EXPORT);
    let office_key = r"HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall\{90160000-008C-0000-1000-0000000FF1CE}";
    assert_eq!(keys[office_key]["EstimatedSize"], RegValue::Dword(0xa2c));
    assert_eq!(
        keys[office_key]["InstallLocation"],
        RegValue::Strings(vec![r"C:\Program Files".into()]),
        "continued hex(2) line"
    );
    let spotify_key = r"HKEY_USERS\S-1-5-21-1004336348-1177238915-682003330-1001\Software\Microsoft\Windows\CurrentVersion\Uninstall\Spotify";
    assert_eq!(
        keys[spotify_key]["Comment"],
        RegValue::String("Say \"hi\"".into())
    );

    let programs = uninstall_entries(&keys);
    let names: Vec<(&str, &str, &str)> = programs
        .iter()
        .map(|p| (p.name.as_str(), p.version.as_str(), p.source.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            (
                "Microsoft Office Professional Plus 2016",
                "16.0.4266.1001",
                "registry-hklm-64"
            ),
            ("7-Zip 23.01", "23.01", "registry-hklm-32"),
            ("Spotify", "1.2.26.1187.g36b715a1", "registry-user"),
        ],
        "system components, updates with a parent and nameless keys are left out"
    );
    assert_eq!(programs[0].publisher, "Microsoft Corporation");
    assert_eq!(programs[0].install_date_unix_s, 1_694_649_600);
    assert_eq!(
        programs[1].install_date_unix_s, 0,
        "a malformed InstallDate is unknown"
    );
    assert_eq!(programs[1].arch, "x86");
}

#[test]
fn regedit_writes_utf16_with_a_bom() {
    let mut bytes = vec![0xFF, 0xFE];
    for unit in EXPORT.encode_utf16() {
        bytes.extend_from_slice(&unit.to_le_bytes());
    }
    let keys = parse_reg(&decode(&bytes));
    assert_eq!(uninstall_entries(&keys).len(), 3);
}

#[test]
fn hotfixes_from_wmi_json() {
    let json = r#"[{"HotFixID":"KB5034441","Description":"Security Update","InstalledOn":{"value":"/Date(1705276800000)/","DateTime":"1/15/2024 12:00:00 AM"}},
                  {"HotFixID":"KB5033372","Description":"Update","InstalledOn":"12/12/2023"}]"#;
    let fixes = hotfixes(json);
    assert_eq!(fixes.len(), 2);
    assert_eq!(fixes[0].id, "KB5034441");
    assert_eq!(fixes[0].installed_unix_s, 1_705_276_800);
    assert_eq!(fixes[1].installed_unix_s, 1_702_339_200);
    assert_eq!(hotfixes(r#"{"HotFixID":"KB1","Description":"x"}"#).len(), 1);
    assert!(hotfixes("garbage").is_empty());
}

#[test]
fn install_dates() {
    assert_eq!(install_date("19700101"), 0);
    assert_eq!(install_date("20000229"), 951_782_400);
    assert_eq!(install_date("20231341"), 0);
    assert_eq!(install_date(""), 0);
}
