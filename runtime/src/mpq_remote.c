/* Packed functions for TVM's stock RPC server (python -m tvm.exec.rpc_server), which can only load a
 * shared object and call what it exports. Two modules hold this file (runtime/Makefile):
 *   kernel-module  generated kernels + mpq_backend.c + this file: time_evaluator times the kernels
 *                  on our pool, the way mpqdm-run runs them
 *   bench-module   the whole runtime + a model's kernels and kernel table (MPQ_STATIC_KERNELS)
 *
 *   mpq_threads(n) -> int        our backend into the kernels' slots (TVM's loader put its own there),
 *                                our pool (re)started with n threads; returns the threads started
 *   mpq_cpu_info(out) -> int     out: uint8 tensor; "key=value" lines, NUL-terminated: model, features
 *                                (space separated), cpus, machine, emulated (0/1); returns the bytes
 *                                written before the NUL
 *   mpq_bench(artifact, out, err, threads, count, seed) -> int       bench module only
 *                                `mpqdm-run --bench --count count --seed seed --threads threads` on the
 *                                model.mpq in artifact (uint8 tensor), in this process; out (float64,
 *                                >= 5 + calls values): ms per step, arena bytes, artifact bytes, peak RSS
 *                                KB (VmHWM of this process), calls, then each call's ms per step.
 *                                0, or 1 with the message in err (uint8 tensor, NUL-terminated)
 *
 * ABI: mpq_ffi.h. A tensor argument is a DLTensor pointer (type index 7: over RPC) or a
 * tvm.runtime.Tensor object (70: from Python in this process); an int is type index 1. Arguments of
 * the wrong kind, and a kernel's errors, are raised as TVM errors when TVM is in the process
 * (libtvm_ffi is loaded RTLD_GLOBAL; the kernels' TVMFFIErrorSetRaisedFromCStrParts is bound to
 * mpq_backend.c's, -Bsymbolic, which hands them to sink() below), printed otherwise.
 */
#define _GNU_SOURCE
#include "mpq_runtime.h"
#include "mpq_util.h"

#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif

#define MAX_THREADS 64              /* mpq_backend.c's pool */

int __tvm_ffi_mpq_threads(void *self, const mpq_ffi_any *args, int32_t num_args, mpq_ffi_any *result);
int __tvm_ffi_mpq_cpu_info(void *self, const mpq_ffi_any *args, int32_t num_args, mpq_ffi_any *result);

/* libtvm_ffi's TVMFFIErrorSetRaisedFromCStr when TVM loaded this module (it is loaded RTLD_GLOBAL) */
typedef void (*set_raised_fn)(const char *kind, const char *message);
static set_raised_fn tvm_raise;
static char kernel_error[512];      /* the last kernel error */
static int benching;                /* mpq_bench running: kernel errors go into its message */

/* A kernel's error: TVM's error (the kernel returns non-zero next), or kept for mpq_bench. */
static void sink(const char *kind, const char **parts, int32_t num_parts) {
    size_t len = 0;
    kernel_error[0] = '\0';
    for (int32_t i = 0; i < num_parts && len + 1 < sizeof kernel_error; i++) {
        int k = snprintf(kernel_error + len, sizeof kernel_error - len, "%s", parts[i] ? parts[i] : "");
        len += k > 0 ? (size_t)k : 0;
    }
    if (tvm_raise && !benching) tvm_raise(kind ? kind : "RuntimeError", kernel_error);
    else fprintf(stderr, "kernel error (%s): %s\n", kind ? kind : "?", kernel_error);
}

__attribute__((constructor)) static void load(void) {
    void *p = dlsym(RTLD_DEFAULT, "TVMFFIErrorSetRaisedFromCStr");
    memcpy(&tvm_raise, &p, sizeof tvm_raise);
    mpq_backend_error_sink(sink);
}

/* Our workers run this file's code: stop them before the module is unloaded. */
__attribute__((destructor)) static void unload(void) { mpq_backend_stop(); }

/* A bad call of one of our functions: a ValueError in TVM (printed without TVM); returns -1. */
static int fail(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
static int fail(const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (tvm_raise) tvm_raise("ValueError", msg);
    else fprintf(stderr, "%s\n", msg);
    return -1;
}

static int set_int(mpq_ffi_any *result, int64_t v) {
    result->type_index = MPQ_FFI_INT;
    result->zero_padding = 0;
    result->v.v_int64 = v;
    return 0;
}

static int int_arg(const mpq_ffi_any *a, int64_t *v) {
    if (a->type_index != MPQ_FFI_INT) return 0;
    *v = a->v.v_int64;
    return 1;
}

/* The data of a compact CPU tensor argument of dtype (code, bits), and its element count; NULL if
 * the argument is anything else. */
static void *tensor_arg(const mpq_ffi_any *a, int code, int bits, size_t *n) {
    const mpq_dltensor *t = NULL;
    if (a->type_index == MPQ_FFI_TENSOR_PTR) t = a->v.v_ptr;
    else if (a->type_index == MPQ_FFI_TENSOR && a->v.v_ptr)        /* the DLTensor after the object header */
        t = (const mpq_dltensor *)((const char *)a->v.v_ptr + sizeof(mpq_ffi_object));
    if (!t || t->device.device_type != MPQ_DL_CPU || t->dtype.code != code || t->dtype.bits != bits ||
        t->dtype.lanes != 1 || t->ndim < 0)
        return NULL;
    size_t count = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->shape[d] < 0) return NULL;
        if (t->strides && t->shape[d] > 1 && t->strides[d] != (int64_t)count) return NULL;   /* not compact */
        count *= (size_t)t->shape[d];
    }
    static char empty[1];           /* an empty tensor may have no data */
    *n = count;
    return t->data ? (char *)t->data + t->byte_offset : (count ? NULL : empty);
}

int __tvm_ffi_mpq_threads(void *self, const mpq_ffi_any *args, int32_t num_args, mpq_ffi_any *result) {
    (void)self;
    int64_t n = 0;
    if (num_args != 1 || !int_arg(&args[0], &n) || n < 1)
        return fail("mpq_threads(n): n is the number of threads, an int >= 1");
    return set_int(result, mpq_backend_init(n > MAX_THREADS ? MAX_THREADS : (int)n));
}

/* ---- mpq_cpu_info --------------------------------------------------------------------------------- */

typedef struct {
    char model[256], features[4096];
    long implementer, part;         /* aarch64 "CPU implementer", "CPU part"; -1 if absent */
    int foreign;                    /* the lines are of another arch (qemu-user shows the host's file) */
} cpuinfo;

/* The first "model name", feature line (x86 "flags", aarch64 "Features"), implementer and part. */
static void read_cpuinfo(cpuinfo *c) {
#if defined(__aarch64__)
    const char *own = "Features", *other = "flags";
#else
    const char *own = "flags", *other = "Features";
#endif
    int has_own = 0, has_other = 0;
    *c = (cpuinfo){"", "", -1, -1, 0};
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[8192];
    while (f && fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (!colon) continue;
        char *end = colon, *val = colon + 1;
        while (end > line && (end[-1] == ' ' || end[-1] == '\t')) end--;
        *end = '\0';
        val += strspn(val, " \t");
        val[strcspn(val, "\n")] = '\0';
        if (strcmp(line, "model name") == 0 && !c->model[0]) snprintf(c->model, sizeof c->model, "%s", val);
        if (strcmp(line, own) == 0 && !has_own++) snprintf(c->features, sizeof c->features, "%s", val);
        if (strcmp(line, other) == 0) has_other = 1;
        if (strcmp(line, "CPU implementer") == 0 && c->implementer < 0) c->implementer = strtol(val, NULL, 0);
        if (strcmp(line, "CPU part") == 0 && c->part < 0) c->part = strtol(val, NULL, 0);
    }
    if (f) fclose(f);
    c->foreign = !has_own && has_other;
}

#if defined(__aarch64__) && defined(__linux__)
/* Linux's AT_HWCAP bits in order (asm/hwcap.h), named as /proc/cpuinfo "Features" names them */
static const char *const hwcap_names[32] = {
    "fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2", "crc32", "atomics", "fphp", "asimdhp", "cpuid",
    "asimdrdm", "jscvt", "fcma", "lrcpc", "dcpop", "sha3", "sm3", "sm4", "asimddp", "sha512", "sve", "asimdfhm",
    "dit", "uscat", "ilrcpc", "flagm", "ssbs", "sb", "paca", "pacg"};
#define HWCAP_CPUID_BIT 11
#define HWCAP2_I8MM_BIT 13

static const struct { long implementer, part; const char *name; } arm_cpus[] = {
    {0x41, 0xd03, "Cortex-A53"}, {0x41, 0xd05, "Cortex-A55"}, {0x41, 0xd07, "Cortex-A57"},
    {0x41, 0xd08, "Cortex-A72"}, {0x41, 0xd09, "Cortex-A73"}, {0x41, 0xd0a, "Cortex-A75"},
    {0x41, 0xd0b, "Cortex-A76"}, {0x41, 0xd0c, "Neoverse-N1"}, {0x41, 0xd0d, "Cortex-A77"},
    {0x41, 0xd41, "Cortex-A78"}, {0x41, 0xd42, "Cortex-A78AE"}, {0x41, 0xd44, "Cortex-X1"},
    {0x41, 0xd4b, "Cortex-A78C"}};

/* MIDR_EL1 when cpuinfo lacks the implementer and part (qemu-user, where the file is the host's):
 * sysfs if the kernel has it, else the register itself, which Linux (and qemu) emulate for EL0
 * when HWCAP_CPUID is set (Documentation/arch/arm64/cpu-feature-registers.rst). */
static void midr(cpuinfo *c) {
    unsigned long long v = 0;
    FILE *f = fopen("/sys/devices/system/cpu/cpu0/regs/identification/midr_el1", "r");
    int ok = f && fscanf(f, "%llx", &v) == 1;
    if (f) fclose(f);
    if (!ok && ((getauxval(AT_HWCAP) >> HWCAP_CPUID_BIT) & 1)) {
        unsigned long r;
        __asm__ volatile("mrs %0, midr_el1" : "=r"(r));
        v = r;
        ok = 1;
    }
    if (ok) {
        c->implementer = (long)((v >> 24) & 0xff);
        c->part = (long)((v >> 4) & 0xfff);
    }
}

static void arch_info(cpuinfo *c) {
    if (c->implementer < 0 || c->part < 0) midr(c);
    if (c->implementer >= 0 && c->part >= 0) {
        snprintf(c->model, sizeof c->model, "arm 0x%02lx:0x%03lx", c->implementer, c->part);
        for (size_t i = 0; i < sizeof arm_cpus / sizeof arm_cpus[0]; i++)
            if (arm_cpus[i].implementer == c->implementer && arm_cpus[i].part == c->part)
                snprintf(c->model, sizeof c->model, "%s", arm_cpus[i].name);
    } else if (c->foreign) {
        c->model[0] = '\0';                                 /* the host's model name */
    }
    if (c->features[0]) return;
    unsigned long hw = getauxval(AT_HWCAP);                 /* no "Features": the kernel's hwcaps */
    size_t len = 0;
    for (int b = 0; b < 32; b++)
        if ((hw >> b) & 1)
            len += (size_t)snprintf(c->features + len, sizeof c->features - len, "%s%s", len ? " " : "",
                                    hwcap_names[b]);
    if ((getauxval(AT_HWCAP2) >> HWCAP2_I8MM_BIT) & 1)
        snprintf(c->features + len, sizeof c->features - len, "%si8mm", len ? " " : "");
}
#else
static void arch_info(cpuinfo *c) { (void)c; }              /* x86: "model name" and "flags" as they are */
#endif

int __tvm_ffi_mpq_cpu_info(void *self, const mpq_ffi_any *args, int32_t num_args, mpq_ffi_any *result) {
    (void)self;
    size_t n = 0;
    char *out = num_args == 1 ? tensor_arg(&args[0], MPQ_DL_UINT, 8, &n) : NULL;
    if (!out || n == 0) return fail("mpq_cpu_info(out): out is a uint8 tensor on the CPU (8192 bytes hold it all)");
    cpuinfo c;
    read_cpuinfo(&c);
    arch_info(&c);
    struct utsname u;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int len = snprintf(out, n, "model=%s\nfeatures=%s\ncpus=%ld\nmachine=%s\nemulated=%d\n", c.model, c.features,
                       cpus < 1 ? 1 : cpus, uname(&u) == 0 ? u.machine : "", c.foreign);
    return set_int(result, len < 0 ? 0 : ((size_t)len < n ? len : (int64_t)n - 1));
}

/* ---- mpq_bench (bench module) ---------------------------------------------------------------------- */
#ifdef MPQ_STATIC_KERNELS
int __tvm_ffi_mpq_bench(void *self, const mpq_ffi_any *args, int32_t num_args, mpq_ffi_any *result);

static int errf(char *err, size_t errlen, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static int errf(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* The sampling loop of mpqdm-run --bench: count samples from seeded noise, every call profiled. */
static int sample(mpq_model *m, double *out, int count, unsigned long long seed, char *err, size_t errlen) {
    int64_t shape[4];
    mpq_input_shape(m, shape);
    size_t elems = (size_t)(shape[1] * shape[2] * shape[3]);
    uint32_t calls = mpq_calls(m), steps = mpq_steps(m);
    float *x = malloc(elems * (size_t)count * sizeof(float));
    double *call_s = calloc(calls ? calls : 1, sizeof(double)), *step_s = calloc(steps, sizeof(double));
    double total = 0;
    int rc = x && call_s && step_s ? 0 : errf(err, errlen, "out of memory for %d samples; give a smaller count", count);
    if (rc == 0) {
        mpq_noise(seed, x, elems * (size_t)count);
        mpq_profile(m, call_s);
    }
    for (int i = 0; i < count && rc == 0; i++) {
        rc = mpq_sample(m, x + (size_t)i * elems, step_s, err, errlen);
        for (uint32_t s = 0; s < steps; s++) total += step_s[s];
    }
    mpq_profile(m, NULL);
    if (rc == 0) {
        double per = steps * (double)count;
        out[0] = 1e3 * total / per;
        out[1] = (double)mpq_arena_bytes(m);
        out[2] = (double)mpq_file_bytes(m);
        out[3] = mpq_peak_rss_kb();
        out[4] = calls;
        for (uint32_t i = 0; i < calls; i++) out[5 + i] = 1e3 * call_s[i] / per;
    }
    free(x);
    free(call_s);
    free(step_s);
    return rc;
}

static int bench(const void *file, size_t size, double *out, size_t n_out, int64_t threads, int64_t count,
                 int64_t seed, char *err, size_t errlen) {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN), most = cpus < 1 ? 1 : (cpus < MAX_THREADS ? cpus : MAX_THREADS);
    if (threads < 1 || threads > most)
        return errf(err, errlen, "threads %lld: give 1..%ld (the CPUs of this machine, at most %d)", (long long)threads,
                     most, MAX_THREADS);
    if (count < 1 || count > 1000000) return errf(err, errlen, "count %lld: give 1..1000000", (long long)count);
    if (seed < 0 || seed > 0x7fffffffL) return errf(err, errlen, "seed %lld: give 0..2147483647", (long long)seed);
    mpq_backend_init(1);            /* our backend into the slots */
    mpq_open_options opt = {(int)threads, MPQ_BOARD_NAME, (uint64_t)(MPQ_BOARD_MEMORY_MB) << 20};
    mpq_model *m = NULL;
    int rc = mpq_open_memory(file, size, mpq_static_kernel, NULL, &opt, &m, err, errlen);
    if (rc == 0) rc = mpq_check_cpu(m, err, errlen);
    if (rc == 0 && n_out < 5 + (size_t)mpq_calls(m))
        rc = errf(err, errlen, "out holds %zu values; this model needs 5 + %u (its calls)", n_out, mpq_calls(m));
    if (rc == 0) rc = sample(m, out, (int)count, (unsigned long long)seed, err, errlen);
    mpq_close(m);
    mpq_backend_stop();
    return rc;
}

int __tvm_ffi_mpq_bench(void *self, const mpq_ffi_any *args, int32_t num_args, mpq_ffi_any *result) {
    (void)self;
    size_t size = 0, n_out = 0, n_err = 0;
    int64_t threads = 0, count = 0, seed = 0;
    const void *file = num_args == 6 ? tensor_arg(&args[0], MPQ_DL_UINT, 8, &size) : NULL;
    double *out = num_args == 6 ? tensor_arg(&args[1], MPQ_DL_FLOAT, 64, &n_out) : NULL;
    char *err = num_args == 6 ? tensor_arg(&args[2], MPQ_DL_UINT, 8, &n_err) : NULL;
    if (!file || !out || !err || n_err == 0 || !int_arg(&args[3], &threads) || !int_arg(&args[4], &count) ||
        !int_arg(&args[5], &seed))
        return fail("mpq_bench(artifact, out, err, threads, count, seed): artifact a uint8 tensor (model.mpq), out "
                    "a float64 tensor of 5 + calls values, err a uint8 tensor, then three ints");
    char msg[1024];
    kernel_error[0] = '\0';
    benching = 1;
    int rc = bench(file, size, out, n_out, threads, count, seed, msg, sizeof msg);
    benching = 0;
    if (rc && kernel_error[0]) snprintf(err, n_err, "%s (kernel error: %s)", msg, kernel_error);
    else if (rc) snprintf(err, n_err, "%s", msg);
    return set_int(result, rc ? 1 : 0);
}
#endif
