/*
 * Helpers shared by the endpoint files: field validation and the
 * generation job that completions and chat both run.
 */
#ifndef TAPHOUSE_API_INTERNAL_H
#define TAPHOUSE_API_INTERNAL_H

#include <cjson/cJSON.h>

#include "api/api.h"

/* Completions may take several prompts; n copies run per prompt. */
#define API_MAX_PROMPTS 16
#define API_MAX_N 8
#define API_MAX_BIAS 1024

/* A validated generation request, ready to run. */
struct api_gen {
    bool chat;
    int n_prompts;
    int32_t *prompts[API_MAX_PROMPTS];   /* malloc'd token ids */
    int n_prompt[API_MAX_PROMPTS];
    char *echo[API_MAX_PROMPTS];         /* completions echo: prompt text */
    int n;                               /* choices per prompt */
    int max_tokens;                      /* 0 until set */
    bool stream;
    bool include_usage;
    struct eng_gen_params params;        /* logprobs set by the endpoint */
    struct eng_logit_bias bias[API_MAX_BIAS];
};

/* Range of numbers a field accepts. */
struct api_range {
    double min, max;
    bool integer;
};

/*
 * Read number field NAME of ROOT into *OUT. Returns 1 when it is absent
 * or null (OUT untouched), 0 when valid, -1 after filling REPLY with a
 * 400 naming the field.
 */
int api_get_number(const cJSON *root, const char *name,
                   struct api_range range, double *out,
                   struct api_reply *reply);
/* The same for a boolean field. */
int api_get_bool(const cJSON *root, const char *name, bool *out,
                 struct api_reply *reply);

/* Parse BODY as a JSON object, or fill REPLY with a 400. */
cJSON *api_parse_body(const struct api_call *call, struct api_reply *reply);

/*
 * Validate the fields that completions and chat share (sampling, stop,
 * n, stream, max_tokens) into G, and check that "model" names the
 * served model. Returns 0, or -1 after filling REPLY.
 */
int api_parse_common(struct api_server *srv, const cJSON *root,
                     struct api_gen *g, struct api_reply *reply);

/*
 * Check the context, submit every choice to the scheduler, and fill
 * REPLY: the whole response, or a stream. Records the request's usage
 * row before the last byte goes out. Frees what G owns.
 */
void api_gen_run(struct api_server *srv, const struct api_call *call,
                 struct api_gen *g, struct api_reply *reply);

/* Endpoint-specific validation: fill G from ROOT, or fill REPLY and
 * return -1. */
typedef int (*api_parse_fn)(struct api_server *srv, const cJSON *root,
                            struct api_gen *g, struct api_reply *reply);

/*
 * Handle one completions or chat call: parse the body, validate the
 * shared fields and then PARSE's own, and run the generation. A request
 * that fails validation gets its error reply and a usage row.
 */
void api_generate(struct api_server *srv, const struct api_call *call,
                  bool chat, api_parse_fn parse, struct api_reply *reply);

/* Record a usage row for a request that failed before generation; its
 * id goes into reply->request_id. */
void api_record_failure(struct api_server *srv, const struct api_call *call,
                        const char *endpoint, struct api_reply *reply);

void api_gen_free(struct api_gen *g);

/* Chat's logprobs object for N tokens. */
cJSON *api_logprobs_chat(struct api_server *srv,
                         const struct eng_token_info *tokens, int n);
/*
 * The completions logprobs object for N tokens. *TEXT_OFFSET is the byte
 * offset of the first token in the choice's text and is advanced past
 * the last.
 */
cJSON *api_logprobs_completion(struct api_server *srv,
                               const struct eng_token_info *tokens, int n,
                               int top_logprobs, size_t *text_offset);

#endif
