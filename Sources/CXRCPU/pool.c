// A small thread pool for xrlab's parallel ops: the calling thread runs part 0 of a job and
// pool threads run parts 1..n-1. Between jobs pool threads spin for a short while before
// sleeping on a futex, so the next op of a forward pass (tens of microseconds later) starts
// without a thread wake-up; idle pools sleep and use no CPU.
#define _GNU_SOURCE
#include "xrcpu.h"
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <immintrin.h>

#define XR_POOL_MAX 256
#define XR_SPIN_NS 200000L   // how long a pool thread spins for the next job before sleeping

static pthread_mutex_t run_lock = PTHREAD_MUTEX_INITIALIZER;
static int started = 0;                       // pool threads started (ids 1...started)
static _Atomic uint32_t generation = 0;       // bumped once per job; futex word for pool threads
static _Atomic int sleepers = 0;              // pool threads asleep on `generation`
static _Atomic long pending = 0;              // pool threads that have not finished the job
static _Atomic uint32_t finished = 0;         // futex word for the caller
static xr_task job_task;
static void *job_context;
static long job_parts;
static _Thread_local int in_job = 0;          // nested calls run serially

static void futex_wait(_Atomic uint32_t *word, uint32_t value) {
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, value, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *word) {
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

// arg: the thread's id in the low 16 bits, above them the job generation when it was started
// (jobs are published only under run_lock, where threads are started, so it cannot miss one).
static void *pool_thread(void *arg) {
    long id = (long)arg & 0xFFFF;
    uint32_t seen = (uint32_t)((unsigned long)arg >> 16);
    xr_flush_denormals();
    in_job = 1;
    for (;;) {
        uint32_t g;
        long deadline = 0;
        int spins = 0;
        while ((g = atomic_load_explicit(&generation, memory_order_acquire)) == seen) {
            if ((++spins & 63) == 0) {
                long t = now_ns();
                if (deadline == 0) deadline = t + XR_SPIN_NS;
                else if (t > deadline) {
                    atomic_fetch_add(&sleepers, 1);
                    futex_wait(&generation, seen);
                    atomic_fetch_sub(&sleepers, 1);
                    deadline = 0;
                }
            }
            _mm_pause();
        }
        seen = g;
        if (id < job_parts) job_task(job_context, id);
        if (atomic_fetch_sub_explicit(&pending, 1, memory_order_acq_rel) == 1) {
            atomic_store(&finished, 1);
            futex_wake(&finished);
        }
    }
    return NULL;
}

int xr_parallel_run(long parts, xr_task task, void *context) {
    if (parts <= 0) return 0;
    if (parts == 1 || in_job || parts > XR_POOL_MAX) {
        for (long i = 0; i < parts; i++) task(context, i);
        return 0;
    }
    pthread_mutex_lock(&run_lock);
    while (started < parts - 1) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        unsigned long arg = ((unsigned long)atomic_load(&generation) << 16) | (unsigned long)(started + 1);
        int rc = pthread_create(&t, &attr, pool_thread, (void *)arg);
        pthread_attr_destroy(&attr);
        if (rc != 0) break;
        started++;
    }
    if (started < parts - 1) {   // could not start threads: run what the pool cannot take here
        pthread_mutex_unlock(&run_lock);
        for (long i = 0; i < parts; i++) task(context, i);
        return 1;
    }
    job_task = task;
    job_context = context;
    job_parts = parts;
    atomic_store(&pending, started);
    atomic_store(&finished, 0);
    atomic_fetch_add(&generation, 1);            // publishes the job (seq_cst)
    if (atomic_load(&sleepers) > 0) futex_wake(&generation);
    in_job = 1;
    task(context, 0);
    in_job = 0;
    long deadline = 0;
    int spins = 0;
    while (atomic_load_explicit(&pending, memory_order_acquire) != 0) {
        if ((++spins & 63) == 0) {
            long t = now_ns();
            if (deadline == 0) deadline = t + XR_SPIN_NS;
            else if (t > deadline) { futex_wait(&finished, 0); deadline = 0; }
        }
        _mm_pause();
    }
    pthread_mutex_unlock(&run_lock);
    return 0;
}

long xr_claim(long *counter) {
    return atomic_fetch_add_explicit((_Atomic long *)counter, 1, memory_order_relaxed);
}
