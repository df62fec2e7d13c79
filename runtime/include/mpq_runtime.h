/* mpqdm runtime: loads an artifact (mpq_artifact.h) and runs the UNet and the DDIM sampling loop
 * with TVM-generated kernels, without Python or libtvm.
 *
 * Use:
 *   mpq_model *m;
 *   char err[512];
 *   mpq_open_options opt = {threads, "rpi5", (uint64_t)4096 << 20};   (or NULL: the defaults)
 *   if (mpq_open("model.mpq", resolve, ctx, &opt, &m, err, sizeof err)) { puts(err); ... }
 *   mpq_sample(m, x, NULL, err, sizeof err);    x: noise in, image out; NHWC float32, mpq_input_shape()
 *   mpq_close(m);
 * `resolve(ctx, "__tvm_ffi_<kernel>")` returns each kernel the plan calls (a static table or dlsym);
 * a kernel it cannot find is an error at open. The model owns the mapped file and one arena of
 * mpq_arena_bytes(); nothing else is allocated per call. Functions returning int give 0 on success,
 * otherwise a one-line message in err that says what was wrong and how to fix it. Not thread-safe per
 * model; separate models are independent.
 *
 * What mpq_open checks, in order: the size against the header's, the magic, the version, the header
 * size, the file size, the checksum (a corrupted file stops here), the reserved fields, the board
 * name and, when the options name one, that it is this board; the arena size against the options'
 * limit; then every table, offset and size. Only then does it allocate the arena. A failed open hands
 * back no model (*out is NULL) and leaves nothing allocated.
 */
#ifndef MPQ_RUNTIME_H
#define MPQ_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#include "mpq_artifact.h"
#include "mpq_ffi.h"

typedef mpq_kernel_fn (*mpq_resolver)(void *ctx, const char *symbol);

typedef struct mpq_model mpq_model;

/* How to open an artifact. A NULL options pointer means all fields 0 / NULL. */
typedef struct {
    int threads;                   /* > 0: (re)start the kernels' thread pool with this many threads;
                                      <= 0: leave the pool as it is */
    const char *board;             /* NULL: any board; otherwise the artifact's board must be this name
                                      (mpqdm-run passes the board it was built for, MPQ_BOARD_NAME) */
    uint64_t max_arena_bytes;      /* 0: no limit but the format's (1 TiB); otherwise an artifact whose
                                      arena is larger is refused before anything is allocated */
} mpq_open_options;

int mpq_open(const char *path, mpq_resolver resolve, void *ctx, const mpq_open_options *options, mpq_model **out,
             char *err, size_t errlen);
/* The same from bytes in memory (copied; tests, fuzzing). */
int mpq_open_memory(const void *buf, size_t size, mpq_resolver resolve, void *ctx, const mpq_open_options *options,
                    mpq_model **out, char *err, size_t errlen);
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

/* CRC-32 (zlib's crc32: the IEEE polynomial, reflected): crc = mpq_crc32_update(0, data, n) and
 * continued over more bytes with crc = mpq_crc32_update(crc, more, m). "123456789" gives 0xCBF43926. */
uint32_t mpq_crc32_update(uint32_t crc, const void *data, size_t n);
/* The checksum an artifact of `size` bytes (>= sizeof(mpq_art_header)) must store in header.checksum:
 * the CRC-32 of all of it with the checksum field taken as zero (mpq_artifact.h). */
uint32_t mpq_checksum_compute(const void *file, size_t size);

/* Thread pool of the generated kernels' parallel loops (mpq_backend.c). */
typedef void *(*mpq_slot_lookup)(void *ctx, const char *name);
int mpq_backend_start(int threads);
void mpq_backend_bind(mpq_slot_lookup lookup, void *ctx);
void mpq_backend_stop(void);
/* Ask the OS for AMX tile state (asked anyway before main); 0 where granted. */
int mpq_request_amx_state(void);
/* Where kernel errors (TVMFFIErrorSetRaisedFromCStrParts) go: stderr, or `sink` once set (NULL: stderr
 * again). The modules for TVM's RPC server (mpq_remote.c) hand them to TVM. */
typedef void (*mpq_error_sink)(const char *kind, const char **parts, int32_t num_parts);
void mpq_backend_error_sink(mpq_error_sink sink);

#endif
