/* The calling convention of TVM-generated kernels (tvm-ffi ABI, llvm target), restated for C99.
 *
 * A kernel is `int __tvm_ffi_<name>(void *self, const mpq_ffi_any *args, int32_t num_args,
 * mpq_ffi_any *result)`; a tensor argument is type index 7 holding a DLTensor pointer (DLPack's
 * stable layout, below). From Python a tensor may also come as a tvm.runtime.Tensor object (type
 * index 70): its DLTensor follows the object header (tvm_ffi/c_api.h: TVMFFIObject, kTVMFFITensor).
 * Non-zero return: the kernel reported an error through
 * TVMFFIErrorSetRaisedFromCStrParts. Parallel loops call the function in the slot
 * __TVMBackendParallelLaunch, which the program fills before the first call.
 */
#ifndef MPQ_FFI_H
#define MPQ_FFI_H

#include <stdint.h>

enum { MPQ_DL_INT = 0, MPQ_DL_UINT = 1, MPQ_DL_FLOAT = 2 };
enum { MPQ_DL_CPU = 1, MPQ_DL_CUDA = 2 };
enum { MPQ_FFI_NONE = 0, MPQ_FFI_INT = 1, MPQ_FFI_TENSOR_PTR = 7, MPQ_FFI_TENSOR = 70 };   /* type indices */

typedef struct { int32_t device_type; int32_t device_id; } mpq_dldevice;
typedef struct { uint8_t code; uint8_t bits; uint16_t lanes; } mpq_dldtype;

typedef struct {
    void *data;
    mpq_dldevice device;
    int32_t ndim;
    mpq_dldtype dtype;
    int64_t *shape;
    int64_t *strides;          /* NULL: compact row-major */
    uint64_t byte_offset;
} mpq_dltensor;

typedef struct {
    int32_t type_index;
    uint32_t zero_padding;
    union { int64_t v_int64; double v_float64; void *v_ptr; } v;
} mpq_ffi_any;

/* The header of a tvm-ffi object (TVMFFIObject, 24 bytes); a Tensor object's DLTensor follows it. */
typedef struct {
    uint64_t combined_ref_count;
    int32_t type_index;
    uint32_t padding;
    int64_t deleter;           /* a function pointer in an 8-byte union */
} mpq_ffi_object;

typedef int (*mpq_kernel_fn)(void *self, const mpq_ffi_any *args, int32_t num_args, mpq_ffi_any *result);

typedef struct { void *sync_handle; int32_t num_task; } mpq_parallel_env;
typedef int (*mpq_parallel_lambda)(int task_id, mpq_parallel_env *penv, void *cdata);

/* Fill the slots generated kernels call through; `threads` is the default task count. Returns the
 * threads started (mpq_backend_start). */
int mpq_backend_init(int threads);

#endif
