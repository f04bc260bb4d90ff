/*
 * libmicrohttpd server: one thread per connection. The access handler
 * collects the body (up to the configured limit), authenticates /v1/
 * calls, routes to the API handlers and queues their reply: a JSON body,
 * or a chunked text/event-stream fed by api_stream_read.
 */
#include "http/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <microhttpd.h>

#include "util/util_log.h"

#define STREAM_BLOCK 16384
/* Bodies up to this multiple of the limit are read and dropped. */
#define DISCARD_FACTOR 16

struct http_server {
    struct MHD_Daemon *daemon;
    struct api_server *api;
    struct gw_auth *auth;
    size_t max_body;
    int port;
    pthread_mutex_t lock;
    int active;                /* requests between arrival and completion */
};

/* Per-request state, kept in libmicrohttpd's con_cls. */
struct request_state {
    int64_t start_ms;
    bool too_large;
    char *body;
    size_t len, cap;
};

/* ---- replies ---- */

static enum MHD_Result queue_json(struct MHD_Connection *conn, int status,
                                  char *body, const char *request_id)
{
    const char *text = body ? body : "{}";
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
    free(body);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", "application/json");
    if (request_id && request_id[0])
        MHD_add_response_header(resp, "X-Request-Id", request_id);
    enum MHD_Result rc = MHD_queue_response(conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result queue_error(struct MHD_Connection *conn, int status,
                                   const char *type, const char *code,
                                   const char *message)
{
    struct api_reply reply = { 0 };
    api_reply_error(&reply, status, type, NULL, code, "%s", message);
    return queue_json(conn, reply.status, reply.body, NULL);
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    ssize_t n = api_stream_read(cls, buf, max);
    return n > 0 ? n : MHD_CONTENT_READER_END_OF_STREAM;
}

static void stream_free(void *cls)
{
    api_stream_close(cls);
}

static enum MHD_Result queue_reply(struct MHD_Connection *conn,
                                   struct api_reply *reply)
{
    if (!reply->stream)
        return queue_json(conn, reply->status ? reply->status : 500,
                          reply->body, reply->request_id);

    struct MHD_Response *resp = MHD_create_response_from_callback(
        MHD_SIZE_UNKNOWN, STREAM_BLOCK, stream_reader, reply->stream,
        stream_free);
    if (!resp) {
        api_stream_close(reply->stream);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "text/event-stream");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    MHD_add_response_header(resp, "X-Request-Id", reply->request_id);
    enum MHD_Result rc = MHD_queue_response(conn, 200, resp);
    MHD_destroy_response(resp);
    return rc;
}

/* ---- the client's connection ---- */

/* True when the peer has closed or reset the connection. */
static bool client_gone(void *ctx)
{
    struct pollfd p = { .fd = (int)(intptr_t)ctx, .events = POLLRDHUP };
    if (poll(&p, 1, 0) <= 0)
        return false;
    return (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

static struct api_conn conn_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(
        conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    struct api_conn c = { 0 };
    if (info) {
        c.client_gone = client_gone;
        c.ctx = (void *)(intptr_t)info->connect_fd;
    }
    return c;
}

/* ---- routing ---- */

static enum MHD_Result unauthorized(struct MHD_Connection *conn,
                                    const char *authorization)
{
    const char *message = authorization
        ? "Incorrect API key provided. Create a key with `taphouse keys "
          "create` and send it as 'Authorization: Bearer KEY'."
        : "You didn't provide an API key. Send it as 'Authorization: "
          "Bearer KEY'.";
    return queue_error(conn, 401, "invalid_request_error",
                       "invalid_api_key", message);
}

static enum MHD_Result route(struct http_server *h,
                             struct MHD_Connection *conn, const char *url,
                             const char *method, struct request_state *rs)
{
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    bool post = strcmp(method, "POST") == 0;
    char message[300];

    if (strcmp(url, "/health") == 0) {
        if (!get)
            goto not_allowed;
        return queue_json(conn, 200, strdup("{\"status\":\"ok\"}"), NULL);
    }
    if (strncmp(url, "/v1/", 4) != 0)
        goto not_found;

    bool models = strcmp(url, "/v1/models") == 0;
    bool model = strncmp(url, "/v1/models/", 11) == 0 && url[11];
    bool completions = strcmp(url, "/v1/completions") == 0;
    bool chat = strcmp(url, "/v1/chat/completions") == 0;
    if (!models && !model && !completions && !chat)
        goto not_found;
    if (((models || model) && !get) || ((completions || chat) && !post))
        goto not_allowed;

    const char *authorization = MHD_lookup_connection_value(
        conn, MHD_HEADER_KIND, "Authorization");
    struct store_key key;
    if (gw_auth_check(h->auth, authorization, &key) != 0)
        return unauthorized(conn, authorization);

    struct api_reply reply = { 0 };
    if (models) {
        api_models_list(h->api, &reply);
    } else if (model) {
        api_models_get(h->api, url + 11, &reply);
    } else {
        struct api_call call = {
            .key = &key,
            .body = rs->body ? rs->body : "",
            .body_len = rs->len,
            .start_ms = rs->start_ms,
            .conn = conn_of(conn),
        };
        if (completions)
            api_completions(h->api, &call, &reply);
        else
            api_chat(h->api, &call, &reply);
    }
    return queue_reply(conn, &reply);

not_found:
    snprintf(message, sizeof message, "Unknown request URL: %.8s %.200s.",
             method, url);
    return queue_error(conn, 404, "invalid_request_error", "unknown_url",
                       message);
not_allowed:
    snprintf(message, sizeof message, "Method %.8s is not allowed on "
             "%.200s.", method, url);
    return queue_error(conn, 405, "invalid_request_error",
                       "method_not_allowed", message);
}

/* ---- libmicrohttpd callbacks ---- */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
                                  const char *url, const char *method,
                                  const char *version,
                                  const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    struct http_server *h = cls;
    struct request_state *rs = *con_cls;
    (void)version;

    if (!rs) {
        rs = calloc(1, sizeof *rs);
        if (!rs)
            return MHD_NO;
        rs->start_ms = api_now_ms();
        *con_cls = rs;
        pthread_mutex_lock(&h->lock);
        h->active++;
        pthread_mutex_unlock(&h->lock);

        /*
         * An oversized body is read and dropped, so the client gets the
         * 413 and not a reset connection. A body over DISCARD_FACTOR
         * times the limit is rejected before it is read.
         */
        const char *length = MHD_lookup_connection_value(
            conn, MHD_HEADER_KIND, "Content-Length");
        unsigned long long declared = length ? strtoull(length, NULL, 10)
                                             : 0;
        if (declared > h->max_body)
            rs->too_large = true;
        if (declared / DISCARD_FACTOR > h->max_body) {
            char message[128];
            snprintf(message, sizeof message, "The request body is larger "
                     "than the limit of %zu bytes.", h->max_body);
            return queue_error(conn, 413, "invalid_request_error",
                               "request_too_large", message);
        }
        return MHD_YES;
    }

    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (rs->too_large)
            return MHD_YES;
        if (rs->len + n > h->max_body) {
            rs->too_large = true;
            return MHD_YES;
        }
        if (rs->len + n + 1 > rs->cap) {
            size_t cap = rs->cap ? rs->cap * 2 : 4096;
            while (cap < rs->len + n + 1)
                cap *= 2;
            char *grown = realloc(rs->body, cap);
            if (!grown)
                return MHD_NO;
            rs->body = grown;
            rs->cap = cap;
        }
        memcpy(rs->body + rs->len, upload_data, n);
        rs->len += n;
        rs->body[rs->len] = '\0';
        return MHD_YES;
    }

    if (rs->too_large) {
        char message[128];
        snprintf(message, sizeof message, "The request body is larger "
                 "than the limit of %zu bytes.", h->max_body);
        return queue_error(conn, 413, "invalid_request_error",
                           "request_too_large", message);
    }
    return route(h, conn, url, method, rs);
}

static void on_completed(void *cls, struct MHD_Connection *conn,
                         void **con_cls, enum MHD_RequestTerminationCode tc)
{
    struct http_server *h = cls;
    (void)conn;
    (void)tc;
    struct request_state *rs = *con_cls;
    if (rs) {
        pthread_mutex_lock(&h->lock);
        h->active--;
        pthread_mutex_unlock(&h->lock);
        free(rs->body);
        free(rs);
        *con_cls = NULL;
    }
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];
    (void)cls;
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n > 0 && line[n - 1] == '\n')
        line[--n] = '\0';
    log_warn("http", "%s", line);
}

/* ---- lifecycle ---- */

int http_start(const struct http_config *cfg, struct api_server *api,
               struct gw_auth *auth, struct http_server **out, char *err,
               size_t errlen)
{
    struct sockaddr_storage addr;
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION |
                     MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG |
                     MHD_USE_ITC;

    memset(&addr, 0, sizeof addr);
    struct sockaddr_in *v4 = (struct sockaddr_in *)&addr;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&addr;
    if (inet_pton(AF_INET, cfg->host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)cfg->port);
    } else if (inet_pton(AF_INET6, cfg->host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)cfg->port);
        flags |= MHD_USE_IPv6;
    } else {
        snprintf(err, errlen, "invalid --host '%s': give a numeric IPv4 "
                 "or IPv6 address such as 127.0.0.1", cfg->host);
        return -EINVAL;
    }

    struct http_server *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    h->api = api;
    h->auth = auth;
    h->max_body = cfg->max_body;
    pthread_mutex_init(&h->lock, NULL);

    h->daemon = MHD_start_daemon(
        flags, (uint16_t)cfg->port, NULL, NULL, on_request, h,
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, h,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_CONNECTION_LIMIT, cfg->max_connections,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, cfg->max_per_ip,
        MHD_OPTION_CONNECTION_TIMEOUT, cfg->idle_timeout_s,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
        MHD_OPTION_END);
    if (!h->daemon) {
        snprintf(err, errlen, "cannot listen on %s port %d: %s", cfg->host,
                 cfg->port, errno ? strerror(errno) : "unknown error");
        pthread_mutex_destroy(&h->lock);
        free(h);
        return -EADDRINUSE;
    }

    const union MHD_DaemonInfo *info = MHD_get_daemon_info(
        h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : cfg->port;
    *out = h;
    return 0;
}

void http_quiesce(struct http_server *h)
{
    if (!h)
        return;
    MHD_socket listen_fd = MHD_quiesce_daemon(h->daemon);
    if (listen_fd != MHD_INVALID_SOCKET)
        close(listen_fd);
}

bool http_wait_idle(struct http_server *h, int timeout_ms)
{
    int64_t deadline = api_now_ms() + timeout_ms;
    for (;;) {
        pthread_mutex_lock(&h->lock);
        int active = h->active;
        pthread_mutex_unlock(&h->lock);
        if (active == 0)
            return true;
        if (api_now_ms() >= deadline)
            return false;
        usleep(10000);
    }
}

int http_port(const struct http_server *h)
{
    return h->port;
}

void http_stop(struct http_server *h)
{
    if (!h)
        return;
    MHD_stop_daemon(h->daemon);
    pthread_mutex_destroy(&h->lock);
    free(h);
}
