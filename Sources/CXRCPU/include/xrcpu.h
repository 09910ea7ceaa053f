#ifndef XRCPU_H
#define XRCPU_H
// Floating-point control of the calling thread.

// Flush denormal results to zero and treat denormal inputs as zero (SSE/AVX: MXCSR FTZ + DAZ).
// Values below 1.2e-38 then cost nothing instead of a microcode assist per operation.
void xr_flush_denormals(void);
// 1 when the calling thread flushes denormals.
int xr_flushes_denormals(void);

#endif
