/*
 * The store: one SQLite database in WAL mode, the system of record for
 * tenants, API keys and the usage ledger. Opening it applies the
 * migrations embedded from schema/ and rejects a database newer than
 * this binary.
 *
 * A struct store is one connection; use it from one thread at a time.
 */
#ifndef TAPHOUSE_STORE_H
#define TAPHOUSE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

struct store;

/* The database used when no --db is given: $TAPHOUSE_DATA_DIR, else
 * $XDG_DATA_HOME/taphouse, else ~/.local/share/taphouse, plus
 * "/taphouse.db". Writes into BUF; returns 0 or -1 if it does not fit. */
int store_default_path(char *buf, size_t cap);

/*
 * Open (creating if needed, with its parent directory) the database at
 * PATH and bring its schema up to date. On failure returns a negative
 * value and writes a one-line message into ERR.
 */
int store_open(const char *path, struct store **out, char *err,
               size_t errlen);
void store_close(struct store *s);
sqlite3 *store_db(struct store *s);
int store_schema_version(struct store *s);

/* ---- API keys ---- */

#define STORE_KEY_ID_LEN 16      /* characters of a public key id */
#define STORE_SECRET_MAX 96      /* buffer size for a secret */

struct store_key {
    char key_id[STORE_KEY_ID_LEN + 1];
    int64_t tenant_id;
    char tenant[128];
    char label[128];
    int64_t created_ms;
    int64_t revoked_ms;          /* 0 while the key is active */
};

/*
 * Create a key for TENANT (created if missing) with an optional LABEL.
 * Writes the secret, which is never stored, into SECRET and fills *KEY.
 */
int store_key_create(struct store *s, const char *tenant, const char *label,
                     char secret[STORE_SECRET_MAX], struct store_key *key,
                     char *err, size_t errlen);
/* Stores a malloc'd array of every key, oldest first, in *KEYS. */
int store_key_list(struct store *s, struct store_key **keys, int *n_keys);
/* Returns 0, or -1 with a message when no active key has that id. */
int store_key_revoke(struct store *s, const char *key_id, char *err,
                     size_t errlen);
/*
 * Check SECRET against the stored keyed hash of its key id, in constant
 * time. Returns 0 and fills *KEY for an active key; -1 for a malformed,
 * unknown, wrong or revoked secret.
 */
int store_key_verify(struct store *s, const char *secret,
                     struct store_key *key);

/* ---- usage ledger ---- */

struct store_usage {
    int64_t ts_ms;               /* request start, Unix milliseconds UTC */
    char request_id[48];
    char key_id[STORE_KEY_ID_LEN + 1];
    int64_t tenant_id;
    char model[128];
    char endpoint[48];           /* "/v1/chat/completions" */
    int64_t prompt_tokens;
    int64_t completion_tokens;
    int64_t latency_ms;
    int http_status;
    char finish_reason[24];      /* stop, length, cancelled, error */
};

/* Insert one row synchronously (synchronous=FULL). */
int store_usage_insert(struct store *s, const struct store_usage *u);

#endif
