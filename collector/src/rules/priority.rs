//! Ticket priority from impact × urgency, as help desks (ITIL) classify:
//! impact is the host's criticality tag (`criticality=high|medium|low`,
//! medium when untagged), urgency the rule's severity.
//!
//! | impact \ urgency | critical | high | medium | low |
//! |---|---|---|---|---|
//! | high   | P1 | P1 | P2 | P3 |
//! | medium | P1 | P2 | P3 | P4 |
//! | low    | P2 | P3 | P4 | P4 |

use std::time::Duration;

/// A rule's urgency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Act now.
    Critical,
    /// Act today.
    High,
    /// Act this week.
    Medium,
    /// When convenient.
    Low,
}

impl Severity {
    /// Parses "critical", "high", "medium" or "low".
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "critical" => Ok(Severity::Critical),
            "high" => Ok(Severity::High),
            "medium" => Ok(Severity::Medium),
            "low" => Ok(Severity::Low),
            other => Err(format!(
                "unknown severity {other:?}; expected critical, high, medium or low"
            )),
        }
    }

    /// The name used in rule files.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::High => "high",
            Severity::Medium => "medium",
            Severity::Low => "low",
        }
    }
}

/// How much a host matters, from its `criticality` tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impact {
    /// criticality=high.
    High,
    /// criticality=medium, or no tag.
    Medium,
    /// criticality=low.
    Low,
}

impl Impact {
    /// The tag that sets a host's impact.
    pub const TAG: &'static str = "criticality";

    /// Checks a `criticality` tag value: high, medium or low (any case),
    /// as the rules read it; anything else would silently count as medium.
    pub fn check_level(value: &str) -> Result<String, String> {
        let level = value.trim().to_ascii_lowercase();
        if matches!(level.as_str(), "high" | "medium" | "low") {
            Ok(level)
        } else {
            Err(format!(
                "criticality {value:?} is not a known level; ticket priority knows high, medium and low"
            ))
        }
    }

    /// The impact a host's tags give it; an unknown value counts as medium.
    pub fn of(tags: &[(String, String)]) -> Self {
        match tags
            .iter()
            .find(|(k, _)| k == "criticality")
            .map(|(_, v)| v.as_str())
        {
            Some("high") => Impact::High,
            Some("low") => Impact::Low,
            _ => Impact::Medium,
        }
    }
}

/// Ticket priority, P1 first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// Highest.
    P1,
    /// High.
    P2,
    /// Normal.
    P3,
    /// Low.
    P4,
}

impl Priority {
    /// The matrix above.
    pub fn of(impact: Impact, urgency: Severity) -> Self {
        use Priority::{P1, P2, P3, P4};
        use Severity::{Critical, High, Low, Medium};
        match (impact, urgency) {
            (Impact::High, Critical | High) | (Impact::Medium, Critical) => P1,
            (Impact::High, Medium) | (Impact::Medium, High) | (Impact::Low, Critical) => P2,
            (Impact::High, Low) | (Impact::Medium, Medium) | (Impact::Low, High) => P3,
            (Impact::Medium | Impact::Low, Low) | (Impact::Low, Medium) => P4,
        }
    }

    /// Parses "P1" … "P4", in either case.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_uppercase().as_str() {
            "P1" => Ok(Priority::P1),
            "P2" => Ok(Priority::P2),
            "P3" => Ok(Priority::P3),
            "P4" => Ok(Priority::P4),
            other => Err(format!(
                "unknown priority {other:?}; expected P1, P2, P3 or P4"
            )),
        }
    }

    /// "P1" … "P4".
    pub fn name(self) -> &'static str {
        match self {
            Priority::P1 => "P1",
            Priority::P2 => "P2",
            Priority::P3 => "P3",
            Priority::P4 => "P4",
        }
    }
}

/// Response and resolution targets of one priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlaTarget {
    /// First technician action within this.
    pub response: Duration,
    /// Resolved within this.
    pub resolution: Duration,
}

/// The default SLA targets, fleet policy that admins may change (D7).
pub fn default_sla(priority: Priority) -> SlaTarget {
    let (response_min, resolution_h) = match priority {
        Priority::P1 => (15, 4),
        Priority::P2 => (60, 8),
        Priority::P3 => (4 * 60, 3 * 24),
        Priority::P4 => (24 * 60, 7 * 24),
    };
    SlaTarget {
        response: Duration::from_secs(response_min * 60),
        resolution: Duration::from_secs(resolution_h * 3600),
    }
}
