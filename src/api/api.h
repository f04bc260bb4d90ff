/*
 * OpenAI-compatible endpoints: request parsing and validation, and the
 * response shapes. The HTTP layer authenticates the caller and hands the
 * body here; each handler fills a struct api_reply with either a whole
 * JSON body or a server-sent-event stream.
 */
#ifndef TAPHOUSE_API_H
#define TAPHOUSE_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "engine/eng_chat.h"
#include "engine/eng_sched.h"
#include "engine/eng_tokenizer.h"
#include "gateway/gw_ledger.h"
#include "store/store.h"

/* State the endpoints share: the one model this server runs, for now. */
struct api_server {
    struct eng_sched *sched;
    struct eng_tokenizer *tok;
    enum eng_chat_family chat_family;
    char model_id[128];
    int64_t model_created;      /* Unix seconds, for /v1/models */
    int n_ctx;
    int n_vocab;
    struct gw_ledger *ledger;
};

/* The connection a request came on, to notice a client that went away. */
struct api_conn {
    bool (*client_gone)(void *ctx);
    void *ctx;
};

struct api_stream;

struct api_reply {
    int status;
    char *body;                 /* malloc'd JSON, when not streaming */
    struct api_stream *stream;  /* text/event-stream, when set */
    char request_id[48];        /* sent as X-Request-Id; also the ledger's */
};

/* One authenticated call to a metered endpoint. */
struct api_call {
    const struct store_key *key;
    const char *body;
    size_t body_len;
    int64_t start_ms;
    struct api_conn conn;
};

void api_models_list(struct api_server *srv, struct api_reply *reply);
void api_models_get(struct api_server *srv, const char *id,
                    struct api_reply *reply);
void api_completions(struct api_server *srv, const struct api_call *call,
                     struct api_reply *reply);
void api_chat(struct api_server *srv, const struct api_call *call,
              struct api_reply *reply);

/*
 * Fill REPLY with OpenAI's error object. TYPE is the error type
 * ("invalid_request_error"); PARAM and CODE may be NULL (JSON null).
 */
void api_reply_error(struct api_reply *reply, int status, const char *type,
                     const char *param, const char *code, const char *fmt,
                     ...) __attribute__((format(printf, 6, 7)));

/*
 * Write up to CAP bytes of the event stream into BUF, waiting for the
 * engine as needed. Returns the byte count (> 0), or -1 after the last
 * event ("data: [DONE]") has been written.
 */
ssize_t api_stream_read(struct api_stream *st, char *buf, size_t cap);
/*
 * Release the stream. If it did not reach its end (the client went
 * away), cancel its generation and record the usage so far.
 */
void api_stream_close(struct api_stream *st);

int64_t api_now_ms(void);

#endif
