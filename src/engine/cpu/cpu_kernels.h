/*
 * Row kernels of the CPU backend: type conversions, dequantization and
 * the dot products that matmul spends its time in. Each has an AVX2 path
 * (with FMA and F16C) and a portable scalar path with the same results
 * up to the order of float additions.
 *
 * Block layouts follow ggml: Q8_0 is an F16 scale d and 32 int8 values
 * q (value = q * d); Q4_0 is d and 16 bytes whose low nibbles hold
 * values 0..15 and high nibbles values 16..31 (value = (nibble - 8) * d).
 */
#ifndef TAPHOUSE_CPU_KERNELS_H
#define TAPHOUSE_CPU_KERNELS_H

#include <stdint.h>

#include "engine/eng_gguf.h"

#define CPU_QK 32   /* values per Q8_0 and Q4_0 block */

struct cpu_block_q8_0 {
    uint16_t d;
    int8_t qs[CPU_QK];
};

struct cpu_block_q4_0 {
    uint16_t d;
    uint8_t qs[CPU_QK / 2];
};

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

/* y[i] += a * x[i] for an F16 row X of N values. */
void cpu_axpy_f16(float *y, float a, const uint16_t *x, int64_t n);

#endif
