/*
 * `taphouse serve`: parse the flags, open the store, load the model,
 * start the scheduler and the HTTP server, then wait for SIGINT or
 * SIGTERM and shut down in reverse order.
 */
#include "serve.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/api.h"
#include "engine/eng_chat.h"
#include "engine/eng_model.h"
#include "engine/eng_sched.h"
#include "engine/eng_tokenizer.h"
#include "gateway/gw_auth.h"
#include "gateway/gw_ledger.h"
#include "http/http.h"
#include "store/store.h"
#include "util/util_log.h"

#define DEFAULT_CTX_CAP 4096
/* How long aborted requests get to send their last events. */
#define ABORT_GRACE_MS 5000

struct serve_options {
    const char *model_path;
    const char *model_name;
    const char *host;
    int port;
    const char *db_path;
    int threads;
    int ctx_size;
    int parallel;
    int max_queue;
    const char *chat_template;
    long max_body;
    int max_connections;
    int max_per_ip;
    int idle_timeout;
    int shutdown_timeout;
};

static void usage(FILE *out)
{
    fprintf(out,
"usage: taphouse serve --model PATH [options]\n"
"\n"
"Serve a GGUF model over an OpenAI-compatible HTTP API.\n"
"\n"
"  --model PATH         GGUF model file (required)\n"
"  --model-name NAME    model id clients send (default: the file name\n"
"                       without .gguf)\n"
"  --host ADDR          numeric address to listen on (default 127.0.0.1)\n"
"  --port N             TCP port; 0 picks a free one (default 8080)\n"
"  --db PATH            SQLite database with keys and usage (default:\n"
"                       the data directory's taphouse.db)\n"
"  --threads N          compute threads (default: number of cores)\n"
"  --ctx-size N         context length per sequence in tokens (default:\n"
"                       the model's, at most %d)\n"
"  --parallel N         sequences generated at once (default 4)\n"
"  --max-queue N        sequences that may wait for a free slot before\n"
"                       new ones get 503 (default 256)\n"
"  --chat-template NAME chat format instead of the detected one: chatml,\n"
"                       llama2, llama3, mistral, gemma, phi3,\n"
"                       deepseek-r1, granite, smollm3 or plain\n"
"  --max-body BYTES     largest request body accepted (default 4194304)\n"
"  --max-connections N  open connections accepted at once (default 512)\n"
"  --max-connections-per-ip N  open connections from one client address;\n"
"                       0 for no limit (default 0, as behind a proxy)\n"
"  --idle-timeout SEC   close connections idle this long (default 30)\n"
"  --shutdown-timeout SEC  on SIGINT or SIGTERM, stop accepting and let\n"
"                       running requests finish for this long (default 30)\n"
"  --log-level LEVEL    debug, info, warn or error (default info)\n"
"  -h, --help           show this help\n", DEFAULT_CTX_CAP);
}

static int parse_int(const char *flag, const char *text, long min, long max,
                     long *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || !*text || *end || v < min || v > max) {
        fprintf(stderr, "taphouse serve: invalid %s '%s': expected a whole "
                "number from %ld to %ld\n", flag, text, min, max);
        return -1;
    }
    *out = v;
    return 0;
}

/* A model id clients can send: printable ASCII, no spaces. */
static bool model_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 127)
        return false;
    for (size_t i = 0; i < n; i++)
        if (name[i] <= ' ' || name[i] > '~')
            return false;
    return true;
}

/* Returns 0, 1 after --help, or -1 after printing an error. */
static int parse_options(int argc, char **argv, struct serve_options *o)
{
    static const struct option longopts[] = {
        { "model", required_argument, NULL, 'm' },
        { "model-name", required_argument, NULL, 'n' },
        { "host", required_argument, NULL, 'H' },
        { "port", required_argument, NULL, 'p' },
        { "db", required_argument, NULL, 'd' },
        { "threads", required_argument, NULL, 't' },
        { "ctx-size", required_argument, NULL, 'c' },
        { "parallel", required_argument, NULL, 'P' },
        { "max-queue", required_argument, NULL, 'Q' },
        { "chat-template", required_argument, NULL, 'T' },
        { "max-body", required_argument, NULL, 'b' },
        { "max-connections", required_argument, NULL, 'C' },
        { "max-connections-per-ip", required_argument, NULL, 'A' },
        { "idle-timeout", required_argument, NULL, 'I' },
        { "shutdown-timeout", required_argument, NULL, 'S' },
        { "log-level", required_argument, NULL, 'l' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    long v;
    int c;

    o->host = "127.0.0.1";
    o->port = 8080;
    o->parallel = 4;
    o->max_queue = 256;
    o->max_connections = 512;
    o->idle_timeout = 30;
    o->shutdown_timeout = 30;
    o->max_body = 4L << 20;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'm': o->model_path = optarg; break;
        case 'n': o->model_name = optarg; break;
        case 'H': o->host = optarg; break;
        case 'd': o->db_path = optarg; break;
        case 'T': o->chat_template = optarg; break;
        case 'p':
            if (parse_int("--port", optarg, 0, 65535, &v) < 0)
                return -1;
            o->port = (int)v;
            break;
        case 't':
            if (parse_int("--threads", optarg, 1, 1024, &v) < 0)
                return -1;
            o->threads = (int)v;
            break;
        case 'c':
            if (parse_int("--ctx-size", optarg, 16, 1 << 20, &v) < 0)
                return -1;
            o->ctx_size = (int)v;
            break;
        case 'P':
            if (parse_int("--parallel", optarg, 1, 256, &v) < 0)
                return -1;
            o->parallel = (int)v;
            break;
        case 'Q':
            if (parse_int("--max-queue", optarg, 1, 1 << 20, &v) < 0)
                return -1;
            o->max_queue = (int)v;
            break;
        case 'C':
            if (parse_int("--max-connections", optarg, 1, 100000, &v) < 0)
                return -1;
            o->max_connections = (int)v;
            break;
        case 'A':
            if (parse_int("--max-connections-per-ip", optarg, 0, 100000,
                          &v) < 0)
                return -1;
            o->max_per_ip = (int)v;
            break;
        case 'I':
            if (parse_int("--idle-timeout", optarg, 1, 86400, &v) < 0)
                return -1;
            o->idle_timeout = (int)v;
            break;
        case 'S':
            if (parse_int("--shutdown-timeout", optarg, 0, 86400, &v) < 0)
                return -1;
            o->shutdown_timeout = (int)v;
            break;
        case 'b':
            if (parse_int("--max-body", optarg, 1024, 1L << 30, &v) < 0)
                return -1;
            o->max_body = v;
            break;
        case 'l': {
            int level = log_parse_level(optarg);
            if (level < 0) {
                fprintf(stderr, "taphouse serve: invalid --log-level '%s': "
                        "expected debug, info, warn or error\n", optarg);
                return -1;
            }
            log_min_level = (enum log_level)level;
            break;
        }
        case 'h':
            usage(stdout);
            return 1;
        default:
            fprintf(stderr, "Run 'taphouse serve --help' for the "
                    "options.\n");
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "taphouse serve: unexpected argument '%s'\n",
                argv[optind]);
        return -1;
    }
    if (!o->model_path) {
        fprintf(stderr, "taphouse serve: missing --model PATH\n");
        return -1;
    }
    if (o->model_name && !model_name_valid(o->model_name)) {
        fprintf(stderr, "taphouse serve: invalid --model-name '%s': use 1 "
                "to 127 printable characters without spaces\n",
                o->model_name);
        return -1;
    }
    if (o->chat_template &&
        eng_chat_from_name(o->chat_template) == ENG_CHAT_UNKNOWN) {
        fprintf(stderr, "taphouse serve: unknown --chat-template '%s'; "
                "see 'taphouse serve --help' for the names\n",
                o->chat_template);
        return -1;
    }
    return 0;
}

/* The model id: --model-name, else the file name without ".gguf". */
static void model_id_of(const struct serve_options *o, char *buf,
                        size_t cap)
{
    if (o->model_name) {
        snprintf(buf, cap, "%s", o->model_name);
        return;
    }
    const char *base = strrchr(o->model_path, '/');
    base = base ? base + 1 : o->model_path;
    snprintf(buf, cap, "%s", base);
    size_t n = strlen(buf);
    if (n > 5 && strcmp(buf + n - 5, ".gguf") == 0)
        buf[n - 5] = '\0';
}

static enum eng_chat_family pick_chat_family(const struct serve_options *o,
                                             const struct gguf_file *f)
{
    if (o->chat_template)
        return eng_chat_from_name(o->chat_template);
    char *tmpl = gguf_get_str_dup(f, "tokenizer.chat_template");
    enum eng_chat_family fam = tmpl ? eng_chat_detect(tmpl)
                                    : ENG_CHAT_UNKNOWN;
    if (fam == ENG_CHAT_UNKNOWN) {
        log_warn("serve", "%s; chat requests use the 'plain' format "
                 "(\"role: content\" lines); pick another with "
                 "--chat-template", tmpl ? "the model's chat template is "
                 "not one of the known families" : "the model has no chat "
                 "template");
        fam = ENG_CHAT_PLAIN;
    }
    free(tmpl);
    return fam;
}

int serve_main(int argc, char **argv)
{
    struct serve_options o = { 0 };
    struct api_server api = { 0 };
    struct eng_model *model = NULL;
    struct eng_tokenizer *tok = NULL;
    struct gw_auth *auth = NULL;
    struct gw_ledger *ledger = NULL;
    struct eng_sched *sched = NULL;
    struct http_server *http = NULL;
    char db_default[PATH_MAX];
    char err[512];
    int status = 1;

    int rc = parse_options(argc, argv, &o);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    if (!o.db_path) {
        if (store_default_path(db_default, sizeof db_default) != 0) {
            fprintf(stderr, "taphouse serve: cannot work out the data "
                    "directory; pass --db PATH\n");
            return 1;
        }
        o.db_path = db_default;
    }

    /* Signals go to sigwait below, not to whichever thread runs. */
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (gw_ledger_start(o.db_path, &ledger, err, sizeof err) != 0 ||
        gw_auth_open(o.db_path, &auth, err, sizeof err) != 0) {
        fprintf(stderr, "taphouse serve: cannot open the database %s: %s\n",
                o.db_path, err);
        goto out;
    }
    if (eng_model_load(o.model_path, o.threads, &model, err,
                       sizeof err) != 0) {
        fprintf(stderr, "taphouse serve: cannot load the model: %s\n", err);
        goto out;
    }
    if (eng_tok_load(eng_model_gguf(model), &tok, err, sizeof err) != 0) {
        fprintf(stderr, "taphouse serve: cannot load the tokenizer of %s: "
                "%s\n", o.model_path, err);
        goto out;
    }

    const struct eng_model_info *info = eng_model_info(model);
    int n_ctx = o.ctx_size;
    if (n_ctx == 0)
        n_ctx = info->n_ctx_train < DEFAULT_CTX_CAP ? info->n_ctx_train
                                                    : DEFAULT_CTX_CAP;
    if (n_ctx > info->n_ctx_train)
        log_warn("serve", "--ctx-size %d is larger than the %d tokens the "
                 "model was trained on; output past that may degrade",
                 n_ctx, info->n_ctx_train);
    struct eng_sched_config cfg = {
        .n_slots = o.parallel,
        .n_ctx = n_ctx,
        .prefill_chunk = 512,
        .max_queue = o.max_queue,
    };
    if (eng_sched_start(model, tok, &cfg, &sched, err, sizeof err) != 0) {
        fprintf(stderr, "taphouse serve: %s\n", err);
        goto out;
    }

    struct stat st;
    api.sched = sched;
    api.tok = tok;
    api.chat_family = pick_chat_family(&o, eng_model_gguf(model));
    model_id_of(&o, api.model_id, sizeof api.model_id);
    api.model_created = stat(o.model_path, &st) == 0 ? st.st_mtime : 0;
    api.n_ctx = n_ctx;
    api.n_vocab = info->n_vocab;
    api.ledger = ledger;

    struct http_config hc = {
        .host = o.host,
        .port = o.port,
        .max_body = (size_t)o.max_body,
        .max_connections = (unsigned)o.max_connections,
        .max_per_ip = (unsigned)o.max_per_ip,
        .idle_timeout_s = (unsigned)o.idle_timeout,
    };
    if (http_start(&hc, &api, auth, &http, err, sizeof err) != 0) {
        fprintf(stderr, "taphouse serve: %s\n", err);
        goto out;
    }
    log_info("serve", "ready: model %s (%d layers, context %d, chat "
             "format %s) on http://%s:%d with database %s", api.model_id,
             info->n_layer, n_ctx, eng_chat_name(api.chat_family), o.host,
             http_port(http), o.db_path);

    int sig = 0;
    sigwait(&signals, &sig);
    log_info("serve", "received signal %d; no longer accepting "
             "connections, waiting up to %d s for running requests", sig,
             o.shutdown_timeout);
    http_quiesce(http);
    if (!http_wait_idle(http, o.shutdown_timeout * 1000)) {
        log_warn("serve", "requests still running after %d s are aborted",
                 o.shutdown_timeout);
        /* Aborted streams still get their error event and [DONE]. */
        eng_sched_stop(sched);
        http_wait_idle(http, ABORT_GRACE_MS);
    }
    status = 0;

out:
    /* Abort what still runs first, so open streams end with an error
     * event, then close the connections, then free the scheduler. */
    eng_sched_stop(sched);
    http_stop(http);
    eng_sched_free(sched);
    eng_tok_free(tok);
    eng_model_free(model);
    gw_auth_close(auth);
    gw_ledger_stop(ledger);
    return status;
}
