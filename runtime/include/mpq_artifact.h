/* The artifact file: one compiled UNet plan, its constants and its sampler, for the C runtime.
 * This header is the single definition of the format; backend_tvm/artifact.py writes it (and reads
 * it back for tests and mpqdm build). Version 2; the runtime refuses any other version (a version-1
 * file, written before the checksum, must be recompiled with mpqdm compile).
 *
 * Layout (all integers and floats little-endian, every struct naturally aligned, no implicit
 * padding; offsets are bytes from the start of the file):
 *
 *   mpq_art_header                  at 0, header_size bytes
 *   mpq_art_tensor  [n_tensors]     at tensors_offset (8-aligned)
 *   mpq_art_kernel  [n_kernels]     at kernels_offset (8-aligned)
 *   mpq_art_call    [n_calls]       at calls_offset   (8-aligned), in execution order
 *   mpq_art_arg     [n_args]        at args_offset    (8-aligned); a call's arguments are
 *                                   args[first_arg .. first_arg + n_args), inputs first, output last
 *   sampler section                 at sampler_offset (8-aligned), sampler_bytes bytes:
 *                                   mpq_art_sampler, int32_t timesteps[n_steps] (descending, the
 *                                   DDIM schedule), float alphas_cumprod[n_steps] (at those timesteps)
 *   string table                    at strings_offset, strings_bytes bytes: UTF-8 names addressed by
 *                                   (offset, length) relative to the table; each is followed by a NUL
 *                                   that the length does not count, so it is also a C string
 *   data section                    at data_offset (64-aligned), data_bytes bytes, to the end of the
 *                                   file: the bytes of the CONST tensors, row-major, each starting on
 *                                   a 64-byte boundary (so an mmap of the file gives aligned pointers)
 *
 * Checksum: header.checksum is the CRC-32 (zlib's crc32, the IEEE 802.3 polynomial; Python's
 * zlib.crc32) of the whole file, file_size bytes, computed with the 4 bytes of the checksum field
 * taken as zero. The runtime checks it right after the magic, the version and the sizes, before it
 * reads anything else, so a corrupted file stops there with "checksum mismatch".
 * Reserved fields (header.flags, header.reserved, mpq_art_call.pad) are 0; the runtime refuses others.
 *
 * Tensors: CONST data lives at data_offset + offset. Every other kind is a region of the arena (one
 * buffer of arena_bytes bytes, 64-aligned, owned by the runtime) at arena offset `offset`. A view
 * (alias >= 0, the index of the tensor it views, always a lower index) shares its root's memory and
 * offset with its own shape. The kernel table holds the kernels the calls use, in order of first use;
 * the runtime resolves `__tvm_ffi_<name>`. An argument flagged MPQ_ARG_STEP is a [1] view of element
 * `step` of a per-step CONST tensor [n_steps] (the sampling step being run, 0 .. n_steps-1).
 * board, arch and features are NUL-terminated and NUL-padded. board is the board profile's name, 1 to
 * 31 characters of [A-Za-z0-9._-]; a binary built for one board refuses an artifact of another.
 * features is a comma-separated list of the CPU features the kernels need (e.g. "neon,dotprod",
 * "avx2,fma"); the runtime refuses to run without them.
 */
#ifndef MPQ_ARTIFACT_H
#define MPQ_ARTIFACT_H

#include <stdint.h>

#define MPQ_ARTIFACT_MAGIC "MPQDMART"      /* 8 bytes, no NUL in the file */
#define MPQ_ARTIFACT_MAGIC_LEN 8
#define MPQ_ARTIFACT_VERSION 2
#define MPQ_ARTIFACT_ALIGN 64              /* data section, constants and arena regions */
#define MPQ_ART_MAX_DIMS 4

enum { MPQ_DT_FLOAT32 = 0, MPQ_DT_UINT8 = 1, MPQ_DT_INT32 = 2, MPQ_DT_UINT32 = 3 };
enum { MPQ_KIND_CONST = 0, MPQ_KIND_ACT = 1, MPQ_KIND_INPUT = 2, MPQ_KIND_TIMESTEP = 3, MPQ_KIND_OUTPUT = 4 };
enum { MPQ_PRED_EPSILON = 0 };

#define MPQ_ARG_STEP 1u                    /* mpq_art_arg.flags: a [1] view of element `step` */
#define MPQ_ART_BOARD_LEN 32               /* mpq_art_header.board, the NUL included */

typedef struct {
    char magic[8];                 /* MPQ_ARTIFACT_MAGIC */
    uint32_t version;              /* MPQ_ARTIFACT_VERSION */
    uint32_t header_size;          /* sizeof(mpq_art_header) */
    uint32_t checksum;             /* CRC-32 of the file with this field as 0 (see above) */
    uint32_t flags;                /* reserved, 0 */
    char board[32];                /* board profile name, [A-Za-z0-9._-]{1,31}, NUL-padded */
    char arch[16];                 /* "x86_64" or "aarch64" */
    char features[128];            /* required CPU features, comma-separated */
    uint8_t model_sha256[32];      /* of the quantized model the plan was compiled from */
    uint64_t file_size;
    uint64_t arena_bytes;          /* activation arena size */
    uint32_t n_steps;              /* sampling steps; per-step tensors have this many elements */
    uint32_t reserved;             /* reserved, 0 */
    uint64_t tensors_offset;
    uint64_t n_tensors;
    uint64_t kernels_offset;
    uint64_t n_kernels;
    uint64_t calls_offset;
    uint64_t n_calls;
    uint64_t args_offset;
    uint64_t n_args;
    uint64_t strings_offset;
    uint64_t strings_bytes;
    uint64_t sampler_offset;
    uint64_t sampler_bytes;
    uint64_t data_offset;
    uint64_t data_bytes;
} mpq_art_header;

typedef struct {
    uint32_t name_offset;          /* into the string table */
    uint32_t name_len;
    uint8_t dtype;                 /* MPQ_DT_* */
    uint8_t kind;                  /* MPQ_KIND_* */
    uint8_t ndim;                  /* <= MPQ_ART_MAX_DIMS; unused dims are 0 */
    uint8_t bits;                  /* packed width of weight codes, 0: not packed / mixed */
    int32_t alias;                 /* index of the viewed tensor, or -1 */
    int64_t shape[MPQ_ART_MAX_DIMS];
    uint64_t offset;               /* CONST: in the data section; others: in the arena */
    uint64_t nbytes;
} mpq_art_tensor;

typedef struct {
    uint32_t name_offset;          /* kernel symbol without the __tvm_ffi_ prefix */
    uint32_t name_len;
} mpq_art_kernel;

typedef struct {
    uint32_t kernel;               /* index into the kernel table */
    uint32_t first_arg;            /* index into the argument array */
    uint32_t n_args;
    uint32_t op_offset;            /* what the call lowers, for errors and reports */
    uint32_t op_len;
    uint32_t pad;                  /* reserved, 0 */
} mpq_art_call;

typedef struct {
    uint32_t tensor;               /* index into the tensor table */
    uint32_t flags;                /* MPQ_ARG_STEP */
} mpq_art_arg;

typedef struct {
    uint32_t n_steps;              /* equals the header's */
    uint32_t num_train_timesteps;
    uint32_t prediction_type;      /* MPQ_PRED_* */
    uint32_t clip_sample;          /* 0 or 1 */
    float clip_range;
    float final_alpha_cumprod;     /* alpha_cumprod after the last step */
    /* then int32_t timesteps[n_steps], float alphas_cumprod[n_steps] */
} mpq_art_sampler;

/* Compile-time size checks (C99: a negative array size fails the build). */
#define MPQ_ART_SIZE(T, n) typedef char T##_size_check[(sizeof(T) == (n)) ? 1 : -1]
MPQ_ART_SIZE(mpq_art_header, 368);
MPQ_ART_SIZE(mpq_art_tensor, 64);
MPQ_ART_SIZE(mpq_art_kernel, 8);
MPQ_ART_SIZE(mpq_art_call, 24);
MPQ_ART_SIZE(mpq_art_arg, 8);
MPQ_ART_SIZE(mpq_art_sampler, 24);
#undef MPQ_ART_SIZE

#endif
