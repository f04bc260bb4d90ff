/*
 * Ledger writer with group commit. Callers queue a row and sleep; one
 * writer thread takes everything queued, inserts it in one transaction,
 * commits (one fsync for the whole group under synchronous=FULL) and then
 * wakes every caller in the group with the result. Rows live on the
 * callers' stacks: a caller does not return before its item is marked
 * done, and the writer never touches an item after marking it.
 */
#include "gateway/gw_ledger.h"
#include "store/store.h"
#include "util/util_log.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

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
        if (rc != 0) {
            for (struct ledger_item *it = group; it; it = it->next)
                n++;
            log_error("ledger", "commit failed; %d usage rows were not "
                      "written", n);
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
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->work, NULL);
    pthread_cond_init(&l->committed, NULL);
    if (pthread_create(&l->thread, NULL, writer_main, l) != 0) {
        snprintf(err, errlen, "cannot start the ledger writer thread");
        pthread_cond_destroy(&l->committed);
        pthread_cond_destroy(&l->work);
        pthread_mutex_destroy(&l->mu);
        store_close(l->store);
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
