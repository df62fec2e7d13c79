/* A qemu-user TCG plugin (API version 1) counting executed guest instructions: an ARM cost proxy
 * while no board is at hand. Build for the build machine: gcc -shared -fPIC -O2 -o libinsn_count.so
 * insn_count.c; run: qemu-aarch64 -plugin ./libinsn_count.so -d plugin PROG ... (the count is
 * printed at exit as "insns: N", and the executed Arm dot-product instructions, SDOT/UDOT vector or by
 * element, as "dots: N": which kernel path a program took). With the argument tbs=FILE
 * (-plugin ./libinsn_count.so,tbs=FILE) it also writes, per translated block, "vaddr insns executions"
 * to FILE: the caller maps the addresses to the binary's symbols (where the instructions went).
 * Count single-threaded runs: the inline add is not atomic. */
#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 = 0 };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op, void *ptr,
                                              uint64_t imm);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
const void *qemu_plugin_insn_data(const struct qemu_plugin_insn *insn);
size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_vcpu_insn_exec_inline(struct qemu_plugin_insn *insn, enum qemu_plugin_op op, void *ptr,
                                                uint64_t imm);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
void qemu_plugin_outs(const char *string);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

static uint64_t g_insns, g_dots;

/* per-block counters for tbs=FILE, in chunks that never move (the inline adds hold their addresses) */
typedef struct { uint64_t vaddr, n, execs; } block_t;
enum { CHUNK = 4096 };
typedef struct chunk { struct chunk *next; size_t used; block_t b[CHUNK]; } chunk_t;
static chunk_t *g_chunks;
static const char *g_tbs_path;

static block_t *new_block(void) {
    if (!g_chunks || g_chunks->used == CHUNK) {
        chunk_t *c = calloc(1, sizeof *c);
        if (!c) return NULL;
        c->next = g_chunks;
        g_chunks = c;
    }
    return &g_chunks->b[g_chunks->used++];
}

/* SDOT/UDOT (Armv8.2 dot product), Q and U free: vector 0Q U01110 10 0 Rm 100101 Rn Rd; by element
 * 0Q U01111 10 L M Rm 1110 H 0 Rn Rd */
static int is_dot(uint32_t w) {
    return (w & 0x9FE0FC00u) == 0x0E809400u || (w & 0x9FC0F400u) == 0x0F80E000u;
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &g_insns, n);
    block_t *blk = g_tbs_path ? new_block() : NULL;
    if (blk) {
        blk->vaddr = qemu_plugin_tb_vaddr(tb);
        blk->n = n;
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &blk->execs, 1);
    }
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        const uint8_t *b = qemu_plugin_insn_data(insn);
        if (qemu_plugin_insn_size(insn) != 4) continue;
        uint32_t w = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
        if (is_dot(w)) qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64, &g_dots, 1);
    }
}

static void at_exit(qemu_plugin_id_t id, void *userdata) {
    (void)id; (void)userdata;
    char line[96];
    snprintf(line, sizeof line, "insns: %" PRIu64 "\ndots: %" PRIu64 "\n", g_insns, g_dots);
    qemu_plugin_outs(line);
    if (!g_tbs_path) return;
    FILE *f = fopen(g_tbs_path, "w");
    if (!f) {
        qemu_plugin_outs("insn_count: cannot write the tbs file\n");
        return;
    }
    for (chunk_t *c = g_chunks; c; c = c->next)
        for (size_t i = 0; i < c->used; i++)
            if (c->b[i].execs)
                fprintf(f, "%" PRIx64 " %" PRIu64 " %" PRIu64 "\n", c->b[i].vaddr, c->b[i].n, c->b[i].execs);
    fclose(f);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                                               int argc, char **argv) {
    (void)info;
    for (int i = 0; i < argc; i++)
        if (strncmp(argv[i], "tbs=", 4) == 0) g_tbs_path = argv[i] + 4;
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
