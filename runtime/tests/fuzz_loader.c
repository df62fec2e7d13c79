/* libFuzzer harness for the artifact loader and the kernel arguments it builds for the executor.
 *
 * Each input is an artifact in memory: mpq_open_memory with one thread (no pool workers are ever
 * started) and a resolver that gives every symbol the same probe kernel; when it opens, one UNet call
 * at the first and at the last sampling step on a zero input, then mpq_close. The probe kernel writes
 * nothing: it reads the first and last byte of every tensor argument, so ASan reports any argument
 * the loader let point outside its buffer, and aborts on a malformed argument list.
 *
 * Build: make -C runtime fuzz (clang with libFuzzer; the binary is runtime/build/fuzz_loader). Run:
 *   runtime/build/fuzz_loader -max_total_time=60 NEW_CORPUS_DIR runtime/tests/data
 * (libFuzzer adds the inputs it finds to the first folder: keep runtime/tests/data second).
 */
#include "mpq_runtime.h"
#include "probe_kernel.h"

#include <stdlib.h>
#include <string.h>

/* The runtime allocates the arena the header asks for (up to 1 TiB); inputs asking for more than
 * this are skipped so that libFuzzer's malloc limit measures bugs, not honest big arenas. */
#define FUZZ_MAX_ARENA ((uint64_t)64 << 20)

static mpq_kernel_fn resolve_all(void *ctx, const char *symbol) {
    (void)ctx;
    (void)symbol;
    return probe_kernel;
}

static void run_steps(mpq_model *m) {
    int64_t shape[4];
    char err[256];
    mpq_input_shape(m, shape);
    size_t elems = (size_t)(shape[0] * shape[1] * shape[2] * shape[3]);
    float *x = calloc(elems, sizeof *x), *eps = malloc(elems * sizeof *eps);
    uint32_t last = mpq_steps(m) - 1;
    if (x && eps && mpq_unet(m, x, 0.0f, 0, eps, err, sizeof err) == 0 && last > 0)
        mpq_unet(m, x, 0.0f, last, eps, err, sizeof err);
    free(x);
    free(eps);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size >= sizeof(mpq_art_header)) {
        mpq_art_header h;
        memcpy(&h, data, sizeof h);
        if (h.arena_bytes > FUZZ_MAX_ARENA) return 0;
    }
    mpq_model *m = NULL;
    char err[512];
    if (mpq_open_memory(data, size, resolve_all, NULL, 1, &m, err, sizeof err) != 0) {
        if (m) abort();                 /* a failed open hands back no model */
        if (!memchr(err, '\0', sizeof err) || !err[0]) abort();
        return 0;
    }
    run_steps(m);
    mpq_close(m);
    return 0;
}
