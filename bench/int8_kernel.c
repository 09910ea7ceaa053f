// The int8 kernels of Sources/CXRCPU/int8gemm.c alone, on one core. First a correctness check:
// every path's int32 results against a plain int64 C reference on random and adversarial inputs
// (activations all at the top code — 127 for u7, 255 for u8 and i16 — / all 0, weights all -128 /
// -127 / 127, K not a multiple of 4 and long K up to 65,536, 1...17 and 96 rows, odd panel counts and panel ranges not starting at 0, padded lda / ldc with
// the columns outside the product checked untouched); any difference prints it and exits 1. Then
// the speed: a block of 96 activation rows times 48 weight panels (768 columns) over K = 768,
// best of 60 runs, for each path: u7 on AVX2 (vpmaddubsw + vpmaddwd), u7 and u8 (codes up to 255)
// on AVX-512 VNNI (vpdpbusd on ymm and on zmm; skipped on CPUs without it, or when
// XRLAB_INT8_PATH=avx2 is set), xr_int8_gemm's own choice, and i16
// (vpmaddwd on int16). GOP/s counts 2 · rows · columns · K. The VNNI kernels carry their target
// attributes in the source, so plain -O2 builds them:
//
//   gcc -O2 bench/int8_kernel.c Sources/CXRCPU/int8gemm.c -ISources/CXRCPU/include -o /tmp/int8_kernel
//   setsid -w sh -c 'echo -15 > /proc/self/autogroup; exec /tmp/int8_kernel'
//
// (the second line runs it at a high priority for its own process group; plain /tmp/int8_kernel
// works too).
#include "xrcpu.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

typedef struct {
    const char *name;
    int path;  // XR_INT8_*, or -1: xr_int8_gemm's own choice
    int wide;
    int top;  // largest activation code of the path
} Path;

static const Path paths[] = {{"u7 AVX2     ", XR_INT8_AVX2, 0, 127},    {"u7 VNNI ymm ", XR_INT8_VNNI256, 0, 127},
                             {"u7 VNNI zmm ", XR_INT8_VNNI512, 0, 127}, {"u7 default  ", -1, 0, 127},
                             {"u8 VNNI ymm ", XR_INT8_VNNI256, 0, 255}, {"u8 VNNI zmm ", XR_INT8_VNNI512, 0, 255},
                             {"i16 AVX2    ", XR_INT8_AVX2, 1, 255}};
enum { npaths = sizeof paths / sizeof paths[0] };

// The VNNI paths need AVX-512 VNNI + VL + BW: skipped (and said so) on CPUs without them.
static int supported(const Path *p) {
    return p->path != XR_INT8_VNNI256 && p->path != XR_INT8_VNNI512 ? 1 : xr_int8_u7_path() != XR_INT8_AVX2;
}

static void run(const Path *p, long rows, long quads, const void *a, long lda, const int8_t *b, long p0, long p1,
                int32_t *c, long ldc) {
    if (p->path < 0) xr_int8_gemm(p->wide, rows, quads, a, lda, b, p0, p1, c, ldc);
    else xr_int8_gemm_on(p->path, p->wide, rows, quads, a, lda, b, p0, p1, c, ldc);
}

// Fill modes: 0 random, 1 all at the top (activations) / -128 (weights), 2 all 0 / -127, 3 — / 127,
// 4 alternating top and 0 / -128 and 127.
static int act(int mode, int top, long i) {
    switch (mode) {
    case 1: return top;
    case 2: return 0;
    case 4: return i % 2 ? top : 0;
    default: return rand() % (top + 1);
    }
}

static int weight(int mode, long i) {
    switch (mode) {
    case 1: return -128;
    case 2: return -127;
    case 3: return 127;
    case 4: return i % 2 ? -128 : 127;
    default: return rand() % 256 - 128;
    }
}

// One product on every path against the int64 reference; returns the number of wrong values.
static long check(long rows, long k, long panels, long p0, long p1, int amode, int wmode) {
    const long quads = (k + 3) / 4, kpad = 4 * quads, lda = kpad + 8, cols = 16 * (p1 - p0), ldc = cols + 5;
    int8_t *b = aligned_alloc(64, (size_t)(panels * quads * 64));
    int16_t *w = malloc(sizeof(int16_t) * (size_t)(panels * 16 * kpad));  // w[col * kpad + kk]
    for (long col = 0; col < panels * 16; col++)
        for (long kk = 0; kk < kpad; kk++) {
            const int v = kk < k ? weight(wmode, col * 31 + kk) : 0;
            w[col * kpad + kk] = (int16_t)v;
            b[((col / 16) * quads + kk / 4) * 64 + (col % 16) * 4 + kk % 4] = (int8_t)v;
        }
    long wrong = 0;
    for (int pi = 0; pi < npaths; pi++) {
        const Path *p = &paths[pi];
        if (!supported(p)) continue;
        int16_t *a = malloc(sizeof(int16_t) * (size_t)(rows * lda));
        uint8_t *a8 = malloc((size_t)(rows * lda));
        for (long r = 0; r < rows; r++)
            for (long kk = 0; kk < lda; kk++) {
                const int v = kk < k ? act(amode, p->top, r * 7 + kk) : (kk < kpad ? 0 : 99);
                a[r * lda + kk] = (int16_t)v;
                a8[r * lda + kk] = (uint8_t)v;
            }
        int32_t *c = malloc(sizeof(int32_t) * (size_t)(rows * ldc));
        for (long i = 0; i < rows * ldc; i++) c[i] = -7;
        run(p, rows, quads, p->wide ? (const void *)a : (const void *)a8, lda, b, p0, p1, c, ldc);
        for (long r = 0; r < rows; r++)
            for (long j = 0; j < ldc; j++) {
                int64_t want = -7;
                if (j < cols) {
                    want = 0;
                    const long col = 16 * p0 + j;
                    for (long kk = 0; kk < k; kk++) want += (int64_t)a[r * lda + kk] * w[col * kpad + kk];
                }
                if ((int64_t)c[r * ldc + j] != want && wrong++ < 5)
                    fprintf(stderr, "%s rows %ld k %ld panels %ld..<%ld modes %d/%d: c[%ld, %ld] = %d, want %lld\n",
                            p->name, rows, k, p0, p1, amode, wmode, r, j, c[r * ldc + j], (long long)want);
            }
        free(a); free(a8); free(c);
    }
    free(b); free(w);
    return wrong;
}

static int correctness(void) {
    static const long ks[] = {1, 3, 4, 5, 17, 64, 190, 768, 771};
    static const long rowcounts[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 17, 96};
    long wrong = 0, products = 0;
    srand(7);
    for (int amode = 0; amode <= 4; amode++)
        for (int wmode = 0; wmode <= 4; wmode++)
            for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++)
                for (size_t ri = 0; ri < sizeof rowcounts / sizeof rowcounts[0]; ri++) {
                    const long rows = rowcounts[ri], k = ks[ki];
                    const long panels = 1 + 2 * (long)((ki + ri) % 3), p0 = panels > 1 ? 1 : 0;  // 1, 3 or 5 panels
                    wrong += check(rows, k, panels, p0, panels, amode, wmode);
                    products++;
                }
    // Long K, up to the documented limit of 65,536: with all-255 activations and all -128 weights the
    // sum is 65,536 · 255 · -128 = -2,139,095,040, just inside int32.
    static const long longks[] = {3072, 65536};
    static const long longrows[] = {1, 6, 7};
    static const int longmodes[][2] = {{1, 1}, {1, 3}, {4, 4}, {0, 0}};
    for (size_t ki = 0; ki < 2; ki++)
        for (size_t ri = 0; ri < 3; ri++)
            for (size_t mi = 0; mi < 4; mi++) {
                wrong += check(longrows[ri], longks[ki], 1, 0, 1, longmodes[mi][0], longmodes[mi][1]);
                products++;
            }
    if (wrong) {
        fprintf(stderr, "FAILED: %ld wrong values in %ld products x %d paths\n", wrong, products, npaths);
        return 1;
    }
    printf("correct: %ld products x %d paths (those this CPU runs) equal the int64 reference\n", products, npaths);
    return 0;
}

int main(void) {
    printf("xr_int8_gemm's u7 path on this CPU: %s\n", xr_int8_u7_path() == XR_INT8_VNNI512   ? "VNNI zmm"
                                                      : xr_int8_u7_path() == XR_INT8_VNNI256 ? "VNNI ymm"
                                                                                            : "AVX2");
    if (correctness()) return 1;
    const long rows = 96, panels = 48, k = 768, quads = k / 4, cols = 16 * panels;
    int8_t *b = aligned_alloc(64, (size_t)(panels * quads * 64));
    uint8_t *a8 = aligned_alloc(64, (size_t)(rows * k));
    int16_t *a16 = aligned_alloc(64, (size_t)(rows * k) * sizeof(int16_t));
    int32_t *c = aligned_alloc(64, (size_t)(rows * cols) * sizeof(int32_t));
    srand(1);
    for (long i = 0; i < panels * quads * 64; i++) b[i] = (int8_t)(rand() % 255 - 127);
    for (long i = 0; i < rows * k; i++) { a8[i] = (uint8_t)(rand() % 128); a16[i] = (int16_t)(rand() % 256); }
    for (int pi = 0; pi < npaths; pi++) {
        const Path *p = &paths[pi];
        if (!supported(p)) {
            printf("%s  skipped: this CPU has no AVX-512 VNNI\n", p->name);
            continue;
        }
        const void *a = p->wide ? (const void *)a16 : (const void *)a8;
        double best = 1e9;
        for (int r = 0; r < 60; r++) {
            double t0 = now();
            run(p, rows, quads, a, k, b, 0, panels, c, cols);
            double t = now() - t0;
            if (t < best) best = t;
        }
        printf("%s  %.1f GOP/s  (%ld x %ld x %ld, best of 60: %.1f us; c[0] = %d)\n", p->name,
               2.0 * rows * cols * k / best * 1e-9, rows, cols, k, best * 1e6, c[0]);
    }
    free(b); free(a8); free(a16); free(c);
    return 0;
}
