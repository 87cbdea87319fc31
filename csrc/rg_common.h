/*
 * rg_common.h - status codes and shared conventions of the reviewgen C core.
 *
 * The core is plain C11: it never includes Python.h, never exits and never
 * aborts. Every fallible function returns an rg_status; the Python binding
 * maps each status to one specific Python exception.
 *
 * Dimension legend used in the shape comments of every file:
 *   B  = batch size            T  = sequence length (tokens)
 *   C  = model width (n_embd)  NH = attention heads      NKV = key/value heads
 *   HS = head size (C / NH unless the config says otherwise)
 *   F  = MLP inner width       V  = vocabulary size      P  = max positions
 *   L  = number of layers      K  = number of class labels
 *   N  = number of samples (metrics) or of rows (B * T) where stated
 * All tensors are float32 (or int32 for token ids and labels), row-major,
 * contiguous. Linear weights are (out_features, in_features).
 */
#ifndef RG_COMMON_H
#define RG_COMMON_H

#include <stddef.h>
#include <stdint.h>

typedef enum rg_status {
    RG_OK = 0,
    RG_ERR_NOMEM,          /* an allocation failed */
    RG_ERR_INVALID_ARG,    /* a null pointer, a negative size, an unknown option */
    RG_ERR_SHAPE,          /* sizes that do not agree with each other or with the config */
    RG_ERR_LABEL_RANGE,    /* a label or token id outside its declared range */
    RG_ERR_NONFINITE,      /* NaN or infinity in an input or produced by a step */
    RG_ERR_EMPTY,          /* an empty input where at least one element is needed */
    RG_ERR_STATE,          /* a call that the object's current state does not allow */
    RG_ERR_CUDA,           /* a CUDA or cuBLASLt call failed */
    RG_ERR_UNSUPPORTED,    /* a feature this build or this config does not provide */
    RG_ERR_INTERRUPTED,    /* rg_interrupt_request() stopped a long call at a safe point */
    RG_ERR_TOO_LARGE,      /* a size whose arithmetic overflows or exceeds the core's limits */
    RG_ERR_IO,             /* a file could not be created, written, synced, renamed or read */
    RG_ERR_CORRUPT,        /* a file's magic, checksum or structure is wrong (truncated, altered) */
    RG_ERR_COMM,           /* a collective of a data-parallel run failed (a peer rank died, a timeout) */
    RG_STATUS_COUNT
} rg_status;

/* A short, static, human-readable description of a status. */
const char *rg_status_string(rg_status status);

/* Cooperative cancellation of long calls (a training forward or backward):
 * rg_interrupt_request() is async-signal-safe, so a SIGINT handler may call
 * it; long calls poll rg_interrupt_pending() between layers and return
 * RG_ERR_INTERRUPTED, leaving the object in a state that refuses a backward
 * of the interrupted pass. */
void rg_interrupt_request(void);
int rg_interrupt_pending(void);
void rg_interrupt_clear(void);

/* Overflow-checked size arithmetic: *out = a * b (a + b); 0 when it does not
 * fit a size_t (then *out is left alone). Every size the core derives from
 * caller-given dimensions goes through these. */
static inline int rg_size_mul(size_t a, size_t b, size_t *out)
{
    if (b != 0 && a > SIZE_MAX / b)
        return 0;
    *out = a * b;
    return 1;
}
static inline int rg_size_add(size_t a, size_t b, size_t *out)
{
    if (a > SIZE_MAX - b)
        return 0;
    *out = a + b;
    return 1;
}

/* Return early from the enclosing function when a call fails. */
#define RG_TRY(call)                         \
    do {                                     \
        rg_status rg_try_status_ = (call);   \
        if (rg_try_status_ != RG_OK)         \
            return rg_try_status_;           \
    } while (0)

#endif /* RG_COMMON_H */
