/* What the loader (mpq_load.c), the plan executor (mpq_exec.c) and the DDIM sampler (mpq_sample.c)
 * share: the model as the loader builds it. Not installed; the API is mpq_runtime.h, the design
 * docs/ARCHITECTURE.md. */
#ifndef MPQ_MODEL_INTERNAL_H
#define MPQ_MODEL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "mpq_runtime.h"

#define MPQ_MAX_ARGS 16

typedef struct {
    mpq_kernel_fn fn;
    uint32_t n_args;
    mpq_ffi_any *args;          /* n_args, each pointing at one of `tensors` */
    mpq_dltensor *tensors;      /* n_args, own copies (step views get their data per step) */
    const uint8_t **step_base;  /* n_args: base of a step-indexed tensor, else NULL */
    const char *op, *kernel;
} mpq_call;

struct mpq_model {
    const uint8_t *file;
    size_t size;
    int mapped;
    const mpq_art_header *h;
    const mpq_art_tensor *tensors;
    uint8_t *arena;
    int64_t *shapes;            /* n_tensors x 4 */
    mpq_call *calls;
    uint32_t n_calls;
    const int32_t *timesteps;
    const float *alphas;
    const mpq_art_sampler *sampler;
    float *in, *tstep, *out;
    float *scratch;             /* the sampler's x (one sample) */
    size_t sample_elems;
    double *profile;
    char board[33];
};

/* Formats the message into err (when err and n are non-zero); returns -1. */
int mpq_error_set(char *err, size_t n, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Monotonic seconds (profiling and the sampler's step times). */
double mpq_clock_now(void);

#endif
