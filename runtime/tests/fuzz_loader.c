/* libFuzzer harness for the whole open path of the artifact loader and the kernel arguments it builds
 * for the executor.
 *
 * Each input is an artifact in memory, opened with mpq_open_memory three times:
 *   1. as it is, with NULL options: a random mutation mostly breaks the checksum, so this run fuzzes
 *      the checks before it (sizes, magic, version) and the checksum's refusal itself;
 *   2. a copy with its checksum recomputed (inputs that hold a header), one thread, any board, no arena
 *      limit: the mutation reaches every check after the checksum, and the arena's allocation;
 *   3. the same copy for board "host" with an arena limit of FUZZ_SMALL_ARENA bytes: the board and
 *      arena-limit refusals.
 * When an open succeeds (1 or 2), one UNet call at the first and at the last sampling step on a zero
 * input, then mpq_close. Resolving gives every symbol the same probe kernel (probe_kernel.h): it
 * writes nothing, reads the first and last byte of every tensor argument, so ASan reports any argument
 * the loader let point outside its buffer, and aborts on a malformed argument list. No pool workers
 * are ever started (one thread).
 *
 * The build defines MPQ_TEST_ARENA_FAIL_ABOVE (make -C runtime fuzz; FUZZ_ARENA_FAIL_ABOVE, 16 MiB):
 * the loader's arena allocation fails above it as an exhausted allocator would, so the failure
 * branch is fuzzed and an honest big arena never meets libFuzzer's malloc limit. At exit the harness
 * prints how the opens ended ("fuzz_loader: outcomes: ...", mpqdm/testing/fuzz.py records the counts).
 *
 * Build: make -C runtime fuzz (clang with libFuzzer; the binary is runtime/build/fuzz_loader). Run:
 *   runtime/build/fuzz_loader -max_total_time=60 NEW_CORPUS_DIR runtime/tests/data
 * (libFuzzer adds the inputs it finds to the first folder: keep runtime/tests/data second).
 */
#include "mpq_runtime.h"
#include "probe_kernel.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef MPQ_TEST_ARENA_FAIL_ABOVE
#error "build with make -C runtime fuzz (it defines MPQ_TEST_ARENA_FAIL_ABOVE)"
#endif
#define FUZZ_SMALL_ARENA ((uint64_t)4096)

/* How the opens ended: counted by the message's words. */
enum { OPENED, CHECKSUM, ALLOC_FAILED, ARENA_LIMIT, OTHER_BOARD, OTHER_ERROR, N_OUTCOMES };
static const char *const outcome_names[N_OUTCOMES] = {"opened", "checksum_mismatch", "arena_alloc_failed",
                                                      "arena_above_limit", "other_board", "other_error"};
static unsigned long long outcomes[N_OUTCOMES];

static void print_outcomes(void) {
    fprintf(stderr, "fuzz_loader: outcomes:");
    for (int i = 0; i < N_OUTCOMES; i++) fprintf(stderr, " %s=%llu", outcome_names[i], outcomes[i]);
    fprintf(stderr, "\n");
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    atexit(print_outcomes);
    return 0;
}

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

/* One open; a failure must hand back no model and a one-line message. */
static void open_once(const uint8_t *data, size_t size, const mpq_open_options *opt, int run) {
    mpq_model *m = NULL;
    char err[512];
    memset(err, 'x', sizeof err);
    if (mpq_open_memory(data, size, resolve_all, NULL, opt, &m, err, sizeof err) != 0) {
        if (m) abort();                                 /* a failed open hands back no model */
        if (!memchr(err, '\0', sizeof err) || !err[0] || strchr(err, '\n')) abort();
        int o = strstr(err, "checksum mismatch") ? CHECKSUM
                : strstr(err, "cannot allocate the") ? ALLOC_FAILED
                : strstr(err, "above the memory limit") ? ARENA_LIMIT
                : strstr(err, "compiled for board") ? OTHER_BOARD : OTHER_ERROR;
        outcomes[o]++;
        return;
    }
    outcomes[OPENED]++;
    if (run) run_steps(m);
    mpq_close(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    open_once(data, size, NULL, 1);
    if (size < sizeof(mpq_art_header)) return 0;
    uint8_t *copy = malloc(size);
    if (!copy) return 0;
    memcpy(copy, data, size);
    uint32_t crc = mpq_checksum_compute(copy, size);
    memcpy(copy + offsetof(mpq_art_header, checksum), &crc, sizeof crc);     /* little-endian hosts */
    const mpq_open_options any = {1, NULL, 0}, small = {1, "host", FUZZ_SMALL_ARENA};
    open_once(copy, size, &any, 1);
    open_once(copy, size, &small, 0);
    free(copy);
    return 0;
}
