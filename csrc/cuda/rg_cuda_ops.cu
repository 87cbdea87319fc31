// rg_cuda_ops.cu - the CUDA op table (rg_backend.h): each op's file
// (csrc/cuda/<op>.cu) exports its forward and backward with the rg_ops.h
// signature on device pointers; this file gathers them into one table.
// Every pointer given to these entries is device memory.
#include "rgcu.h"

static const rg_ops_table cuda_ops = {
    .name = "cuda",
    .dropout_apply = rgcu_dropout_apply,
    .add_inplace = rgcu_add_inplace,
    .matmul_forward = rgcu_matmul_forward,
    .matmul_backward = rgcu_matmul_backward,
    .lora_forward = rgcu_lora_forward,
    .lora_backward = rgcu_lora_backward,
    .layernorm_forward = rgcu_layernorm_forward,
    .layernorm_backward = rgcu_layernorm_backward,
    .rmsnorm_forward = rgcu_rmsnorm_forward,
    .rmsnorm_backward = rgcu_rmsnorm_backward,
    .gelu_tanh_forward = rgcu_gelu_tanh_forward,
    .gelu_tanh_backward = rgcu_gelu_tanh_backward,
    .gelu_erf_forward = rgcu_gelu_erf_forward,
    .gelu_erf_backward = rgcu_gelu_erf_backward,
    .swiglu_forward = rgcu_swiglu_forward,
    .swiglu_backward = rgcu_swiglu_backward,
    .relu_forward = rgcu_relu_forward,
    .relu_backward = rgcu_relu_backward,
    .tanh_forward = rgcu_tanh_forward,
    .tanh_backward = rgcu_tanh_backward,
    .embedding_forward = rgcu_embedding_forward,
    .embedding_backward = rgcu_embedding_backward,
    .rope_forward = rgcu_rope_forward,
    .rope_backward = rgcu_rope_backward,
    .attention_forward = rgcu_attention_forward,
    .attention_backward = rgcu_attention_backward,
    .attention_cached_forward = rgcu_attention_cached_forward,
    .crossentropy_forward = rgcu_crossentropy_forward,
    .crossentropy_backward = rgcu_crossentropy_backward,
};

extern "C" const rg_ops_table *rgcu_ops_table(void)
{
    return &cuda_ops;
}
