/*
 * Opening the store: the connection settings every process uses (WAL,
 * busy timeout, foreign keys, synchronous=FULL), the schema migrations
 * embedded from schema/, and the default database path.
 *
 * Several processes (the daemon, the console, one-shot commands) may open
 * the same database at once. Each migration therefore runs in its own
 * BEGIN IMMEDIATE transaction and re-reads the version after taking the
 * write lock, so only one opener applies it.
 */
#include "store/store.h"
#include "store/store_internal.h"
#include "store/store_schema.h"
#include "util/util_log.h"

#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BUSY_TIMEOUT_MS 5000

int64_t store_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Return the value of environment variable NAME, or NULL if unset or
 * empty. */
static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);

    return (v && v[0]) ? v : NULL;
}

int store_default_path(char *buf, size_t cap)
{
    const char *dir;
    const char *home;
    int n;

    if ((dir = env_nonempty("TAPHOUSE_DATA_DIR")) != NULL) {
        n = snprintf(buf, cap, "%s/taphouse.db", dir);
    } else if ((dir = env_nonempty("XDG_DATA_HOME")) != NULL) {
        n = snprintf(buf, cap, "%s/taphouse/taphouse.db", dir);
    } else {
        home = env_nonempty("HOME");
        if (!home) {
            struct passwd *pw = getpwuid(getuid());
            home = pw ? pw->pw_dir : NULL;
        }
        if (!home)
            return -1;
        n = snprintf(buf, cap, "%s/.local/share/taphouse/taphouse.db", home);
    }
    if (n < 0 || (size_t)n >= cap)
        return -1;
    return 0;
}

/*
 * Create the directory that will contain PATH, and any missing parents,
 * with mode 0700. Returns 0 if it exists afterwards, else -1 with ERR set.
 */
static int make_parent_dir(const char *path, char *err, size_t errlen)
{
    char dir[4096];
    char *slash;
    size_t len = strlen(path);

    if (len >= sizeof dir) {
        snprintf(err, errlen, "database path is too long (%zu bytes)", len);
        return -1;
    }
    memcpy(dir, path, len + 1);
    slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return 0;               /* current directory or root */
    *slash = '\0';

    /* Create each missing component from the top down. */
    for (char *p = dir + 1; ; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char saved = *p;
        *p = '\0';
        if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
            snprintf(err, errlen, "cannot create directory %s: %s", dir,
                     strerror(errno));
            return -1;
        }
        *p = saved;
        if (saved == '\0')
            break;
    }
    return 0;
}

/* Run SQL that returns no rows. On failure, write a message into ERR. */
static int exec_sql(sqlite3 *db, const char *sql, const char *what,
                    char *err, size_t errlen)
{
    char *msg = NULL;

    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "%s failed: %s", what,
                 msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

/* Read the newest applied migration version into *VERSION (0 if none). */
static int read_version(sqlite3 *db, int *version, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    int rc;

    rc = sqlite3_prepare_v2(db,
        "SELECT coalesce(max(version), 0) FROM schema_migrations", -1, &st,
        NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        snprintf(err, errlen, "reading the schema version failed: %s",
                 sqlite3_errmsg(db));
        sqlite3_finalize(st);
        return -1;
    }
    *version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return 0;
}

/*
 * Apply migration M unless another connection already has. Runs in one
 * BEGIN IMMEDIATE transaction: the version is re-read after the write
 * lock is taken, so two openers racing on a fresh file apply it once.
 */
static int apply_migration(sqlite3 *db, const struct store_migration *m,
                           char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    char what[128];
    int version;
    int rc = -1;

    if (exec_sql(db, "BEGIN IMMEDIATE", "starting a migration", err,
                 errlen) != 0)
        return -1;
    if (read_version(db, &version, err, errlen) != 0)
        goto out;
    if (version >= m->version) {
        rc = 0;                 /* another process applied it */
        goto out;
    }

    snprintf(what, sizeof what, "migration %s", m->name);
    if (exec_sql(db, m->sql, what, err, errlen) != 0)
        goto out;

    if (sqlite3_prepare_v2(db,
            "INSERT INTO schema_migrations (version, name, applied_ms) "
            "VALUES (?, ?, ?)", -1, &st, NULL) != SQLITE_OK)
        goto sql_error;
    sqlite3_bind_int(st, 1, m->version);
    sqlite3_bind_text(st, 2, m->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, store_now_ms());
    if (sqlite3_step(st) != SQLITE_DONE)
        goto sql_error;
    rc = 0;
    log_info("store", "applied migration %s", m->name);
    goto out;

sql_error:
    snprintf(err, errlen, "recording migration %s failed: %s", m->name,
             sqlite3_errmsg(db));
out:
    sqlite3_finalize(st);
    if (rc == 0) {
        if (exec_sql(db, "COMMIT", "committing a migration", err,
                     errlen) != 0)
            rc = -1;
    }
    if (rc != 0 && !sqlite3_get_autocommit(db))
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

/* Bring the schema up to date, or reject a database newer than this
 * binary. */
static int migrate(struct store *s, const char *path, char *err,
                   size_t errlen)
{
    int newest = 0;
    int version;

    for (int i = 0; i < store_n_migrations; i++) {
        if (store_migrations[i].version > newest)
            newest = store_migrations[i].version;
    }
    if (exec_sql(s->db,
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version INTEGER PRIMARY KEY, name TEXT, applied_ms INTEGER)",
            "creating schema_migrations", err, errlen) != 0)
        return -1;
    if (read_version(s->db, &version, err, errlen) != 0)
        return -1;
    if (version > newest) {
        snprintf(err, errlen,
                 "%s: database schema version %d is newer than this binary "
                 "(max %d); upgrade taphouse", path, version, newest);
        return -1;
    }

    for (int i = 0; i < store_n_migrations; i++) {
        if (store_migrations[i].version <= version)
            continue;
        if (apply_migration(s->db, &store_migrations[i], err, errlen) != 0)
            return -1;
    }
    return read_version(s->db, &s->schema_version, err, errlen);
}

/*
 * Switch to WAL. Changing the journal mode of a fresh file needs an
 * exclusive lock, and SQLite can return SQLITE_BUSY for it without
 * calling the busy handler while another process is doing the same, so
 * retry for up to the busy timeout.
 */
static int set_wal(sqlite3 *db, char *err, size_t errlen)
{
    struct timespec pause = { 0, 10 * 1000000L };
    sqlite3_stmt *st = NULL;
    int rc = SQLITE_BUSY;
    int ok;

    for (int waited_ms = 0; waited_ms <= BUSY_TIMEOUT_MS; waited_ms += 10) {
        rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &st,
                                NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_step(st);
        if (rc != SQLITE_BUSY && rc != SQLITE_LOCKED)
            break;
        sqlite3_finalize(st);
        st = NULL;
        nanosleep(&pause, NULL);
    }
    if (rc != SQLITE_ROW) {
        snprintf(err, errlen, "setting WAL mode failed: %s",
                 sqlite3_errmsg(db));
        sqlite3_finalize(st);
        return -1;
    }
    ok = strcmp((const char *)sqlite3_column_text(st, 0), "wal") == 0;
    sqlite3_finalize(st);
    if (!ok) {
        snprintf(err, errlen, "the database cannot use WAL mode "
                 "(is it on a network or read-only file system?)");
        return -1;
    }
    return 0;
}

/* Set the per-connection settings. */
static int configure(sqlite3 *db, char *err, size_t errlen)
{
    sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
    if (set_wal(db, err, errlen) != 0)
        return -1;

    /* FULL syncs the WAL on every commit, so a committed usage row
     * survives power loss and not only a crash of this process. */
    return exec_sql(db, "PRAGMA foreign_keys=ON; PRAGMA synchronous=FULL",
                    "setting connection pragmas", err, errlen);
}

int store_open(const char *path, struct store **out, char *err,
               size_t errlen)
{
    struct store *s;
    int rc;

    *out = NULL;
    if (make_parent_dir(path, err, errlen) != 0)
        return -1;
    s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    rc = sqlite3_open_v2(path, &s->db,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open %s: %s", path,
                 s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        goto fail;
    }
    if (configure(s->db, err, errlen) != 0)
        goto fail;
    if (migrate(s, path, err, errlen) != 0)
        goto fail;
    *out = s;
    return 0;

fail:
    store_close(s);
    return -1;
}

void store_close(struct store *s)
{
    if (!s)
        return;
    store_usage_release(s);
    store_keys_release(s);
    sqlite3_close(s->db);
    free(s);
}

sqlite3 *store_db(struct store *s)
{
    return s->db;
}

int store_schema_version(struct store *s)
{
    return s->schema_version;
}
