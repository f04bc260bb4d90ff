/*
 * Tests for request authentication (gw_auth) and the group-commit ledger
 * writer (gw_ledger), against a fresh database in a temporary directory.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "gateway/gw_auth.h"
#include "gateway/gw_ledger.h"
#include "store/store.h"

struct fixture {
    char dir[64];
    char path[128];
    struct store *s;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    char err[256];

    assert_non_null(f);
    strcpy(f->dir, "/tmp/test_gateway.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/taphouse.db", f->dir);
    assert_int_equal(store_open(f->path, &f->s, err, sizeof err), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[256];

    store_close(f->s);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { 0, ms * 1000000L };

    nanosleep(&ts, NULL);
}

/* ---- gw_auth ---- */

static void test_auth_accepts_and_rejects(void **state)
{
    struct fixture *f = *state;
    char secret[STORE_SECRET_MAX], bad[STORE_SECRET_MAX];
    char header[160];
    struct store_key key, got;
    struct gw_auth *a;
    char err[256];

    assert_int_equal(store_key_create(f->s, "acme", "web", secret, &key,
                                      err, sizeof err), 0);
    assert_int_equal(gw_auth_open(f->path, &a, err, sizeof err), 0);

    /* The second and third checks are served from the cache. */
    snprintf(header, sizeof header, "Bearer %s", secret);
    for (int i = 0; i < 3; i++) {
        memset(&got, 0, sizeof got);
        assert_int_equal(gw_auth_check(a, header, &got), 0);
        assert_string_equal(got.key_id, key.key_id);
        assert_string_equal(got.tenant, "acme");
        assert_string_equal(got.label, "web");
        assert_int_equal(got.tenant_id, key.tenant_id);
    }

    /* Scheme in any case, extra blanks around the secret. */
    snprintf(header, sizeof header, "  bEaReR \t %s  ", secret);
    assert_int_equal(gw_auth_check(a, header, &got), 0);

    /* A wrong secret part for the cached key id. */
    strcpy(bad, secret);
    bad[30] = bad[30] == 'A' ? 'B' : 'A';
    snprintf(header, sizeof header, "Bearer %s", bad);
    assert_int_equal(gw_auth_check(a, header, &got), -1);
    /* A truncated secret for the cached key id. */
    bad[40] = '\0';
    snprintf(header, sizeof header, "Bearer %s", bad);
    assert_int_equal(gw_auth_check(a, header, &got), -1);

    /* Malformed headers. */
    assert_int_equal(gw_auth_check(a, NULL, &got), -1);
    assert_int_equal(gw_auth_check(a, "", &got), -1);
    assert_int_equal(gw_auth_check(a, "Bearer", &got), -1);
    assert_int_equal(gw_auth_check(a, "Bearer   ", &got), -1);
    snprintf(header, sizeof header, "Basic %s", secret);
    assert_int_equal(gw_auth_check(a, header, &got), -1);
    snprintf(header, sizeof header, "Bearer%s", secret);
    assert_int_equal(gw_auth_check(a, header, &got), -1);
    snprintf(header, sizeof header, "Bearer %s extra", secret);
    assert_int_equal(gw_auth_check(a, header, &got), -1);

    /* The valid key still works after all the failures. */
    snprintf(header, sizeof header, "Bearer %s", secret);
    assert_int_equal(gw_auth_check(a, header, &got), 0);
    gw_auth_close(a);
}

static void test_auth_revocation_from_other_connection(void **state)
{
    struct fixture *f = *state;
    char secret[STORE_SECRET_MAX], other[STORE_SECRET_MAX];
    char header[160], other_header[160];
    struct store_key key, key2, got;
    struct store *admin;
    struct gw_auth *a;
    char err[256];
    int64_t start;
    int rc;

    assert_int_equal(store_key_create(f->s, "acme", NULL, secret, &key,
                                      err, sizeof err), 0);
    assert_int_equal(store_key_create(f->s, "acme", NULL, other, &key2,
                                      err, sizeof err), 0);
    assert_int_equal(gw_auth_open(f->path, &a, err, sizeof err), 0);
    snprintf(header, sizeof header, "Bearer %s", secret);
    snprintf(other_header, sizeof other_header, "Bearer %s", other);
    assert_int_equal(gw_auth_check(a, header, &got), 0);
    assert_int_equal(gw_auth_check(a, other_header, &got), 0);

    /* Unrelated writes (usage rows) do not end a cached key. */
    struct store_usage u = { .ts_ms = 1, .request_id = "r", .http_status =
                             200 };
    assert_int_equal(store_usage_insert(f->s, &u), 0);
    sleep_ms(250);
    assert_int_equal(gw_auth_check(a, header, &got), 0);

    /* Revoke through a separate connection, as `keys revoke` would. */
    assert_int_equal(store_open(f->path, &admin, err, sizeof err), 0);
    assert_int_equal(store_key_revoke(admin, key.key_id, err, sizeof err),
                     0);
    store_close(admin);

    start = now_ms();
    while ((rc = gw_auth_check(a, header, &got)) == 0 &&
           now_ms() - start < 1500)
        sleep_ms(10);
    assert_int_equal(rc, -1);
    assert_true(now_ms() - start <= 1000);

    /* The other key of the tenant is still accepted. */
    assert_int_equal(gw_auth_check(a, other_header, &got), 0);
    assert_string_equal(got.key_id, key2.key_id);
    gw_auth_close(a);
}

/*
 * A cached key is served without SQLite: with the trigger removed, a
 * corrupted stored hash goes unnoticed while usage writes (which change
 * data_version but not auth_generation) continue.
 */
static void test_auth_cache_skips_sqlite(void **state)
{
    struct fixture *f = *state;
    char secret[STORE_SECRET_MAX], header[160];
    struct store_key key, got;
    struct store_usage u = { .ts_ms = 1, .request_id = "r",
                             .http_status = 200 };
    struct gw_auth *a;
    char err[256];

    assert_int_equal(store_key_create(f->s, "acme", NULL, secret, &key,
                                      err, sizeof err), 0);
    assert_int_equal(gw_auth_open(f->path, &a, err, sizeof err), 0);
    snprintf(header, sizeof header, "Bearer %s", secret);
    assert_int_equal(gw_auth_check(a, header, &got), 0);

    assert_int_equal(sqlite3_exec(store_db(f->s),
        "DROP TRIGGER api_keys_update_auth; "
        "UPDATE api_keys SET hash = zeroblob(32)", NULL, NULL, NULL),
        SQLITE_OK);
    assert_int_equal(store_key_verify(f->s, secret, &got), -1);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(store_usage_insert(f->s, &u), 0);
        sleep_ms(220);
        assert_int_equal(gw_auth_check(a, header, &got), 0);
        assert_string_equal(got.key_id, key.key_id);
    }
    gw_auth_close(a);
}

/* ---- gw_ledger ---- */

#define LEDGER_THREADS 8
#define LEDGER_ROWS 50

struct ledger_worker {
    struct gw_ledger *ledger;
    int thread;
    int failures;
};

static void *ledger_worker_main(void *arg)
{
    struct ledger_worker *w = arg;

    for (int i = 0; i < LEDGER_ROWS; i++) {
        struct store_usage u = {
            .ts_ms = 1700000000000 + w->thread * 1000 + i,
            .tenant_id = w->thread + 1,
            .prompt_tokens = w->thread * 100 + i,
            .completion_tokens = i * 2,
            .latency_ms = i + 7,
            .http_status = 200,
        };
        snprintf(u.request_id, sizeof u.request_id, "req-%d-%d", w->thread,
                 i);
        snprintf(u.key_id, sizeof u.key_id, "%016d", w->thread);
        snprintf(u.model, sizeof u.model, "model-%d", w->thread);
        snprintf(u.endpoint, sizeof u.endpoint, "/v1/chat/completions");
        snprintf(u.finish_reason, sizeof u.finish_reason, "%s",
                 i % 2 ? "stop" : "length");
        if (gw_ledger_record(w->ledger, &u) != 0)
            w->failures++;
    }
    return NULL;
}

static void test_ledger_many_threads(void **state)
{
    struct fixture *f = *state;
    struct ledger_worker workers[LEDGER_THREADS];
    pthread_t threads[LEDGER_THREADS];
    struct gw_ledger *l;
    sqlite3_stmt *st;
    char err[256];
    int seen[LEDGER_THREADS][LEDGER_ROWS] = { { 0 } };
    int rows = 0;

    assert_int_equal(gw_ledger_start(f->path, &l, err, sizeof err), 0);
    for (int t = 0; t < LEDGER_THREADS; t++) {
        workers[t] = (struct ledger_worker){ .ledger = l, .thread = t };
        assert_int_equal(pthread_create(&threads[t], NULL,
                                        ledger_worker_main, &workers[t]), 0);
    }
    for (int t = 0; t < LEDGER_THREADS; t++) {
        assert_int_equal(pthread_join(threads[t], NULL), 0);
        assert_int_equal(workers[t].failures, 0);
    }

    /* Every row is visible to another connection before stop. */
    assert_int_equal(sqlite3_prepare_v2(store_db(f->s),
        "SELECT request_id, ts_ms, tenant_id, prompt_tokens, "
        "completion_tokens, latency_ms, http_status, key_id, model, "
        "endpoint, finish_reason FROM usage", -1, &st, NULL), SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
        int t, i;
        char want[32];
        assert_int_equal(sscanf((const char *)sqlite3_column_text(st, 0),
                                "req-%d-%d", &t, &i), 2);
        assert_in_range(t, 0, LEDGER_THREADS - 1);
        assert_in_range(i, 0, LEDGER_ROWS - 1);
        seen[t][i]++;
        rows++;
        assert_int_equal(sqlite3_column_int64(st, 1),
                         1700000000000 + t * 1000 + i);
        assert_int_equal(sqlite3_column_int64(st, 2), t + 1);
        assert_int_equal(sqlite3_column_int64(st, 3), t * 100 + i);
        assert_int_equal(sqlite3_column_int64(st, 4), i * 2);
        assert_int_equal(sqlite3_column_int64(st, 5), i + 7);
        assert_int_equal(sqlite3_column_int(st, 6), 200);
        snprintf(want, sizeof want, "%016d", t);
        assert_string_equal(sqlite3_column_text(st, 7), want);
        snprintf(want, sizeof want, "model-%d", t);
        assert_string_equal(sqlite3_column_text(st, 8), want);
        assert_string_equal(sqlite3_column_text(st, 9),
                            "/v1/chat/completions");
        assert_string_equal(sqlite3_column_text(st, 10),
                            i % 2 ? "stop" : "length");
    }
    sqlite3_finalize(st);
    assert_int_equal(rows, LEDGER_THREADS * LEDGER_ROWS);
    for (int t = 0; t < LEDGER_THREADS; t++) {
        for (int i = 0; i < LEDGER_ROWS; i++)
            assert_int_equal(seen[t][i], 1);
    }
    gw_ledger_stop(l);
}

/* After stop closes the writer's connection, every row is in the file. */
static void test_ledger_rows_after_stop(void **state)
{
    struct fixture *f = *state;
    struct ledger_worker workers[LEDGER_THREADS];
    pthread_t threads[LEDGER_THREADS];
    struct gw_ledger *l;
    char err[256];
    sqlite3_stmt *st;
    int failures = 0;

    assert_int_equal(gw_ledger_start(f->path, &l, err, sizeof err), 0);
    for (int t = 0; t < LEDGER_THREADS; t++) {
        workers[t] = (struct ledger_worker){ .ledger = l, .thread = t };
        assert_int_equal(pthread_create(&threads[t], NULL,
                                        ledger_worker_main, &workers[t]), 0);
    }
    for (int t = 0; t < LEDGER_THREADS; t++) {
        assert_int_equal(pthread_join(threads[t], NULL), 0);
        failures += workers[t].failures;
    }
    gw_ledger_stop(l);
    assert_int_equal(failures, 0);

    assert_int_equal(sqlite3_prepare_v2(store_db(f->s),
        "SELECT count(*), count(DISTINCT request_id) FROM usage", -1, &st,
        NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0),
                     LEDGER_THREADS * LEDGER_ROWS);
    assert_int_equal(sqlite3_column_int(st, 1),
                     LEDGER_THREADS * LEDGER_ROWS);
    sqlite3_finalize(st);
}

static int count_usage(struct store *s, const char *request_id)
{
    sqlite3_stmt *st;
    int n;

    assert_int_equal(sqlite3_prepare_v2(store_db(s),
        "SELECT count(*) FROM usage WHERE request_id = ?", -1, &st, NULL),
        SQLITE_OK);
    sqlite3_bind_text(st, 1, request_id, -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return n;
}

/*
 * A row that cannot be committed because another process holds the
 * database goes to the spill file, counts as recorded, and reaches the
 * ledger exactly once after the lock is released.
 */
static void test_ledger_spills_when_locked(void **state)
{
    struct fixture *f = *state;
    struct gw_ledger *l;
    struct store_usage a = { .ts_ms = 1, .tenant_id = 1,
                             .prompt_tokens = 7, .completion_tokens = 3,
                             .http_status = 200 };
    struct store_usage b = a;
    char err[256], spill[160];
    struct stat sb;

    snprintf(a.request_id, sizeof a.request_id, "req-spilled");
    snprintf(b.request_id, sizeof b.request_id, "req-after");
    snprintf(spill, sizeof spill, "%s.spill", f->path);
    assert_int_equal(gw_ledger_start(f->path, &l, err, sizeof err), 0);

    assert_int_equal(sqlite3_exec(store_db(f->s), "BEGIN EXCLUSIVE", NULL,
                                  NULL, NULL), SQLITE_OK);
    assert_int_equal(gw_ledger_record(l, &a), 0);
    assert_int_equal(stat(spill, &sb), 0);
    assert_true(sb.st_size > 0);
    assert_int_equal(sqlite3_exec(store_db(f->s), "COMMIT", NULL, NULL,
                                  NULL), SQLITE_OK);

    assert_int_equal(gw_ledger_record(l, &b), 0);
    assert_int_equal(count_usage(f->s, "req-spilled"), 1);
    assert_int_equal(count_usage(f->s, "req-after"), 1);
    assert_int_not_equal(stat(spill, &sb), 0);
    gw_ledger_stop(l);

    /* A leftover spill file whose rows are already in the ledger (a crash
     * after import) adds nothing when the next writer starts. */
    FILE *out = fopen(spill, "w");
    assert_non_null(out);
    fprintf(out, "{\"request_id\":\"req-spilled\",\"prompt_tokens\":7}\n"
            "not json\n{\"request_id\":\"req-new\",\"prompt_tokens\":2}\n");
    fclose(out);
    assert_int_equal(gw_ledger_start(f->path, &l, err, sizeof err), 0);
    gw_ledger_stop(l);
    assert_int_equal(count_usage(f->s, "req-spilled"), 1);
    assert_int_equal(count_usage(f->s, "req-new"), 1);
    assert_int_not_equal(stat(spill, &sb), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_auth_accepts_and_rejects),
        T(test_auth_revocation_from_other_connection),
        T(test_auth_cache_skips_sqlite),
        T(test_ledger_many_threads),
        T(test_ledger_rows_after_stop),
        T(test_ledger_spills_when_locked),
#undef T
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
