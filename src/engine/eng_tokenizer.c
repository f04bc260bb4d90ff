/*
 * SentencePiece-style tokenizer ("llama" in tokenizer.ggml.model), built
 * to give the same ids as llama.cpp's SPM tokenizer:
 *
 *   1. Special-token partition: control, user-defined and unknown tokens
 *      found in the text become their ids, longest token text first,
 *      each token taking its leftmost non-overlapping occurrences.
 *      Without parse_special only user-defined tokens are split out.
 *   2. Each remaining text fragment gets a leading space when it starts
 *      the text or follows a special token (add_space_prefix), spaces
 *      become U+2581, and the fragment is split into UTF-8 characters.
 *   3. Adjacent symbols whose concatenation is in the vocabulary are
 *      merged, highest score first, leftmost on a tie, through a binary
 *      heap, so a fragment of n bytes costs O(n log n).
 *   4. Symbols left outside the vocabulary become <0xNN> byte tokens.
 *
 * Token attributes follow llama.cpp's loader, including its fix-ups: the
 * end-of-generation and fill-in-the-middle tokens it recognises by text
 * are marked as control tokens, and Phi-3 models strip whitespace after
 * their special tokens.
 */
#include "engine/eng_tokenizer.h"

#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util_log.h"

/* Token attributes, as bits; llama.cpp's llama_token_attr. */
enum {
    ATTR_UNKNOWN = 1 << 0,
    ATTR_UNUSED = 1 << 1,
    ATTR_NORMAL = 1 << 2,
    ATTR_CONTROL = 1 << 3,
    ATTR_USER_DEFINED = 1 << 4,
    ATTR_BYTE = 1 << 5,
    ATTR_LSTRIP = 1 << 7,
    ATTR_RSTRIP = 1 << 8,
};

#define ATTR_SPECIAL (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN)

/* tokenizer.ggml.token_type values (llama.cpp's llama_token_type). */
enum {
    TYPE_NORMAL = 1,
    TYPE_UNKNOWN = 2,
    TYPE_CONTROL = 3,
    TYPE_USER_DEFINED = 4,
    TYPE_UNUSED = 5,
    TYPE_BYTE = 6,
};

/* Inputs above this many bytes are rejected: symbol indices are int and
 * escaping a space triples its size. */
#define MAX_INPUT_BYTES ((size_t)INT_MAX / 4)

struct token {
    const char *text;       /* in tok->strings; not NUL-terminated */
    uint32_t len;
    float score;
    uint16_t attr;
    uint32_t piece_off;     /* the decoded bytes, in tok->pieces */
    uint32_t piece_len;
};

struct eng_tokenizer {
    int n_vocab;
    struct token *tokens;
    char *strings;
    char *pieces;
    int32_t *table;         /* open addressing: text -> id, -1 empty */
    size_t table_mask;
    bool *eog;

    int32_t bos, eos, unk, eot, eom;
    bool add_bos, add_eos, add_space_prefix;
    int32_t byte_ids[256];

    /* Special tokens in partition order: longer text first, then id. */
    int32_t *special;
    int n_special;
    int *special_rank;      /* per id: index in special, or -1 */
};

/* ---- vocabulary lookup ---- */

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* Id of the token whose text is S[0..N), or -1. */
static int32_t lookup(const struct eng_tokenizer *t, const char *s, size_t n)
{
    size_t i = (size_t)hash_bytes(s, n) & t->table_mask;

    for (;;) {
        int32_t id = t->table[i];

        if (id < 0)
            return -1;
        if (t->tokens[id].len == n && memcmp(t->tokens[id].text, s, n) == 0)
            return id;
        i = (i + 1) & t->table_mask;
    }
}

/* Insert ID unless its text is already present; the first id wins. */
static int table_insert(struct eng_tokenizer *t, int32_t id)
{
    const struct token *tk = &t->tokens[id];
    size_t i = (size_t)hash_bytes(tk->text, tk->len) & t->table_mask;

    for (;;) {
        int32_t other = t->table[i];

        if (other < 0) {
            t->table[i] = id;
            return 0;
        }
        if (t->tokens[other].len == tk->len &&
            memcmp(t->tokens[other].text, tk->text, tk->len) == 0)
            return -1;
        i = (i + 1) & t->table_mask;
    }
}

static int32_t lookup_str(const struct eng_tokenizer *t, const char *s)
{
    return lookup(t, s, strlen(s));
}

/* ---- loading ---- */

static const struct gguf_kv *find_array(const struct gguf_file *f,
                                        const char *key,
                                        enum gguf_type type)
{
    const struct gguf_kv *kv = gguf_find_kv(f, key);

    if (!kv || kv->type != GGUF_TYPE_ARRAY || kv->v.arr.type != type)
        return NULL;
    return kv;
}

static uint16_t attr_from_type(int32_t type)
{
    switch (type) {
    case TYPE_NORMAL:       return ATTR_NORMAL;
    case TYPE_UNKNOWN:      return ATTR_UNKNOWN;
    case TYPE_CONTROL:      return ATTR_CONTROL;
    case TYPE_USER_DEFINED: return ATTR_USER_DEFINED;
    case TYPE_UNUSED:       return ATTR_UNUSED;
    case TYPE_BYTE:         return ATTR_BYTE;
    default:                return 0;
    }
}

/* Copy the token texts into one block, with scores and attributes.
 * An empty text becomes "[EMPTY_<id>]", as llama.cpp names it. */
static int load_tokens(struct eng_tokenizer *t, const struct gguf_file *f,
                       char *err, size_t errlen)
{
    const struct gguf_kv *tokens, *scores, *iscores, *types;
    size_t total = 0, off = 0;
    uint64_t n;

    tokens = find_array(f, "tokenizer.ggml.tokens", GGUF_TYPE_STRING);
    if (!tokens) {
        snprintf(err, errlen, "missing or invalid tokenizer.ggml.tokens");
        return -1;
    }
    n = tokens->v.arr.count;
    if (n == 0 || n > (uint64_t)INT32_MAX / 2) {
        snprintf(err, errlen, "invalid vocabulary size %llu",
                 (unsigned long long)n);
        return -1;
    }
    scores = find_array(f, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32);
    iscores = find_array(f, "tokenizer.ggml.scores", GGUF_TYPE_INT32);
    types = find_array(f, "tokenizer.ggml.token_type", GGUF_TYPE_INT32);
    if ((!scores && !iscores && gguf_find_kv(f, "tokenizer.ggml.scores")) ||
        (scores && scores->v.arr.count < n) ||
        (iscores && iscores->v.arr.count < n)) {
        snprintf(err, errlen, "invalid tokenizer.ggml.scores");
        return -1;
    }
    if ((!types && gguf_find_kv(f, "tokenizer.ggml.token_type")) ||
        (types && types->v.arr.count < n)) {
        snprintf(err, errlen, "invalid tokenizer.ggml.token_type");
        return -1;
    }

    for (uint64_t i = 0; i < n; i++)
        total += tokens->v.arr.strs[i].len ? tokens->v.arr.strs[i].len : 24;
    if (total > UINT32_MAX / 4) {
        snprintf(err, errlen, "vocabulary text too large");
        return -1;
    }
    t->n_vocab = (int)n;
    t->tokens = calloc(n, sizeof(*t->tokens));
    t->strings = malloc(total + 1);
    if (!t->tokens || !t->strings) {
        snprintf(err, errlen, "out of memory for %llu tokens",
                 (unsigned long long)n);
        return -1;
    }
    for (uint64_t i = 0; i < n; i++) {
        const struct gguf_str *s = &tokens->v.arr.strs[i];
        struct token *tk = &t->tokens[i];
        int32_t type = TYPE_NORMAL;

        tk->text = t->strings + off;
        if (s->len > 0) {
            memcpy(t->strings + off, s->data, s->len);
            tk->len = (uint32_t)s->len;
        } else {
            tk->len = (uint32_t)snprintf(t->strings + off, 24,
                                         "[EMPTY_%llu]",
                                         (unsigned long long)i);
        }
        off += tk->len;
        if (scores) {
            memcpy(&tk->score, (const char *)scores->v.arr.data + 4 * i, 4);
        } else if (iscores) {
            int32_t v;

            memcpy(&v, (const char *)iscores->v.arr.data + 4 * i, 4);
            tk->score = (float)v;
        }
        if (types)
            memcpy(&type, (const char *)types->v.arr.data + 4 * i, 4);
        tk->attr = types ? attr_from_type(type) : ATTR_NORMAL;
    }
    return 0;
}

static int build_table(struct eng_tokenizer *t, char *err, size_t errlen)
{
    size_t size = 1;
    int n_dup = 0;

    while (size < 2 * (size_t)t->n_vocab)
        size <<= 1;
    t->table = malloc(size * sizeof(*t->table));
    if (!t->table) {
        snprintf(err, errlen, "out of memory for the token table");
        return -1;
    }
    memset(t->table, 0xff, size * sizeof(*t->table));
    t->table_mask = size - 1;
    for (int32_t id = 0; id < t->n_vocab; id++)
        if (table_insert(t, id) < 0)
            n_dup++;
    if (n_dup > 0)
        log_warn("tok", "event=duplicate_tokens count=%d "
                 "(the lowest id of each text is used)", n_dup);
    return 0;
}

/* Read a token id from KEY, keeping *ID when the key is missing or the
 * value is out of range, as llama.cpp does. */
static void read_special_id(struct eng_tokenizer *t,
                            const struct gguf_file *f, const char *key,
                            int32_t *id)
{
    uint32_t v;

    if (*id >= t->n_vocab)
        *id = -1;
    if (gguf_get_u32(f, key, &v) < 0)
        return;
    if (v >= (uint32_t)t->n_vocab) {
        log_warn("tok", "event=bad_special_token key=%s id=%u", key, v);
        return;
    }
    *id = (int32_t)v;
}

static int text_in(const struct token *tk, const char *const *list)
{
    for (; *list; list++)
        if (strlen(*list) == tk->len && memcmp(*list, tk->text, tk->len) == 0)
            return 1;
    return 0;
}

/*
 * llama.cpp (llama-vocab.cpp, load) recognises these texts as
 * end-of-generation and fill-in-the-middle tokens and marks them as
 * control tokens even when the file calls them normal or user-defined.
 * The FIM pad, repo and file-separator tokens also end generation.
 */
static const char *const eog_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>",
    "<|flush|>", "<|calls|>", "<end_of_turn>", "<|endoftext|>", "</s>",
    "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
    "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
    "[e~[", NULL
};

static const char *const fim_eog_texts[] = {
    "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]",
    "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>",
    "<|file_sep|>", NULL
};

static const char *const fim_texts[] = {
    "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>",
    "<\xef\xbd\x9c" "fim\xe2\x96\x81" "begin\xef\xbd\x9c>", "<PRE>",
    "\xe2\x96\x81<PRE>", "<|code_prefix|>", "<|prefix|>",
    "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>",
    "<\xef\xbd\x9c" "fim\xe2\x96\x81hole\xef\xbd\x9c>", "<SUF>",
    "\xe2\x96\x81<SUF>", "<|code_suffix|>", "<|suffix|>",
    "<|fim_middle|>", "<fim-middle>", "<fim_middle>",
    "<\xef\xbd\x9c" "fim\xe2\x96\x81" "end\xef\xbd\x9c>", "<MID>",
    "\xe2\x96\x81<MID>", "<|code_middle|>", "<|middle|>", NULL
};

/* Tokens that llama.cpp always renders as text (gpt-oss). */
static const char *const forced_user_texts[] = {
    "<|channel|>", "<|message|>", "<|start|>", "<|constrain|>", NULL
};

static void mark_special_tokens(struct eng_tokenizer *t)
{
    for (int32_t id = 0; id < t->n_vocab; id++) {
        struct token *tk = &t->tokens[id];
        int eog = text_in(tk, eog_texts) || text_in(tk, fim_eog_texts);

        if (eog || text_in(tk, fim_texts))
            tk->attr |= ATTR_CONTROL;
        if (eog)
            t->eog[id] = true;
        if (text_in(tk, forced_user_texts))
            tk->attr = ATTR_USER_DEFINED;
    }
    if (t->eos >= 0)
        t->eog[t->eos] = true;
    if (t->eot >= 0)
        t->eog[t->eot] = true;
    if (t->eom >= 0)
        t->eog[t->eom] = true;
}

static int cmp_special(const void *pa, const void *pb, void *arg)
{
    const struct eng_tokenizer *t = arg;
    int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;

    if (t->tokens[a].len != t->tokens[b].len)
        return t->tokens[a].len > t->tokens[b].len ? -1 : 1;
    return a < b ? -1 : a > b;
}

/*
 * Collect the special tokens in partition order. llama.cpp sorts them by
 * text length with std::sort, which leaves the order of equal lengths
 * unspecified; here ties go to the lower id.
 */
static int build_special(struct eng_tokenizer *t)
{
    t->special = malloc((size_t)t->n_vocab * sizeof(*t->special));
    t->special_rank = malloc((size_t)t->n_vocab * sizeof(*t->special_rank));
    if (!t->special || !t->special_rank)
        return -1;
    for (int32_t id = 0; id < t->n_vocab; id++)
        if (t->tokens[id].attr & ATTR_SPECIAL)
            t->special[t->n_special++] = id;
    qsort_r(t->special, (size_t)t->n_special, sizeof(*t->special),
            cmp_special, t);
    for (int32_t id = 0; id < t->n_vocab; id++)
        t->special_rank[id] = -1;
    for (int i = 0; i < t->n_special; i++)
        t->special_rank[t->special[i]] = i;
    return 0;
}

/* llama.cpp strips whitespace after every special token of a Phi-3
 * model except <unk>, <s> and <|endoftext|>, chosen by general.name. */
static void apply_model_fixups(struct eng_tokenizer *t,
                               const struct gguf_file *f)
{
    char *name = gguf_get_str_dup(f, "general.name");
    static const char *const keep[] = { "<unk>", "<s>", "<|endoftext|>" };

    if (!name)
        return;
    for (char *p = name; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    if (strstr(name, "phi-3") || strstr(name, "phi3")) {
        int32_t id;

        for (int i = 0; i < t->n_special; i++)
            t->tokens[t->special[i]].attr |= ATTR_RSTRIP;
        if ((id = lookup_str(t, "</s>")) >= 0)
            t->tokens[id].attr |= ATTR_RSTRIP;
        for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++)
            if ((id = lookup_str(t, keep[i])) >= 0)
                t->tokens[id].attr &= (uint16_t)~ATTR_RSTRIP;
    }
    free(name);
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* The bytes each token decodes to, as llama.cpp's token_to_piece gives
 * them without special tokens: nothing for control and unknown tokens,
 * the raw text for user-defined ones, U+2581 turned into a space for
 * normal ones, and the byte itself for <0xNN>. */
static int build_pieces(struct eng_tokenizer *t)
{
    size_t total = 0, off = 0;

    for (int32_t id = 0; id < t->n_vocab; id++)
        total += t->tokens[id].len;
    t->pieces = malloc(total + 1);
    if (!t->pieces)
        return -1;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        struct token *tk = &t->tokens[id];
        char *out = t->pieces + off;
        size_t n = 0;

        if (tk->attr & (ATTR_CONTROL | ATTR_UNKNOWN)) {
            n = 0;
        } else if (tk->attr & ATTR_USER_DEFINED) {
            memcpy(out, tk->text, tk->len);
            n = tk->len;
        } else if (tk->attr & ATTR_NORMAL) {
            for (uint32_t i = 0; i < tk->len; i++) {
                if (i + 2 < tk->len && memcmp(tk->text + i,
                                              "\xe2\x96\x81", 3) == 0) {
                    out[n++] = ' ';
                    i += 2;
                } else {
                    out[n++] = tk->text[i];
                }
            }
        } else if (tk->attr & ATTR_BYTE) {
            int hi = tk->len == 6 ? hex_digit(tk->text[3]) : -1;
            int lo = tk->len == 6 ? hex_digit(tk->text[4]) : -1;

            if (hi >= 0 && lo >= 0)
                out[n++] = (char)(hi * 16 + lo);
        }
        tk->piece_off = (uint32_t)off;
        tk->piece_len = (uint32_t)n;
        off += n;
    }
    return 0;
}

/* Token for a raw byte: <0xNN>, else the one-byte text, else unknown. */
static void build_byte_ids(struct eng_tokenizer *t)
{
    for (int b = 0; b < 256; b++) {
        char hex[7];
        char one = (char)b;
        int32_t id;

        snprintf(hex, sizeof(hex), "<0x%02X>", b);
        id = lookup_str(t, hex);
        if (id < 0)
            id = lookup(t, &one, 1);
        t->byte_ids[b] = id >= 0 ? id : t->unk;
    }
}

static int read_flags(struct eng_tokenizer *t, const struct gguf_file *f)
{
    bool v;

    t->add_bos = true;
    t->add_eos = false;
    t->add_space_prefix = true;
    if (gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &v) == 0)
        t->add_bos = v;
    if (gguf_get_bool(f, "tokenizer.ggml.add_eos_token", &v) == 0)
        t->add_eos = v;
    if (gguf_get_bool(f, "tokenizer.ggml.add_space_prefix", &v) == 0)
        t->add_space_prefix = v;
    return (t->add_bos && t->bos < 0) || (t->add_eos && t->eos < 0) ? -1 : 0;
}

int eng_tok_load(const struct gguf_file *f, struct eng_tokenizer **out,
                 char *err, size_t errlen)
{
    struct eng_tokenizer *t = NULL;
    char *model = NULL;
    int rc = -1;

    *out = NULL;
    model = gguf_get_str_dup(f, "tokenizer.ggml.model");
    if (!model) {
        snprintf(err, errlen, "missing tokenizer.ggml.model");
        goto out;
    }
    if (strcmp(model, "llama") != 0) {
        snprintf(err, errlen, "unsupported tokenizer model '%s' "
                 "(only 'llama', SentencePiece with byte fallback, is "
                 "supported)", model);
        goto out;
    }
    t = calloc(1, sizeof(*t));
    if (!t) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if (load_tokens(t, f, err, errlen) < 0 ||
        build_table(t, err, errlen) < 0)
        goto out;

    /* llama.cpp's defaults for the llama model, then the file's ids. */
    t->bos = 1;
    t->eos = 2;
    t->unk = 0;
    t->eot = -1;
    t->eom = -1;
    read_special_id(t, f, "tokenizer.ggml.bos_token_id", &t->bos);
    read_special_id(t, f, "tokenizer.ggml.eos_token_id", &t->eos);
    read_special_id(t, f, "tokenizer.ggml.unknown_token_id", &t->unk);
    read_special_id(t, f, "tokenizer.ggml.eot_token_id", &t->eot);
    read_special_id(t, f, "tokenizer.ggml.eom_token_id", &t->eom);
    if (read_flags(t, f) < 0) {
        snprintf(err, errlen, "add_bos_token or add_eos_token is set but "
                 "the BOS or EOS token id is invalid");
        goto out;
    }

    t->eog = calloc((size_t)t->n_vocab, sizeof(*t->eog));
    if (!t->eog) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    mark_special_tokens(t);
    if (build_special(t) < 0 || build_pieces(t) < 0) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    apply_model_fixups(t, f);
    build_byte_ids(t);
    log_debug("tok", "event=loaded n_vocab=%d n_special=%d bos=%d eos=%d",
              t->n_vocab, t->n_special, t->bos, t->eos);
    *out = t;
    t = NULL;
    rc = 0;

out:
    eng_tok_free(t);
    free(model);
    return rc;
}

void eng_tok_free(struct eng_tokenizer *t)
{
    if (!t)
        return;
    free(t->special_rank);
    free(t->special);
    free(t->eog);
    free(t->pieces);
    free(t->table);
    free(t->strings);
    free(t->tokens);
    free(t);
}

int eng_tok_n_vocab(const struct eng_tokenizer *t)
{
    return t->n_vocab;
}

int32_t eng_tok_bos(const struct eng_tokenizer *t)
{
    return t->bos;
}

int32_t eng_tok_eos(const struct eng_tokenizer *t)
{
    return t->eos;
}

bool eng_tok_is_eog(const struct eng_tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab && t->eog[id];
}

bool eng_tok_add_bos(const struct eng_tokenizer *t)
{
    return t->add_bos;
}

/* ---- encoding ---- */

struct ids {
    int32_t *v;
    size_t n, cap;
};

static int ids_push(struct ids *a, int32_t id)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        int32_t *p = realloc(a->v, cap * sizeof(*p));

        if (!p)
            return -1;
        a->v = p;
        a->cap = cap;
    }
    a->v[a->n++] = id;
    return 0;
}

struct symbol {
    int prev, next;
    int start;              /* byte offset in the fragment text */
    int n;                  /* bytes; 0 once merged into its left */
};

struct bigram {
    int left, right;
    float score;
    int size;
};

/* Scratch space for one fragment, reused across fragments. */
struct spm_work {
    char *text;
    struct symbol *sym;
    size_t cap_text;        /* bytes in text; symbols in sym */
    struct bigram *heap;
    size_t n_heap, cap_heap;
};

/* Make room for a fragment of N input bytes, escaped and prefixed. */
static int work_reserve(struct spm_work *w, size_t n)
{
    size_t need = 3 * n + 3;
    char *text;
    struct symbol *sym;

    if (need <= w->cap_text)
        return 0;
    text = realloc(w->text, need);
    if (!text)
        return -1;
    w->text = text;
    sym = realloc(w->sym, need * sizeof(*sym));
    if (!sym)
        return -1;
    w->sym = sym;
    w->cap_text = need;
    return 0;
}

/* True when A should merge before B: higher score, then leftmost. */
static int bigram_before(const struct bigram *a, const struct bigram *b)
{
    if (a->score != b->score)
        return a->score > b->score;
    return a->left < b->left;
}

static int heap_push(struct spm_work *w, struct bigram bg)
{
    size_t i;

    if (w->n_heap == w->cap_heap) {
        size_t cap = w->cap_heap ? w->cap_heap * 2 : 64;
        struct bigram *p = realloc(w->heap, cap * sizeof(*p));

        if (!p)
            return -1;
        w->heap = p;
        w->cap_heap = cap;
    }
    i = w->n_heap++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;

        if (!bigram_before(&bg, &w->heap[parent]))
            break;
        w->heap[i] = w->heap[parent];
        i = parent;
    }
    w->heap[i] = bg;
    return 0;
}

static struct bigram heap_pop(struct spm_work *w)
{
    struct bigram top = w->heap[0];
    struct bigram last = w->heap[--w->n_heap];
    size_t i = 0, n = w->n_heap;

    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, best = i;
        const struct bigram *b = &last;

        if (l < n && bigram_before(&w->heap[l], b)) {
            best = l;
            b = &w->heap[l];
        }
        if (r < n && bigram_before(&w->heap[r], b))
            best = r;
        if (best == i)
            break;
        w->heap[i] = w->heap[best];
        i = best;
    }
    if (n > 0)
        w->heap[i] = last;
    return top;
}

/* Queue the merge of symbols LEFT and RIGHT if their text is a token. */
static int try_bigram(const struct eng_tokenizer *t, struct spm_work *w,
                      int left, int right)
{
    struct bigram bg;
    int32_t id;

    if (left < 0 || right < 0)
        return 0;
    bg.left = left;
    bg.right = right;
    bg.size = w->sym[left].n + w->sym[right].n;
    id = lookup(t, w->text + w->sym[left].start, (size_t)bg.size);
    if (id < 0)
        return 0;
    bg.score = t->tokens[id].score;
    return heap_push(w, bg);
}

static int utf8_len(unsigned char c)
{
    static const int len[16] = { 1, 1, 1, 1, 1, 1, 1, 1,
                                 1, 1, 1, 1, 2, 2, 3, 4 };

    return len[c >> 4];
}

/* Tokenize one escaped fragment of N bytes in w->text into OUT. */
static int spm_tokenize(const struct eng_tokenizer *t, struct spm_work *w,
                        int n, struct ids *out)
{
    int n_sym = 0;

    /* Split into UTF-8 characters; a truncated one keeps its bytes. */
    for (int off = 0; off < n;) {
        int len = utf8_len((unsigned char)w->text[off]);
        struct symbol *s = &w->sym[n_sym];

        if (len > n - off)
            len = n - off;
        s->start = off;
        s->n = len;
        s->prev = n_sym - 1;
        off += len;
        s->next = off == n ? -1 : n_sym + 1;
        n_sym++;
    }

    /* Merge the best pair until no adjacent pair forms a token. Entries
     * made stale by an earlier merge are recognised by their size. */
    w->n_heap = 0;
    for (int i = 1; i < n_sym; i++)
        if (try_bigram(t, w, i - 1, i) < 0)
            return -1;
    while (w->n_heap > 0) {
        struct bigram bg = heap_pop(w);
        struct symbol *l = &w->sym[bg.left], *r = &w->sym[bg.right];

        if (l->n == 0 || r->n == 0 || l->n + r->n != bg.size)
            continue;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0)
            w->sym[r->next].prev = bg.left;
        if (try_bigram(t, w, l->prev, bg.left) < 0 ||
            try_bigram(t, w, bg.left, l->next) < 0)
            return -1;
    }

    /* Emit: a merged symbol is always a token; a single character that
     * is not falls back to one token per byte. */
    for (int i = n_sym > 0 ? 0 : -1; i >= 0; i = w->sym[i].next) {
        const struct symbol *s = &w->sym[i];
        int32_t id = lookup(t, w->text + s->start, (size_t)s->n);

        if (id >= 0) {
            if (ids_push(out, id) < 0)
                return -1;
            continue;
        }
        for (int j = 0; j < s->n; j++) {
            unsigned char b = (unsigned char)w->text[s->start + j];

            if (ids_push(out, t->byte_ids[b]) < 0)
                return -1;
        }
    }
    return 0;
}

/* Escape TEXT[0..LEN) into w->text, with a leading U+2581 when PREFIX.
 * Returns the escaped length. */
static int escape_fragment(struct spm_work *w, const char *text, size_t len,
                           bool prefix)
{
    size_t n = 0;

    if (prefix) {
        memcpy(w->text, "\xe2\x96\x81", 3);
        n = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(w->text + n, "\xe2\x96\x81", 3);
            n += 3;
        } else {
            w->text[n++] = text[i];
        }
    }
    return (int)n;
}

/* Byte states for the special-token partition. */
/* BYTE_PROTECTED is text in which no special token may start or end. */
enum { BYTE_TEXT = 0, BYTE_TOKEN = 1, BYTE_DROPPED = 2, BYTE_PROTECTED = 3 };

static bool is_text(unsigned char state)
{
    return state == BYTE_TEXT || state == BYTE_PROTECTED;
}

struct match {
    int rank;
    size_t pos;
};

static int cmp_match(const void *pa, const void *pb)
{
    const struct match *a = pa, *b = pb;

    if (a->rank != b->rank)
        return a->rank < b->rank ? -1 : 1;
    return a->pos < b->pos ? -1 : a->pos > b->pos;
}

static int is_active_special(const struct eng_tokenizer *t, int32_t id,
                             bool parse_special)
{
    uint16_t attr = t->tokens[id].attr;

    if (!(attr & ATTR_SPECIAL))
        return 0;
    return parse_special || !(attr & (ATTR_CONTROL | ATTR_UNKNOWN));
}

/*
 * Find every occurrence of an active special token, then let the tokens
 * claim them in partition order. This gives the same result as
 * llama.cpp's tokenizer_st_partition, which splits the text once per
 * special token. An occurrence is taken when it lies inside text that no
 * earlier token claimed, and when it does not overlap the previous
 * occurrence that the same token took. Whitespace that an LSTRIP or
 * RSTRIP token removes is dropped. On return STATE[i] says what byte i became and TOKEN_AT[i]
 * holds the id of a token starting at i.
 */
static int partition(const struct eng_tokenizer *t, const char *text,
                     size_t len, bool parse_special, unsigned char *state,
                     int32_t *token_at)
{
    bool first_byte[256] = { false };
    uint32_t *lengths;
    int n_lengths = 0;
    struct match *m = NULL;
    size_t n_m = 0, cap_m = 0;

    /* The distinct lengths and first bytes of the active tokens, so each
     * position costs one table lookup per length, and none at all when
     * no special token starts with its byte. */
    lengths = malloc(((size_t)t->n_special + 1) * sizeof(*lengths));
    if (!lengths)
        return -1;
    for (int i = 0; i < t->n_special; i++) {
        const struct token *tk = &t->tokens[t->special[i]];
        int k;

        if (!is_active_special(t, t->special[i], parse_special))
            continue;
        first_byte[(unsigned char)tk->text[0]] = true;
        for (k = 0; k < n_lengths && lengths[k] != tk->len; k++)
            ;
        if (k == n_lengths)
            lengths[n_lengths++] = tk->len;
    }

    for (size_t pos = 0; pos < len; pos++) {
        if (!first_byte[(unsigned char)text[pos]])
            continue;
        for (int k = 0; k < n_lengths; k++) {
            int32_t id;

            if (lengths[k] > len - pos)
                continue;
            id = lookup(t, text + pos, lengths[k]);
            if (id < 0 || !is_active_special(t, id, parse_special))
                continue;
            if (n_m == cap_m) {
                size_t cap = cap_m ? cap_m * 2 : 16;
                struct match *p = realloc(m, cap * sizeof(*p));

                if (!p) {
                    free(m);
                    free(lengths);
                    return -1;
                }
                m = p;
                cap_m = cap;
            }
            m[n_m].rank = t->special_rank[id];
            m[n_m].pos = pos;
            n_m++;
        }
    }
    if (n_m > 1)
        qsort(m, n_m, sizeof(*m), cmp_match);

    /* Claim in order. END is where the current token's last take ended. */
    for (size_t i = 0, end = 0; i < n_m; i++) {
        int32_t id = t->special[m[i].rank];
        const struct token *tk = &t->tokens[id];
        size_t pos = m[i].pos, j;

        if (i == 0 || m[i].rank != m[i - 1].rank)
            end = 0;
        if (pos < end)
            continue;
        for (j = pos; j < pos + tk->len && state[j] == BYTE_TEXT; j++)
            ;
        if (j < pos + tk->len)
            continue;
        memset(state + pos, BYTE_TOKEN, tk->len);
        token_at[pos] = id;
        end = pos + tk->len;
        if (tk->attr & ATTR_LSTRIP)
            for (j = pos; j > 0 && is_text(state[j - 1]) &&
                          isspace((unsigned char)text[j - 1]); j--)
                state[j - 1] = BYTE_DROPPED;
        if (tk->attr & ATTR_RSTRIP)
            for (; end < len && is_text(state[end]) &&
                   isspace((unsigned char)text[end]); end++)
                state[end] = BYTE_DROPPED;
    }
    free(m);
    free(lengths);
    return 0;
}

static int encode_fragments(const struct eng_tokenizer *t, const char *text,
                            size_t len, const unsigned char *state,
                            const int32_t *token_at, struct ids *out)
{
    struct spm_work w = { 0 };
    bool prev_special = true;
    int rc = -1;

    for (size_t pos = 0; pos < len;) {
        size_t end;
        int n;

        if (state[pos] == BYTE_TOKEN) {
            if (ids_push(out, token_at[pos]) < 0)
                goto out;
            pos += t->tokens[token_at[pos]].len;
            prev_special = true;
            continue;
        }
        if (state[pos] == BYTE_DROPPED) {
            pos++;
            continue;
        }
        for (end = pos; end < len && is_text(state[end]); end++)
            ;
        if (work_reserve(&w, end - pos) < 0)
            goto out;
        n = escape_fragment(&w, text + pos, end - pos,
                            t->add_space_prefix && prev_special);
        if (spm_tokenize(t, &w, n, out) < 0)
            goto out;
        prev_special = false;
        pos = end;
    }
    rc = 0;

out:
    free(w.heap);
    free(w.sym);
    free(w.text);
    return rc;
}

/* Besides allocation failures, rejects inputs over MAX_INPUT_BYTES with
 * -1. The tokenizer is only read, so threads may encode concurrently. */
static int encode(const struct eng_tokenizer *t, const char *text,
                  size_t len, bool add_bos, bool parse_special,
                  const struct eng_tok_range *protect, int n_protect,
                  int32_t **ids, int *n_ids)
{
    struct ids out = { 0 };
    unsigned char *state = NULL;
    int32_t *token_at = NULL;
    int rc = -1;

    *ids = NULL;
    *n_ids = 0;
    if (len > MAX_INPUT_BYTES || (len > 0 && !text))
        return -1;
    if (add_bos && t->bos >= 0 && ids_push(&out, t->bos) < 0)
        goto out;
    if (len > 0) {
        state = calloc(len, 1);
        token_at = malloc(len * sizeof(*token_at));
        if (!state || !token_at)
            goto out;
        for (int i = 0; i < n_protect; i++) {
            size_t begin = protect[i].begin;
            size_t end = protect[i].end < len ? protect[i].end : len;
            if (begin < end)
                memset(state + begin, BYTE_PROTECTED, end - begin);
        }
        if (partition(t, text, len, parse_special, state, token_at) < 0 ||
            encode_fragments(t, text, len, state, token_at, &out) < 0)
            goto out;
    }
    if (add_bos && t->add_eos && t->eos >= 0 && ids_push(&out, t->eos) < 0)
        goto out;
    if (out.n > INT_MAX)
        goto out;
    /* Hand out a valid pointer even for an empty result. */
    if (!out.v && !(out.v = malloc(sizeof(*out.v))))
        goto out;
    *ids = out.v;
    *n_ids = (int)out.n;
    out.v = NULL;
    rc = 0;

out:
    free(out.v);
    free(token_at);
    free(state);
    return rc;
}

int eng_tok_encode(const struct eng_tokenizer *t, const char *text,
                   size_t len, bool add_bos, bool parse_special,
                   int32_t **ids, int *n_ids)
{
    return encode(t, text, len, add_bos, parse_special, NULL, 0, ids,
                  n_ids);
}

int eng_tok_encode_protected(const struct eng_tokenizer *t,
                             const char *text, size_t len, bool add_bos,
                             const struct eng_tok_range *protect,
                             int n_protect, int32_t **ids, int *n_ids)
{
    return encode(t, text, len, add_bos, true, protect, n_protect, ids,
                  n_ids);
}

/* ---- decoding ---- */

int eng_tok_piece(const struct eng_tokenizer *t, int32_t id, char *buf,
                  size_t cap)
{
    const struct token *tk;

    if (id < 0 || id >= t->n_vocab)
        return -1;
    tk = &t->tokens[id];
    if (buf && cap > 0)
        memcpy(buf, t->pieces + tk->piece_off,
               tk->piece_len < cap ? tk->piece_len : cap);
    return (int)tk->piece_len;
}

/* Bytes a UTF-8 sequence needs, from its lead byte; 0 for a byte that
 * cannot start one (continuation bytes, C0, C1, F5-FF). */
static int utf8_need(unsigned char c)
{
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        return 2;
    if (c >= 0xe0 && c <= 0xef)
        return 3;
    if (c >= 0xf0 && c <= 0xf4)
        return 4;
    return 0;
}

/* Whether C may follow the bytes held in PENDING[0..N): the second byte
 * has tighter ranges after E0, ED, F0 and F4 (no overlong forms, no
 * surrogates, nothing above U+10FFFF). */
static int utf8_continues(const char *pending, int n, unsigned char c)
{
    unsigned char lead = (unsigned char)pending[0];

    if (c < 0x80 || c > 0xbf)
        return 0;
    if (n == 1) {
        if (lead == 0xe0)
            return c >= 0xa0;
        if (lead == 0xed)
            return c <= 0x9f;
        if (lead == 0xf0)
            return c >= 0x90;
        if (lead == 0xf4)
            return c <= 0x8f;
    }
    return 1;
}

static const char replacement[3] = { '\xef', '\xbf', '\xbd' };

/* Append the K-byte character S to OUT if it fits in CAP; a character
 * that does not fit is dropped, so OUT never holds a partial one. */
static void emit(char *out, size_t cap, size_t *n, const char *s, size_t k)
{
    if (*n + k > cap)
        return;
    memcpy(out + *n, s, k);
    *n += k;
}

/* Feed one byte through the UTF-8 state in D. */
static void detok_byte(struct eng_detok *d, unsigned char c, char *out,
                       size_t cap, size_t *n)
{
    if (d->n_pending > 0) {
        if (utf8_continues(d->pending, d->n_pending, c)) {
            d->pending[d->n_pending++] = (char)c;
            if (d->n_pending == utf8_need((unsigned char)d->pending[0])) {
                emit(out, cap, n, d->pending, (size_t)d->n_pending);
                d->n_pending = 0;
            }
            return;
        }
        /* The held bytes can never complete: replace them, then treat
         * C as the start of something new. */
        emit(out, cap, n, replacement, 3);
        d->n_pending = 0;
    }
    switch (utf8_need(c)) {
    case 0:
        emit(out, cap, n, replacement, 3);
        break;
    case 1:
        emit(out, cap, n, (const char *)&c, 1);
        break;
    default:
        d->pending[0] = (char)c;
        d->n_pending = 1;
        break;
    }
}

/*
 * Returns the bytes written, at most CAP. Characters that do not fit are
 * dropped; 3 * (piece length + 1) bytes always suffice, because each
 * byte turns into at most one U+FFFD.
 */
size_t eng_detok_push(struct eng_detok *d, const struct eng_tokenizer *t,
                      int32_t id, char *out, size_t cap)
{
    const struct token *tk;
    size_t n = 0;

    if (id < 0 || id >= t->n_vocab)
        return 0;
    if (d->n_pending < 0 || d->n_pending > 3)
        d->n_pending = 0;
    tk = &t->tokens[id];
    for (uint32_t i = 0; i < tk->piece_len; i++)
        detok_byte(d, (unsigned char)t->pieces[tk->piece_off + i], out, cap,
                   &n);
    return n;
}

size_t eng_detok_flush(struct eng_detok *d, char *out, size_t cap)
{
    size_t n = 0;

    if (d->n_pending > 0)
        emit(out, cap, &n, replacement, 3);
    d->n_pending = 0;
    return n;
}
