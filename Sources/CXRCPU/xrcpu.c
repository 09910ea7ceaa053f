#include "xrcpu.h"
#include <xmmintrin.h>

#define XR_FTZ_DAZ 0x8040u  // MXCSR bits 15 (flush to zero) and 6 (denormals are zero)

void xr_flush_denormals(void) {
    unsigned int csr = _mm_getcsr();
    if ((csr & XR_FTZ_DAZ) != XR_FTZ_DAZ) _mm_setcsr(csr | XR_FTZ_DAZ);
}

int xr_flushes_denormals(void) { return (_mm_getcsr() & XR_FTZ_DAZ) == XR_FTZ_DAZ; }
