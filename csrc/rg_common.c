/* rg_common.c - status strings. */
#include "rg_common.h"

#include <signal.h>

static volatile sig_atomic_t interrupt_flag = 0;

void rg_interrupt_request(void) { interrupt_flag = 1; }
int rg_interrupt_pending(void) { return interrupt_flag != 0; }
void rg_interrupt_clear(void) { interrupt_flag = 0; }

const char *rg_status_string(rg_status status)
{
    switch (status) {
    case RG_OK: return "ok";
    case RG_ERR_NOMEM: return "out of memory";
    case RG_ERR_INVALID_ARG: return "invalid argument";
    case RG_ERR_SHAPE: return "shape mismatch";
    case RG_ERR_LABEL_RANGE: return "label or token id out of range";
    case RG_ERR_NONFINITE: return "non-finite value (NaN or infinity)";
    case RG_ERR_EMPTY: return "empty input";
    case RG_ERR_STATE: return "call not allowed in the current state";
    case RG_ERR_CUDA: return "CUDA error";
    case RG_ERR_UNSUPPORTED: return "unsupported by this build or configuration";
    case RG_ERR_INTERRUPTED: return "interrupted";
    case RG_ERR_TOO_LARGE: return "sizes too large (overflow or beyond the core's limits)";
    case RG_ERR_IO: return "file input/output error";
    case RG_ERR_CORRUPT: return "corrupt file (bad magic, checksum or structure)";
    case RG_ERR_COMM: return "a collective of a data-parallel run failed (a peer rank died?)";
    default: return "unknown status";
    }
}
