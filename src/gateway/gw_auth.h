/*
 * Request authentication. Keeps a cache of verified keys that is dropped
 * whenever another connection changes the database (PRAGMA data_version),
 * checked at most every 200 ms, so a key revoked by `taphouse keys
 * revoke` in another process stops working within a second.
 * Thread-safe.
 */
#ifndef TAPHOUSE_GW_AUTH_H
#define TAPHOUSE_GW_AUTH_H

#include "store/store.h"

struct gw_auth;

int gw_auth_open(const char *db_path, struct gw_auth **out, char *err,
                 size_t errlen);
void gw_auth_close(struct gw_auth *a);
/*
 * Check an Authorization header value ("Bearer SECRET"). Returns 0 and
 * fills *KEY, or -1 for a missing, malformed, unknown or revoked key.
 */
int gw_auth_check(struct gw_auth *a, const char *authorization,
                  struct store_key *key);

#endif
