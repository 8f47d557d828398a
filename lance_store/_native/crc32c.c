/* CRC-32C (Castagnoli): SSE4.2 with three lanes where the CPU has it, slicing-by-8
   tables elsewhere. Compiled into both the record scanner and the group encoder. */

#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include "crc32c.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <nmmintrin.h>
#define LNC_X86 1
#endif

static inline uint32_t crc_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static inline uint64_t crc_le64(const uint8_t *p) { return (uint64_t)crc_le32(p) | ((uint64_t)crc_le32(p + 4) << 32); }

#define CRC_POLY 0x82F63B78u /* Castagnoli, bit-reflected */

static uint32_t crc_table[8][256];
static int crc_ready;

/* Multiplication of two polynomials modulo the CRC polynomial, in the reflected
   representation the CRC register uses (bit 31 is x^0). */
static uint32_t gf_mul(uint32_t a, uint32_t b)
{
    uint32_t r = 0;
    for (int bit = 31; bit >= 0; bit--) {
        if (a & (1u << bit))
            r ^= b;
        b = (b & 1u) ? (b >> 1) ^ CRC_POLY : b >> 1;
    }
    return r;
}

/* x^(8 * nbytes) mod P: what appending nbytes zero bytes multiplies a register by. */
static uint32_t zeros_operator(size_t nbytes)
{
    uint32_t x = 1u << 31;
    for (size_t i = 0; i < 8 * nbytes; i++)
        x = (x & 1u) ? (x >> 1) ^ CRC_POLY : x >> 1;
    return x;
}

static void fill_shift_table(uint32_t table[4][256], size_t nbytes)
{
    uint32_t op = zeros_operator(nbytes);
    for (int k = 0; k < 4; k++)
        for (uint32_t b = 0; b < 256; b++)
            table[k][b] = gf_mul(op, b << (8 * k));
}

static inline uint32_t shift(uint32_t table[4][256], uint32_t crc)
{
    return table[0][crc & 0xFF] ^ table[1][(crc >> 8) & 0xFF] ^ table[2][(crc >> 16) & 0xFF] ^
           table[3][crc >> 24];
}

static uint32_t portable_update(uint32_t crc, const uint8_t *p, size_t n)
{
    while (n && ((uintptr_t)p & 7)) {
        crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xFF];
        n--;
    }
    while (n >= 8) {
        uint64_t w = crc_le64(p) ^ crc;
        crc = crc_table[7][w & 0xFF] ^ crc_table[6][(w >> 8) & 0xFF] ^ crc_table[5][(w >> 16) & 0xFF] ^
              crc_table[4][(w >> 24) & 0xFF] ^ crc_table[3][(w >> 32) & 0xFF] ^
              crc_table[2][(w >> 40) & 0xFF] ^ crc_table[1][(w >> 48) & 0xFF] ^ crc_table[0][w >> 56];
        p += 8;
        n -= 8;
    }
    while (n--)
        crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xFF];
    return crc;
}

#ifdef LNC_X86
/* Three independent lanes hide the 3-cycle latency of the crc32 instruction; the lane
   registers are then joined by shifting each over the bytes that follow it. */
#define LANE_LONG 8192u
#define LANE_SHORT 256u
static uint32_t shift_long[4][256];
static uint32_t shift_short[4][256];
static int hw_ok;

static inline uint64_t load64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* Every whole run of three `lane`-byte lanes from *p, crc'd in parallel and joined. */
__attribute__((target("sse4.2"))) static inline uint64_t three_lanes(
    uint64_t c0, const uint8_t **pp, size_t *np, size_t lane, uint32_t shift_table[4][256])
{
    const uint8_t *p = *pp;
    size_t n = *np;
    while (n >= 3 * lane) {
        uint64_t c1 = 0, c2 = 0;
        const uint8_t *end = p + lane;
        do {
            c0 = _mm_crc32_u64(c0, load64(p));
            c1 = _mm_crc32_u64(c1, load64(p + lane));
            c2 = _mm_crc32_u64(c2, load64(p + 2 * lane));
            p += 8;
        } while (p < end);
        c0 = shift(shift_table, (uint32_t)c0) ^ (uint32_t)c1;
        c0 = shift(shift_table, (uint32_t)c0) ^ (uint32_t)c2;
        p += 2 * lane;
        n -= 3 * lane;
    }
    *pp = p;
    *np = n;
    return c0;
}

__attribute__((target("sse4.2"))) static uint32_t hw_update(uint32_t crc32, const uint8_t *p, size_t n)
{
    uint64_t c0 = crc32;
    while (n && ((uintptr_t)p & 7)) {
        c0 = _mm_crc32_u8((uint32_t)c0, *p++);
        n--;
    }
    c0 = three_lanes(c0, &p, &n, LANE_LONG, shift_long);
    c0 = three_lanes(c0, &p, &n, LANE_SHORT, shift_short);
    while (n >= 8) {
        c0 = _mm_crc32_u64(c0, load64(p));
        p += 8;
        n -= 8;
    }
    while (n--)
        c0 = _mm_crc32_u8((uint32_t)c0, *p++);
    return (uint32_t)c0;
}
#endif

void lnc_crc32c_init(void)
{
    if (crc_ready)
        return;
    for (uint32_t b = 0; b < 256; b++) {
        uint32_t c = b;
        for (int i = 0; i < 8; i++)
            c = (c & 1u) ? (c >> 1) ^ CRC_POLY : c >> 1;
        crc_table[0][b] = c;
    }
    for (uint32_t b = 0; b < 256; b++)
        for (int k = 1; k < 8; k++)
            crc_table[k][b] = (crc_table[k - 1][b] >> 8) ^ crc_table[0][crc_table[k - 1][b] & 0xFF];
#ifdef LNC_X86
    fill_shift_table(shift_long, LANE_LONG);
    fill_shift_table(shift_short, LANE_SHORT);
    __builtin_cpu_init();
    hw_ok = __builtin_cpu_supports("sse4.2") ? 1 : 0;
#endif
    crc_ready = 1;
}

int lnc_crc32c_accelerated(void)
{
#ifdef LNC_X86
    return hw_ok;
#else
    return 0;
#endif
}

uint32_t lnc_crc32c_portable(uint32_t crc, const uint8_t *p, size_t n)
{
    return ~portable_update(~crc, p, n);
}

uint32_t lnc_crc32c(uint32_t crc, const uint8_t *p, size_t n)
{
#ifdef LNC_X86
    if (hw_ok)
        return ~hw_update(~crc, p, n);
#endif
    return ~portable_update(~crc, p, n);
}
