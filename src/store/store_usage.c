/*
 * The usage ledger: one row per finished request. The insert statement is
 * prepared once per connection and reused, because the ledger writer
 * inserts many rows per second. Durability comes from the connection's
 * synchronous=FULL, set in store_open.
 */
#include "store/store.h"
#include "store/store_internal.h"

#include <stddef.h>

void store_usage_release(struct store *s)
{
    sqlite3_finalize(s->usage_insert);
    s->usage_insert = NULL;
}

/* Bind a text field, or NULL when it is empty. */
static void bind_text_or_null(sqlite3_stmt *st, int i, const char *v)
{
    if (v[0])
        sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, i);
}

int store_usage_insert(struct store *s, const struct store_usage *u)
{
    sqlite3_stmt *st;
    int rc;

    if (!s->usage_insert &&
        sqlite3_prepare_v3(s->db,
            "INSERT INTO usage (ts_ms, request_id, key_id, tenant_id, model, "
            "endpoint, prompt_tokens, completion_tokens, latency_ms, "
            "http_status, finish_reason) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", -1,
            SQLITE_PREPARE_PERSISTENT, &s->usage_insert, NULL) != SQLITE_OK)
        return -1;
    st = s->usage_insert;

    sqlite3_bind_int64(st, 1, u->ts_ms);
    sqlite3_bind_text(st, 2, u->request_id, -1, SQLITE_TRANSIENT);
    bind_text_or_null(st, 3, u->key_id);
    if (u->tenant_id > 0)
        sqlite3_bind_int64(st, 4, u->tenant_id);
    else
        sqlite3_bind_null(st, 4);
    bind_text_or_null(st, 5, u->model);
    bind_text_or_null(st, 6, u->endpoint);
    sqlite3_bind_int64(st, 7, u->prompt_tokens);
    sqlite3_bind_int64(st, 8, u->completion_tokens);
    sqlite3_bind_int64(st, 9, u->latency_ms);
    sqlite3_bind_int(st, 10, u->http_status);
    bind_text_or_null(st, 11, u->finish_reason);

    rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? 0 : -1;
}
