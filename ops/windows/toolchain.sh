# ops/windows/toolchain.sh: sourced (never run) by build.sh and unit-tests.sh. Sets up the
# Windows cross toolchain and the Wine prefix on this Debian machine, once, and exports the
# environment that cargo and Wine need. Changes nothing for Linux builds: the Windows settings
# are environment variables of the calling script only, and its target dir, CARGO_HOME and Wine
# prefix are outside the clone.
#
# Why Debian's rustc-web and not rustup: rustup cannot download the Windows std here (offline),
# while rust-web-src ships std's source, which `-Zbuild-std` compiles for x86_64-pc-windows-gnu
# (RUSTC_BOOTSTRAP=1 admits -Z on that stable compiler). mingw-w64 links; Wine 8 runs the result.
#
# Overridable (not CONCLAVE_* names: a node refuses unknown CONCLAVE_* variables):
# WIN_BUILD_TARGET_DIR, WIN_BUILD_CARGO_HOME, WIN_BUILD_WINEPREFIX.

WIN_TRIPLE=x86_64-pc-windows-gnu
WIN_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WIN_TARGET_DIR=${WIN_BUILD_TARGET_DIR:-/var/tmp/conclave-win-target}
WIN_CARGO_HOME=${WIN_BUILD_CARGO_HOME:-/var/tmp/conclave-win-cargo}
WIN_PREFIX=${WIN_BUILD_WINEPREFIX:-/var/tmp/conclave-wine}

win_step() { echo "==> $*" >&2; }

# 1. Packages, only when missing (apt-get is the slow part of a cold run).
win_need=()
[ -x /usr/bin/rustc ] && [ -x /usr/bin/cargo ] || win_need+=(rustc-web cargo-web)
[ -d /usr/lib/rustlib/src/rust/library ] || win_need+=(rust-web-src)
command -v x86_64-w64-mingw32-gcc >/dev/null || win_need+=(gcc-mingw-w64-x86-64 g++-mingw-w64-x86-64)
command -v wine >/dev/null || win_need+=(wine64 wine)
if [ "${#win_need[@]}" -gt 0 ]; then
    win_step "installing ${win_need[*]}"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${win_need[@]}"
fi

# 2. Debian's toolchain ahead of rustup's proxies in ~/.cargo/bin, for this script only.
export PATH=/usr/bin:/bin:/usr/sbin:/sbin
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc CARGO=/usr/bin/cargo RUSTC_BOOTSTRAP=1
unset RUSTC_WRAPPER RUSTFLAGS
export CARGO_HOME=$WIN_CARGO_HOME CARGO_TARGET_DIR=$WIN_TARGET_DIR CARGO_TERM_COLOR=never
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_AR=x86_64-w64-mingw32-ar
# `cargo test --target x86_64-pc-windows-gnu` runs each test binary through Wine.
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=wine
export WINEPREFIX=$WIN_PREFIX WINEDEBUG=-all WINEARCH=win64
# No "install Mono/Gecko?" dialogs: nothing here needs .NET or a browser engine.
export WINEDLLOVERRIDES="mscoree,mshtml="
WIN_CARGO_FLAGS=(--target "$WIN_TRIPLE" -Zbuild-std=std,panic_unwind)
mkdir -p "$WIN_TARGET_DIR" "$WIN_CARGO_HOME"

# 3. The Wine prefix, made once, with the bcryptprimitives.dll stub (ops/windows/
#    bcryptprimitives-stub.c: for Wine only, never shipped). Rebuilt when the source changes.
win_stub_src=$WIN_ROOT/ops/windows/bcryptprimitives-stub.c
win_stub_sum=$(sha256sum "$win_stub_src" | cut -d' ' -f1)
if [ "$(cat "$WIN_PREFIX/.conclave-stub" 2>/dev/null)" != "$win_stub_sum" ]; then
    if [ ! -f "$WIN_PREFIX/system.reg" ]; then
        win_step "creating the Wine prefix $WIN_PREFIX"
        mkdir -p "$WIN_PREFIX"
        wineboot -i >/dev/null 2>&1
        wineserver -w
    fi
    win_step "building the bcryptprimitives.dll stub (Wine only)"
    x86_64-w64-mingw32-gcc -O2 -shared -s -o "$WIN_PREFIX/drive_c/windows/system32/bcryptprimitives.dll" \
        "$win_stub_src" -lbcrypt
    echo "$win_stub_sum" >"$WIN_PREFIX/.conclave-stub"
fi
