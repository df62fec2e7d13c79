/* Runs one generated kernel on tensors read from a file, writes the outputs (kernel tests).
 *
 * usage: kernel_harness ARGS_FILE OUT_FILE [THREADS [CALLS]]; the kernel is the symbol MPQ_KERNEL,
 * called CALLS times (default 1: instruction counts of 2 calls minus 1 call give one call's cost).
 * ARGS_FILE: "MPQK", uint32 count, then per tensor: uint8 dtype code, uint8 dtype bits,
 * uint8 ndim, uint8 is_output, int64 shape[ndim], the data (row-major, little-endian).
 * OUT_FILE: the data of every output tensor, in argument order.
 */
#define _POSIX_C_SOURCE 200112L
#include "mpq_ffi.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef MPQ_KERNEL
#error "define MPQ_KERNEL as the kernel's symbol, e.g. -DMPQ_KERNEL=__tvm_ffi_qconv"
#endif
int MPQ_KERNEL(void *self, const mpq_ffi_any *args, int32_t num_args, mpq_ffi_any *result);

#define MAX_ARGS 32

static int fail(const char *what) {
    fprintf(stderr, "kernel_harness: %s\n", what);
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 3) return fail("usage: kernel_harness ARGS_FILE OUT_FILE [THREADS [CALLS]]");
    FILE *f = fopen(argv[1], "rb");
    if (!f) return fail("cannot open the arguments file");
    char magic[4];
    uint32_t count = 0;
    if (fread(magic, 1, 4, f) != 4 || memcmp(magic, "MPQK", 4) != 0) return fail("bad magic");
    if (fread(&count, 4, 1, f) != 1 || count == 0 || count > MAX_ARGS) return fail("bad tensor count");
    static mpq_dltensor tensors[MAX_ARGS];
    static int64_t shapes[MAX_ARGS][8];
    static mpq_ffi_any args[MAX_ARGS];
    static size_t sizes[MAX_ARGS];
    static int is_out[MAX_ARGS];
    for (uint32_t i = 0; i < count; i++) {
        uint8_t hdr[4];
        if (fread(hdr, 1, 4, f) != 4 || hdr[2] > 8) return fail("bad tensor header");
        if (fread(shapes[i], 8, hdr[2], f) != hdr[2]) return fail("bad tensor shape");
        size_t n = hdr[1] / 8;
        for (int d = 0; d < hdr[2]; d++) n *= (size_t)shapes[i][d];
        void *data = NULL;
        if (posix_memalign(&data, 64, n ? n : 1) != 0) return fail("out of memory");
        if (fread(data, 1, n, f) != n) return fail("truncated tensor data");
        tensors[i] = (mpq_dltensor){data, {MPQ_DL_CPU, 0}, hdr[2], {hdr[0], hdr[1], 1}, shapes[i], NULL, 0};
        args[i].type_index = MPQ_FFI_TENSOR_PTR;
        args[i].zero_padding = 0;
        args[i].v.v_ptr = &tensors[i];
        sizes[i] = n;
        is_out[i] = hdr[3];
    }
    fclose(f);
    mpq_backend_init(argc > 3 ? atoi(argv[3]) : 1);
    mpq_ffi_any result = {0, 0, {0}};
    int calls = argc > 4 ? atoi(argv[4]) : 1;
    for (int c = 0; c < calls; c++) {
        if (MPQ_KERNEL(NULL, args, (int32_t)count, &result) != 0) return fail("the kernel returned an error");
    }
    FILE *o = fopen(argv[2], "wb");
    if (!o) return fail("cannot open the output file");
    for (uint32_t i = 0; i < count; i++) {
        if (is_out[i] && fwrite(tensors[i].data, 1, sizes[i], o) != sizes[i]) return fail("write failed");
    }
    return fclose(o) == 0 ? 0 : fail("write failed");
}
