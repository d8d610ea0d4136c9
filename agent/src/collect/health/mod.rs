//! Health samples. The cheap readings (CPU, memory, swap, load,
//! filesystems, temperatures, batteries, a pending reboot) are read from
//! files under the system root (D13) on every tick. The slow probes run on
//! their own intervals and their results are cached in the sampler (D24):
//! the watched services through one `systemctl show` (default every
//! 5 min), security posture (10 min), SMART through `smartctl` and the last
//! OS update (6 h).
//! The sampler takes the time as an argument ([`HealthSampler::sample_at`])
//! so tests show a probe is not re-run before its interval without
//! sleeping.
//!
//! # Layout
//! - [`parse`]: the plain parsers (`/proc`, `smartctl -j`, apt and dpkg logs).
//! - this module: reading the sources, the probe cache, the sample.

pub mod parse;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use deskpulse_proto::v1::{
    BatteryHealth, DiskHealth, FilesystemUsage, HealthSample, Inventory, ProtectionState,
    SecurityPosture, ServiceHealth, TemperatureReading, Unavailable, UnavailableReason,
};

use super::spawn::{self, SpawnError};

/// Posture every ten minutes by default (D24).
pub const DEFAULT_POSTURE_INTERVAL: Duration = Duration::from_secs(600);
/// SMART every six hours by default (D24).
pub const DEFAULT_SMART_INTERVAL: Duration = Duration::from_secs(6 * 3600);
/// The last OS update every six hours by default (D24).
pub const DEFAULT_UPDATES_INTERVAL: Duration = Duration::from_secs(6 * 3600);
/// The watched services' states every five minutes by default (D24): one
/// `systemctl show` for the whole list.
pub const DEFAULT_SERVICES_INTERVAL: Duration = Duration::from_secs(300);
/// How long one `systemctl show` may take.
const SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one `smartctl` may take before it is killed.
const SMARTCTL_TIMEOUT: Duration = Duration::from_secs(30);

/// What the sampler watches and how often the slow probes run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSettings {
    /// Services whose run state every sample carries, e.g. "cups.service".
    pub watch_services: Vec<String>,
    /// How often the security posture is read.
    pub posture_interval: Duration,
    /// How often SMART is read.
    pub smart_interval: Duration,
    /// How often the last OS update is looked up.
    pub updates_interval: Duration,
    /// How often the watched services' states are read.
    pub services_interval: Duration,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            watch_services: Vec::new(),
            posture_interval: DEFAULT_POSTURE_INTERVAL,
            smart_interval: DEFAULT_SMART_INTERVAL,
            updates_interval: DEFAULT_UPDATES_INTERVAL,
            services_interval: DEFAULT_SERVICES_INTERVAL,
        }
    }
}

/// Runs `smartctl -j -H -A DEVICE` and hands back its stdout, whatever its
/// exit code (a bit mask whose JSON still says what happened).
pub type SmartRunner = Box<dyn FnMut(&str) -> Result<Vec<u8>, SpawnError> + Send>;

/// Runs `systemctl show` for the watched units and hands back its stdout.
pub type ServiceRunner = Box<dyn FnMut(&[String]) -> Result<Vec<u8>, SpawnError> + Send>;

/// The real `systemctl show`: one process for the whole watched list.
fn systemctl_show(units: &[String]) -> Result<Vec<u8>, SpawnError> {
    let mut args = vec!["show", "--property=LoadState,ActiveState", "--"];
    args.extend(units.iter().map(String::as_str));
    let done = spawn::run("systemctl", &args, SYSTEMCTL_TIMEOUT)?;
    match done.code {
        Some(0) => Ok(done.stdout),
        code => Err(SpawnError::Failed(format!(
            "systemctl show: exited with {code:?}"
        ))),
    }
}

/// The real `smartctl`, through the one spawn helper.
fn smartctl(device: &str) -> Result<Vec<u8>, SpawnError> {
    let done = spawn::run("smartctl", &["-j", "-H", "-A", device], SMARTCTL_TIMEOUT)?;
    if done.stdout.is_empty() {
        return Err(SpawnError::Failed(format!(
            "smartctl {device}: no output (exit {:?})",
            done.code
        )));
    }
    Ok(done.stdout)
}

/// A slow probe's last result and when it was taken.
#[derive(Debug)]
struct Cached<T> {
    value: T,
    at: Option<Instant>,
}

impl<T: Default> Default for Cached<T> {
    fn default() -> Self {
        Self {
            value: T::default(),
            at: None,
        }
    }
}

impl<T> Cached<T> {
    /// True when the probe has never run or its interval has passed.
    fn due(&self, now: Instant, every: Duration) -> bool {
        self.at
            .is_none_or(|at| now.checked_duration_since(at).is_none_or(|d| d >= every))
    }
}

/// The SMART probe's result: the disks read, and the ones that could not be.
type SmartResult = (Vec<DiskHealth>, Vec<Unavailable>);
/// The last update probe's result: the time, or why it is not known.
type UpdateResult = Result<i64, Unavailable>;

/// Takes health samples; keeps the CPU counters of the previous sample so
/// CPU % covers the interval between samples (the first covers the time
/// since boot), and the slow probes' cached results.
pub struct HealthSampler {
    root: PathBuf,
    settings: HealthSettings,
    last_cpu: Option<(u64, u64)>,
    smart_runner: Option<SmartRunner>,
    service_runner: Option<ServiceRunner>,
    services: Cached<(Vec<ServiceHealth>, Vec<Unavailable>)>,
    posture: Cached<(Option<SecurityPosture>, Vec<Unavailable>)>,
    smart: Cached<SmartResult>,
    updates: Cached<Option<UpdateResult>>,
}

impl std::fmt::Debug for HealthSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthSampler")
            .field("root", &self.root)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Milliseconds since the Unix epoch, now.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn missing(field: &str, reason: UnavailableReason, detail: impl Into<String>) -> Unavailable {
    Unavailable {
        field: field.to_owned(),
        reason: reason as i32,
        detail: detail.into(),
    }
}

impl HealthSampler {
    /// A sampler reading under `system_root`, with the default settings.
    pub fn new(system_root: &Path) -> Self {
        Self::with_settings(system_root, HealthSettings::default())
    }

    /// A sampler reading under `system_root`. SMART runs the real
    /// `smartctl` only when the root is `/`: it reads the running machine's
    /// devices, which a fixture tree does not describe.
    pub fn with_settings(system_root: &Path, settings: HealthSettings) -> Self {
        let real_root = system_root == Path::new("/");
        Self {
            root: system_root.to_path_buf(),
            settings,
            last_cpu: None,
            smart_runner: real_root.then(|| Box::new(smartctl) as SmartRunner),
            service_runner: real_root.then(|| Box::new(systemctl_show) as ServiceRunner),
            services: Cached::default(),
            posture: Cached::default(),
            smart: Cached::default(),
            updates: Cached::default(),
        }
    }

    /// Replaces how `systemctl show` is run (tests hand in fixture output).
    pub fn with_service_runner(mut self, runner: ServiceRunner) -> Self {
        self.service_runner = Some(runner);
        self
    }

    /// Replaces how `smartctl` is run (tests hand in fixture output).
    pub fn with_smart_runner(mut self, runner: SmartRunner) -> Self {
        self.smart_runner = Some(runner);
        self
    }

    /// One sample, now.
    pub fn sample(&mut self) -> HealthSample {
        self.sample_at(Instant::now(), now_ms())
    }

    /// One sample at `now` (for the probe intervals) and `now_unix_ms` (for
    /// the times the probes record).
    pub fn sample_at(&mut self, now: Instant, now_unix_ms: i64) -> HealthSample {
        let read = |p: &str| std::fs::read_to_string(self.root.join(p));
        let mut unavailable = Vec::new();
        let stat = read("proc/stat").unwrap_or_default();
        let ticks = cpu_ticks(&stat);
        let cpu_percent = match (ticks, self.last_cpu) {
            (Some((busy, total)), Some((last_busy, last_total))) if total > last_total => {
                (busy.saturating_sub(last_busy)) as f32 * 100.0 / (total - last_total) as f32
            }
            (Some((busy, total)), _) if total > 0 => busy as f32 * 100.0 / total as f32,
            _ => 0.0,
        };
        if ticks.is_some() {
            self.last_cpu = ticks;
        }
        let meminfo = read("proc/meminfo").unwrap_or_default();
        let (total, available) = super::meminfo(&meminfo);
        let memory_used_percent = if total > 0 {
            total.saturating_sub(available) as f32 * 100.0 / total as f32
        } else {
            0.0
        };
        let (load_1m, load_5m, load_15m) = match read("proc/loadavg") {
            Ok(text) => parse::loadavg(&text).unwrap_or_default(),
            Err(error) => {
                unavailable.push(missing(
                    "health.load_1m",
                    super::reason_for(&error),
                    format!("proc/loadavg: {error}"),
                ));
                (0.0, 0.0, 0.0)
            }
        };
        let mut scratch = Inventory::default();
        let filesystems = super::filesystems(&self.root, &mut scratch)
            .into_iter()
            .map(|fs| FilesystemUsage {
                // df's definition (deskpulse_proto::space): root's reserve
                // is neither used nor available.
                used_percent: deskpulse_proto::space::used_percent(
                    fs.used_bytes
                        .unwrap_or(fs.total_bytes.saturating_sub(fs.available_bytes)),
                    fs.available_bytes,
                ),
                mount_point: fs.mount_point,
                available_bytes: fs.available_bytes,
            })
            .collect();
        let temperatures = temperatures(&self.root);
        if temperatures.is_empty() {
            unavailable.push(missing(
                "health.temperatures",
                UnavailableReason::NotPresent,
                "no hwmon or thermal zone sensors under sys/class",
            ));
        }
        let batteries = super::hardware::linux_batteries(&self.root)
            .into_iter()
            .map(|(b, charge)| BatteryHealth {
                name: b.name,
                health_percent: b.health_percent,
                charge_percent: charge.unwrap_or(0.0),
                cycle_count: b.cycle_count,
            })
            .collect();
        let services = self.watched_services(now, &mut unavailable);
        let posture = self.posture(now, now_unix_ms, &mut unavailable);
        let disks = self.disks(now, now_unix_ms, &mut unavailable);
        let last_update_unix_ms = self.last_update(now, &mut unavailable);
        HealthSample {
            cpu_percent,
            memory_used_percent,
            uptime_secs: sysinfo::System::uptime().unwrap_or(0),
            filesystems,
            load_1m,
            load_5m,
            load_15m,
            logical_cpus: parse::logical_cpus(&stat),
            swap_used_percent: parse::swap_used_percent(&meminfo),
            temperatures,
            batteries,
            reboot_pending: super::host::security::reboot_pending(&self.root),
            services,
            disks,
            last_update_unix_ms,
            posture,
            unavailable,
        }
    }

    /// The watched services' states, every services interval: from one
    /// `systemctl show` on the running system, which knows failed units;
    /// from the unit files under a fixture root (or when systemctl fails),
    /// which tell only running, stopped and missing.
    fn watched_services(
        &mut self,
        now: Instant,
        unavailable: &mut Vec<Unavailable>,
    ) -> Vec<ServiceHealth> {
        if self.settings.watch_services.is_empty() {
            return Vec::new();
        }
        if self.services.due(now, self.settings.services_interval) {
            self.services.value = self.read_services();
            self.services.at = Some(now);
        }
        unavailable.extend(self.services.value.1.iter().cloned());
        self.services.value.0.clone()
    }

    fn read_services(&mut self) -> (Vec<ServiceHealth>, Vec<Unavailable>) {
        let names = &self.settings.watch_services;
        if !self.root.join("run/systemd/system").exists() {
            return (
                Vec::new(),
                vec![missing(
                    "health.services",
                    UnavailableReason::NotPresent,
                    "systemd is not running, so run states are not known",
                )],
            );
        }
        let from_files = |root: &Path| -> Vec<ServiceHealth> {
            names
                .iter()
                .map(|name| ServiceHealth {
                    name: name.clone(),
                    state: super::host::services::watched_state(root, name).to_owned(),
                })
                .collect()
        };
        let Some(runner) = self.service_runner.as_mut() else {
            return (from_files(&self.root), Vec::new());
        };
        let shown = runner(names).map_err(|e| e.to_string()).and_then(|out| {
            parse::systemctl_show(&String::from_utf8_lossy(&out), names)
                .ok_or_else(|| "systemctl show: unexpected output".to_owned())
        });
        match shown {
            Ok(services) => (services, Vec::new()),
            Err(error) => (
                from_files(&self.root),
                vec![missing(
                    "health.services",
                    UnavailableReason::Failed,
                    format!(
                        "{error}; states read from unit files, where a failed unit reads as stopped"
                    ),
                )],
            ),
        }
    }

    /// Antivirus, firewall and encryption from the security collector,
    /// every posture interval.
    fn posture(
        &mut self,
        now: Instant,
        now_unix_ms: i64,
        unavailable: &mut Vec<Unavailable>,
    ) -> Option<SecurityPosture> {
        if self.posture.due(now, self.settings.posture_interval) {
            self.posture.value = read_posture(&self.root, now_unix_ms);
            self.posture.at = Some(now);
        }
        unavailable.extend(self.posture.value.1.iter().cloned());
        self.posture.value.0
    }

    /// SMART per disk, every SMART interval.
    fn disks(
        &mut self,
        now: Instant,
        now_unix_ms: i64,
        unavailable: &mut Vec<Unavailable>,
    ) -> Vec<DiskHealth> {
        if self.smart.due(now, self.settings.smart_interval) {
            self.smart.value = match self.smart_runner.as_mut() {
                Some(runner) => read_smart(&self.root, runner, now_unix_ms),
                None => (
                    Vec::new(),
                    vec![missing(
                        "health.disks",
                        UnavailableReason::NotSupported,
                        format!(
                            "smartctl reads the running machine's devices; not run with system root {}",
                            self.root.display()
                        ),
                    )],
                ),
            };
            self.smart.at = Some(now);
        }
        unavailable.extend(self.smart.value.1.iter().cloned());
        self.smart.value.0.clone()
    }

    /// The last successful OS update, every updates interval.
    fn last_update(&mut self, now: Instant, unavailable: &mut Vec<Unavailable>) -> i64 {
        if self.updates.due(now, self.settings.updates_interval) {
            self.updates.value = Some(read_last_update(&self.root));
            self.updates.at = Some(now);
        }
        match &self.updates.value {
            Some(Ok(at)) => *at,
            Some(Err(why)) => {
                unavailable.push(why.clone());
                0
            }
            None => 0,
        }
    }
}

/// CPU time counters from `/proc/stat`'s first line: (busy, total) ticks.
fn cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let values: Vec<u64> = line
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = values.iter().take(8).sum();
    // idle and iowait are not busy time.
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// Sorted entry names of a directory; empty when it is missing.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn read_trim(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|t| t.trim().to_owned())
}

/// hwmon sensors (`temp*_input`, with `temp*_label`, `temp*_crit` and the
/// chip's `name`); the thermal zones only when no hwmon sensor exists,
/// since the kernel exports most zones through hwmon as well.
pub fn temperatures(root: &Path) -> Vec<TemperatureReading> {
    let mut out = Vec::new();
    let hwmon = root.join("sys/class/hwmon");
    for chip in entries(&hwmon) {
        let base = hwmon.join(&chip);
        let name = read_trim(&base.join("name")).unwrap_or_else(|| chip.clone());
        for file in entries(&base) {
            let Some(sensor) = file
                .strip_suffix("_input")
                .filter(|s| s.starts_with("temp"))
            else {
                continue;
            };
            let Some(celsius) = read_trim(&base.join(&file)).and_then(|t| parse::millidegrees(&t))
            else {
                continue;
            };
            let label = read_trim(&base.join(format!("{sensor}_label")))
                .filter(|l| !l.is_empty())
                .unwrap_or_else(|| sensor.to_owned());
            out.push(TemperatureReading {
                sensor: format!("{name} {label}"),
                celsius,
                critical_celsius: read_trim(&base.join(format!("{sensor}_crit")))
                    .and_then(|t| parse::millidegrees(&t))
                    .unwrap_or(0.0),
            });
        }
    }
    if !out.is_empty() {
        return out;
    }
    let thermal = root.join("sys/class/thermal");
    for zone in entries(&thermal)
        .into_iter()
        .filter(|z| z.starts_with("thermal_zone"))
    {
        let base = thermal.join(&zone);
        let Some(celsius) = read_trim(&base.join("temp")).and_then(|t| parse::millidegrees(&t))
        else {
            continue;
        };
        let critical = (0..16)
            .find(|i| {
                read_trim(&base.join(format!("trip_point_{i}_type"))).as_deref() == Some("critical")
            })
            .and_then(|i| read_trim(&base.join(format!("trip_point_{i}_temp"))))
            .and_then(|t| parse::millidegrees(&t))
            .unwrap_or(0.0);
        out.push(TemperatureReading {
            sensor: read_trim(&base.join("type")).unwrap_or(zone),
            celsius,
            critical_celsius: critical,
        });
    }
    out
}

/// The posture from the inventory's security collector on this OS (D24:
/// every posture interval, not every tick).
fn read_posture(root: &Path, now_unix_ms: i64) -> (Option<SecurityPosture>, Vec<Unavailable>) {
    let mut scratch = Inventory::default();
    #[cfg(target_os = "linux")]
    let (sec, system_volume) = (
        super::host::security_info(root, &mut scratch, false),
        "/".to_owned(),
    );
    // fdesetup and preference plists: cheap enough for the posture interval.
    #[cfg(target_os = "macos")]
    let (sec, system_volume) = (
        super::macos::security_now(root, &mut scratch),
        "/".to_owned(),
    );
    // Three WMI queries and two registry keys, in process.
    #[cfg(windows)]
    let (sec, system_volume) = {
        let _ = root;
        (
            super::windows::security_now(&mut scratch),
            std::env::var("SystemDrive").unwrap_or_else(|_| "C:".into()),
        )
    };
    #[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
    {
        let _ = (root, now_unix_ms, &mut scratch);
        (
            None,
            vec![missing(
                "health.posture",
                UnavailableReason::NotSupported,
                "this agent build reads posture in health samples on Linux, macOS and Windows only",
            )],
        )
    }
    #[cfg(any(target_os = "linux", target_os = "macos", windows))]
    posture_from(&sec, &system_volume, scratch.unavailable, now_unix_ms)
}

/// A posture from a security section (any OS, so it is tested on the
/// Windows and macOS fixtures too): antivirus on when a registered product
/// is on, off when every one is off, unspecified when there is none; the
/// firewall as read; encryption of `system_volume` ("/", or "C:" on
/// Windows). `unavailable` holds the collector's `security.*` entries,
/// of which the antivirus, firewall and encryption ones are renamed
/// `health.posture.*`.
pub fn posture_from(
    sec: &deskpulse_proto::v1::SecurityInfo,
    system_volume: &str,
    unavailable: Vec<Unavailable>,
    now_unix_ms: i64,
) -> (Option<SecurityPosture>, Vec<Unavailable>) {
    let mut unavailable: Vec<Unavailable> = unavailable
        .into_iter()
        // Only what posture covers; a reboot flag or update count is not.
        .filter(|u| {
            [
                "security.antivirus",
                "security.firewall",
                "security.encryption",
            ]
            .iter()
            .any(|f| u.field.starts_with(f))
        })
        .map(|mut u| {
            u.field = u.field.replacen("security.", "health.posture.", 1);
            u
        })
        .collect();
    let mut name = |field: &str, detail: &str| {
        if !unavailable.iter().any(|u| u.field == field) {
            unavailable.push(missing(field, UnavailableReason::NotPresent, detail));
        }
    };
    let antivirus = if sec.antivirus.is_empty() {
        name(
            "health.posture.antivirus",
            "no antivirus product found (on Linux the agent knows ClamAV)",
        );
        ProtectionState::Unspecified
    } else if sec
        .antivirus
        .iter()
        .any(|a| a.state == ProtectionState::On as i32)
    {
        ProtectionState::On
    } else {
        ProtectionState::Off
    };
    let encryption = match sec
        .encryption
        .iter()
        .find(|v| v.volume.eq_ignore_ascii_case(system_volume))
    {
        Some(v) if v.encrypted => ProtectionState::On,
        Some(_) => ProtectionState::Off,
        None => {
            name(
                "health.posture.encryption",
                &format!("the encryption of {system_volume} is not known"),
            );
            ProtectionState::Unspecified
        }
    };
    (
        Some(SecurityPosture {
            antivirus: antivirus as i32,
            firewall: sec.firewall,
            encryption: encryption as i32,
            checked_at_unix_ms: now_unix_ms,
        }),
        unavailable,
    )
}

/// Whole disks under `sys/block`: not loop, RAM, zram, device-mapper, md,
/// optical or removable devices, which have no SMART of their own.
pub fn smart_devices(root: &Path) -> Vec<String> {
    const SKIP: &[&str] = &["loop", "ram", "zram", "dm-", "md", "sr", "fd", "nbd"];
    entries(&root.join("sys/block"))
        .into_iter()
        .filter(|name| !SKIP.iter().any(|p| name.starts_with(p)))
        .filter(|name| {
            read_trim(&root.join("sys/block").join(name).join("removable")).as_deref() != Some("1")
        })
        .map(|name| format!("/dev/{name}"))
        .collect()
}

fn read_smart(root: &Path, runner: &mut SmartRunner, now_unix_ms: i64) -> SmartResult {
    let mut disks = Vec::new();
    let mut unavailable = Vec::new();
    let devices = smart_devices(root);
    if devices.is_empty() {
        unavailable.push(missing(
            "health.disks",
            UnavailableReason::NotPresent,
            "no whole disks under sys/block to ask smartctl about",
        ));
    }
    for device in devices {
        match runner(&device) {
            Ok(json) => match parse::smart(&device, &json, now_unix_ms) {
                Ok(disk) => disks.push(disk),
                Err((reason, detail)) => unavailable.push(missing("health.disks", reason, detail)),
            },
            Err(SpawnError::NotFound(_)) => {
                // One line for the machine, not one per disk.
                return (
                    Vec::new(),
                    vec![missing(
                        "health.disks",
                        UnavailableReason::NotPresent,
                        "smartctl is not installed (package smartmontools)",
                    )],
                );
            }
            Err(SpawnError::Failed(error)) => {
                unavailable.push(missing("health.disks", UnavailableReason::Failed, error))
            }
        }
    }
    (disks, unavailable)
}

/// The last successful OS update: apt's history, else dpkg's log, on dpkg
/// systems; the newest install time in the rpmdb on rpm systems.
fn read_last_update(root: &Path) -> UpdateResult {
    if root.join("var/lib/dpkg/status").exists() {
        let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_default();
        return parse::apt_last_success(&read("var/log/apt/history.log"))
            .or_else(|| parse::dpkg_last_install(&read("var/log/dpkg.log")))
            .ok_or_else(|| {
                missing(
                    "health.last_update_unix_ms",
                    UnavailableReason::NotPresent,
                    "no successful run in var/log/apt/history.log or var/log/dpkg.log (rotated away?)",
                )
            });
    }
    // rpm databases are read through the system's SQLite, on Linux only.
    #[cfg(target_os = "linux")]
    for db in [
        "var/lib/rpm/rpmdb.sqlite",
        "usr/lib/sysimage/rpm/rpmdb.sqlite",
    ] {
        let path = root.join(db);
        if !path.exists() {
            continue;
        }
        return match super::packages::rpm::read_db(&path) {
            Ok(packages) => packages
                .iter()
                .map(|p| p.install_date_unix_s)
                .max()
                .filter(|t| *t > 0)
                .map(|t| t * 1000)
                .ok_or_else(|| {
                    missing(
                        "health.last_update_unix_ms",
                        UnavailableReason::NotPresent,
                        format!("{db} has no install times"),
                    )
                }),
            Err(error) => Err(missing(
                "health.last_update_unix_ms",
                match error {
                    super::packages::rpm::system_sqlite::SqliteError::NoLibrary(_) => {
                        UnavailableReason::NotSupported
                    }
                    super::packages::rpm::system_sqlite::SqliteError::Query(_) => {
                        UnavailableReason::Failed
                    }
                },
                format!("{db}: {error}"),
            )),
        };
    }
    Err(missing(
        "health.last_update_unix_ms",
        UnavailableReason::NotSupported,
        "neither dpkg nor an rpm ≥ 4.16 database is here",
    ))
}

#[cfg(test)]
mod tests;
