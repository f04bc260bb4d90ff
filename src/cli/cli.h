/*
 * One-shot admin commands. Each cli_*_main takes the command's own argv
 * (argv[0] is the command name, "keys") and returns the process exit
 * status: 0 on success, 1 when the store fails, 2 for a usage error.
 */
#ifndef TAPHOUSE_CLI_H
#define TAPHOUSE_CLI_H

#define CLI_EXIT_OK 0
#define CLI_EXIT_FAILURE 1
#define CLI_EXIT_USAGE 2

/* taphouse keys create|list|revoke: manage API keys. */
int cli_keys_main(int argc, char **argv);

#endif
