/*
 * Logging to stderr: one line per event, with a timestamp and a level. Every line about a
 * connection names it (see sy_session_log in session.h). Never pass a password, a SCRAM secret or
 * a query parameter value to these functions.
 */
#ifndef SY_LOG_H
#define SY_LOG_H

#include "config/config.h"

/* Sets the level below which lines are dropped (from the config, again on reload). */
void sy_log_set_level(enum sy_log_level level);
/* Whether a line at this level would be written; lets callers skip building expensive text. */
int sy_log_enabled(enum sy_log_level level);
void sy_log(enum sy_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define sy_error(...) sy_log(SY_LOG_ERROR, __VA_ARGS__)
#define sy_warn(...) sy_log(SY_LOG_WARN, __VA_ARGS__)
#define sy_info(...) sy_log(SY_LOG_INFO, __VA_ARGS__)
#define sy_debug(...) sy_log(SY_LOG_DEBUG, __VA_ARGS__)

#endif
