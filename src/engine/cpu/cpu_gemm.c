/*
 * Tiled Q8_0 / Q4_0 matrix multiply with AVX-512 VNNI (see cpu_gemm.h).
 *
 * Packed activations: per block and pair of tokens (a, b), 64 bytes with
 * token a's 32 values in bytes 0..31 and b's in 32..63. The kernel
 * broadcasts a weight block to both 256-bit halves, so one VPDPBUSD
 * serves two tokens, and int32 lane i of each half sums values
 * 4i .. 4i + 3 of one token, as in ggml's AVX kernels. Lanes accumulate
 * d_w * d_x times their integer sum over the blocks and are added up at
 * the end, so the rounding follows ggml's closely.
 *
 * A single token (generation) packs two consecutive blocks b, b + 1 of
 * its row per 64 bytes instead, so no lane idles. Block b is in bytes
 * 0..31 and b + 1 in 32..63 for both types; Q4_0 weights are shuffled
 * into that order as they are loaded. The FMAs still add block b's
 * lanes and then block b + 1's into one 8-lane sum, so every lane does
 * exactly the arithmetic it does in a tile. A token's result therefore
 * does not depend on how many tokens share the step, and greedy output
 * is the same whether a request runs alone or batched.
 *
 * VPDPBUSD multiplies unsigned bytes by signed bytes, so the weights are
 * made unsigned by an offset: Q8_0 values plus 128, Q4_0 nibbles as they
 * are stored (value plus 8). The packed activations carry -offset times
 * each lane's activation sum, which starts every lane's accumulator, so
 * each lane ends with the exact sum of its 4 signed products.
 */
#include "engine/cpu/cpu_gemm.h"

#include <string.h>

#include "engine/cpu/cpu_kernels.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && \
    defined(__AVX512VL__) && defined(__AVX512VNNI__) && \
    defined(__AVX512DQ__) && defined(__F16C__)
#define CPU_HAVE_VNNI 1
#include <immintrin.h>
#endif

#define TILE_ROWS 4
#define TILE_PAIRS 4      /* token pairs per tile: 8 tokens */
/* Tokens whose packed activations (about 3 bytes per value) a thread
 * keeps in its L2 cache while it sweeps its weight rows. */
#define TOKEN_BLOCK 32

/*
 * One Q8_0 block of two tokens, or two blocks of a single token. A
 * missing token or odd last block is all zeros.
 */
struct gemm_pair {
    int8_t qs[64];
    float d[16];        /* each lane's activation scale */
    int32_t corr[16];   /* -offset times the lane's activation sum */
};

int64_t cpu_gemm_pack_units(int64_t n_tokens)
{
    return (n_tokens + 1) / 2;
}

#ifdef CPU_HAVE_VNNI
/* Packed pairs per unit of packing work. */
static int64_t pairs_per_unit(int64_t nb, int64_t n_tokens)
{
    return n_tokens == 1 ? (nb + 1) / 2 : nb;
}
#endif

size_t cpu_gemm_packed_size(enum ggml_type w_type, int64_t ne0,
                            int64_t n_tokens)
{
#ifdef CPU_HAVE_VNNI
    if ((w_type != GGML_TYPE_Q8_0 && w_type != GGML_TYPE_Q4_0) ||
        ne0 <= 0 || ne0 % CPU_QK != 0 || n_tokens <= 0)
        return 0;
    return (size_t)cpu_gemm_pack_units(n_tokens) *
           (size_t)pairs_per_unit(ne0 / CPU_QK, n_tokens) *
           sizeof(struct gemm_pair);
#else
    (void)w_type;
    (void)ne0;
    (void)n_tokens;
    return 0;
#endif
}

#ifdef CPU_HAVE_VNNI

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* Sum of 8 floats, in the order of cpu_kernels.c's AVX2 reductions. */
ALWAYS_INLINE float hsum256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v),
                          _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/*
 * Weight block B of ROW as 32 unsigned bytes (value plus the offset) in
 * both 256-bit halves, and its scale in every lane.
 */
ALWAYS_INLINE void load_weights(int q4, const uint8_t *row, int64_t b,
                                __m512i *q, __m512 *d)
{
    if (q4) {
        const struct cpu_block_q4_0 *blk =
            (const struct cpu_block_q4_0 *)row + b;
        __m128i raw = _mm_loadu_si128((const __m128i *)blk->qs);
        __m128i low_mask = _mm_set1_epi8(0x0f);
        /* Low nibbles are values 0..15, high nibbles 16..31. */
        __m256i y = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_and_si128(raw, low_mask)),
            _mm_and_si128(_mm_srli_epi16(raw, 4), low_mask), 1);

        *q = _mm512_broadcast_i64x4(y);
        *d = _mm512_cvtph_ps(_mm256_set1_epi16((short)blk->d));
    } else {
        const struct cpu_block_q8_0 *blk =
            (const struct cpu_block_q8_0 *)row + b;
        __m256i y = _mm256_loadu_si256((const __m256i *)blk->qs);

        *q = _mm512_xor_si512(_mm512_broadcast_i64x4(y),
                              _mm512_set1_epi8((char)0x80));
        *d = _mm512_cvtph_ps(_mm256_set1_epi16((short)blk->d));
    }
}

/*
 * An NR-row by NP-token-pair tile over all NB blocks. W points at the
 * tile's first row, X at its first token pair (pairs NB blocks apart).
 * Writes dst[t * ldd + r] for the tile's first N_VALID tokens.
 */
ALWAYS_INLINE void tile(int q4, int nr, int np, const uint8_t *w, size_t wrb,
                        int64_t nb, const struct gemm_pair *x, float *dst,
                        int64_t ldd, int n_valid)
{
    __m512 acc[TILE_ROWS][TILE_PAIRS];

#pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 4
        for (int p = 0; p < np; p++)
            acc[r][p] = _mm512_setzero_ps();

    for (int64_t b = 0; b < nb; b++) {
        __m512i wq[TILE_ROWS];
        __m512 wd[TILE_ROWS];

#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
            const uint8_t *row = w + (size_t)r * wrb;
            /* The same block of the next tile's rows, because 4 rows
             * read side by side defeat the hardware prefetcher. A
             * prefetch past the end of the matrix never faults. */
            if (nr == TILE_ROWS)
                _mm_prefetch((const char *)row + TILE_ROWS * wrb +
                             b * (q4 ? 18 : 34), _MM_HINT_T0);
            load_weights(q4, row, b, &wq[r], &wd[r]);
        }
#pragma GCC unroll 4
        for (int p = 0; p < np; p++) {
            const struct gemm_pair *xp = x + p * nb + b;
            __m512i xq = _mm512_loadu_si512(xp->qs);
            __m512i xc = _mm512_loadu_si512(xp->corr);
            __m512 xd = _mm512_loadu_ps(xp->d);

#pragma GCC unroll 4
            for (int r = 0; r < nr; r++) {
                /* Exact lane sums of (w + offset) * x - offset * x. */
                __m512i s = _mm512_dpbusd_epi32(xc, wq[r], xq);
                acc[r][p] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s),
                                            _mm512_mul_ps(wd[r], xd),
                                            acc[r][p]);
            }
        }
    }

    /* The low half of pair p is token 2p, the high half token 2p + 1. */
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++) {
#pragma GCC unroll 4
        for (int p = 0; p < np; p++) {
            if (2 * p < n_valid)
                dst[2 * p * ldd + r] =
                    hsum256(_mm512_castps512_ps256(acc[r][p]));
            if (2 * p + 1 < n_valid)
                dst[(2 * p + 1) * ldd + r] =
                    hsum256(_mm512_extractf32x8_ps(acc[r][p], 1));
        }
    }
}

typedef void (*tile_fn)(const uint8_t *w, size_t wrb, int64_t nb,
                        const struct gemm_pair *x, float *dst, int64_t ldd,
                        int n_valid);

/* One function per (type, rows, pairs), so the loops above unroll and
 * the accumulators stay in registers. */
#define TILE_FN(name, q4, nr, np)                                           \
    static void name(const uint8_t *w, size_t wrb, int64_t nb,              \
                     const struct gemm_pair *x, float *dst, int64_t ldd,    \
                     int n_valid)                                           \
    {                                                                       \
        tile(q4, nr, np, w, wrb, nb, x, dst, ldd, n_valid);                 \
    }

TILE_FN(tile_q8_1x1, 0, 1, 1)
TILE_FN(tile_q8_1x2, 0, 1, 2)
TILE_FN(tile_q8_1x3, 0, 1, 3)
TILE_FN(tile_q8_1x4, 0, 1, 4)
TILE_FN(tile_q8_4x1, 0, 4, 1)
TILE_FN(tile_q8_4x2, 0, 4, 2)
TILE_FN(tile_q8_4x3, 0, 4, 3)
TILE_FN(tile_q8_4x4, 0, 4, 4)
TILE_FN(tile_q4_1x1, 1, 1, 1)
TILE_FN(tile_q4_1x2, 1, 1, 2)
TILE_FN(tile_q4_1x3, 1, 1, 3)
TILE_FN(tile_q4_1x4, 1, 1, 4)
TILE_FN(tile_q4_4x1, 1, 4, 1)
TILE_FN(tile_q4_4x2, 1, 4, 2)
TILE_FN(tile_q4_4x3, 1, 4, 3)
TILE_FN(tile_q4_4x4, 1, 4, 4)

/* Indexed by [is Q4_0][4 rows][token pairs - 1]. */
static const tile_fn tiles[2][2][TILE_PAIRS] = {
    { { tile_q8_1x1, tile_q8_1x2, tile_q8_1x3, tile_q8_1x4 },
      { tile_q8_4x1, tile_q8_4x2, tile_q8_4x3, tile_q8_4x4 } },
    { { tile_q4_1x1, tile_q4_1x2, tile_q4_1x3, tile_q4_1x4 },
      { tile_q4_4x1, tile_q4_4x2, tile_q4_4x3, tile_q4_4x4 } },
};

/* 16 lane scales: D0 in lanes 0..7, D1 in lanes 8..15. */
ALWAYS_INLINE __m512 solo_scales(uint16_t d0, uint16_t d1)
{
    __m256i h = _mm256_mask_blend_epi16(0xFF00, _mm256_set1_epi16((short)d0),
                                        _mm256_set1_epi16((short)d1));
    return _mm512_cvtph_ps(h);
}

/*
 * Blocks B and B + 1 (zeros unless TWO) of ROW in the single-token
 * layout, as unsigned bytes, and their lane scales.
 */
ALWAYS_INLINE void load_solo_weights(int q4, const uint8_t *row, int64_t b,
                                     int two, __m512i *q, __m512 *d)
{
    if (q4) {
        const struct cpu_block_q4_0 *blk =
            (const struct cpu_block_q4_0 *)row + b;
        __m128i lo = _mm_loadu_si128((const __m128i *)blk[0].qs);
        __m128i hi = two ? _mm_loadu_si128((const __m128i *)blk[1].qs)
                         : _mm_setzero_si128();
        __m256i y = _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi,
                                            1);
        /* 16-byte lanes: b 0..15, b+1 0..15, b 16..31, b+1 16..31. */
        __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(y),
                                       _mm256_srli_epi16(y, 4), 1);
        /* Reorder to b 0..15, b 16..31, b+1 0..15, b+1 16..31. */
        v = _mm512_shuffle_i64x2(v, v, _MM_SHUFFLE(3, 1, 2, 0));
        *q = _mm512_and_si512(v, _mm512_set1_epi8(0x0f));
        *d = solo_scales(blk[0].d, two ? blk[1].d : 0);
    } else {
        const struct cpu_block_q8_0 *blk =
            (const struct cpu_block_q8_0 *)row + b;
        __m256i lo = _mm256_loadu_si256((const __m256i *)blk[0].qs);
        __m256i hi = two ? _mm256_loadu_si256((const __m256i *)blk[1].qs)
                         : _mm256_setzero_si256();
        __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);

        *q = _mm512_xor_si512(v, _mm512_set1_epi8((char)0x80));
        *d = solo_scales(blk[0].d, two ? blk[1].d : 0);
    }
}

/*
 * One step of solo_row: blocks 2P and, if TWO, 2P + 1, added to the
 * 8-lane sum ACC in block order, as a tile adds them.
 */
ALWAYS_INLINE __m256 solo_step(int q4, int two, const uint8_t *row,
                               int64_t p, __m512i xq, __m512i xc, __m512 xd,
                               __m256 acc)
{
    __m512i wq;
    __m512 wd;

    load_solo_weights(q4, row, 2 * p, two, &wq, &wd);
    __m512 s = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(xc, wq, xq));
    __m512 scale = _mm512_mul_ps(wd, xd);
    acc = _mm256_fmadd_ps(_mm512_castps512_ps256(s),
                          _mm512_castps512_ps256(scale), acc);
    if (two)
        acc = _mm256_fmadd_ps(_mm512_extractf32x8_ps(s, 1),
                              _mm512_extractf32x8_ps(scale, 1), acc);
    return acc;
}

/* Dot product of ROW (NB blocks) with one token packed in the
 * single-token layout. */
ALWAYS_INLINE float solo_row(int q4, const uint8_t *row, int64_t nb,
                             const struct gemm_pair *x)
{
    __m256 acc = _mm256_setzero_ps();
    int64_t p;

    for (p = 0; p < nb / 2; p++)
        acc = solo_step(q4, 1, row, p, _mm512_loadu_si512(x[p].qs),
                        _mm512_loadu_si512(x[p].corr),
                        _mm512_loadu_ps(x[p].d), acc);
    if (nb % 2)
        acc = solo_step(q4, 0, row, p, _mm512_loadu_si512(x[p].qs),
                        _mm512_loadu_si512(x[p].corr),
                        _mm512_loadu_ps(x[p].d), acc);
    return hsum256(acc);
}

/*
 * Rows R0 .. R1 - 1 against one token, one row at a time, so the rows
 * stream through memory in order. NOTE: two rows side by side ran
 * generation at less than half this speed (bench_engine tg128, 110M
 * Q8_0, 2 threads, AMD EPYC with AVX-512). The cause was not found.
 */
ALWAYS_INLINE void solo_rows(int q4, const uint8_t *w, size_t wrb,
                             int64_t nb, int64_t r0, int64_t r1,
                             const struct gemm_pair *x, float *dst)
{
    for (int64_t r = r0; r < r1; r++)
        dst[r] = solo_row(q4, w + (size_t)r * wrb, nb, x);
}

static void solo_rows_q8_0(const uint8_t *w, size_t wrb, int64_t nb,
                           int64_t r0, int64_t r1,
                           const struct gemm_pair *x, float *dst)
{
    solo_rows(0, w, wrb, nb, r0, r1, x, dst);
}

static void solo_rows_q4_0(const uint8_t *w, size_t wrb, int64_t nb,
                           int64_t r0, int64_t r1,
                           const struct gemm_pair *x, float *dst)
{
    solo_rows(1, w, wrb, nb, r0, r1, x, dst);
}

/* Quantize 32 floats as cpu_quantize_row_q8_0 does, bit for bit: the
 * same max, scale and product, and VCVTPS2DQ rounds to nearest even as
 * rintf does in the default rounding mode. */
static void quantize_block(const float *x, struct cpu_block_q8_0 *b)
{
    __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
    float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0),
                                                    _mm512_abs_ps(v1)));
    float d = amax / 127.0f;
    __m512 id = _mm512_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);

    b->d = cpu_fp32_to_fp16(d);
    _mm_storeu_si128((__m128i *)b->qs,
                     _mm512_cvtsepi32_epi8(
                         _mm512_cvtps_epi32(_mm512_mul_ps(v0, id))));
    _mm_storeu_si128((__m128i *)(b->qs + 16),
                     _mm512_cvtsepi32_epi8(
                         _mm512_cvtps_epi32(_mm512_mul_ps(v1, id))));
}

/* -offset (8 for Q4_0, 128 for Q8_0) times the lane sums of O's values. */
static void set_corrections(int q4, struct gemm_pair *o)
{
    __m512i sums = _mm512_dpbusd_epi32(_mm512_setzero_si512(),
                                       _mm512_set1_epi8(1),
                                       _mm512_loadu_si512(o->qs));

    _mm512_storeu_si512(o->corr,
                        _mm512_sub_epi32(_mm512_setzero_si512(),
                                         _mm512_slli_epi32(sums,
                                                           q4 ? 3 : 7)));
}

/* Pack the N_VALID (1 or 2) tokens at X, rows NE0 apart, as NB pairs. */
static void pack_pair(int q4, const float *x, int64_t ne0, int n_valid,
                      struct gemm_pair *dst)
{
    for (int64_t b = 0; b < ne0 / CPU_QK; b++) {
        struct gemm_pair *o = &dst[b];

        for (int k = 0; k < 2; k++) {
            struct cpu_block_q8_0 blk;
            float d;

            memset(&blk, 0, sizeof(blk));
            if (k < n_valid)
                quantize_block(x + k * ne0 + b * CPU_QK, &blk);
            memcpy(o->qs + 32 * k, blk.qs, 32);
            d = cpu_fp16_to_fp32(blk.d);
            for (int i = 0; i < 8; i++)
                o->d[8 * k + i] = d;
        }
        set_corrections(q4, o);
    }
}

/* Pack one token's row X of NB blocks in the single-token layout. */
static void pack_solo(int q4, const float *x, int64_t nb,
                      struct gemm_pair *dst)
{
    for (int64_t p = 0; p < (nb + 1) / 2; p++) {
        struct cpu_block_q8_0 blk[2];
        struct gemm_pair *o = &dst[p];

        /* Quantize the pair; a missing second block stays all zero. */
        memset(&blk[1], 0, sizeof(blk[1]));
        quantize_block(x + 2 * p * CPU_QK, &blk[0]);
        if (2 * p + 1 < nb)
            quantize_block(x + (2 * p + 1) * CPU_QK, &blk[1]);

        memcpy(o->qs, blk[0].qs, 32);
        memcpy(o->qs + 32, blk[1].qs, 32);
        _mm512_storeu_ps(o->d, solo_scales(blk[0].d, blk[1].d));
        set_corrections(q4, o);
    }
}

void cpu_gemm_pack(enum ggml_type w_type, const float *x, int64_t ne0,
                   int64_t n_tokens, int64_t u0, int64_t u1, void *dst)
{
    int q4 = w_type == GGML_TYPE_Q4_0;
    int64_t nb = ne0 / CPU_QK;

    if (n_tokens == 1) {
        if (u0 < u1)
            pack_solo(q4, x, nb, dst);
        return;
    }
    for (int64_t u = u0; u < u1; u++) {
        int n_valid = n_tokens - 2 * u < 2 ? 1 : 2;
        pack_pair(q4, x + 2 * u * ne0, ne0, n_valid,
                  (struct gemm_pair *)dst + u * nb);
    }
}

void cpu_gemm_rows(enum ggml_type w_type, const void *w, size_t w_row_bytes,
                   int64_t ne0, int64_t r0, int64_t r1, const void *x,
                   int64_t n_tokens, float *dst, int64_t ldd)
{
    int q4 = w_type == GGML_TYPE_Q4_0;
    int64_t nb = ne0 / CPU_QK;
    int64_t n_pairs = cpu_gemm_pack_units(n_tokens);
    int64_t block = TOKEN_BLOCK / 2;
    const uint8_t *wb = w;
    const struct gemm_pair *xp = x;

    /* A single token reads each row as one stream: with 4-row tiles,
     * generation ran at about half the speed (bench_engine tg128, 110M
     * Q8_0, 2 threads, AMD EPYC with AVX-512). */
    if (n_tokens == 1) {
        if (q4)
            solo_rows_q4_0(wb, w_row_bytes, nb, r0, r1, xp, dst);
        else
            solo_rows_q8_0(wb, w_row_bytes, nb, r0, r1, xp, dst);
        return;
    }

    /* Token blocks outermost, so their packed activations stay cached
     * while the rows stream past; within a block, 4 x 8 tiles. */
    for (int64_t p0 = 0; p0 < n_pairs; p0 += block) {
        int64_t p1 = p0 + block < n_pairs ? p0 + block : n_pairs;
        for (int64_t r = r0; r < r1;) {
            int nr = r1 - r >= TILE_ROWS ? TILE_ROWS : 1;
            for (int64_t p = p0; p < p1; p += TILE_PAIRS) {
                int np = p1 - p >= TILE_PAIRS ? TILE_PAIRS : (int)(p1 - p);
                int64_t left = n_tokens - 2 * p;
                tiles[q4][nr == TILE_ROWS][np - 1](
                    wb + (size_t)r * w_row_bytes, w_row_bytes, nb,
                    xp + p * nb, dst + 2 * p * ldd + r, ldd,
                    left < 2 * TILE_PAIRS ? (int)left : 2 * TILE_PAIRS);
            }
            r += nr;
        }
    }
}

#else /* !CPU_HAVE_VNNI: cpu_gemm_packed_size() is 0, so these never run. */

void cpu_gemm_pack(enum ggml_type w_type, const float *x, int64_t ne0,
                   int64_t n_tokens, int64_t u0, int64_t u1, void *dst)
{
    (void)w_type;
    (void)x;
    (void)ne0;
    (void)n_tokens;
    (void)u0;
    (void)u1;
    (void)dst;
}

void cpu_gemm_rows(enum ggml_type w_type, const void *w, size_t w_row_bytes,
                   int64_t ne0, int64_t r0, int64_t r1, const void *x,
                   int64_t n_tokens, float *dst, int64_t ldd)
{
    (void)w_type;
    (void)w;
    (void)w_row_bytes;
    (void)ne0;
    (void)r0;
    (void)r1;
    (void)x;
    (void)n_tokens;
    (void)dst;
    (void)ldd;
}

#endif
