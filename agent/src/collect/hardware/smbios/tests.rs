//! SMBIOS fixtures built from the spec's layouts, and a check that the real
//! `dmidecode --from-dump` reads them as we do (D32).

use super::*;

/// Builds one structure: formatted area (type, length, handle, fields) plus
/// its string set.
pub(crate) fn structure(kind: u8, handle: u16, fields: &[u8], strings: &[&str]) -> Vec<u8> {
    let length = u8::try_from(4 + fields.len()).expect("short structure");
    let mut out = vec![kind, length];
    out.extend_from_slice(&handle.to_le_bytes());
    out.extend_from_slice(fields);
    for s in strings {
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }
    if strings.is_empty() {
        out.push(0);
    }
    out.push(0);
    out
}

fn le16(v: u16) -> [u8; 2] {
    v.to_le_bytes()
}

/// A laptop with two DIMMs (one 16 GiB via the extended size), one empty
/// slot, a placeholder baseboard serial and a missing string reference.
pub(crate) fn laptop_table() -> Vec<u8> {
    let mut t = Vec::new();
    // Type 0: vendor=1 version=2 start segment, date=3, rom size, characteristics.
    let mut bios = vec![1, 2];
    bios.extend_from_slice(&le16(0xE800));
    bios.extend_from_slice(&[3, 0xFF]);
    bios.extend_from_slice(&[0; 8]);
    t.extend(structure(
        0,
        0,
        &bios,
        &["LENOVO", "N32ET86W (1.62 )", "03/14/2023"],
    ));
    // Type 1: manufacturer, product, version, serial, uuid, wake-up, sku, family.
    let mut sys = vec![1, 2, 3, 4];
    sys.extend_from_slice(&[
        0x78, 0x56, 0x34, 0x12, 0xbc, 0x9a, 0xf0, 0xde, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd,
        0xef,
    ]);
    sys.extend_from_slice(&[6, 5, 6]);
    t.extend(structure(
        1,
        1,
        &sys,
        &[
            "LENOVO",
            "20W0004JGE",
            "ThinkPad T14 Gen 2i",
            "PF3ABCDE",
            "LENOVO_MT_20W0",
            "ThinkPad T14 Gen 2i",
        ],
    ));
    // Type 2: manufacturer, product, version, serial, asset (missing string
    // index 9), flags, location, chassis handle, board type, no handles.
    let mut board = vec![1, 2, 3, 4, 9, 0x09, 0];
    board.extend_from_slice(&le16(3));
    board.extend_from_slice(&[0x0A, 0]);
    t.extend(structure(
        2,
        2,
        &board,
        &[
            "LENOVO",
            "20W0004JGE",
            "SDK0J40697 WIN",
            "To Be Filled By O.E.M.",
        ],
    ));
    // Type 3: manufacturer, type 10 (notebook) with the lock bit, version,
    // serial, asset, states, OEM, height, cords, elements, record length.
    let mut chassis = vec![1, 0x80 | 10, 0, 2, 0, 3, 3, 3, 3];
    chassis.extend_from_slice(&[0; 4]);
    chassis.extend_from_slice(&[0, 1, 0, 0]);
    t.extend(structure(3, 3, &chassis, &["LENOVO", "PF3ABCDE"]));
    // Type 17 (SMBIOS 2.8 layout, 0x28 bytes).
    let dimm = |handle: u16, size: u16, ext: u32, strings: [u8; 4], speed: u16, configured: u16| {
        let mut f = Vec::new();
        f.extend_from_slice(&le16(0x1000)); // physical memory array
        f.extend_from_slice(&le16(0xFFFE)); // no error info
        f.extend_from_slice(&le16(64)); // total width
        f.extend_from_slice(&le16(64)); // data width
        f.extend_from_slice(&le16(size));
        f.push(0x0D); // SODIMM
        f.push(0); // device set
        f.push(strings[0]); // device locator
        f.push(2); // bank locator
        f.push(0x1A); // DDR4
        f.extend_from_slice(&le16(0x0080)); // synchronous
        f.extend_from_slice(&le16(speed));
        f.push(strings[1]); // manufacturer
        f.push(strings[2]); // serial
        f.push(0); // asset tag
        f.push(strings[3]); // part number
        f.push(1); // rank
        f.extend_from_slice(&ext.to_le_bytes());
        f.extend_from_slice(&le16(configured));
        f.extend_from_slice(&le16(1200));
        f.extend_from_slice(&le16(1200));
        f.extend_from_slice(&le16(1200));
        (handle, f)
    };
    let (h, f) = dimm(0x40, 8192, 0, [1, 3, 4, 5], 3200, 2933);
    t.extend(structure(
        17,
        h,
        &f,
        &[
            "ChannelA-DIMM0",
            "BANK 0",
            "Samsung",
            "12345678",
            "M471A1K43DB1-CWE",
        ],
    ));
    let (h, f) = dimm(0x41, 0x7FFF, 16384, [1, 3, 4, 5], 3200, 0);
    t.extend(structure(
        17,
        h,
        &f,
        &[
            "ChannelB-DIMM0",
            "BANK 2",
            "Micron",
            "87654321",
            "4ATF1G64HZ-3G2E1",
        ],
    ));
    let (h, f) = dimm(0x42, 0, 0, [1, 0, 0, 0], 0, 0);
    t.extend(structure(17, h, &f, &["ChannelB-DIMM1", "BANK 3"]));
    t.extend(structure(127, 0xFEFF, &[], &[]));
    t
}

/// A `dmidecode --dump-bin` style file: a 2.8 entry point at offset 0 and
/// the table at offset 0x20.
#[cfg(unix)]
pub(crate) fn dump(table: &[u8], structures: u16) -> Vec<u8> {
    let mut ep = vec![0u8; 0x1F];
    ep[0..4].copy_from_slice(b"_SM_");
    ep[5] = 0x1F;
    ep[6] = 2;
    ep[7] = 8;
    ep[8..10].copy_from_slice(&le16(0x100));
    ep[0x10..0x15].copy_from_slice(b"_DMI_");
    ep[0x16..0x18].copy_from_slice(&le16(u16::try_from(table.len()).expect("small table")));
    ep[0x18..0x1C].copy_from_slice(&0x20u32.to_le_bytes());
    ep[0x1C..0x1E].copy_from_slice(&le16(structures));
    ep[0x1E] = 0x28;
    let sum = |bytes: &[u8]| bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    ep[0x15] = 0u8.wrapping_sub(sum(&ep[0x10..0x1F]));
    ep[4] = 0u8.wrapping_sub(sum(&ep));
    let mut out = ep;
    out.resize(0x20, 0);
    out.extend_from_slice(table);
    out
}

#[test]
fn every_type_we_read_is_parsed() {
    let s = parse(&laptop_table());
    assert_eq!(s.bios_vendor, "LENOVO");
    assert_eq!(s.bios_version, "N32ET86W (1.62 )".trim());
    assert_eq!(s.bios_date, "03/14/2023");
    assert_eq!(s.system_vendor, "LENOVO");
    assert_eq!(s.system_model, "20W0004JGE");
    assert_eq!(s.system_serial, "PF3ABCDE");
    assert_eq!(s.system_uuid, "12345678-9abc-def0-0123-456789abcdef");
    assert_eq!(s.board_model, "20W0004JGE");
    assert_eq!(
        s.board_serial, "To Be Filled By O.E.M.",
        "placeholders are filtered later"
    );
    assert_eq!(s.chassis_code, 10, "the lock bit is masked off");
    assert_eq!(s.memory.len(), 2, "the empty slot is skipped");
    assert_eq!(s.memory[0].size_bytes, 8 << 30);
    assert_eq!(s.memory[0].speed_mts, 2933, "configured speed wins");
    assert_eq!(s.memory[0].memory_type, "DDR4");
    assert_eq!(s.memory[0].part_number, "M471A1K43DB1-CWE");
    assert_eq!(s.memory[1].size_bytes, 16 << 30, "extended size");
    assert_eq!(
        s.memory[1].speed_mts, 3200,
        "rated speed when no configured speed"
    );
    assert_eq!(s.memory[1].manufacturer, "Micron");
}

#[test]
fn truncated_and_garbage_tables_never_panic() {
    let table = laptop_table();
    for cut in 0..table.len() {
        let _ = parse(&table[..cut]);
    }
    assert_eq!(parse(&[]), Smbios::default());
    assert_eq!(parse(&[1, 2, 3]), Smbios::default());
    // A length below the header size stops parsing.
    assert_eq!(parse(&[1, 1, 0, 0, 0, 0]), Smbios::default());
}

// Unix only: a Windows build cannot start the Linux dmidecode.
#[test]
#[cfg(unix)]
fn dmidecode_reads_the_fixture_as_we_do() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("dmi.bin");
    std::fs::write(&path, dump(&laptop_table(), 7)).expect("write dump");
    let keyword = |k: &str| {
        std::process::Command::new("dmidecode")
            .args(["--from-dump"])
            .arg(&path)
            .args(["-s", k])
            .output()
    };
    let first = match keyword("system-manufacturer") {
        Ok(out) if out.status.success() => out,
        _ => {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "dmidecode is required in CI (apt-get install dmidecode)"
            );
            eprintln!("SKIPPED: dmidecode is not installed");
            return;
        }
    };
    let ours = parse(&laptop_table());
    assert_eq!(
        String::from_utf8_lossy(&first.stdout).trim(),
        ours.system_vendor
    );
    for (k, want) in [
        ("system-product-name", ours.system_model.as_str()),
        ("system-serial-number", ours.system_serial.as_str()),
        ("system-uuid", ours.system_uuid.as_str()),
        ("bios-vendor", ours.bios_vendor.as_str()),
        ("bios-release-date", ours.bios_date.as_str()),
        ("baseboard-product-name", ours.board_model.as_str()),
        ("baseboard-serial-number", ours.board_serial.as_str()),
        ("chassis-type", "Notebook"),
    ] {
        let out = keyword(k).expect("dmidecode runs");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .to_ascii_lowercase(),
            want.to_ascii_lowercase(),
            "{k}"
        );
    }
    let out = std::process::Command::new("dmidecode")
        .arg("--from-dump")
        .arg(&path)
        .args(["-t", "17"])
        .output()
        .expect("dmidecode runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Size: 8 GB"), "{text}");
    assert!(text.contains("Size: 16 GB"), "{text}");
    assert!(text.contains("No Module Installed"), "{text}");
    assert!(text.contains("Part Number: M471A1K43DB1-CWE"), "{text}");
    assert!(
        text.contains("Configured Memory Speed: 2933 MT/s"),
        "{text}"
    );
}
