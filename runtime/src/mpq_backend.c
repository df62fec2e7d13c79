/* The few symbols TVM-generated CPU kernels need: parallel launch, workspace, errors. */
#define _POSIX_C_SOURCE 200112L
#include "mpq_ffi.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define MPQ_MAX_THREADS 64

typedef int (*mpq_launch_fn)(mpq_parallel_lambda, void *, int);

/* Slots defined (weak) by the generated objects; declared weak here so a program whose kernels
 * need no parallel loop still links. */
extern void *__TVMBackendParallelLaunch __attribute__((weak));
extern void *__TVMBackendAllocWorkspace __attribute__((weak));
extern void *__TVMBackendFreeWorkspace __attribute__((weak));

static int g_threads = 1;

typedef struct {
    mpq_parallel_lambda fn;
    void *cdata;
    mpq_parallel_env env;
    int task_id;
    int status;
} mpq_task;

static void *mpq_task_run(void *arg) {
    mpq_task *t = (mpq_task *)arg;
    t->status = t->fn(t->task_id, &t->env, t->cdata);
    return NULL;
}

static int mpq_parallel_launch(mpq_parallel_lambda fn, void *cdata, int num_task) {
    int n = num_task > 0 ? num_task : g_threads;
    if (n > MPQ_MAX_THREADS) n = MPQ_MAX_THREADS;
    mpq_task tasks[MPQ_MAX_THREADS];
    pthread_t threads[MPQ_MAX_THREADS];
    int started[MPQ_MAX_THREADS] = {0};
    for (int i = 0; i < n; i++) {
        tasks[i] = (mpq_task){fn, cdata, {NULL, n}, i, 0};
    }
    for (int i = 1; i < n; i++) {
        started[i] = pthread_create(&threads[i], NULL, mpq_task_run, &tasks[i]) == 0;
        if (!started[i]) mpq_task_run(&tasks[i]);
    }
    mpq_task_run(&tasks[0]);
    int status = tasks[0].status;
    for (int i = 1; i < n; i++) {
        if (started[i]) pthread_join(threads[i], NULL);
        if (tasks[i].status != 0) status = tasks[i].status;
    }
    return status;
}

typedef void *(*mpq_alloc_fn)(int, int, uint64_t, int, int);
typedef int (*mpq_free_fn)(int, int, void *);

/* Kernel temporaries of 1 KiB or more. (The model runtime serves these from its arena.) */
static void *mpq_workspace_alloc(int device_type, int device_id, uint64_t nbytes, int code_hint, int bits_hint) {
    (void)device_type; (void)device_id; (void)code_hint; (void)bits_hint;
    void *p = NULL;
    return posix_memalign(&p, 64, (size_t)nbytes) == 0 ? p : NULL;
}

static int mpq_workspace_free(int device_type, int device_id, void *ptr) {
    (void)device_type; (void)device_id;
    free(ptr);
    return 0;
}

void TVMFFIErrorSetRaisedFromCStrParts(const char *kind, const char **parts, int32_t num_parts) {
    fprintf(stderr, "kernel error (%s): ", kind ? kind : "?");
    for (int32_t i = 0; i < num_parts; i++) fputs(parts[i] ? parts[i] : "", stderr);
    fputc('\n', stderr);
}

void mpq_backend_init(int threads) {
    g_threads = threads > 0 ? threads : 1;
    if (&__TVMBackendParallelLaunch != NULL) __TVMBackendParallelLaunch = (void *)(mpq_launch_fn)mpq_parallel_launch;
    if (&__TVMBackendAllocWorkspace != NULL) __TVMBackendAllocWorkspace = (void *)(mpq_alloc_fn)mpq_workspace_alloc;
    if (&__TVMBackendFreeWorkspace != NULL) __TVMBackendFreeWorkspace = (void *)(mpq_free_fn)mpq_workspace_free;
}
