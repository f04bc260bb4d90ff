/*
 * Error replies and the request fields that completions and chat share,
 * validated as OpenAI's API documents them.
 */
#include "api/api_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

int64_t api_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void api_reply_error(struct api_reply *reply, int status, const char *type,
                     const char *param, const char *code, const char *fmt,
                     ...)
{
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);

    cJSON *root = cJSON_CreateObject();
    cJSON *error = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(error, "message", message);
    cJSON_AddStringToObject(error, "type", type);
    if (param)
        cJSON_AddStringToObject(error, "param", param);
    else
        cJSON_AddNullToObject(error, "param");
    if (code)
        cJSON_AddStringToObject(error, "code", code);
    else
        cJSON_AddNullToObject(error, "code");

    free(reply->body);
    reply->body = cJSON_PrintUnformatted(root);
    reply->status = status;
    cJSON_Delete(root);
}

static void invalid(struct api_reply *reply, const char *param,
                    const char *message)
{
    api_reply_error(reply, 400, "invalid_request_error", param, NULL,
                    "%s", message);
}

int api_get_number(const cJSON *root, const char *name,
                   struct api_range range, double *out,
                   struct api_reply *reply)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, name);
    char message[256];

    if (!item || cJSON_IsNull(item))
        return 1;
    if (!cJSON_IsNumber(item)) {
        snprintf(message, sizeof message, "'%s' must be a number.", name);
        invalid(reply, name, message);
        return -1;
    }
    double v = item->valuedouble;
    if (!isfinite(v) || (range.integer && v != floor(v))) {
        snprintf(message, sizeof message, "'%s' must be %s.", name,
                 range.integer ? "an integer" : "a finite number");
        invalid(reply, name, message);
        return -1;
    }
    if (v < range.min || v > range.max) {
        snprintf(message, sizeof message,
                 "'%s' is %.17g, but must be between %.17g and %.17g.",
                 name, v, range.min, range.max);
        invalid(reply, name, message);
        return -1;
    }
    *out = v;
    return 0;
}

int api_get_bool(const cJSON *root, const char *name, bool *out,
                 struct api_reply *reply)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, name);
    char message[128];

    if (!item || cJSON_IsNull(item))
        return 1;
    if (!cJSON_IsBool(item)) {
        snprintf(message, sizeof message, "'%s' must be a boolean.", name);
        invalid(reply, name, message);
        return -1;
    }
    *out = cJSON_IsTrue(item);
    return 0;
}

/*
 * True when a JSON string in TEXT contains the escape \u0000. cJSON
 * stores strings NUL-terminated, so such a string would be cut short.
 */
static bool has_escaped_nul(const char *text, size_t len)
{
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        if (!in_string) {
            in_string = text[i] == '"';
            continue;
        }
        if (text[i] == '"') {
            in_string = false;
        } else if (text[i] == '\\' && i + 1 < len) {
            if (text[i + 1] == 'u' && i + 5 < len &&
                memcmp(text + i + 2, "0000", 4) == 0)
                return true;
            i++;    /* skip the escaped character */
        }
    }
    return false;
}

cJSON *api_parse_body(const struct api_call *call, struct api_reply *reply)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(call->body, call->body_len,
                                            &end, false);
    if (!root) {
        size_t at = end ? (size_t)(end - call->body) : 0;
        api_reply_error(reply, 400, "invalid_request_error", NULL, NULL,
                        "The request body is not valid JSON (error near "
                        "byte %zu).", at);
        return NULL;
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        invalid(reply, NULL, "The request body must be a JSON object.");
        return NULL;
    }
    if (has_escaped_nul(call->body, call->body_len)) {
        cJSON_Delete(root);
        invalid(reply, NULL, "Strings in the request must not contain the "
                "NUL character (\\u0000).");
        return NULL;
    }
    return root;
}

static int parse_model(struct api_server *srv, const cJSON *root,
                       struct api_reply *reply)
{
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!model) {
        invalid(reply, "model", "Missing required parameter: 'model'.");
        return -1;
    }
    if (!cJSON_IsString(model)) {
        invalid(reply, "model", "'model' must be a string.");
        return -1;
    }
    if (strcmp(model->valuestring, srv->model_id) != 0) {
        api_reply_error(reply, 404, "invalid_request_error", "model",
                        "model_not_found",
                        "The model '%.200s' does not exist.",
                        model->valuestring);
        return -1;
    }
    return 0;
}

static int parse_stop(const cJSON *root, struct api_gen *g,
                      struct api_reply *reply)
{
    const cJSON *stop = cJSON_GetObjectItemCaseSensitive(root, "stop");
    if (!stop || cJSON_IsNull(stop))
        return 0;
    if (cJSON_IsString(stop)) {
        if (stop->valuestring[0] == '\0') {
            invalid(reply, "stop", "'stop' must not be an empty string.");
            return -1;
        }
        g->params.stop[0] = stop->valuestring;
        g->params.n_stop = 1;
        return 0;
    }
    if (!cJSON_IsArray(stop)) {
        invalid(reply, "stop",
                "'stop' must be a string or an array of strings.");
        return -1;
    }
    if (cJSON_GetArraySize(stop) > ENG_MAX_STOP) {
        invalid(reply, "stop", "'stop' may hold at most 4 sequences.");
        return -1;
    }
    const cJSON *item;
    cJSON_ArrayForEach(item, stop) {
        if (!cJSON_IsString(item) || item->valuestring[0] == '\0') {
            invalid(reply, "stop",
                    "Each entry of 'stop' must be a non-empty string.");
            return -1;
        }
        g->params.stop[g->params.n_stop++] = item->valuestring;
    }
    return 0;
}

static int parse_logit_bias(struct api_server *srv, const cJSON *root,
                            struct api_gen *g, struct api_reply *reply)
{
    const cJSON *bias = cJSON_GetObjectItemCaseSensitive(root, "logit_bias");
    if (!bias || cJSON_IsNull(bias))
        return 0;
    if (!cJSON_IsObject(bias)) {
        invalid(reply, "logit_bias",
                "'logit_bias' must map token ids to numbers.");
        return -1;
    }
    if (cJSON_GetArraySize(bias) > API_MAX_BIAS) {
        invalid(reply, "logit_bias", "'logit_bias' has too many entries "
                "(at most 1024).");
        return -1;
    }
    const cJSON *item;
    cJSON_ArrayForEach(item, bias) {
        char *end = NULL;
        long id = strtol(item->string, &end, 10);
        if (item->string[0] == '\0' || *end != '\0' || id < 0 ||
            id >= srv->n_vocab) {
            char message[160];
            snprintf(message, sizeof message,
                     "Invalid token id '%.40s' in 'logit_bias': ids go "
                     "from 0 to %d.", item->string, srv->n_vocab - 1);
            invalid(reply, "logit_bias", message);
            return -1;
        }
        if (!cJSON_IsNumber(item) || !isfinite(item->valuedouble) ||
            item->valuedouble < -100 || item->valuedouble > 100) {
            invalid(reply, "logit_bias", "Each 'logit_bias' value must be "
                    "a number between -100 and 100.");
            return -1;
        }
        struct eng_logit_bias *b = &g->bias[g->params.sampling.n_bias++];
        b->id = (int32_t)id;
        b->bias = (float)item->valuedouble;
    }
    g->params.sampling.bias = g->bias;
    return 0;
}

static int parse_sampling(struct api_server *srv, const cJSON *root,
                          struct api_gen *g, struct api_reply *reply)
{
    struct eng_sampler_params *sp = &g->params.sampling;
    double v;
    int rc;

    sp->temperature = 1.0f;
    sp->top_p = 1.0f;
    sp->top_k = 0;
    if ((rc = api_get_number(root, "temperature",
                             (struct api_range){ 0, 2, false }, &v,
                             reply)) < 0)
        return -1;
    if (rc == 0)
        sp->temperature = (float)v;
    if ((rc = api_get_number(root, "top_p",
                             (struct api_range){ 0, 1, false }, &v,
                             reply)) < 0)
        return -1;
    if (rc == 0)
        sp->top_p = (float)v;
    if ((rc = api_get_number(root, "top_k",
                             (struct api_range){ 0, srv->n_vocab, true },
                             &v, reply)) < 0)
        return -1;
    if (rc == 0)
        sp->top_k = (int)v;
    if ((rc = api_get_number(root, "presence_penalty",
                             (struct api_range){ -2, 2, false }, &v,
                             reply)) < 0)
        return -1;
    if (rc == 0)
        sp->presence_penalty = (float)v;
    if ((rc = api_get_number(root, "frequency_penalty",
                             (struct api_range){ -2, 2, false }, &v,
                             reply)) < 0)
        return -1;
    if (rc == 0)
        sp->frequency_penalty = (float)v;

    /* Without a seed, every request draws its own. */
    randombytes_buf(&sp->seed, sizeof sp->seed);
    if ((rc = api_get_number(root, "seed",
                             (struct api_range){ -9007199254740992.0,
                                                 9007199254740992.0, true },
                             &v, reply)) < 0)
        return -1;
    if (rc == 0)
        sp->seed = (uint64_t)(int64_t)v;
    return parse_logit_bias(srv, root, g, reply);
}

static int parse_max_tokens(const cJSON *root, struct api_gen *g,
                            struct api_reply *reply)
{
    /* Chat's newer name wins when both are given, as in OpenAI's API. */
    static const char *const names[] = { "max_completion_tokens",
                                         "max_tokens" };
    for (int i = 0; i < 2; i++) {
        double v;
        int rc = api_get_number(root, names[i],
                                (struct api_range){ 1, 1e9, true }, &v,
                                reply);
        if (rc < 0)
            return -1;
        if (rc == 0 && g->max_tokens == 0)
            g->max_tokens = (int)v;
    }
    return 0;
}

static int parse_stream(const cJSON *root, struct api_gen *g,
                        struct api_reply *reply)
{
    if (api_get_bool(root, "stream", &g->stream, reply) < 0)
        return -1;

    const cJSON *opts = cJSON_GetObjectItemCaseSensitive(root,
                                                         "stream_options");
    if (!opts || cJSON_IsNull(opts))
        return 0;
    if (!g->stream) {
        invalid(reply, "stream_options",
                "'stream_options' is only allowed when 'stream' is true.");
        return -1;
    }
    if (!cJSON_IsObject(opts)) {
        invalid(reply, "stream_options",
                "'stream_options' must be an object.");
        return -1;
    }
    if (api_get_bool(opts, "include_usage", &g->include_usage, reply) < 0)
        return -1;
    return 0;
}

int api_parse_common(struct api_server *srv, const cJSON *root,
                     struct api_gen *g, struct api_reply *reply)
{
    double v;
    int rc;

    if (parse_model(srv, root, reply) < 0)
        return -1;
    if (parse_sampling(srv, root, g, reply) < 0)
        return -1;
    if (parse_stop(root, g, reply) < 0)
        return -1;
    if (parse_max_tokens(root, g, reply) < 0)
        return -1;
    if (parse_stream(root, g, reply) < 0)
        return -1;

    g->n = 1;
    rc = api_get_number(root, "n", (struct api_range){ 1, API_MAX_N, true },
                        &v, reply);
    if (rc < 0)
        return -1;
    if (rc == 0)
        g->n = (int)v;

    return 0;
}

void api_gen_free(struct api_gen *g)
{
    for (int i = 0; i < g->n_prompts; i++) {
        free(g->prompts[i]);
        free(g->echo[i]);
        g->prompts[i] = NULL;
        g->echo[i] = NULL;
    }
    g->n_prompts = 0;
}
