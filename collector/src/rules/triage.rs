//! Automatic triage (issue 23): the read-only diagnostics a rule names to
//! run on the PC the moment its ticket opens, so the evidence is there
//! before a technician looks.
//!
//! A rule file writes them as `triage = ["disk_usage path={subject}",
//! "top_processes sort=memory"]`: a catalog id, then `key=value` pairs
//! separated by spaces, where `{subject}` stands for the ticket's subject
//! (the mount point, service or device that fired). Each entry is checked
//! when the policy is applied: the diagnostic must exist and be read-only,
//! its keys must be its own, and its values must pass the catalog's checks
//! with the placeholder filled in. The agent's own allow-list still decides
//! on the PC (D25); a triage run is an ordinary job, audited as one.

use deskpulse_proto::catalog;
use deskpulse_proto::v1::DiagnosticParams;
use deskpulse_proto::v1::DiagnosticRisk;

/// Where a triage entry's parameters name the ticket's subject.
pub const SUBJECT: &str = "{subject}";

/// The most triage entries one rule may name: each is a job on the PC.
pub const MAX_STEPS: usize = 4;

/// One diagnostic a rule runs when its ticket opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriageStep {
    /// The catalog id.
    pub diagnostic: &'static str,
    /// Its `key=value` pairs as written, `{subject}` unfilled.
    pub params: Vec<(String, String)>,
}

impl TriageStep {
    /// Parses one entry, e.g. `disk_usage path={subject} depth=2`, for a
    /// rule whose tickets have a subject (`has_subject`) or not. The error
    /// is one line naming what is wrong.
    pub fn parse(text: &str, has_subject: bool) -> Result<Self, String> {
        let mut words = text.split_whitespace();
        let Some(id) = words.next() else {
            return Err("an empty triage entry; write e.g. \"top_processes sort=cpu\"".into());
        };
        let spec = catalog::spec(id).ok_or_else(|| {
            let ids: Vec<&str> = catalog::CATALOG
                .iter()
                .filter(|s| s.risk == DiagnosticRisk::ReadOnly)
                .map(|s| s.id)
                .collect();
            format!(
                "triage names unknown diagnostic {id:?}; the read-only ones are {}",
                ids.join(", ")
            )
        })?;
        if spec.risk != DiagnosticRisk::ReadOnly {
            return Err(format!(
                "triage may run only read-only diagnostics; {id} changes state on the PC"
            ));
        }
        let mut params = Vec::new();
        for word in words {
            let Some((key, value)) = word.split_once('=') else {
                return Err(format!(
                    "triage {id}: {word:?} is not key=value (values take no spaces)"
                ));
            };
            params.push((key.to_owned(), value.to_owned()));
        }
        let step = Self {
            diagnostic: spec.id,
            params,
        };
        if step.names_subject() && !has_subject {
            return Err(format!(
                "triage {id}: this rule's tickets have no subject to fill {SUBJECT} with"
            ));
        }
        // The values a subject can take are checked when the ticket opens;
        // here a plausible one shows whether the entry can ever be valid.
        step.params_for(&example_subject(spec.id))
            .map_err(|e| format!("triage {id}: {e}"))?;
        Ok(step)
    }

    /// Whether any value holds `{subject}`.
    pub fn names_subject(&self) -> bool {
        self.params.iter().any(|(_, v)| v.contains(SUBJECT))
    }

    /// The typed, checked parameters with `{subject}` filled in.
    pub fn params_for(&self, subject: &str) -> Result<DiagnosticParams, String> {
        let pairs: Vec<(String, String)> = self
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.replace(SUBJECT, subject)))
            .collect();
        catalog::parse(self.diagnostic, &pairs)
    }

    /// The entry as a rule file writes it.
    pub fn text(&self) -> String {
        let mut text = self.diagnostic.to_owned();
        for (key, value) in &self.params {
            text.push(' ');
            text.push_str(key);
            text.push('=');
            text.push_str(value);
        }
        text
    }
}

/// A subject the catalog accepts for a diagnostic's parameter, to check a
/// triage entry before any ticket gives it a real one.
fn example_subject(diagnostic: &str) -> String {
    match diagnostic {
        "disk_usage" => "/var",
        "smart_report" => "/dev/sda",
        "service_status" => "example.service",
        "ping" | "traceroute" | "tcp_connect" | "dns_lookup" => "example.com",
        _ => "example",
    }
    .to_owned()
}

/// Parses a rule's `triage` list: at most [`MAX_STEPS`], no entry twice.
pub fn parse_all(entries: &[String], has_subject: bool) -> Result<Vec<TriageStep>, String> {
    if entries.len() > MAX_STEPS {
        return Err(format!(
            "triage names {} diagnostics; at most {MAX_STEPS}",
            entries.len()
        ));
    }
    let mut steps: Vec<TriageStep> = Vec::with_capacity(entries.len());
    for entry in entries {
        let step = TriageStep::parse(entry, has_subject)?;
        if steps.contains(&step) {
            return Err(format!("triage names {:?} twice", step.text()));
        }
        steps.push(step);
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_a_read_only_diagnostic_with_its_own_keys() {
        let step = TriageStep::parse("disk_usage  path={subject} depth=2", true).expect("valid");
        assert_eq!(step.diagnostic, "disk_usage");
        assert_eq!(step.text(), "disk_usage path={subject} depth=2");
        let params = step.params_for("/srv").expect("valid");
        assert_eq!(catalog::describe(&params), "path=/srv depth=2");
        assert!(TriageStep::parse("top_processes", false).is_ok());
    }

    #[test]
    fn bad_entries_are_refused_with_the_reason() {
        let cases = [
            ("frobnicate", "unknown diagnostic \"frobnicate\""),
            ("restart_service service=x", "restart_service changes state"),
            ("clear_temp", "clear_temp changes state"),
            ("top_processes sort", "\"sort\" is not key=value"),
            ("top_processes colour=red", "top_processes has no parameter"),
            ("top_processes count=500", "count"),
            ("", "an empty triage entry"),
            ("service_status service={subject}", "no subject"),
        ];
        for (entry, expected) in cases {
            let error = TriageStep::parse(entry, false).expect_err("refused");
            assert!(error.contains(expected), "{entry:?}: {error}");
        }
    }

    #[test]
    fn a_list_is_bounded_and_has_no_repeats() {
        let five: Vec<String> = ["ping host=a", "ping host=b", "ping host=c", "ping host=d"]
            .iter()
            .chain(&["clock_status"])
            .map(|s| (*s).to_owned())
            .collect();
        assert!(
            parse_all(&five, false)
                .expect_err("refused")
                .contains("at most 4")
        );
        let twice = vec!["clock_status".to_owned(), "clock_status".to_owned()];
        assert!(
            parse_all(&twice, false)
                .expect_err("refused")
                .contains("twice")
        );
    }

    #[test]
    fn a_subject_that_fails_the_catalog_is_an_error_when_the_ticket_opens() {
        let step = TriageStep::parse("disk_usage path={subject}", true).expect("valid");
        assert!(step.params_for("relative/path").is_err());
    }
}
