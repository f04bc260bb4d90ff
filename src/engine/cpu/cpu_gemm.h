/*
 * Tiled matrix multiply of Q8_0 or Q4_0 weights with Q8_0 activations,
 * for CPUs with AVX-512 VNNI. The weights are used in place, as stored
 * in the GGUF file. The activations are quantized to Q8_0 exactly as
 * cpu_quantize_row_q8_0 does, then packed in the order the kernels load
 * them.
 *
 * With 2 or more tokens, one 512-bit register holds a block of two
 * tokens, so each weight block, broadcast, serves two tokens in one
 * VNNI instruction. Tiles are 4 weight rows by 8 tokens. A single token
 * (generation) packs two blocks per register and reads each weight row
 * as one stream. Both paths add each token's block products in the
 * same order, so a token's result does not depend on the batch.
 *
 * Each block's integer dot product is exact, and d_w * d_x times it is
 * added to float lanes as ggml does. Results therefore differ from
 * cpu_vec_dot only in the order of the float additions.
 *
 * Builds without AVX-512 VNNI get cpu_gemm_packed_size() == 0, and the
 * caller uses cpu_vec_dot row by row instead.
 */
#ifndef TAPHOUSE_CPU_GEMM_H
#define TAPHOUSE_CPU_GEMM_H

#include <stddef.h>
#include <stdint.h>

#include "engine/eng_gguf.h"

/*
 * Bytes of packed activations for N_TOKENS rows of NE0 values, for
 * weights of W_TYPE. Returns 0 when this build has no tiled kernel for
 * W_TYPE or NE0 is not a multiple of 32. The buffer should be 64-byte
 * aligned.
 */
size_t cpu_gemm_packed_size(enum ggml_type w_type, int64_t ne0,
                            int64_t n_tokens);

/*
 * Units of packing work for N_TOKENS tokens: one per pair of tokens
 * (the last may hold one). Units pack independently, so threads may
 * split them.
 */
int64_t cpu_gemm_pack_units(int64_t n_tokens);

/*
 * Quantize and pack units U0 .. U1 - 1 of X (N_TOKENS, NE0) F32 into
 * DST, a buffer of cpu_gemm_packed_size() bytes.
 */
void cpu_gemm_pack(enum ggml_type w_type, const float *x, int64_t ne0,
                   int64_t n_tokens, int64_t u0, int64_t u1, void *dst);

/*
 * dst[t * ldd + r] = dot(weight row r, token t) for rows R0 .. R1 - 1 and
 * tokens 0 .. N_TOKENS - 1. W is the whole weight matrix, with rows
 * W_ROW_BYTES apart, and X the buffer filled by cpu_gemm_pack.
 */
void cpu_gemm_rows(enum ggml_type w_type, const void *w, size_t w_row_bytes,
                   int64_t ne0, int64_t r0, int64_t r1, const void *x,
                   int64_t n_tokens, float *dst, int64_t ldd);

#endif
