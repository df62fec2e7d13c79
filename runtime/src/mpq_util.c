/* Shared by mpqdm-run and the bench module (mpq_util.h). */
#define _POSIX_C_SOURCE 200809L
#include "mpq_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

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

void mpq_noise(unsigned long long seed, float *x, size_t n) {
    rng r;
    seed_rng(&r, seed);
    for (size_t i = 0; i < n; i += 2) {
        double u1 = ((double)(next(&r) >> 11) + 1.0) / 9007199254740993.0, u2 = (double)(next(&r) >> 11) / 9007199254740992.0;
        double rad = sqrt(-2.0 * log(u1));
        x[i] = (float)(rad * cos(6.283185307179586 * u2));
        if (i + 1 < n) x[i + 1] = (float)(rad * sin(6.283185307179586 * u2));
    }
}

/* VmHWM, not getrusage's ru_maxrss: that survives execve, so a binary started by a big parent would
   report the parent's peak. */
double mpq_peak_rss_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmHWM:", 6) == 0) kb = atof(line + 6);
    if (f) fclose(f);
    if (kb < 0) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        kb = (double)ru.ru_maxrss;
    }
    return kb;
}

#ifdef MPQ_STATIC_KERNELS
mpq_kernel_fn mpq_static_kernel(void *ctx, const char *sym) {
    (void)ctx;
    for (const mpq_kernel_entry *e = mpq_kernel_table; e->name; e++)
        if (strcmp(e->name, sym) == 0) return e->fn;
    return NULL;
}
#endif
