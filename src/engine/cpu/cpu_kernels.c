/*
 * Row kernels of the CPU backend. The AVX2 paths also need FMA and F16C,
 * which every x86-64 CPU with AVX2 has. The AVX-512 paths also need
 * AVX-512F and DQ. Other builds use the scalar code, which defines the
 * expected results.
 */
#include "engine/cpu/cpu_kernels.h"

#include <math.h>
#include <string.h>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define CPU_HAVE_AVX2 1
#include <immintrin.h>
#if defined(__AVX512F__) && defined(__AVX512DQ__)
#define CPU_HAVE_AVX512 1
#endif
#endif

/* Maximum row length (a head dimension) that cpu_dot_f16_rows converts
 * up front. */
#define CPU_ROWS_MAX_N 256

uint16_t cpu_fp32_to_fp16(float f)
{
    uint32_t x, sign, absx;

    memcpy(&x, &f, sizeof(x));
    sign = (x >> 16) & 0x8000;
    absx = x & 0x7fffffff;
    if (absx >= 0x7f800000)                    /* inf or NaN */
        return (uint16_t)(sign | 0x7c00 | (absx > 0x7f800000 ? 0x200 : 0));
    if (absx >= 0x477ff000)                    /* rounds past 65504 */
        return (uint16_t)(sign | 0x7c00);
    if (absx < 0x38800000) {
        /* Half subnormal: scale by 2^24 (exact) and round to even. */
        float a;
        memcpy(&a, &absx, sizeof(a));
        return (uint16_t)(sign | (uint32_t)lrintf(a * 16777216.0f));
    }
    /* Normal: add half an ulp (ties to even) and rebias the exponent;
     * a carry out of the mantissa correctly bumps the exponent. */
    absx += 0xfff + ((absx >> 13) & 1);
    return (uint16_t)(sign | ((absx - (112u << 23)) >> 13));
}

uint16_t cpu_fp32_to_bf16(float f)
{
    uint32_t x;

    memcpy(&x, &f, sizeof(x));
    if ((x & 0x7fffffff) > 0x7f800000)         /* NaN: keep it quiet */
        return (uint16_t)((x >> 16) | 0x40);
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

enum ggml_type cpu_activation_type(enum ggml_type w_type)
{
    switch (w_type) {
    case GGML_TYPE_Q8_0:
    case GGML_TYPE_Q4_0:
        return GGML_TYPE_Q8_0;
    default:
        return w_type;
    }
}

void cpu_quantize_row_q8_0(const float *x, struct cpu_block_q8_0 *dst,
                           int64_t n)
{
    for (int64_t b = 0; b < n / CPU_QK; b++) {
        const float *xb = x + b * CPU_QK;
        float amax = 0.0f;

        for (int i = 0; i < CPU_QK; i++)
            amax = fmaxf(amax, fabsf(xb[i]));
        /* Scale by 127/amax and round ties to even, as ggml's SIMD
         * quantizer does, so activations round the same way. */
        float d = amax / 127.0f;
        float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        dst[b].d = cpu_fp32_to_fp16(d);
        for (int i = 0; i < CPU_QK; i++)
            dst[b].qs[i] = (int8_t)rintf(xb[i] * id);
    }
}

void cpu_convert_row(enum ggml_type type, const float *x, void *dst,
                     int64_t n)
{
    uint16_t *h = dst;

    switch (type) {
    case GGML_TYPE_F32:
        memcpy(dst, x, (size_t)n * sizeof(float));
        break;
    case GGML_TYPE_F16: {
        int64_t i = 0;
#ifdef CPU_HAVE_AVX2
        for (; i + 8 <= n; i += 8) {
            __m128i v = _mm256_cvtps_ph(_mm256_loadu_ps(x + i),
                                        _MM_FROUND_TO_NEAREST_INT);
            _mm_storeu_si128((__m128i *)(h + i), v);
        }
#endif
        for (; i < n; i++)
            h[i] = cpu_fp32_to_fp16(x[i]);
        break;
    }
    case GGML_TYPE_BF16:
        for (int64_t i = 0; i < n; i++)
            h[i] = cpu_fp32_to_bf16(x[i]);
        break;
    case GGML_TYPE_Q8_0:
        cpu_quantize_row_q8_0(x, dst, n);
        break;
    default:
        break;
    }
}

void cpu_dequantize_row(enum ggml_type type, const void *src, float *dst,
                        int64_t n)
{
    const uint16_t *h = src;
    const struct cpu_block_q8_0 *q8 = src;
    const struct cpu_block_q4_0 *q4 = src;

    switch (type) {
    case GGML_TYPE_F32:
        memcpy(dst, src, (size_t)n * sizeof(float));
        break;
    case GGML_TYPE_F16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = cpu_fp16_to_fp32(h[i]);
        break;
    case GGML_TYPE_BF16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = ggml_bf16_to_fp32(h[i]);
        break;
    case GGML_TYPE_Q8_0:
        for (int64_t b = 0; b < n / CPU_QK; b++) {
            float d = cpu_fp16_to_fp32(q8[b].d);
            for (int i = 0; i < CPU_QK; i++)
                dst[b * CPU_QK + i] = q8[b].qs[i] * d;
        }
        break;
    case GGML_TYPE_Q4_0:
        for (int64_t b = 0; b < n / CPU_QK; b++) {
            float d = cpu_fp16_to_fp32(q4[b].d);
            float *o = dst + b * CPU_QK;
            for (int i = 0; i < CPU_QK / 2; i++) {
                o[i] = ((q4[b].qs[i] & 0x0f) - 8) * d;
                o[i + CPU_QK / 2] = ((q4[b].qs[i] >> 4) - 8) * d;
            }
        }
        break;
    }
}

#ifdef CPU_HAVE_AVX2
static float hsum256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v),
                          _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Sum of products of 32 signed bytes, as 8 float partial sums. The sign
 * trick lets maddubs (unsigned x signed) multiply two signed vectors;
 * |a| <= 127 keeps each pair sum inside int16. */
static __m256 mul_sum_i8(__m256i a, __m256i b)
{
    __m256i ax = _mm256_sign_epi8(a, a);
    __m256i sy = _mm256_sign_epi8(b, a);
    __m256i dot16 = _mm256_maddubs_epi16(ax, sy);
    __m256i dot32 = _mm256_madd_epi16(dot16, _mm256_set1_epi16(1));
    return _mm256_cvtepi32_ps(dot32);
}
#endif

float cpu_dot_f32(const float *a, const float *b, int64_t n)
{
    int64_t i = 0;
    float sum = 0.0f;
#ifdef CPU_HAVE_AVX2
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i),
                               _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8),
                               _mm256_loadu_ps(b + i + 8), acc1);
    }
    sum = hsum256(_mm256_add_ps(acc0, acc1));
#endif
    for (; i < n; i++)
        sum += a[i] * b[i];
    return sum;
}

/* cpu_dot_f16, inlined into the row loop of cpu_dot_f16_rows. */
static inline float dot_f16(const uint16_t *a, const uint16_t *b, int64_t n)
{
    int64_t i = 0;
    float sum = 0.0f;
#ifdef CPU_HAVE_AVX2
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    for (; i + 16 <= n; i += 16) {
        __m256 a0 = _mm256_cvtph_ps(_mm_loadu_si128((const void *)(a + i)));
        __m256 b0 = _mm256_cvtph_ps(_mm_loadu_si128((const void *)(b + i)));
        __m256 a1 = _mm256_cvtph_ps(
            _mm_loadu_si128((const void *)(a + i + 8)));
        __m256 b1 = _mm256_cvtph_ps(
            _mm_loadu_si128((const void *)(b + i + 8)));
        acc0 = _mm256_fmadd_ps(a0, b0, acc0);
        acc1 = _mm256_fmadd_ps(a1, b1, acc1);
    }
    sum = hsum256(_mm256_add_ps(acc0, acc1));
#endif
    for (; i < n; i++)
        sum += cpu_fp16_to_fp32(a[i]) * cpu_fp16_to_fp32(b[i]);
    return sum;
}

float cpu_dot_f16(const uint16_t *a, const uint16_t *b, int64_t n)
{
    return dot_f16(a, b, n);
}

void cpu_dot_f16_rows(float *out, const uint16_t *rows, int64_t stride,
                      int64_t n_rows, const uint16_t *q, int64_t n)
{
#ifdef CPU_HAVE_AVX512
    /* The query converted once. Lanes 0..7 and 8..15 of ACC are
     * dot_f16's two accumulators, so the sums round as there. */
    if (n % 16 == 0 && n <= CPU_ROWS_MAX_N) {
        float qf[CPU_ROWS_MAX_N];

        for (int64_t i = 0; i < n; i += 16)
            _mm512_storeu_ps(qf + i, _mm512_cvtph_ps(
                _mm256_loadu_si256((const __m256i *)(q + i))));
        for (int64_t p = 0; p < n_rows; p++) {
            const uint16_t *k = rows + p * stride;
            __m512 acc = _mm512_setzero_ps();

            for (int64_t i = 0; i < n; i += 16)
                acc = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256(
                                          (const __m256i *)(k + i))),
                                      _mm512_loadu_ps(qf + i), acc);
            out[p] = hsum256(_mm256_add_ps(_mm512_castps512_ps256(acc),
                                           _mm512_extractf32x8_ps(acc, 1)));
        }
        return;
    }
#endif
    for (int64_t p = 0; p < n_rows; p++)
        out[p] = dot_f16(rows + p * stride, q, n);
}

float cpu_dot_bf16(const uint16_t *a, const uint16_t *b, int64_t n)
{
    float sum = 0.0f;

    for (int64_t i = 0; i < n; i++)
        sum += ggml_bf16_to_fp32(a[i]) * ggml_bf16_to_fp32(b[i]);
    return sum;
}

#ifdef CPU_HAVE_AVX2
/* Q4_0 block B as its 32 values (nibble - 8), signed bytes in order. */
static __m256i unpack_q4_0(const struct cpu_block_q4_0 *b)
{
    /* Low nibbles into bytes 0..15, high nibbles into 16..31. */
    __m128i raw = _mm_loadu_si128((const __m128i *)b->qs);
    __m256i q = _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw);

    return _mm256_sub_epi8(_mm256_and_si256(q, _mm256_set1_epi8(0x0f)),
                           _mm256_set1_epi8(8));
}
#endif

float cpu_dot_q8_0(const struct cpu_block_q8_0 *w,
                   const struct cpu_block_q8_0 *x, int64_t n)
{
    int64_t nb = n / CPU_QK;
#ifdef CPU_HAVE_AVX2
    /* Two chains, even and odd blocks, to hide the FMA latency. */
    __m256 acc[2] = { _mm256_setzero_ps(), _mm256_setzero_ps() };
    for (int64_t b = 0; b < nb; b++) {
        __m256 d = _mm256_set1_ps(cpu_fp16_to_fp32(w[b].d) *
                                  cpu_fp16_to_fp32(x[b].d));
        __m256i qw = _mm256_loadu_si256((const __m256i *)w[b].qs);
        __m256i qx = _mm256_loadu_si256((const __m256i *)x[b].qs);
        acc[b & 1] = _mm256_fmadd_ps(d, mul_sum_i8(qw, qx), acc[b & 1]);
    }
    return hsum256(_mm256_add_ps(acc[0], acc[1]));
#else
    float sum = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        int32_t s = 0;
        for (int i = 0; i < CPU_QK; i++)
            s += w[b].qs[i] * x[b].qs[i];
        sum += (float)s * cpu_fp16_to_fp32(w[b].d) *
               cpu_fp16_to_fp32(x[b].d);
    }
    return sum;
#endif
}

float cpu_dot_q4_0(const struct cpu_block_q4_0 *w,
                   const struct cpu_block_q8_0 *x, int64_t n)
{
    int64_t nb = n / CPU_QK;
#ifdef CPU_HAVE_AVX2
    /* Two chains, even and odd blocks, to hide the FMA latency. */
    __m256 acc[2] = { _mm256_setzero_ps(), _mm256_setzero_ps() };
    for (int64_t b = 0; b < nb; b++) {
        __m256 d = _mm256_set1_ps(cpu_fp16_to_fp32(w[b].d) *
                                  cpu_fp16_to_fp32(x[b].d));
        __m256i qx = _mm256_loadu_si256((const __m256i *)x[b].qs);
        acc[b & 1] = _mm256_fmadd_ps(d, mul_sum_i8(unpack_q4_0(&w[b]), qx),
                                     acc[b & 1]);
    }
    return hsum256(_mm256_add_ps(acc[0], acc[1]));
#else
    float sum = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        int32_t s = 0;
        for (int i = 0; i < CPU_QK / 2; i++) {
            s += ((w[b].qs[i] & 0x0f) - 8) * x[b].qs[i];
            s += ((w[b].qs[i] >> 4) - 8) * x[b].qs[i + CPU_QK / 2];
        }
        sum += (float)s * cpu_fp16_to_fp32(w[b].d) *
               cpu_fp16_to_fp32(x[b].d);
    }
    return sum;
#endif
}

float cpu_vec_dot(enum ggml_type w_type, const void *w, const void *x,
                  int64_t n)
{
    switch (w_type) {
    case GGML_TYPE_F32:
        return cpu_dot_f32(w, x, n);
    case GGML_TYPE_F16:
        return cpu_dot_f16(w, x, n);
    case GGML_TYPE_BF16:
        return cpu_dot_bf16(w, x, n);
    case GGML_TYPE_Q8_0:
        return cpu_dot_q8_0(w, x, n);
    case GGML_TYPE_Q4_0:
        return cpu_dot_q4_0(w, x, n);
    }
    return 0.0f;
}

float cpu_max_f32(const float *x, int64_t n)
{
    float max = -INFINITY;
    int64_t i = 0;
#ifdef CPU_HAVE_AVX512
    /* The max does not depend on the order, so lanes give the same. */
    __m512 m = _mm512_set1_ps(-INFINITY);
    for (; i + 16 <= n; i += 16)
        m = _mm512_max_ps(_mm512_loadu_ps(x + i), m);
    max = _mm512_reduce_max_ps(m);
#endif
    for (; i < n; i++)
        max = x[i] > max ? x[i] : max;
    return max;
}

double cpu_sum_f32_f64(const float *x, int64_t n)
{
    double sum = 0.0;
    int64_t i = 0;
#ifdef CPU_HAVE_AVX512
    /* Two chains of 8 doubles: the order changes, but in double, far
     * below the float rounding of the callers' results. */
    __m512d a0 = _mm512_setzero_pd(), a1 = _mm512_setzero_pd();
    for (; i + 16 <= n; i += 16) {
        a0 = _mm512_add_pd(a0, _mm512_cvtps_pd(_mm256_loadu_ps(x + i)));
        a1 = _mm512_add_pd(a1, _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 8)));
    }
    sum = _mm512_reduce_add_pd(_mm512_add_pd(a0, a1));
#endif
    for (; i < n; i++)
        sum += (double)x[i];
    return sum;
}

void cpu_scale_f32(float *x, float s, int64_t n)
{
    int64_t i = 0;
#ifdef CPU_HAVE_AVX2
    __m256 vs = _mm256_set1_ps(s);
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vs));
#endif
    for (; i < n; i++)
        x[i] *= s;
}

void cpu_round_f16(float *x, int64_t n)
{
    int64_t i = 0;
#ifdef CPU_HAVE_AVX2
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(x + i),
                                    _MM_FROUND_TO_NEAREST_INT);
        _mm256_storeu_ps(x + i, _mm256_cvtph_ps(h));
    }
#endif
    for (; i < n; i++)
        x[i] = cpu_fp16_to_fp32(cpu_fp32_to_fp16(x[i]));
}

void cpu_axpy_f16(float *y, float a, const uint16_t *x, int64_t n)
{
    int64_t i = 0;
#ifdef CPU_HAVE_AVX2
    __m256 va = _mm256_set1_ps(a);
    for (; i + 8 <= n; i += 8) {
        __m256 vx = _mm256_cvtph_ps(_mm_loadu_si128((const void *)(x + i)));
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, vx,
                                                _mm256_loadu_ps(y + i)));
    }
#endif
    for (; i < n; i++)
        y[i] += a * cpu_fp16_to_fp32(x[i]);
}

void cpu_weighted_sum_f16(float *y, const float *w, const uint16_t *rows,
                          int64_t stride, int64_t n_rows, int64_t n)
{
    int64_t i = 0;
#ifdef CPU_HAVE_AVX512
    /* 64 values of Y at a time in four registers, over every row. */
    for (; i + 64 <= n; i += 64) {
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
        __m512 a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
        for (int64_t p = 0; p < n_rows; p++) {
            const __m256i *x = (const __m256i *)(rows + p * stride + i);
            __m512 wp = _mm512_set1_ps(w[p]);
            a0 = _mm512_fmadd_ps(wp, _mm512_cvtph_ps(
                     _mm256_loadu_si256(x)), a0);
            a1 = _mm512_fmadd_ps(wp, _mm512_cvtph_ps(
                     _mm256_loadu_si256(x + 1)), a1);
            a2 = _mm512_fmadd_ps(wp, _mm512_cvtph_ps(
                     _mm256_loadu_si256(x + 2)), a2);
            a3 = _mm512_fmadd_ps(wp, _mm512_cvtph_ps(
                     _mm256_loadu_si256(x + 3)), a3);
        }
        _mm512_storeu_ps(y + i, a0);
        _mm512_storeu_ps(y + i + 16, a1);
        _mm512_storeu_ps(y + i + 32, a2);
        _mm512_storeu_ps(y + i + 48, a3);
    }
#endif
#ifdef CPU_HAVE_AVX2
    /* 32 values of Y at a time in four registers, over every row. */
    for (; i + 32 <= n; i += 32) {
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
        for (int64_t p = 0; p < n_rows; p++) {
            const uint16_t *x = rows + p * stride + i;
            __m256 wp = _mm256_set1_ps(w[p]);
            a0 = _mm256_fmadd_ps(wp, _mm256_cvtph_ps(
                     _mm_loadu_si128((const void *)x)), a0);
            a1 = _mm256_fmadd_ps(wp, _mm256_cvtph_ps(
                     _mm_loadu_si128((const void *)(x + 8))), a1);
            a2 = _mm256_fmadd_ps(wp, _mm256_cvtph_ps(
                     _mm_loadu_si128((const void *)(x + 16))), a2);
            a3 = _mm256_fmadd_ps(wp, _mm256_cvtph_ps(
                     _mm_loadu_si128((const void *)(x + 24))), a3);
        }
        _mm256_storeu_ps(y + i, a0);
        _mm256_storeu_ps(y + i + 8, a1);
        _mm256_storeu_ps(y + i + 16, a2);
        _mm256_storeu_ps(y + i + 24, a3);
    }
#endif
    /* The rest as cpu_axpy_f16 would compute it. */
    for (int64_t j = i; j < n; j++)
        y[j] = 0.0f;
    if (i < n)
        for (int64_t p = 0; p < n_rows; p++)
            cpu_axpy_f16(y + i, w[p], rows + p * stride + i, n - i);
}
