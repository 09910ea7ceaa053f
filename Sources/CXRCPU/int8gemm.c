// Integer products for xrlab's int8 linear layers on AVX2, and on AVX-512 VNNI where the CPU has
// it (chosen at run time; the package itself is compiled for x86-64-v3): u8 activation codes times
// s8 weight codes, accumulated in int32. Swift has no vpmaddubsw / vpmaddwd / vpdpbusd, so the
// inner loops live here; `Int8GEMM.swift` quantises, splits the work and dequantises.
//
// Packed weights: 16-column panels, each a run of k-quads; one quad is 64 bytes, column t's four
// consecutive k values at bytes 4t...4t+3 (columns 0-7 in the first 32 bytes, 8-15 in the next).
// Activations: rows of codes, k padded with zeros to a multiple of 4.
#include "xrcpu.h"
#include <cpuid.h>
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#define XR_AVX2 __attribute__((target("avx2,fma")))
#define XR_VNNI256 __attribute__((target("avx2,fma,avx512vl,avx512vnni")))
#define XR_VNNI512 __attribute__((target("avx2,fma,avx512f,avx512vnni")))

static inline int32_t load4(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline int64_t load8(const void *p) {
    int64_t v;
    memcpy(&v, p, 8);
    return v;
}

// C[0..<rows, 0..<16] = A (rows ≤ 6, u8 codes ≤ 127) · panel. vpmaddubsw multiplies four u8 × s8
// pairs per 32-bit lane and adds neighbours into int16 — exact only while |a·w + a'·w'| ≤ 32,767,
// which 7-bit activations guarantee (2 · 127 · 128 = 32,512) — then vpmaddwd by ones adds the two
// int16 halves into int32. 12 accumulators + 2 weight registers + ones + the broadcast + one
// product are 17 of the 16 ymm registers, so one accumulator lives on the stack; a 5-row tile
// without the spill measured slower (219 vs 223 GOP/s): the two multiplies per 32 products bound it.
XR_AVX2 static void kernel_u7(long rows, long quads, const uint8_t *a, long lda, const int8_t *panel, int32_t *c,
                              long ldc) {
    const uint8_t *a0 = a, *a1 = a + (rows > 1 ? lda : 0), *a2 = a + (rows > 2 ? 2 * lda : 0);
    const uint8_t *a3 = a + (rows > 3 ? 3 * lda : 0), *a4 = a + (rows > 4 ? 4 * lda : 0);
    const uint8_t *a5 = a + (rows > 5 ? 5 * lda : 0);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256i c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (long q = 0; q < quads; q++) {
        const __m256i b0 = _mm256_load_si256((const __m256i *)(panel + 64 * q));
        const __m256i b1 = _mm256_load_si256((const __m256i *)(panel + 64 * q + 32));
#define XR_ROW(ar, x0, x1)                                                                   \
    {                                                                                        \
        const __m256i av = _mm256_set1_epi32(load4(ar + 4 * q));                             \
        x0 = _mm256_add_epi32(x0, _mm256_madd_epi16(_mm256_maddubs_epi16(av, b0), ones));    \
        x1 = _mm256_add_epi32(x1, _mm256_madd_epi16(_mm256_maddubs_epi16(av, b1), ones));    \
    }
        XR_ROW(a0, c00, c01) XR_ROW(a1, c10, c11) XR_ROW(a2, c20, c21)
        XR_ROW(a3, c30, c31) XR_ROW(a4, c40, c41) XR_ROW(a5, c50, c51)
#undef XR_ROW
    }
    __m256i out[12] = {c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51};
    for (long r = 0; r < rows; r++) {
        _mm256_storeu_si256((__m256i *)(c + r * ldc), out[2 * r]);
        _mm256_storeu_si256((__m256i *)(c + r * ldc + 8), out[2 * r + 1]);
    }
}

// C[0..<rows, 0..<8] = A (rows ≤ 6, int16 codes) · one half of a panel (`half` = its first
// byte). Weights are widened with vpmovsxbw (four columns × four k per register) and multiplied
// by vpmaddwd, whose int32 pair sums cannot saturate for any 8-bit codes; each column's two
// partial sums are added at the end (vphaddd, then vpermq puts the columns back in order).
XR_AVX2 static void kernel_i16(long rows, long quads, const int16_t *a, long lda, const int8_t *half, int32_t *c,
                               long ldc) {
    const int16_t *a0 = a, *a1 = a + (rows > 1 ? lda : 0), *a2 = a + (rows > 2 ? 2 * lda : 0);
    const int16_t *a3 = a + (rows > 3 ? 3 * lda : 0), *a4 = a + (rows > 4 ? 4 * lda : 0);
    const int16_t *a5 = a + (rows > 5 ? 5 * lda : 0);
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256i c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (long q = 0; q < quads; q++) {
        const __m256i b0 = _mm256_cvtepi8_epi16(_mm_load_si128((const __m128i *)(half + 64 * q)));
        const __m256i b1 = _mm256_cvtepi8_epi16(_mm_load_si128((const __m128i *)(half + 64 * q + 16)));
#define XR_ROW(ar, x0, x1)                                                  \
    {                                                                       \
        const __m256i av = _mm256_set1_epi64x(load8(ar + 4 * q));           \
        x0 = _mm256_add_epi32(x0, _mm256_madd_epi16(av, b0));               \
        x1 = _mm256_add_epi32(x1, _mm256_madd_epi16(av, b1));               \
    }
        XR_ROW(a0, c00, c01) XR_ROW(a1, c10, c11) XR_ROW(a2, c20, c21)
        XR_ROW(a3, c30, c31) XR_ROW(a4, c40, c41) XR_ROW(a5, c50, c51)
#undef XR_ROW
    }
    __m256i out[12] = {c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51};
    for (long r = 0; r < rows; r++) {
        const __m256i s = _mm256_permute4x64_epi64(_mm256_hadd_epi32(out[2 * r], out[2 * r + 1]), 0xD8);
        _mm256_storeu_si256((__m256i *)(c + r * ldc), s);
    }
}

// The u7 product on AVX-512 VNNI: vpdpbusd multiplies four u8 × s8 pairs per 32-bit lane and
// adds them (and the accumulator) in int32 directly, with no int16 step, so its sums equal the
// AVX2 kernel's bit for bit for u7 codes (which never saturate either), and stays exact for codes up
// to 255 (4 · 255 · 128 per instruction, far inside int32), which the AVX2 kernel is not. One 64-byte quad of a
// panel is one zmm register, lane t = column t, so the panel layout is the AVX2 one; each row's
// 16 columns are one accumulator, the activation quad a broadcast operand. 8 rows: 8 accumulators
// + the weights, far below the 32 zmm registers, with the row pointers all in general registers.
// On the AMD EPYC of docs/benchmarks.md (which runs 512-bit operations as two halves) it measured
// 1% slower than the ymm kernel below, which is therefore the one chosen; this one stays, checked
// by bench/int8_kernel.c, for CPUs with full-width zmm units.
XR_VNNI512 static void kernel_u7_vnni512(long rows, long quads, const uint8_t *a, long lda, const int8_t *panel,
                                         int32_t *c, long ldc) {
    const uint8_t *a0 = a, *a1 = a + (rows > 1 ? lda : 0), *a2 = a + (rows > 2 ? 2 * lda : 0);
    const uint8_t *a3 = a + (rows > 3 ? 3 * lda : 0), *a4 = a + (rows > 4 ? 4 * lda : 0);
    const uint8_t *a5 = a + (rows > 5 ? 5 * lda : 0), *a6 = a + (rows > 6 ? 6 * lda : 0);
    const uint8_t *a7 = a + (rows > 7 ? 7 * lda : 0);
    __m512i c0 = _mm512_setzero_si512(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0;
    for (long q = 0; q < quads; q++) {
        const __m512i b = _mm512_loadu_si512((const void *)(panel + 64 * q));  // panels are 32-byte aligned
#define XR_ROW(ar, x) x = _mm512_dpbusd_epi32(x, _mm512_set1_epi32(load4(ar + 4 * q)), b);
        XR_ROW(a0, c0) XR_ROW(a1, c1) XR_ROW(a2, c2) XR_ROW(a3, c3)
        XR_ROW(a4, c4) XR_ROW(a5, c5) XR_ROW(a6, c6) XR_ROW(a7, c7)
#undef XR_ROW
    }
    __m512i out[8] = {c0, c1, c2, c3, c4, c5, c6, c7};
    for (long r = 0; r < rows; r++) _mm512_storeu_si512((void *)(c + r * ldc), out[r]);
}

// The same on ymm (AVX-512 VL): columns 0-7 and 8-15 of a quad in two registers, 6 rows (12
// accumulators + 2 weight registers + the broadcast, within the 16 VEX registers even).
XR_VNNI256 static void kernel_u7_vnni256(long rows, long quads, const uint8_t *a, long lda, const int8_t *panel,
                                         int32_t *c, long ldc) {
    const uint8_t *a0 = a, *a1 = a + (rows > 1 ? lda : 0), *a2 = a + (rows > 2 ? 2 * lda : 0);
    const uint8_t *a3 = a + (rows > 3 ? 3 * lda : 0), *a4 = a + (rows > 4 ? 4 * lda : 0);
    const uint8_t *a5 = a + (rows > 5 ? 5 * lda : 0);
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256i c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (long q = 0; q < quads; q++) {
        const __m256i b0 = _mm256_load_si256((const __m256i *)(panel + 64 * q));
        const __m256i b1 = _mm256_load_si256((const __m256i *)(panel + 64 * q + 32));
#define XR_ROW(ar, x0, x1)                                           \
    {                                                                \
        const __m256i av = _mm256_set1_epi32(load4(ar + 4 * q));     \
        x0 = _mm256_dpbusd_epi32(x0, av, b0);                        \
        x1 = _mm256_dpbusd_epi32(x1, av, b1);                        \
    }
        XR_ROW(a0, c00, c01) XR_ROW(a1, c10, c11) XR_ROW(a2, c20, c21)
        XR_ROW(a3, c30, c31) XR_ROW(a4, c40, c41) XR_ROW(a5, c50, c51)
#undef XR_ROW
    }
    __m256i out[12] = {c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51};
    for (long r = 0; r < rows; r++) {
        _mm256_storeu_si256((__m256i *)(c + r * ldc), out[2 * r]);
        _mm256_storeu_si256((__m256i *)(c + r * ldc + 8), out[2 * r + 1]);
    }
}

// AVX-512 VNNI with VL (vpdpbusd on ymm and zmm), and the OS saving the AVX-512 state (XCR0 bits
// 1, 2, 5, 6, 7: SSE, AVX, opmask, upper halves of zmm0-15, zmm16-31). Read with cpuid / xgetbv so
// that nothing beyond the C file is needed at link time.
static int has_avx512_vnni(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE)) return 0;
    unsigned lo, hi;
    __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 0xE6) != 0xE6) return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    return (b & bit_AVX512F) && (b & bit_AVX512VL) && (c & bit_AVX512VNNI);
}

int xr_int8_u7_path(void) {
    static int path = -1;  // detected once; a race only repeats the same answer
    int p = __atomic_load_n(&path, __ATOMIC_RELAXED);
    if (p < 0) {
        const char *force = getenv("XRLAB_INT8_PATH");
        const int avx2 = force && strcmp(force, "avx2") == 0;
        p = !avx2 && has_avx512_vnni() ? XR_INT8_VNNI256 : XR_INT8_AVX2;
        __atomic_store_n(&path, p, __ATOMIC_RELAXED);
    }
    return p;
}

XR_AVX2 void xr_int8_gemm_on(int path, int wide, long rows, long quads, const void *a, long lda, const int8_t *b,
                             long p0, long p1, int32_t *c, long ldc) {
    const long step = !wide && path == XR_INT8_VNNI512 ? 8 : 6;
    for (long j = p0; j < p1; j++) {
        const int8_t *panel = b + j * quads * 64;
        int32_t *cj = c + (j - p0) * 16;
        for (long r = 0; r < rows; r += step) {
            const long n = rows - r < step ? rows - r : step;
            if (wide) {
                const int16_t *ar = (const int16_t *)a + r * lda;
                kernel_i16(n, quads, ar, lda, panel, cj + r * ldc, ldc);
                kernel_i16(n, quads, ar, lda, panel + 32, cj + r * ldc + 8, ldc);
            } else if (path == XR_INT8_VNNI512) {
                kernel_u7_vnni512(n, quads, (const uint8_t *)a + r * lda, lda, panel, cj + r * ldc, ldc);
            } else if (path == XR_INT8_VNNI256) {
                kernel_u7_vnni256(n, quads, (const uint8_t *)a + r * lda, lda, panel, cj + r * ldc, ldc);
            } else {
                kernel_u7(n, quads, (const uint8_t *)a + r * lda, lda, panel, cj + r * ldc, ldc);
            }
        }
    }
}

void xr_int8_gemm(int wide, long rows, long quads, const void *a, long lda, const int8_t *b, long p0, long p1,
                  int32_t *c, long ldc) {
    xr_int8_gemm_on(wide ? XR_INT8_AVX2 : xr_int8_u7_path(), wide, rows, quads, a, lda, b, p0, p1, c, ldc);
}

XR_AVX2 void xr_quantize_rows(const float *x, long ldx, long rows, long k, long kpad, int qmax, void *codes, int wide,
                              float *scales, int32_t *zeros) {
    const long k8 = k & ~7L;
    for (long r = 0; r < rows; r++) {
        const float *xr = x + r * ldx;
        __m256 lo8 = _mm256_setzero_ps(), hi8 = lo8;
        for (long i = 0; i < k8; i += 8) {
            const __m256 v = _mm256_loadu_ps(xr + i);
            lo8 = _mm256_min_ps(lo8, v);
            hi8 = _mm256_max_ps(hi8, v);
        }
        float l[8], h[8], lo = 0, hi = 0;
        _mm256_storeu_ps(l, lo8);
        _mm256_storeu_ps(h, hi8);
        for (int i = 0; i < 8; i++) {
            lo = l[i] < lo ? l[i] : lo;
            hi = h[i] > hi ? h[i] : hi;
        }
        for (long i = k8; i < k; i++) {
            lo = xr[i] < lo ? xr[i] : lo;
            hi = xr[i] > hi ? xr[i] : hi;
        }
        float scale = (hi - lo) / (float)qmax;
        if (!(scale > 0) || !(scale < __builtin_inff())) scale = 1;  // an all-zero (or non-finite) row
        float zf = __builtin_rintf(-lo / scale);
        int32_t z = zf < 0 ? 0 : (zf > (float)qmax ? qmax : (int32_t)zf);
        scales[r] = scale;
        zeros[r] = z;
        const float inv = 1 / scale;
        const __m256 inv8 = _mm256_set1_ps(inv);
        const __m256i z8 = _mm256_set1_epi32(z), top = _mm256_set1_epi32(qmax), bottom = _mm256_setzero_si256();
        for (long i = 0; i < k8; i += 8) {
            __m256i v = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xr + i), inv8));  // nearest, ties to even
            v = _mm256_min_epi32(_mm256_max_epi32(_mm256_add_epi32(v, z8), bottom), top);
            const __m256i p16 = _mm256_packs_epi32(v, v);  // per 128-bit lane: 4 codes twice
            if (wide) {
                const __m128i s = _mm256_castsi256_si128(_mm256_permute4x64_epi64(p16, 0x08));
                _mm_storeu_si128((__m128i *)((int16_t *)codes + r * kpad + i), s);
            } else {
                const __m256i p8 = _mm256_packus_epi16(p16, p16);
                int32_t w0 = _mm256_extract_epi32(p8, 0), w1 = _mm256_extract_epi32(p8, 4);
                memcpy((uint8_t *)codes + r * kpad + i, &w0, 4);
                memcpy((uint8_t *)codes + r * kpad + i + 4, &w1, 4);
            }
        }
        for (long i = k8; i < kpad; i++) {
            int32_t q = 0;
            if (i < k) {
                float t = __builtin_rintf(xr[i] * inv) + (float)z;
                q = !(t > 0) ? 0 : (t > (float)qmax ? qmax : (int32_t)t);
            }
            if (wide) ((int16_t *)codes)[r * kpad + i] = (int16_t)q;
            else ((uint8_t *)codes)[r * kpad + i] = (uint8_t)q;
        }
    }
}
