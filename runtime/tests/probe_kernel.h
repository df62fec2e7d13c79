/* The stub kernel of the loader's test (test_loader.c) and fuzzer (fuzz_loader.c): it checks its
 * argument list as a generated kernel receives it, aborting on a malformed one, and touches the
 * first and last byte of every tensor, so that ASan reports any argument the loader let point
 * outside its buffer. With PROBE_WRITES_OUTPUT defined it also rewrites the output's two bytes
 * (the output must be writable). */
#ifndef MPQ_PROBE_KERNEL_H
#define MPQ_PROBE_KERNEL_H

#include <stdlib.h>

#include "mpq_runtime.h"

static uint64_t probe_tensor_bytes(const mpq_dltensor *t) {
    uint64_t n = (uint64_t)(t->dtype.bits / 8) * t->dtype.lanes;
    for (int32_t d = 0; d < t->ndim; d++) n *= (uint64_t)t->shape[d];
    return n;
}

static int probe_kernel(void *self, const mpq_ffi_any *args, int32_t num_args, mpq_ffi_any *result) {
    (void)self;
    if (num_args < 1 || !args || !result) abort();
    for (int32_t i = 0; i < num_args; i++) {
        if (args[i].type_index != MPQ_FFI_TENSOR_PTR || !args[i].v.v_ptr) abort();
        const mpq_dltensor *t = args[i].v.v_ptr;
        if (!t->data || !t->shape || t->ndim < 1 || t->ndim > MPQ_ART_MAX_DIMS || t->strides) abort();
        for (int32_t d = 0; d < t->ndim; d++)
            if (t->shape[d] < 1) abort();
        uint64_t n = probe_tensor_bytes(t);
        if (n == 0) abort();
        volatile uint8_t *p = (volatile uint8_t *)t->data + t->byte_offset;
        uint8_t first = p[0], last = p[n - 1];
#ifdef PROBE_WRITES_OUTPUT
        if (i + 1 == num_args) {
            p[0] = first;
            p[n - 1] = last;
        }
#else
        (void)first;
        (void)last;
#endif
    }
    return 0;
}

#endif
