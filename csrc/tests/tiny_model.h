/*
 * tiny_model.h - the small models and scratch paths the trainer, generation
 * and sweep tests share (static, header-only: not a test file itself).
 */
#ifndef TINY_MODEL_H
#define TINY_MODEL_H

#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rg_model.h"

/* A GPT-2 shaped causal LM: V 13, P 32, 2 blocks of width 8, dropout on. */
static inline rg_model_config tiny_lm_config(void)
{
    rg_model_config c;
    memset(&c, 0, sizeof(c));
    c.vocab_size = 13;
    c.n_positions = 32;
    c.n_layer = 2;
    c.n_head = 2;
    c.n_kv_head = 2;
    c.head_dim = 4;
    c.n_embd = 8;
    c.n_inner = 16;
    c.norm = RG_NORM_LAYERNORM;
    c.norm_eps = 1e-5f;
    c.pre_norm = 1;
    c.final_norm = 1;
    c.position = RG_POSITION_LEARNED;
    c.activation = RG_ACTIVATION_GELU_TANH;
    c.causal = 1;
    c.bias = 1;
    c.head = RG_HEAD_LM;
    c.tie_word_embeddings = 1;
    c.embd_pdrop = c.resid_pdrop = c.attn_pdrop = 0.1f;
    return c;
}

/* A DistilBERT shaped encoder classifier with 3 labels. */
static inline rg_model_config tiny_cls_config(void)
{
    rg_model_config c = tiny_lm_config();
    c.pre_norm = 0;
    c.embed_norm = 1;
    c.final_norm = 0;
    c.causal = 0;
    c.head = RG_HEAD_CLS_DISTILBERT;
    c.tie_word_embeddings = 0;
    c.num_labels = 3;
    c.activation = RG_ACTIVATION_GELU_ERF;
    c.cls_pdrop = 0.1f;
    return c;
}

/* N right-padded rows of width T with lengths 2..T and ids in [1, V). */
static inline void tiny_rows(int N, int T, int V, unsigned salt, int32_t *tokens, int32_t *mask)
{
    for (int i = 0; i < N; i++) {
        int len = 2 + (int)((i * 7u + salt) % (unsigned)(T - 1));
        for (int j = 0; j < T; j++) {
            int real = j < len;
            tokens[i * T + j] = real ? 1 + (int32_t)((i * 5u + j * 3u + salt + (unsigned)(i * j)) % (unsigned)(V - 1)) : 0;
            mask[i * T + j] = real;
        }
    }
}

/* A fresh path in the system's temp directory (the file does not exist). */
static inline void tiny_temp_path(char *out, size_t n, const char *name)
{
    const char *dir = getenv("TMPDIR");
    snprintf(out, n, "%s/rg_test_%ld_%s", dir && dir[0] ? dir : "/tmp", (long)getpid(), name);
    unlink(out);
}

#endif /* TINY_MODEL_H */
