/* Reading a whole file with a size limit. See readfile.h. */
#include "readfile.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RF_FIRST_CAP (64 * 1024) /* the first buffer; it doubles up to max + 1 bytes */

static void rf_wipe_free(char *buf, size_t n)
{
    if (buf != NULL && n > 0)
        explicit_bzero(buf, n);
    free(buf);
}

/* Reads at most max + 1 bytes of f into a new buffer. Returns it, or NULL (errno set). */
static char *rf_read(FILE *f, size_t max, size_t *len)
{
    size_t cap = max < RF_FIRST_CAP ? max + 1 : RF_FIRST_CAP, n = 0;
    char *buf = malloc(cap);
    if (buf == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    errno = 0;
    for (;;) {
        if (n == cap) {
            if (cap > max)
                break;
            size_t ncap = cap > max / 2 ? max + 1 : cap * 2;
            char *nb = malloc(ncap);
            if (nb == NULL) {
                rf_wipe_free(buf, n);
                errno = ENOMEM;
                return NULL;
            }
            memcpy(nb, buf, n);
            rf_wipe_free(buf, n); /* realloc could leave secrets behind in freed memory */
            buf = nb;
            cap = ncap;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        int e = errno ? errno : EIO;
        rf_wipe_free(buf, n);
        errno = e;
        return NULL;
    }
    *len = n;
    return buf;
}

char *sy_read_file(const char *path, size_t max, size_t *len, char *err, size_t errlen)
{
    size_t n = 0;
    errno = 0;
    FILE *f = fopen(path, "rb");
    char *text = f ? rf_read(f, max, &n) : NULL;
    int saved = errno;
    if (f != NULL)
        fclose(f);
    if (text == NULL) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "cannot read %s: %s", path, strerror(saved));
        return NULL;
    }
    if (n > max) {
        rf_wipe_free(text, n);
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "%s: the file is over the %zu MiB limit; is it the right file?",
                     path, max >> 20);
        return NULL;
    }
    *len = n;
    return text;
}
