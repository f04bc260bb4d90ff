/*
 * Tokenizer built from GGUF metadata (tokenizer.ggml.*). Supports the
 * SentencePiece-style "llama" model: BPE merges by score over the
 * pieces, byte fallback to <0xNN> tokens, and a leading space added as
 * U+2581, as llama.cpp does.
 */
#ifndef TAPHOUSE_ENG_TOKENIZER_H
#define TAPHOUSE_ENG_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/eng_gguf.h"

struct eng_tokenizer;

int eng_tok_load(const struct gguf_file *f, struct eng_tokenizer **out,
                 char *err, size_t errlen);
void eng_tok_free(struct eng_tokenizer *t);

int eng_tok_n_vocab(const struct eng_tokenizer *t);
int32_t eng_tok_bos(const struct eng_tokenizer *t);
int32_t eng_tok_eos(const struct eng_tokenizer *t);
/* True for tokens that end generation (EOS, EOT and the like). */
bool eng_tok_is_eog(const struct eng_tokenizer *t, int32_t id);
/* True when the model wants BOS prepended (tokenizer.ggml.add_bos_token,
 * default true for the llama model). */
bool eng_tok_add_bos(const struct eng_tokenizer *t);

/*
 * Tokenize LEN bytes of TEXT. With PARSE_SPECIAL, the text of control
 * tokens such as "<s>" becomes their ids; otherwise it is plain text.
 * Stores a malloc'd array in *IDS and its length in *N_IDS. Returns 0 or
 * a negative value on allocation failure.
 */
int eng_tok_encode(const struct eng_tokenizer *t, const char *text,
                   size_t len, bool add_bos, bool parse_special,
                   int32_t **ids, int *n_ids);

/* Bytes BEGIN .. END - 1 of a text. */
struct eng_tok_range {
    size_t begin, end;
};

/*
 * Tokenize like eng_tok_encode with parse_special, except that no
 * special token is recognized where it would overlap one of the
 * N_PROTECT ranges: there its text stays plain text. Chat requests use
 * this so message content cannot inject control tokens, while the
 * template's own markers still become tokens.
 */
int eng_tok_encode_protected(const struct eng_tokenizer *t,
                             const char *text, size_t len, bool add_bos,
                             const struct eng_tok_range *protect,
                             int n_protect, int32_t **ids, int *n_ids);

/*
 * Write the bytes token ID stands for into BUF (U+2581 becomes a space,
 * <0xNN> becomes that byte; control tokens give no bytes). Returns the
 * number of bytes, which may exceed CAP (then BUF holds a prefix), or -1
 * for an id out of range.
 */
int eng_tok_piece(const struct eng_tokenizer *t, int32_t id, char *buf,
                  size_t cap);

/*
 * Streaming detokenizer: hands out text only in whole UTF-8 characters,
 * holding back the bytes of a character split across tokens.
 */
struct eng_detok {
    char pending[8];
    int n_pending;
};

/* Append token ID's bytes; writes the complete characters to OUT and
 * returns their count. OUT must hold at least cap bytes. */
size_t eng_detok_push(struct eng_detok *d, const struct eng_tokenizer *t,
                      int32_t id, char *out, size_t cap);
/* Flush held-back bytes at the end of a sequence: each incomplete
 * character becomes U+FFFD. Returns the bytes written to OUT. */
size_t eng_detok_flush(struct eng_detok *d, char *out, size_t cap);

#endif
