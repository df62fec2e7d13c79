/* The symbols TVM-generated CPU kernels need: parallel launch on a small persistent pthread pool,
 * the barrier, workspace, errors. The pool and the error sink are the library's only global mutable
 * state. */
#define _GNU_SOURCE
#include "mpq_runtime.h"

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>

#endif

/* Kernels built for an x86 host with amx_int8 use AMX tile state, which Linux grants only to a process
 * that asks (arch_prctl ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA): asked before main or on dlopen, so
 * every binary and module with these kernels has it. Refused on CPUs without AMX, whose kernels never
 * use it; mpq_check_cpu reports a refusal where the artifact needs it. 0 where granted. */
int mpq_request_amx_state(void) {
#if defined(__x86_64__) && defined(__linux__)
    return (int)syscall(SYS_arch_prctl, 0x1023, 18);
#else
    return -1;
#endif
}

__attribute__((constructor)) static void request_amx_state(void) { (void)mpq_request_amx_state(); }

#define MPQ_MAX_THREADS 64
#define MPQ_SPINS (1 << 15)  /* pause loops a worker spins before it sleeps (about a millisecond) */

/* C99 with the GCC/Clang atomic builtins */
#define LOAD(v, order) __atomic_load_n(&(v), order)
#define STORE(v, x) __atomic_store_n(&(v), x, __ATOMIC_SEQ_CST)

typedef int (*mpq_launch_fn)(mpq_parallel_lambda, void *, int);
typedef int (*mpq_barrier_fn)(int, mpq_parallel_env *);
typedef void *(*mpq_alloc_fn)(int, int, uint64_t, int, int);
typedef int (*mpq_free_fn)(int, int, void *);

/* Slots defined (weak) by statically linked kernel objects. */
extern void *__TVMBackendParallelLaunch __attribute__((weak));
extern void *__TVMBackendParallelBarrier __attribute__((weak));
extern void *__TVMBackendAllocWorkspace __attribute__((weak));
extern void *__TVMBackendFreeWorkspace __attribute__((weak));

/* A launch is a new generation: the caller publishes fn/cdata/num_task, then bumps `gen`; workers
 * spin on `gen` for a while and only then sleep on the condition variable, so that the ~200 short
 * launches of a UNet call do not each pay a futex wake-up (which cost more than the second core
 * gained). The caller spins on `pending`. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t go;
    pthread_t tid[MPQ_MAX_THREADS];
    int threads;                /* workers + the caller */
    int started;                /* workers running */
    unsigned long gen;          /* launch generation (atomic) */
    int stop;                   /* atomic */
    int sleepers;               /* workers waiting on `go` (atomic) */
    mpq_parallel_lambda fn;
    void *cdata;
    int num_task;
    int pending;                /* workers still in the current launch (atomic) */
    int status;                 /* atomic */
    /* barrier */
    int bar_count;
    unsigned long bar_gen;
    pthread_cond_t bar;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, {0}, 1, 0, 0, 0, 0,
          NULL, NULL, 0, 0, 0, 0, 0, PTHREAD_COND_INITIALIZER};

static void arena_release(void);

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
    __asm__ __volatile__("yield");
#endif
}

/* The next generation after `seen`, or `seen` when stopping. */
static unsigned long wait_launch(unsigned long seen) {
    for (int spins = 0;; spins++) {
        unsigned long g = LOAD(pool.gen, __ATOMIC_ACQUIRE);
        if (g != seen || LOAD(pool.stop, __ATOMIC_SEQ_CST)) return g;
        if (spins < MPQ_SPINS) {
            cpu_relax();
            continue;
        }
        pthread_mutex_lock(&pool.mu);
        __atomic_add_fetch(&pool.sleepers, 1, __ATOMIC_SEQ_CST);
        while (LOAD(pool.gen, __ATOMIC_SEQ_CST) == seen && !LOAD(pool.stop, __ATOMIC_SEQ_CST)) pthread_cond_wait(&pool.go, &pool.mu);
        __atomic_sub_fetch(&pool.sleepers, 1, __ATOMIC_SEQ_CST);
        pthread_mutex_unlock(&pool.mu);
        spins = 0;
    }
}

static void *worker(void *arg) {
    int id = (int)(intptr_t)arg;
    unsigned long seen = 0;
    for (;;) {
        seen = wait_launch(seen);
        if (LOAD(pool.stop, __ATOMIC_SEQ_CST)) break;
        int n = pool.num_task;
        int st = 0;
        if (id < n) {
            mpq_parallel_env env = {NULL, n};
            st = pool.fn(id, &env, pool.cdata);
        }
        if (st != 0) STORE(pool.status, st);
        __atomic_sub_fetch(&pool.pending, 1, __ATOMIC_RELEASE);
    }
    arena_release();
    return NULL;
}

static void wake_sleepers(void) {
    if (LOAD(pool.sleepers, __ATOMIC_SEQ_CST) == 0) return;   /* seq_cst against the sleeper's own check */
    pthread_mutex_lock(&pool.mu);
    pthread_cond_broadcast(&pool.go);
    pthread_mutex_unlock(&pool.mu);
}

static int parallel_launch(mpq_parallel_lambda fn, void *cdata, int num_task) {
    int n = num_task > 0 && num_task < pool.threads ? num_task : pool.threads;
    if (n <= 1 || pool.started == 0) {
        mpq_parallel_env env = {NULL, 1};
        return fn(0, &env, cdata);
    }
    pool.fn = fn;
    pool.cdata = cdata;
    pool.num_task = n;
    STORE(pool.status, 0);
    STORE(pool.pending, pool.started);
    __atomic_add_fetch(&pool.gen, 1, __ATOMIC_SEQ_CST);            /* seq_cst: publishes the fields above */
    wake_sleepers();
    mpq_parallel_env env = {NULL, n};
    int st = fn(0, &env, cdata);
    for (int spins = 0; LOAD(pool.pending, __ATOMIC_ACQUIRE) > 0; spins++) {
        if (spins < MPQ_SPINS) cpu_relax();
        else sched_yield();                    /* more threads than cores */
    }
    if (st == 0) st = LOAD(pool.status, __ATOMIC_SEQ_CST);
    return st;
}

static int parallel_barrier(int task_id, mpq_parallel_env *penv) {
    (void)task_id;
    pthread_mutex_lock(&pool.mu);
    unsigned long g = pool.bar_gen;
    if (++pool.bar_count == penv->num_task) {
        pool.bar_count = 0;
        pool.bar_gen++;
        pthread_cond_broadcast(&pool.bar);
    } else {
        while (g == pool.bar_gen) pthread_cond_wait(&pool.bar, &pool.mu);
    }
    pthread_mutex_unlock(&pool.mu);
    return 0;
}

/* Kernel temporaries of 1 KiB or more (TVM's workspace: a task's decoded weight tile, a padded
 * input, attention's score rows): a per-thread stack. A freed block is popped with every freed block
 * under it, so a block that lives across a parallel loop (attention's transposed keys) does not push
 * the loop's per-task blocks ever higher into cold memory: each task reuses the same, cached bytes.
 * The thousands of blocks a UNet call makes cost a few instructions each instead of an aligned malloc
 * and free. What the stack cannot hold (or nests deeper than WS_DEPTH) comes from the heap, and the
 * arena grows to the most a thread held at once the next time it is empty. */
#define WS_ALIGN 64
#define WS_DEPTH 64
static __thread struct {
    char *base;
    size_t cap, top, want;
    int depth;                          /* blocks on the stack */
    size_t start[WS_DEPTH];             /* their offsets, the low bit set once freed */
} arena;

static void arena_release(void) {
    free(arena.base);
    memset(&arena, 0, sizeof arena);
}

static void *workspace_alloc(int device_type, int device_id, uint64_t nbytes, int code_hint, int bits_hint) {
    (void)device_type; (void)device_id; (void)code_hint; (void)bits_hint;
    size_t n = ((size_t)(nbytes ? nbytes : 1) + WS_ALIGN - 1) / WS_ALIGN * WS_ALIGN;
    if (arena.depth == 0 && arena.want > arena.cap) {
        void *p = NULL;
        if (posix_memalign(&p, WS_ALIGN, arena.want) == 0) {
            free(arena.base);
            arena.base = p;
            arena.cap = arena.want;
        }
        arena.top = 0;
    }
    if (arena.cap - arena.top >= n && arena.depth < WS_DEPTH) {
        void *p = arena.base + arena.top;
        arena.start[arena.depth++] = arena.top;
        arena.top += n;
        return p;
    }
    if (arena.top + n > arena.want) arena.want = arena.top + n;
    void *p = NULL;
    return posix_memalign(&p, WS_ALIGN, n) == 0 ? p : NULL;
}

static int workspace_free(int device_type, int device_id, void *ptr) {
    (void)device_type; (void)device_id;
    char *c = ptr;
    if (arena.base == NULL || c < arena.base || c >= arena.base + arena.cap) {
        free(ptr);
        return 0;
    }
    size_t off = (size_t)(c - arena.base);
    for (int i = arena.depth - 1; i >= 0; i--) {
        if (arena.start[i] == off) {
            arena.start[i] |= 1;        /* offsets are multiples of WS_ALIGN: the low bit is free */
            break;
        }
    }
    while (arena.depth > 0 && (arena.start[arena.depth - 1] & 1))     /* pop what is freed on top */
        arena.top = arena.start[--arena.depth] & ~(size_t)1;
    return 0;
}

static mpq_error_sink error_sink;

void mpq_backend_error_sink(mpq_error_sink sink) { error_sink = sink; }

void TVMFFIErrorSetRaisedFromCStrParts(const char *kind, const char **parts, int32_t num_parts) {
    if (error_sink) {
        error_sink(kind, parts, num_parts);
        return;
    }
    fprintf(stderr, "kernel error (%s): ", kind ? kind : "?");
    for (int32_t i = 0; i < num_parts; i++) fputs(parts[i] ? parts[i] : "", stderr);
    fputc('\n', stderr);
}

int mpq_backend_start(int threads) {
    if (threads < 1) threads = 1;
    if (threads > MPQ_MAX_THREADS) threads = MPQ_MAX_THREADS;
    mpq_backend_stop();
    pool.threads = threads;
    STORE(pool.stop, 0);
    STORE(pool.gen, 0);     /* new workers have seen generation 0: none runs an earlier launch */
    for (int i = 1; i < threads; i++) {
        if (pthread_create(&pool.tid[i], NULL, worker, (void *)(intptr_t)i) != 0) {
            pool.threads = i;       /* run with the workers we got */
            break;
        }
        pool.started++;
    }
    return pool.threads;
}

void mpq_backend_stop(void) {
    pthread_mutex_lock(&pool.mu);
    STORE(pool.stop, 1);
    pthread_cond_broadcast(&pool.go);
    pthread_mutex_unlock(&pool.mu);
    for (int i = 1; i <= pool.started; i++) pthread_join(pool.tid[i], NULL);
    arena_release();            /* the caller's; each worker released its own */
    pool.started = 0;
    pool.threads = 1;
    STORE(pool.stop, 0);
}

static void fill(void **slot, void *fn) {
    if (slot != NULL) *slot = fn;
}

void mpq_backend_bind(mpq_slot_lookup lookup, void *ctx) {
    fill((void **)lookup(ctx, "__TVMBackendParallelLaunch"), (void *)(mpq_launch_fn)parallel_launch);
    fill((void **)lookup(ctx, "__TVMBackendParallelBarrier"), (void *)(mpq_barrier_fn)parallel_barrier);
    fill((void **)lookup(ctx, "__TVMBackendAllocWorkspace"), (void *)(mpq_alloc_fn)workspace_alloc);
    fill((void **)lookup(ctx, "__TVMBackendFreeWorkspace"), (void *)(mpq_free_fn)workspace_free);
}

static void *static_slot(void *ctx, const char *name) {
    (void)ctx;
    if (strcmp(name, "__TVMBackendParallelLaunch") == 0) return &__TVMBackendParallelLaunch;
    if (strcmp(name, "__TVMBackendParallelBarrier") == 0) return &__TVMBackendParallelBarrier;
    if (strcmp(name, "__TVMBackendAllocWorkspace") == 0) return &__TVMBackendAllocWorkspace;
    if (strcmp(name, "__TVMBackendFreeWorkspace") == 0) return &__TVMBackendFreeWorkspace;
    return NULL;
}

/* Statically linked kernels: the slots are this program's own (weak, NULL when no kernel uses one). */
int mpq_backend_init(int threads) {
    int n = mpq_backend_start(threads);
    mpq_backend_bind(static_slot, NULL);
    return n;
}
