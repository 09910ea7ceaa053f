#include "xrjpeg.h"
#include <stdio.h>
#include <jpeglib.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jmp;
    char *msg;
} errctx_t;

static void on_error(j_common_ptr c) {
    errctx_t *e = (errctx_t *)c->err;
    char buf[JMSG_LENGTH_MAX];
    (*c->err->format_message)(c, buf);
    snprintf(e->msg, 256, "%s", buf);
    longjmp(e->jmp, 1);
}

/* Level -1 is a corrupt-data warning: refuse rather than return gray-filled pixels. */
static void on_message(j_common_ptr c, int level) {
    if (level < 0) on_error(c);
}

void xrjpeg_decode(const uint8_t *data, size_t size, uint64_t max_pixels, xrjpeg_image *out) {
    memset(out, 0, sizeof(*out));
    struct jpeg_decompress_struct cinfo;
    errctx_t err;
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = on_error;
    err.pub.emit_message = on_message;
    err.msg = out->error;
    uint8_t *volatile pixels = NULL;
    if (setjmp(err.jmp)) {
        jpeg_destroy_decompress(&cinfo);
        free(pixels);
        out->pixels = NULL;
        if (!out->error[0]) snprintf(out->error, sizeof(out->error), "decode error");
        return;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, (unsigned char *)data, (unsigned long)size);
    jpeg_read_header(&cinfo, TRUE);
    out->width = cinfo.image_width;
    out->height = cinfo.image_height;
    out->components = cinfo.num_components;
    out->precision = cinfo.data_precision;
    if (cinfo.num_components != 1) {
        snprintf(out->error, sizeof(out->error), "JPEG has %d components: only grayscale is read", cinfo.num_components);
        jpeg_destroy_decompress(&cinfo);
        return;
    }
    if ((uint64_t)cinfo.image_width * cinfo.image_height > max_pixels) {
        snprintf(out->error, sizeof(out->error), "declared size %ux%u exceeds the limit of %llu pixels",
                 cinfo.image_width, cinfo.image_height, (unsigned long long)max_pixels);
        jpeg_destroy_decompress(&cinfo);
        return;
    }
    cinfo.out_color_space = JCS_GRAYSCALE;
    jpeg_start_decompress(&cinfo);
    size_t w = cinfo.output_width, h = cinfo.output_height;
    pixels = (uint8_t *)malloc(w * h > 0 ? w * h : 1);
    if (!pixels) {
        snprintf(out->error, sizeof(out->error), "out of memory");
        jpeg_destroy_decompress(&cinfo);
        return;
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = pixels + (size_t)cinfo.output_scanline * w;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    out->pixels = pixels;
}

void xrjpeg_free(xrjpeg_image *img) {
    free(img->pixels);
    img->pixels = NULL;
}
