/*
 * Ledger writer: one thread owns a store connection and commits usage
 * rows in groups. gw_ledger_record blocks until the caller's row is
 * durable, so a response's last bytes can follow its row.
 */
#ifndef TAPHOUSE_GW_LEDGER_H
#define TAPHOUSE_GW_LEDGER_H

#include "store/store.h"

struct gw_ledger;

int gw_ledger_start(const char *db_path, struct gw_ledger **out, char *err,
                    size_t errlen);
/* Commits what is queued, then stops the thread. */
void gw_ledger_stop(struct gw_ledger *l);
/* Returns 0 once the row is committed, negative if the commit failed. */
int gw_ledger_record(struct gw_ledger *l, const struct store_usage *u);

#endif
