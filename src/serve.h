/* `taphouse serve`: wire the engine, gateway and HTTP server together. */
#ifndef TAPHOUSE_SERVE_H
#define TAPHOUSE_SERVE_H

/* Run the daemon until SIGINT or SIGTERM; returns the exit status. */
int serve_main(int argc, char **argv);

#endif
