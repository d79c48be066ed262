<#
.SYNOPSIS
Installs a Conclave node on this Windows server from the unpacked zip: checks the files against
SHA256SUMS, copies conclave.exe and conclavectl.exe to Program Files, puts the config template
in %ProgramData%\Conclave (never over an existing config), registers the Windows service
(`conclave.exe service install`), opens the node's ports in Windows Firewall, and imports the
cluster's root certificate into the machine's Trusted Root store.

.DESCRIPTION
Run from an elevated PowerShell in the unpacked folder. Safe to run again (upgrade in place:
stop the service first, see docs\operations.md "Rolling upgrade"). Nothing is downloaded.

The node must be initialized (`conclave.exe init`) or joined (`conclave.exe join`) before the
service can start; with -Start the script starts it and waits until the node serves.

.EXAMPLE
.\install.ps1 -RootCert .\ca.pem -RootFingerprint 3F:9A:...:11 -Start
#>
[CmdletBinding()]
param(
    # The node's config file. Created from conclave.toml in this folder when missing.
    [string]$Config = (Join-Path $env:ProgramData 'Conclave\conclave.toml'),
    # Where the executables go.
    [string]$InstallDir = (Join-Path $env:ProgramFiles 'Conclave'),
    [string]$ServiceName = 'Conclave',
    # The cluster's root certificate (PEM, from any node's trust page or conclave-dev\ca.pem).
    [string]$RootCert,
    # Its SHA-256 fingerprint as `conclave init` printed it, checked before the import.
    [string]$RootFingerprint,
    # Start the service and wait until the node serves.
    [switch]$Start,
    [switch]$NoService,
    [switch]$NoFirewall
)
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version 3

function Fail([string]$Message) {
    Write-Error "install.ps1: $Message" -ErrorAction Continue
    exit 1
}

$principal = New-Object Security.Principal.WindowsPrincipal(
    [Security.Principal.WindowsIdentity]::GetCurrent())
if (-not $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) {
    Fail 'run this from an elevated (Administrator) PowerShell'
}
$here = $PSScriptRoot

# 1. Every file of the zip against SHA256SUMS (the lines `sha256sum` writes: hash, two spaces,
#    a relative path with forward slashes).
$sums = Join-Path $here 'SHA256SUMS'
if (-not (Test-Path $sums)) { Fail "SHA256SUMS is missing from $here" }
foreach ($line in Get-Content $sums) {
    if ($line -notmatch '^([0-9a-f]{64})  (.+)$') { Fail "SHA256SUMS: unreadable line: $line" }
    $want = $Matches[1]
    $file = Join-Path $here ($Matches[2] -replace '/', '\')
    if (-not (Test-Path $file)) { Fail "missing file: $($Matches[2])" }
    $got = (Get-FileHash -Algorithm SHA256 -LiteralPath $file).Hash.ToLowerInvariant()
    if ($got -ne $want) { Fail "checksum mismatch: $($Matches[2]) (the copy is damaged)" }
}
Write-Host 'checksums: all files match SHA256SUMS'

# 2. The executables.
New-Item -ItemType Directory -Force -Path $InstallDir | Out-Null
foreach ($exe in 'conclave.exe', 'conclavectl.exe') {
    Copy-Item -Force -LiteralPath (Join-Path $here $exe) -Destination $InstallDir
}
$conclave = Join-Path $InstallDir 'conclave.exe'
Write-Host "installed conclave.exe and conclavectl.exe in $InstallDir"

# 3. The config: the template only where there is none (an operator's edits are never replaced).
$configDir = Split-Path -Parent $Config
New-Item -ItemType Directory -Force -Path $configDir | Out-Null
if (-not (Test-Path -LiteralPath $Config)) {
    Copy-Item -LiteralPath (Join-Path $here 'conclave.toml') -Destination $Config
    Write-Host "wrote the config template to ${Config}: edit node_id, the addresses, workspace and permitted_ip_ranges"
}
& $conclave run --config $Config --validate
if ($LASTEXITCODE -ne 0) { Fail "the config $Config does not validate (see above)" }

# 4. Windows Firewall: the ports the config names (rules in group "Conclave", for conclave.exe
#    only; replaced on every run so a changed port does not leave the old one open).
if (-not $NoFirewall) {
    $text = Get-Content -Raw -LiteralPath $Config
    $ports = @()
    foreach ($key in 'api_addr', 'cluster_addr', 'https_addr') {
        $m = [regex]::Match($text, "(?m)^\s*$key\s*=\s*`"[^`"]*:(\d+)`"")
        if ($m.Success) { $ports += [int]$m.Groups[1].Value }
    }
    # [dns] addr: DNS answers over UDP and TCP.
    $dns = [regex]::Match($text, "(?ms)^\[dns\][^\[]*?^\s*addr\s*=\s*`"[^`"]*:(\d+)`"")
    Get-NetFirewallRule -Group 'Conclave' -ErrorAction SilentlyContinue | Remove-NetFirewallRule
    foreach ($port in ($ports | Sort-Object -Unique)) {
        New-NetFirewallRule -DisplayName "Conclave TCP $port" -Group 'Conclave' -Direction Inbound `
            -Protocol TCP -LocalPort $port -Program $conclave -Action Allow | Out-Null
    }
    if ($dns.Success) {
        $port = [int]$dns.Groups[1].Value
        foreach ($proto in 'UDP', 'TCP') {
            New-NetFirewallRule -DisplayName "Conclave DNS $proto $port" -Group 'Conclave' `
                -Direction Inbound -Protocol $proto -LocalPort $port -Program $conclave `
                -Action Allow | Out-Null
        }
        $ports += $port
    }
    Write-Host "firewall: inbound allowed to conclave.exe on $((($ports | Sort-Object -Unique) -join ', '))"
}

# 5. The cluster's root certificate, after its fingerprint is checked (the trust page is plain
#    HTTP: the fingerprint, read out of band, is what makes the download trustworthy).
if ($RootCert) {
    if (-not $RootFingerprint) { Fail '-RootCert needs -RootFingerprint (from `conclave init` or any node''s trust page)' }
    $cert = New-Object Security.Cryptography.X509Certificates.X509Certificate2((Resolve-Path $RootCert).Path)
    $sha = [Security.Cryptography.SHA256]::Create()
    $got = [BitConverter]::ToString($sha.ComputeHash($cert.RawData)) -replace '-', ''
    $want = ($RootFingerprint -replace '[^0-9A-Fa-f]', '').ToUpperInvariant()
    if ($got -ne $want) { Fail "the root certificate's SHA-256 fingerprint is $got, not $want: not imported" }
    & certutil.exe -addstore Root $RootCert | Out-Null
    if ($LASTEXITCODE -ne 0) { Fail "certutil -addstore Root $RootCert failed ($LASTEXITCODE)" }
    Write-Host "imported the root certificate (SHA-256 $got) into Trusted Root Certification Authorities"
}

# 6. The service, through conclave.exe itself (the same code `conclave service` runs by hand).
if (-not $NoService) {
    & $conclave service status --name $ServiceName | Out-Null
    if ($LASTEXITCODE -eq 4) {
        & $conclave service install --config $Config --name $ServiceName
        if ($LASTEXITCODE -ne 0) { Fail 'conclave service install failed (see above)' }
    } else {
        Write-Host "service $ServiceName is already installed (kept; conclave service uninstall to re-register)"
    }
    if ($Start) {
        & $conclave service start --name $ServiceName
        if ($LASTEXITCODE -ne 0) { Fail 'the service did not become ready (see above and its log)' }
    } else {
        Write-Host "next: conclave.exe init or join with --config $Config, then conclave.exe service start --name $ServiceName"
    }
}
