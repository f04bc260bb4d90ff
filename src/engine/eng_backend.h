/*
 * Compute backend interface. The model code describes tensors as
 * (buffer, byte offset, type, row length, rows) and calls the operations
 * below through a table of function pointers. A backend that keeps its
 * buffers in device memory, such as a CUDA library loaded at run time,
 * can therefore replace the CPU one without a change to the model code.
 *
 * Conventions shared by every operation:
 * - A tensor is a row-major matrix of NE1 rows of NE0 elements; rows are
 *   contiguous and ggml_row_size(type, ne0) bytes apart.
 * - Activations are F32. Weights may be any type the backend accepts
 *   (supports_type); the KV cache is F32 or F16.
 * - Host arrays passed in (token ids, positions) are only read during the
 *   call. Operations are ordered: each sees the results of the previous
 *   one, and buf_download returns after all earlier work has finished.
 * - Operations return 0, or a negative value when the backend fails.
 */
#ifndef TAPHOUSE_ENG_BACKEND_H
#define TAPHOUSE_ENG_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "engine/eng_gguf.h"

struct eng_backend;
struct eng_buf;   /* backend memory, opaque to callers */

struct eng_tensor {
    struct eng_buf *buf;
    size_t offset;        /* bytes from the start of BUF */
    enum ggml_type type;
    int64_t ne0;          /* elements per row */
    int64_t ne1;          /* rows */
};

struct eng_backend_ops {
    void (*destroy)(struct eng_backend *be);
    /* Whether matmul and get_rows accept weights of TYPE. */
    int (*supports_type)(struct eng_backend *be, enum ggml_type type);

    /* Buffers. Freshly allocated memory is zeroed. */
    struct eng_buf *(*buf_alloc)(struct eng_backend *be, size_t nbytes);
    /*
     * A buffer holding the NBYTES at HOST. The backend may use HOST in
     * place (no copy) or copy it to its own memory, so the caller keeps
     * HOST alive and unchanged until buf_free.
     */
    struct eng_buf *(*buf_from_host)(struct eng_backend *be,
                                     const void *host, size_t nbytes);
    void (*buf_free)(struct eng_backend *be, struct eng_buf *buf);
    int (*buf_upload)(struct eng_backend *be, struct eng_buf *buf,
                      size_t offset, const void *src, size_t nbytes);
    int (*buf_download)(struct eng_backend *be, struct eng_buf *buf,
                        size_t offset, void *dst, size_t nbytes);

    /* dst (n, w.ne0) F32 = rows IDS[0..n) of W, dequantized. */
    int (*get_rows)(struct eng_backend *be, const struct eng_tensor *dst,
                    const struct eng_tensor *w, const int32_t *ids, int n);
    /* dst (x.ne1, w.ne1) = x (x.ne1, w.ne0) times the transpose of W. */
    int (*matmul)(struct eng_backend *be, const struct eng_tensor *dst,
                  const struct eng_tensor *w, const struct eng_tensor *x);
    /*
     * dst[i] = matmul of W[i] and X, for i < N, with the results that N
     * matmul calls give. Lets the backend convert X once and run the
     * products together (the Q, K and V projections share X). Optional:
     * NULL means the caller makes N matmul calls.
     */
    int (*matmul_multi)(struct eng_backend *be, int n,
                        const struct eng_tensor *const *dst,
                        const struct eng_tensor *const *w,
                        const struct eng_tensor *x);
    /* dst = x / sqrt(mean(x^2) + eps) * w, row by row; W is (1, ne0). */
    int (*rmsnorm)(struct eng_backend *be, const struct eng_tensor *dst,
                   const struct eng_tensor *x, const struct eng_tensor *w,
                   float eps);
    /*
     * In place on X (n_tokens, n_head * head_dim): rotate the adjacent
     * pairs (2i, 2i+1), 2i < n_rot, of each head of token t by the angle
     * pos[t] * base^(-2i / n_rot). Values past n_rot are unchanged.
     */
    int (*rope)(struct eng_backend *be, const struct eng_tensor *x,
                const int32_t *pos, int n_head, int head_dim, int n_rot,
                float base);
    /* dst (same shape as SRC, F32 or F16) = src (F32), converted. */
    int (*copy_rows)(struct eng_backend *be, const struct eng_tensor *dst,
                     const struct eng_tensor *src);
    /*
     * Causal grouped-query attention for the n = q.ne1 newest tokens of
     * one sequence. Q is (n, n_head * head_dim); K and V caches are
     * (n_ctx, n_head_kv * head_dim) and already hold positions
     * 0 .. n_past + n - 1. Token i attends to positions 0 .. n_past + i
     * with scores scaled by 1/sqrt(head_dim). Writes DST (n, n_head *
     * head_dim). Query head h reads cache head h / (n_head / n_head_kv).
     */
    int (*attention)(struct eng_backend *be, const struct eng_tensor *dst,
                     const struct eng_tensor *q,
                     const struct eng_tensor *k_cache,
                     const struct eng_tensor *v_cache, int n_past,
                     int n_head, int n_head_kv, int head_dim);
    /* dst = silu(gate) * up, element by element. */
    int (*swiglu)(struct eng_backend *be, const struct eng_tensor *dst,
                  const struct eng_tensor *gate,
                  const struct eng_tensor *up);
    /* dst = a + b, element by element; DST may alias A or B. */
    int (*add)(struct eng_backend *be, const struct eng_tensor *dst,
               const struct eng_tensor *a, const struct eng_tensor *b);
};

struct eng_backend {
    const struct eng_backend_ops *ops;
    const char *name;     /* "cpu", ... for logs */
};

/*
 * Signature of a backend constructor. A backend built as a shared
 * library exports one under the name "taphouse_backend_create".
 * N_THREADS 0 lets the backend choose. On failure returns a negative
 * value and writes one line into ERR.
 *
 * NOTE: nothing loads such a library yet; eng_model_load always creates
 * the CPU backend.
 */
typedef int (*eng_backend_create_fn)(int n_threads,
                                     struct eng_backend **out, char *err,
                                     size_t errlen);

/* The CPU backend, always built (src/engine/cpu/cpu_backend.c). */
int cpu_backend_create(int n_threads, struct eng_backend **out, char *err,
                       size_t errlen);

/* A view of rows FIRST .. FIRST + N - 1 of T. */
static inline struct eng_tensor eng_tensor_rows(const struct eng_tensor *t,
                                                int64_t first, int64_t n)
{
    struct eng_tensor v = *t;

    v.offset += (size_t)first * ggml_row_size(t->type, (uint64_t)t->ne0);
    v.ne1 = n;
    return v;
}

#endif
