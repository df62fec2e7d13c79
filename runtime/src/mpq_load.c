/* The artifact loader: maps or copies the file, checks the header (checksum first), every table, offset
 * and size before use, builds the calls' kernel arguments and allocates the arena; mpq_close frees it
 * all. Every failure formats its message before it frees anything, then frees all it allocated. */
#define _POSIX_C_SOURCE 200809L
#include "mpq_model_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int mpq_error_set(char *err, size_t n, const char *fmt, ...) {
    if (err && n) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, n, fmt, ap);
        va_end(ap);
        for (char *c = err; *c; c++)          /* one printable line, whatever names the file holds */
            if ((unsigned char)*c < 0x20 || *c == 0x7f) *c = '?';
    }
    return -1;
}

/* CRC-32 of zlib (and of Python's zlib.crc32, which the writer uses): the IEEE 802.3 polynomial in
 * its reflected form 0xEDB88320, initial value and final xor 0xFFFFFFFF, one table lookup per byte.
 * The 1 KiB table is built on the caller's stack (2,048 shifts, once per checksum), so there is no
 * shared state. Test vector (test_loader.c checks it): "123456789" -> 0xCBF43926. */
static void crc32_table(uint32_t table[256]) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        table[i] = c;
    }
}

static uint32_t crc32_run(const uint32_t table[256], uint32_t crc, const uint8_t *p, size_t n) {
    crc = ~crc;
    for (size_t i = 0; i < n; i++) crc = table[(crc ^ p[i]) & 0xFFu] ^ (crc >> 8);
    return ~crc;
}

uint32_t mpq_crc32_update(uint32_t crc, const void *data, size_t n) {
    uint32_t table[256];
    crc32_table(table);
    return crc32_run(table, crc, data, n);
}

uint32_t mpq_checksum_compute(const void *file, size_t size) {
    static const uint8_t zero[4] = {0, 0, 0, 0};
    const uint8_t *p = file;
    const size_t at = offsetof(mpq_art_header, checksum), end = at + sizeof zero;
    uint32_t table[256];
    crc32_table(table);
    if (size < end) return crc32_run(table, 0, p, size);       /* no checksum field: not an artifact */
    uint32_t crc = crc32_run(table, 0, p, at);
    crc = crc32_run(table, crc, zero, sizeof zero);
    return crc32_run(table, crc, p + end, size - end);
}

/* off + count * elem <= limit, without overflow */
static int fits(uint64_t off, uint64_t count, uint64_t elem, uint64_t limit) {
    if (off > limit) return 0;
    if (elem && count > (limit - off) / elem) return 0;
    return 1;
}

static size_t dtype_size(uint8_t dt) { return dt == MPQ_DT_UINT8 ? 1 : 4; }

static mpq_dldtype dl_dtype(uint8_t dt) {
    switch (dt) {
    case MPQ_DT_FLOAT32: return (mpq_dldtype){MPQ_DL_FLOAT, 32, 1};
    case MPQ_DT_UINT8: return (mpq_dldtype){MPQ_DL_UINT, 8, 1};
    case MPQ_DT_INT32: return (mpq_dldtype){MPQ_DL_INT, 32, 1};
    default: return (mpq_dldtype){MPQ_DL_UINT, 32, 1};
    }
}

static const char *string_at(const mpq_model *m, uint32_t off, uint32_t len) {
    const mpq_art_header *h = m->h;
    if (!fits(off, (uint64_t)len + 1, 1, h->strings_bytes)) return NULL;
    const char *s = (const char *)m->file + h->strings_offset + off;
    if (s[len] != '\0' || memchr(s, '\0', len) != NULL) return NULL;
    return s;
}

static int read_file(mpq_model *m, const char *path, char *err, size_t n) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return mpq_error_set(err, n, "cannot open it: %s; check the path", strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        mpq_error_set(err, n, "not a regular file; give the path of a model.mpq");
        close(fd);
        return -1;
    }
    m->size = (size_t)st.st_size;
    if (m->size < sizeof(mpq_art_header)) {
        mpq_error_set(err, n, "truncated (%zu bytes, the header alone is %zu); copy the whole file again or "
                      "recompile it", m->size, sizeof(mpq_art_header));
        close(fd);
        return -1;
    }
    void *p = mmap(NULL, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p != MAP_FAILED) {
        m->file = p;
        m->mapped = 1;
    } else {                                    /* no mmap: read it into an aligned buffer */
        void *buf = NULL;
        size_t got = 0;
        if (posix_memalign(&buf, 64, m->size) != 0) {
            mpq_error_set(err, n, "out of memory reading it (%zu bytes)", m->size);
            close(fd);
            return -1;
        }
        while (got < m->size) {
            ssize_t r = read(fd, (char *)buf + got, m->size - got);
            if (r <= 0) break;
            got += (size_t)r;
        }
        if (got != m->size) {
            mpq_error_set(err, n, "cannot read it (%zu of %zu bytes read)", got, m->size);
            free(buf);
            close(fd);
            return -1;
        }
        m->file = buf;
    }
    close(fd);
    return 0;
}

/* What is wrong with a board name field, or NULL: it must hold 1 to MPQ_ART_BOARD_LEN - 1 characters
 * of [A-Za-z0-9._-], then NULs to its end. */
static const char *board_name_problem(const char *b) {
    size_t len = 0;
    while (len < MPQ_ART_BOARD_LEN && b[len] != '\0') {
        char c = b[len++];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-'))
            return "a character outside [A-Za-z0-9._-]";
    }
    if (len == 0) return "empty";
    if (len == MPQ_ART_BOARD_LEN) return "not NUL-terminated";
    for (size_t i = len; i < MPQ_ART_BOARD_LEN; i++)
        if (b[i] != '\0') return "not NUL-padded";
    return NULL;
}

static double mib(uint64_t bytes) { return (double)bytes / (1024.0 * 1024.0); }

static int check_header(mpq_model *m, const mpq_open_options *o, char *err, size_t n) {
    const mpq_art_header *h = (const mpq_art_header *)m->file;
    m->h = h;
    if (memcmp(h->magic, MPQ_ARTIFACT_MAGIC, MPQ_ARTIFACT_MAGIC_LEN) != 0)
        return mpq_error_set(err, n, "not an mpqdm artifact (wrong magic); give the model.mpq that mpqdm compile "
                             "wrote");
    if (h->version != MPQ_ARTIFACT_VERSION)
        return mpq_error_set(err, n, "artifact version %u; this runtime reads version %d: recompile it with mpqdm "
                             "compile", h->version, MPQ_ARTIFACT_VERSION);
    if (h->header_size != sizeof(mpq_art_header))
        return mpq_error_set(err, n, "header size %u, expected %zu: recompile it with mpqdm compile", h->header_size,
                             sizeof(mpq_art_header));
    if (h->file_size != m->size)
        return mpq_error_set(err, n, "file is %zu bytes, its header says %llu (truncated or appended); copy the whole "
                             "file again or recompile it", m->size, (unsigned long long)h->file_size);
    uint32_t computed = mpq_checksum_compute(m->file, m->size);
    if (computed != h->checksum)
        return mpq_error_set(err, n, "checksum mismatch: the file is corrupted (stored 0x%08x, computed 0x%08x); "
                             "recompile it with mpqdm compile", h->checksum, computed);
    if (h->flags != 0 || h->reserved != 0)
        return mpq_error_set(err, n, "reserved header field %s is 0x%08x, expected 0 (written by another version of "
                             "mpqdm?): recompile it with mpqdm compile", h->flags ? "flags" : "reserved",
                             h->flags ? h->flags : h->reserved);
    uint64_t sz = m->size;
    if (!fits(h->tensors_offset, h->n_tensors, sizeof(mpq_art_tensor), sz) ||
        !fits(h->kernels_offset, h->n_kernels, sizeof(mpq_art_kernel), sz) ||
        !fits(h->calls_offset, h->n_calls, sizeof(mpq_art_call), sz) ||
        !fits(h->args_offset, h->n_args, sizeof(mpq_art_arg), sz) ||
        !fits(h->strings_offset, h->strings_bytes, 1, sz) || !fits(h->sampler_offset, h->sampler_bytes, 1, sz) ||
        !fits(h->data_offset, h->data_bytes, 1, sz))
        return mpq_error_set(err, n, "a section lies outside the file");
    if ((h->tensors_offset | h->kernels_offset | h->calls_offset | h->args_offset | h->sampler_offset) % 8 ||
        h->data_offset % MPQ_ARTIFACT_ALIGN)
        return mpq_error_set(err, n, "a section is misaligned");
    if (h->n_steps == 0 || h->n_steps > 100000) return mpq_error_set(err, n, "step count %u out of range", h->n_steps);
    if (h->n_calls == 0 || h->n_calls > (1u << 20) || h->n_tensors > (1u << 20))
        return mpq_error_set(err, n, "call or tensor count out of range");
    if (h->arena_bytes > ((uint64_t)1 << 40)) return mpq_error_set(err, n, "arena size out of range");
    if (memchr(h->board, '\0', sizeof h->board) == NULL || memchr(h->arch, '\0', sizeof h->arch) == NULL ||
        memchr(h->features, '\0', sizeof h->features) == NULL)
        return mpq_error_set(err, n, "unterminated board, arch or features field");
    const char *problem = board_name_problem(h->board);
    if (problem)                    /* the field is NUL-terminated (checked above) */
        return mpq_error_set(err, n, "bad board name '%s' (%s): a board name is 1 to %d characters of "
                             "[A-Za-z0-9._-], NUL-padded; recompile it with mpqdm compile --board NAME", h->board,
                             problem, MPQ_ART_BOARD_LEN - 1);
    memcpy(m->board, h->board, sizeof h->board);
    m->board[sizeof h->board] = '\0';
    if (o->board && o->board[0] && strcmp(m->board, o->board) != 0)
        return mpq_error_set(err, n, "compiled for board '%s', but this binary was built for board '%s': rebuild the "
                             "binary for the model's board (mpqdm build DIR --board %s) or compile the model for %s",
                             m->board, o->board, m->board, o->board);
    if (o->max_arena_bytes && h->arena_bytes > o->max_arena_bytes)
        return mpq_error_set(err, n, "the arena needs %llu bytes (%.1f MiB), above the memory limit of %llu bytes "
                             "(%.1f MiB): raise the limit (mpqdm-run --max-memory-mb) if the board has the memory, "
                             "or compile a smaller model", (unsigned long long)h->arena_bytes, mib(h->arena_bytes),
                             (unsigned long long)o->max_arena_bytes, mib(o->max_arena_bytes));
    m->tensors = (const mpq_art_tensor *)(m->file + h->tensors_offset);
    return 0;
}

static int check_tensors(mpq_model *m, char *err, size_t n) {
    const mpq_art_header *h = m->h;
    m->shapes = calloc(h->n_tensors ? h->n_tensors * 4 : 1, sizeof(int64_t));
    if (!m->shapes) return mpq_error_set(err, n, "out of memory");
    int seen[5] = {0};
    for (uint64_t i = 0; i < h->n_tensors; i++) {
        const mpq_art_tensor *t = &m->tensors[i];
        const char *name = string_at(m, t->name_offset, t->name_len);
        if (!name) return mpq_error_set(err, n, "tensor %llu: bad name", (unsigned long long)i);
        if (t->dtype > MPQ_DT_UINT32 || t->kind > MPQ_KIND_OUTPUT || t->ndim < 1 || t->ndim > MPQ_ART_MAX_DIMS)
            return mpq_error_set(err, n, "tensor %s: bad dtype, kind or rank", name);
        uint64_t elems = 1;
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] < 1 || (uint64_t)t->shape[d] > ((uint64_t)1 << 40) / elems)
                return mpq_error_set(err, n, "tensor %s: bad shape", name);
            elems *= (uint64_t)t->shape[d];
            m->shapes[i * 4 + d] = t->shape[d];
        }
        if (elems * dtype_size(t->dtype) != t->nbytes) return mpq_error_set(err, n, "tensor %s: size does not match its shape", name);
        if (t->alias >= 0) {
            if ((uint64_t)t->alias >= i) return mpq_error_set(err, n, "tensor %s: a view of a later tensor", name);
            const mpq_art_tensor *b = &m->tensors[t->alias];
            if ((b->kind == MPQ_KIND_CONST) != (t->kind == MPQ_KIND_CONST) || b->nbytes != t->nbytes)
                return mpq_error_set(err, n, "tensor %s: view does not match its base", name);
        } else if (t->alias != -1) {
            return mpq_error_set(err, n, "tensor %s: bad alias", name);
        }
        if (t->kind == MPQ_KIND_CONST) {
            if (t->offset % MPQ_ARTIFACT_ALIGN || !fits(t->offset, t->nbytes, 1, h->data_bytes))
                return mpq_error_set(err, n, "tensor %s: data outside the data section", name);
        } else {
            if (t->offset % MPQ_ARTIFACT_ALIGN || !fits(t->offset, t->nbytes, 1, h->arena_bytes))
                return mpq_error_set(err, n, "tensor %s: outside the arena", name);
            if (t->alias == -1) seen[t->kind]++;
        }
    }
    if (seen[MPQ_KIND_INPUT] != 1 || seen[MPQ_KIND_TIMESTEP] != 1 || seen[MPQ_KIND_OUTPUT] != 1)
        return mpq_error_set(err, n, "the plan needs exactly one input, timestep and output tensor");
    return 0;
}

static void *tensor_data(const mpq_model *m, uint32_t i) {
    const mpq_art_tensor *t = &m->tensors[i];
    if (t->kind == MPQ_KIND_CONST) return (void *)(m->file + m->h->data_offset + t->offset);
    return m->arena + t->offset;
}

static int io_tensors(mpq_model *m, char *err, size_t n) {
    const mpq_art_tensor *in = NULL, *out = NULL;
    for (uint64_t i = 0; i < m->h->n_tensors; i++) {
        const mpq_art_tensor *t = &m->tensors[i];
        if (t->alias != -1) continue;
        if (t->kind == MPQ_KIND_INPUT) { in = t; m->in = tensor_data(m, (uint32_t)i); }
        if (t->kind == MPQ_KIND_OUTPUT) { out = t; m->out = tensor_data(m, (uint32_t)i); }
        if (t->kind == MPQ_KIND_TIMESTEP) {
            if (t->dtype != MPQ_DT_FLOAT32 || t->nbytes != 4) return mpq_error_set(err, n, "bad timestep tensor");
            m->tstep = tensor_data(m, (uint32_t)i);
        }
    }
    if (in->dtype != MPQ_DT_FLOAT32 || in->ndim != 4 || in->shape[0] != 1 || out->nbytes != in->nbytes ||
        out->dtype != MPQ_DT_FLOAT32)
        return mpq_error_set(err, n, "input and output must be float32 [1, H, W, C] of one shape");
    m->sample_elems = (size_t)(in->nbytes / 4);
    return 0;
}

static int check_sampler(mpq_model *m, char *err, size_t n) {
    const mpq_art_header *h = m->h;
    if (h->sampler_bytes != sizeof(mpq_art_sampler) + 8ull * h->n_steps) return mpq_error_set(err, n, "bad sampler size");
    m->sampler = (const mpq_art_sampler *)(m->file + h->sampler_offset);
    if (m->sampler->n_steps != h->n_steps || m->sampler->prediction_type != MPQ_PRED_EPSILON)
        return mpq_error_set(err, n, "sampler does not match the plan");
    if (!(m->sampler->final_alpha_cumprod > 0.0f && m->sampler->final_alpha_cumprod <= 1.0f))
        return mpq_error_set(err, n, "sampler final alpha_cumprod out of range");
    m->timesteps = (const int32_t *)(m->sampler + 1);
    m->alphas = (const float *)(m->timesteps + h->n_steps);
    for (uint32_t i = 0; i < h->n_steps; i++) {
        if (m->timesteps[i] < 0 || (uint32_t)m->timesteps[i] >= m->sampler->num_train_timesteps ||
            !(m->alphas[i] > 0.0f && m->alphas[i] <= 1.0f))
            return mpq_error_set(err, n, "sampler step %u out of range", i);
    }
    return 0;
}

static int build_calls(mpq_model *m, mpq_resolver resolve, void *ctx, char *err, size_t n) {
    const mpq_art_header *h = m->h;
    const mpq_art_kernel *ks = (const mpq_art_kernel *)(m->file + h->kernels_offset);
    const mpq_art_call *cs = (const mpq_art_call *)(m->file + h->calls_offset);
    const mpq_art_arg *as = (const mpq_art_arg *)(m->file + h->args_offset);
    mpq_kernel_fn *fns = calloc(h->n_kernels ? h->n_kernels : 1, sizeof *fns);
    const char **names = calloc(h->n_kernels ? h->n_kernels : 1, sizeof *names);
    m->calls = calloc(h->n_calls, sizeof *m->calls);
    m->n_calls = (uint32_t)h->n_calls;
    int rc = 0;
    if (!fns || !names || !m->calls) { rc = mpq_error_set(err, n, "out of memory"); goto done; }
    for (uint64_t k = 0; k < h->n_kernels; k++) {
        char sym[320];
        names[k] = string_at(m, ks[k].name_offset, ks[k].name_len);
        if (!names[k] || ks[k].name_len > 256) { rc = mpq_error_set(err, n, "kernel %llu: bad name", (unsigned long long)k); goto done; }
        snprintf(sym, sizeof sym, "__tvm_ffi_%s", names[k]);
        fns[k] = resolve ? resolve(ctx, sym) : NULL;
        if (!fns[k]) { rc = mpq_error_set(err, n, "kernel %s is missing from this binary (built for another model?)", sym); goto done; }
    }
    for (uint32_t c = 0; c < m->n_calls; c++) {
        const mpq_art_call *ac = &cs[c];
        mpq_call *call = &m->calls[c];
        call->op = string_at(m, ac->op_offset, ac->op_len);
        if (!call->op || ac->kernel >= h->n_kernels || ac->n_args == 0 || ac->n_args > MPQ_MAX_ARGS ||
            !fits(ac->first_arg, ac->n_args, 1, h->n_args)) {
            rc = mpq_error_set(err, n, "call %u: bad kernel or argument range", c);
            goto done;
        }
        if (ac->pad != 0) {
            rc = mpq_error_set(err, n, "call %s: reserved field pad is %u, expected 0: recompile it with mpqdm compile",
                               call->op, ac->pad);
            goto done;
        }
        call->fn = fns[ac->kernel];
        call->kernel = names[ac->kernel];
        call->n_args = ac->n_args;
        call->args = calloc(ac->n_args, sizeof *call->args);
        call->tensors = calloc(ac->n_args, sizeof *call->tensors);
        call->step_base = calloc(ac->n_args, sizeof *call->step_base);
        if (!call->args || !call->tensors || !call->step_base) { rc = mpq_error_set(err, n, "out of memory"); goto done; }
        for (uint32_t a = 0; a < ac->n_args; a++) {
            const mpq_art_arg *aa = &as[ac->first_arg + a];
            if (aa->tensor >= h->n_tensors || (aa->flags & ~MPQ_ARG_STEP)) {
                rc = mpq_error_set(err, n, "call %s: bad argument %u", call->op, a);
                goto done;
            }
            const mpq_art_tensor *t = &m->tensors[aa->tensor];
            mpq_dltensor *d = &call->tensors[a];
            *d = (mpq_dltensor){tensor_data(m, aa->tensor), {MPQ_DL_CPU, 0}, t->ndim, dl_dtype(t->dtype),
                                &m->shapes[aa->tensor * 4], NULL, 0};
            if (aa->flags & MPQ_ARG_STEP) {
                if (t->kind != MPQ_KIND_CONST || t->ndim != 1 || (uint64_t)t->shape[0] != h->n_steps ||
                    dtype_size(t->dtype) != 4) {
                    rc = mpq_error_set(err, n, "call %s: argument %u is not a per-step tensor", call->op, a);
                    goto done;
                }
                call->step_base[a] = d->data;
                d->ndim = 1;
                d->shape = &m->shapes[aa->tensor * 4 + 3];   /* unused 4th dim slot: [1] */
                m->shapes[aa->tensor * 4 + 3] = 1;
            }
            if (a + 1 == ac->n_args && (t->kind == MPQ_KIND_CONST || (aa->flags & MPQ_ARG_STEP))) {
                rc = mpq_error_set(err, n, "call %s writes a constant (read-only) tensor", call->op);
                goto done;
            }
            call->args[a] = (mpq_ffi_any){MPQ_FFI_TENSOR_PTR, 0, {.v_ptr = d}};
        }
    }
done:
    free(fns);
    free(names);
    return rc;
}

/* The arena's memory. A test build may define MPQ_TEST_ARENA_FAIL_ABOVE=N: every request above N bytes
 * then fails as an exhausted allocator would, so the fuzzer reaches the failure branch on any machine
 * (make -C runtime fuzz defines it); product builds have no hook and pay nothing for it. */
static void *arena_alloc(uint64_t bytes) {
#ifdef MPQ_TEST_ARENA_FAIL_ABOVE
    if (bytes > (uint64_t)(MPQ_TEST_ARENA_FAIL_ABOVE)) return NULL;
#endif
#if SIZE_MAX < UINT64_MAX
    if (bytes > SIZE_MAX) return NULL;
#endif
    void *p = NULL;
    return posix_memalign(&p, MPQ_ARTIFACT_ALIGN, bytes ? (size_t)bytes : MPQ_ARTIFACT_ALIGN) == 0 ? p : NULL;
}

static int alloc_arena(mpq_model *m, char *err, size_t n) {
    uint64_t bytes = m->h->arena_bytes;
    m->arena = arena_alloc(bytes);
    if (!m->arena) {
        /* MPQ-FUZZ-ALLOC-FAILURE: mpqdm/testing/fuzz.py shows from the fuzzer's coverage that it ran this: */
        return mpq_error_set(err, n, "cannot allocate the %llu-byte arena (%.1f MiB): free memory, or run it on a "
                             "board with more", (unsigned long long)bytes, mib(bytes));
    }
    memset(m->arena, 0, (size_t)bytes);
    return 0;
}

static int finish_open(mpq_model *m, mpq_resolver resolve, void *ctx, const mpq_open_options *options,
                       mpq_model **out, char *err, size_t errlen) {
    static const mpq_open_options defaults = {0, NULL, 0};
    const mpq_open_options *o = options ? options : &defaults;
    int rc = check_header(m, o, err, errlen);
    if (rc == 0) rc = check_tensors(m, err, errlen);
    if (rc == 0) rc = check_sampler(m, err, errlen);
    if (rc == 0) rc = alloc_arena(m, err, errlen);
    if (rc == 0) rc = io_tensors(m, err, errlen);
    if (rc == 0) rc = build_calls(m, resolve, ctx, err, errlen);
    if (rc == 0) {
        m->scratch = malloc(m->sample_elems * sizeof(float));
        if (!m->scratch) rc = mpq_error_set(err, errlen, "out of memory (%zu bytes for the sample)",
                                            m->sample_elems * sizeof(float));
    }
    if (rc != 0) {          /* the message is in err; now free everything */
        mpq_close(m);
        return -1;
    }
    if (o->threads > 0) mpq_backend_start(o->threads);
    *out = m;
    return 0;
}

int mpq_open(const char *path, mpq_resolver resolve, void *ctx, const mpq_open_options *options, mpq_model **out,
             char *err, size_t errlen) {
    *out = NULL;
    mpq_model *m = calloc(1, sizeof *m);
    if (!m) return mpq_error_set(err, errlen, "out of memory");
    if (read_file(m, path, err, errlen)) {
        mpq_close(m);
        return -1;
    }
    return finish_open(m, resolve, ctx, options, out, err, errlen);
}

int mpq_open_memory(const void *buf, size_t size, mpq_resolver resolve, void *ctx, const mpq_open_options *options,
                    mpq_model **out, char *err, size_t errlen) {
    *out = NULL;
    if (size < sizeof(mpq_art_header))
        return mpq_error_set(err, errlen, "truncated (%zu bytes, the header alone is %zu); copy the whole file again "
                             "or recompile it", size, sizeof(mpq_art_header));
    mpq_model *m = calloc(1, sizeof *m);
    void *copy = NULL;
    if (!m || posix_memalign(&copy, 64, size) != 0) {
        mpq_error_set(err, errlen, "out of memory (%zu bytes for a copy of the file)", size);
        free(m);
        return -1;
    }
    memcpy(copy, buf, size);
    m->file = copy;
    m->size = size;
    return finish_open(m, resolve, ctx, options, out, err, errlen);
}

void mpq_close(mpq_model *m) {
    if (!m) return;
    if (m->calls) {
        for (uint32_t c = 0; c < m->n_calls; c++) {
            free(m->calls[c].args);
            free(m->calls[c].tensors);
            free(m->calls[c].step_base);
        }
    }
    free(m->calls);
    free(m->shapes);
    free(m->arena);
    free(m->scratch);
    if (m->file) {
        if (m->mapped) munmap((void *)m->file, m->size);
        else free((void *)m->file);
    }
    free(m);
}
