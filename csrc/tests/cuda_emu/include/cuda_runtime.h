/*
 * cuda_runtime.h - the CUDA emulator's stand-in for the real header: the
 * emulated sources (csrc/cuda/NAME.cu, rewritten by transform.py) are
 * compiled with this directory first on the include path, so their
 * #include <cuda_runtime.h> lands here, on cuda_emu.h. That file says what
 * the emulator is and its limits (in short: the threads of a block run one
 * after another in a fixed order, so it cannot show races or timing bugs; it
 * does show wrong indices, masks and reductions, barriers some threads never
 * reach, reads of unset shared memory).
 */
#ifndef CUDA_EMU_CUDA_RUNTIME_H
#define CUDA_EMU_CUDA_RUNTIME_H
#include "cuda_emu.h"
#endif
