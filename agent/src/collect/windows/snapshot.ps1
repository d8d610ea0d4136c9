# Deskpulse inventory snapshot for Windows: one JSON document holding every
# WMI/CIM and registry fact the agent reports beyond installed programs.
# Read-only queries only. Dates are turned into Unix seconds here so the
# Rust parser never sees PowerShell's two date encodings.
$ErrorActionPreference = 'SilentlyContinue'
$ProgressPreference = 'SilentlyContinue'

function Get-Cim([string]$Class, [string]$Namespace = 'root/cimv2', [string]$Filter) {
  $params = @{ ClassName = $Class; Namespace = $Namespace; ErrorAction = 'SilentlyContinue' }
  if ($Filter) { $params.Filter = $Filter }
  Get-CimInstance @params
}
function ConvertTo-Unix($Date) {
  if ($Date -is [datetime]) { ([DateTimeOffset]$Date).ToUnixTimeSeconds() } else { 0 }
}
function Select-Fields($Items, [string[]]$Fields) { @($Items | Select-Object -Property $Fields) }
function Get-RegValue([string]$Path, [string]$Name) {
  (Get-ItemProperty -Path $Path -Name $Name -ErrorAction SilentlyContinue).$Name
}

$cs = Get-Cim Win32_ComputerSystem
$os = Get-Cim Win32_OperatingSystem
$bios = Get-Cim Win32_BIOS
$nt = 'HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion'
$logonUi = 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Authentication\LogonUI'

$sessions = @(Get-Cim Win32_Process -Filter "Name='explorer.exe'" | ForEach-Object {
  $owner = Invoke-CimMethod -InputObject $_ -MethodName GetOwner
  [ordered]@{ user = $owner.User; domain = $owner.Domain; started = ConvertTo-Unix $_.CreationDate; session = $_.SessionId }
})
$adminGroup = Get-Cim Win32_Group -Filter "SID='S-1-5-32-544'"
$admins = @($adminGroup | Get-CimAssociatedInstance -ResultClassName Win32_UserAccount | Select-Object Name, Domain, SID)

$rebootFlags = @()
if (Test-Path 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending') { $rebootFlags += 'component-servicing' }
if (Test-Path 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired') { $rebootFlags += 'windows-update' }
if (Get-RegValue 'HKLM:\SYSTEM\CurrentControlSet\Control\Session Manager' 'PendingFileRenameOperations') { $rebootFlags += 'file-rename' }

$timeZone = (Get-TimeZone).Id

[ordered]@{
  computer_system = $cs | Select-Object Manufacturer, Model, Domain, PartOfDomain, Workgroup, TotalPhysicalMemory
  bios = [ordered]@{ Manufacturer = $bios.Manufacturer; SMBIOSBIOSVersion = $bios.SMBIOSBIOSVersion; SerialNumber = $bios.SerialNumber; ReleaseDate = ConvertTo-Unix $bios.ReleaseDate }
  product = Get-Cim Win32_ComputerSystemProduct | Select-Object UUID, IdentifyingNumber
  baseboard = Get-Cim Win32_BaseBoard | Select-Object Manufacturer, Product, SerialNumber
  enclosure = Get-Cim Win32_SystemEnclosure | Select-Object ChassisTypes
  processors = Select-Fields (Get-Cim Win32_Processor) Name, Manufacturer, NumberOfCores, NumberOfLogicalProcessors, MaxClockSpeed, Architecture
  os = [ordered]@{
    Caption = $os.Caption; Version = $os.Version; BuildNumber = $os.BuildNumber
    UBR = Get-RegValue $nt 'UBR'; DisplayVersion = Get-RegValue $nt 'DisplayVersion'
    OSArchitecture = $os.OSArchitecture; InstallDate = ConvertTo-Unix $os.InstallDate
    LastBootUpTime = ConvertTo-Unix $os.LastBootUpTime; FreePhysicalMemory = $os.FreePhysicalMemory
    TimeZone = $timeZone
  }
  page_files = Select-Fields (Get-Cim Win32_PageFileUsage) Name, AllocatedBaseSize
  memory_modules = Select-Fields (Get-Cim Win32_PhysicalMemory) DeviceLocator, BankLabel, Capacity, SMBIOSMemoryType, Speed, ConfiguredClockSpeed, Manufacturer, PartNumber, SerialNumber
  disk_drives = Select-Fields (Get-Cim Win32_DiskDrive) Index, Model, SerialNumber, Size, InterfaceType, MediaType
  physical_disks = Select-Fields (Get-Cim MSFT_PhysicalDisk 'root/Microsoft/Windows/Storage') DeviceId, MediaType, BusType
  net_adapters = Select-Fields (Get-Cim MSFT_NetAdapter 'root/StandardCimv2' 'HardwareInterface=TRUE') Name, InterfaceDescription, InterfaceIndex, MacAddress, MediaConnectState, Speed, NdisPhysicalMedium
  net_configs = Select-Fields (Get-Cim Win32_NetworkAdapterConfiguration -Filter 'IPEnabled=TRUE') InterfaceIndex, IPAddress, DefaultIPGateway, DNSServerSearchOrder
  video = Select-Fields (Get-Cim Win32_VideoController) Name, AdapterCompatibility, DriverVersion
  battery_static = Select-Fields (Get-Cim BatteryStaticData 'root/wmi') InstanceName, DeviceName, ManufactureName, DesignedCapacity
  battery_full = Select-Fields (Get-Cim BatteryFullChargedCapacity 'root/wmi') InstanceName, FullChargedCapacity
  battery_cycles = Select-Fields (Get-Cim BatteryCycleCount 'root/wmi') InstanceName, CycleCount
  accounts = Select-Fields (Get-Cim Win32_UserAccount -Filter 'LocalAccount=TRUE') Name, FullName, SID, Disabled
  admins = $admins
  sessions = $sessions
  last_logon = [ordered]@{ User = Get-RegValue $logonUi 'LastLoggedOnUser'; SID = Get-RegValue $logonUi 'LastLoggedOnUserSID' }
  profiles = @(Get-Cim Win32_UserProfile | ForEach-Object { [ordered]@{ SID = $_.SID; LastUseTime = ConvertTo-Unix $_.LastUseTime } })
  firewall_profiles = Select-Fields (Get-Cim MSFT_NetFirewallProfile 'root/StandardCimv2') Name, Enabled
  antivirus = Select-Fields (Get-Cim AntiVirusProduct 'root/SecurityCenter2') displayName, productState
  bitlocker = Select-Fields (Get-Cim Win32_EncryptableVolume 'root/cimv2/Security/MicrosoftVolumeEncryption') DriveLetter, ProtectionStatus, ConversionStatus, EncryptionMethod
  reboot_flags = $rebootFlags
  services = Select-Fields (Get-Cim Win32_Service) Name, DisplayName, State, StartMode
  hotfixes = Select-Fields (Get-Cim Win32_QuickFixEngineering) HotFixID, Description, InstalledOn
} | ConvertTo-Json -Depth 5 -Compress
