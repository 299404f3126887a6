/* Attention for the line schedule's decoding rows (simgen/backends/kernels.py loads this).
 *
 * Each decoding row has one new token, whose `groups` query heads per key/value head attend over
 * that row's own cached keys and values: `lens[i]` slots of cache row `rows[i]`. SDPA on a CPU
 * takes one padded width per call and runs a small matrix product per (row, head); here each
 * (row, head) task reads its keys and then its values once, over its own length only, and does
 * the arithmetic in float32 (as SDPA's flash kernel accumulates).
 *
 * q:    (n, heads, groups, dim), contiguous, the model's dtype
 * k, v: the cache, (slots, heads, cap, dim), contiguous
 * out:  (n, heads, groups, dim), contiguous
 * work: n * heads * groups * cap floats of scratch (the scores)
 *
 * Tasks are independent and each sums in a fixed order, so a row's output does not depend on the
 * other rows, the thread count or the schedule.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float from_bf16(uint16_t x) {
    uint32_t u = (uint32_t)x << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t to_bf16(float f) { /* round to nearest even, as torch's conversion */
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* NaN stays NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* One (row, head) task: `groups` query rows against `len` keys and values. DIM and GROUPS are the
 * caller's: literals in the specialised copy (the loops unroll and the accumulators stay in
 * registers), variables in the general one. */
#define TASK(T, LOAD, STORE, DIM, GROUPS)                                                              \
    {                                                                                                  \
        int64_t i = task / heads, h = task % heads, len = lens[i];                                     \
        const T *K = k + (rows[i] * heads + h) * cap * (DIM);                                          \
        const T *V = v + (rows[i] * heads + h) * cap * (DIM);                                          \
        float *s = work + task * (GROUPS) * cap; /* GROUPS x len scores */                             \
        float qf[GROUPS][DIM], acc[GROUPS][DIM], row[DIM], top[GROUPS], sum[GROUPS];                   \
        for (int64_t g = 0; g < (GROUPS); g++) {                                                       \
            for (int64_t d = 0; d < (DIM); d++) {                                                      \
                qf[g][d] = LOAD(q[((i * heads + h) * (GROUPS) + g) * (DIM) + d]) * scale;              \
                acc[g][d] = 0.0f;                                                                      \
            }                                                                                          \
            top[g] = -FLT_MAX, sum[g] = 0.0f;                                                          \
        }                                                                                              \
        for (int64_t t = 0; t < len; t++) {                                                            \
            for (int64_t d = 0; d < (DIM); d++) row[d] = LOAD(K[t * (DIM) + d]);                       \
            for (int64_t g = 0; g < (GROUPS); g++) {                                                   \
                float dot = 0.0f;                                                                      \
                for (int64_t d = 0; d < (DIM); d++) dot += qf[g][d] * row[d];                          \
                s[g * cap + t] = dot;                                                                  \
                top[g] = dot > top[g] ? dot : top[g];                                                  \
            }                                                                                          \
        }                                                                                              \
        for (int64_t g = 0; g < (GROUPS); g++) {                                                       \
            float total = 0.0f;                                                                        \
            for (int64_t t = 0; t < len; t++) {                                                        \
                float e = expf(s[g * cap + t] - top[g]);                                               \
                s[g * cap + t] = e;                                                                    \
                total += e;                                                                            \
            }                                                                                          \
            sum[g] = total;                                                                            \
        }                                                                                              \
        for (int64_t t = 0; t < len; t++) {                                                            \
            for (int64_t d = 0; d < (DIM); d++) row[d] = LOAD(V[t * (DIM) + d]);                       \
            for (int64_t g = 0; g < (GROUPS); g++) {                                                   \
                float p = s[g * cap + t];                                                              \
                for (int64_t d = 0; d < (DIM); d++) acc[g][d] += p * row[d];                           \
            }                                                                                          \
        }                                                                                              \
        for (int64_t g = 0; g < (GROUPS); g++)                                                         \
            for (int64_t d = 0; d < (DIM); d++)                                                        \
                out[((i * heads + h) * (GROUPS) + g) * (DIM) + d] = STORE(acc[g][d] / sum[g]);         \
    }

#define DECODE_ATTENTION(NAME, T, LOAD, STORE)                                                          \
    void NAME(const T *q, const T *k, const T *v, T *out, const int64_t *rows, const int64_t *lens,     \
              int64_t n, int64_t heads, int64_t groups, int64_t dim, int64_t cap, float scale,          \
              float *work) {                                                                           \
        if (dim == 64 && groups == 3) { /* SmolLM2-135M's shape */                                     \
            _Pragma("omp parallel for schedule(static)")                                               \
            for (int64_t task = 0; task < n * heads; task++) TASK(T, LOAD, STORE, 64, 3)               \
        } else {                                                                                       \
            _Pragma("omp parallel for schedule(static)")                                               \
            for (int64_t task = 0; task < n * heads; task++) TASK(T, LOAD, STORE, dim, groups)         \
        }                                                                                              \
    }

#define LOAD_F32(x) (x)
#define STORE_F32(x) (x)
DECODE_ATTENTION(decode_attention_bf16, uint16_t, from_bf16, to_bf16)
DECODE_ATTENTION(decode_attention_f32, float, LOAD_F32, STORE_F32)
