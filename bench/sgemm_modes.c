// OpenBLAS sgemm at the encoder's and decoder's linear-layer shapes, two comparisons behind
// choices in xrlab's BLAS wrapper and encoder (docs/benchmarks.md):
//
//   clear: C = X·Wᵀ with beta = 0 (OpenBLAS clears C in its sgemm_beta kernel) against memset(C)
//          and beta = 1 (what BLAS.sgemm does), single-threaded.
//   split: the same product on two cores three ways: rows split between two single-threaded
//          calls (xrlab's default), output features split that way (xrlab's choice for one
//          image), and OpenBLAS's own two threads.
//
//   gcc -O2 bench/sgemm_modes.c -o /tmp/sgemm_modes -I/usr/include/x86_64-linux-gnu/openblas-pthread -lopenblas -lpthread
//   /tmp/sgemm_modes
//
// Prints a Markdown table: the best of 7 repetitions per shape and mode (ms and GFLOP/s). The
// "clear" columns use one core, the "split" columns two.
#include <cblas.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

extern void openblas_set_num_threads(int);

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

static int M, K, N, splitColumns, clearMode;
static float *A, *W, *C;
static atomic_int go, done, quit;

// C[lo..hi) of rows (or of columns) = X · Wᵀ.
static void part(int lo, int hi) {
    if (splitColumns)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, hi - lo, K, 1, A, K, W + (long)lo * K, K, 0, C + lo, N);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, hi - lo, N, K, 1, A + (long)lo * K, K, W, K, 0, C + (long)lo * N, N);
}

static void *worker(void *unused) {
    (void)unused;
    for (int seen = 0;;) {
        while (atomic_load(&go) == seen) { if (atomic_load(&quit)) return NULL; }
        seen++;
        int d = splitColumns ? N : M;
        part(d / 2, d);
        atomic_fetch_add(&done, 1);
    }
    return NULL;
}

static double best(void (*once)(void)) {
    double b = 1e9;
    for (int rep = 0; rep < 7; rep++) {
        int its = 20;
        double t = now();
        for (int i = 0; i < its; i++) once();
        double e = (now() - t) / its;
        if (e < b) b = e;
    }
    return b;
}

static void clearOnce(void) {
    if (clearMode == 0) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, A, K, W, K, 0, C, N);
    } else {
        memset(C, 0, sizeof(float) * (size_t)M * N);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, A, K, W, K, 1, C, N);
    }
}

static int calls;
static void splitOnce(void) {
    calls++;
    atomic_fetch_add(&go, 1);
    int d = splitColumns ? N : M;
    part(0, d / 2);
    while (atomic_load(&done) < calls) {}
}

static void blasThreadsOnce(void) { cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, A, K, W, K, 0, C, N); }

int main(void) {
    // (rows, in, out): ViT-Ti / ViT-S / ViT-B linears at one image (197 rows) and at eight, the
    // report decoder's (1024 rows) and its LM head.
    int shapes[][3] = {{197, 192, 576}, {197, 192, 768}, {197, 768, 192}, {197, 384, 1152}, {197, 768, 2304}, {197, 3072, 768},
                       {1576, 384, 1152}, {1576, 768, 768}, {1024, 384, 1536}, {1024, 1536, 384}, {1024, 384, 8000}};
    int n = sizeof shapes / sizeof shapes[0], maxM = 1576, maxK = 3072, maxN = 8000;
    A = malloc(sizeof(float) * (size_t)maxM * maxK);
    W = malloc(sizeof(float) * (size_t)maxN * maxK);
    C = malloc(sizeof(float) * (size_t)maxM * maxN);
    srand(1);
    for (long i = 0; i < (long)maxM * maxK; i++) A[i] = rand() / (float)RAND_MAX - 0.5f;
    for (long i = 0; i < (long)maxN * maxK; i++) W[i] = rand() / (float)RAND_MAX - 0.5f;
    double t[16][5];
    // Single-threaded and xrlab-style splits first (a spinning helper thread), then OpenBLAS's
    // own threads with the helper gone.
    pthread_t th;
    pthread_create(&th, NULL, worker, NULL);
    openblas_set_num_threads(1);
    for (int s = 0; s < n; s++) {
        M = shapes[s][0]; K = shapes[s][1]; N = shapes[s][2];
        clearMode = 0; t[s][0] = best(clearOnce);
        clearMode = 1; t[s][1] = best(clearOnce);
        splitColumns = 0; t[s][2] = best(splitOnce);
        splitColumns = 1; t[s][3] = best(splitOnce);
    }
    atomic_store(&quit, 1);
    pthread_join(th, NULL);
    openblas_set_num_threads(2);
    for (int s = 0; s < n; s++) {
        M = shapes[s][0]; K = shapes[s][1]; N = shapes[s][2];
        t[s][4] = best(blasThreadsOnce);
    }
    printf("| rows × in → out | clear: beta = 0 | clear: memset + beta = 1 | split: rows | split: output features | split: OpenBLAS threads |\n");
    printf("|---|---:|---:|---:|---:|---:|\n");
    for (int s = 0; s < n; s++) {
        double flop = 2.0 * shapes[s][0] * shapes[s][1] * shapes[s][2];
        printf("| %d × %d → %d |", shapes[s][0], shapes[s][1], shapes[s][2]);
        for (int i = 0; i < 5; i++) printf(" %.3f ms (%.0f GFLOP/s) |", t[s][i] * 1e3, flop / t[s][i] / 1e9);
        printf("\n");
    }
    fflush(stdout);
    _exit(0);
}
