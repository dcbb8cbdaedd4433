<#
.SYNOPSIS
  Tunestack desktop install for Windows: check WSL2, Docker Desktop, compose, GPU, RAM and
  disk; write .env; build or pull the images; start the stack; print the UI address.

.DESCRIPTION
  Idempotent: run it again to update images and restart what changed. An existing .env is
  kept (keys it lacks are added; keys named by parameters are updated). -DryRun prints the
  checks and the plan and changes nothing. Mirrors infra/desktop/install.sh.

.EXAMPLE
  powershell -ExecutionPolicy Bypass -File infra\desktop\install.ps1 -Llm llamacpp -DryRun
#>
[CmdletBinding()]
param(
    [ValidateSet('ollama', 'llamacpp')]
    [string]$Llm = '',
    [switch]$Gpu,
    [switch]$NoGpu,
    [switch]$NoBuild,
    [switch]$NoUp,
    [switch]$DryRun
)

$ErrorActionPreference = 'Stop'
$Repo = (Resolve-Path (Join-Path $PSScriptRoot '..\..')).Path
Set-Location $Repo
$MinRamGb = 8
# a first install builds the images and keeps models and indexes; once our images are here,
# a rebuild replaces their layers and needs much less
$MinDiskGb = 20
$MinUpdateDiskGb = 8
$OneGb = 1GB
$script:Problems = 0

function Write-Ok([string]$Message) { Write-Host "  [ok]      $Message" }
function Write-Note([string]$Message) { Write-Host "  [note]    $Message" }
function Write-Problem([string]$Message) {
    Write-Host "  [problem] $Message" -ForegroundColor Yellow
    $script:Problems++
}

# Run a native command, or print it under -DryRun; stop on a non-zero exit code.
function Invoke-Step([string]$Exe, [string[]]$Arguments) {
    if ($DryRun) {
        Write-Host "  would run: $Exe $($Arguments -join ' ')"
        return
    }
    & $Exe @Arguments
    if ($LASTEXITCODE -ne 0) { throw "'$Exe $($Arguments -join ' ')' failed (exit $LASTEXITCODE)" }
}

function Test-Command([string]$Name) {
    return [bool](Get-Command $Name -ErrorAction SilentlyContinue)
}

function Get-EnvValue([string]$Key) {
    $fromProcess = [Environment]::GetEnvironmentVariable($Key)
    if ($fromProcess) { return $fromProcess }
    if (-not (Test-Path .env)) { return '' }
    $line = Get-Content .env | Where-Object { $_ -match "^$Key=" } | Select-Object -Last 1
    if ($line) { return $line.Substring($Key.Length + 1) }
    return ''
}

function Set-EnvValue([string]$Key, [string]$Value, [switch]$OnlyIfMissing) {
    $lines = @()
    if (Test-Path .env) { $lines = @(Get-Content .env) }
    $present = $lines | Where-Object { $_ -match "^$Key=" }
    if ($present -and $OnlyIfMissing) { return }
    if ($present -and ($present | Select-Object -Last 1) -eq "$Key=$Value") { return }
    if ($DryRun) {
        Write-Host "  would set $Key=$Value in .env"
        return
    }
    if ($present) {
        $lines = $lines | ForEach-Object { if ($_ -match "^$Key=") { "$Key=$Value" } else { $_ } }
        Set-Content -Path .env -Value $lines -Encoding utf8
    } else {
        Add-Content -Path .env -Value "$Key=$Value" -Encoding utf8
    }
}

# ---- checks -------------------------------------------------------------------------------
Write-Host 'Checking this machine'
if (Test-Command 'wsl.exe') {
    $wsl = (& wsl.exe --status 2>&1 | Out-String) -replace "`0", ''
    if ($LASTEXITCODE -eq 0 -and $wsl -match '2') { Write-Ok 'WSL2 is available' }
    else { Write-Problem 'WSL2 is not enabled: run "wsl --install" as administrator, then reboot' }
} else {
    Write-Problem 'WSL is not installed: run "wsl --install" as administrator (Docker Desktop needs WSL2)'
}

$compose = @()
if (-not (Test-Command 'docker')) {
    Write-Problem 'Docker Desktop is not installed: https://docs.docker.com/desktop/setup/install/windows-install/'
} else {
    & docker info *> $null
    if ($LASTEXITCODE -ne 0) { Write-Problem 'Docker Desktop is not running: start it and wait until it says "running"' }
    else { Write-Ok "Docker engine $(& docker version --format '{{.Server.Version}}')" }
    & docker compose version *> $null
    if ($LASTEXITCODE -eq 0) {
        $compose = @('docker', 'compose')
        Write-Ok "compose v2 $(& docker compose version --short)"
    } elseif (Test-Command 'docker-compose') {
        $compose = @('docker-compose')
        Write-Ok "docker-compose $(& docker-compose version --short) (v1)"
    } else {
        Write-Problem 'docker compose is missing: update Docker Desktop'
    }
}

$ramGb = [math]::Floor((Get-CimInstance Win32_ComputerSystem).TotalPhysicalMemory / $OneGb)
if ($ramGb -ge $MinRamGb) { Write-Ok "RAM $ramGb GB" }
else { Write-Note "RAM $ramGb GB (< $MinRamGb GB: the stack runs, training will be slow or fail)" }
$drive = (Get-Item $Repo).PSDrive
$diskGb = [math]::Floor($drive.Free / $OneGb)
$imagePrefix = if ($env:TUNESTACK_IMAGE_PREFIX) { $env:TUNESTACK_IMAGE_PREFIX } else { Get-EnvValue 'TUNESTACK_IMAGE_PREFIX' }
$imageTag = if ($env:TUNESTACK_VERSION) { $env:TUNESTACK_VERSION } else { Get-EnvValue 'TUNESTACK_VERSION' }
if (-not $imagePrefix) { $imagePrefix = 'tunestack' }
if (-not $imageTag) { $imageTag = '0.1.0' }
$haveImages = $false
if (Test-Command 'docker') {
    & docker image inspect "$imagePrefix/rag-api:$imageTag" *> $null
    $haveImages = ($LASTEXITCODE -eq 0)
}
if ($haveImages) { $needGb = $MinUpdateDiskGb; $needWhat = 'updating the images already here' }
else { $needGb = $MinDiskGb; $needWhat = 'a first build of the images, models and indexes' }
if ($diskGb -ge $needGb) { Write-Ok "disk $diskGb GB free on $($drive.Name): ($needWhat needs >= $needGb GB)" }
else { Write-Problem "only $diskGb GB free on $($drive.Name): ($needWhat needs >= $needGb GB): free space, e.g. 'docker image prune' (untagged images of earlier builds) and 'docker builder prune' (build cache)" }

$haveGpu = $false
if (Test-Command 'nvidia-smi') {
    $gpuName = (& nvidia-smi -L 2>$null | Select-Object -First 1)
    if ($LASTEXITCODE -eq 0 -and $gpuName) {
        # Docker Desktop's WSL2 backend passes NVIDIA GPUs through; no separate toolkit on Windows.
        $haveGpu = $true
        Write-Ok "NVIDIA GPU: $gpuName"
    }
}
if (-not $haveGpu) { Write-Note 'no NVIDIA GPU: everything runs on the CPU' }
$useGpu = $haveGpu
if ($Gpu) { $useGpu = $true }
if ($NoGpu) { $useGpu = $false }
if ($useGpu -and -not $haveGpu) { Write-Problem '-Gpu asked for, but no NVIDIA GPU is usable' }

$python = $null
foreach ($candidate in @('py', 'python')) {
    if (Test-Command $candidate) {
        $pyArgs = @()
        if ($candidate -eq 'py') { $pyArgs = @('-3.11') }
        & $candidate @pyArgs -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' *> $null
        if ($LASTEXITCODE -eq 0) { $python = @($candidate) + $pyArgs; break }
    }
}
$tunestack = Join-Path $Repo '.venv\Scripts\tunestack.exe'
if (Test-Path $tunestack) { Write-Ok 'tunestack CLI in .venv' }
elseif ($python) { Write-Ok "Python 3.11 for the tunestack CLI ($($python -join ' '))" }
else { Write-Problem 'Python 3.11 is needed for the tunestack CLI: winget install Python.Python.3.11' }

if ($script:Problems -gt 0) {
    Write-Host "$($script:Problems) problem(s) above; fix them and run this script again."
    if (-not $DryRun) { exit 1 }
}

# ---- .env ---------------------------------------------------------------------------------
Write-Host 'Settings (.env)'
if (Test-Path .env) { Write-Ok '.env exists (kept)' }
elseif ($DryRun) { Write-Host '  would copy compose\.env.example to .env' }
else { Copy-Item compose\.env.example .env }
if ($Llm) { Set-EnvValue 'TUNESTACK_LLM_SERVER' $Llm }
else { Set-EnvValue 'TUNESTACK_LLM_SERVER' 'ollama' -OnlyIfMissing }
if (-not $Llm) { $Llm = Get-EnvValue 'TUNESTACK_LLM_SERVER' }
if (-not $Llm) { $Llm = 'ollama' }

# ---- CLI ----------------------------------------------------------------------------------
if (-not (Test-Path $tunestack)) {
    Write-Host 'Installing the tunestack CLI into .venv (core only: the services run in containers)'
    $pyExe = if ($python) { $python[0] } else { 'python' }
    $pyRest = if ($python) { @($python | Select-Object -Skip 1) } else { @() }
    Invoke-Step $pyExe ($pyRest + @('-m', 'venv', '.venv'))
    Invoke-Step (Join-Path $Repo '.venv\Scripts\pip.exe') @('install', '-q', '-e', '.')
}

# ---- images -------------------------------------------------------------------------------
Write-Host 'Images'
$project = Get-EnvValue 'COMPOSE_PROJECT_NAME'
if (-not $project) { $project = 'tunestack' }
$composeArgs = @('--project-name', $project, '--file', 'compose/compose.yml')
if ($useGpu) { $composeArgs += @('--file', 'compose/compose.gpu.yml') }
if (Test-Path .env) { $composeArgs += @('--env-file', '.env') }
$composeExe = if ($compose.Count -gt 0) { $compose[0] } else { 'docker' }
$composePre = if ($compose.Count -gt 1) { @($compose | Select-Object -Skip 1) } else { @() }

$chromaImage = Get-EnvValue 'CHROMA_IMAGE'
if (-not $chromaImage) { $chromaImage = 'chromadb/chroma:1.5.9' }
& docker image inspect $chromaImage *> $null
if ($LASTEXITCODE -eq 0) { Write-Ok "chroma image $chromaImage" }
elseif ($DryRun) { Write-Host "  would pull $chromaImage (or build it from the chromadb package)" }
else {
    & docker pull $chromaImage
    if ($LASTEXITCODE -ne 0) {
        $prefix = Get-EnvValue 'TUNESTACK_IMAGE_PREFIX'
        if (-not $prefix) { $prefix = 'tunestack' }
        $localImage = "$prefix/chroma:$($chromaImage.Split(':')[-1])"
        Write-Note "cannot pull $chromaImage; building $localImage from the chromadb package"
        $buildArgs = @()
        foreach ($key in 'BASE_IMAGE', 'PIP_INDEX_URL', 'PIP_EXTRA_INDEX_URL', 'PIP_TRUSTED_HOST', 'PIP_NO_INDEX', 'WHEELHOUSE', 'EXTRA_CA_CERTS') {
            $value = Get-EnvValue $key
            if ($value) { $buildArgs += @('--build-arg', "$key=$value") }
        }
        Invoke-Step 'docker' (@('build', '-f', 'compose/Dockerfile', '--target', 'chroma', '-t', $localImage) + $buildArgs + @('.'))
        Set-EnvValue 'CHROMA_IMAGE' $localImage
        $env:CHROMA_IMAGE = $localImage
    }
}

if ($Llm -eq 'ollama') {
    $ollamaImage = Get-EnvValue 'OLLAMA_IMAGE'
    if (-not $ollamaImage) { $ollamaImage = 'ollama/ollama:0.16.3' }
    & docker image inspect $ollamaImage *> $null
    if ($LASTEXITCODE -eq 0) { Write-Ok "ollama image $ollamaImage" }
    else { Invoke-Step 'docker' @('pull', $ollamaImage) }
}

if (-not $NoBuild) {
    $images = @('ui', 'rag-api', 'embed-tuner')
    if ($Llm -eq 'llamacpp') { $images = @('llamacpp') + $images }
    Invoke-Step $composeExe ($composePre + $composeArgs + @('--profile', $Llm, '--profile', 'jobs', 'build') + $images)
}

# ---- start --------------------------------------------------------------------------------
if ($NoUp) {
    Write-Host "Prepared; start with: $tunestack up --mode docker --llm $Llm"
    exit 0
}
Write-Host 'Starting the stack'
$upArgs = @('up', '--mode', 'docker', '--llm', $Llm)
if ($useGpu) { $upArgs += '--gpu' }
Invoke-Step $tunestack $upArgs
$bind = Get-EnvValue 'TUNESTACK_BIND'
if (-not $bind -or $bind -eq '0.0.0.0') { $bind = '127.0.0.1' }
$port = Get-EnvValue 'TUNESTACK_UI_PORT'
if (-not $port) { $port = '8501' }
if ($DryRun) { Write-Host '(dry run: nothing was changed)' }
Write-Host "Tunestack is ready: open http://${bind}:$port"
Write-Host "  (status: $tunestack status   stop: $tunestack down)"
