/*
 * A stand-in bcryptprimitives.dll, for running our Windows test binaries
 * under Wine 8 only. `cargo xtask test-windows` builds it with mingw and
 * copies it into its own Wine prefix; it is never shipped.
 *
 * Why it exists: since Rust 1.78 the standard library takes its random
 * bytes (HashMap seeds, among others) from ProcessPrng in
 * bcryptprimitives.dll. Wine 8, the version Debian bookworm ships, has the
 * DLL but not that export, so every Rust program fails to load and exits
 * with code 53 without printing anything. Wine 9 has it. This DLL exports
 * ProcessPrng alone and draws the bytes from Wine's BCryptGenRandom, the
 * system's preferred generator, as the real one does.
 */
#include <windows.h>
#include <bcrypt.h>

/* BCryptGenRandom counts in ULONG, ProcessPrng in SIZE_T: feed it pieces. */
#define LARGEST_PIECE 0x40000000u

BOOL WINAPI ProcessPrng(PBYTE buffer, SIZE_T length)
{
    while (length > 0) {
        ULONG piece = length > LARGEST_PIECE ? LARGEST_PIECE : (ULONG)length;
        if (!BCRYPT_SUCCESS(BCryptGenRandom(NULL, buffer, piece,
                                            BCRYPT_USE_SYSTEM_PREFERRED_RNG))) {
            return FALSE;
        }
        buffer += piece;
        length -= piece;
    }
    return TRUE;
}
