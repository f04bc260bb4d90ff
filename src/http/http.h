/*
 * HTTP front end on libmicrohttpd: routing, body limits, API key checks
 * and the event-stream writer. A thread serves each connection, so a
 * handler may block while the scheduler generates.
 */
#ifndef TAPHOUSE_HTTP_H
#define TAPHOUSE_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "api/api.h"
#include "gateway/gw_auth.h"

struct http_config {
    const char *host;          /* numeric IPv4 or IPv6 address */
    int port;                  /* 0: any free port */
    size_t max_body;           /* bytes; larger bodies get 413 */
    unsigned max_connections;
    unsigned max_per_ip;       /* connections from one address; 0: any */
    unsigned idle_timeout_s;   /* close a connection idle this long */
};

struct http_server;

int http_start(const struct http_config *cfg, struct api_server *api,
               struct gw_auth *auth, struct http_server **out, char *err,
               size_t errlen);
/* Stop accepting connections; open ones keep being served. */
void http_quiesce(struct http_server *h);
/* Wait up to TIMEOUT_MS until no request is in progress; returns true
 * if none is. */
bool http_wait_idle(struct http_server *h, int timeout_ms);
/* The port actually bound (useful with port 0). */
int http_port(const struct http_server *h);
void http_stop(struct http_server *h);

#endif
