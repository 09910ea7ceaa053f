#ifndef XRJPEG_H
#define XRJPEG_H
#include <stddef.h>
#include <stdint.h>

/// Result of decoding a JPEG (DCT, Huffman) codestream with libjpeg. On success `error[0] == 0`
/// and `pixels` holds height*width 8-bit gray samples, to be freed with xrjpeg_free.
typedef struct {
    uint32_t width;
    uint32_t height;
    int components;
    int precision;
    uint8_t *pixels;
    char error[256];
} xrjpeg_image;

/// Decode a single-component (grayscale) 8-bit JPEG held in memory. `max_pixels` bounds
/// width*height before pixel memory is allocated. libjpeg reports errors by longjmp; they are
/// caught here so they never unwind through Swift frames. Corrupt-data warnings (e.g. a
/// premature end of data, which libjpeg would fill with gray) are errors too.
void xrjpeg_decode(const uint8_t *data, size_t size, uint64_t max_pixels, xrjpeg_image *out);
void xrjpeg_free(xrjpeg_image *img);
#endif
