/*
 * The auth file: who may log in through Switchyard, and with what secret. PgBouncer's
 * userlist.txt format, so an existing file can be reused:
 *
 *     ; comment            # comment too
 *     "alice" "SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>"
 *     "bob"   "md5a3556571e93b0d20722ba62be61e8c2d"
 *     "carol" "a plain password with a "" quote"
 *
 * One entry per line: a quoted user name, whitespace, a quoted secret. Inside quotes "" stands
 * for one ". Blank lines and lines whose first non-blank character is ';' or '#' are ignored.
 * Further quoted fields after the secret are ignored, as PgBouncer ignores the rest of the line
 * (old pg_shadow dumps carry a third field); anything else is an error naming the file and
 * line ("auth.txt:3: expected \"user\" \"secret\""). A user listed twice is an error.
 *
 * The secret's kind is judged as PostgreSQL judges rolpassword: "md5" followed by 32 lowercase
 * hex digits is an md5 hash; "SCRAM-SHA-256$..." is a SCRAM verifier (checked here for shape
 * only; callers parse it with pg_scram_parse_verifier, and a secret with that prefix but the
 * wrong shape is an error, not a password); anything else is a plain password. An empty secret
 * is kept as SY_SECRET_NONE: password authentication against it always fails.
 *
 * Pure libc, like the config parser. Loading builds a new struct; nothing edits a loaded one.
 */
#ifndef SY_AUTH_FILE_H
#define SY_AUTH_FILE_H

#include <stddef.h>

#define SY_AUTH_USER_MAX 63           /* bytes in a user name (PostgreSQL's NAMEDATALEN - 1) */
#define SY_AUTH_SECRET_MAX 1024       /* bytes in a secret */
#define SY_AUTH_FILE_MAX (16u << 20)  /* bytes in the file: 16 MiB */

enum sy_secret_kind {
    SY_SECRET_NONE = 0,  /* an empty secret: no password can match */
    SY_SECRET_PLAIN = 1, /* a plain-text password */
    SY_SECRET_MD5 = 2,   /* "md5" + hex(md5(password || user)) */
    SY_SECRET_SCRAM = 3, /* "SCRAM-SHA-256$<i>:<salt>$<StoredKey>:<ServerKey>" */
};

struct sy_auth_entry {
    const char *user;       /* NUL-terminated, 1 to SY_AUTH_USER_MAX bytes, no NUL inside */
    const char *secret;     /* NUL-terminated, 0 to SY_AUTH_SECRET_MAX bytes; never log it */
    enum sy_secret_kind kind;
    size_t line;            /* the line it came from, for messages */
};

struct sy_auth_file {
    struct sy_auth_entry *entries; /* sorted by user (byte order), no two alike */
    size_t nentries;
    char *pool;                    /* owns every user and secret string */
    size_t pool_len;
};

/*
 * Parses text (len bytes, not NUL-terminated; a NUL byte in it is an error). name is the file
 * name used in messages. Returns 0 and fills *af (free it with sy_auth_file_free), or -1 and
 * writes one message "name:line: what is wrong" into err (when err is not NULL and errlen > 0);
 * *af is then left empty and needs no free. A message never quotes a secret.
 */
int sy_auth_file_parse(const char *text, size_t len, const char *name, struct sy_auth_file *af,
                       char *err, size_t errlen);

/*
 * Reads and parses a file of at most SY_AUTH_FILE_MAX bytes. Same returns as
 * sy_auth_file_parse; a file that cannot be read or is too large is -1 with a message.
 */
int sy_auth_file_load(const char *path, struct sy_auth_file *af, char *err, size_t errlen);

/* The entry for user (exact, case-sensitive), or NULL. O(log n). */
const struct sy_auth_entry *sy_auth_file_find(const struct sy_auth_file *af, const char *user);

/* Wipes the secrets and frees; leaves *af empty. Safe on an empty or already freed struct. */
void sy_auth_file_free(struct sy_auth_file *af);

/* "none", "plain", "md5", "scram-sha-256"; "unknown" otherwise. */
const char *sy_auth_kind_name(enum sy_secret_kind kind);

/*
 * Whether the file's permission bits let its group or others read it (S_IRGRP or S_IROTH):
 * 1 yes (the daemon logs a warning), 0 no, -1 when it cannot be stat()ed (errno set).
 */
int sy_auth_file_readable_by_others(const char *path);

#endif
