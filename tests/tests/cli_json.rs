//! One JSON vocabulary (issue 21): a real agent's inventory and health, as
//! `deskpulse inventory --json` and `host show --json` print them, give
//! every enum field as a word (`"firewall": "off"`), never its wire number,
//! with the words ticket evidence uses.

use deskpulse_tests::{Agent, Collector};

/// Every value under a key that names an enum field of the wire types,
/// anywhere in `value`, with its path.
fn enum_fields(value: &serde_json::Value, path: &str, out: &mut Vec<(String, serde_json::Value)>) {
    const ENUM_KEYS: [&str; 7] = [
        "firewall",
        "antivirus",
        "encryption",
        "reason",
        "kind",
        "state",
        "presence",
    ];
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map {
                let here = format!("{path}.{key}");
                if ENUM_KEYS.contains(&key.as_str()) && !inner.is_array() && !inner.is_object() {
                    out.push((here.clone(), inner.clone()));
                }
                enum_fields(inner, &here, out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, inner) in items.iter().enumerate() {
                enum_fields(inner, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn inventory_and_host_json_name_enum_values() {
    let collector = Collector::start();
    let agent = Agent::new();
    agent
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    agent.command(&["run", "--once"]).expect_code(0);
    let token = collector.admin_token();
    let host = agent.host_id();

    let inventory = collector
        .cli(&token, &["--json", "inventory", &host])
        .expect_code(0)
        .json();
    let firewall = &inventory["sections"]["security"]["firewall"];
    assert!(
        ["on", "off", "unknown"].contains(&firewall.as_str().unwrap_or("a number")),
        "firewall: {firewall}"
    );
    for entry in inventory["unavailable"].as_array().expect("unavailable") {
        let reason = entry["reason"].as_str().unwrap_or("a number");
        assert!(
            [
                "not_permitted",
                "not_present",
                "not_supported",
                "failed",
                "truncated",
                "unknown"
            ]
            .contains(&reason),
            "{entry}"
        );
    }

    let shown = collector
        .cli(&token, &["--json", "host", "show", &host])
        .expect_code(0)
        .json();
    let mut found = Vec::new();
    enum_fields(&inventory, "inventory", &mut found);
    enum_fields(&shown, "host", &mut found);
    assert!(
        found.iter().any(|(path, _)| path.ends_with(".firewall")),
        "{found:?}"
    );
    let numbers: Vec<&(String, serde_json::Value)> =
        found.iter().filter(|(_, v)| v.is_number()).collect();
    assert!(numbers.is_empty(), "enum fields as numbers: {numbers:?}");
    if let Some(posture) = shown["health"]["posture"].as_object() {
        for key in ["antivirus", "firewall", "encryption"] {
            let word = posture[key].as_str().unwrap_or("a number");
            assert!(["on", "off", "unknown"].contains(&word), "{key}: {word}");
        }
    }
}
