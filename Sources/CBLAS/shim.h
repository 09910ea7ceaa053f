#include <cblas.h>
// OpenBLAS thread control (declared in openblas_config.h / cblas.h of OpenBLAS).
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
// The kernel family OpenBLAS's DYNAMIC_ARCH build chose at load time (e.g. "Haswell").
char *openblas_get_corename(void);
// LAPACK routines bundled in libopenblas (column-major, Fortran calling convention).
void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w,
             double *work, const int *lwork, int *iwork, const int *liwork, int *info);
void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info);
void dpotrs_(const char *uplo, const int *n, const int *nrhs, const double *a, const int *lda,
             double *b, const int *ldb, int *info);
