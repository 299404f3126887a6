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

/* ---------------------------------------------------------------------------------------------
 * Drawing the next token: temperature, HF's repetition penalty, top-p and min-p, one call for all
 * rows (`transformers.pick_tokens`). torch finds a nucleus by sorting (or top-k) over the whole
 * vocabulary. Here no token is sorted but those at the nucleus's edge: every kept token is heavier
 * than (1 - top_p) / vocab of the row's mass (the mass from a kept token down exceeds 1 - top_p,
 * over at most vocab tokens), so only those are gathered; a histogram of them (64 bins per
 * octave) finds the bin where the mass from the top reaches top_p, and only that bin is sorted.
 *
 * logits: (rows, vocab), the model's dtype; seen: (rows, vocab) bytes, 1 = penalise, or NULL;
 * u: (rows,) uniforms in [0, 1), one per row from the row's own generator; out: (rows,) token
 * ids. Returns 0, or -1 if a row has no finite logit (or scratch could not be allocated).
 *
 * The kept set is torch's: sorted by probability (ties by token id), a token is kept while the
 * mass before it is under top_p, and if it is at least min_p times the likeliest token's
 * probability. The draw is the token where the kept set's cumulative mass, summed in double in
 * token id order, passes u times its total. A row's draw depends on its logits and u only.
 * ------------------------------------------------------------------------------------------- */
#include <stdlib.h>

#define PICK_SHIFT 17 /* 64 bins per octave: the float's exponent and 6 mantissa bits */
#define PICK_TOP (0x3f800000u >> PICK_SHIFT) /* the bin of 1.0, the likeliest token's weight */
#define PICK_BINS 1600                        /* 25 octaves; anything lighter shares the lowest bin */
#define NOT_FINITE (-FLT_MAX)                  /* a logit that was -inf (a banned token) or NaN: never drawn */

typedef struct {
    float e;
    int32_t id;
} pick_t;

static int heavier_first(const void *a, const void *b) {
    const pick_t *x = a, *y = b;
    if (x->e != y->e) return x->e > y->e ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static inline int64_t pick_bin(float e) { /* 0 = the likeliest octave's top bin, up to PICK_BINS - 1 */
    uint32_t b;
    memcpy(&b, &e, sizeof b);
    int64_t k = (int64_t)PICK_TOP - (int64_t)(b >> PICK_SHIFT);
    return k < PICK_BINS - 1 ? k : PICK_BINS - 1;
}

/* One row: x its scaled logits (overwritten with exp(x - max)), c scratch for vocab pick_t. */
static int64_t pick_row(float *x, pick_t *c, int64_t vocab, double top_p, double min_p, double u) {
    float top = NOT_FINITE;
    for (int64_t v = 0; v < vocab; v++) top = x[v] > top ? x[v] : top;
    if (!(top > NOT_FINITE)) return -1;
    double z = 0.0;
    for (int64_t v = 0; v < vocab; v++) {
        float e = x[v] > NOT_FINITE ? expf(x[v] - top) : 0.0f;
        x[v] = e;
        z += e;
    }
    /* the candidates, in id order: heavier than the top-p bound and at least min_p */
    double bound = top_p < 1.0 ? (1.0 - top_p) * z / (double)vocab : 0.0;
    int64_t n = 0;
    for (int64_t v = 0; v < vocab; v++) {
        float e = x[v];
        if (e > 0.0f && (double)e > bound && (double)e >= min_p) c[n].e = e, c[n++].id = (int32_t)v;
    }
    /* the edge of the nucleus: the lightest kept weight, and among ties the last kept id */
    float cut_e = 0.0f;
    int32_t cut_id = INT32_MAX;
    if (top_p < 1.0) {
        double mass[PICK_BINS] = {0.0}, need = top_p * z, above = 0.0;
        for (int64_t j = 0; j < n; j++) mass[pick_bin(c[j].e)] += c[j].e;
        int64_t k = 0;
        while (k < PICK_BINS - 1 && above + mass[k] < need) above += mass[k++];
        pick_t *edge = c + n; /* the bin's tokens, sorted (c has room: n <= vocab, and c holds 2 x vocab) */
        int64_t m = 0;
        for (int64_t j = 0; j < n; j++)
            if (pick_bin(c[j].e) == k) edge[m++] = c[j];
        qsort(edge, (size_t)m, sizeof *edge, heavier_first);
        for (int64_t j = 0; j < m && above < need; j++) above += edge[j].e, cut_e = edge[j].e, cut_id = edge[j].id;
        if (m == 0) cut_e = FLT_MAX; /* nothing in reach (rounding): keep the heaviest bins only */
        else if (above < need) cut_e = edge[m - 1].e, cut_id = edge[m - 1].id;
        /* keep: a heavier bin, or the edge bin down to (cut_e, cut_id) */
        int64_t kept = 0;
        for (int64_t j = 0; j < n; j++) {
            int64_t b = pick_bin(c[j].e);
            if (b < k || (b == k && (c[j].e > cut_e || (c[j].e == cut_e && c[j].id <= cut_id)))) c[kept++] = c[j];
        }
        n = kept;
    }
    if (n == 0) return -1;
    double total = 0.0, acc = 0.0;
    for (int64_t j = 0; j < n; j++) total += c[j].e;
    double r = u * total;
    for (int64_t j = 0; j < n; j++) {
        acc += c[j].e;
        if (r < acc) return c[j].id;
    }
    return c[n - 1].id;
}

/* Each logit as torch's path scales it, in float32 (the quotients in double, rounded once to
 * float: -ffast-math would otherwise multiply by a reciprocal): the penalty where seen (a positive
 * logit divided by it, a negative one multiplied), then divided by the temperature. */
#define PICK_TOKENS(NAME, T, LOAD)                                                                      \
    int NAME(const T *logits, const uint8_t *seen, float penalty, float heat, double top_p, double min_p, \
             const double *u, int64_t *out, int64_t rows, int64_t vocab) {                              \
        int failed = 0;                                                                                \
        _Pragma("omp parallel reduction(|| : failed)")                                                 \
        {                                                                                              \
            float *x = malloc((size_t)vocab * sizeof *x);                                              \
            pick_t *c = malloc(2 * (size_t)vocab * sizeof *c);                                         \
            _Pragma("omp for schedule(dynamic)")                                                       \
            for (int64_t i = 0; i < rows; i++) {                                                       \
                const T *l = logits + i * vocab;                                                       \
                const uint8_t *s = seen ? seen + i * vocab : NULL;                                     \
                if (!x || !c) {                                                                        \
                    out[i] = -1, failed = 1;                                                           \
                    continue;                                                                          \
                }                                                                                      \
                for (int64_t v = 0; v < vocab; v++) {                                                  \
                    float a = LOAD(l[v]);                                                              \
                    uint32_t bits;                                                                     \
                    memcpy(&bits, &a, sizeof bits);                                                    \
                    if (s && s[v]) a = a > 0.0f ? (float)((double)a / penalty) : a * penalty;          \
                    float b = (float)((double)a / heat);                                               \
                    x[v] = (bits & 0x7f800000u) == 0x7f800000u ? NOT_FINITE : b; /* inf, NaN: by bits */ \
                }                                                                                      \
                out[i] = pick_row(x, c, vocab, top_p, min_p, u[i]);                                    \
                failed = failed || out[i] < 0;                                                         \
            }                                                                                          \
            free(x);                                                                                   \
            free(c);                                                                                   \
        }                                                                                              \
        return failed ? -1 : 0;                                                                        \
    }

PICK_TOKENS(pick_tokens_bf16, uint16_t, from_bf16)
PICK_TOKENS(pick_tokens_f32, float, LOAD_F32)
