/*
 * `taphouse keys`: create, list and revoke API keys from the shell. Each
 * subcommand opens the store, does one thing and exits; a running daemon
 * notices revocations on its own (see gateway/gw_auth.h).
 *
 * `keys create` prints the secret alone on the last line of standard
 * output, so scripts can take it with `tail -n 1`.
 */
#include "cli/cli.h"
#include "store/store.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

#include <cjson/cJSON.h>

#define PATH_CAP 4096

/* Options shared by every subcommand after parsing. */
struct keys_opts {
    char db[PATH_CAP];
    const char *tenant;
    const char *label;
    const char *format;
    const char *key_id;
};

static const char keys_help[] =
    "Usage: taphouse keys COMMAND [OPTIONS]\n"
    "\n"
    "Manage API keys.\n"
    "\n"
    "Commands:\n"
    "  create   create a key for a tenant and print its secret once\n"
    "  list     list every key with its tenant and status\n"
    "  revoke   revoke a key by id\n"
    "\n"
    "Run 'taphouse keys COMMAND --help' for the options of a command.\n";

static const char create_help[] =
    "Usage: taphouse keys create [--db PATH] --tenant NAME [--name LABEL]\n"
    "\n"
    "Create an API key. The tenant is created if it does not exist. The\n"
    "secret is printed alone on the last line and cannot be shown again.\n"
    "\n"
    "  --db PATH      database file (default:\n"
    "                 $TAPHOUSE_DATA_DIR/taphouse.db, else\n"
    "                 $XDG_DATA_HOME/taphouse/taphouse.db, else\n"
    "                 ~/.local/share/taphouse/taphouse.db)\n"
    "  --tenant NAME  tenant that owns the key: 1-64 characters of\n"
    "                 letters, digits, '.', '_' and '-' (required)\n"
    "  --name LABEL   label for the key, up to 127 printable ASCII\n"
    "                 characters (optional)\n"
    "  --help         show this help\n";

static const char list_help[] =
    "Usage: taphouse keys list [--db PATH] [--format table|json]\n"
    "\n"
    "List every key, oldest first. Creation times are UTC (ISO 8601).\n"
    "\n"
    "  --db PATH        database file (default as for 'keys create')\n"
    "  --format FORMAT  'table' (default): a header row, then one key per\n"
    "                   row; 'json': an array of objects\n"
    "  --help           show this help\n";

static const char revoke_help[] =
    "Usage: taphouse keys revoke [--db PATH] ID\n"
    "\n"
    "Revoke the key with id ID (16 hex digits, as 'keys list' shows it).\n"
    "A running daemon rejects the key within a second.\n"
    "\n"
    "  --db PATH  database file (default as for 'keys create')\n"
    "  --help     show this help\n";

/* Print a usage error for subcommand CMD and return exit status 2. */
static int usage_error(const char *cmd, const char *fmt, const char *arg)
{
    fprintf(stderr, "taphouse keys%s%s: ", cmd[0] ? " " : "", cmd);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nRun 'taphouse keys%s%s --help' for usage.\n",
            cmd[0] ? " " : "", cmd);
    return CLI_EXIT_USAGE;
}

/* Format Unix milliseconds as "2024-05-01T12:00:00Z". */
static void format_utc(int64_t ms, char *buf, size_t cap)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/*
 * Parse the options of subcommand CMD (ARGV[0]). Returns -1 and prints
 * help when --help is given, CLI_EXIT_USAGE after a usage error, else 0.
 */
static int parse_opts(const char *cmd, int argc, char **argv,
                      const char *help, struct keys_opts *o)
{
    static const struct option all_opts[] = {
        { "db", required_argument, NULL, 'd' },
        { "tenant", required_argument, NULL, 't' },
        { "name", required_argument, NULL, 'n' },
        { "format", required_argument, NULL, 'f' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int is_create = strcmp(cmd, "create") == 0;
    int is_list = strcmp(cmd, "list") == 0;
    int c;

    memset(o, 0, sizeof *o);
    optind = 0;                 /* glibc: restart the scan from argv[1] */
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", all_opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            if (strlen(optarg) >= sizeof o->db)
                return usage_error(cmd, "--db path is too long: %s", optarg);
            snprintf(o->db, sizeof o->db, "%s", optarg);
            break;
        case 't':
            if (!is_create)
                return usage_error(cmd, "unknown option '%s'", "--tenant");
            o->tenant = optarg;
            break;
        case 'n':
            if (!is_create)
                return usage_error(cmd, "unknown option '%s'", "--name");
            o->label = optarg;
            break;
        case 'f':
            if (!is_list)
                return usage_error(cmd, "unknown option '%s'", "--format");
            o->format = optarg;
            break;
        case 'h':
            fputs(help, stdout);
            return -1;
        case ':':
            return usage_error(cmd, "option '%s' requires a value",
                               argv[optind - 1]);
        default:
            return usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
        }
    }

    /* Only revoke takes a positional argument: the key id. */
    if (strcmp(cmd, "revoke") == 0) {
        if (optind >= argc)
            return usage_error(cmd, "missing key id%s", "");
        o->key_id = argv[optind++];
    }
    if (optind < argc)
        return usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!o->db[0] && store_default_path(o->db, sizeof o->db) != 0) {
        fprintf(stderr, "taphouse keys %s: the default database path is "
                "too long or HOME is unset; pass --db PATH\n", cmd);
        return CLI_EXIT_USAGE;
    }
    return 0;
}

/*
 * Open the store named by O, printing any error. Only `create` may make
 * a new database; listing or revoking in a mistyped path is an error.
 */
static struct store *open_store(const char *cmd, const struct keys_opts *o)
{
    struct store *s;
    char err[512];

    if (strcmp(cmd, "create") != 0 && access(o->db, F_OK) != 0) {
        fprintf(stderr, "taphouse keys %s: database %s not found; check "
                "--db\n", cmd, o->db);
        return NULL;
    }
    if (store_open(o->db, &s, err, sizeof err) != 0) {
        fprintf(stderr, "taphouse keys %s: %s\n", cmd, err);
        return NULL;
    }
    return s;
}

static int keys_create(const struct keys_opts *o)
{
    struct store *s;
    struct store_key key;
    char secret[STORE_SECRET_MAX];
    char err[512];
    int rc;

    if (!o->tenant)
        return usage_error("create", "missing --tenant NAME%s", "");
    s = open_store("create", o);
    if (!s)
        return CLI_EXIT_FAILURE;
    rc = store_key_create(s, o->tenant, o->label, secret, &key, err,
                          sizeof err);
    store_close(s);
    if (rc != 0) {
        fprintf(stderr, "taphouse keys create: %s\n", err);
        return CLI_EXIT_FAILURE;
    }
    printf("Created key %s for tenant %s. Save the secret below; it is "
           "shown only once.\n%s\n", key.key_id, key.tenant, secret);
    memset(secret, 0, sizeof secret);
    return fflush(stdout) == 0 ? CLI_EXIT_OK : CLI_EXIT_FAILURE;
}

static void print_table(const struct store_key *keys, int n)
{
    char created[32];

    printf("%-16s  %-20s  %-24s  %-20s  %s\n", "ID", "TENANT", "LABEL",
           "CREATED", "STATUS");
    for (int i = 0; i < n; i++) {
        format_utc(keys[i].created_ms, created, sizeof created);
        printf("%-16s  %-20s  %-24s  %-20s  %s\n", keys[i].key_id,
               keys[i].tenant, keys[i].label[0] ? keys[i].label : "-",
               created, keys[i].revoked_ms ? "revoked" : "active");
    }
}

/* Print KEYS as a JSON array; returns -1 if cJSON runs out of memory. */
static int print_json(const struct store_key *keys, int n)
{
    cJSON *arr = cJSON_CreateArray();
    char created[32];
    char *text;

    for (int i = 0; arr && i < n; i++) {
        cJSON *obj = cJSON_CreateObject();
        if (!obj || !cJSON_AddItemToArray(arr, obj)) {
            cJSON_Delete(obj);
            cJSON_Delete(arr);
            return -1;
        }
        format_utc(keys[i].created_ms, created, sizeof created);
        cJSON_AddStringToObject(obj, "id", keys[i].key_id);
        cJSON_AddStringToObject(obj, "tenant", keys[i].tenant);
        cJSON_AddNumberToObject(obj, "tenant_id",
                                (double)keys[i].tenant_id);
        if (keys[i].label[0])
            cJSON_AddStringToObject(obj, "label", keys[i].label);
        else
            cJSON_AddNullToObject(obj, "label");
        cJSON_AddStringToObject(obj, "created", created);
        cJSON_AddNumberToObject(obj, "created_ms",
                                (double)keys[i].created_ms);
        if (keys[i].revoked_ms)
            cJSON_AddNumberToObject(obj, "revoked_ms",
                                    (double)keys[i].revoked_ms);
        else
            cJSON_AddNullToObject(obj, "revoked_ms");
        cJSON_AddStringToObject(obj, "status",
                                keys[i].revoked_ms ? "revoked" : "active");
    }
    text = arr ? cJSON_Print(arr) : NULL;
    cJSON_Delete(arr);
    if (!text)
        return -1;
    puts(text);
    free(text);
    return 0;
}

static int keys_list(const struct keys_opts *o)
{
    const char *format = o->format ? o->format : "table";
    struct store_key *keys;
    struct store *s;
    int n, rc;

    if (strcmp(format, "table") != 0 && strcmp(format, "json") != 0)
        return usage_error("list", "invalid --format '%s': use table or "
                           "json", format);
    s = open_store("list", o);
    if (!s)
        return CLI_EXIT_FAILURE;
    rc = store_key_list(s, &keys, &n);
    if (rc != 0) {
        fprintf(stderr, "taphouse keys list: reading keys failed: %s\n",
                sqlite3_errmsg(store_db(s)));
        store_close(s);
        return CLI_EXIT_FAILURE;
    }
    store_close(s);
    if (strcmp(format, "json") == 0) {
        rc = print_json(keys, n);
    } else {
        print_table(keys, n);
        rc = 0;
    }
    free(keys);
    if (rc != 0) {
        fprintf(stderr, "taphouse keys list: out of memory\n");
        return CLI_EXIT_FAILURE;
    }
    return fflush(stdout) == 0 ? CLI_EXIT_OK : CLI_EXIT_FAILURE;
}

static int keys_revoke(const struct keys_opts *o)
{
    struct store *s;
    char err[512];
    int rc;

    s = open_store("revoke", o);
    if (!s)
        return CLI_EXIT_FAILURE;
    rc = store_key_revoke(s, o->key_id, err, sizeof err);
    store_close(s);
    if (rc != 0) {
        fprintf(stderr, "taphouse keys revoke: %s\n", err);
        return CLI_EXIT_FAILURE;
    }
    printf("Revoked key %s.\n", o->key_id);
    return CLI_EXIT_OK;
}

int cli_keys_main(int argc, char **argv)
{
    struct keys_opts o;
    const char *cmd;
    const char *help;
    int (*run)(const struct keys_opts *);
    int rc;

    if (argc < 2) {
        fputs(keys_help, stderr);
        return CLI_EXIT_USAGE;
    }
    cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 ||
        strcmp(cmd, "help") == 0) {
        fputs(keys_help, stdout);
        return CLI_EXIT_OK;
    }
    if (strcmp(cmd, "create") == 0) {
        help = create_help;
        run = keys_create;
    } else if (strcmp(cmd, "list") == 0) {
        help = list_help;
        run = keys_list;
    } else if (strcmp(cmd, "revoke") == 0) {
        help = revoke_help;
        run = keys_revoke;
    } else {
        return usage_error("", "unknown command '%s'", cmd);
    }

    rc = parse_opts(cmd, argc - 1, argv + 1, help, &o);
    if (rc < 0)
        return CLI_EXIT_OK;     /* --help was printed */
    if (rc > 0)
        return rc;
    return run(&o);
}
