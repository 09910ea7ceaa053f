#ifndef XRPNG_H
#define XRPNG_H
#include <stddef.h>
#include <stdint.h>

/// Result of decoding a PNG. On success `error[0] == 0`, `pixels` holds height*width*channels
/// samples (1 or 2 bytes each, 16-bit in native byte order), to be freed with xrpng_free.
typedef struct {
    uint32_t width;
    uint32_t height;
    int channels;      /* 1 (gray) or 3 (RGB); alpha is dropped, palettes expanded */
    int bit_depth;     /* 8 or 16 (1/2/4-bit gray is expanded to 8 and scaled) */
    int source_bit_depth;
    int source_color_type;
    void *pixels;
    char error[256];
    char field[32];
} xrpng_image;

/// Decode a PNG held in memory. `max_pixels` bounds width*height before any pixel memory is
/// allocated (decompression-bomb guard). libpng errors are caught with setjmp here, so they
/// never unwind through Swift frames.
void xrpng_decode(const uint8_t *data, size_t size, uint64_t max_pixels, xrpng_image *out);
void xrpng_free(xrpng_image *img);

/// Encode 8- or 16-bit gray / gray+alpha / RGB / RGBA (channels 1-4) into a newly allocated buffer.
/// Returns 0 on success (*out must be freed with free()), else 1 with a message in `error`.
/// Samples interleaved, rows top to bottom; 16-bit samples in native byte order.
int xrpng_encode(const void *pixels, uint32_t width, uint32_t height, int channels, int bit_depth,
                 uint8_t **out, size_t *out_size, char *error, size_t error_size);
#endif
