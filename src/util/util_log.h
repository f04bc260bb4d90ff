/*
 * Logging: one line per event on standard error, with a millisecond UTC
 * timestamp, the level and the module. The level is checked before the
 * message is formatted, so a disabled debug line costs one comparison.
 */
#ifndef TAPHOUSE_UTIL_LOG_H
#define TAPHOUSE_UTIL_LOG_H

enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };

extern enum log_level log_min_level;

void log_emit(enum log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Parse "debug", "info", "warn" or "error"; returns -1 for anything else. */
int log_parse_level(const char *name);

#define log_at(level, module, ...)                                        \
    do {                                                                  \
        if ((level) >= log_min_level)                                     \
            log_emit((level), (module), __VA_ARGS__);                     \
    } while (0)

#define log_debug(module, ...) log_at(LOG_DEBUG, module, __VA_ARGS__)
#define log_info(module, ...)  log_at(LOG_INFO, module, __VA_ARGS__)
#define log_warn(module, ...)  log_at(LOG_WARN, module, __VA_ARGS__)
#define log_error(module, ...) log_at(LOG_ERROR, module, __VA_ARGS__)

#endif
