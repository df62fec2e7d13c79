/* What mpqdm-run (mpq_run.c) and the bench module (mpq_remote.c) share: the seeded noise, the peak
 * RSS and, in builds with the kernels linked in (MPQ_STATIC_KERNELS), the kernel table's lookup. */
#ifndef MPQ_UTIL_H
#define MPQ_UTIL_H

#include <stddef.h>

#include "mpq_runtime.h"

/* n standard normals from `seed`: xoshiro256** seeded by splitmix64, Box-Muller (not torch's). */
void mpq_noise(unsigned long long seed, float *x, size_t n);

/* Peak resident memory of this process image in KB (VmHWM; ru_maxrss where /proc is missing). */
double mpq_peak_rss_kb(void);

#ifdef MPQ_STATIC_KERNELS
/* mpq_kernel_table: the generated kernel_table.c (backend_tvm/build.py kernel_table()). */
typedef struct { const char *name; mpq_kernel_fn fn; } mpq_kernel_entry;
extern const mpq_kernel_entry mpq_kernel_table[];

/* A resolver for mpq_open: the table's kernel of that symbol, NULL if none (ctx unused). */
mpq_kernel_fn mpq_static_kernel(void *ctx, const char *sym);
#endif

#endif
