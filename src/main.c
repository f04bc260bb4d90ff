/* taphouse: command-line dispatch. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "serve.h"

#define TAPHOUSE_VERSION "0.1.0"

static void usage(FILE *out)
{
    fprintf(out,
"usage: taphouse COMMAND [options]\n"
"\n"
"An OpenAI-compatible inference server with API keys and a usage ledger.\n"
"\n"
"commands:\n"
"  serve     serve a GGUF model over HTTP (taphouse serve --help)\n"
"  keys      create, list and revoke API keys (taphouse keys --help)\n"
"\n"
"  -h, --help     show this help\n"
"  --version      print the version\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "serve") == 0)
        return serve_main(argc - 1, argv + 1);
    if (strcmp(cmd, "keys") == 0)
        return cli_keys_main(argc - 1, argv + 1);
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 ||
        strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("taphouse %s\n", TAPHOUSE_VERSION);
        return 0;
    }
    fprintf(stderr, "taphouse: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
