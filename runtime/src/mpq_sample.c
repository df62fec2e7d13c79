/* The DDIM sampler (eta 0): the artifact's timesteps, one UNet call per step (mpq_exec.c). */
#define _POSIX_C_SOURCE 200809L
#include "mpq_model_internal.h"

#include <math.h>
#include <stddef.h>

int mpq_sample(mpq_model *m, float *x, double *step_seconds, char *err, size_t errlen) {
    const mpq_art_sampler *s = m->sampler;
    float *eps = m->scratch;
    for (uint32_t i = 0; i < s->n_steps; i++) {
        double t0 = mpq_clock_now();
        if (mpq_unet(m, x, (float)m->timesteps[i], i, eps, err, errlen)) return -1;
        /* the frontend's DDIM step (eta 0), float32 with float32 scalars */
        float a_t = m->alphas[i], a_prev = i + 1 < s->n_steps ? m->alphas[i + 1] : s->final_alpha_cumprod;
        float c_eps = (float)sqrt(1.0 - (double)a_t), c_x = (float)sqrt((double)a_t);
        float p_x0 = (float)sqrt((double)a_prev), p_eps = (float)sqrt(1.0 - (double)a_prev);
        for (size_t k = 0; k < m->sample_elems; k++) {
            float x0 = (x[k] - c_eps * eps[k]) / c_x;
            if (s->clip_sample) x0 = x0 < -s->clip_range ? -s->clip_range : (x0 > s->clip_range ? s->clip_range : x0);
            x[k] = p_x0 * x0 + p_eps * eps[k];
        }
        if (step_seconds) step_seconds[i] = mpq_clock_now() - t0;
    }
    return 0;
}
