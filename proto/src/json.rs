//! Enum fields in JSON. prost keeps an enum field as its number (`i32`);
//! whenever a wire type is written as JSON (`deskpulse --json`,
//! `deskpulse-agent inventory --json`) the field shows its value's name
//! instead, lower_snake without the enum's prefix: `PROTECTION_STATE_OFF`
//! is `"off"`, `UNAVAILABLE_REASON_NOT_SUPPORTED` is `"not_supported"`.
//! The `..._UNSPECIFIED` value, and a number this build does not know (a
//! newer agent's), are `"unknown"`.
//!
//! `cargo xtask codegen` puts a `serialize_with` naming these functions on
//! every enum field; an enum added to a `.proto` needs a line in
//! [`wire_enums!`] below, or the generated code does not compile.

use serde::Serializer;

/// A generated enum whose values have proto names.
pub trait WireEnum {
    /// The proto name of `value` (`"PROTECTION_STATE_OFF"`), if this build
    /// knows it.
    fn proto_name(value: i32) -> Option<&'static str>;
}

macro_rules! wire_enums {
    ($($name:ident),* $(,)?) => {
        $(
            impl WireEnum for crate::v1::$name {
                fn proto_name(value: i32) -> Option<&'static str> {
                    Self::try_from(value).ok().map(|v| v.as_str_name())
                }
            }
        )*
    };
}

wire_enums!(
    DiagnosticRisk,
    DiagnosticOutcome,
    DiskKind,
    GoodbyeReason,
    InventorySection,
    Presence,
    RetiredHosts,
    ProtectionState,
    Role,
    UnavailableReason,
);

/// The JSON name of an enum field's value: `"off"`, `"not_supported"`,
/// `"unknown"`.
pub fn name_of<E: WireEnum>(value: i32) -> String {
    // Every enum's 0 is `<PREFIX>UNSPECIFIED` (proto3 style), which gives
    // the prefix the value names share.
    let prefix = E::proto_name(0)
        .and_then(|zero| zero.strip_suffix("UNSPECIFIED"))
        .unwrap_or("");
    match E::proto_name(value) {
        Some(name) if value != 0 => name
            .strip_prefix(prefix)
            .unwrap_or(name)
            .to_ascii_lowercase(),
        _ => "unknown".to_owned(),
    }
}

/// `serialize_with` for a plain enum field.
pub fn enum_name<E: WireEnum, S: Serializer>(value: &i32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&name_of::<E>(*value))
}

/// `serialize_with` for a repeated enum field.
#[allow(clippy::ptr_arg)] // serde hands `serialize_with` a reference to the field's own type
pub fn enum_names<E: WireEnum, S: Serializer>(values: &Vec<i32>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(values.iter().map(|v| name_of::<E>(*v)))
}

/// `serialize_with` for a proto3 `optional` enum field: `null` when unset.
pub fn optional_enum_name<E: WireEnum, S: Serializer>(
    value: &Option<i32>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => s.serialize_str(&name_of::<E>(*v)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{
        Disk, DiskKind, InventoryDelta, InventorySection, ProtectionState, SecurityInfo,
        Unavailable, UnavailableReason,
    };

    #[test]
    fn enum_fields_are_written_as_names() {
        let security = SecurityInfo {
            firewall: ProtectionState::Off as i32,
            ..Default::default()
        };
        let json = serde_json::to_value(&security).expect("json");
        assert_eq!(json["firewall"], "off", "{json}");
        let missing = Unavailable {
            field: "software.pending_updates".into(),
            reason: UnavailableReason::NotSupported as i32,
            detail: String::new(),
        };
        let json = serde_json::to_value(&missing).expect("json");
        assert_eq!(json["reason"], "not_supported", "{json}");
        let disk = Disk {
            kind: DiskKind::Nvme as i32,
            ..Default::default()
        };
        assert_eq!(serde_json::to_value(&disk).expect("json")["kind"], "nvme");
        let delta = InventoryDelta {
            replaced_sections: vec![InventorySection::Os as i32, 99],
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&delta).expect("json")["replaced_sections"],
            serde_json::json!(["os", "unknown"])
        );
    }

    #[test]
    fn unspecified_and_unknown_numbers_read_unknown() {
        assert_eq!(name_of::<ProtectionState>(0), "unknown");
        assert_eq!(name_of::<ProtectionState>(42), "unknown");
        assert_eq!(name_of::<ProtectionState>(1), "on");
        assert_eq!(name_of::<UnavailableReason>(1), "not_permitted");
    }
}
