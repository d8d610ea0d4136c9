//! Hardware from sysfs and the SMBIOS table: a laptop, a VM without DMI,
//! placeholder values, ARM cpuinfo, batteries, and I/O errors as reasons.

use std::path::{Path, PathBuf};

use deskpulse_proto::v1::{DiskKind, Inventory, UnavailableReason};

use super::parse::{self, BatteryCounters};
use super::*;

struct Tree(PathBuf);

impl Tree {
    fn new() -> Self {
        Self(tempfile::tempdir().expect("temp dir").keep())
    }
    fn write(&self, path: &str, text: &str) -> &Self {
        let full = self.0.join(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::fs::write(full, text).expect("write");
        self
    }
    fn bytes(&self, path: &str, data: &[u8]) -> &Self {
        let full = self.0.join(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::fs::write(full, data).expect("write");
        self
    }
    fn dir(&self, path: &str) -> &Self {
        std::fs::create_dir_all(self.0.join(path)).expect("mkdir");
        self
    }
    fn root(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const X86_CPUINFO: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Core(TM) i7-1185G7 @ 3.00GHz\n\
cpu MHz\t\t: 1796.413\nphysical id\t: 0\ncore id\t\t: 0\n\nprocessor\t: 1\nvendor_id\t: GenuineIntel\n\
model name\t: Intel(R) Core(TM) i7-1185G7 @ 3.00GHz\nphysical id\t: 0\ncore id\t\t: 0\n\n\
processor\t: 2\nphysical id\t: 0\ncore id\t\t: 1\n\nprocessor\t: 3\nphysical id\t: 0\ncore id\t\t: 1\n";

fn laptop() -> Tree {
    let t = Tree::new();
    t.write("sys/class/dmi/id/sys_vendor", "LENOVO\n")
        .write("sys/class/dmi/id/product_name", "20W0004JGE\n")
        .write("sys/class/dmi/id/product_serial", "PF3ABCDE\n")
        .write("sys/class/dmi/id/product_uuid", "12345678-9ABC-DEF0-0123-456789ABCDEF\n")
        .write("sys/class/dmi/id/chassis_type", "10\n")
        .write("sys/class/dmi/id/bios_vendor", "LENOVO\n")
        .write("sys/class/dmi/id/bios_version", "N32ET86W (1.62 )\n")
        .write("sys/class/dmi/id/bios_date", "03/14/2023\n")
        .write("sys/class/dmi/id/board_vendor", "LENOVO\n")
        .write("sys/class/dmi/id/board_name", "20W0004JGE\n")
        .write("sys/class/dmi/id/board_serial", "To Be Filled By O.E.M.\n")
        .write("proc/cpuinfo", X86_CPUINFO)
        .write("sys/devices/system/cpu/cpu0/cpufreq/base_frequency", "3000000\n")
        .write("proc/meminfo", "MemTotal:       16000000 kB\nMemAvailable:    8000000 kB\nSwapTotal:       2000000 kB\n")
        .write("sys/block/nvme0n1/size", "1000215216\n")
        .write("sys/block/nvme0n1/removable", "0\n")
        .write("sys/block/nvme0n1/queue/rotational", "0\n")
        .write("sys/block/nvme0n1/device/model", "SAMSUNG MZVLB512HBJQ-000L7\n")
        .write("sys/block/nvme0n1/device/serial", "S4ENNX0R123456\n")
        .write("sys/block/sda/size", "60620800\n")
        .write("sys/block/sda/removable", "1\n")
        .write("sys/block/sda/queue/rotational", "1\n")
        .write("sys/block/sda/device/model", "Cruzer Blade\n")
        .dir("sys/block/loop0")
        .dir("sys/block/dm-0")
        .write("sys/class/net/wlp0s20f3/address", "A0:B1:C2:D3:E4:F5\n")
        .write("sys/class/net/wlp0s20f3/operstate", "up\n")
        .dir("sys/class/net/wlp0s20f3/wireless")
        .write("sys/class/net/enp0s31f6/address", "00:11:22:33:44:55\n")
        .write("sys/class/net/enp0s31f6/operstate", "down\n")
        .write("sys/class/net/enp0s31f6/speed", "-1\n")
        .write("sys/class/net/lo/address", "00:00:00:00:00:00\n")
        .write(
            "proc/net/route",
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
             wlp0s20f3\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
             wlp0s20f3\t0001A8C0\t00000000\t0001\t0\t0\t600\t00FFFFFF\t0\t0\t0\n",
        )
        .write(
            "proc/net/ipv6_route",
            "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 wlp0s20f3\n",
        )
        .write("etc/resolv.conf", "# stub\nnameserver 127.0.0.53\noptions edns0\n")
        .write("run/systemd/resolve/resolv.conf", "nameserver 192.168.1.1\nnameserver fd00::1\n")
        .write("sys/class/drm/card0/device/vendor", "0x8086\n")
        .write("sys/class/drm/card0/device/device", "0x9a49\n")
        .write("sys/class/drm/card0/device/uevent", "DRIVER=i915\nPCI_CLASS=30000\n")
        .dir("sys/class/drm/card0-eDP-1")
        .write("usr/share/misc/pci.ids", "# comment\n8086  Intel Corporation\n\t9a40  TigerLake-LP GT2\n\t9a49  TigerLake-LP GT2 [Iris Xe Graphics]\n\t\t17aa 22d8  subsystem\n10de  NVIDIA Corporation\n")
        .write("sys/class/power_supply/AC/type", "Mains\n")
        .write("sys/class/power_supply/BAT0/type", "Battery\n")
        .write("sys/class/power_supply/BAT0/manufacturer", "SMP\n")
        .write("sys/class/power_supply/BAT0/model_name", "5B10W13975\n")
        .write("sys/class/power_supply/BAT0/energy_full_design", "50500000\n")
        .write("sys/class/power_supply/BAT0/energy_full", "42420000\n")
        .write("sys/class/power_supply/BAT0/cycle_count", "231\n");
    t
}

fn collected(t: &Tree) -> Inventory {
    let mut inv = Inventory::default();
    collect(t.root(), &mut inv);
    inv
}

#[test]
fn a_laptop_from_sysfs() {
    let t = laptop();
    let inv = collected(&t);
    let s = inv.system.clone().expect("system");
    assert_eq!(
        (s.vendor.as_str(), s.model.as_str(), s.serial.as_str()),
        ("LENOVO", "20W0004JGE", "PF3ABCDE")
    );
    assert_eq!(s.hardware_uuid, "12345678-9abc-def0-0123-456789abcdef");
    assert_eq!(s.chassis_type, "notebook");
    assert_eq!(s.bios_date, "03/14/2023");
    assert_eq!(s.baseboard_serial, "", "placeholder dropped");
    let placeholder = inv
        .unavailable
        .iter()
        .find(|u| u.field == "system.baseboard_serial")
        .expect("listed");
    assert_eq!(placeholder.reason, UnavailableReason::NotPresent as i32);
    assert!(placeholder.detail.contains("placeholder"));
    // Without the SMBIOS table there are no modules, and that is said.
    let modules = inv
        .unavailable
        .iter()
        .find(|u| u.field == "memory.modules")
        .expect("listed");
    assert_eq!(modules.reason, UnavailableReason::NotPresent as i32);

    let cpu = inv.cpu.clone().expect("cpu");
    assert_eq!(
        (cpu.logical_cores, cpu.physical_cores, cpu.frequency_mhz),
        (4, 2, 3000)
    );
    assert_eq!(cpu.vendor, "GenuineIntel");
    let mem = inv.memory.clone().expect("memory");
    assert_eq!(
        (mem.total_bytes, mem.swap_total_bytes),
        (16_000_000 * 1024, 2_000_000 * 1024)
    );

    let disks = &inv.storage.as_ref().expect("storage").disks;
    assert_eq!(
        disks.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        ["nvme0n1", "sda"]
    );
    assert_eq!(disks[0].kind, DiskKind::Nvme as i32);
    assert_eq!(disks[0].size_bytes, 1_000_215_216 * 512);
    assert_eq!(disks[0].serial, "S4ENNX0R123456");
    assert_eq!(disks[1].kind, DiskKind::Hdd as i32);
    assert!(disks[1].removable);

    let net = inv.network.clone().expect("network");
    let names: Vec<&str> = net.interfaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["enp0s31f6", "wlp0s20f3"]);
    assert!(!net.interfaces[0].up && net.interfaces[0].speed_mbps == 0);
    assert!(net.interfaces[1].up && net.interfaces[1].wireless);
    assert_eq!(net.interfaces[1].mac, "a0:b1:c2:d3:e4:f5");
    assert_eq!(net.default_gateways, ["192.168.1.1", "fe80::1"]);
    assert_eq!(
        net.dns_servers,
        ["192.168.1.1", "fd00::1"],
        "past the resolved stub"
    );

    let gpu = &inv.gpu.as_ref().expect("gpu").gpus;
    assert_eq!(gpu.len(), 1, "connector entries are not cards");
    assert_eq!(gpu[0].vendor, "Intel Corporation");
    assert_eq!(gpu[0].model, "TigerLake-LP GT2 [Iris Xe Graphics]");
    assert_eq!(gpu[0].driver, "i915");

    let bats = &inv.battery.as_ref().expect("battery").batteries;
    assert_eq!(bats.len(), 1, "mains supplies are not batteries");
    assert_eq!(
        (
            bats[0].design_capacity_mwh,
            bats[0].full_charge_capacity_mwh,
            bats[0].cycle_count
        ),
        (50_500, 42_420, 231)
    );
    assert!((bats[0].health_percent - 84.0).abs() < 0.01);
}

#[test]
fn the_smbios_table_wins_and_adds_memory_modules() {
    let t = laptop();
    t.bytes(
        "sys/firmware/dmi/tables/DMI",
        &smbios::tests::laptop_table(),
    );
    t.write("sys/class/dmi/id/product_serial", "sysfs-serial\n");
    let inv = collected(&t);
    assert_eq!(inv.system.as_ref().expect("system").serial, "PF3ABCDE");
    let modules = &inv.memory.as_ref().expect("memory").modules;
    assert_eq!(modules.len(), 2);
    assert_eq!(modules[1].size_bytes, 16 << 30);
    assert!(!inv.unavailable.iter().any(|u| u.field == "memory.modules"));
}

#[test]
fn a_virtual_machine_without_dmi_says_so() {
    let t = Tree::new();
    t.write("proc/cpuinfo", X86_CPUINFO)
        .write("proc/meminfo", "MemTotal: 1000 kB\n");
    let inv = collected(&t);
    let system = inv
        .unavailable
        .iter()
        .find(|u| u.field == "system")
        .expect("system listed");
    assert_eq!(system.reason, UnavailableReason::NotPresent as i32);
    assert!(inv.unavailable.iter().any(|u| u.field == "storage.disks"));
}

#[test]
fn placeholders_are_recognised() {
    for p in [
        "To Be Filled By O.E.M.",
        "Default string",
        "System Serial Number",
        "0",
        "  ",
        "00000000-0000-0000-0000-000000000000",
        "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
        "Not Specified",
    ] {
        assert!(parse::is_placeholder(p), "{p:?}");
    }
    for real in ["PF3ABCDE", "C02XK1JJJG5H", "0A1B"] {
        assert!(!parse::is_placeholder(real), "{real:?}");
    }
}

#[test]
fn arm_cpuinfo_has_no_model_name() {
    let text = "processor\t: 0\nBogoMIPS\t: 48.00\nCPU implementer\t: 0x41\nCPU part\t: 0xd08\n\nprocessor\t: 1\nCPU implementer\t: 0x41\nCPU part\t: 0xd08\n";
    let cpu = parse::cpuinfo(text);
    assert_eq!((cpu.logical, cpu.physical), (2, 2));
    assert_eq!(cpu.vendor, "ARM");
    assert_eq!(cpu.model, "ARM part 0xd08");
}

#[test]
fn charge_based_batteries_use_the_design_voltage() {
    let b = parse::battery(
        "BAT1",
        String::new(),
        String::new(),
        BatteryCounters {
            charge_full_design_uah: Some(4_000_000),
            charge_full_uah: Some(3_000_000),
            voltage_min_design_uv: Some(11_100_000),
            ..BatteryCounters::default()
        },
    );
    assert_eq!(
        (b.design_capacity_mwh, b.full_charge_capacity_mwh),
        (44_400, 33_300)
    );
    assert!((b.health_percent - 75.0).abs() < 0.01);
    let unknown = parse::battery(
        "BAT2",
        String::new(),
        String::new(),
        BatteryCounters::default(),
    );
    assert_eq!(unknown.health_percent, 0.0);
}

#[test]
fn io_errors_map_to_reasons() {
    use std::io::{Error, ErrorKind};
    assert_eq!(
        reason_for(&Error::from(ErrorKind::PermissionDenied)),
        UnavailableReason::NotPermitted
    );
    assert_eq!(
        reason_for(&Error::from(ErrorKind::NotFound)),
        UnavailableReason::NotPresent
    );
    assert_eq!(
        reason_for(&Error::from(ErrorKind::InvalidData)),
        UnavailableReason::Failed
    );
}
