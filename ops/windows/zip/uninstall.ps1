<#
.SYNOPSIS
Removes the Conclave service and its firewall rules from this server. Keeps the data directory,
the config, the KEK and the root certificate: removing a node from its cluster is
`conclavectl node remove` first (docs\operations.md), and its data is the operator's to delete.
#>
[CmdletBinding()]
param(
    [string]$InstallDir = (Join-Path $env:ProgramFiles 'Conclave'),
    [string]$ServiceName = 'Conclave'
)
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version 3

$conclave = Join-Path $InstallDir 'conclave.exe'
# A graceful stop first (a leader hands leadership over), then the service is removed.
& $conclave service uninstall --name $ServiceName
# 4: no such service, already gone.
if ($LASTEXITCODE -ne 0 -and $LASTEXITCODE -ne 4) {
    Write-Error "uninstall.ps1: conclave service uninstall failed ($LASTEXITCODE)" -ErrorAction Continue
    exit 1
}
Get-NetFirewallRule -Group 'Conclave' -ErrorAction SilentlyContinue | Remove-NetFirewallRule
Write-Host "removed service $ServiceName and the Conclave firewall rules; $InstallDir and %ProgramData%\Conclave are kept"
