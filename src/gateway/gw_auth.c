/*
 * Request authentication with a cache of verified keys, so a repeat
 * request costs a hash and no SQLite query.
 *
 * The cache maps a key id to a BLAKE2b hash of the full secret (keyed
 * with a random per-process key) and the key's row. A hit still compares
 * the presented secret's hash in constant time, so a wrong secret for a
 * cached key id is rejected.
 *
 * Invalidation: at most every 200 ms the connection reads PRAGMA
 * data_version, which changes when another connection commits. Usage
 * rows are committed many times a second, so on a change the cache also
 * reads the 'auth_generation' setting, which triggers on api_keys and
 * tenants bump on every update or delete, and is dropped only when that
 * moved. A revocation in another process therefore applies within about
 * 200 ms.
 */
#include "gateway/gw_auth.h"
#include "store/store.h"
#include "util/util_log.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <sodium.h>

#define CACHE_SLOTS 8192         /* power of two */
#define CACHE_MAX 4096           /* entries before the cache is cleared */
#define CHECK_INTERVAL_MS 200
#define SECRET_HASH_LEN 32

struct cache_entry {
    int used;
    unsigned char secret_hash[SECRET_HASH_LEN];
    struct store_key key;
};

struct gw_auth {
    pthread_mutex_t mu;          /* guards everything below */
    struct store *store;
    struct cache_entry *slots;   /* CACHE_SLOTS, linear probing */
    int n_cached;
    unsigned char cache_hash_key[crypto_generichash_KEYBYTES];
    int64_t data_version;
    int64_t auth_generation;
    int64_t checked_ms;
};

static int64_t monotonic_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Run a one-value integer query; returns -1 on error. */
static int64_t query_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int64_t v = -1;

    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static int64_t read_auth_generation(sqlite3 *db)
{
    return query_int(db, "SELECT value FROM settings "
                         "WHERE name = 'auth_generation'");
}

static void cache_clear(struct gw_auth *a)
{
    sodium_memzero(a->slots, CACHE_SLOTS * sizeof *a->slots);
    a->n_cached = 0;
}

/* Drop the cache if keys or tenants changed since the last check. Called
 * with the mutex held. */
static void cache_refresh(struct gw_auth *a)
{
    sqlite3 *db = store_db(a->store);
    int64_t now = monotonic_ms();
    int64_t version, generation;

    if (now - a->checked_ms < CHECK_INTERVAL_MS)
        return;
    a->checked_ms = now;
    version = query_int(db, "PRAGMA data_version");
    if (version >= 0 && version == a->data_version)
        return;
    a->data_version = version;
    generation = read_auth_generation(db);
    if (generation >= 0 && generation == a->auth_generation)
        return;
    if (a->n_cached > 0)
        log_info("auth", "keys changed; dropping %d cached keys",
                 a->n_cached);
    a->auth_generation = generation;
    cache_clear(a);
}

/* Find the slot for ID: its entry if cached, else the free slot. */
static struct cache_entry *cache_slot(struct gw_auth *a, const char *id)
{
    uint32_t h = 2166136261u;     /* FNV-1a */

    for (const char *p = id; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    for (uint32_t i = 0; ; i++) {
        struct cache_entry *e = &a->slots[(h + i) & (CACHE_SLOTS - 1)];
        if (!e->used || strcmp(e->key.key_id, id) == 0)
            return e;
    }
}

/*
 * Extract the secret from an Authorization value: "Bearer" in any case,
 * one or more spaces or tabs, then the secret, with surrounding blanks
 * ignored. Returns 0 and copies the secret into OUT.
 */
static int parse_bearer(const char *value, char out[STORE_SECRET_MAX])
{
    const char *p = value;
    size_t len;

    if (!p)
        return -1;
    while (*p == ' ' || *p == '\t')
        p++;
    if (strncasecmp(p, "bearer", 6) != 0 || (p[6] != ' ' && p[6] != '\t'))
        return -1;
    p += 6;
    while (*p == ' ' || *p == '\t')
        p++;
    len = strcspn(p, " \t");
    if (len == 0 || len >= STORE_SECRET_MAX)
        return -1;
    for (const char *q = p + len; *q; q++) {
        if (*q != ' ' && *q != '\t')
            return -1;          /* more than one token */
    }
    memcpy(out, p, len);
    out[len] = '\0';
    return 0;
}

int gw_auth_open(const char *db_path, struct gw_auth **out, char *err,
                 size_t errlen)
{
    struct gw_auth *a;

    *out = NULL;
    if (sodium_init() < 0) {
        snprintf(err, errlen, "libsodium failed to initialise");
        return -1;
    }
    a = calloc(1, sizeof *a);
    if (a)
        a->slots = calloc(CACHE_SLOTS, sizeof *a->slots);
    if (!a || !a->slots) {
        snprintf(err, errlen, "out of memory");
        free(a);
        return -1;
    }
    if (store_open(db_path, &a->store, err, errlen) != 0) {
        free(a->slots);
        free(a);
        return -1;
    }
    randombytes_buf(a->cache_hash_key, sizeof a->cache_hash_key);
    pthread_mutex_init(&a->mu, NULL);
    a->data_version = query_int(store_db(a->store), "PRAGMA data_version");
    a->auth_generation = read_auth_generation(store_db(a->store));
    a->checked_ms = monotonic_ms();
    *out = a;
    return 0;
}

void gw_auth_close(struct gw_auth *a)
{
    if (!a)
        return;
    cache_clear(a);
    sodium_memzero(a->cache_hash_key, sizeof a->cache_hash_key);
    store_close(a->store);
    pthread_mutex_destroy(&a->mu);
    free(a->slots);
    free(a);
}

int gw_auth_check(struct gw_auth *a, const char *authorization,
                  struct store_key *key)
{
    char secret[STORE_SECRET_MAX];
    char id[STORE_KEY_ID_LEN + 1];
    unsigned char hash[SECRET_HASH_LEN];
    struct cache_entry *e;
    int rc = -1;

    if (parse_bearer(authorization, secret) != 0)
        return -1;

    /* The id sits after "tap-"; store_key_verify checks the full format
     * on a miss, and a hit requires an identical secret. */
    if (strlen(secret) < 4 + STORE_KEY_ID_LEN)
        goto out;
    memcpy(id, secret + 4, STORE_KEY_ID_LEN);
    id[STORE_KEY_ID_LEN] = '\0';
    crypto_generichash(hash, sizeof hash, (const unsigned char *)secret,
                       strlen(secret), a->cache_hash_key,
                       sizeof a->cache_hash_key);

    pthread_mutex_lock(&a->mu);
    cache_refresh(a);
    e = cache_slot(a, id);
    if (e->used) {
        if (sodium_memcmp(e->secret_hash, hash, sizeof hash) == 0) {
            *key = e->key;
            rc = 0;
        }
        pthread_mutex_unlock(&a->mu);
        goto out;
    }

    if (store_key_verify(a->store, secret, key) == 0) {
        rc = 0;
        if (a->n_cached >= CACHE_MAX) {
            cache_clear(a);
            e = cache_slot(a, id);
        }
        e->used = 1;
        memcpy(e->secret_hash, hash, sizeof hash);
        e->key = *key;
        a->n_cached++;
    }
    pthread_mutex_unlock(&a->mu);
out:
    sodium_memzero(secret, sizeof secret);
    return rc;
}
