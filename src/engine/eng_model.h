/*
 * Llama-architecture model: weights from a GGUF file, a KV cache per
 * sequence, and a forward pass over a batch of sequences. The tensor
 * operations run on a backend (eng_backend.h); callers never see which.
 */
#ifndef TAPHOUSE_ENG_MODEL_H
#define TAPHOUSE_ENG_MODEL_H

#include <stdint.h>

#include "engine/eng_gguf.h"

struct eng_model;
struct eng_kv;

struct eng_model_info {
    int n_vocab;
    int n_ctx_train;   /* llama.context_length */
    int n_embd;
    int n_ff;
    int n_layer;
    int n_head;
    int n_head_kv;
    int n_rot;         /* rope dimension count */
    float rope_freq_base;
    float rms_eps;
};

/*
 * Load the model in PATH for a backend with N_THREADS workers (0: the
 * number of online cores). On failure returns a negative value and fills
 * ERR with one line naming the file and the problem.
 */
int eng_model_load(const char *path, int n_threads, struct eng_model **out,
                   char *err, size_t errlen);
void eng_model_free(struct eng_model *m);
const struct eng_model_info *eng_model_info(const struct eng_model *m);
/* The GGUF file the model was loaded from (for the tokenizer). */
const struct gguf_file *eng_model_gguf(const struct eng_model *m);

/* A KV cache for one sequence of up to N_CTX positions. */
struct eng_kv *eng_kv_new(struct eng_model *m, int n_ctx);
void eng_kv_free(struct eng_kv *kv);
int eng_kv_n_past(const struct eng_kv *kv);
int eng_kv_n_ctx(const struct eng_kv *kv);
void eng_kv_clear(struct eng_kv *kv);

/* One sequence's share of a step: N_TOKENS tokens appended at n_past. */
struct eng_seq_batch {
    struct eng_kv *kv;
    const int32_t *tokens;
    int n_tokens;
    float *logits;     /* out: n_vocab logits after the last token */
};

/*
 * Run one forward step for N_SEQS sequences. Each sequence's tokens are
 * appended to its KV cache (n_past advances by n_tokens) and the logits
 * of its last token are written. Returns 0, or a negative value when a
 * sequence would overflow its cache or a token id is out of range, in
 * which case no cache is changed.
 */
int eng_model_step(struct eng_model *m, struct eng_seq_batch *seqs,
                   int n_seqs);

#endif
