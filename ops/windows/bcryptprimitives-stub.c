/*
 * bcryptprimitives.dll stub -- exists ONLY so Rust programs run under Wine 8. Never shipped.
 *
 * Rust's std on Windows (1.78 and later) gets its randomness (HashMap seeds, and through
 * getrandom, ring's keys) from ProcessPrng in bcryptprimitives.dll. Real Windows 10/11 and
 * Server 2016+ have that DLL; Debian's Wine 8 does not, and a Rust .exe exits at start with
 * STATUS_DLL_NOT_FOUND. ops/windows/toolchain.sh builds this file with mingw and copies it
 * into the Wine prefix's system32 only. The Windows bundle must never contain it: on Windows
 * the system's own DLL is the one to use.
 *
 * ProcessPrng never fails by contract, so a failure of the underlying BCryptGenRandom (which
 * Wine implements over the host's /dev/urandom) aborts the process rather than return bytes
 * that are not random.
 */
#include <windows.h>
#include <bcrypt.h>
#include <stdlib.h>

/* BCryptGenRandom takes a ULONG length; stay far below it. */
#define CHUNK ((SIZE_T)1 << 30)

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE out, SIZE_T len)
{
    while (len > 0) {
        ULONG n = (ULONG)(len < CHUNK ? len : CHUNK);
        if (!BCRYPT_SUCCESS(BCryptGenRandom(NULL, out, n, BCRYPT_USE_SYSTEM_PREFERRED_RNG)))
            abort();
        out += n;
        len -= n;
    }
    return TRUE;
}
