/* mpqdm-run: DDIM sampling (or single UNet calls) from an artifact, images out.
 *
 * mpqdm-run MODEL [--steps N] [--seed S] [--count N] [--out DIR] [--noise FILE] [--threads T]
 *           [--kernels LIB.so] [--unet-step S] [--bench]
 * --noise FILE: raw little-endian float32 NHWC noise, count x H x W x C (count from the size);
 *   otherwise the noise comes from --seed (xoshiro256** + Box-Muller: not torch's generator).
 * Writes DIR/samples.f32 (raw float32 NHWC, all samples) and DIR/sample_NNNN.pgm (.ppm for 3
 * channels); with --unet-step S, one UNet call per noise sample at step S into DIR/eps.f32.
 * Built with MPQ_STATIC_KERNELS the kernels are linked in (mpq_kernel_table); otherwise they are
 * loaded from --kernels (default: kernels.so beside MODEL).
 */
#define _POSIX_C_SOURCE 200809L
#include "mpq_runtime.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#ifdef MPQ_STATIC_KERNELS
typedef struct { const char *name; mpq_kernel_fn fn; } mpq_kernel_entry;
extern const mpq_kernel_entry mpq_kernel_table[];

static mpq_kernel_fn resolve(void *ctx, const char *sym) {
    (void)ctx;
    for (const mpq_kernel_entry *e = mpq_kernel_table; e->name; e++)
        if (strcmp(e->name, sym) == 0) return e->fn;
    return NULL;
}
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
    unsigned long long seed;
} options;

static int usage(const char *why) {
    fprintf(stderr, "mpqdm-run: %s\nusage: mpqdm-run MODEL [--steps N] [--seed S] [--count N] [--out DIR] "
            "[--noise FILE] [--threads T] [--kernels LIB.so] [--unet-step S] [--bench]\n", why);
    return 2;
}

static int parse_int(const char *s, long lo, long hi, long *v) {
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (errno || *end || end == s || x < lo || x > hi) return -1;
    *v = x;
    return 0;
}

static int parse(int argc, char **argv, options *o) {
    *o = (options){NULL, "mpqdm-out", NULL, NULL, 0, 0, 1, 0, -1, 0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        long v;
        if (a[0] != '-') {
            if (o->model) return usage("more than one MODEL given");
            o->model = a;
        } else if (strcmp(a, "--bench") == 0) {
            o->bench = 1;
        } else if (i + 1 >= argc) {
            return usage("an option is missing its value");
        } else if (strcmp(a, "--out") == 0) { o->out = argv[++i];
        } else if (strcmp(a, "--noise") == 0) { o->noise = argv[++i];
        } else if (strcmp(a, "--kernels") == 0) { o->kernels = argv[++i];
        } else if (strcmp(a, "--seed") == 0) {
            if (parse_int(argv[++i], 0, 0x7fffffffL, &v)) return usage("--seed takes an integer >= 0");
            o->seed = (unsigned long long)v;
        } else if (strcmp(a, "--steps") == 0 || strcmp(a, "--count") == 0 || strcmp(a, "--threads") == 0 ||
                   strcmp(a, "--unet-step") == 0) {
            if (parse_int(argv[++i], a[2] == 'u' ? 0 : 1, 1000000, &v)) return usage("a count must be a positive integer");
            if (a[2] == 's') o->steps = (int)v;
            else if (a[2] == 'c') o->count = (int)v;
            else if (a[2] == 't') o->threads = (int)v;
            else o->unet_step = (int)v;
        } else {
            return usage("unknown option");
        }
    }
    return o->model ? 0 : usage("MODEL is required");
}

/* xoshiro256** seeded by splitmix64; normals by Box-Muller */
typedef struct { unsigned long long s[4]; } rng;

static unsigned long long rotl(unsigned long long x, int k) { return (x << k) | (x >> (64 - k)); }

static unsigned long long next(rng *r) {
    unsigned long long *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t; s[3] = rotl(s[3], 45);
    return out;
}

static void seed_rng(rng *r, unsigned long long seed) {
    for (int i = 0; i < 4; i++) {
        unsigned long long z = (seed += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        r->s[i] = z ^ (z >> 31);
    }
}

static void normals(rng *r, float *x, size_t n) {
    for (size_t i = 0; i < n; i += 2) {
        double u1 = ((double)(next(r) >> 11) + 1.0) / 9007199254740993.0, u2 = (double)(next(r) >> 11) / 9007199254740992.0;
        double rad = sqrt(-2.0 * log(u1));
        x[i] = (float)(rad * cos(6.283185307179586 * u2));
        if (i + 1 < n) x[i + 1] = (float)(rad * sin(6.283185307179586 * u2));
    }
}

static float *read_noise(const char *path, size_t elems, int *count) {
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "mpqdm-run: cannot open %s: %s\n", path, strerror(errno)); return NULL; }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (size <= 0 || (size_t)size % (elems * 4)) {
        fprintf(stderr, "mpqdm-run: %s holds %ld bytes, not a multiple of one sample (%zu float32)\n", path, size, elems);
        fclose(f);
        return NULL;
    }
    int n = (int)((size_t)size / (elems * 4));
    if (*count && *count != n) {
        fprintf(stderr, "mpqdm-run: %s holds %d samples, --count says %d\n", path, n, *count);
        fclose(f);
        return NULL;
    }
    *count = n;
    float *x = malloc((size_t)size);
    if (x && fread(x, 1, (size_t)size, f) != (size_t)size) { free(x); x = NULL; }
    fclose(f);
    return x;
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

static void bench_report(const mpq_model *m, const double *call_s, const double *step_s, int runs) {
    uint32_t n = mpq_calls(m), steps = mpq_steps(m);
    double total = 0;
    for (uint32_t s = 0; s < steps; s++) total += step_s[s];
    printf("per step: %.3f ms (mean of %u steps x %d samples)\n", 1e3 * total / (steps * (double)runs), steps, runs);
    printf("%-6s %-28s %-40s %10s\n", "call", "kernel", "op", "ms/call");
    for (uint32_t i = 0; i < n; i++)
        printf("%-6u %-28s %-40s %10.4f\n", i, mpq_call_kernel(m, i), mpq_call_op(m, i),
               1e3 * call_s[i] / (steps * (double)runs));
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("arena %.1f KB, artifact %.1f KB, peak RSS %.1f MB\n", mpq_arena_bytes(m) / 1024.0,
           mpq_file_bytes(m) / 1024.0, ru.ru_maxrss / 1024.0);
}

static int run(const options *o, mpq_model *m) {
    char err[1024];
    int64_t shape[4];
    mpq_input_shape(m, shape);
    size_t elems = (size_t)(shape[1] * shape[2] * shape[3]);
    int count = o->count;
    float *all = o->noise ? read_noise(o->noise, elems, &count) : NULL;
    if (o->noise && !all) return 1;
    if (!o->noise) {
        count = count ? count : 1;
        all = malloc(elems * (size_t)count * sizeof(float));
        if (!all) return 1;
        rng r;
        seed_rng(&r, o->seed);
        normals(&r, all, elems * (size_t)count);
    }
    if (mkdir(o->out, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "mpqdm-run: cannot create %s: %s\n", o->out, strerror(errno));
        free(all);
        return 1;
    }
    uint32_t steps = mpq_steps(m);
    double *call_s = calloc(mpq_calls(m), sizeof(double)), *step_s = calloc(steps, sizeof(double));
    double *acc_s = calloc(steps, sizeof(double));
    float *eps = malloc(elems * sizeof(float));
    int rc = (call_s && step_s && acc_s && eps) ? 0 : 1;
    if (o->bench) mpq_profile(m, call_s);
    for (int i = 0; i < count && rc == 0; i++) {
        float *x = all + (size_t)i * elems;
        if (o->unet_step >= 0) {
            rc = mpq_unet(m, x, (float)mpq_timestep(m, (uint32_t)o->unet_step), (uint32_t)o->unet_step, eps, err,
                          sizeof err);
            if (rc == 0) memcpy(x, eps, elems * sizeof(float));
        } else {
            rc = mpq_sample(m, x, step_s, err, sizeof err);
            for (uint32_t s = 0; s < steps; s++) acc_s[s] += step_s[s];
            if (rc == 0 && write_image(o->out, i, x, shape) != 0) {
                snprintf(err, sizeof err, "cannot write an image into %s", o->out);
                rc = -1;
            }
        }
        if (rc) fprintf(stderr, "mpqdm-run: %s\n", err);
    }
    if (rc == 0) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", o->out, o->unet_step >= 0 ? "eps.f32" : "samples.f32");
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(all, sizeof(float), elems * (size_t)count, f) != elems * (size_t)count || fclose(f) != 0) {
            fprintf(stderr, "mpqdm-run: cannot write %s\n", path);
            rc = 1;
        }
        if (o->bench && o->unet_step < 0) bench_report(m, call_s, acc_s, count);
    }
    free(all); free(call_s); free(step_s); free(acc_s); free(eps);
    return rc ? 1 : 0;
}

int main(int argc, char **argv) {
    options o;
    if (parse(argc, argv, &o)) return 2;
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
    if (!ctx) { fprintf(stderr, "mpqdm-run: cannot load the kernels: %s\n", dlerror()); return 1; }
    mpq_backend_bind(slot, ctx);
#else
    mpq_backend_init(1);
#endif
    mpq_model *m = NULL;
    int rc = 1;
    if (mpq_open(o.model, resolve, ctx, o.threads, &m, err, sizeof err) != 0) {
        fprintf(stderr, "mpqdm-run: %s: %s\n", o.model, err);
    } else if (mpq_check_cpu(m, err, sizeof err) != 0) {
        fprintf(stderr, "mpqdm-run: %s\n", err);
    } else if (o.steps && (uint32_t)o.steps != mpq_steps(m)) {
        fprintf(stderr, "mpqdm-run: %s was compiled for %u steps, not %d; compile it with mpqdm compile --steps %d\n",
                o.model, mpq_steps(m), o.steps, o.steps);
    } else if (o.unet_step >= 0 && (uint32_t)o.unet_step >= mpq_steps(m)) {
        fprintf(stderr, "mpqdm-run: --unet-step %d is outside 0..%u\n", o.unet_step, mpq_steps(m) - 1);
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
