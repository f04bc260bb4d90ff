/*
 * Ledger writer with group commit. Callers queue a row and sleep; one
 * writer thread takes everything queued, inserts it in one transaction,
 * commits (one fsync for the whole group under synchronous=FULL) and then
 * wakes every caller in the group with the result. Rows live on the
 * callers' stacks: a caller does not return before its item is marked
 * done, and the writer never touches an item after marking it.
 *
 * A group may fail to commit, because another process keeps the
 * database locked too long or the disk fails. Its rows are then appended
 * to a spill file beside the database (DB.spill, one JSON object a line,
 * fsync'd) and count as recorded. The spill file is imported into the
 * database at start and after the next successful commit; rows whose
 * request id is already in the ledger are skipped, so a crash between
 * import and removal of the file cannot count a request twice.
 */
#include "gateway/gw_ledger.h"
#include "store/store.h"
#include "util/util_log.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#define COMMIT_ATTEMPTS 5
#define COMMIT_RETRY_MS 20

struct ledger_item {
    const struct store_usage *row;
    struct ledger_item *next;
    int rc;
    int done;
};

struct gw_ledger {
    struct store *store;
    char *spill_path;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t work;         /* writer waits: queue non-empty or stop */
    pthread_cond_t committed;    /* callers wait: their item is done */
    struct ledger_item *head, *tail;
    int stopping;
};

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

    nanosleep(&ts, NULL);
}

/* Insert ITEMS in one transaction; returns 0 once it is committed. */
static int write_group(struct gw_ledger *l, struct ledger_item *items)
{
    sqlite3 *db = store_db(l->store);
    int rc;

    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        log_error("ledger", "begin failed: %s", sqlite3_errmsg(db));
        return -1;
    }
    for (struct ledger_item *it = items; it; it = it->next) {
        if (store_usage_insert(l->store, it->row) != 0) {
            log_error("ledger", "insert of request %s failed: %s",
                      it->row->request_id, sqlite3_errmsg(db));
            goto rollback;
        }
    }

    /* COMMIT can fail transiently (SQLITE_BUSY while a checkpoint or
     * another writer holds a lock); the transaction stays open, so the
     * same COMMIT can be retried. */
    for (int attempt = 1; attempt <= COMMIT_ATTEMPTS; attempt++) {
        rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            return 0;
        log_warn("ledger", "commit attempt %d of %d failed: %s", attempt,
                 COMMIT_ATTEMPTS, sqlite3_errmsg(db));
        if (sqlite3_get_autocommit(db))
            return -1;          /* SQLite already rolled it back */
        sleep_ms(COMMIT_RETRY_MS * attempt);
    }

rollback:
    if (!sqlite3_get_autocommit(db))
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

/* ---- spill file ---- */

static char *usage_to_json(const struct store_usage *u)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "ts_ms", (double)u->ts_ms);
    cJSON_AddStringToObject(o, "request_id", u->request_id);
    cJSON_AddStringToObject(o, "key_id", u->key_id);
    cJSON_AddNumberToObject(o, "tenant_id", (double)u->tenant_id);
    cJSON_AddStringToObject(o, "model", u->model);
    cJSON_AddStringToObject(o, "endpoint", u->endpoint);
    cJSON_AddNumberToObject(o, "prompt_tokens", (double)u->prompt_tokens);
    cJSON_AddNumberToObject(o, "completion_tokens",
                            (double)u->completion_tokens);
    cJSON_AddNumberToObject(o, "latency_ms", (double)u->latency_ms);
    cJSON_AddNumberToObject(o, "http_status", u->http_status);
    cJSON_AddStringToObject(o, "finish_reason", u->finish_reason);
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return text;
}

static void copy_field(char *dst, size_t cap, const cJSON *o,
                       const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    snprintf(dst, cap, "%s", cJSON_IsString(v) ? v->valuestring : "");
}

static int64_t int_field(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : 0;
}

static int usage_from_json(const char *line, struct store_usage *u)
{
    cJSON *o = cJSON_Parse(line);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return -1;
    }
    memset(u, 0, sizeof *u);
    u->ts_ms = int_field(o, "ts_ms");
    copy_field(u->request_id, sizeof u->request_id, o, "request_id");
    copy_field(u->key_id, sizeof u->key_id, o, "key_id");
    u->tenant_id = int_field(o, "tenant_id");
    copy_field(u->model, sizeof u->model, o, "model");
    copy_field(u->endpoint, sizeof u->endpoint, o, "endpoint");
    u->prompt_tokens = int_field(o, "prompt_tokens");
    u->completion_tokens = int_field(o, "completion_tokens");
    u->latency_ms = int_field(o, "latency_ms");
    u->http_status = (int)int_field(o, "http_status");
    copy_field(u->finish_reason, sizeof u->finish_reason, o,
               "finish_reason");
    cJSON_Delete(o);
    return u->request_id[0] ? 0 : -1;
}

/* Append the rows of ITEMS to the spill file and fsync it. */
static int spill_group(struct gw_ledger *l, struct ledger_item *items)
{
    int fd = open(l->spill_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
                  0600);
    if (fd < 0) {
        log_error("ledger", "cannot open spill file %s: %m", l->spill_path);
        return -1;
    }
    int rc = 0;
    for (struct ledger_item *it = items; it && rc == 0; it = it->next) {
        char *json = usage_to_json(it->row);
        size_t len = json ? strlen(json) : 0;
        if (!json || write(fd, json, len) != (ssize_t)len ||
            write(fd, "\n", 1) != 1)
            rc = -1;
        free(json);
    }
    if (rc == 0 && fsync(fd) != 0)
        rc = -1;
    if (rc != 0)
        log_error("ledger", "writing spill file %s failed: %m",
                  l->spill_path);
    close(fd);
    return rc;
}

static bool request_recorded(sqlite3 *db, const char *request_id)
{
    sqlite3_stmt *st;
    bool found = false;
    if (sqlite3_prepare_v2(db, "SELECT 1 FROM usage WHERE request_id = ?",
                           -1, &st, NULL) != SQLITE_OK)
        return false;
    sqlite3_bind_text(st, 1, request_id, -1, SQLITE_STATIC);
    found = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    return found;
}

/* Move the rows of the spill file, if any, into the database. */
static void import_spill(struct gw_ledger *l)
{
    struct stat sb;
    if (stat(l->spill_path, &sb) != 0 || sb.st_size == 0)
        return;
    FILE *f = fopen(l->spill_path, "r");
    if (!f)
        return;

    sqlite3 *db = store_db(l->store);
    char *line = NULL;
    size_t cap = 0;
    int imported = 0, bad = 0;
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        fclose(f);
        return;     /* still locked: try again after the next commit */
    }
    while (getline(&line, &cap, f) > 0) {
        struct store_usage u;
        if (usage_from_json(line, &u) != 0) {
            bad++;
            continue;
        }
        if (request_recorded(db, u.request_id))
            continue;
        if (store_usage_insert(l->store, &u) != 0)
            goto fail;
        imported++;
    }
    if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        goto fail;
    free(line);
    fclose(f);
    unlink(l->spill_path);
    log_info("ledger", "imported %d usage rows from %s", imported,
             l->spill_path);
    if (bad > 0)
        log_error("ledger", "%d unreadable lines in %s were dropped", bad,
                  l->spill_path);
    return;

fail:
    log_warn("ledger", "importing %s failed: %s; will retry",
             l->spill_path, sqlite3_errmsg(db));
    if (!sqlite3_get_autocommit(db))
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    free(line);
    fclose(f);
}

static void *writer_main(void *arg)
{
    struct gw_ledger *l = arg;

    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->head && !l->stopping)
            pthread_cond_wait(&l->work, &l->mu);
        if (!l->head)
            break;              /* stopping and drained */

        struct ledger_item *group = l->head;
        int n = 0;
        l->head = l->tail = NULL;
        pthread_mutex_unlock(&l->mu);

        int rc = write_group(l, group);
        if (rc == 0) {
            import_spill(l);
        } else {
            for (struct ledger_item *it = group; it; it = it->next)
                n++;
            rc = spill_group(l, group);
            if (rc == 0)
                log_warn("ledger", "commit failed; %d usage rows went to "
                         "%s", n, l->spill_path);
            else
                log_error("ledger", "commit failed; %d usage rows were "
                          "not written", n);
        }

        /* Read each next pointer before marking the item done, because
         * its owner may return and reuse the stack memory at once. */
        pthread_mutex_lock(&l->mu);
        for (struct ledger_item *it = group, *next; it; it = next) {
            next = it->next;
            it->rc = rc;
            it->done = 1;
        }
        pthread_cond_broadcast(&l->committed);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

int gw_ledger_start(const char *db_path, struct gw_ledger **out, char *err,
                    size_t errlen)
{
    struct gw_ledger *l;

    *out = NULL;
    l = calloc(1, sizeof *l);
    if (!l) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (store_open(db_path, &l->store, err, errlen) != 0) {
        free(l);
        return -1;
    }
    if (asprintf(&l->spill_path, "%s.spill", db_path) < 0) {
        snprintf(err, errlen, "out of memory");
        store_close(l->store);
        free(l);
        return -1;
    }
    import_spill(l);
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->work, NULL);
    pthread_cond_init(&l->committed, NULL);
    if (pthread_create(&l->thread, NULL, writer_main, l) != 0) {
        snprintf(err, errlen, "cannot start the ledger writer thread");
        pthread_cond_destroy(&l->committed);
        pthread_cond_destroy(&l->work);
        pthread_mutex_destroy(&l->mu);
        store_close(l->store);
        free(l->spill_path);
        free(l);
        return -1;
    }
    *out = l;
    return 0;
}

void gw_ledger_stop(struct gw_ledger *l)
{
    if (!l)
        return;
    pthread_mutex_lock(&l->mu);
    l->stopping = 1;
    pthread_cond_signal(&l->work);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->thread, NULL);

    pthread_cond_destroy(&l->committed);
    pthread_cond_destroy(&l->work);
    pthread_mutex_destroy(&l->mu);
    store_close(l->store);
    free(l->spill_path);
    free(l);
}

int gw_ledger_record(struct gw_ledger *l, const struct store_usage *u)
{
    struct ledger_item item = { .row = u };

    pthread_mutex_lock(&l->mu);
    if (l->stopping) {
        pthread_mutex_unlock(&l->mu);
        log_error("ledger", "usage row for request %s rejected: the "
                  "ledger is stopping", u->request_id);
        return -1;
    }
    if (l->tail)
        l->tail->next = &item;
    else
        l->head = &item;
    l->tail = &item;
    pthread_cond_signal(&l->work);
    while (!item.done)
        pthread_cond_wait(&l->committed, &l->mu);
    pthread_mutex_unlock(&l->mu);
    return item.rc;
}
