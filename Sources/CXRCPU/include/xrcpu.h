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

#endif
