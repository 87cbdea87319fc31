/*
 * rg_comm.h - the communicator a data-parallel run needs: one collective,
 * an in-place element-wise sum over every rank (an all-reduce).
 *
 * The core never links an MPI or NCCL library itself: whoever launches the
 * ranks fills this struct (the Python binding with mpi4py, csrc/python/
 * trainer.c; csrc/cuda/rg_nccl.c with NCCL) and hands it to rg_trainer
 * (rg_trainer_config.comm). Every rank must call allreduce_sum with the same
 * n and dtype in the same order; the trainer guarantees that as long as every
 * rank got the same config and the same data.
 *
 * allreduce_sum returns 0 when every rank's buffer holds the sum, non-zero
 * when the collective failed (a peer died, a timeout, a library error); the
 * trainer then stops with RG_ERR_COMM and refuses to go on.
 */
#ifndef RG_COMM_H
#define RG_COMM_H

#include <stddef.h>

typedef enum rg_comm_dtype {
    RG_COMM_F32 = 0, /* float */
    RG_COMM_F64 = 1  /* double */
} rg_comm_dtype;

typedef struct rg_comm {
    void *ctx;  /* passed back to allreduce_sum */
    int rank;   /* 0 .. size - 1; rank 0 alone writes checkpoints */
    int size;   /* >= 1; 1 behaves exactly as no communicator */
    int (*allreduce_sum)(void *ctx, void *buf, size_t n, rg_comm_dtype dtype);
} rg_comm;

#endif /* RG_COMM_H */
