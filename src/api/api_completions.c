/*
 * POST /v1/completions: a prompt given as a string, an array of strings,
 * an array of token ids, or an array of such arrays.
 */
#include "api/api_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void invalid_prompt(struct api_reply *reply, const char *message)
{
    api_reply_error(reply, 400, "invalid_request_error", "prompt", NULL,
                    "%s", message);
}

static int add_text_prompt(struct api_server *srv, struct api_gen *g,
                           const char *text, bool echo,
                           struct api_reply *reply)
{
    int i = g->n_prompts;
    int32_t *ids = NULL;
    int n_ids = 0;

    if (eng_tok_encode(srv->tok, text, strlen(text),
                       eng_tok_add_bos(srv->tok), true, &ids, &n_ids) != 0) {
        api_reply_error(reply, 500, "server_error", NULL, NULL,
                        "Tokenizing the prompt failed.");
        return -1;
    }
    if (n_ids == 0) {
        free(ids);
        invalid_prompt(reply, "The prompt is empty.");
        return -1;
    }
    g->prompts[i] = ids;
    g->n_prompt[i] = n_ids;
    if (echo)
        g->echo[i] = strdup(text);
    g->n_prompts++;
    return 0;
}

/* Detokenize IDS for echo; returns a malloc'd string or NULL. */
static char *ids_to_text(struct api_server *srv, const int32_t *ids, int n)
{
    char *text = NULL;
    size_t len = 0, cap = 0;
    struct eng_detok d = { 0 };
    char buf[600];

    for (int i = 0; i <= n; i++) {
        size_t got = i < n
            ? eng_detok_push(&d, srv->tok, ids[i], buf, sizeof buf)
            : eng_detok_flush(&d, buf, sizeof buf);
        if (len + got + 1 > cap) {
            cap = (len + got + 1) * 2;
            char *grown = realloc(text, cap);
            if (!grown) {
                free(text);
                return NULL;
            }
            text = grown;
        }
        memcpy(text + len, buf, got);
        len += got;
        text[len] = '\0';
    }
    return text ? text : strdup("");
}

static int add_token_prompt(struct api_server *srv, struct api_gen *g,
                            const cJSON *arr, bool echo,
                            struct api_reply *reply)
{
    int n = cJSON_GetArraySize(arr);
    if (n == 0) {
        invalid_prompt(reply, "A token prompt must not be empty.");
        return -1;
    }
    int32_t *ids = malloc(sizeof *ids * (size_t)n);
    if (!ids) {
        api_reply_error(reply, 500, "server_error", NULL, NULL,
                        "out of memory");
        return -1;
    }
    int k = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, arr) {
        double v = cJSON_IsNumber(item) ? item->valuedouble : -1;
        if (!cJSON_IsNumber(item) || v != (double)(int32_t)v || v < 0 ||
            v >= srv->n_vocab) {
            char message[160];
            snprintf(message, sizeof message, "Invalid token id at "
                     "position %d of the prompt: ids are integers from 0 "
                     "to %d.", k, srv->n_vocab - 1);
            invalid_prompt(reply, message);
            free(ids);
            return -1;
        }
        ids[k++] = (int32_t)v;
    }
    int i = g->n_prompts;
    g->prompts[i] = ids;
    g->n_prompt[i] = n;
    if (echo)
        g->echo[i] = ids_to_text(srv, ids, n);
    g->n_prompts++;
    return 0;
}

static int parse_prompt(struct api_server *srv, const cJSON *root,
                        struct api_gen *g, bool echo,
                        struct api_reply *reply)
{
    const cJSON *prompt = cJSON_GetObjectItemCaseSensitive(root, "prompt");
    if (!prompt || cJSON_IsNull(prompt)) {
        invalid_prompt(reply, "Missing required parameter: 'prompt'.");
        return -1;
    }
    if (cJSON_IsString(prompt))
        return add_text_prompt(srv, g, prompt->valuestring, echo, reply);
    if (!cJSON_IsArray(prompt) || cJSON_GetArraySize(prompt) == 0) {
        invalid_prompt(reply, "'prompt' must be a string, an array of "
                       "strings, an array of token ids, or an array of "
                       "token id arrays, and not empty.");
        return -1;
    }

    const cJSON *first = cJSON_GetArrayItem(prompt, 0);
    if (cJSON_IsNumber(first))
        return add_token_prompt(srv, g, prompt, echo, reply);

    if (cJSON_GetArraySize(prompt) > API_MAX_PROMPTS) {
        invalid_prompt(reply, "'prompt' may hold at most 16 prompts.");
        return -1;
    }
    const cJSON *item;
    cJSON_ArrayForEach(item, prompt) {
        int rc;
        if (cJSON_IsString(item) && cJSON_IsString(first))
            rc = add_text_prompt(srv, g, item->valuestring, echo, reply);
        else if (cJSON_IsArray(item) && cJSON_IsArray(first))
            rc = add_token_prompt(srv, g, item, echo, reply);
        else {
            invalid_prompt(reply, "The entries of 'prompt' must all be "
                           "strings or all be token id arrays.");
            rc = -1;
        }
        if (rc != 0)
            return -1;
    }
    return 0;
}

/* The fields only completions take: echo, suffix, best_of, logprobs and
 * the prompt. */
static int parse_completion(struct api_server *srv, const cJSON *root,
                            struct api_gen *g, struct api_reply *reply)
{
    bool echo = false;

    if (api_get_bool(root, "echo", &echo, reply) < 0)
        return -1;

    const cJSON *suffix = cJSON_GetObjectItemCaseSensitive(root, "suffix");
    if (suffix && !cJSON_IsNull(suffix)) {
        api_reply_error(reply, 400, "invalid_request_error", "suffix", NULL,
                        "'suffix' (insertion) is not supported by this "
                        "model.");
        return -1;
    }
    double best_of;
    int rc = api_get_number(root, "best_of",
                            (struct api_range){ 1, API_MAX_N, true },
                            &best_of, reply);
    if (rc < 0)
        return -1;
    if (rc == 0 && (int)best_of != g->n) {
        api_reply_error(reply, 400, "invalid_request_error", "best_of",
                        NULL, "'best_of' must equal 'n' on this server.");
        return -1;
    }
    double logprobs;
    rc = api_get_number(root, "logprobs", (struct api_range){ 0, 5, true },
                        &logprobs, reply);
    if (rc < 0)
        return -1;
    if (rc == 0) {
        if (echo) {
            /* NOTE: the prompt's own log-probabilities are not computed. */
            api_reply_error(reply, 400, "invalid_request_error", "logprobs",
                            NULL, "'logprobs' together with 'echo' is not "
                            "supported by this server.");
            return -1;
        }
        g->params.logprobs = true;
        g->params.top_logprobs = (int)logprobs;
    }
    return parse_prompt(srv, root, g, echo, reply);
}

void api_completions(struct api_server *srv, const struct api_call *call,
                     struct api_reply *reply)
{
    api_generate(srv, call, false, parse_completion, reply);
}
