/*
 * POST /v1/chat/completions: messages rendered with the model's chat
 * template, then generated like a completion.
 */
#include "api/api_internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_MESSAGES 1024

static void invalid_messages(struct api_reply *reply, const char *message)
{
    api_reply_error(reply, 400, "invalid_request_error", "messages", NULL,
                    "%s", message);
}

static bool known_role(const char *role)
{
    static const char *const roles[] = { "system", "developer", "user",
                                         "assistant", "tool" };
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++)
        if (strcmp(role, roles[i]) == 0)
            return true;
    return false;
}

/*
 * Flatten a message's content: a string, null, or an array of text
 * parts. Returns a malloc'd string, or NULL after filling REPLY.
 */
static char *message_text(const cJSON *content, int index,
                          struct api_reply *reply)
{
    char message[160];

    if (!content || cJSON_IsNull(content))
        return strdup("");
    if (cJSON_IsString(content))
        return strdup(content->valuestring);
    if (!cJSON_IsArray(content)) {
        snprintf(message, sizeof message, "messages[%d].content must be a "
                 "string or an array of content parts.", index);
        invalid_messages(reply, message);
        return NULL;
    }

    size_t len = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, content) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "text") != 0
            || !cJSON_IsString(text)) {
            snprintf(message, sizeof message, "messages[%d].content: only "
                     "parts of type 'text' with a 'text' string are "
                     "supported.", index);
            invalid_messages(reply, message);
            return NULL;
        }
        len += strlen(text->valuestring);
    }
    char *joined = malloc(len + 1);
    if (!joined)
        return NULL;
    joined[0] = '\0';
    cJSON_ArrayForEach(part, content)
        strcat(joined, cJSON_GetObjectItemCaseSensitive(part,
                                                        "text")->valuestring);
    return joined;
}

/*
 * Find where each message's text landed in the rendered PROMPT, in
 * order, and store those byte ranges in RANGES (N entries at most).
 * Returns how many were found. Text a template trimmed is found by its
 * trimmed form. Text not found stays unprotected, so benign text is
 * tokenized as before.
 */
static int locate_contents(const char *prompt, char *const *texts, int n,
                           struct eng_tok_range *ranges)
{
    const char *from = prompt;
    int found = 0;

    for (int i = 0; i < n; i++) {
        const char *t = texts[i];
        size_t len = strlen(t);

        while (len > 0 && isspace((unsigned char)*t)) {
            t++;
            len--;
        }
        while (len > 0 && isspace((unsigned char)t[len - 1]))
            len--;
        if (len == 0)
            continue;
        const char *hit = memmem(from, strlen(from), t, len);
        if (!hit)
            continue;
        ranges[found].begin = (size_t)(hit - prompt);
        ranges[found].end = ranges[found].begin + len;
        found++;
        from = hit + len;
    }
    return found;
}

static char *render_messages(struct api_server *srv, const cJSON *root,
                             struct api_reply *reply,
                             struct eng_tok_range **ranges, int *n_ranges)
{
    const cJSON *messages = cJSON_GetObjectItemCaseSensitive(root,
                                                             "messages");
    char message[160];
    char *prompt = NULL;

    if (!messages) {
        invalid_messages(reply, "Missing required parameter: 'messages'.");
        return NULL;
    }
    int n = cJSON_IsArray(messages) ? cJSON_GetArraySize(messages) : -1;
    if (n < 1 || n > MAX_MESSAGES) {
        invalid_messages(reply, "'messages' must be a non-empty array of "
                         "at most 1024 messages.");
        return NULL;
    }

    struct eng_chat_msg *msgs = calloc((size_t)n, sizeof *msgs);
    char **texts = calloc((size_t)n, sizeof *texts);
    if (!msgs || !texts)
        goto out;

    int i = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, messages) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(item, "role");
        if (!cJSON_IsObject(item) || !cJSON_IsString(role) ||
            !known_role(role->valuestring)) {
            snprintf(message, sizeof message, "messages[%d] must be an "
                     "object with a 'role' of system, developer, user, "
                     "assistant or tool.", i);
            invalid_messages(reply, message);
            goto out;
        }
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(item,
                                                                "content");
        /* Only an assistant turn (one that called tools) may omit it. */
        if ((!content || cJSON_IsNull(content)) &&
            strcmp(role->valuestring, "assistant") != 0) {
            snprintf(message, sizeof message, "messages[%d].content is "
                     "missing; a %s message needs content.", i,
                     role->valuestring);
            invalid_messages(reply, message);
            goto out;
        }
        texts[i] = message_text(content, i, reply);
        if (!texts[i])
            goto out;
        msgs[i].role = role->valuestring;
        msgs[i].content = texts[i];
        i++;
    }
    prompt = eng_chat_render(srv->chat_family, msgs, n);
    if (!prompt) {
        api_reply_error(reply, 500, "server_error", NULL, NULL,
                        "Rendering the chat template failed.");
        goto out;
    }
    *ranges = calloc((size_t)n, sizeof **ranges);
    if (!*ranges) {
        free(prompt);
        prompt = NULL;
        goto out;
    }
    *n_ranges = locate_contents(prompt, texts, n, *ranges);

out:
    if (!prompt && reply->status == 0)
        api_reply_error(reply, 500, "server_error", NULL, NULL,
                        "out of memory");
    for (int k = 0; texts && k < n; k++)
        free(texts[k]);
    free(texts);
    free(msgs);
    return prompt;
}

static int parse_logprobs(const cJSON *root, struct api_gen *g,
                          struct api_reply *reply)
{
    double top;
    if (api_get_bool(root, "logprobs", &g->params.logprobs, reply) < 0)
        return -1;
    int rc = api_get_number(root, "top_logprobs",
                            (struct api_range){ 0, ENG_MAX_TOP_LOGPROBS,
                                                true }, &top, reply);
    if (rc < 0)
        return -1;
    if (rc == 0) {
        if (!g->params.logprobs) {
            api_reply_error(reply, 400, "invalid_request_error",
                            "top_logprobs", NULL, "'top_logprobs' requires "
                            "'logprobs' to be true.");
            return -1;
        }
        g->params.top_logprobs = (int)top;
    }
    return 0;
}

/* Reject fields whose meaning this server cannot honour. */
static int reject_unsupported(const cJSON *root, struct api_reply *reply)
{
    static const char *const tool_fields[] = { "tools", "functions" };
    for (int i = 0; i < 2; i++) {
        const cJSON *tools = cJSON_GetObjectItemCaseSensitive(
            root, tool_fields[i]);
        if (tools && !cJSON_IsNull(tools) &&
            !(cJSON_IsArray(tools) && cJSON_GetArraySize(tools) == 0)) {
            api_reply_error(reply, 400, "invalid_request_error",
                            tool_fields[i], NULL, "Tool and function "
                            "calling are not supported by this server.");
            return -1;
        }
    }
    const cJSON *format = cJSON_GetObjectItemCaseSensitive(root,
                                                           "response_format");
    if (format && !cJSON_IsNull(format)) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(format, "type");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "text")) {
            api_reply_error(reply, 400, "invalid_request_error",
                            "response_format", NULL, "Only "
                            "response_format {\"type\": \"text\"} is "
                            "supported by this server.");
            return -1;
        }
    }
    return 0;
}

/* The fields only chat takes, then the conversation, rendered and
 * tokenized. */
static int parse_chat(struct api_server *srv, const cJSON *root,
                      struct api_gen *g, struct api_reply *reply)
{
    struct eng_tok_range *ranges = NULL;
    int n_ranges = 0;

    if (reject_unsupported(root, reply) < 0)
        return -1;
    if (parse_logprobs(root, g, reply) < 0)
        return -1;
    char *prompt = render_messages(srv, root, reply, &ranges, &n_ranges);
    if (!prompt)
        return -1;

    /* The template's markers become control tokens; the same text inside
     * a message stays plain text. */
    int rc = eng_tok_encode_protected(srv->tok, prompt, strlen(prompt),
                                      eng_tok_add_bos(srv->tok), ranges,
                                      n_ranges, &g->prompts[0],
                                      &g->n_prompt[0]);
    free(prompt);
    free(ranges);
    if (rc != 0) {
        api_reply_error(reply, 500, "server_error", NULL, NULL,
                        "Tokenizing the conversation failed.");
        return -1;
    }
    g->n_prompts = 1;
    return 0;
}

void api_chat(struct api_server *srv, const struct api_call *call,
              struct api_reply *reply)
{
    api_generate(srv, call, true, parse_chat, reply);
}
