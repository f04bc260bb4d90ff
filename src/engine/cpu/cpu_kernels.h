/*
 * Row kernels of the CPU backend: type conversions, dequantization,
 * the dot products of matmuls that cpu_gemm does not take, and the
 * attention loops. Each has an AVX2 path (with FMA and F16C), some an
 * AVX-512 one, and a portable scalar path with the same results up to
 * the order of float additions.
 *
 * Block layouts follow ggml: Q8_0 is an F16 scale d and 32 int8 values
 * q (value = q * d); Q4_0 is d and 16 bytes whose low nibbles hold
 * values 0..15 and high nibbles values 16..31 (value = (nibble - 8) * d).
 */
#ifndef TAPHOUSE_CPU_KERNELS_H
#define TAPHOUSE_CPU_KERNELS_H

#include <stdint.h>

#include "engine/eng_gguf.h"

#ifdef __F16C__
#include <immintrin.h>
#endif

#define CPU_QK 32   /* values per Q8_0 and Q4_0 block */

struct cpu_block_q8_0 {
    uint16_t d;
    int8_t qs[CPU_QK];
};

struct cpu_block_q4_0 {
    uint16_t d;
    uint8_t qs[CPU_QK / 2];
};

/*
 * F16 to F32, inlined: the kernels convert two scales per 32-value block,
 * and an out-of-line call there took about a fifth of the cycles in a
 * perf profile of bench_engine (110M shape, 2 threads).
 * Without F16C this is ggml_fp16_to_fp32, which gives the same values.
 */
static inline float cpu_fp16_to_fp32(uint16_t h)
{
#ifdef __F16C__
    return _cvtsh_ss(h);
#else
    return ggml_fp16_to_fp32(h);
#endif
}

/* Round to nearest even, as the F16C instruction does. */
uint16_t cpu_fp32_to_fp16(float f);
uint16_t cpu_fp32_to_bf16(float f);

/*
 * The type that activations are converted to before a dot product with
 * weights of W_TYPE: F32 for F32, F16 for F16, BF16 for BF16 and Q8_0
 * for both quantized types. ggml makes the same choices, so the results
 * round as its do.
 */
enum ggml_type cpu_activation_type(enum ggml_type w_type);

/* Convert N floats at X into a row of TYPE at DST (N fits its blocks). */
void cpu_convert_row(enum ggml_type type, const float *x, void *dst,
                     int64_t n);
void cpu_quantize_row_q8_0(const float *x, struct cpu_block_q8_0 *dst,
                           int64_t n);
/* Dequantize or widen a row of N values of TYPE into floats. */
void cpu_dequantize_row(enum ggml_type type, const void *src, float *dst,
                        int64_t n);

/*
 * Dot product of a weight row of W_TYPE with an activation row already
 * converted to cpu_activation_type(W_TYPE); N values.
 */
float cpu_vec_dot(enum ggml_type w_type, const void *w, const void *x,
                  int64_t n);

float cpu_dot_f32(const float *a, const float *b, int64_t n);
float cpu_dot_f16(const uint16_t *a, const uint16_t *b, int64_t n);
float cpu_dot_bf16(const uint16_t *a, const uint16_t *b, int64_t n);
float cpu_dot_q8_0(const struct cpu_block_q8_0 *w,
                   const struct cpu_block_q8_0 *x, int64_t n);
float cpu_dot_q4_0(const struct cpu_block_q4_0 *w,
                   const struct cpu_block_q8_0 *x, int64_t n);

/* Maximum of the N floats at X, skipping NaNs (-INFINITY when N is 0). */
float cpu_max_f32(const float *x, int64_t n);
/* Sum of the N floats at X, added in double. */
double cpu_sum_f32_f64(const float *x, int64_t n);
/* x[i] *= s for i < N. */
void cpu_scale_f32(float *x, float s, int64_t n);

/* Round each of the N floats at X to the nearest F16 value, in place. */
void cpu_round_f16(float *x, int64_t n);

/* y[i] += a * x[i] for an F16 row X of N values. */
void cpu_axpy_f16(float *y, float a, const uint16_t *x, int64_t n);

/*
 * out[p] = cpu_dot_f16(rows + p * stride, q, n) for p < N_ROWS: the
 * attention scores of one query against N_ROWS cached keys.
 */
void cpu_dot_f16_rows(float *out, const uint16_t *rows, int64_t stride,
                      int64_t n_rows, const uint16_t *q, int64_t n);

/*
 * y = sum over p < N_ROWS of w[p] * row p (rows STRIDE halves apart, N
 * values each). Rounds as zeroing Y and calling cpu_axpy_f16 for each p
 * in order would, but keeps blocks of Y in registers meanwhile.
 */
void cpu_weighted_sum_f16(float *y, const float *w, const uint16_t *rows,
                          int64_t stride, int64_t n_rows, int64_t n);

#endif
