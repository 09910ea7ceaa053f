#include "xrpng.h"
#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>

typedef struct { const uint8_t *data; size_t size; size_t pos; } reader_t;
typedef struct { char *msg; char *field; jmp_buf jmp; } errctx_t;

/* libpng prefixes chunk errors with the chunk name ("IDAT: incorrect data check",
   "IHDR: CRC error"); that name is the most precise field to report. */
static void on_error(png_structp png, png_const_charp msg) {
    errctx_t *e = (errctx_t *)png_get_error_ptr(png);
    snprintf(e->msg, 256, "%s", msg);
    if (e->field && strlen(msg) > 5 && msg[4] == ':') {
        int chunk = 1;
        for (int i = 0; i < 4; i++) {
            char c = msg[i];
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) chunk = 0;
        }
        if (chunk) snprintf(e->field, 32, "%.4s", msg);
    }
    longjmp(e->jmp, 1);
}
static void on_warning(png_structp png, png_const_charp msg) { (void)png; (void)msg; }

static void read_fn(png_structp png, png_bytep out, png_size_t n) {
    reader_t *r = (reader_t *)png_get_io_ptr(png);
    if (r->pos + n > r->size) png_error(png, "unexpected end of file (truncated PNG)");
    memcpy(out, r->data + r->pos, n);
    r->pos += n;
}

void xrpng_decode(const uint8_t *data, size_t size, uint64_t max_pixels, xrpng_image *out) {
    memset(out, 0, sizeof(*out));
    if (size < 8 || png_sig_cmp(data, 0, 8) != 0) {
        snprintf(out->error, sizeof(out->error), size == 0 ? "empty file" : "not a PNG file (bad signature)");
        snprintf(out->field, sizeof(out->field), "signature");
        return;
    }
    /* The IHDR chunk comes first: check the declared size before libpng allocates anything. */
    if (size >= 24 && memcmp(data + 12, "IHDR", 4) == 0) {
        uint64_t w = ((uint64_t)data[16] << 24) | ((uint64_t)data[17] << 16) | ((uint64_t)data[18] << 8) | data[19];
        uint64_t h = ((uint64_t)data[20] << 24) | ((uint64_t)data[21] << 16) | ((uint64_t)data[22] << 8) | data[23];
        if (w == 0 || h == 0) {
            snprintf(out->error, sizeof(out->error), "image has zero width or height (%llux%llu)",
                     (unsigned long long)w, (unsigned long long)h);
            snprintf(out->field, sizeof(out->field), "IHDR");
            return;
        }
        if (w * h > max_pixels) {
            snprintf(out->error, sizeof(out->error), "declared size %llux%llu exceeds the limit of %llu pixels",
                     (unsigned long long)w, (unsigned long long)h, (unsigned long long)max_pixels);
            snprintf(out->field, sizeof(out->field), "IHDR");
            return;
        }
    }
    errctx_t ectx;
    ectx.msg = out->error;
    ectx.field = out->field;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &ectx, on_error, on_warning);
    if (!png) { snprintf(out->error, 256, "out of memory"); return; }
    png_infop info = png_create_info_struct(png);
    if (!info) { png_destroy_read_struct(&png, NULL, NULL); snprintf(out->error, 256, "out of memory"); return; }
    reader_t rd = { data, size, 0 };
    png_bytep *volatile rows = NULL;
    uint8_t *volatile pixels = NULL;
    snprintf(out->field, sizeof(out->field), "IHDR");
    if (setjmp(ectx.jmp)) {
        free(rows);
        free(pixels);
        png_destroy_read_struct(&png, &info, NULL);
        out->pixels = NULL;
        if (!out->error[0]) snprintf(out->error, 256, "decode error");
        return;
    }
    png_set_read_fn(png, &rd, read_fn);
    /* Let our own guard decide on size; libpng's default limit is 1,000,000 per side. */
    png_set_user_limits(png, 0x7fffffff, 0x7fffffff);
    /* Skip, unread, the ancillary chunks xrlab has no use for. libpng reads these text and
       palette-suggestion chunks into a zeroed buffer of their declared length (up to 2 GB)
       before it reaches their end, so a 60-byte file could take 2 GB of memory. */
    static const png_byte ignored[] = "iTXt\0pCAL\0sCAL\0sPLT\0tEXt\0zTXt\0tIME\0eXIf\0";
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, ignored, (int)(sizeof(ignored) / 5));
    png_read_info(png, info);
    png_uint_32 w = 0, h = 0;
    int depth = 0, color = 0, interlace = 0;
    png_get_IHDR(png, info, &w, &h, &depth, &color, &interlace, NULL, NULL);
    out->source_bit_depth = depth;
    out->source_color_type = color;
    if (w == 0 || h == 0) { snprintf(out->error, 256, "image has zero width or height"); png_error(png, out->error); }
    if ((uint64_t)w * (uint64_t)h > max_pixels) {
        char m[256];
        snprintf(m, sizeof(m), "declared size %ux%u exceeds the limit of %llu pixels", w, h, (unsigned long long)max_pixels);
        png_error(png, m);
    }
    if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
    if (color & PNG_COLOR_MASK_ALPHA || png_get_valid(png, info, PNG_INFO_tRNS)) png_set_strip_alpha(png);
    if (depth == 16) png_set_swap(png); /* native little-endian */
    if (interlace != PNG_INTERLACE_NONE) png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int channels = png_get_channels(png, info);
    int outDepth = png_get_bit_depth(png, info);
    if (channels != 1 && channels != 3) png_error(png, "unsupported channel layout");
    size_t rowbytes = png_get_rowbytes(png, info);
    snprintf(out->field, sizeof(out->field), "IDAT");
    pixels = (uint8_t *)malloc(rowbytes * h);
    rows = (png_bytep *)malloc(sizeof(png_bytep) * h);
    if (!pixels || !rows) png_error(png, "out of memory");
    for (png_uint_32 y = 0; y < h; y++) rows[y] = pixels + y * rowbytes;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    free(rows);
    png_destroy_read_struct(&png, &info, NULL);
    out->width = w;
    out->height = h;
    out->channels = channels;
    out->bit_depth = outDepth;
    out->pixels = pixels;
    out->field[0] = 0;
}

void xrpng_free(xrpng_image *img) { free(img->pixels); img->pixels = NULL; }

typedef struct { uint8_t *buf; size_t size; size_t cap; int failed; } writer_t;
static void write_fn(png_structp png, png_bytep data, png_size_t n) {
    writer_t *w = (writer_t *)png_get_io_ptr(png);
    if (w->size + n > w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 65536;
        while (cap < w->size + n) cap *= 2;
        uint8_t *nb = (uint8_t *)realloc(w->buf, cap);
        if (!nb) png_error(png, "out of memory");
        w->buf = nb; w->cap = cap;
    }
    memcpy(w->buf + w->size, data, n);
    w->size += n;
}
static void flush_fn(png_structp png) { (void)png; }

int xrpng_encode(const void *pixels, uint32_t width, uint32_t height, int channels, int bit_depth,
                 uint8_t **out, size_t *out_size, char *error, size_t error_size) {
    char msg[256] = {0};
    errctx_t ectx; ectx.msg = msg; ectx.field = NULL;
    /* The writer lives on the heap: it changes between setjmp and a possible longjmp, and
       locals modified there are indeterminate after the jump unless volatile. */
    writer_t *wr = (writer_t *)calloc(1, sizeof(writer_t));
    if (!wr) { snprintf(error, error_size, "out of memory"); return 1; }
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &ectx, on_error, on_warning);
    if (!png) { free(wr); snprintf(error, error_size, "out of memory"); return 1; }
    png_infop info = png_create_info_struct(png);
    const char *bad = !info ? "out of memory"
                    : (channels < 1 || channels > 4) ? "unsupported channel count"
                    : (bit_depth != 8 && bit_depth != 16) ? "unsupported bit depth" : NULL;
    if (bad) { png_destroy_write_struct(&png, info ? &info : NULL); free(wr); snprintf(error, error_size, "%s", bad); return 1; }
    if (setjmp(ectx.jmp)) {
        png_destroy_write_struct(&png, &info);
        free(wr->buf);
        free(wr);
        snprintf(error, error_size, "%s", msg);
        return 1;
    }
    int color = channels == 1 ? PNG_COLOR_TYPE_GRAY : channels == 2 ? PNG_COLOR_TYPE_GRAY_ALPHA
              : channels == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_RGBA;
    png_set_write_fn(png, wr, write_fn, flush_fn);
    png_set_IHDR(png, info, width, height, bit_depth, color, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    if (bit_depth == 16) png_set_swap(png);
    size_t rowbytes = (size_t)width * channels * (bit_depth / 8);
    for (uint32_t y = 0; y < height; y++) png_write_row(png, (png_const_bytep)pixels + y * rowbytes);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    *out = wr->buf;
    *out_size = wr->size;
    free(wr);
    return 0;
}
