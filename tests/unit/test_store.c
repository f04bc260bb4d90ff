/*
 * Tests for the store (migrations, keys, usage) and the `keys` command,
 * each against a fresh database in its own temporary directory.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli/cli.h"
#include "store/store.h"
#include "store/store_schema.h"

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
    strcpy(f->dir, "/tmp/test_store.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    /* A subdirectory that does not exist yet: store_open creates it. */
    snprintf(f->path, sizeof f->path, "%s/data/taphouse.db", f->dir);
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

static int64_t query_int(struct store *s, const char *sql)
{
    sqlite3_stmt *st;
    int64_t v;

    assert_int_equal(sqlite3_prepare_v2(store_db(s), sql, -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static void exec_ok(struct store *s, const char *sql)
{
    assert_int_equal(sqlite3_exec(store_db(s), sql, NULL, NULL, NULL),
                     SQLITE_OK);
}

/* ---- migrations ---- */

static void test_migrations_applied_and_recorded(void **state)
{
    struct fixture *f = *state;
    struct stat st;

    assert_true(store_n_migrations >= 1);
    assert_int_equal(store_migrations[0].version, 1);
    assert_int_equal(store_schema_version(f->s),
                     store_migrations[store_n_migrations - 1].version);
    assert_int_equal(query_int(f->s,
        "SELECT count(*) FROM schema_migrations"), store_n_migrations);
    assert_int_equal(query_int(f->s,
        "SELECT count(*) FROM schema_migrations WHERE version = 1 "
        "AND name = '001_init.sql' AND applied_ms > 1600000000000"), 1);
    assert_int_equal(query_int(f->s,
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
        "name IN ('tenants', 'api_keys', 'usage', 'settings')"), 4);
    assert_int_equal(query_int(f->s,
        "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND "
        "name IN ('usage_tenant_ts', 'usage_key')"), 2);

    /* The parent directory was created private. */
    char dir[160];
    snprintf(dir, sizeof dir, "%s/data", f->dir);
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
}

static void test_pragmas_wal_and_foreign_keys(void **state)
{
    struct fixture *f = *state;
    sqlite3_stmt *st;

    assert_int_equal(sqlite3_prepare_v2(store_db(f->s),
                     "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    assert_int_equal(query_int(f->s, "PRAGMA foreign_keys"), 1);
    assert_int_equal(query_int(f->s, "PRAGMA synchronous"), 2);  /* FULL */
    assert_int_equal(query_int(f->s, "PRAGMA busy_timeout"), 5000);
}

static void test_reopen_is_idempotent(void **state)
{
    struct fixture *f = *state;
    struct store *again;
    char err[256];

    for (int i = 0; i < 3; i++) {
        assert_int_equal(store_open(f->path, &again, err, sizeof err), 0);
        assert_int_equal(store_schema_version(again),
                         store_schema_version(f->s));
        assert_int_equal(query_int(again,
            "SELECT count(*) FROM schema_migrations"), store_n_migrations);
        store_close(again);
    }
}

static void test_future_version_rejected(void **state)
{
    struct fixture *f = *state;
    struct store *again = NULL;
    char err[512] = "";
    char want[128];
    int newest = store_migrations[store_n_migrations - 1].version;

    exec_ok(f->s, "INSERT INTO schema_migrations VALUES (7, '007_x.sql', 0)");
    assert_int_not_equal(store_open(f->path, &again, err, sizeof err), 0);
    assert_null(again);
    snprintf(want, sizeof want, "database schema version 7 is newer than "
             "this binary (max %d); upgrade taphouse", newest);
    assert_non_null(strstr(err, want));
}

/* Several processes open one fresh database at the same moment; the
 * migration must be applied, and recorded, exactly once. */
static void test_concurrent_open_migrates_once(void **state)
{
    struct fixture *f = *state;
    char path[160];
    pid_t pids[6];
    int status;

    snprintf(path, sizeof path, "%s/race.db", f->dir);
    for (int i = 0; i < 6; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            struct store *s;
            char err[256];
            int rc = store_open(path, &s, err, sizeof err);
            if (rc == 0)
                store_close(s);
            else
                fprintf(stderr, "child open failed: %s\n", err);
            _exit(rc == 0 ? 0 : 1);
        }
    }
    for (int i = 0; i < 6; i++) {
        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }

    struct store *s;
    char err[256];
    assert_int_equal(store_open(path, &s, err, sizeof err), 0);
    assert_int_equal(query_int(s, "SELECT count(*) FROM schema_migrations"),
                     store_n_migrations);
    assert_int_equal(query_int(s, "SELECT count(*) FROM settings "
                               "WHERE name = 'auth_generation'"), 1);
    store_close(s);
}

static void test_default_path_env(void **state)
{
    char buf[512];
    char tiny[8];

    (void)state;
    setenv("TAPHOUSE_DATA_DIR", "/srv/tap", 1);
    assert_int_equal(store_default_path(buf, sizeof buf), 0);
    assert_string_equal(buf, "/srv/tap/taphouse.db");
    assert_int_equal(store_default_path(tiny, sizeof tiny), -1);

    unsetenv("TAPHOUSE_DATA_DIR");
    setenv("XDG_DATA_HOME", "/home/u/.data", 1);
    assert_int_equal(store_default_path(buf, sizeof buf), 0);
    assert_string_equal(buf, "/home/u/.data/taphouse/taphouse.db");

    unsetenv("XDG_DATA_HOME");
    setenv("HOME", "/home/u", 1);
    assert_int_equal(store_default_path(buf, sizeof buf), 0);
    assert_string_equal(buf, "/home/u/.local/share/taphouse/taphouse.db");
}

/* ---- keys ---- */

static void test_key_create_and_verify(void **state)
{
    struct fixture *f = *state;
    char secret[STORE_SECRET_MAX];
    struct store_key key, got;
    char err[256];

    assert_int_equal(store_key_create(f->s, "acme", "ci runner", secret,
                                      &key, err, sizeof err), 0);
    assert_int_equal(strlen(secret), 64);
    assert_memory_equal(secret, "tap-", 4);
    assert_memory_equal(secret + 4, key.key_id, STORE_KEY_ID_LEN);
    assert_int_equal(secret[20], '-');
    assert_int_equal(strlen(key.key_id), STORE_KEY_ID_LEN);
    assert_string_equal(key.tenant, "acme");
    assert_string_equal(key.label, "ci runner");
    assert_true(key.tenant_id > 0);
    assert_int_equal(key.revoked_ms, 0);

    memset(&got, 0, sizeof got);
    assert_int_equal(store_key_verify(f->s, secret, &got), 0);
    assert_string_equal(got.key_id, key.key_id);
    assert_string_equal(got.tenant, "acme");
    assert_string_equal(got.label, "ci runner");
    assert_int_equal(got.tenant_id, key.tenant_id);
    assert_int_equal(got.created_ms, key.created_ms);

    /* A second key for the same tenant reuses the tenant row. */
    struct store_key key2;
    assert_int_equal(store_key_create(f->s, "acme", NULL, secret, &key2,
                                      err, sizeof err), 0);
    assert_int_equal(key2.tenant_id, key.tenant_id);
    assert_string_not_equal(key2.key_id, key.key_id);
    assert_int_equal(query_int(f->s, "SELECT count(*) FROM tenants"), 1);
}

static void test_key_wrong_secret_rejected(void **state)
{
    struct fixture *f = *state;
    char secret[STORE_SECRET_MAX], bad[STORE_SECRET_MAX];
    struct store_key key, got;
    char err[256];

    assert_int_equal(store_key_create(f->s, "acme", NULL, secret, &key,
                                      err, sizeof err), 0);

    /* Change one character of the secret part, keeping it valid base64. */
    strcpy(bad, secret);
    bad[30] = bad[30] == 'A' ? 'B' : 'A';
    assert_int_equal(store_key_verify(f->s, bad, &got), -1);

    /* A valid secret part moved onto another key's id. */
    char other[STORE_SECRET_MAX];
    struct store_key key2;
    assert_int_equal(store_key_create(f->s, "beta", NULL, other, &key2,
                                      err, sizeof err), 0);
    strcpy(bad, secret);
    memcpy(bad + 4, key2.key_id, STORE_KEY_ID_LEN);
    assert_int_equal(store_key_verify(f->s, bad, &got), -1);

    /* An unknown key id with a well-formed secret. */
    strcpy(bad, secret);
    memcpy(bad + 4, "0123456789abcdef", STORE_KEY_ID_LEN);
    assert_int_equal(store_key_verify(f->s, bad, &got), -1);
}

static void test_key_malformed_rejected(void **state)
{
    struct fixture *f = *state;
    char secret[STORE_SECRET_MAX], bad[STORE_SECRET_MAX * 2];
    struct store_key key, got;
    char err[256];

    assert_int_equal(store_key_create(f->s, "acme", NULL, secret, &key,
                                      err, sizeof err), 0);
    assert_int_equal(store_key_verify(f->s, secret, &got), 0);

    assert_int_equal(store_key_verify(f->s, "", &got), -1);
    assert_int_equal(store_key_verify(f->s, NULL, &got), -1);
    assert_int_equal(store_key_verify(f->s, "tap-", &got), -1);

    /* Wrong prefix. */
    strcpy(bad, secret);
    memcpy(bad, "tip-", 4);
    assert_int_equal(store_key_verify(f->s, bad, &got), -1);
    strcpy(bad, secret);
    bad[0] = 'T';
    assert_int_equal(store_key_verify(f->s, bad, &got), -1);

    /* Too long and too short. */
    snprintf(bad, sizeof bad, "%sA", secret);
    assert_int_equal(store_key_verify(f->s, bad, &got), -1);
    strcpy(bad, secret);
    bad[strlen(bad) - 1] = '\0';
    assert_int_equal(store_key_verify(f->s, bad, &got), -1);

    /* Non-base64 characters in the secret part. */
    strcpy(bad, secret);
    bad[40] = '+';
    assert_int_equal(store_key_verify(f->s, bad, &got), -1);
    strcpy(bad, secret);
    bad[40] = '=';
    assert_int_equal(store_key_verify(f->s, bad, &got), -1);

    /* Upper-case or non-hex key id, or a missing separator. */
    strcpy(bad, secret);
    bad[5] = 'G';
    assert_int_equal(store_key_verify(f->s, bad, &got), -1);
    strcpy(bad, secret);
    bad[20] = '_';
    assert_int_equal(store_key_verify(f->s, bad, &got), -1);
}

static void test_key_name_validation(void **state)
{
    struct fixture *f = *state;
    char secret[STORE_SECRET_MAX];
    struct store_key key;
    char err[256];
    char long_name[80];
    char long_label[200];

    assert_int_equal(store_key_create(f->s, "", NULL, secret, &key, err,
                                      sizeof err), -1);
    assert_non_null(strstr(err, "tenant name"));
    assert_int_equal(store_key_create(f->s, "a b", NULL, secret, &key, err,
                                      sizeof err), -1);
    assert_non_null(strstr(err, "tenant name"));
    memset(long_name, 'x', 65);
    long_name[65] = '\0';
    assert_int_equal(store_key_create(f->s, long_name, NULL, secret, &key,
                                      err, sizeof err), -1);
    long_name[64] = '\0';
    assert_int_equal(store_key_create(f->s, long_name, NULL, secret, &key,
                                      err, sizeof err), 0);

    assert_int_equal(store_key_create(f->s, "acme", "tab\there", secret,
                                      &key, err, sizeof err), -1);
    assert_non_null(strstr(err, "label"));
    memset(long_label, 'y', 128);
    long_label[128] = '\0';
    assert_int_equal(store_key_create(f->s, "acme", long_label, secret,
                                      &key, err, sizeof err), -1);
    long_label[127] = '\0';
    assert_int_equal(store_key_create(f->s, "acme", long_label, secret,
                                      &key, err, sizeof err), 0);
    assert_string_equal(key.label, long_label);
    assert_int_equal(query_int(f->s, "SELECT count(*) FROM api_keys"), 2);
}

static void test_key_revoke(void **state)
{
    struct fixture *f = *state;
    char secret[STORE_SECRET_MAX];
    struct store_key key, got;
    char err[256];

    assert_int_equal(store_key_create(f->s, "acme", NULL, secret, &key,
                                      err, sizeof err), 0);
    assert_int_equal(store_key_verify(f->s, secret, &got), 0);
    assert_int_equal(store_key_revoke(f->s, key.key_id, err, sizeof err),
                     0);
    assert_int_equal(store_key_verify(f->s, secret, &got), -1);

    err[0] = '\0';
    assert_int_equal(store_key_revoke(f->s, key.key_id, err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "already revoked"));

    err[0] = '\0';
    assert_int_equal(store_key_revoke(f->s, "0123456789abcdef", err,
                                      sizeof err), -1);
    assert_non_null(strstr(err, "not found"));

    err[0] = '\0';
    assert_int_equal(store_key_revoke(f->s, "nope", err, sizeof err), -1);
    assert_non_null(strstr(err, "invalid key id"));
}

static void test_key_list_status(void **state)
{
    struct fixture *f = *state;
    char secret[STORE_SECRET_MAX];
    struct store_key k[3];
    struct store_key *keys;
    char err[256];
    int n;

    assert_int_equal(store_key_list(f->s, &keys, &n), 0);
    assert_int_equal(n, 0);
    free(keys);

    assert_int_equal(store_key_create(f->s, "acme", "one", secret, &k[0],
                                      err, sizeof err), 0);
    assert_int_equal(store_key_create(f->s, "beta", NULL, secret, &k[1],
                                      err, sizeof err), 0);
    assert_int_equal(store_key_create(f->s, "acme", "three", secret, &k[2],
                                      err, sizeof err), 0);
    assert_int_equal(store_key_revoke(f->s, k[1].key_id, err, sizeof err),
                     0);

    assert_int_equal(store_key_list(f->s, &keys, &n), 0);
    assert_int_equal(n, 3);
    for (int i = 0; i < 3; i++) {
        assert_string_equal(keys[i].key_id, k[i].key_id);
        assert_string_equal(keys[i].tenant, k[i].tenant);
        assert_string_equal(keys[i].label, k[i].label);
        assert_int_equal(keys[i].created_ms, k[i].created_ms);
    }
    assert_int_equal(keys[0].revoked_ms, 0);
    assert_true(keys[1].revoked_ms >= k[1].created_ms);
    assert_int_equal(keys[2].revoked_ms, 0);
    free(keys);
}

/* Read the whole file at PATH into a malloc'd buffer. */
static unsigned char *read_file(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    unsigned char *buf;
    long n;

    if (!fp)
        return NULL;
    fseek(fp, 0, SEEK_END);
    n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    *len = fread(buf, 1, (size_t)n, fp);
    fclose(fp);
    return buf;
}

static int contains(const unsigned char *hay, size_t n, const char *needle)
{
    size_t m = strlen(needle);

    for (size_t i = 0; i + m <= n; i++) {
        if (memcmp(hay + i, needle, m) == 0)
            return 1;
    }
    return 0;
}

static void test_secret_not_in_db_file(void **state)
{
    struct fixture *f = *state;
    char secret[STORE_SECRET_MAX];
    struct store_key key;
    char err[256];
    char wal[160];
    unsigned char *bytes;
    size_t len;

    assert_int_equal(store_key_create(f->s, "acme", "scan", secret, &key,
                                      err, sizeof err), 0);

    /* Look in the WAL before a checkpoint and in the main file after. */
    snprintf(wal, sizeof wal, "%s-wal", f->path);
    bytes = read_file(wal, &len);
    assert_non_null(bytes);
    assert_true(contains(bytes, len, key.key_id));  /* the scan works */
    assert_false(contains(bytes, len, secret + 21));
    assert_false(contains(bytes, len, secret));
    free(bytes);

    exec_ok(f->s, "PRAGMA wal_checkpoint(TRUNCATE)");
    bytes = read_file(f->path, &len);
    assert_non_null(bytes);
    assert_true(contains(bytes, len, key.key_id));
    assert_false(contains(bytes, len, secret + 21));
    free(bytes);
}

/* ---- usage ---- */

static void test_usage_round_trip(void **state)
{
    struct fixture *f = *state;
    struct store_usage u = {
        .ts_ms = 1714564800123,
        .request_id = "req-42",
        .key_id = "0123456789abcdef",
        .tenant_id = 9,
        .model = "tiny-llama",
        .endpoint = "/v1/chat/completions",
        .prompt_tokens = 17,
        .completion_tokens = 230,
        .latency_ms = 812,
        .http_status = 200,
        .finish_reason = "length",
    };
    sqlite3_stmt *st;

    assert_int_equal(store_usage_insert(f->s, &u), 0);
    u.http_status = 500;
    strcpy(u.request_id, "req-43");
    assert_int_equal(store_usage_insert(f->s, &u), 0);

    assert_int_equal(sqlite3_prepare_v2(store_db(f->s),
        "SELECT ts_ms, request_id, key_id, tenant_id, model, endpoint, "
        "prompt_tokens, completion_tokens, latency_ms, http_status, "
        "finish_reason FROM usage ORDER BY id", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int64(st, 0), 1714564800123);
    assert_string_equal(sqlite3_column_text(st, 1), "req-42");
    assert_string_equal(sqlite3_column_text(st, 2), "0123456789abcdef");
    assert_int_equal(sqlite3_column_int64(st, 3), 9);
    assert_string_equal(sqlite3_column_text(st, 4), "tiny-llama");
    assert_string_equal(sqlite3_column_text(st, 5), "/v1/chat/completions");
    assert_int_equal(sqlite3_column_int64(st, 6), 17);
    assert_int_equal(sqlite3_column_int64(st, 7), 230);
    assert_int_equal(sqlite3_column_int64(st, 8), 812);
    assert_int_equal(sqlite3_column_int(st, 9), 200);
    assert_string_equal(sqlite3_column_text(st, 10), "length");
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal(sqlite3_column_text(st, 1), "req-43");
    assert_int_equal(sqlite3_column_int(st, 9), 500);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
}

/* ---- the keys command ---- */

/*
 * Run cli_keys_main with ARGS (NULL-terminated) in a child process,
 * capturing standard output into OUT and standard error into ERRBUF.
 * Returns the exit status.
 */
static int run_cli(char *out, size_t outcap, char *errbuf, size_t errcap,
                   ...)
{
    char *argv[16];
    int argc = 0;
    char out_path[] = "/tmp/test_store_out.XXXXXX";
    char err_path[] = "/tmp/test_store_err.XXXXXX";
    int out_fd = mkstemp(out_path), err_fd = mkstemp(err_path);
    va_list ap;
    pid_t pid;
    int status;
    ssize_t n;

    assert_true(out_fd >= 0);
    assert_true(err_fd >= 0);
    va_start(ap, errcap);
    argv[argc++] = "keys";
    while ((argv[argc] = va_arg(ap, char *)) != NULL)
        argc++;
    va_end(ap);

    fflush(stdout);
    fflush(stderr);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(out_fd, 1);
        dup2(err_fd, 2);
        int rc = cli_keys_main(argc, argv);
        fflush(stdout);
        fflush(stderr);
        _exit(rc);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));

    n = pread(out_fd, out, outcap - 1, 0);
    out[n > 0 ? n : 0] = '\0';
    n = pread(err_fd, errbuf, errcap - 1, 0);
    errbuf[n > 0 ? n : 0] = '\0';
    close(out_fd);
    close(err_fd);
    unlink(out_path);
    unlink(err_path);
    return WEXITSTATUS(status);
}

static void test_cli_create_list_revoke(void **state)
{
    struct fixture *f = *state;
    char out[8192], err[2048];
    char secret[STORE_SECRET_MAX];
    struct store_key key;
    const char *last;
    char id[STORE_KEY_ID_LEN + 1];

    assert_int_equal(run_cli(out, sizeof out, err, sizeof err, "create",
                             "--db", f->path, "--tenant", "acme",
                             "--name", "laptop", NULL), 0);
    /* The secret is alone on the last line. */
    assert_true(strlen(out) > 65);
    assert_int_equal(out[strlen(out) - 1], '\n');
    out[strlen(out) - 1] = '\0';
    last = strrchr(out, '\n');
    assert_non_null(last);
    last++;
    assert_int_equal(strlen(last), 64);
    snprintf(secret, sizeof secret, "%s", last);
    assert_int_equal(store_key_verify(f->s, secret, &key), 0);
    assert_string_equal(key.tenant, "acme");
    assert_string_equal(key.label, "laptop");
    assert_non_null(strstr(out, key.key_id));
    snprintf(id, sizeof id, "%s", key.key_id);

    /* Table: header, then the key id first on its row. */
    assert_int_equal(run_cli(out, sizeof out, err, sizeof err, "list",
                             "--db", f->path, NULL), 0);
    assert_int_equal(strncmp(out, "ID", 2), 0);
    char *row = strchr(out, '\n');
    assert_non_null(row);
    assert_int_equal(strncmp(row + 1, id, STORE_KEY_ID_LEN), 0);
    assert_non_null(strstr(row, "acme"));
    assert_non_null(strstr(row, "laptop"));
    assert_non_null(strstr(row, "active"));
    assert_non_null(strstr(row, "Z "));

    assert_int_equal(run_cli(out, sizeof out, err, sizeof err, "revoke",
                             "--db", f->path, id, NULL), 0);
    assert_int_equal(store_key_verify(f->s, secret, &key), -1);
    assert_int_equal(run_cli(out, sizeof out, err, sizeof err, "revoke",
                             "--db", f->path, id, NULL), 1);
    assert_non_null(strstr(err, "already revoked"));

    /* JSON: one object with the revoked status. */
    assert_int_equal(run_cli(out, sizeof out, err, sizeof err, "list",
                             "--db", f->path, "--format", "json", NULL), 0);
    cJSON *arr = cJSON_Parse(out);
    assert_non_null(arr);
    assert_int_equal(cJSON_GetArraySize(arr), 1);
    cJSON *obj = cJSON_GetArrayItem(arr, 0);
    assert_string_equal(cJSON_GetObjectItem(obj, "id")->valuestring, id);
    assert_string_equal(cJSON_GetObjectItem(obj, "tenant")->valuestring,
                        "acme");
    assert_string_equal(cJSON_GetObjectItem(obj, "label")->valuestring,
                        "laptop");
    assert_string_equal(cJSON_GetObjectItem(obj, "status")->valuestring,
                        "revoked");
    assert_int_equal(strlen(cJSON_GetObjectItem(obj, "created")
                            ->valuestring), 20);
    cJSON_Delete(arr);
}

static void test_cli_usage_errors(void **state)
{
    struct fixture *f = *state;
    char out[8192], err[2048];

    assert_int_equal(run_cli(out, sizeof out, err, sizeof err, "create",
                             "--db", f->path, "--bogus", NULL), 2);
    assert_non_null(strstr(err, "unknown option '--bogus'"));
    assert_int_equal(run_cli(out, sizeof out, err, sizeof err, "create",
                             "--db", f->path, "--tenant", NULL), 2);
    assert_non_null(strstr(err, "requires a value"));
    assert_int_equal(run_cli(out, sizeof out, err, sizeof err, "create",
                             "--db", f->path, NULL), 2);
    assert_non_null(strstr(err, "--tenant"));
    assert_int_equal(run_cli(out, sizeof out, err, sizeof err, "list",
                             "--db", f->path, "--format", "xml", NULL), 2);
    assert_int_equal(run_cli(out, sizeof out, err, sizeof err, "list",
                             "--db", f->path, "--tenant", "x", NULL), 2);
    assert_int_equal(run_cli(out, sizeof out, err, sizeof err, "revoke",
                             "--db", f->path, NULL), 2);
    assert_int_equal(run_cli(out, sizeof out, err, sizeof err, "frobnicate",
                             NULL), 2);
    assert_int_equal(run_cli(out, sizeof out, err, sizeof err, NULL), 2);

    /* Store errors exit 1. */
    assert_int_equal(run_cli(out, sizeof out, err, sizeof err, "create",
                             "--db", f->path, "--tenant", "bad name",
                             NULL), 1);
    assert_non_null(strstr(err, "tenant name"));
    assert_int_equal(run_cli(out, sizeof out, err, sizeof err, "revoke",
                             "--db", f->path, "0123456789abcdef", NULL), 1);
    assert_non_null(strstr(err, "not found"));

    /* Help describes every flag and exits 0. */
    assert_int_equal(run_cli(out, sizeof out, err, sizeof err, "--help",
                             NULL), 0);
    assert_non_null(strstr(out, "revoke"));
    assert_int_equal(run_cli(out, sizeof out, err, sizeof err, "create",
                             "--help", NULL), 0);
    assert_non_null(strstr(out, "--db"));
    assert_non_null(strstr(out, "--tenant"));
    assert_non_null(strstr(out, "--name"));
    assert_int_equal(run_cli(out, sizeof out, err, sizeof err, "list",
                             "--help", NULL), 0);
    assert_non_null(strstr(out, "--format"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_migrations_applied_and_recorded),
        T(test_pragmas_wal_and_foreign_keys),
        T(test_reopen_is_idempotent),
        T(test_future_version_rejected),
        T(test_concurrent_open_migrates_once),
        T(test_key_create_and_verify),
        T(test_key_wrong_secret_rejected),
        T(test_key_malformed_rejected),
        T(test_key_name_validation),
        T(test_key_revoke),
        T(test_key_list_status),
        T(test_secret_not_in_db_file),
        T(test_usage_round_trip),
        T(test_cli_create_list_revoke),
        T(test_cli_usage_errors),
        cmocka_unit_test(test_default_path_env),
#undef T
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
