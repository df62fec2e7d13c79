/* The plan executor: one UNet call (the calls in order, per-step arguments set for the step), the
 * per-call profile and the model's accessors. */
#define _POSIX_C_SOURCE 200809L
#include "mpq_model_internal.h"

#include <string.h>
#include <time.h>

double mpq_clock_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int mpq_unet(mpq_model *m, const float *x, float t, uint32_t step, float *eps, char *err, size_t errlen) {
    if (step >= m->h->n_steps) return mpq_error_set(err, errlen, "step %u outside 0..%u", step, m->h->n_steps - 1);
    memcpy(m->in, x, m->sample_elems * sizeof(float));
    *m->tstep = t;
    mpq_ffi_any result;
    for (uint32_t c = 0; c < m->n_calls; c++) {
        mpq_call *call = &m->calls[c];
        for (uint32_t a = 0; a < call->n_args; a++)
            if (call->step_base[a]) call->tensors[a].data = (void *)(call->step_base[a] + 4u * step);
        double t0 = m->profile ? mpq_clock_now() : 0.0;
        result.type_index = 0;
        if (call->fn(NULL, call->args, (int32_t)call->n_args, &result) != 0)
            return mpq_error_set(err, errlen, "kernel %s (%s) failed; see the message above", call->kernel, call->op);
        if (m->profile) m->profile[c] += mpq_clock_now() - t0;
    }
    memcpy(eps, m->out, m->sample_elems * sizeof(float));
    return 0;
}

void mpq_input_shape(const mpq_model *m, int64_t shape[4]) {
    for (uint64_t i = 0; i < m->h->n_tensors; i++) {
        if (m->tensors[i].kind == MPQ_KIND_INPUT && m->tensors[i].alias == -1) {
            memcpy(shape, m->tensors[i].shape, 4 * sizeof(int64_t));
            return;
        }
    }
}

const mpq_art_header *mpq_header(const mpq_model *m) { return m->h; }
uint32_t mpq_steps(const mpq_model *m) { return m->h->n_steps; }
int32_t mpq_timestep(const mpq_model *m, uint32_t step) { return step < m->h->n_steps ? m->timesteps[step] : -1; }
uint64_t mpq_arena_bytes(const mpq_model *m) { return m->h->arena_bytes; }
uint64_t mpq_file_bytes(const mpq_model *m) { return m->size; }
const char *mpq_board(const mpq_model *m) { return m->board; }
uint32_t mpq_calls(const mpq_model *m) { return m->n_calls; }
const char *mpq_call_op(const mpq_model *m, uint32_t i) { return i < m->n_calls ? m->calls[i].op : NULL; }
const char *mpq_call_kernel(const mpq_model *m, uint32_t i) { return i < m->n_calls ? m->calls[i].kernel : NULL; }
void mpq_profile(mpq_model *m, double *seconds) { m->profile = seconds; }
