/*
 * Token log-probabilities in OpenAI's two shapes: chat's
 * {"content": [{token, logprob, bytes, top_logprobs}]} and the legacy
 * completions {tokens, token_logprobs, top_logprobs, text_offset}.
 */
#include "api/api_internal.h"

#include <stdlib.h>
#include <string.h>

#define PIECE_CAP 512

/* Length of the valid UTF-8 sequence at S, or 0 if it is invalid. */
static size_t utf8_valid_len(const unsigned char *s, size_t n)
{
    size_t len;
    if (s[0] < 0x80)
        return 1;
    if ((s[0] & 0xe0) == 0xc0 && s[0] >= 0xc2)
        len = 2;
    else if ((s[0] & 0xf0) == 0xe0)
        len = 3;
    else if ((s[0] & 0xf8) == 0xf0 && s[0] <= 0xf4)
        len = 4;
    else
        return 0;
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return len;
}

/*
 * Write token ID's text into OUT as valid UTF-8 (a byte that is not part
 * of a whole character becomes U+FFFD) and its raw bytes into RAW.
 * Returns the raw byte count.
 */
static size_t token_text(struct api_server *srv, int32_t id,
                         char out[PIECE_CAP * 3 + 1], char raw[PIECE_CAP])
{
    int n = eng_tok_piece(srv->tok, id, raw, PIECE_CAP);
    size_t len = n < 0 ? 0 : (size_t)n > PIECE_CAP ? PIECE_CAP : (size_t)n;
    size_t o = 0;

    for (size_t i = 0; i < len;) {
        size_t k = utf8_valid_len((const unsigned char *)raw + i, len - i);
        if (k == 0) {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        } else {
            memcpy(out + o, raw + i, k);
            o += k;
            i += k;
        }
    }
    out[o] = '\0';
    return len;
}

static cJSON *bytes_array(const char *raw, size_t len)
{
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; i < len; i++)
        cJSON_AddItemToArray(arr,
                             cJSON_CreateNumber((unsigned char)raw[i]));
    return arr;
}

static cJSON *chat_entry(struct api_server *srv, int32_t id, float logprob)
{
    char text[PIECE_CAP * 3 + 1], raw[PIECE_CAP];
    size_t len = token_text(srv, id, text, raw);
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "token", text);
    cJSON_AddNumberToObject(e, "logprob", logprob);
    cJSON_AddItemToObject(e, "bytes", bytes_array(raw, len));
    return e;
}

cJSON *api_logprobs_chat(struct api_server *srv,
                         const struct eng_token_info *tokens, int n)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *content = cJSON_AddArrayToObject(root, "content");
    for (int i = 0; i < n; i++) {
        const struct eng_token_info *t = &tokens[i];
        cJSON *e = chat_entry(srv, t->id, t->logprob);
        cJSON *top = cJSON_AddArrayToObject(e, "top_logprobs");
        for (int k = 0; k < t->n_top; k++)
            cJSON_AddItemToArray(top, chat_entry(srv, t->top[k].id,
                                                 t->top[k].logprob));
        cJSON_AddItemToArray(content, e);
    }
    cJSON_AddNullToObject(root, "refusal");
    return root;
}

cJSON *api_logprobs_completion(struct api_server *srv,
                               const struct eng_token_info *tokens, int n,
                               int top_logprobs, size_t *text_offset)
{
    char text[PIECE_CAP * 3 + 1], raw[PIECE_CAP];
    cJSON *root = cJSON_CreateObject();
    cJSON *strs = cJSON_AddArrayToObject(root, "tokens");
    cJSON *lps = cJSON_AddArrayToObject(root, "token_logprobs");
    cJSON *tops = cJSON_AddArrayToObject(root, "top_logprobs");
    cJSON *offsets = cJSON_AddArrayToObject(root, "text_offset");

    for (int i = 0; i < n; i++) {
        const struct eng_token_info *t = &tokens[i];
        size_t len = token_text(srv, t->id, text, raw);
        cJSON_AddItemToArray(strs, cJSON_CreateString(text));
        cJSON_AddItemToArray(lps, cJSON_CreateNumber(t->logprob));
        cJSON_AddItemToArray(offsets,
                             cJSON_CreateNumber((double)*text_offset));
        *text_offset += len;

        if (top_logprobs == 0) {
            cJSON_AddItemToArray(tops, cJSON_CreateNull());
            continue;
        }
        cJSON *top = cJSON_CreateObject();
        for (int k = 0; k < t->n_top; k++) {
            token_text(srv, t->top[k].id, text, raw);
            /* Two ids can share a text; the likelier one is kept. */
            if (!cJSON_GetObjectItemCaseSensitive(top, text))
                cJSON_AddNumberToObject(top, text, t->top[k].logprob);
        }
        cJSON_AddItemToArray(tops, top);
    }
    return root;
}
