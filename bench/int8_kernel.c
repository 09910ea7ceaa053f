// The int8 kernels of Sources/CXRCPU/int8gemm.c alone, on one core: a block of 96 activation rows
// times 48 weight panels (768 columns) over K = 768, best of 60 runs, for the u7 (vpmaddubsw +
// vpmaddwd) and the i16 (vpmaddwd on int16) paths. GOP/s counts 2 · rows · columns · K.
//
//   gcc -O2 bench/int8_kernel.c Sources/CXRCPU/int8gemm.c -ISources/CXRCPU/include -o /tmp/int8_kernel
//   /tmp/int8_kernel
#include "xrcpu.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

int main(void) {
    const long rows = 96, panels = 48, k = 768, quads = k / 4, cols = 16 * panels;
    int8_t *b = aligned_alloc(32, (size_t)(panels * quads * 64));
    uint8_t *a8 = aligned_alloc(32, (size_t)(rows * k));
    int16_t *a16 = aligned_alloc(32, (size_t)(rows * k) * sizeof(int16_t));
    int32_t *c = aligned_alloc(32, (size_t)(rows * cols) * sizeof(int32_t));
    srand(1);
    for (long i = 0; i < panels * quads * 64; i++) b[i] = (int8_t)(rand() % 255 - 127);
    for (long i = 0; i < rows * k; i++) { a8[i] = (uint8_t)(rand() % 128); a16[i] = (int16_t)(rand() % 256); }
    for (int wide = 0; wide <= 1; wide++) {
        const void *a = wide ? (const void *)a16 : (const void *)a8;
        double best = 1e9;
        for (int run = 0; run < 60; run++) {
            double t0 = now();
            xr_int8_gemm(wide, rows, quads, a, k, b, 0, panels, c, cols);
            double t = now() - t0;
            if (t < best) best = t;
        }
        printf("%s  %.1f GOP/s  (%ld x %ld x %ld, best of 60: %.1f us; c[0] = %d)\n", wide ? "i16" : "u7 ",
               2.0 * rows * cols * k / best * 1e-9, rows, cols, k, best * 1e6, c[0]);
    }
    free(b); free(a8); free(a16); free(c);
    return 0;
}
