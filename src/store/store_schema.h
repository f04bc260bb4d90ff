/* Migrations embedded into the binary from schema/NNN_name.sql. */
#ifndef TAPHOUSE_STORE_SCHEMA_H
#define TAPHOUSE_STORE_SCHEMA_H

struct store_migration {
    int version;     /* the NNN prefix of the file name */
    const char *name;
    const char *sql;
};

extern const struct store_migration store_migrations[];
extern const int store_n_migrations;

#endif
