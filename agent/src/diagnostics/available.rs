//! Which enabled diagnostics this PC can actually run (issue 21), checked
//! when the agent opens a session and sent in its `Hello`, so the catalog a
//! technician sees says "unavailable: ping is not installed" before anyone
//! queues a ping that would fail.
//!
//! Each diagnostic is planned for this platform with sample parameters
//! (the plan may choose among programs, as `pending_updates` and
//! `renew_dhcp` do), and every program a plan needs, not those it calls
//! optional, must be found the way a run finds it ([`run::which`]). A plan
//! that cannot be made at all gives its own one-line reason.

use deskpulse_proto::v1::diagnostic_params::Kind;
use deskpulse_proto::v1::*;

use super::plan::{self, Platform, Step};
use super::run;

/// The longest reason sent; the collector cuts longer ones.
pub const MAX_REASON: usize = 200;

/// Parameters that pass `catalog::check` for each diagnostic, naming a
/// device or an interface where the plan would otherwise look for one: the
/// check is about programs, not about this moment's disks or links.
fn sample(id: &str) -> Option<Kind> {
    Some(match id {
        "ping" => Kind::Ping(PingParams {
            host: "localhost".into(),
            count: 1,
        }),
        "traceroute" => Kind::Traceroute(TracerouteParams {
            host: "localhost".into(),
            max_hops: 1,
        }),
        "dns_lookup" => Kind::DnsLookup(DnsLookupParams::default()),
        "tcp_connect" => Kind::TcpConnect(TcpConnectParams::default()),
        "http_check" => Kind::HttpCheck(HttpCheckParams::default()),
        "network_config" => Kind::NetworkConfig(NetworkConfigParams {}),
        "listening_ports" => Kind::ListeningPorts(ListeningPortsParams {}),
        "top_processes" => Kind::TopProcesses(TopProcessesParams::default()),
        "disk_usage" => Kind::DiskUsage(DiskUsageParams::default()),
        "service_status" => Kind::ServiceStatus(ServiceStatusParams {
            service: "sample".into(),
        }),
        "log_errors" => Kind::LogErrors(LogErrorsParams::default()),
        "pending_updates" => Kind::PendingUpdates(PendingUpdatesParams {}),
        "smart_report" => Kind::SmartReport(SmartReportParams {
            device: if cfg!(windows) { "0" } else { "/dev/sda" }.into(),
        }),
        "battery_report" => Kind::BatteryReport(BatteryReportParams {}),
        "clock_status" => Kind::ClockStatus(ClockStatusParams {}),
        "restart_service" => Kind::RestartService(RestartServiceParams {
            service: "sample".into(),
        }),
        "flush_dns" => Kind::FlushDns(FlushDnsParams {}),
        "clear_temp" => Kind::ClearTemp(ClearTempParams::default()),
        "renew_dhcp" => Kind::RenewDhcp(RenewDhcpParams {
            interface: "sample0".into(),
        }),
        _ => return None,
    })
}

/// Why `id` cannot run on `platform`, if it cannot: the plan's own error,
/// or the first program it needs that `installed` does not find.
pub fn reason(
    id: &str,
    platform: Platform,
    root: &std::path::Path,
    installed: &dyn Fn(&str) -> bool,
) -> Option<String> {
    let params = DiagnosticParams {
        kind: Some(sample(id)?),
    };
    let steps = match plan::plan(&params, platform, root, installed) {
        Ok(steps) => steps,
        Err(error) => return Some(error),
    };
    steps.iter().find_map(|step| match step {
        Step::Program {
            argv,
            optional: false,
            ..
        } => argv
            .first()
            .filter(|program| !installed(program))
            .map(|program| format!("{program} is not installed")),
        _ => None,
    })
}

/// The enabled diagnostics this PC cannot run, with why, for the `Hello`.
pub fn unavailable(enabled: &[&str], root: &std::path::Path) -> Vec<UnavailableDiagnostic> {
    enabled
        .iter()
        .filter_map(|id| {
            let reason = reason(id, plan::current(), root, &|p| run::which(p).is_some())?;
            Some(UnavailableDiagnostic {
                id: (*id).to_owned(),
                reason: reason.chars().take(MAX_REASON).collect(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn every_catalog_entry_has_a_sample_that_passes_the_check() {
        for spec in deskpulse_proto::catalog::CATALOG {
            let kind = sample(spec.id).unwrap_or_else(|| panic!("{} has no sample", spec.id));
            let params = DiagnosticParams { kind: Some(kind) };
            assert_eq!(deskpulse_proto::catalog::id_of(&params), spec.id);
        }
    }

    #[test]
    fn a_missing_program_is_named_on_every_platform() {
        let without = |missing: &'static [&'static str]| {
            move |program: &str| !missing.iter().any(|m| program.ends_with(m))
        };
        let root = Path::new("/");
        let no_ping = without(&["ping", "ping.exe", "tracepath", "tracert.exe", "traceroute"]);
        assert_eq!(
            reason("ping", Platform::Linux, root, &no_ping).as_deref(),
            Some("ping is not installed")
        );
        assert_eq!(
            reason("traceroute", Platform::Linux, root, &no_ping).as_deref(),
            Some("tracepath is not installed")
        );
        assert_eq!(
            reason("ping", Platform::Windows, root, &no_ping).as_deref(),
            Some("ping.exe is not installed")
        );
        assert!(
            reason("ping", Platform::Macos, root, &no_ping)
                .is_some_and(|r| r.ends_with("ping is not installed"))
        );
        // Diagnostics done in Rust need nothing installed.
        for id in ["dns_lookup", "tcp_connect", "http_check", "disk_usage"] {
            for platform in [Platform::Linux, Platform::Windows, Platform::Macos] {
                assert_eq!(reason(id, platform, root, &|_| false), None, "{id}");
            }
        }
        // With everything installed, everything runs.
        for spec in deskpulse_proto::catalog::CATALOG {
            assert_eq!(
                reason(spec.id, Platform::Linux, root, &|_| true),
                None,
                "{}",
                spec.id
            );
        }
        // A plan that picks among programs says none of them is there.
        assert!(
            reason("pending_updates", Platform::Linux, root, &|_| false)
                .is_some_and(|r| r.contains("no supported package manager"))
        );
    }

    #[test]
    fn unknown_ids_are_left_out() {
        assert_eq!(
            reason("shell", Platform::Linux, Path::new("/"), &|_| false),
            None
        );
    }
}
