/*
 * API keys. A secret reads "tap-<key id>-<secret part>": the key id is 16
 * lowercase hex digits (8 random bytes) and the secret part is 32 random
 * bytes in URL-safe base64 without padding (43 characters). The database
 * keeps only the key id and a BLAKE2b hash of the secret part, keyed with
 * a random 32-byte key stored in settings ('key_hash_key'), so a copy of
 * the hashes alone cannot be checked against guesses offline.
 */
#include "store/store.h"
#include "store/store_internal.h"
#include "util/util_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#define SECRET_PREFIX "tap-"
#define SECRET_PREFIX_LEN 4
#define SECRET_RAW_LEN 32
#define SECRET_PART_LEN 43      /* base64 of 32 bytes, no padding */
#define SECRET_LEN (SECRET_PREFIX_LEN + STORE_KEY_ID_LEN + 1 + \
                    SECRET_PART_LEN)
#define HASH_LEN 32
#define TENANT_NAME_MAX 64
#define LABEL_MAX 127           /* leaves room for the NUL in store_key */

_Static_assert(SECRET_LEN < STORE_SECRET_MAX, "secret buffer too small");

void store_keys_release(struct store *s)
{
    sodium_memzero(s->hash_key, sizeof s->hash_key);
    s->have_hash_key = 0;
}

/* Initialise libsodium; cheap after the first call. */
static int sodium_ready(void)
{
    return sodium_init() < 0 ? -1 : 0;
}

/* Read the 'key_hash_key' setting into S->hash_key. Returns 1 if found,
 * 0 if absent, -1 on error. */
static int read_hash_key(struct store *s)
{
    sqlite3_stmt *st = NULL;
    int rc;

    if (sqlite3_prepare_v2(s->db,
            "SELECT value FROM settings WHERE name = 'key_hash_key'", -1,
            &st, NULL) != SQLITE_OK)
        return -1;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        if (sqlite3_column_type(st, 0) != SQLITE_BLOB ||
            sqlite3_column_bytes(st, 0) != STORE_HASH_KEY_LEN) {
            log_error("store", "settings.key_hash_key is not a "
                      "%d-byte blob", STORE_HASH_KEY_LEN);
            rc = -1;
        } else {
            memcpy(s->hash_key, sqlite3_column_blob(st, 0),
                   STORE_HASH_KEY_LEN);
            s->have_hash_key = 1;
            rc = 1;
        }
    } else {
        rc = rc == SQLITE_DONE ? 0 : -1;
    }
    sqlite3_finalize(st);
    return rc;
}

/*
 * Load the hashing key, creating it on first use. Two processes may race
 * to create it: INSERT OR IGNORE keeps the first, and both re-read it.
 */
static int load_hash_key(struct store *s)
{
    unsigned char fresh[STORE_HASH_KEY_LEN];
    sqlite3_stmt *st = NULL;
    int rc;

    if (s->have_hash_key)
        return 0;
    rc = read_hash_key(s);
    if (rc != 0)
        return rc > 0 ? 0 : -1;

    randombytes_buf(fresh, sizeof fresh);
    if (sqlite3_prepare_v2(s->db,
            "INSERT OR IGNORE INTO settings (name, value) "
            "VALUES ('key_hash_key', ?)", -1, &st, NULL) != SQLITE_OK) {
        sodium_memzero(fresh, sizeof fresh);
        return -1;
    }
    sqlite3_bind_blob(st, 1, fresh, sizeof fresh, SQLITE_TRANSIENT);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    sodium_memzero(fresh, sizeof fresh);
    if (rc != SQLITE_DONE)
        return -1;
    return read_hash_key(s) > 0 ? 0 : -1;
}

/* Compute the keyed hash of the raw secret bytes. */
static int hash_secret(struct store *s, const unsigned char *raw,
                       unsigned char out[HASH_LEN])
{
    if (load_hash_key(s) != 0)
        return -1;
    return crypto_generichash(out, HASH_LEN, raw, SECRET_RAW_LEN,
                              s->hash_key, STORE_HASH_KEY_LEN);
}

/* Return 1 if ID is exactly STORE_KEY_ID_LEN lowercase hex digits. */
static int key_id_valid(const char *id)
{
    size_t i;

    for (i = 0; id[i]; i++) {
        char c = id[i];
        if (i >= STORE_KEY_ID_LEN)
            return 0;
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return 0;
    }
    return i == STORE_KEY_ID_LEN;
}

/*
 * Split SECRET into its key id and raw secret bytes. Rejects anything
 * but the exact format: prefix, length, hex id, separator, and a
 * canonical base64 part that decodes to exactly 32 bytes.
 */
static int parse_secret(const char *secret, char id[STORE_KEY_ID_LEN + 1],
                        unsigned char raw[SECRET_RAW_LEN])
{
    const char *part;
    size_t raw_len = 0;
    const char *end = NULL;

    if (!secret || strnlen(secret, SECRET_LEN + 1) != SECRET_LEN)
        return -1;
    if (memcmp(secret, SECRET_PREFIX, SECRET_PREFIX_LEN) != 0)
        return -1;
    memcpy(id, secret + SECRET_PREFIX_LEN, STORE_KEY_ID_LEN);
    id[STORE_KEY_ID_LEN] = '\0';
    if (!key_id_valid(id))
        return -1;
    if (secret[SECRET_PREFIX_LEN + STORE_KEY_ID_LEN] != '-')
        return -1;
    part = secret + SECRET_PREFIX_LEN + STORE_KEY_ID_LEN + 1;
    if (sodium_base642bin(raw, SECRET_RAW_LEN, part, SECRET_PART_LEN, NULL,
                          &raw_len, &end,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
        return -1;
    if (raw_len != SECRET_RAW_LEN || end != part + SECRET_PART_LEN)
        return -1;
    return 0;
}

/* Check a tenant name: 1-64 characters of [A-Za-z0-9._-]. */
static int tenant_name_valid(const char *name, char *err, size_t errlen)
{
    size_t len = name ? strlen(name) : 0;

    if (len == 0 || len > TENANT_NAME_MAX) {
        snprintf(err, errlen, "invalid tenant name: must be 1-%d "
                 "characters long", TENANT_NAME_MAX);
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
            (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-')
            continue;
        snprintf(err, errlen, "invalid tenant name \"%s\": use only "
                 "letters, digits, '.', '_' and '-'", name);
        return 0;
    }
    return 1;
}

/* Check a label: at most 127 printable ASCII characters. */
static int label_valid(const char *label, char *err, size_t errlen)
{
    size_t len = strlen(label);

    if (len > LABEL_MAX) {
        snprintf(err, errlen, "invalid label: %zu characters, max %d", len,
                 LABEL_MAX);
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)label[i];
        if (c < 0x20 || c > 0x7e) {
            snprintf(err, errlen, "invalid label: character %zu is not "
                     "printable ASCII", i + 1);
            return 0;
        }
    }
    return 1;
}

/* Copy a text column into DST (CAP bytes), "" for NULL. */
static void column_copy(sqlite3_stmt *st, int col, char *dst, size_t cap)
{
    const unsigned char *v = sqlite3_column_text(st, col);

    snprintf(dst, cap, "%s", v ? (const char *)v : "");
}

/* Insert the tenant if new and store its id in *ID. Runs inside the
 * caller's transaction. */
static int tenant_ensure(struct store *s, const char *name, int64_t now,
                         int64_t *id)
{
    sqlite3_stmt *st = NULL;
    int rc = -1;

    if (sqlite3_prepare_v2(s->db,
            "INSERT OR IGNORE INTO tenants (name, created_ms) VALUES (?, ?)",
            -1, &st, NULL) != SQLITE_OK)
        goto out;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, now);
    if (sqlite3_step(st) != SQLITE_DONE)
        goto out;
    sqlite3_finalize(st);

    if (sqlite3_prepare_v2(s->db, "SELECT id FROM tenants WHERE name = ?",
                           -1, &st, NULL) != SQLITE_OK)
        goto out;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_ROW)
        goto out;
    *id = sqlite3_column_int64(st, 0);
    rc = 0;
out:
    sqlite3_finalize(st);
    return rc;
}

/* Insert the api_keys row for KEY with HASH. */
static int key_insert(struct store *s, const struct store_key *key,
                      const char *label, const unsigned char *hash)
{
    sqlite3_stmt *st = NULL;
    int rc;

    if (sqlite3_prepare_v2(s->db,
            "INSERT INTO api_keys (key_id, tenant_id, label, hash, "
            "created_ms) VALUES (?, ?, ?, ?, ?)", -1, &st, NULL)
            != SQLITE_OK)
        return -1;
    sqlite3_bind_text(st, 1, key->key_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, key->tenant_id);
    if (label && label[0])
        sqlite3_bind_text(st, 3, label, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 3);
    sqlite3_bind_blob(st, 4, hash, HASH_LEN, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, key->created_ms);
    rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
    sqlite3_finalize(st);
    return rc;
}

int store_key_create(struct store *s, const char *tenant, const char *label,
                     char secret[STORE_SECRET_MAX], struct store_key *key,
                     char *err, size_t errlen)
{
    unsigned char id_raw[STORE_KEY_ID_LEN / 2];
    unsigned char raw[SECRET_RAW_LEN];
    unsigned char hash[HASH_LEN];
    char part[SECRET_PART_LEN + 1];
    int rc = -1;

    secret[0] = '\0';
    memset(key, 0, sizeof *key);
    if (!tenant_name_valid(tenant, err, errlen))
        return -1;
    if (label && !label_valid(label, err, errlen))
        return -1;
    if (sodium_ready() != 0) {
        snprintf(err, errlen, "libsodium failed to initialise");
        return -1;
    }

    /* Draw the id and secret; only the keyed hash goes to disk. */
    randombytes_buf(id_raw, sizeof id_raw);
    sodium_bin2hex(key->key_id, sizeof key->key_id, id_raw, sizeof id_raw);
    randombytes_buf(raw, sizeof raw);
    sodium_bin2base64(part, sizeof part, raw, sizeof raw,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    snprintf(key->tenant, sizeof key->tenant, "%s", tenant);
    snprintf(key->label, sizeof key->label, "%s", label ? label : "");
    key->created_ms = store_now_ms();

    if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL)
            != SQLITE_OK)
        goto sql_error;
    if (hash_secret(s, raw, hash) != 0)
        goto sql_error;
    if (tenant_ensure(s, tenant, key->created_ms, &key->tenant_id) != 0)
        goto sql_error;
    if (key_insert(s, key, label, hash) != 0)
        goto sql_error;
    if (sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        goto sql_error;

    snprintf(secret, STORE_SECRET_MAX, SECRET_PREFIX "%s-%s", key->key_id,
             part);
    log_info("store", "created key %s for tenant %s", key->key_id, tenant);
    rc = 0;
    goto out;

sql_error:
    snprintf(err, errlen, "creating a key failed: %s",
             sqlite3_errmsg(s->db));
    if (!sqlite3_get_autocommit(s->db))
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
out:
    sodium_memzero(raw, sizeof raw);
    sodium_memzero(part, sizeof part);
    return rc;
}

#define KEY_COLUMNS \
    "SELECT k.key_id, k.tenant_id, t.name, k.label, k.created_ms, " \
    "coalesce(k.revoked_ms, 0), k.hash " \
    "FROM api_keys k JOIN tenants t ON t.id = k.tenant_id "

/* Fill KEY from a row selected with KEY_COLUMNS. */
static void key_from_row(sqlite3_stmt *st, struct store_key *key)
{
    memset(key, 0, sizeof *key);
    column_copy(st, 0, key->key_id, sizeof key->key_id);
    key->tenant_id = sqlite3_column_int64(st, 1);
    column_copy(st, 2, key->tenant, sizeof key->tenant);
    column_copy(st, 3, key->label, sizeof key->label);
    key->created_ms = sqlite3_column_int64(st, 4);
    key->revoked_ms = sqlite3_column_int64(st, 5);
}

int store_key_list(struct store *s, struct store_key **keys, int *n_keys)
{
    sqlite3_stmt *st = NULL;
    struct store_key *arr = NULL;
    int n = 0, cap = 0;
    int rc;

    *keys = NULL;
    *n_keys = 0;
    if (sqlite3_prepare_v2(s->db,
            KEY_COLUMNS "ORDER BY k.created_ms, k.rowid", -1, &st, NULL)
            != SQLITE_OK)
        return -1;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == cap) {
            int ncap = cap ? cap * 2 : 16;
            struct store_key *grown = realloc(arr, ncap * sizeof *arr);
            if (!grown) {
                rc = SQLITE_NOMEM;
                break;
            }
            arr = grown;
            cap = ncap;
        }
        key_from_row(st, &arr[n++]);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        free(arr);
        return -1;
    }
    *keys = arr;
    *n_keys = n;
    return 0;
}

int store_key_revoke(struct store *s, const char *key_id, char *err,
                     size_t errlen)
{
    sqlite3_stmt *st = NULL;
    int rc = -1;

    if (!key_id || !key_id_valid(key_id)) {
        snprintf(err, errlen, "invalid key id \"%s\": expected %d "
                 "lowercase hex digits", key_id ? key_id : "",
                 STORE_KEY_ID_LEN);
        return -1;
    }
    if (sqlite3_prepare_v2(s->db,
            "UPDATE api_keys SET revoked_ms = ? "
            "WHERE key_id = ? AND revoked_ms IS NULL", -1, &st, NULL)
            != SQLITE_OK)
        goto sql_error;
    sqlite3_bind_int64(st, 1, store_now_ms());
    sqlite3_bind_text(st, 2, key_id, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE)
        goto sql_error;
    if (sqlite3_changes(s->db) == 1) {
        log_info("store", "revoked key %s", key_id);
        rc = 0;
        goto out;
    }

    /* Nothing changed: say whether the key is missing or revoked. */
    sqlite3_finalize(st);
    if (sqlite3_prepare_v2(s->db,
            "SELECT 1 FROM api_keys WHERE key_id = ?", -1, &st, NULL)
            != SQLITE_OK)
        goto sql_error;
    sqlite3_bind_text(st, 1, key_id, -1, SQLITE_STATIC);
    switch (sqlite3_step(st)) {
    case SQLITE_ROW:
        snprintf(err, errlen, "key %s is already revoked", key_id);
        goto out;
    case SQLITE_DONE:
        snprintf(err, errlen, "key %s not found", key_id);
        goto out;
    }

sql_error:
    snprintf(err, errlen, "revoking key %s failed: %s", key_id,
             sqlite3_errmsg(s->db));
out:
    sqlite3_finalize(st);
    return rc;
}

int store_key_verify(struct store *s, const char *secret,
                     struct store_key *key)
{
    char id[STORE_KEY_ID_LEN + 1];
    unsigned char raw[SECRET_RAW_LEN];
    unsigned char hash[HASH_LEN];
    sqlite3_stmt *st = NULL;
    int rc = -1;

    if (sodium_ready() != 0 || parse_secret(secret, id, raw) != 0)
        goto out;
    if (sqlite3_prepare_v2(s->db, KEY_COLUMNS "WHERE k.key_id = ?", -1,
                           &st, NULL) != SQLITE_OK)
        goto out;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_ROW)
        goto out;
    if (sqlite3_column_bytes(st, 6) != HASH_LEN)
        goto out;
    if (hash_secret(s, raw, hash) != 0)
        goto out;
    if (sodium_memcmp(hash, sqlite3_column_blob(st, 6), HASH_LEN) != 0)
        goto out;
    if (sqlite3_column_int64(st, 5) != 0)
        goto out;               /* revoked */
    key_from_row(st, key);
    rc = 0;
out:
    sqlite3_finalize(st);
    sodium_memzero(raw, sizeof raw);
    return rc;
}
