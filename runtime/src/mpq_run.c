/* mpqdm-run: DDIM sampling (or single UNet calls) from an artifact, images out. `mpqdm-run --help`
 * lists the options, the outputs and the exit codes (help() below).
 *
 * Built for one board: MPQ_BOARD_NAME (a string) and MPQ_BOARD_MEMORY_MB (MiB) come from the Makefile
 * (BOARD=, BOARD_MEMORY_MB=; mpqdm build passes the board profile's name and memory_mb). It refuses an
 * artifact compiled for another board, and one whose arena exceeds the memory limit (the board's
 * memory unless --max-memory-mb), before allocating it (mpq_open_options).
 * Built with MPQ_STATIC_KERNELS the kernels are linked in (mpq_kernel_table); otherwise they are
 * loaded from --kernels (default: kernels.so beside MODEL).
 */
#define _POSIX_C_SOURCE 200809L
#include "mpq_runtime.h"
#include "mpq_util.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_MEMORY_MB (1L << 20)    /* 1 TiB: the format's largest arena */
#define MAX_THREADS 64              /* mpq_backend.c's pool */

#ifndef MPQ_BOARD_NAME
#error "define MPQ_BOARD_NAME and MPQ_BOARD_MEMORY_MB: make -C runtime run BOARD=NAME BOARD_MEMORY_MB=MIB ..."
#endif
#ifndef MPQ_BOARD_MEMORY_MB
#error "define MPQ_BOARD_MEMORY_MB, the board's memory in MiB: make -C runtime run BOARD_MEMORY_MB=MIB ..."
#endif
typedef char mpq_board_name_check[sizeof(MPQ_BOARD_NAME) >= 2 && sizeof(MPQ_BOARD_NAME) <= MPQ_ART_BOARD_LEN ? 1 : -1];
typedef char mpq_board_memory_check[(MPQ_BOARD_MEMORY_MB) >= 1 && (MPQ_BOARD_MEMORY_MB) <= MAX_MEMORY_MB ? 1 : -1];

enum { EXIT_OK = 0, EXIT_RUN = 1, EXIT_INPUT = 2 };

#ifdef MPQ_STATIC_KERNELS
static const mpq_resolver resolve = mpq_static_kernel;     /* mpq_util.c: the kernel table */
#else
#include <dlfcn.h>
static mpq_kernel_fn resolve(void *ctx, const char *sym) {
    mpq_kernel_fn fn;
    void *p = dlsym(ctx, sym);
    memcpy(&fn, &p, sizeof fn);
    return fn;
}

static void *slot(void *ctx, const char *name) { return dlsym(ctx, name); }
#endif

typedef struct {
    const char *model, *out, *noise, *kernels;
    int steps, count, threads, bench, unet_step;
    long max_memory_mb;
    unsigned long long seed;
} options;

static void help(void) {
    printf("usage: mpqdm-run MODEL [options]\n"
           "DDIM sampling (or single UNet calls) with MODEL, the model.mpq of mpqdm compile. This binary was built\n"
           "for board %s (%d MiB of memory) and refuses a model compiled for another board.\n\n"
           "options:\n"
           "  --out DIR           where the results go (default mpqdm-out; created if missing)\n"
           "  --count N           samples to make, 1..1000000 (default 1; with --noise the file's count, which N\n"
           "                      must then equal)\n"
           "  --seed S            seed of the noise without --noise, 0..2147483647 (default 0; xoshiro256** and\n"
           "                      Box-Muller, not torch's generator)\n"
           "  --noise FILE        the noise: raw little-endian float32 NHWC, N x H x W x C; every value finite\n"
           "  --steps N           check that MODEL was compiled for N sampling steps\n"
           "  --unet-step S       instead of sampling: one UNet call per noise sample at step S (0: the noisiest)\n"
           "  --threads T         kernel threads, 1..the CPU count (default 1)\n"
           "  --max-memory-mb N   refuse a model whose activation arena exceeds N MiB, 1..%ld (default: the\n"
           "                      board's memory, %d)\n"
           "  --kernels LIB.so    mpqdm-run-dyn only: the kernels (default: kernels.so beside MODEL)\n"
           "  --bench             print the mean step time, the time of each call and the memory use\n"
           "  -h, --help          this text\n\n"
           "output: DIR/samples.f32 (all samples, raw float32 NHWC) and DIR/sample_NNNN.pgm (.ppm for 3 channels),\n"
           "  or with --unet-step DIR/eps.f32; a line on stderr says what was written. --bench prints to stdout.\n"
           "exit status:\n"
           "  0  success\n"
           "  1  the run failed: this CPU lacks the model's arch or features, a kernel failed, out of memory, or\n"
           "     the output cannot be written\n"
           "  2  bad usage or input: an unknown option or a bad value; MODEL unreadable, corrupted, of another\n"
           "     format version or board, or with an arena above the memory limit; the kernels library cannot be\n"
           "     loaded; a bad --noise file; --steps or --unet-step that do not match MODEL\n",
           MPQ_BOARD_NAME, (int)(MPQ_BOARD_MEMORY_MB), MAX_MEMORY_MB, (int)(MPQ_BOARD_MEMORY_MB));
}

/* An error in the command line: the message (which names the option and its value), then a hint. */
static int usage_error(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
static int usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "mpqdm-run: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nrun mpqdm-run --help for the options\n");
    va_end(ap);
    return -1;
}

static int parse_long(const char *opt, const char *s, long lo, long hi, long *v) {
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (errno || *end || end == s || x < lo || x > hi) {
        char range[64];
        snprintf(range, sizeof range, "%ld..%ld", lo, hi);
        return usage_error("%s '%s': expected an integer in %s", opt, s, range);
    }
    *v = x;
    return 0;
}

static long cpu_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n;
}

/* 0: run; 1: --help was printed; -1: a usage error was printed. */
static int parse(int argc, char **argv, options *o) {
    *o = (options){NULL, "mpqdm-out", NULL, NULL, 0, 0, 1, 0, -1, MPQ_BOARD_MEMORY_MB, 0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        long v = 0;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            help();
            return 1;
        }
        if (a[0] != '-' || a[1] == '\0') {
            if (o->model) return usage_error("more than one MODEL given ('%s' and '%s')", o->model, a);
            o->model = a;
            continue;
        }
        if (strcmp(a, "--bench") == 0) {
            o->bench = 1;
            continue;
        }
        static const char *const valued[] = {"--out", "--noise", "--kernels", "--seed", "--steps", "--count",
                                             "--threads", "--unet-step", "--max-memory-mb"};
        int known = 0;
        for (size_t k = 0; k < sizeof valued / sizeof valued[0]; k++) known |= strcmp(a, valued[k]) == 0;
        if (!known) return usage_error("unknown option '%s'", a);
        if (i + 1 >= argc) return usage_error("option %s needs a value", a);
        const char *val = argv[++i];
        if (strcmp(a, "--out") == 0) {
            o->out = val;
        } else if (strcmp(a, "--noise") == 0) {
            o->noise = val;
        } else if (strcmp(a, "--kernels") == 0) {
#ifdef MPQ_STATIC_KERNELS
            return usage_error("--kernels '%s': this binary has its kernels linked in (--kernels is for "
                               "mpqdm-run-dyn)", val);
#else
            o->kernels = val;
#endif
        } else if (strcmp(a, "--seed") == 0) {
            if (parse_long(a, val, 0, 0x7fffffffL, &v)) return -1;
            o->seed = (unsigned long long)v;
        } else if (strcmp(a, "--steps") == 0) {
            if (parse_long(a, val, 1, 1000000, &v)) return -1;
            o->steps = (int)v;
        } else if (strcmp(a, "--count") == 0) {
            if (parse_long(a, val, 1, 1000000, &v)) return -1;
            o->count = (int)v;
        } else if (strcmp(a, "--unet-step") == 0) {
            if (parse_long(a, val, 0, 1000000, &v)) return -1;
            o->unet_step = (int)v;
        } else if (strcmp(a, "--max-memory-mb") == 0) {
            if (parse_long(a, val, 1, MAX_MEMORY_MB, &v)) return -1;
            o->max_memory_mb = v;
        } else {                                    /* --threads */
            long cpus = cpu_count(), most = cpus < MAX_THREADS ? cpus : MAX_THREADS;
            if (parse_long(a, val, 1, 1000000, &v)) return -1;
            if (v > most)
                return usage_error("--threads %ld: above the %ld CPUs of this machine%s; give 1..%ld", v, cpus,
                                   cpus > MAX_THREADS ? " (and the pool's 64 threads)" : "", most);
            o->threads = (int)v;
        }
    }
    return o->model ? 0 : usage_error("MODEL is required (the model.mpq of mpqdm compile)");
}

/* The --noise file: a whole number of samples, every value finite. 0, or EXIT_INPUT / EXIT_RUN with the
 * message printed. */
static int read_noise(const char *path, size_t elems, int *count, float **out) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "mpqdm-run: --noise %s: cannot open it: %s\n", path, strerror(errno));
        return EXIT_INPUT;
    }
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    if (size < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fprintf(stderr, "mpqdm-run: --noise %s: cannot read it (not a regular file?)\n", path);
        fclose(f);
        return EXIT_INPUT;
    }
    if (size == 0 || (size_t)size % (elems * 4)) {
        fprintf(stderr, "mpqdm-run: --noise %s holds %ld bytes, not a whole number of samples (%zu float32 = %zu "
                "bytes each); write N x H x W x C float32 values\n", path, size, elems, elems * 4);
        fclose(f);
        return EXIT_INPUT;
    }
    size_t n = (size_t)size / (elems * 4);
    if (n > 1000000 || (*count && (size_t)*count != n)) {
        fprintf(stderr, "mpqdm-run: --noise %s holds %zu samples, --count says %d; give --count %zu or leave it out\n",
                path, n, *count, n);
        fclose(f);
        return EXIT_INPUT;
    }
    float *x = malloc((size_t)size);
    if (!x) {
        fprintf(stderr, "mpqdm-run: out of memory reading --noise %s (%ld bytes)\n", path, size);
        fclose(f);
        return EXIT_RUN;
    }
    size_t got = fread(x, 1, (size_t)size, f);
    fclose(f);
    if (got != (size_t)size) {
        fprintf(stderr, "mpqdm-run: --noise %s: cannot read it (%zu of %ld bytes)\n", path, got, size);
        free(x);
        return EXIT_INPUT;
    }
    for (size_t k = 0; k < n * elems; k++) {
        if (!isfinite(x[k])) {
            fprintf(stderr, "mpqdm-run: --noise %s: value %zu (sample %zu) is %s; the noise must be finite\n", path,
                    k % elems, k / elems, isnan(x[k]) ? "NaN" : "infinite");
            free(x);
            return EXIT_INPUT;
        }
    }
    *count = (int)n;
    *out = x;
    return 0;
}

static int write_image(const char *dir, int i, const float *x, const int64_t *shape) {
    char path[4096];
    int c = (int)shape[3];
    snprintf(path, sizeof path, "%s/sample_%04d.%s", dir, i, c == 1 ? "pgm" : "ppm");
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    fprintf(f, "P%d\n%d %d\n255\n", c == 1 ? 5 : 6, (int)shape[2], (int)shape[1]);
    size_t n = (size_t)(shape[1] * shape[2]);
    for (size_t p = 0; p < n; p++) {
        for (int k = 0; k < (c == 1 ? 1 : 3); k++) {
            float v = (x[p * (size_t)c + (size_t)(k < c ? k : 0)] + 1.0f) * 127.5f;
            fputc((int)(!(v >= 0) ? 0 : (v > 255 ? 255 : v + 0.5f)), f);   /* NaN -> 0 */
        }
    }
    return fclose(f);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* every_s: the time of each step of each sample (runs x steps), sorted here for the median */
static void bench_report(const mpq_model *m, const double *call_s, double *every_s, int runs) {
    uint32_t n = mpq_calls(m), steps = mpq_steps(m);
    size_t all = (size_t)steps * (size_t)runs;
    double total = 0;
    for (size_t s = 0; s < all; s++) total += every_s[s];
    qsort(every_s, all, sizeof(double), cmp_double);
    double median = all % 2 ? every_s[all / 2] : 0.5 * (every_s[all / 2 - 1] + every_s[all / 2]);
    printf("per step: %.3f ms (mean of %u steps x %d samples)\n", 1e3 * total / (double)all, steps, runs);
    printf("median step: %.3f ms (min %.3f, max %.3f)\n", 1e3 * median, 1e3 * every_s[0], 1e3 * every_s[all - 1]);
    printf("%-6s %-28s %-40s %10s\n", "call", "kernel", "op", "ms/call");
    for (uint32_t i = 0; i < n; i++)
        printf("%-6u %-28s %-40s %10.4f\n", i, mpq_call_kernel(m, i), mpq_call_op(m, i),
               1e3 * call_s[i] / (steps * (double)runs));
    printf("arena %.1f KB, artifact %.1f KB, peak RSS %.1f MB\n", mpq_arena_bytes(m) / 1024.0,
           mpq_file_bytes(m) / 1024.0, mpq_peak_rss_kb() / 1024.0);
}

static int run(const options *o, mpq_model *m) {
    char err[1024];
    int64_t shape[4];
    mpq_input_shape(m, shape);
    size_t elems = (size_t)(shape[1] * shape[2] * shape[3]);
    int count = o->count;
    float *all = NULL;
    if (o->noise) {
        int rc = read_noise(o->noise, elems, &count, &all);
        if (rc) return rc;
    } else {
        count = count ? count : 1;
        all = malloc(elems * (size_t)count * sizeof(float));
        if (!all) {
            fprintf(stderr, "mpqdm-run: out of memory for the noise of %d samples; give a smaller --count\n", count);
            return EXIT_RUN;
        }
        mpq_noise(o->seed, all, elems * (size_t)count);
    }
    if (mkdir(o->out, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "mpqdm-run: --out %s: cannot create it: %s\n", o->out, strerror(errno));
        free(all);
        return EXIT_RUN;
    }
    uint32_t steps = mpq_steps(m);
    double *call_s = calloc(mpq_calls(m), sizeof(double)), *step_s = calloc(steps, sizeof(double));
    double *every_s = calloc(steps * (size_t)(count > 0 ? count : 1), sizeof(double));
    float *eps = malloc(elems * sizeof(float));
    int rc = (call_s && step_s && every_s && eps) ? 0 : -1;
    if (rc) fprintf(stderr, "mpqdm-run: out of memory\n");
    if (o->bench) mpq_profile(m, call_s);
    for (int i = 0; i < count && rc == 0; i++) {
        float *x = all + (size_t)i * elems;
        if (o->unet_step >= 0) {
            rc = mpq_unet(m, x, (float)mpq_timestep(m, (uint32_t)o->unet_step), (uint32_t)o->unet_step, eps, err,
                          sizeof err);
            if (rc == 0) memcpy(x, eps, elems * sizeof(float));
        } else {
            rc = mpq_sample(m, x, step_s, err, sizeof err);
            memcpy(every_s + (size_t)i * steps, step_s, steps * sizeof(double));
            if (rc == 0 && write_image(o->out, i, x, shape) != 0) {
                snprintf(err, sizeof err, "cannot write sample_%04d into %s: %s", i, o->out, strerror(errno));
                rc = -1;
            }
        }
        if (rc) fprintf(stderr, "mpqdm-run: %s\n", err);
    }
    const char *name = o->unet_step >= 0 ? "eps.f32" : "samples.f32";
    if (rc == 0) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", o->out, name);
        FILE *f = fopen(path, "wb");
        size_t n = elems * (size_t)count;
        int bad = !f || fwrite(all, sizeof(float), n, f) != n;
        if (f && fclose(f) != 0) bad = 1;
        if (bad) {
            fprintf(stderr, "mpqdm-run: cannot write %s: %s\n", path, strerror(errno));
            rc = -1;
        }
    }
    if (rc == 0) {
        if (o->bench && o->unet_step < 0) bench_report(m, call_s, every_s, count);
        const char *ext = shape[3] == 1 ? "pgm" : "ppm";
        if (o->unet_step >= 0)
            fprintf(stderr, "mpqdm-run: wrote %d UNet output%s at step %d to %s (%s)\n", count, count == 1 ? "" : "s",
                    o->unet_step, o->out, name);
        else if (count == 1)
            fprintf(stderr, "mpqdm-run: wrote 1 sample to %s (sample_0000.%s, %s)\n", o->out, ext, name);
        else
            fprintf(stderr, "mpqdm-run: wrote %d samples to %s (sample_0000.%s .. sample_%04d.%s, %s)\n", count,
                    o->out, ext, count - 1, ext, name);
    }
    free(all); free(call_s); free(step_s); free(every_s); free(eps);
    return rc ? EXIT_RUN : EXIT_OK;
}

int main(int argc, char **argv) {
    options o;
    int parsed = parse(argc, argv, &o);
    if (parsed) return parsed > 0 ? EXIT_OK : EXIT_INPUT;
    char err[1024];
    void *ctx = NULL;
#ifndef MPQ_STATIC_KERNELS
    char lib[4096];
    if (o.kernels) {
        snprintf(lib, sizeof lib, "%s", o.kernels);
    } else {
        const char *slash = strrchr(o.model, '/');
        int dir = slash ? (int)(slash - o.model) : 1;
        snprintf(lib, sizeof lib, "%.*s/kernels.so", dir, slash ? o.model : ".");
    }
    ctx = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (!ctx) {
        fprintf(stderr, "mpqdm-run: cannot load the kernels: %s; give the kernels.so of mpqdm compile with --kernels\n",
                dlerror());
        return EXIT_INPUT;
    }
    mpq_backend_bind(slot, ctx);
#else
    mpq_backend_init(1);
#endif
    mpq_model *m = NULL;
    int rc = EXIT_INPUT;
    mpq_open_options opt = {o.threads, MPQ_BOARD_NAME, (uint64_t)o.max_memory_mb << 20};
    if (mpq_open(o.model, resolve, ctx, &opt, &m, err, sizeof err) != 0) {
        fprintf(stderr, "mpqdm-run: %s: %s\n", o.model, err);
    } else if (mpq_check_cpu(m, err, sizeof err) != 0) {
        fprintf(stderr, "mpqdm-run: %s\n", err);
        rc = EXIT_RUN;
    } else if (o.steps && (uint32_t)o.steps != mpq_steps(m)) {
        fprintf(stderr, "mpqdm-run: --steps %d: %s was compiled for %u steps; compile it with mpqdm compile "
                "--steps %d\n", o.steps, o.model, mpq_steps(m), o.steps);
    } else if (o.unet_step >= 0 && (uint32_t)o.unet_step >= mpq_steps(m)) {
        fprintf(stderr, "mpqdm-run: --unet-step %d: %s has steps 0..%u\n", o.unet_step, o.model, mpq_steps(m) - 1);
    } else {
        rc = run(&o, m);
    }
    mpq_close(m);
    mpq_backend_stop();
#ifndef MPQ_STATIC_KERNELS
    dlclose(ctx);
#endif
    return rc;
}
