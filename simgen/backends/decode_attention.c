/* Attention for the line schedule's decoding rows, and the element-wise work around a layer's
 * matmuls (at the end of this file); simgen/backends/kernels.py loads this.
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

/* ---------------------------------------------------------------------------------------------
 * The rest of a layer's element-wise work, one call each instead of a dozen small torch ops
 * (`LineEngine._forward` with fused projections). Each rounds where the torch ops it replaces
 * round (the model's dtype after every op), so in bfloat16 a value differs from torch's only where
 * a float32 sum or exp is ordered or approximated differently.
 * ------------------------------------------------------------------------------------------- */

/* x += delta (unless delta is NULL), then out = weight * (x * rsqrt(mean(x^2) + eps)), per row of
 * `hidden` values: the residual add and the next RMSNorm (transformers' LlamaRMSNorm). */
#define ADD_RMS_NORM(NAME, T, LOAD, STORE)                                                              \
    void NAME(T *x, const T *delta, const T *weight, T *out, int64_t t, int64_t hidden, float eps) {    \
        _Pragma("omp parallel for schedule(static) if (t > 1)")                                        \
        for (int64_t i = 0; i < t; i++) {                                                              \
            T *xi = x + i * hidden;                                                                    \
            float squares = 0.0f;                                                                      \
            for (int64_t d = 0; d < hidden; d++) {                                                     \
                float a = delta ? LOAD(STORE(LOAD(xi[d]) + LOAD(delta[i * hidden + d]))) : LOAD(xi[d]); \
                if (delta) xi[d] = STORE(a);                                                           \
                squares += a * a;                                                                      \
            }                                                                                          \
            float r = 1.0f / sqrtf(squares / (float)hidden + eps);                                     \
            for (int64_t d = 0; d < hidden; d++)                                                       \
                out[i * hidden + d] = STORE(LOAD(weight[d]) * LOAD(STORE(LOAD(xi[d]) * r)));           \
        }                                                                                              \
    }

/* Rotary embedding and the cache write: qkv is (t, (heads + 2 kv_heads) dim), a fused projection's
 * output; cos, sin (t, dim). Writes each token's rotated queries to q (t, heads, dim) and its
 * rotated key and its value to cache row rows[i], slot pos[i] (-1, and nothing written, if one is
 * outside the cache's slots x cap). As transformers' apply_rotary_pos_emb:
 * x * cos + rotate_half(x) * sin, each product and the sum rounded to T. */
#define ROPE_STORE(NAME, T, LOAD, STORE)                                                                \
    __attribute__((optimize("fp-contract=off"))) int NAME(                                             \
        const T *qkv, const T *cos, const T *sin, T *q, T *keys, T *values, const int64_t *rows,       \
        const int64_t *pos, int64_t t, int64_t heads, int64_t kv_heads, int64_t dim, int64_t slots,     \
        int64_t cap) {                                                                                 \
        int64_t width = (heads + 2 * kv_heads) * dim, half = dim / 2;                                  \
        for (int64_t i = 0; i < t; i++) /* a slot outside the cache: refused before anything is written */ \
            if (rows[i] < 0 || rows[i] >= slots || pos[i] < 0 || pos[i] >= cap) return -1;              \
        _Pragma("omp parallel for schedule(static) if (t > 1)")                                        \
        for (int64_t i = 0; i < t; i++) {                                                              \
            const T *src = qkv + i * width, *c = cos + i * dim, *s = sin + i * dim;                    \
            for (int64_t h = 0; h < heads + 2 * kv_heads; h++) {                                       \
                const T *x = src + h * dim;                                                            \
                T *dst = h < heads ? q + (i * heads + h) * dim                                         \
                       : (h < heads + kv_heads ? keys : values)                                        \
                             + ((rows[i] * kv_heads + (h - heads) % kv_heads) * cap + pos[i]) * dim;   \
                if (h >= heads + kv_heads) { /* a value: stored as it is */                            \
                    memcpy(dst, x, dim * sizeof(T));                                                   \
                    continue;                                                                          \
                }                                                                                      \
                for (int64_t d = 0; d < dim; d++) {                                                    \
                    float rot = d < half ? -LOAD(x[d + half]) : LOAD(x[d - half]);                     \
                    float a = LOAD(STORE(LOAD(x[d]) * LOAD(c[d])));                                    \
                    float b = LOAD(STORE(rot * LOAD(s[d])));                                           \
                    dst[d] = STORE(a + b);                                                             \
                }                                                                                      \
            }                                                                                          \
        }                                                                                              \
        return 0;                                                                                      \
    }

/* out = silu(gate) * up, gu (t, 2 inter) holding gate then up per row; out (t, inter). */
#define SILU_MUL(NAME, T, LOAD, STORE)                                                                  \
    void NAME(const T *gu, T *out, int64_t t, int64_t inter) {                                         \
        _Pragma("omp parallel for schedule(static) if (t > 1)")                                        \
        for (int64_t i = 0; i < t; i++)                                                                \
            for (int64_t d = 0; d < inter; d++) {                                                      \
                float g = LOAD(gu[i * 2 * inter + d]);                                                 \
                float act = LOAD(STORE(g / (1.0f + expf(-g))));                                        \
                out[i * inter + d] = STORE(act * LOAD(gu[i * 2 * inter + inter + d]));                 \
            }                                                                                          \
    }

ADD_RMS_NORM(add_rms_norm_bf16, uint16_t, from_bf16, to_bf16)
ADD_RMS_NORM(add_rms_norm_f32, float, LOAD_F32, STORE_F32)
ROPE_STORE(rope_store_bf16, uint16_t, from_bf16, to_bf16)
ROPE_STORE(rope_store_f32, float, LOAD_F32, STORE_F32)
SILU_MUL(silu_mul_bf16, uint16_t, from_bf16, to_bf16)
SILU_MUL(silu_mul_f32, float, LOAD_F32, STORE_F32)
