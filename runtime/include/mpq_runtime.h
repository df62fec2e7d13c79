/* mpqdm runtime: loads an artifact (mpq_artifact.h) and runs the UNet and the DDIM sampling loop
 * with TVM-generated kernels, without Python or libtvm.
 *
 * Use:
 *   mpq_model *m;
 *   char err[512];
 *   if (mpq_open("model.mpq", resolve, ctx, threads, &m, err, sizeof err)) { puts(err); ... }
 *   mpq_sample(m, x, NULL, err, sizeof err);    x: noise in, image out; NHWC float32, mpq_input_shape()
 *   mpq_close(m);
 * `resolve(ctx, "__tvm_ffi_<kernel>")` returns each kernel the plan calls (a static table or dlsym);
 * a kernel it cannot find is an error at open. The model owns the mapped file and one arena of
 * mpq_arena_bytes(); nothing else is allocated per call. Functions returning int give 0 on success,
 * otherwise a message in err. Not thread-safe per model; separate models are independent.
 */
#ifndef MPQ_RUNTIME_H
#define MPQ_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#include "mpq_artifact.h"
#include "mpq_ffi.h"

typedef mpq_kernel_fn (*mpq_resolver)(void *ctx, const char *symbol);

typedef struct mpq_model mpq_model;

int mpq_open(const char *path, mpq_resolver resolve, void *ctx, int threads, mpq_model **out, char *err,
             size_t errlen);
/* The same from bytes in memory (copied; tests, fuzzing). threads <= 0 leaves the pool as it is. */
int mpq_open_memory(const void *buf, size_t size, mpq_resolver resolve, void *ctx, int threads, mpq_model **out,
                    char *err, size_t errlen);
void mpq_close(mpq_model *m);

/* The board checks: the artifact's arch and CPU features against this machine's (Linux: uname,
 * /proc/cpuinfo or the auxiliary vector). Call before the first run: a Pi 5 build on a Pi 4 stops
 * here instead of dying of an illegal instruction. */
int mpq_check_cpu(const mpq_model *m, char *err, size_t errlen);

void mpq_input_shape(const mpq_model *m, int64_t shape[4]);   /* NHWC of x (= of the output) */
const mpq_art_header *mpq_header(const mpq_model *m);
uint32_t mpq_steps(const mpq_model *m);
int32_t mpq_timestep(const mpq_model *m, uint32_t step);     /* the sampler's timestep of a step, -1 outside */
uint64_t mpq_arena_bytes(const mpq_model *m);
uint64_t mpq_file_bytes(const mpq_model *m);
const char *mpq_board(const mpq_model *m);
uint32_t mpq_calls(const mpq_model *m);
const char *mpq_call_op(const mpq_model *m, uint32_t i);
const char *mpq_call_kernel(const mpq_model *m, uint32_t i);

/* Per-call seconds are added to seconds[i] (n = mpq_calls) while set; NULL turns it off. */
void mpq_profile(mpq_model *m, double *seconds);

/* One UNet call at sampling step `step` (0: the noisiest) and timestep t: eps = unet(x, t). */
int mpq_unet(mpq_model *m, const float *x, float t, uint32_t step, float *eps, char *err, size_t errlen);

/* The whole DDIM run (eta 0, the artifact's timesteps, clipping): x is the noise in, the sample out.
 * step_seconds (n = mpq_steps, or NULL) receives each step's time. */
int mpq_sample(mpq_model *m, float *x, double *step_seconds, char *err, size_t errlen);

/* Thread pool of the generated kernels' parallel loops (mpq_backend.c). */
typedef void *(*mpq_slot_lookup)(void *ctx, const char *name);
int mpq_backend_start(int threads);
void mpq_backend_bind(mpq_slot_lookup lookup, void *ctx);
void mpq_backend_stop(void);

#endif
