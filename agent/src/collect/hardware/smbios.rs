//! SMBIOS structure table parser (DMTF DSP0134): types 0 (BIOS), 1
//! (System), 2 (Baseboard), 3 (Chassis) and 17 (Memory Device). On Linux the
//! raw table is `/sys/firmware/dmi/tables/DMI` (root only); on Windows it
//! comes from `GetSystemFirmwareTable('RSMB')`.
//!
//! Each structure is a formatted area (type, length, handle, fields) followed
//! by a set of NUL-terminated strings ended by an extra NUL. String fields
//! hold a 1-based index into that set; 0 means "no string".

/// What the table says, for the types we read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Smbios {
    /// Type 0.
    pub bios_vendor: String,
    /// Type 0.
    pub bios_version: String,
    /// Type 0.
    pub bios_date: String,
    /// Type 1.
    pub system_vendor: String,
    /// Type 1.
    pub system_model: String,
    /// Type 1.
    pub system_serial: String,
    /// Type 1, lowercase text form (SMBIOS 2.6+ byte order).
    pub system_uuid: String,
    /// Type 2.
    pub board_vendor: String,
    /// Type 2.
    pub board_model: String,
    /// Type 2.
    pub board_serial: String,
    /// Type 3 chassis type code (low 7 bits).
    pub chassis_code: u8,
    /// Type 17, populated slots only.
    pub memory: Vec<MemoryDevice>,
}

/// One populated memory slot (type 17).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryDevice {
    /// Device locator, e.g. "DIMM A1".
    pub locator: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Memory type name, e.g. "DDR4".
    pub memory_type: String,
    /// Speed in MT/s (configured speed when given, else the rated speed).
    pub speed_mts: u32,
    /// Manufacturer.
    pub manufacturer: String,
    /// Part number.
    pub part_number: String,
    /// Serial number.
    pub serial: String,
}

struct Structure<'a> {
    kind: u8,
    formatted: &'a [u8],
    strings: Vec<&'a [u8]>,
}

impl Structure<'_> {
    fn byte(&self, offset: usize) -> Option<u8> {
        self.formatted.get(offset).copied()
    }
    fn word(&self, offset: usize) -> Option<u16> {
        Some(u16::from_le_bytes([
            self.byte(offset)?,
            self.byte(offset + 1)?,
        ]))
    }
    fn dword(&self, offset: usize) -> Option<u32> {
        let b = self.formatted.get(offset..offset + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// The string a field points at; empty for index 0 or out of range.
    fn string(&self, offset: usize) -> String {
        let Some(index) = self.byte(offset) else {
            return String::new();
        };
        if index == 0 {
            return String::new();
        }
        self.strings
            .get(usize::from(index) - 1)
            .map(|s| String::from_utf8_lossy(s).trim().to_owned())
            .unwrap_or_default()
    }
}

/// Splits a table into structures, stopping at type 127 (end of table) or
/// at the first malformed structure.
fn structures(table: &[u8]) -> Vec<Structure<'_>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= table.len() {
        let kind = table[at];
        let length = usize::from(table[at + 1]);
        if length < 4 || at + length > table.len() {
            break;
        }
        let formatted = &table[at..at + length];
        // The string set ends with two NULs; a structure without strings is
        // followed by just those two.
        let mut end = at + length;
        let strings_start = end;
        loop {
            if end + 1 >= table.len() {
                return out;
            }
            if table[end] == 0 && table[end + 1] == 0 {
                break;
            }
            end += 1;
        }
        let strings = if end > strings_start {
            table[strings_start..end].split(|b| *b == 0).collect()
        } else {
            Vec::new()
        };
        out.push(Structure {
            kind,
            formatted,
            strings,
        });
        if kind == 127 {
            break;
        }
        at = end + 2;
    }
    out
}

/// SMBIOS memory type codes (7.18.2) that still turn up in PCs.
pub fn memory_type(code: u8) -> &'static str {
    match code {
        0x12 => "DDR",
        0x13 => "DDR2",
        0x14 => "DDR2 FB-DIMM",
        0x18 => "DDR3",
        0x1A => "DDR4",
        0x1B => "LPDDR",
        0x1C => "LPDDR2",
        0x1D => "LPDDR3",
        0x1E => "LPDDR4",
        0x22 => "DDR5",
        0x23 => "LPDDR5",
        0x07 => "RAM",
        0x02 => "Unknown",
        _ => "Other",
    }
}

/// The UUID of type 1: the first three fields are little-endian since SMBIOS
/// 2.6, as dmidecode prints it.
fn uuid(bytes: &[u8]) -> String {
    if bytes.len() != 16 || bytes.iter().all(|b| *b == 0) || bytes.iter().all(|b| *b == 0xff) {
        return String::new();
    }
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        bytes[3],
        bytes[2],
        bytes[1],
        bytes[0],
        bytes[5],
        bytes[4],
        bytes[7],
        bytes[6],
        bytes[8],
        bytes[9],
        bytes[10],
        bytes[11],
        bytes[12],
        bytes[13],
        bytes[14],
        bytes[15]
    )
}

/// Memory device size (7.18.5): 0 or 0xFFFF mean empty or unknown; bit 15
/// selects KiB instead of MiB; 0x7FFF means "see the extended size".
fn memory_size(s: &Structure<'_>) -> u64 {
    match s.word(0x0C) {
        None | Some(0) | Some(0xFFFF) => 0,
        Some(0x7FFF) => u64::from(s.dword(0x1C).unwrap_or(0) & 0x7FFF_FFFF) << 20,
        Some(size) if size & 0x8000 != 0 => u64::from(size & 0x7FFF) << 10,
        Some(size) => u64::from(size) << 20,
    }
}

/// Parses a raw SMBIOS structure table.
pub fn parse(table: &[u8]) -> Smbios {
    let mut out = Smbios::default();
    for s in structures(table) {
        match s.kind {
            0 => {
                out.bios_vendor = s.string(0x04);
                out.bios_version = s.string(0x05);
                out.bios_date = s.string(0x08);
            }
            1 => {
                out.system_vendor = s.string(0x04);
                out.system_model = s.string(0x05);
                out.system_serial = s.string(0x07);
                out.system_uuid = s.formatted.get(0x08..0x18).map(uuid).unwrap_or_default();
            }
            2 => {
                out.board_vendor = s.string(0x04);
                out.board_model = s.string(0x05);
                out.board_serial = s.string(0x07);
            }
            3 => out.chassis_code = s.byte(0x05).unwrap_or(0) & 0x7f,
            17 => {
                let size_bytes = memory_size(&s);
                if size_bytes == 0 {
                    continue;
                }
                let configured = s.word(0x20).filter(|v| *v != 0 && *v != 0xFFFF);
                let rated = s.word(0x15).filter(|v| *v != 0 && *v != 0xFFFF);
                out.memory.push(MemoryDevice {
                    locator: s.string(0x10),
                    size_bytes,
                    memory_type: memory_type(s.byte(0x12).unwrap_or(0)).to_owned(),
                    speed_mts: u32::from(configured.or(rated).unwrap_or(0)),
                    manufacturer: s.string(0x17),
                    part_number: s.string(0x1A),
                    serial: s.string(0x18),
                });
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests;
