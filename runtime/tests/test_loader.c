/* Loader tests on committed artifacts: runtime/tests/data/cases.txt names each file and what opening
 * it must give, "<file> ok" or "<file> error <substring of the message>".
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
                              const char *expect_error, char *why, size_t n) {
    mpq_model *m = NULL;
    char err[512];
    memset(err, 0, sizeof err);
    int rc = from_memory ? mpq_open_memory(buf, size, resolve_stub, NULL, 1, &m, err, sizeof err)
                         : mpq_open(path, resolve_stub, NULL, 1, &m, err, sizeof err);
    if (!expect_error) {
        if (rc != 0 || !m) {
            snprintf(why, n, "did not open: %s", err);
            return why;
        }
        const char *bad = run_model(m, why, n);
        mpq_close(m);
        return bad;
    }
    if (rc == 0 || m) {
        snprintf(why, n, "opened; expected the error '%s'", expect_error);
        mpq_close(m);
        return why;
    }
    if (!memchr(err, '\0', sizeof err) || !strstr(err, expect_error)) {
        snprintf(why, n, "error '%s', expected one containing '%s'", err, expect_error);
        return why;
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: test_loader MANIFEST\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);     /* each case's line survives a crash in the next */
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
        const char *expect_error = NULL;
        if (verdict && strncmp(verdict, "error ", 6) == 0 && verdict[6]) expect_error = verdict + 6;
        else if (!verdict || strcmp(verdict, "ok") != 0) {
            printf("FAIL  %s:%d: not '<file> ok' or '<file> error <message>'\n", argv[1], lineno);
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
            bad = check_open(path, buf, size, 0, expect_error, why, sizeof why);
        }
        if (!bad) {
            how = "mpq_open_memory";
            bad = check_open(path, buf, size, 1, expect_error, why, sizeof why);
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
    return failed || cases == 0 ? 1 : 0;
}
