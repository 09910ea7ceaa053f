#ifndef XRCPU_H
#define XRCPU_H
// Floating-point control of the calling thread, and the thread pool of xrlab's parallel ops.

// Flush denormal results to zero and treat denormal inputs as zero (SSE/AVX: MXCSR FTZ + DAZ).
// Values below 1.2e-38 then cost nothing instead of a microcode assist per operation.
void xr_flush_denormals(void);
// 1 when the calling thread flushes denormals.
int xr_flushes_denormals(void);

// A part of a parallel job: task(context, index).
typedef void (*xr_task)(void *context, long index);

// Run task(context, i) for i in 0..<parts and return when all have finished: part 0 on the
// calling thread, the others on pool threads (started on first use, kept for the process;
// between jobs they spin ~0.2 ms, then sleep on a futex). Jobs from different threads run
// one after another; a call from inside a running part runs its parts serially. Returns 1
// when pool threads could not be started (the parts then ran serially), else 0.
int xr_parallel_run(long parts, xr_task task, void *context);

// Atomically add 1 to *counter and return its old value (work items claimed by whichever thread
// is free: `Parallel.claiming`).
long xr_claim(long *counter);

// int8 products (int8gemm.c, AVX2 / AVX-512 VNNI). C[rows, 16 * (p1 - p0)] (int32, rows ldc apart; column 0 =
// panel p0's first) = A (rows, 4 * quads codes, rows lda elements apart) · panels p0..<p1 of b
// (s8, 64 bytes per k-quad per panel, 32-byte aligned). wide = 0: A holds u8 codes, 0...127 on the
// AVX2 path (vpmaddubsw + vpmaddwd), 0...255 on the VNNI paths (vpdpbusd, no int16 step); wide = 1:
// A holds int16 codes (vpmaddwd on int16).
#include <stdint.h>
void xr_int8_gemm(int wide, long rows, long quads, const void *a, long lda, const int8_t *b, long p0, long p1,
                  int32_t *c, long ldc);

// The kernel paths for u8 codes (wide = 0), all with the same panel layout and bit-identical
// int32 results: AVX2 (vpmaddubsw + vpmaddwd), AVX-512 VNNI (vpdpbusd) on ymm or zmm.
// xr_int8_gemm uses xr_int8_u7_path(): VNNI ymm where the CPU has AVX-512 VNNI + VL (checked
// once; the environment variable XRLAB_INT8_PATH=avx2 forces AVX2, to run the fallback on such a
// CPU), else AVX2; wide = 1 is AVX2 on every CPU. xr_int8_gemm_on runs the given path (which the
// CPU must support).
enum { XR_INT8_AVX2 = 0, XR_INT8_VNNI256 = 1, XR_INT8_VNNI512 = 2 };
int xr_int8_u7_path(void);
void xr_int8_gemm_on(int path, int wide, long rows, long quads, const void *a, long lda, const int8_t *b, long p0,
                     long p1, int32_t *c, long ldc);

// Quantise each row of x (rows, k; rows ldx apart) to codes q = clamp(rint(x / s) + z, 0, qmax)
// with s = (max(0, max x) - min(0, min x)) / qmax (1 for an all-zero row) and z = rint(-min(0, min x) / s),
// so x ≈ s · (q - z). Codes are u8 (wide = 0) or int16 (wide = 1), rows kpad ≥ k apart, zero
// from k to kpad; scales[r] = s, zeros[r] = z.
void xr_quantize_rows(const float *x, long ldx, long rows, long k, long kpad, int qmax, void *codes, int wide,
                      float *scales, int32_t *zeros);

#endif
