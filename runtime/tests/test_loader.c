/* Loader tests on committed artifacts: runtime/tests/data/cases.txt names each file and what opening
 * it must give, "<file> [OPTION...] ok" or "<file> [OPTION...] error <substring of the message>". The
 * options are mpq_open_options fields: board=NAME (the board the binary is for) and max_arena=BYTES
 * (the arena limit); a line without options opens with NULL options (any board, no limit).
 *
 * Every file is opened twice, with mpq_open (mmap) and with mpq_open_memory on the same bytes. A
 * broken file must fail to open, hand back no model and give a message containing the substring. A
 * valid one must open, and then one UNet call at the first and at the last step, mpq_sample on a zero
 * input and mpq_close must succeed (a step past the last must be refused). The kernels are one stub
 * for every symbol (none for __tvm_ffi_missing*): it reads the first and last byte of every tensor
 * argument and rewrites the output's, so ASan catches an argument outside its buffer, and it aborts
 * on a malformed argument list. The address space is capped (without ASan; with ASan malloc returns
 * NULL past its limit) so an arena the header asks for fails to allocate on every machine.
 *
 * First it checks the CRC-32 against its test vector ("123456789" -> 0xCBF43926, whole and in pieces).
 *
 * usage: test_loader MANIFEST (the files are beside it); one line per case, then a summary; exit
 * status 1 when a case fails. Build and run: make -C runtime test (test-asan: under ASan + UBSan).
 */
#define _POSIX_C_SOURCE 200809L
#include "mpq_runtime.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define PROBE_WRITES_OUTPUT
#include "probe_kernel.h"

#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif

#ifdef TEST_ASAN
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "allocator_may_return_null=1"; }
#endif

#define ADDRESS_SPACE_CAP ((rlim_t)8 << 30)

static mpq_kernel_fn resolve_stub(void *ctx, const char *symbol) {
    (void)ctx;
    return strncmp(symbol, "__tvm_ffi_missing", 17) == 0 ? NULL : probe_kernel;
}

static unsigned char *read_all(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    unsigned char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        unsigned char *more = realloc(buf, cap * 2);
        if (!more) { free(buf); buf = NULL; break; }
        buf = more;
        cap *= 2;
    }
    if (buf && ferror(f)) { free(buf); buf = NULL; }
    fclose(f);
    *size = n;
    return buf;
}

/* A model that opened: runs it; returns NULL or what went wrong (in why). */
static const char *run_model(mpq_model *m, char *why, size_t n) {
    int64_t shape[4] = {0, 0, 0, 0};
    char err[512] = "";
    mpq_input_shape(m, shape);
    size_t elems = (size_t)(shape[0] * shape[1] * shape[2] * shape[3]);
    uint32_t steps = mpq_steps(m);
    float *x = calloc(elems, sizeof *x), *eps = calloc(elems, sizeof *eps);
    double *step_s = calloc(steps, sizeof *step_s);
    const char *bad = NULL;
    if (!x || !eps || !step_s || elems == 0) bad = "no input shape or out of memory";
    if (!bad && mpq_unet(m, x, (float)mpq_timestep(m, 0), 0, eps, err, sizeof err) != 0)
        bad = "mpq_unet at step 0 failed";
    if (!bad && mpq_unet(m, x, (float)mpq_timestep(m, steps - 1), steps - 1, eps, err, sizeof err) != 0)
        bad = "mpq_unet at the last step failed";
    if (!bad && (mpq_unet(m, x, 0.0f, steps, eps, err, sizeof err) == 0 || !strstr(err, "outside")))
        bad = "mpq_unet past the last step was not refused";
    err[0] = '\0';
    if (!bad && mpq_sample(m, x, step_s, err, sizeof err) != 0) bad = "mpq_sample failed";
    for (size_t k = 0; !bad && k < elems; k++)
        if (!isfinite(x[k])) bad = "mpq_sample gave a non-finite value";
    if (bad) snprintf(why, n, "%s: %s", bad, err);
    free(x);
    free(eps);
    free(step_s);
    return bad ? why : NULL;
}

/* One open of a case; returns NULL or what went wrong (in why). */
static const char *check_open(const char *path, const unsigned char *buf, size_t size, int from_memory,
                              const mpq_open_options *opt, const char *expect_error, char *why, size_t n) {
    mpq_model *m = (mpq_model *)&m;         /* not NULL: a failed open must set it to NULL */
    char err[512];
    memset(err, 0, sizeof err);
    int rc = from_memory ? mpq_open_memory(buf, size, resolve_stub, NULL, opt, &m, err, sizeof err)
                         : mpq_open(path, resolve_stub, NULL, opt, &m, err, sizeof err);
    if (!expect_error) {
        if (rc != 0 || !m) {
            snprintf(why, n, "did not open: %s", err);
            return why;
        }
        const char *bad = run_model(m, why, n);
        mpq_close(m);
        return bad;
    }
    if (rc == 0) {
        snprintf(why, n, "opened; expected the error '%s'", expect_error);
        mpq_close(m);
        return why;
    }
    if (m) {
        snprintf(why, n, "a failed open handed back a model");
        return why;
    }
    if (strchr(err, '\n')) {
        snprintf(why, n, "the message is not one line: '%s'", err);
        return why;
    }
    if (!memchr(err, '\0', sizeof err) || !strstr(err, expect_error)) {
        snprintf(why, n, "error '%s', expected one containing '%s'", err, expect_error);
        return why;
    }
    return NULL;
}

/* The CRC-32 test vector, whole and in two pieces; 0 when it holds. */
static int check_crc32(void) {
    const char *v = "123456789";
    uint32_t whole = mpq_crc32_update(0, v, 9), pieces = mpq_crc32_update(mpq_crc32_update(0, v, 4), v + 4, 5);
    if (whole != 0xCBF43926u || pieces != whole || mpq_crc32_update(0, v, 0) != 0) {
        printf("FAIL  crc32(\"123456789\") is 0x%08x (in pieces 0x%08x), expected 0xcbf43926\n", whole, pieces);
        return 1;
    }
    printf("ok    crc32(\"123456789\") = 0xcbf43926\n");
    return 0;
}

/* The options words of a manifest line (board=NAME, max_arena=BYTES) from *rest on; *rest then points at
 * the verdict. 0, or -1 for a word it does not know. */
static int parse_options(char **rest, mpq_open_options *opt, char *board, size_t board_len, int *given) {
    *given = 0;
    while (*rest) {
        char *word = *rest, *end = strchr(word, ' ');
        size_t len = end ? (size_t)(end - word) : strlen(word);
        if (!memchr(word, '=', len)) return 0;          /* the verdict */
        if (!end) return -1;                            /* options, no verdict */
        *end = '\0';
        *rest = end + 1;
        *given = 1;
        if (strncmp(word, "board=", 6) == 0 && strlen(word + 6) < board_len) {
            snprintf(board, board_len, "%s", word + 6);
            opt->board = board;
        } else if (strncmp(word, "max_arena=", 10) == 0 && word[10] >= '0' && word[10] <= '9') {
            char *e;
            opt->max_arena_bytes = strtoull(word + 10, &e, 10);
            if (*e) return -1;
        } else {
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: test_loader MANIFEST\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);     /* each case's line survives a crash in the next */
    int crc_failed = check_crc32();
#ifndef TEST_ASAN
    struct rlimit rl;
    if (getrlimit(RLIMIT_AS, &rl) == 0 && (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > ADDRESS_SPACE_CAP)) {
        rl.rlim_cur = ADDRESS_SPACE_CAP;
        setrlimit(RLIMIT_AS, &rl);
    }
#endif
    FILE *mf = fopen(argv[1], "r");
    if (!mf) {
        fprintf(stderr, "test_loader: cannot open %s\n", argv[1]);
        return 2;
    }
    const char *slash = strrchr(argv[1], '/');
    int dir_len = slash ? (int)(slash - argv[1]) : 1;
    const char *dir = slash ? argv[1] : ".";
    char line[1024];
    int cases = 0, failed = 0, lineno = 0;
    while (fgets(line, sizeof line, mf)) {
        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '\0' || line[0] == '#') continue;
        char *file = line, *verdict = strchr(line, ' ');
        if (verdict) *verdict++ = '\0';
        mpq_open_options opt = {1, NULL, 0};
        char board[64];
        int with_options = 0, bad_options = parse_options(&verdict, &opt, board, sizeof board, &with_options);
        const char *expect_error = NULL;
        if (!bad_options && verdict && strncmp(verdict, "error ", 6) == 0 && verdict[6]) expect_error = verdict + 6;
        else if (bad_options || !verdict || strcmp(verdict, "ok") != 0) {
            printf("FAIL  %s:%d: not '<file> [board=NAME] [max_arena=BYTES] ok' or '... error <message>'\n", argv[1],
                   lineno);
            cases++;
            failed++;
            continue;
        }
        char path[4096], why[1024];
        snprintf(path, sizeof path, "%.*s/%s", dir_len, dir, file);
        size_t size = 0;
        unsigned char *buf = read_all(path, &size);
        const char *bad = NULL, *how = "read";
        if (!buf) {
            snprintf(why, sizeof why, "cannot read the file");
            bad = why;
        }
        if (!bad) {
            how = "mpq_open";
            bad = check_open(path, buf, size, 0, with_options ? &opt : NULL, expect_error, why, sizeof why);
        }
        if (!bad) {
            how = "mpq_open_memory";
            bad = check_open(path, buf, size, 1, with_options ? &opt : NULL, expect_error, why, sizeof why);
        }
        free(buf);
        cases++;
        if (bad) {
            failed++;
            printf("FAIL  %s: %s: %s\n", file, how, bad);
        } else {
            printf("ok    %s%s%s\n", file, expect_error ? ": " : "", expect_error ? expect_error : "");
        }
    }
    fclose(mf);
    printf("test_loader: %d cases (each by mpq_open and mpq_open_memory), %d failed\n", cases, failed);
    return failed || crc_failed || cases == 0 ? 1 : 0;
}
