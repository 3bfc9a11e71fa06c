/*
 * A stand-in for bcryptprimitives.dll, for running the Windows tests under Wine 8 only.
 *
 * Rust's standard library (1.78+) and `getrandom` take their random bytes from
 * `ProcessPrng` in bcryptprimitives.dll, which Windows 10 and later export and Wine 8 does
 * not: every Rust executable then fails to load (status c0000135). This DLL exports
 * `ProcessPrng` and forwards to `RtlGenRandom` (advapi32's `SystemFunction036`), which Wine
 * implements. `.ci/wine-tests` builds it with MinGW-w64 and puts it next to the
 * executables; it is never shipped and never used on real Windows.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x7fffffff ? 0x7fffffff : (ULONG)length;
        if (!SystemFunction036(data, chunk)) {
            return FALSE;
        }
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
