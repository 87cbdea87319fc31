/*
 * rg_rng.h - a counter-based random generator shared by dropout, sampling and
 * initialisation. Each draw is a pure function of (seed, counter), so a
 * dropout mask can be regenerated in the backward pass instead of stored,
 * and any run repeats exactly from its seed on any thread count.
 */
#ifndef RG_RNG_H
#define RG_RNG_H

#include <stdint.h>

/* The same functions compile for the GPU (csrc/cuda/), so a dropout mask
 * drawn there is bit for bit the CPU's. */
#ifdef __CUDACC__
#define RG_RNG_FN static inline __host__ __device__
#else
#define RG_RNG_FN static inline
#endif

/* SplitMix64's finaliser: a bijective mix with good avalanche. */
RG_RNG_FN uint64_t rg_rng_mix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* The 64 random bits at position `counter` of the stream `seed`. */
RG_RNG_FN uint64_t rg_rng_bits(uint64_t seed, uint64_t counter)
{
    return rg_rng_mix(rg_rng_mix(seed) ^ counter);
}

/* A float uniform in [0, 1) with 24 random bits. */
RG_RNG_FN float rg_rng_uniform(uint64_t seed, uint64_t counter)
{
    return (float)(rg_rng_bits(seed, counter) >> 40) * (1.0f / 16777216.0f);
}

/* Dropout's draw: element `index` of stream `stream` is kept with
 * probability 1 - p (CPU and GPU ops alike). */
RG_RNG_FN int rg_rng_keep(uint64_t stream, uint64_t index, float p)
{
    return rg_rng_uniform(stream, index) >= p;
}

/* A sequential stream for code that draws one value after another. */
typedef struct rg_rng {
    uint64_t seed;
    uint64_t counter;
} rg_rng;

static inline void rg_rng_init(rg_rng *rng, uint64_t seed)
{
    rng->seed = seed;
    rng->counter = 0;
}

static inline float rg_rng_next_uniform(rg_rng *rng)
{
    return rg_rng_uniform(rng->seed, rng->counter++);
}

#endif /* RG_RNG_H */
