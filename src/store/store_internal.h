/*
 * The store's connection struct, shared by the store_*.c files only.
 * Other modules see struct store as an opaque handle.
 */
#ifndef TAPHOUSE_STORE_INTERNAL_H
#define TAPHOUSE_STORE_INTERNAL_H

#include <stdint.h>

#include <sqlite3.h>

#define STORE_HASH_KEY_LEN 32

struct store {
    sqlite3 *db;
    int schema_version;
    sqlite3_stmt *usage_insert;  /* prepared on first use */
    int have_hash_key;
    unsigned char hash_key[STORE_HASH_KEY_LEN];
};

/* Return the current time in Unix milliseconds, UTC. */
int64_t store_now_ms(void);

/* Release what store_keys.c and store_usage.c keep on the connection. */
void store_keys_release(struct store *s);
void store_usage_release(struct store *s);

#endif
