/*
 * Unit tests for the auth file parser (config/auth_file.c).
 *
 * The text is never NUL-terminated for the parser: fixtures are placed so that their last byte
 * sits right before a PROT_NONE page, and every prefix of each fixture is parsed there too (a
 * prefix is a file cut short: it must parse or fail with a message, never read past its end).
 * Errors are checked word for word, with their file:line.
 *
 * `test_auth_file --write-corpus DIR` writes the fixtures as seeds for fuzz_auth_file into
 * DIR/auth_file (tests/fuzz/corpus in the source tree).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/auth_file.h"
#include "tests/support/guard.h"

/* A fixture from a string literal: its bytes and its length without the literal's own NUL. */
#define FX(lit) (lit), (sizeof(lit) - 1)

/*
 * Parses every proper prefix at the guard page (each must answer 0 or -1 with a message that
 * starts with the name), then the whole, which must answer want_rc; for an error the message
 * must be want_err exactly. Leaves *af parsed from the whole (free it) on success.
 */
static void parse_check(const char *text, size_t len, int want_rc, const char *want_err,
                        struct sy_auth_file *af)
{
    char err[512];
    struct sy_auth_file tmp;
    for (size_t k = 0; k < len; k++) {
        int rc = sy_auth_file_parse((const char *)guard_at(text, k), k, "auth.txt", &tmp, err,
                                    sizeof err);
        if (rc == 0) {
            sy_auth_file_free(&tmp);
        } else {
            if (rc != -1)
                fail_msg("prefix of %zu bytes: rc %d", k, rc);
            if (strncmp(err, "auth.txt:", 9) != 0)
                fail_msg("prefix of %zu bytes: message \"%s\"", k, err);
            assert_null(tmp.entries);
        }
    }
    memset(err, 'x', sizeof err);
    int rc = sy_auth_file_parse((const char *)guard_at(text, len), len, "auth.txt", af, err,
                                sizeof err);
    if (rc != want_rc)
        fail_msg("rc %d, want %d (message \"%s\")", rc, want_rc, rc ? err : "");
    if (want_rc < 0) {
        assert_string_equal(err, want_err);
        assert_null(af->entries);
        assert_int_equal(af->nentries, 0);
        /* A tiny or absent message buffer changes nothing but the message. */
        char tiny[4];
        assert_int_equal(sy_auth_file_parse(text, len, "auth.txt", &tmp, tiny, sizeof tiny), -1);
        assert_string_equal(tiny, "aut");
        assert_int_equal(sy_auth_file_parse(text, len, "auth.txt", &tmp, NULL, 0), -1);
    } else {
        assert_string_equal(err, "");
    }
}

#define SCRAM_ALICE                                                                              \
    "SCRAM-SHA-256$4096:nO1uWRXOHCBL74z7hNb5qA==$swSi8GVnppDI5niQO56MIFUn1Rq77yUdJHt6dEvRRzA=:"  \
    "jcEAFLlAbDoZhEprDJYgWgSSeR0oooVLlaZ8mZHtxDo="

static const char fx_full[] =
    "\xef\xbb\xbf; Switchyard users\n"                                /* 1: BOM and comment */
    "\n"                                                              /* 2 */
    "\"alice\" \"" SCRAM_ALICE "\"\n"                                 /* 3: SCRAM */
    "  # indented comment\n"                                          /* 4 */
    "\"bob\"\t\"md520c46e3762c864548e296b33c3406aa9\"\r\n"            /* 5: md5, CRLF */
    "\t\"carol\"   \"pass \"\"word\"\" ; # x\"   \n"                  /* 6: plain with quotes */
    "\"we\"\"ird\" \"p\"  \"ignored third field\" \"\"\n"             /* 7: extra fields */
    "\"dave\" \"\"\n"                                                 /* 8: empty secret */
    "\"eve\" \"MD520C46E3762C864548E296B33C3406AA9\"\n"               /* 9: upper-case: plain */
    "\"Alice\" \"md5hello\"\n"                                        /* 10: md5-ish: plain */
    "   \n"                                                           /* 11 */
    "\"frank\" \"SCRAM-SHA-256 is my password\"";                     /* 12: no final newline */

static void test_full_file(void **state)
{
    (void)state;
    struct sy_auth_file af;
    parse_check(FX(fx_full), 0, NULL, &af);
    assert_int_equal(af.nentries, 8);

    /* Sorted by user, byte order: upper case first. */
    static const char *order[] = {"Alice", "alice", "bob", "carol", "dave", "eve", "frank", "we\"ird"};
    for (size_t i = 0; i < 8; i++)
        assert_string_equal(af.entries[i].user, order[i]);

    const struct sy_auth_entry *e = sy_auth_file_find(&af, "alice");
    assert_non_null(e);
    assert_string_equal(e->secret, SCRAM_ALICE);
    assert_int_equal(e->kind, SY_SECRET_SCRAM);
    assert_int_equal(e->line, 3);

    e = sy_auth_file_find(&af, "bob");
    assert_non_null(e);
    assert_string_equal(e->secret, "md520c46e3762c864548e296b33c3406aa9");
    assert_int_equal(e->kind, SY_SECRET_MD5);
    assert_int_equal(e->line, 5);

    e = sy_auth_file_find(&af, "carol");
    assert_non_null(e);
    assert_string_equal(e->secret, "pass \"word\" ; # x");
    assert_int_equal(e->kind, SY_SECRET_PLAIN);
    assert_int_equal(e->line, 6);

    e = sy_auth_file_find(&af, "we\"ird");
    assert_non_null(e);
    assert_string_equal(e->secret, "p");
    assert_int_equal(e->kind, SY_SECRET_PLAIN);
    assert_int_equal(e->line, 7);

    e = sy_auth_file_find(&af, "dave");
    assert_non_null(e);
    assert_string_equal(e->secret, "");
    assert_int_equal(e->kind, SY_SECRET_NONE);

    e = sy_auth_file_find(&af, "eve");
    assert_int_equal(e->kind, SY_SECRET_PLAIN);
    e = sy_auth_file_find(&af, "Alice");
    assert_string_equal(e->secret, "md5hello");
    assert_int_equal(e->kind, SY_SECRET_PLAIN);
    assert_int_equal(e->line, 10);
    e = sy_auth_file_find(&af, "frank");
    assert_int_equal(e->kind, SY_SECRET_PLAIN);
    assert_int_equal(e->line, 12);

    /* Exact and case-sensitive. */
    assert_null(sy_auth_file_find(&af, "ALICE"));
    assert_null(sy_auth_file_find(&af, "alic"));
    assert_null(sy_auth_file_find(&af, "alice "));
    assert_null(sy_auth_file_find(&af, ""));
    assert_null(sy_auth_file_find(&af, NULL));
    assert_null(sy_auth_file_find(NULL, "alice"));

    /* The strings are the struct's own, not views into the input. */
    const char *hi = (const char *)guard_end(), *lo = hi - GUARD_SPAN;
    for (size_t i = 0; i < af.nentries; i++)
        assert_true(af.entries[i].user < lo || af.entries[i].user >= hi);

    sy_auth_file_free(&af);
    assert_null(af.entries);
    assert_int_equal(af.nentries, 0);
    sy_auth_file_free(&af); /* twice is harmless */
    sy_auth_file_free(NULL);
    assert_null(sy_auth_file_find(&af, "alice"));
}

static void test_empty_and_comments(void **state)
{
    (void)state;
    struct sy_auth_file af;
    parse_check(FX(""), 0, NULL, &af);
    assert_int_equal(af.nentries, 0);
    sy_auth_file_free(&af);
    parse_check(FX("; only\n# comments\n\n  \t\r\n;\"a\" \"b\"\n"), 0, NULL, &af);
    assert_int_equal(af.nentries, 0);
    sy_auth_file_free(&af);
    parse_check(FX("\xef\xbb\xbf"), 0, NULL, &af);
    assert_int_equal(af.nentries, 0);
    sy_auth_file_free(&af);
    /* NULL text with length 0 is an empty file. */
    assert_int_equal(sy_auth_file_parse(NULL, 0, "auth.txt", &af, NULL, 0), 0);
    assert_int_equal(af.nentries, 0);
    sy_auth_file_free(&af);
}

static void test_limits(void **state)
{
    (void)state;
    struct sy_auth_file af;
    static char text[4096];
    /* A 63-byte user and a 1024-byte secret are fine. */
    size_t p = 0;
    text[p++] = '"';
    memset(text + p, 'u', 63);
    p += 63;
    memcpy(text + p, "\" \"", 3);
    p += 3;
    memset(text + p, 's', 1024);
    p += 1024;
    text[p++] = '"';
    parse_check(text, p, 0, NULL, &af);
    assert_int_equal(af.nentries, 1);
    assert_int_equal(strlen(af.entries[0].user), 63);
    assert_int_equal(strlen(af.entries[0].secret), 1024);
    sy_auth_file_free(&af);

    /* One more byte in either is refused; the message never shows the secret. */
    p = 0;
    memcpy(text, "\"bob\" \"", 7);
    p = 7;
    memset(text + p, 's', 1025);
    p += 1025;
    text[p++] = '"';
    parse_check(text, p, -1, "auth.txt:1: the secret for user \"bob\" is longer than 1024 bytes",
                &af);
    /* "" counts as one byte: 1024 of them is a 1024-byte secret. */
    p = 7;
    for (int i = 0; i < 1024; i++) {
        text[p++] = '"';
        text[p++] = '"';
    }
    text[p++] = '"';
    parse_check(text, p, 0, NULL, &af);
    assert_int_equal(strlen(af.entries[0].secret), 1024);
    assert_int_equal(af.entries[0].secret[1023], '"');
    sy_auth_file_free(&af);

    p = 0;
    text[p++] = '"';
    memset(text + p, 'u', 64);
    p += 64;
    memcpy(text + p, "\" \"x\"", 5);
    p += 5;
    parse_check(text, p, -1, "auth.txt:1: the user name is longer than 63 bytes", &af);
}

static void test_errors(void **state)
{
    (void)state;
    struct sy_auth_file af;
    static const struct {
        const char *text;
        size_t len;
        const char *err;
    } bad[] = {
        {FX("\"a\" \"b\"\n\nalice password\n"), "auth.txt:3: expected \"user\" \"secret\""},
        {FX("\"alice\" secret\n"), "auth.txt:1: expected \"user\" \"secret\""},
        {FX("\"alice\"\n"), "auth.txt:1: expected \"user\" \"secret\""},
        {FX("\"alice\"   \n"), "auth.txt:1: expected \"user\" \"secret\""},
        {FX("\"alice\""), "auth.txt:1: expected \"user\" \"secret\""},
        {FX("\"alice\"\"x\"\n"), "auth.txt:1: expected \"user\" \"secret\""},
        {FX("\"a\"x\"b\"\n"), "auth.txt:1: expected \"user\" \"secret\""},
        {FX("'alice' 'x'\n"), "auth.txt:1: expected \"user\" \"secret\""},
        {FX("alice:x\n"), "auth.txt:1: expected \"user\" \"secret\""},
        {FX("\"alice\" \"secret"), "auth.txt:1: unterminated quoted string (a \" inside quotes "
                                   "is written \"\")"},
        {FX("\"alice\" \"sec\nret\"\n"), "auth.txt:1: unterminated quoted string (a \" inside "
                                         "quotes is written \"\")"},
        {FX("\"ali"), "auth.txt:1: unterminated quoted string (a \" inside quotes is written \"\")"},
        {FX("\n\n\"\" \"x\"\n"), "auth.txt:3: the user name is empty"},
        {FX("\"a\" \"b\" c\n"),
         "auth.txt:1: unexpected text after the secret for user \"a\"; expected \"user\" \"secret\""},
        {FX("\"a\" \"b\"c\n"),
         "auth.txt:1: unexpected text after the secret for user \"a\"; expected \"user\" \"secret\""},
        {FX("\"a\" \"b\" \"c\n"),
         "auth.txt:1: unterminated quoted string (a \" inside quotes is written \"\")"},
        {FX("\"a\" \"b\"\n\"bob\" \"x\"\n\"c\" \"d\"\n\"bob\" \"y\"\n\"bob\" \"z\"\n"),
         "auth.txt:4: user \"bob\" is listed twice (first on line 2)"},
        {FX("\"z\" \"1\"\n\"y\" \"1\"\n\"z\" \"2\"\n\"y\" \"2\"\n"),
         "auth.txt:3: user \"z\" is listed twice (first on line 1)"},
        {FX("\"a\" \"b\0\"\n"), "auth.txt:1: NUL byte in the file"},
        {FX("\"a\0\" \"b\"\n"), "auth.txt:1: NUL byte in the file"},
        {FX("\n\0\n"), "auth.txt:2: NUL byte in the file"},
        {FX("; comment \0\n"), "auth.txt:1: NUL byte in the file"},
        {FX("\"a\" \"SCRAM-SHA-256$4096:AAAA$AAAA:AAAA\"\n"),
         "auth.txt:1: the secret for user \"a\" starts with SCRAM-SHA-256$ but is not "
         "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>"},
        {FX("\"a\" \"SCRAM-SHA-256$\"\n"),
         "auth.txt:1: the secret for user \"a\" starts with SCRAM-SHA-256$ but is not "
         "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>"},
        /* Control bytes in a user name are shown as '?'. */
        {FX("\"a\x1b[31m\" \"b\" x\n"),
         "auth.txt:1: unexpected text after the secret for user \"a?[31m\"; expected \"user\" "
         "\"secret\""},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        parse_check(bad[i].text, bad[i].len, -1, bad[i].err, &af);

    /* A SCRAM secret with the wrong shape in each part. */
    static const char *scram_bad[] = {
        "SCRAM-SHA-256$:AAAA$swSi8GVnppDI5niQO56MIFUn1Rq77yUdJHt6dEvRRzA=:jcEAFLlAbDoZhEprDJYgWgSSeR0oooVLlaZ8mZHtxDo=",
        "SCRAM-SHA-256$4x96:AAAA$swSi8GVnppDI5niQO56MIFUn1Rq77yUdJHt6dEvRRzA=:jcEAFLlAbDoZhEprDJYgWgSSeR0oooVLlaZ8mZHtxDo=",
        "SCRAM-SHA-256$4096:AAA$swSi8GVnppDI5niQO56MIFUn1Rq77yUdJHt6dEvRRzA=:jcEAFLlAbDoZhEprDJYgWgSSeR0oooVLlaZ8mZHtxDo=",
        "SCRAM-SHA-256$4096:$swSi8GVnppDI5niQO56MIFUn1Rq77yUdJHt6dEvRRzA=:jcEAFLlAbDoZhEprDJYgWgSSeR0oooVLlaZ8mZHtxDo=",
        "SCRAM-SHA-256$4096:AAAA$swSi8GVnppDI5niQO56MIFUn1Rq77yUdJHt6dEvRRzA:jcEAFLlAbDoZhEprDJYgWgSSeR0oooVLlaZ8mZHtxDo=",
        "SCRAM-SHA-256$4096:AAAA$swSi8GVnppDI5niQO56MIFUn1Rq77yUdJHt6dEvRRzA=:jcEAFLlAbDoZhEprDJYgWgSSeR0oooVLlaZ8mZHtxDo=x",
        "SCRAM-SHA-256$4096:AAAA$swSi8GVnppDI5niQO56MIFUn1Rq77yUdJHt6dEvRRzA=",
        "SCRAM-SHA-256$4096:A*AA$swSi8GVnppDI5niQO56MIFUn1Rq77yUdJHt6dEvRRzA=:jcEAFLlAbDoZhEprDJYgWgSSeR0oooVLlaZ8mZHtxDo=",
        "SCRAM-SHA-256$12345678901:AAAA$swSi8GVnppDI5niQO56MIFUn1Rq77yUdJHt6dEvRRzA=:jcEAFLlAbDoZhEprDJYgWgSSeR0oooVLlaZ8mZHtxDo=",
    };
    char text[512], want[256];
    for (size_t i = 0; i < sizeof scram_bad / sizeof scram_bad[0]; i++) {
        int n = snprintf(text, sizeof text, "\"u\" \"%s\"\n", scram_bad[i]);
        snprintf(want, sizeof want,
                 "auth.txt:1: the secret for user \"u\" starts with SCRAM-SHA-256$ but is not "
                 "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>");
        parse_check(text, (size_t)n, -1, want, &af);
    }
    /* And the good shape passes, with padding variants of the salt. */
    static const char *scram_ok[] = {
        SCRAM_ALICE,
        "SCRAM-SHA-256$1:AA==$swSi8GVnppDI5niQO56MIFUn1Rq77yUdJHt6dEvRRzA=:jcEAFLlAbDoZhEprDJYgWgSSeR0oooVLlaZ8mZHtxDo=",
        "SCRAM-SHA-256$1:AAA=$swSi8GVnppDI5niQO56MIFUn1Rq77yUdJHt6dEvRRzA=:jcEAFLlAbDoZhEprDJYgWgSSeR0oooVLlaZ8mZHtxDo=",
    };
    for (size_t i = 0; i < sizeof scram_ok / sizeof scram_ok[0]; i++) {
        int n = snprintf(text, sizeof text, "\"u\" \"%s\"\n", scram_ok[i]);
        parse_check(text, (size_t)n, 0, NULL, &af);
        assert_int_equal(af.entries[0].kind, SY_SECRET_SCRAM);
        sy_auth_file_free(&af);
    }

    /* Without a name, messages say "auth file". */
    char err[128];
    assert_int_equal(sy_auth_file_parse("x", 1, NULL, &af, err, sizeof err), -1);
    assert_string_equal(err, "auth file:1: expected \"user\" \"secret\"");
    assert_int_equal(sy_auth_file_parse(NULL, 3, "a.txt", &af, err, sizeof err), -1);
    assert_string_equal(err, "a.txt: no text to parse");
}

static void test_many_users(void **state)
{
    (void)state;
    size_t n = 5000, cap = n * 40;
    char *text = malloc(cap);
    assert_non_null(text);
    size_t p = 0;
    /* Written in reverse order, so the parser has to sort. */
    for (size_t i = n; i-- > 0;)
        p += (size_t)snprintf(text + p, cap - p, "\"user%05zu\" \"secret%zu\"\n", i, i);
    struct sy_auth_file af;
    char err[256];
    assert_int_equal(sy_auth_file_parse(text, p, "big.txt", &af, err, sizeof err), 0);
    assert_int_equal(af.nentries, n);
    char user[32], secret[32];
    for (size_t i = 0; i < n; i++) {
        snprintf(user, sizeof user, "user%05zu", i);
        snprintf(secret, sizeof secret, "secret%zu", i);
        const struct sy_auth_entry *e = sy_auth_file_find(&af, user);
        assert_non_null(e);
        assert_string_equal(e->secret, secret);
        assert_int_equal(e->line, n - i);
    }
    assert_null(sy_auth_file_find(&af, "user5000"));
    sy_auth_file_free(&af);
    free(text);
}

/* ---- Files ---- */

static void make_tmpdir(char *dir, size_t len)
{
    snprintf(dir, len, "%s/sy-auth-test.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    assert_non_null(mkdtemp(dir));
}

static void write_all(const char *path, const char *text, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    assert_int_equal(fchmod(fd, mode), 0);
    assert_int_equal(close(fd), 0);
}

static void test_load_and_mode(void **state)
{
    (void)state;
    char dir[256], path[300], want[512], err[512];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/userlist.txt", dir);
    write_all(path, FX(fx_full), 0600);

    struct sy_auth_file af;
    assert_int_equal(sy_auth_file_load(path, &af, err, sizeof err), 0);
    assert_int_equal(af.nentries, 8);
    assert_string_equal(sy_auth_file_find(&af, "bob")->secret, "md520c46e3762c864548e296b33c3406aa9");
    sy_auth_file_free(&af);

    /* Messages carry the path. */
    write_all(path, FX("\"a\" \"b\"\nbad\n"), 0600);
    assert_int_equal(sy_auth_file_load(path, &af, err, sizeof err), -1);
    snprintf(want, sizeof want, "%s:2: expected \"user\" \"secret\"", path);
    assert_string_equal(err, want);

    assert_int_equal(sy_auth_file_readable_by_others(path), 0);
    assert_int_equal(chmod(path, 0640), 0);
    assert_int_equal(sy_auth_file_readable_by_others(path), 1);
    assert_int_equal(chmod(path, 0604), 0);
    assert_int_equal(sy_auth_file_readable_by_others(path), 1);
    assert_int_equal(chmod(path, 0400), 0);
    assert_int_equal(sy_auth_file_readable_by_others(path), 0);
    assert_int_equal(chmod(path, 0620), 0); /* group may write, not read */
    assert_int_equal(sy_auth_file_readable_by_others(path), 0);

    /* Exactly 16 MiB is read; one byte more is refused. A sparse file of NUL bytes will do for
       the second, and the first is a file of blank lines. */
    char *big = malloc(SY_AUTH_FILE_MAX);
    assert_non_null(big);
    memset(big, '\n', SY_AUTH_FILE_MAX);
    write_all(path, big, SY_AUTH_FILE_MAX, 0600);
    free(big);
    assert_int_equal(sy_auth_file_load(path, &af, err, sizeof err), 0);
    assert_int_equal(af.nentries, 0);
    sy_auth_file_free(&af);
    int fd = open(path, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)SY_AUTH_FILE_MAX + 1), 0);
    close(fd);
    assert_int_equal(sy_auth_file_load(path, &af, err, sizeof err), -1);
    snprintf(want, sizeof want, "%s: the file is over the 16 MiB limit; is it the right file?", path);
    assert_string_equal(err, want);
    assert_int_equal(unlink(path), 0);

    /* Missing file, NULL path, a directory. */
    assert_int_equal(sy_auth_file_load(path, &af, err, sizeof err), -1);
    snprintf(want, sizeof want, "cannot read %s: No such file or directory", path);
    assert_string_equal(err, want);
    assert_null(af.entries);
    assert_int_equal(sy_auth_file_readable_by_others(path), -1);
    assert_int_equal(errno, ENOENT);
    assert_int_equal(sy_auth_file_readable_by_others(NULL), -1);
    assert_int_equal(sy_auth_file_load(NULL, &af, err, sizeof err), -1);
    assert_string_equal(err, "auth file path is missing");
    assert_int_equal(sy_auth_file_load(dir, &af, err, sizeof err), -1);
    snprintf(want, sizeof want, "cannot read %s: Is a directory", dir);
    assert_string_equal(err, want);
    assert_int_equal(rmdir(dir), 0);
}

static void test_kind_names(void **state)
{
    (void)state;
    assert_string_equal(sy_auth_kind_name(SY_SECRET_NONE), "none");
    assert_string_equal(sy_auth_kind_name(SY_SECRET_PLAIN), "plain");
    assert_string_equal(sy_auth_kind_name(SY_SECRET_MD5), "md5");
    assert_string_equal(sy_auth_kind_name(SY_SECRET_SCRAM), "scram-sha-256");
    assert_string_equal(sy_auth_kind_name((enum sy_secret_kind)9), "unknown");
}

/* ---- Seeds for fuzz_auth_file ---- */

static int write_seed(const char *dir, const char *name, const char *bytes, size_t len)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
        return 1;
    }
    size_t w = fwrite(bytes, 1, len, f);
    int rc = fclose(f);
    return (w != len || rc != 0) ? 1 : 0;
}

static int write_corpus(const char *root)
{
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/auth_file", root);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "cannot create %s: %s\n", dir, strerror(errno));
        return 1;
    }
    int rc = 0;
    rc |= write_seed(dir, "full.txt", FX(fx_full));
    rc |= write_seed(dir, "comments.txt", FX("; only\n# comments\n\n  \t\r\n"));
    rc |= write_seed(dir, "err_unquoted.txt", FX("\"a\" \"b\"\n\nalice password\n"));
    rc |= write_seed(dir, "err_unterminated.txt", FX("\"alice\" \"sec\nret\"\n"));
    rc |= write_seed(dir, "err_duplicate.txt", FX("\"a\" \"b\"\n\"bob\" \"x\"\n\"bob\" \"y\"\n"));
    rc |= write_seed(dir, "err_trailing.txt", FX("\"a\" \"b\" c\n"));
    rc |= write_seed(dir, "err_scram.txt", FX("\"a\" \"SCRAM-SHA-256$4096:AAAA$AAAA:AAAA\"\n"));
    rc |= write_seed(dir, "err_nul.txt", FX("\"a\" \"b\0\"\n"));
    return rc;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--write-corpus") == 0)
        return write_corpus(argv[2]);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_file),
        cmocka_unit_test(test_empty_and_comments),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_many_users),
        cmocka_unit_test(test_load_and_mode),
        cmocka_unit_test(test_kind_names),
    };
    return cmocka_run_group_tests(tests, guard_setup, guard_teardown);
}
