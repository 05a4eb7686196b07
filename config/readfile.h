/* Reading a whole file with a size limit, for the config and auth file loaders. */
#ifndef SY_READFILE_H
#define SY_READFILE_H

#include <stddef.h>

/*
 * Reads the whole file at path, which may hold at most max bytes (a whole number of MiB: the
 * message states the limit in MiB). Returns a new buffer of *len bytes, not NUL-terminated
 * (free it), or NULL with one message in err (when err is not NULL and errlen > 0):
 *   "cannot read PATH: REASON"                                   (REASON from strerror)
 *   "PATH: the file is over the N MiB limit; is it the right file?"
 * The text may hold secrets: every buffer freed on the way is wiped first, and the caller
 * wipes the one returned when it must.
 */
char *sy_read_file(const char *path, size_t max, size_t *len, char *err, size_t errlen);

#endif
