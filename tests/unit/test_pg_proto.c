/*
 * Unit tests for the PostgreSQL protocol codec (protocol/pg/pg_proto.c).
 *
 * Every decoder runs on byte fixtures placed so that their last byte sits right before a
 * PROT_NONE page: any read past len crashes the test instead of passing silently. Each fixture
 * is decoded whole and also fed as a growing prefix, one byte at a time: a proper prefix must
 * answer PG_NEED_MORE or the fixture's own error, never a success. The scanner is also fed its
 * streams split at every point (and at every pair of points) and must describe the same messages.
 *
 * `test_pg_proto --write-corpus DIR` writes the fixtures as seed files for the fuzz targets into
 * DIR/startup, DIR/scan and DIR/be_msgs (tests/fuzz/corpus in the source tree).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "protocol/pg/pg_proto.h"
#include "tests/support/guard.h"

/* A fixture from a string literal: its bytes and its length without the literal's own NUL. */
#define FX(lit) (const uint8_t *)(lit), (sizeof(lit) - 1)

/* Fails with the fixture's name, the prefix length and both values. */
#define assert_eq_at(got, want, name, k)                                                         \
    do {                                                                                         \
        long long got_ = (long long)(got), want_ = (long long)(want);                            \
        if (got_ != want_)                                                                       \
            fail_msg("%s (fed %zu bytes): %s is %lld, want %lld", (name), (size_t)(k), #got,     \
                     got_, want_);                                                               \
    } while (0)

/* ---- Names and error strings ---- */

static void test_strerror_and_names(void **state)
{
    (void)state;
    assert_string_equal(pg_strerror(PG_E_LENGTH), "invalid message length");
    assert_string_equal(pg_strerror(PG_E_TOO_LARGE), "message length over the configured limit");
    assert_string_equal(pg_strerror(PG_E_UNKNOWN_TYPE), "unknown message type");
    assert_string_equal(pg_strerror(PG_E_VERSION), "unsupported protocol version or request code");
    assert_string_equal(pg_strerror(PG_E_MALFORMED), "malformed message body");
    assert_string_equal(pg_strerror(PG_E_SPACE), "output buffer too small");
    assert_string_equal(pg_strerror(-99), "unknown error");
    assert_string_equal(pg_strerror(PG_NEED_MORE), "unknown error");

    assert_string_equal(pg_fe_type_name('Q'), "Query");
    assert_string_equal(pg_fe_type_name('p'), "PasswordMessage");
    assert_string_equal(pg_fe_type_name('Z'), "unknown");
    assert_string_equal(pg_be_type_name('Z'), "ReadyForQuery");
    assert_string_equal(pg_be_type_name('v'), "NegotiateProtocolVersion");
    assert_string_equal(pg_be_type_name('Q'), "unknown");

    /* Exactly the protocol's 14 frontend and 24 backend type bytes are valid. */
    static const char fe[] = "BCdcfDEHFPpQSX";
    static const char be[] = "RK23CdcGHWDIEVvnNAtS1sZT";
    int nfe = 0, nbe = 0;
    for (int t = 0; t < 256; t++) {
        int in_fe = t != 0 && strchr(fe, t) != NULL;
        int in_be = t != 0 && strchr(be, t) != NULL;
        assert_eq_at(pg_fe_type_valid((uint8_t)t), in_fe, "fe type", t);
        assert_eq_at(pg_be_type_valid((uint8_t)t), in_be, "be type", t);
        nfe += pg_fe_type_valid((uint8_t)t);
        nbe += pg_be_type_valid((uint8_t)t);
    }
    assert_int_equal(nfe, 14);
    assert_int_equal(nbe, 24);
}

/* ---- Message headers ---- */

static void test_header_read(void **state)
{
    (void)state;
    struct pg_header h;
    size_t off;

    static const uint8_t ok[] = "Q\x00\x00\x00\x0d" "SELECT 1";
    for (size_t k = 0; k < PG_HEADER_LEN; k++)
        assert_eq_at(pg_header_read(guard_at(ok, k), k, 1000, &h, &off), PG_NEED_MORE, "header", k);
    assert_int_equal(pg_header_read(guard_at(ok, 5), 5, 1000, &h, &off), PG_HEADER_LEN);
    assert_int_equal(h.type, 'Q');
    assert_int_equal(h.len, 13);

    /* The limit counts the length field's own value: 13 is accepted at 13 and refused at 12. */
    assert_int_equal(pg_header_read(guard_at(ok, 5), 5, 13, &h, &off), PG_HEADER_LEN);
    off = 99;
    assert_int_equal(pg_header_read(guard_at(ok, 5), 5, 12, &h, &off), PG_E_TOO_LARGE);
    assert_int_equal(off, 1);

    static const struct {
        const char *name;
        const uint8_t *bytes;
        size_t len;
        int rc;
    } bad[] = {
        {"length 3", FX("D\x00\x00\x00\x03"), PG_E_LENGTH},
        {"length 0", FX("D\x00\x00\x00\x00"), PG_E_LENGTH},
        {"length -1", FX("D\xff\xff\xff\xff"), PG_E_LENGTH},
        {"length INT_MIN", FX("D\x80\x00\x00\x00"), PG_E_LENGTH},
        {"length 0x7fffffff over max", FX("D\x7f\xff\xff\xff"), PG_E_TOO_LARGE},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        off = 99;
        int rc = pg_header_read(guard_at(bad[i].bytes, bad[i].len), bad[i].len, 1u << 20, &h, &off);
        assert_eq_at(rc, bad[i].rc, bad[i].name, bad[i].len);
        assert_eq_at(off, 1, bad[i].name, bad[i].len);
    }
    /* Without err_off the error is still reported. */
    assert_int_equal(pg_header_read(guard_at(FX("D\xff\xff\xff\xff")), 5, 100, &h, NULL), PG_E_LENGTH);
}

/* ---- Startup-phase packets ---- */

/*
 * Feeds every proper prefix of the fixture, then the whole. A prefix must answer PG_NEED_MORE
 * or the fixture's own error at the same offset. When the fixture decodes, it must also decode
 * to the same length with bytes after it (the next packet). Leaves *out decoded from the whole
 * fixture, with views into the guard area (valid until the next guard_at()).
 */
static int startup_check(const char *name, const uint8_t *bytes, size_t len, uint32_t max_len,
                         int want_rc, size_t want_off, struct pg_startup *out)
{
    struct pg_startup tmp;
    size_t off;
    for (size_t k = 0; k < len; k++) {
        off = SIZE_MAX;
        int rc = pg_fe_parse_startup(guard_at(bytes, k), k, max_len, &tmp, &off);
        if (rc == PG_NEED_MORE)
            continue;
        assert_eq_at(rc, want_rc, name, k);
        if (want_rc > 0)
            fail_msg("%s: a proper prefix of %zu bytes decoded", name, k);
        assert_eq_at(off, want_off, name, k);
    }
    if (want_rc > 0) {
        static uint8_t more[GUARD_SPAN];
        assert_true(len + 3 <= sizeof(more));
        memcpy(more, bytes, len);
        memcpy(more + len, "Q\x00\x00", 3);
        assert_eq_at(pg_fe_parse_startup(guard_at(more, len + 3), len + 3, max_len, &tmp, NULL),
                     want_rc, name, len + 3);
    }
    off = SIZE_MAX;
    int rc = pg_fe_parse_startup(guard_at(bytes, len), len, max_len, out, &off);
    assert_eq_at(rc, want_rc, name, len);
    if (want_rc < 0)
        assert_eq_at(off, want_off, name, len);
    return rc;
}

static const uint8_t fx_startup_full[] =
    "\x00\x00\x00\x53"                 /* length 83 */
    "\x00\x03\x00\x00"                 /* protocol 3.0 */
    "user\0" "alice\0"
    "database\0" "shop\0"
    "options\0" "-c search_path=app\0"
    "application_name\0" "psql\0"
    "\0";

static const uint8_t fx_startup_user_only[] =
    "\x00\x00\x00\x12"                 /* length 18 */
    "\x00\x03\x00\x02"                 /* protocol 3.2 */
    "user\0" "bob\0"
    "\0";

static const uint8_t fx_ssl[] = "\x00\x00\x00\x08" "\x04\xd2\x16\x2f";
static const uint8_t fx_gssenc[] = "\x00\x00\x00\x08" "\x04\xd2\x16\x30";
static const uint8_t fx_cancel4[] =
    "\x00\x00\x00\x10" "\x04\xd2\x16\x2e" /* length 16, CancelRequest */
    "\x00\x00\x10\x92"                     /* pid 4242 */
    "\xde\xad\xbe\xef";                    /* key */
static const uint8_t fx_cancel32[] =
    "\x00\x00\x00\x2c" "\x04\xd2\x16\x2e"  /* length 44, CancelRequest */
    "\x00\x00\x00\x4d"                      /* pid 77 */
    "\xa0\xa1\xa2\xa3\xa4\xa5\xa6\xa7\xa8\xa9\xaa\xab\xac\xad\xae\xaf"
    "\xb0\xb1\xb2\xb3\xb4\xb5\xb6\xb7\xb8\xb9\xba\xbb\xbc\xbd\xbe\xbf"; /* 32-byte key (3.2) */

static void test_startup_message(void **state)
{
    (void)state;
    struct pg_startup st;
    const uint8_t *base = guard_end() - (sizeof(fx_startup_full) - 1);

    assert_int_equal(startup_check("startup full", FX(fx_startup_full), 10000, 83, 0, &st), 83);
    assert_int_equal(st.kind, PG_STARTUP_MESSAGE);
    assert_int_equal(st.version, PG_PROTO_V3);
    assert_int_equal(st.nparams, 4);
    assert_string_equal(st.params[0].name, "user");
    assert_string_equal(st.params[0].value, "alice");
    assert_string_equal(st.params[1].name, "database");
    assert_string_equal(st.params[1].value, "shop");
    assert_string_equal(st.params[2].name, "options");
    assert_string_equal(st.params[2].value, "-c search_path=app");
    assert_string_equal(st.params[3].name, "application_name");
    assert_string_equal(st.params[3].value, "psql");
    assert_string_equal(st.user, "alice");
    assert_string_equal(st.database, "shop");
    /* The views point into the input buffer, at the right bytes. */
    assert_ptr_equal(st.params[0].name, base + 8);
    assert_ptr_equal(st.user, base + 13);
    assert_ptr_equal(st.database, base + 28);

    assert_int_equal(startup_check("startup user only", FX(fx_startup_user_only), 10000, 18, 0, &st),
                     18);
    assert_int_equal(st.kind, PG_STARTUP_MESSAGE);
    assert_int_equal(st.version, 0x00030002);
    assert_int_equal(st.nparams, 1);
    assert_string_equal(st.user, "bob");
    assert_null(st.database);

    /* No user, or an empty one, decodes (user NULL or ""): the server checks that after the
     * layout and after NegotiateProtocolVersion, and so does the session. */
    static const uint8_t no_user[] = "\x00\x00\x00\x17" "\x00\x03\x00\x00" "database\0" "shop\0" "\0";
    assert_int_equal(startup_check("missing user", FX(no_user), 10000, 23, 0, &st), 23);
    assert_null(st.user);
    assert_string_equal(st.database, "shop");
    static const uint8_t empty_user[] = "\x00\x00\x00\x0f" "\x00\x03\x00\x00" "user\0" "\0" "\0";
    assert_int_equal(startup_check("empty user", FX(empty_user), 10000, 15, 0, &st), 15);
    assert_string_equal(st.user, "");

    /* A protocol 2.0 header is judged once the whole packet is in (the server reads it all
     * first): a prefix waits. */
    struct pg_startup tmp;
    assert_int_equal(pg_fe_parse_startup(guard_at(FX("\x00\x00\x01\x28" "\x00\x02\x00\x00")), 8, 10000,
                                         &tmp, NULL), PG_NEED_MORE);

    /* An empty value is a value (options ''). */
    static const uint8_t empty_value[] = "\x00\x00\x00\x19" "\x00\x03\x00\x00"
                                         "user\0" "u\0" "options\0" "\0" "\0";
    assert_int_equal(startup_check("empty value", FX(empty_value), 10000, 25, 0, &st), 25);
    assert_int_equal(st.nparams, 2);
    assert_string_equal(st.params[1].name, "options");
    assert_string_equal(st.params[1].value, "");
}

static void test_startup_requests(void **state)
{
    (void)state;
    struct pg_startup st;

    memset(&st, 0x5a, sizeof(st));
    assert_int_equal(startup_check("ssl", FX(fx_ssl), 10000, 8, 0, &st), 8);
    assert_int_equal(st.kind, PG_STARTUP_SSL);
    assert_int_equal(st.nparams, 0);

    memset(&st, 0x5a, sizeof(st));
    assert_int_equal(startup_check("gssenc", FX(fx_gssenc), 10000, 8, 0, &st), 8);
    assert_int_equal(st.kind, PG_STARTUP_GSSENC);
    assert_int_equal(st.nparams, 0);

    memset(&st, 0x5a, sizeof(st));
    assert_int_equal(startup_check("cancel 4", FX(fx_cancel4), 10000, 16, 0, &st), 16);
    assert_int_equal(st.kind, PG_STARTUP_CANCEL);
    assert_int_equal(st.cancel_pid, 4242);
    assert_int_equal(st.cancel_key_len, 4);
    assert_memory_equal(st.cancel_key, "\xde\xad\xbe\xef", 4);
    assert_ptr_equal(st.cancel_key, guard_end() - 4);
    assert_int_equal(st.nparams, 0);

    memset(&st, 0x5a, sizeof(st));
    assert_int_equal(startup_check("cancel 32", FX(fx_cancel32), 10000, 44, 0, &st), 44);
    assert_int_equal(st.kind, PG_STARTUP_CANCEL);
    assert_int_equal(st.cancel_pid, 77);
    assert_int_equal(st.cancel_key_len, 32);
    assert_memory_equal(st.cancel_key, fx_cancel32 + 12, 32);

    /* PostgreSQL reads an SSLRequest or GSSENCRequest of any valid length and looks only at
     * its code: so does the decoder, consuming the whole packet. */
    memset(&st, 0x5a, sizeof(st));
    assert_int_equal(startup_check("ssl length 9", FX("\x00\x00\x00\x09" "\x04\xd2\x16\x2f" "\x00"),
                                   10000, 9, 0, &st), 9);
    assert_int_equal(st.kind, PG_STARTUP_SSL);
    memset(&st, 0x5a, sizeof(st));
    assert_int_equal(startup_check("gssenc length 12",
                                   FX("\x00\x00\x00\x0c" "\x04\xd2\x16\x30" "\x00\x00\x00\x00"),
                                   10000, 12, 0, &st), 12);
    assert_int_equal(st.kind, PG_STARTUP_GSSENC);
    /* ... but not one over the length limit. */
    assert_int_equal(startup_check("ssl length 10001", FX("\x00\x00\x27\x11" "\x04\xd2\x16\x2f"),
                                   10000, PG_E_TOO_LARGE, 0, &st), PG_E_TOO_LARGE);

    /* The longest key 3.2 allows (256 bytes) is accepted; one more byte is not. */
    uint8_t big[8 + 4 + 257];
    memset(big, 0x11, sizeof(big));
    pg_put_u32(big, 268);
    pg_put_u32(big + 4, PG_CODE_CANCEL);
    assert_int_equal(startup_check("cancel 256", big, 268, 10000, 268, 0, &st), 268);
    assert_int_equal(st.cancel_key_len, 256);
    pg_put_u32(big, 269);
    assert_int_equal(startup_check("cancel 257", big, 269, 10000, PG_E_LENGTH, 0, &st), PG_E_LENGTH);
}

struct startup_bad {
    const char *name;
    const uint8_t *bytes;
    size_t len;
    int rc;
    size_t err_off;
};

static void test_startup_bad(void **state)
{
    (void)state;
    static const struct startup_bad cases[] = {
        {"length 0", FX("\x00\x00\x00\x00"), PG_E_LENGTH, 0},
        {"length 7", FX("\x00\x00\x00\x07" "\x00\x03\x00\x00"), PG_E_LENGTH, 0},
        {"length -1", FX("\xff\xff\xff\xff" "\x00\x03\x00\x00" "user\0" "u\0" "\0"), PG_E_LENGTH, 0},
        {"length INT_MIN", FX("\x80\x00\x00\x00" "\x00\x03\x00\x00"), PG_E_LENGTH, 0},
        {"length over max", FX("\x00\x00\x27\x11" "\x00\x03\x00\x00" "user\0" "u\0"), PG_E_TOO_LARGE, 0},
        {"cancel 3-byte key", FX("\x00\x00\x00\x0f" "\x04\xd2\x16\x2e" "\x00\x00\x00\x01" "abc"),
         PG_E_LENGTH, 0},
        {"cancel no pid", FX("\x00\x00\x00\x08" "\x04\xd2\x16\x2e"), PG_E_LENGTH, 0},
        {"protocol 4.0", FX("\x00\x00\x00\x12" "\x00\x04\x00\x00" "user\0" "bob\0" "\0"),
         PG_E_VERSION, 4},
        {"cancel without a key", FX("\x00\x00\x00\x0c" "\x04\xd2\x16\x2e" "\x00\x00\x00\x01"),
         PG_E_LENGTH, 0},
        {"unknown request 1234.5681", FX("\x00\x00\x00\x08" "\x04\xd2\x16\x31"), PG_E_VERSION, 4},
        {"no parameters at all", FX("\x00\x00\x00\x08" "\x00\x03\x00\x00"), PG_E_MALFORMED, 8},
        {"params not NUL-terminated", FX("\x00\x00\x00\x10" "\x00\x03\x00\x00" "user\0" "bob"),
         PG_E_MALFORMED, 8},
        {"missing final NUL", FX("\x00\x00\x00\x11" "\x00\x03\x00\x00" "user\0" "bob\0"),
         PG_E_MALFORMED, 17},
        {"name without value",
         FX("\x00\x00\x00\x1a" "\x00\x03\x00\x00" "user\0" "bob\0" "database\0"), PG_E_MALFORMED, 17},
        {"empty name before the end",
         FX("\x00\x00\x00\x15" "\x00\x03\x00\x00" "user\0" "bob\0" "\0" "x\0" "\0"), PG_E_MALFORMED,
         17},
    };
    struct pg_startup st;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct startup_bad *c = &cases[i];
        startup_check(c->name, c->bytes, c->len, 10000, c->rc, c->err_off, &st);
    }
    /* Without err_off the errors are still reported. */
    assert_int_equal(pg_fe_parse_startup(guard_at(FX("\x00\x00\x00\x08" "\x00\x03\x00\x00")), 8, 10000,
                                         &st, NULL),
                     PG_E_MALFORMED);
    assert_int_equal(pg_fe_parse_startup(guard_at(FX("\x00\x00\x00\x08" "\x00\x02\x00\x00")), 8, 10000,
                                         &st, NULL),
                     PG_E_VERSION);
}

/* A valid StartupMessage of exactly total bytes: user=u and an options value as padding. */
static size_t build_padded_startup(uint8_t *buf, size_t total)
{
    static const char head[] = "user\0u\0options\0";
    size_t p = 8;
    memcpy(buf + p, head, sizeof(head) - 1);
    p += sizeof(head) - 1;
    size_t pad = total - p - 2;
    memset(buf + p, 'x', pad);
    p += pad;
    buf[p++] = 0;
    buf[p++] = 0;
    pg_put_u32(buf, (uint32_t)p);
    pg_put_u32(buf + 4, PG_PROTO_V3);
    return p;
}

static void test_startup_max_len(void **state)
{
    (void)state;
    static uint8_t buf[10001];
    struct pg_startup st;

    /* Exactly PostgreSQL's 10,000 is accepted, one more is refused as soon as the length is in. */
    assert_int_equal(build_padded_startup(buf, 10000), 10000);
    assert_int_equal(startup_check("startup 10000", buf, 10000, 10000, 10000, 0, &st), 10000);
    assert_int_equal(st.nparams, 2);
    assert_int_equal(strlen(st.params[1].value), 10000 - 8 - 15 - 2);
    assert_int_equal(build_padded_startup(buf, 10001), 10001);
    startup_check("startup 10001", buf, 10001, 10000, PG_E_TOO_LARGE, 0, &st);

    /* A protocol 2.0 packet (296 bytes, fixed fields) is refused by its version. */
    uint8_t v2[296];
    memset(v2, 0, sizeof(v2));
    pg_put_u32(v2, 296);
    pg_put_u32(v2 + 4, 0x00020000);
    memcpy(v2 + 8, "shop", 4);
    memcpy(v2 + 72, "alice", 5);
    startup_check("protocol 2.0 packet", v2, sizeof(v2), 10000, PG_E_VERSION, 4, &st);
}

static void test_startup_param_count(void **state)
{
    (void)state;
    static uint8_t buf[2048];
    struct pg_startup st;
    /* user=u, then p01..p63 (64 in all), then the list end. */
    size_t p = 8;
    memcpy(buf + p, "user\0u\0", 7);
    p += 7;
    for (int i = 1; i < PG_STARTUP_PARAMS_MAX; i++) {
        p += (size_t)sprintf((char *)buf + p, "p%02d", i) + 1; /* the name and its NUL */
        buf[p++] = 'v';
        buf[p++] = 0;
    }
    size_t at65 = p;
    buf[p++] = 0;
    pg_put_u32(buf, (uint32_t)p);
    pg_put_u32(buf + 4, PG_PROTO_V3);
    assert_int_equal(startup_check("64 params", buf, p, 10000, (int)p, 0, &st), (int)p);
    assert_int_equal(st.nparams, PG_STARTUP_PARAMS_MAX);
    assert_string_equal(st.params[63].name, "p63");

    /* A 65th parameter is malformed, reported at its name. */
    p = at65;
    memcpy(buf + p, "p64\0v\0", 6);
    p += 6;
    buf[p++] = 0;
    pg_put_u32(buf, (uint32_t)p);
    startup_check("65 params", buf, p, 10000, PG_E_LIMIT, at65, &st);
}

/* ---- Backend messages ---- */

enum be_kind { BE_READY = 1, BE_PARAM, BE_KEY, BE_AUTH, BE_ERROR };

struct be_out {
    uint8_t status;
    const char *name, *value;
    uint32_t pid;
    const uint8_t *key;
    size_t key_len;
    uint32_t code;
    struct pg_error_fields err;
};

static int be_decode(enum be_kind kind, const uint8_t *msg, size_t len, struct be_out *o)
{
    switch (kind) {
    case BE_READY: return pg_be_parse_ready(msg, len, &o->status);
    case BE_PARAM: return pg_be_parse_parameter_status(msg, len, &o->name, &o->value);
    case BE_KEY: return pg_be_parse_backend_key(msg, len, &o->pid, &o->key, &o->key_len);
    case BE_AUTH: return pg_be_parse_auth(msg, len, &o->code);
    case BE_ERROR: return pg_be_parse_error(msg, len, &o->err);
    }
    return 1;
}

/* Whether a type byte is the one the decoder reads. */
static int be_type_ok(enum be_kind kind, uint8_t t)
{
    switch (kind) {
    case BE_READY: return t == 'Z';
    case BE_PARAM: return t == 'S';
    case BE_KEY: return t == 'K';
    case BE_AUTH: return t == 'R';
    case BE_ERROR: return t == 'E' || t == 'N';
    }
    return 0;
}

/*
 * The backend decoders take a whole message (the scanner hands them one), so a proper prefix
 * is not PG_NEED_MORE: it is refused, PG_E_MALFORMED while the header is incomplete (or the
 * type is not the decoder's) and PG_E_LENGTH once the length field disagrees with len. Never a
 * success. The same for the message with one byte too many. Leaves *o decoded from the whole
 * fixture at the guard page.
 */
static int be_check(const char *name, enum be_kind kind, const uint8_t *bytes, size_t len,
                    int want_rc, struct be_out *o)
{
    static uint8_t more[GUARD_SPAN];
    struct be_out tmp;
    int typed = len > 0 && be_type_ok(kind, bytes[0]);
    for (size_t k = 0; k <= len; k++) {
        /* k == len is the message with one more byte after it. */
        const uint8_t *p = bytes;
        if (k == len) {
            assert_true(len + 1 <= sizeof(more));
            memcpy(more, bytes, len);
            more[len] = 0;
            p = more;
        }
        size_t n = k == len ? len + 1 : k;
        int rc = be_decode(kind, guard_at(p, n), n, &tmp);
        assert_eq_at(rc, n < PG_HEADER_LEN || !typed ? PG_E_MALFORMED : PG_E_LENGTH, name, n);
    }
    memset(o, 0, sizeof(*o));
    int rc = be_decode(kind, guard_at(bytes, len), len, o);
    assert_eq_at(rc, want_rc, name, len);
    return rc;
}

static void test_be_ready(void **state)
{
    (void)state;
    struct be_out o;
    assert_int_equal(be_check("ready I", BE_READY, FX("Z\x00\x00\x00\x05" "I"), 6, &o), 6);
    assert_int_equal(o.status, 'I');
    assert_int_equal(be_check("ready T", BE_READY, FX("Z\x00\x00\x00\x05" "T"), 6, &o), 6);
    assert_int_equal(o.status, 'T');
    assert_int_equal(be_check("ready E", BE_READY, FX("Z\x00\x00\x00\x05" "E"), 6, &o), 6);
    assert_int_equal(o.status, 'E');

    o.status = 0;
    be_check("ready X", BE_READY, FX("Z\x00\x00\x00\x05" "X"), PG_E_MALFORMED, &o);
    be_check("ready lowercase i", BE_READY, FX("Z\x00\x00\x00\x05" "i"), PG_E_MALFORMED, &o);
    be_check("ready no status", BE_READY, FX("Z\x00\x00\x00\x04"), PG_E_MALFORMED, &o);
    be_check("ready two bytes", BE_READY, FX("Z\x00\x00\x00\x06" "II"), PG_E_MALFORMED, &o);
    be_check("ready length 3", BE_READY, FX("Z\x00\x00\x00\x03" "I"), PG_E_LENGTH, &o);
    be_check("ready wrong type", BE_READY, FX("z\x00\x00\x00\x05" "I"), PG_E_MALFORMED, &o);
    assert_int_equal(o.status, 0);
}

static const uint8_t fx_param_status[] = "S\x00\x00\x00\x18" "server_version\0" "16.2\0";

static void test_be_parameter_status(void **state)
{
    (void)state;
    struct be_out o;
    assert_int_equal(be_check("parameter status", BE_PARAM, FX(fx_param_status), 25, &o), 25);
    assert_string_equal(o.name, "server_version");
    assert_string_equal(o.value, "16.2");
    assert_ptr_equal(o.name, guard_end() - 20);
    assert_ptr_equal(o.value, guard_end() - 5);

    assert_int_equal(be_check("parameter status empty", BE_PARAM, FX("S\x00\x00\x00\x06" "\0\0"), 7,
                              &o),
                     7);
    assert_string_equal(o.name, "");
    assert_string_equal(o.value, "");

    be_check("parameter status value not terminated", BE_PARAM,
             FX("S\x00\x00\x00\x0e" "TimeZone\0" "U"), PG_E_MALFORMED, &o);
    be_check("parameter status name only", BE_PARAM, FX("S\x00\x00\x00\x0d" "TimeZone\0"),
             PG_E_MALFORMED, &o);
    be_check("parameter status no body", BE_PARAM, FX("S\x00\x00\x00\x04"), PG_E_MALFORMED, &o);
    be_check("parameter status trailing byte", BE_PARAM, FX("S\x00\x00\x00\x09" "a\0" "b\0" "c"),
             PG_E_MALFORMED, &o);
    be_check("parameter status wrong type", BE_PARAM, FX("s\x00\x00\x00\x08" "a\0" "b\0"),
             PG_E_MALFORMED, &o);
}

static const uint8_t fx_bkey4[] = "K\x00\x00\x00\x0c" "\x00\x00\x10\x92" "\xde\xad\xbe\xef";

static void test_be_backend_key(void **state)
{
    (void)state;
    struct be_out o;
    assert_int_equal(be_check("backend key 4", BE_KEY, FX(fx_bkey4), 13, &o), 13);
    assert_int_equal(o.pid, 4242);
    assert_int_equal(o.key_len, 4);
    assert_memory_equal(o.key, "\xde\xad\xbe\xef", 4);
    assert_ptr_equal(o.key, guard_end() - 4);

    uint8_t m[5 + 4 + 257];
    memset(m, 0x22, sizeof(m));
    m[0] = 'K';
    pg_put_u32(m + 5, 77);
    pg_put_u32(m + 1, 4 + 4 + 32);
    assert_int_equal(be_check("backend key 32", BE_KEY, m, 41, 41, &o), 41);
    assert_int_equal(o.pid, 77);
    assert_int_equal(o.key_len, 32);
    pg_put_u32(m + 1, 4 + 4 + 256);
    assert_int_equal(be_check("backend key 256", BE_KEY, m, 265, 265, &o), 265);
    assert_int_equal(o.key_len, 256);
    pg_put_u32(m + 1, 4 + 4 + 257);
    be_check("backend key 257", BE_KEY, m, 266, PG_E_MALFORMED, &o);

    be_check("backend key 3", BE_KEY, FX("K\x00\x00\x00\x0b" "\x00\x00\x10\x92" "\xde\xad\xbe"),
             PG_E_MALFORMED, &o);
    be_check("backend key none", BE_KEY, FX("K\x00\x00\x00\x08" "\x00\x00\x10\x92"),
             PG_E_MALFORMED, &o);
    be_check("backend key wrong type", BE_KEY,
             FX("k\x00\x00\x00\x0c" "\x00\x00\x10\x92" "\xde\xad\xbe\xef"), PG_E_MALFORMED, &o);
}

static void test_be_auth(void **state)
{
    (void)state;
    struct be_out o;
    static const struct {
        const char *name;
        const uint8_t *bytes;
        size_t len;
        uint32_t code;
    } ok[] = {
        {"auth ok", FX("R\x00\x00\x00\x08" "\x00\x00\x00\x00"), 0},
        {"auth cleartext", FX("R\x00\x00\x00\x08" "\x00\x00\x00\x03"), 3},
        {"auth md5", FX("R\x00\x00\x00\x0c" "\x00\x00\x00\x05" "\x01\x02\x03\x04"), 5},
        {"auth sasl", FX("R\x00\x00\x00\x17" "\x00\x00\x00\x0a" "SCRAM-SHA-256\0" "\0"), 10},
        {"auth sasl continue", FX("R\x00\x00\x00\x1f" "\x00\x00\x00\x0b" "r=abc,s=c2FsdA==,i=4096"), 11},
        {"auth sasl final", FX("R\x00\x00\x00\x16" "\x00\x00\x00\x0c" "v=c2lnbmF0dXJl"), 12},
        {"auth huge code", FX("R\x00\x00\x00\x08" "\xff\xff\xff\xfe"), 0xfffffffeu},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        o.code = 0x12345678;
        assert_eq_at(be_check(ok[i].name, BE_AUTH, ok[i].bytes, ok[i].len, (int)ok[i].len, &o),
                     ok[i].len, ok[i].name, ok[i].len);
        assert_eq_at(o.code, ok[i].code, ok[i].name, ok[i].len);
    }
    be_check("auth short code", BE_AUTH, FX("R\x00\x00\x00\x07" "\x00\x00\x00"), PG_E_MALFORMED, &o);
    be_check("auth no code", BE_AUTH, FX("R\x00\x00\x00\x04"), PG_E_MALFORMED, &o);
    be_check("auth wrong type", BE_AUTH, FX("E\x00\x00\x00\x08" "\x00\x00\x00\x00"), PG_E_MALFORMED,
             &o);
}

static const uint8_t fx_err_full[] =
    "E\x00\x00\x00\x46"
    "SERROR\0" "VERROR\0" "C42P01\0" "Mrelation \"t\" does not exist\0" "Dno detail\0" "P15\0"
    "\0";
static const uint8_t fx_err_nostate[] = "E\x00\x00\x00\x11" "SFATAL\0" "Mbye\0" "\0";
static const uint8_t fx_notice[] =
    "N\x00\x00\x00\x23" "SNOTICE\0" "VNOTICE\0" "C00000\0" "Mhello\0" "\0";

static void test_be_error(void **state)
{
    (void)state;
    struct be_out o;
    assert_int_equal(be_check("error full", BE_ERROR, FX(fx_err_full), 71, &o), 71);
    assert_string_equal(o.err.severity, "ERROR");
    assert_string_equal(o.err.sqlstate, "42P01");
    assert_string_equal(o.err.message, "relation \"t\" does not exist");
    assert_string_equal(o.err.detail, "no detail");
    assert_ptr_equal(o.err.sqlstate, guard_end() - 71 + 20);

    /* Without 'V' the localized 'S' stands in; without 'C' there is no SQLSTATE. */
    assert_int_equal(be_check("error no sqlstate", BE_ERROR, FX(fx_err_nostate), 18, &o), 18);
    assert_string_equal(o.err.severity, "FATAL");
    assert_null(o.err.sqlstate);
    assert_string_equal(o.err.message, "bye");
    assert_null(o.err.detail);

    /* 'V' wins over 'S' whatever their order. */
    assert_int_equal(be_check("error V before S", BE_ERROR,
                              FX("E\x00\x00\x00\x14" "VERROR\0" "SFEHLER\0" "\0"), 21, &o),
                     21);
    assert_string_equal(o.err.severity, "ERROR");

    assert_int_equal(be_check("error no fields", BE_ERROR, FX("E\x00\x00\x00\x05" "\0"), 6, &o), 6);
    assert_null(o.err.severity);
    assert_null(o.err.message);

    assert_int_equal(be_check("notice", BE_ERROR, FX(fx_notice), 36, &o), 36);
    assert_string_equal(o.err.severity, "NOTICE");
    assert_string_equal(o.err.sqlstate, "00000");
    assert_string_equal(o.err.message, "hello");

    be_check("error missing final NUL", BE_ERROR, FX("E\x00\x00\x00\x10" "SFATAL\0" "Mbye\0"),
             PG_E_MALFORMED, &o);
    be_check("error value not terminated", BE_ERROR, FX("E\x00\x00\x00\x0f" "SFATAL\0" "Mbye"),
             PG_E_MALFORMED, &o);
    be_check("error empty body", BE_ERROR, FX("E\x00\x00\x00\x04"), PG_E_MALFORMED, &o);
    be_check("error byte after end", BE_ERROR, FX("E\x00\x00\x00\x06" "\0" "x"), PG_E_MALFORMED, &o);
    be_check("notice missing final NUL", BE_ERROR, FX("N\x00\x00\x00\x0c" "SNOTICE\0"),
             PG_E_MALFORMED, &o);
    be_check("error wrong type", BE_ERROR, FX("Z\x00\x00\x00\x05" "\0"), PG_E_MALFORMED, &o);
    be_check("error length 3", BE_ERROR, FX("E\x00\x00\x00\x03" "\0"), PG_E_LENGTH, &o);
}

/*
 * Whole-message decoders return an int, so a message whose length field is 0x7fffffff (2 GiB
 * with its type byte) or "negative" must be refused, not returned as INT_MIN or truncated to 0.
 * The bytes after the header are never read, so a sparse mapping stands in for the message.
 */
static void test_be_huge_lengths(void **state)
{
    (void)state;
    if (sizeof(size_t) < 8)
        skip();
    size_t span = (size_t)1 << 32;
    uint8_t *m = mmap(NULL, span + 16, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED)
        skip();
    uint32_t code = 0;
    memcpy(m, "R\x7f\xff\xff\xff" "\x00\x00\x00\x00", 9);
    assert_int_equal(pg_be_parse_auth(m, (size_t)0x80000000u, &code), PG_E_TOO_LARGE);
    memcpy(m, "R\xff\xff\xff\xff", 5);
    assert_int_equal(pg_be_parse_auth(m, span, &code), PG_E_LENGTH);
    uint32_t pid;
    const uint8_t *key;
    size_t key_len;
    memcpy(m, "K\xff\xff\xff\xff", 5);
    assert_int_equal(pg_be_parse_backend_key(m, span, &pid, &key, &key_len), PG_E_LENGTH);

    /* The scanner must not hand a 2 GiB wanted message over whole either. */
    struct pg_scan s;
    struct pg_scan_item it;
    size_t off = 99;
    pg_scan_init(&s, 1, 0x7fffffffu, UINT32_MAX);
    pg_scan_want(&s, 'D', 1);
    memcpy(m, "D\x7f\xff\xff\xff", 5);
    assert_int_equal(pg_scan_next(&s, m, (size_t)0x80000000u, &it, &off), PG_E_TOO_LARGE);
    assert_int_equal(off, 1);
    /* Passed through, the same message goes in pieces of at most 1 GiB. */
    pg_scan_want(&s, 'D', 0);
    assert_int_equal(pg_scan_next(&s, m, (size_t)0x80000000u, &it, &off), 0x40000000);
    assert_int_equal(it.start, 1);
    assert_int_equal(it.whole, 0);
    assert_int_equal(pg_scan_next(&s, m, (size_t)0x80000000u, &it, &off), 0x40000000);
    assert_int_equal(it.start, 0);
    assert_int_equal(pg_scan_at_boundary(&s), 1);
    munmap(m, span + 16);
}

/* ---- The stream scanner ---- */

static const uint8_t fx_be_stream[] =
    "R\x00\x00\x00\x08" "\x00\x00\x00\x00"                          /*   0 AuthenticationOk */
    "S\x00\x00\x00\x18" "server_version\0" "16.2\0"                 /*   9 ParameterStatus */
    "K\x00\x00\x00\x0c" "\x00\x00\x10\x92" "\xde\xad\xbe\xef"       /*  34 BackendKeyData */
    "Z\x00\x00\x00\x05" "I"                                         /*  47 ReadyForQuery */
    "T\x00\x00\x00\x1a" "\x00\x01" "x\0" "\x00\x00\x00\x00" "\x00\x00"
    "\x00\x00\x00\x17" "\x00\x04" "\xff\xff\xff\xff" "\x00\x00"     /*  53 RowDescription */
    "D\x00\x00\x00\x0b" "\x00\x01" "\x00\x00\x00\x01" "1"           /*  80 DataRow */
    "C\x00\x00\x00\x0d" "SELECT 1\0"                                /*  92 CommandComplete */
    "Z\x00\x00\x00\x05" "I";                                        /* 106 ReadyForQuery */

static const uint8_t fx_fe_stream[] =
    "P\x00\x00\x00\x11" "\0" "SELECT $1\0" "\x00\x00"                          /*  0 Parse */
    "B\x00\x00\x00\x11" "\0" "\0" "\x00\x00" "\x00\x01" "\x00\x00\x00\x01" "7" "\x00\x00" /* 18 */
    "E\x00\x00\x00\x09" "\0" "\x00\x00\x00\x00"                                /* 36 Execute */
    "S\x00\x00\x00\x04"                                                        /* 46 Sync */
    "Q\x00\x00\x00\x0d" "SELECT 1\0"                                           /* 51 Query */
    "X\x00\x00\x00\x04";                                                       /* 65 Terminate */

struct scan_cfg {
    int backend;
    uint32_t max_len;
    uint32_t inspect_max;
    const char *want; /* the wanted type bytes */
};

struct scan_msg {
    uint8_t type;
    size_t start; /* stream offset of the type byte */
    size_t total; /* bytes passed for the message */
    int whole;    /* handed over whole in one piece */
};

struct scan_result {
    struct scan_msg msg[32];
    size_t nmsg;
    int err;       /* 0, or the error that stopped the scan */
    size_t err_at; /* stream offset of the offending byte */
    size_t consumed;
};

static void scan_cfg_apply(const struct scan_cfg *cfg, struct pg_scan *s)
{
    pg_scan_init(s, cfg->backend, cfg->max_len, cfg->inspect_max);
    for (const char *t = cfg->want; *t; t++)
        pg_scan_want(s, (uint8_t)*t, 1);
}

/*
 * Plays the relay: the stream arrives in chunks ending at cuts[0..ncuts) and then at len; bytes
 * the scanner passes are consumed, bytes it answers PG_NEED_MORE for are kept and offered again
 * with the next chunk. Every call sees only the unconsumed bytes, placed at the guard page.
 */
static void scan_feed(const struct scan_cfg *cfg, const uint8_t *stream, size_t len,
                      const size_t *cuts, size_t ncuts, struct scan_result *r)
{
    struct pg_scan s;
    scan_cfg_apply(cfg, &s);
    memset(r, 0, sizeof(*r));
    size_t consumed = 0;
    for (size_t c = 0; c <= ncuts; c++) {
        size_t received = c < ncuts ? cuts[c] : len;
        while (consumed < received) {
            size_t avail = received - consumed;
            struct pg_scan_item it = {0, 0, 0};
            size_t off = SIZE_MAX;
            int rc = pg_scan_next(&s, guard_at(stream + consumed, avail), avail, &it, &off);
            if (rc == PG_NEED_MORE)
                break;
            if (rc < 0) {
                assert_true(off < avail);
                r->err = rc;
                r->err_at = consumed + off;
                r->consumed = consumed;
                return;
            }
            assert_true((size_t)rc <= avail);
            if (it.start) {
                assert_true(r->nmsg < sizeof(r->msg) / sizeof(r->msg[0]));
                struct scan_msg *m = &r->msg[r->nmsg++];
                m->type = it.type;
                m->start = consumed;
                m->total = (size_t)rc;
                m->whole = it.whole;
                if (it.whole)
                    assert_int_equal(rc, pg_get_u32(stream + consumed + 1) + 1);
            } else {
                assert_true(r->nmsg > 0);
                struct scan_msg *m = &r->msg[r->nmsg - 1];
                assert_int_equal(it.type, m->type);
                assert_int_equal(it.whole, 0);
                assert_int_equal(m->start + m->total, consumed);
                m->total += (size_t)rc;
            }
            consumed += (size_t)rc;
            /* Between messages exactly when the current one has gone through entirely. */
            const struct scan_msg *cur = &r->msg[r->nmsg - 1];
            assert_int_equal(pg_scan_at_boundary(&s),
                             cur->total == pg_get_u32(stream + cur->start + 1) + 1);
        }
    }
    r->consumed = consumed;
}

/*
 * Compares a scan with the expected messages. A wanted message must come whole; a passed one
 * is "whole" only when it happened to arrive in one piece, so that flag is not compared.
 */
static void scan_expect(const char *name, size_t split, const struct scan_cfg *cfg,
                        const struct scan_result *r, const struct scan_msg *want, size_t nwant,
                        int want_err, size_t want_err_at, size_t want_consumed)
{
    assert_eq_at(r->nmsg, nwant, name, split);
    for (size_t i = 0; i < nwant; i++) {
        assert_eq_at(r->msg[i].type, want[i].type, name, split);
        assert_eq_at(r->msg[i].start, want[i].start, name, split);
        assert_eq_at(r->msg[i].total, want[i].total, name, split);
        if (strchr(cfg->want, want[i].type))
            assert_eq_at(r->msg[i].whole, 1, name, split);
    }
    assert_eq_at(r->err, want_err, name, split);
    if (want_err)
        assert_eq_at(r->err_at, want_err_at, name, split);
    assert_eq_at(r->consumed, want_consumed, name, split);
}

/* Scans the stream whole, byte by byte, split at every point and at every pair of points. */
static void scan_all_splits(const char *name, const struct scan_cfg *cfg, const uint8_t *stream,
                            size_t len, const struct scan_msg *want, size_t nwant, int want_err,
                            size_t want_err_at, size_t want_consumed)
{
    struct scan_result r;
    scan_feed(cfg, stream, len, NULL, 0, &r);
    scan_expect(name, len, cfg, &r, want, nwant, want_err, want_err_at, want_consumed);

    static size_t cuts[GUARD_SPAN];
    assert_true(len <= GUARD_SPAN);
    for (size_t i = 0; i < len; i++)
        cuts[i] = i + 1;
    scan_feed(cfg, stream, len, cuts, len, &r);
    scan_expect(name, 1, cfg, &r, want, nwant, want_err, want_err_at, want_consumed);

    for (size_t i = 0; i <= len; i++) {
        size_t one[1] = {i};
        scan_feed(cfg, stream, len, one, 1, &r);
        scan_expect(name, i, cfg, &r, want, nwant, want_err, want_err_at, want_consumed);
        for (size_t j = i; j <= len; j++) {
            size_t two[2] = {i, j};
            scan_feed(cfg, stream, len, two, 2, &r);
            scan_expect(name, i * 1000 + j, cfg, &r, want, nwant, want_err, want_err_at,
                        want_consumed);
        }
    }
}

static const struct scan_msg be_stream_msgs[] = {
    {'R', 0, 9, 1},   {'S', 9, 25, 1},  {'K', 34, 13, 1}, {'Z', 47, 6, 1},
    {'T', 53, 27, 0}, {'D', 80, 12, 0}, {'C', 92, 14, 0}, {'Z', 106, 6, 1},
};
#define BE_STREAM_LEN 112

static void test_scan_backend_stream(void **state)
{
    (void)state;
    assert_int_equal(sizeof(fx_be_stream) - 1, BE_STREAM_LEN);
    const struct scan_cfg cfg = {1, 1u << 20, 64, "RSKZE"};
    scan_all_splits("be stream", &cfg, FX(fx_be_stream), be_stream_msgs, 8, 0, 0, BE_STREAM_LEN);

    /* Wanting nothing: the same messages, all passed. */
    const struct scan_cfg none = {1, 1u << 20, 64, ""};
    scan_all_splits("be stream, nothing wanted", &none, FX(fx_be_stream), be_stream_msgs, 8, 0, 0,
                    BE_STREAM_LEN);

    /* Cut inside the last (wanted) ReadyForQuery: it is held back, nothing of it consumed. */
    scan_all_splits("be stream cut in wanted", &cfg, fx_be_stream, BE_STREAM_LEN - 2,
                    be_stream_msgs, 7, 0, 0, 106);
    /* Cut inside CommandComplete (passed): its first 8 bytes go through. */
    static const struct scan_msg cut_c[] = {
        {'R', 0, 9, 1},   {'S', 9, 25, 1},  {'K', 34, 13, 1}, {'Z', 47, 6, 1},
        {'T', 53, 27, 0}, {'D', 80, 12, 0}, {'C', 92, 8, 0},
    };
    scan_all_splits("be stream cut in passed", &cfg, fx_be_stream, 100, cut_c, 7, 0, 0, 100);
    /* Cut inside CommandComplete's header: nothing of it can go yet. */
    scan_all_splits("be stream cut in header", &cfg, fx_be_stream, 95, be_stream_msgs, 6, 0, 0, 92);
}

static void test_scan_frontend_stream(void **state)
{
    (void)state;
    assert_int_equal(sizeof(fx_fe_stream) - 1, 70);
    static const struct scan_msg msgs[] = {
        {'P', 0, 18, 0}, {'B', 18, 18, 0}, {'E', 36, 10, 0},
        {'S', 46, 5, 0}, {'Q', 51, 14, 1}, {'X', 65, 5, 1},
    };
    const struct scan_cfg cfg = {0, 1u << 20, 1024, "QXp"};
    scan_all_splits("fe stream", &cfg, FX(fx_fe_stream), msgs, 6, 0, 0, 70);

    /* The same bytes read as a backend stream: 'P' is not a backend type. */
    const struct scan_cfg be = {1, 1u << 20, 1024, ""};
    scan_all_splits("fe stream as backend", &be, FX(fx_fe_stream), NULL, 0, PG_E_UNKNOWN_TYPE, 0, 0);
}

/* The backend stream followed by one bad message, for the error cases. */
static void scan_error_case(const char *name, const struct scan_cfg *cfg, const uint8_t *tail,
                            size_t tail_len, int want_err, size_t want_err_at)
{
    uint8_t buf[BE_STREAM_LEN + 64];
    assert_true(tail_len <= 64);
    memcpy(buf, fx_be_stream, BE_STREAM_LEN);
    memcpy(buf + BE_STREAM_LEN, tail, tail_len);
    scan_all_splits(name, cfg, buf, BE_STREAM_LEN + tail_len, be_stream_msgs, 8, want_err,
                    want_err_at, BE_STREAM_LEN);
}

static void test_scan_errors(void **state)
{
    (void)state;
    const struct scan_cfg cfg = {1, 1000, 64, "RSKZE"};
    scan_error_case("unknown type Q", &cfg, FX("Q\x00\x00\x00\x04" "more"), PG_E_UNKNOWN_TYPE,
                    BE_STREAM_LEN);
    scan_error_case("unknown type, negative length", &cfg, FX("Q\xff\xff\xff\xff"),
                    PG_E_UNKNOWN_TYPE, BE_STREAM_LEN);
    scan_error_case("unknown type NUL", &cfg, FX("\x00\x00\x00\x00\x04"), PG_E_UNKNOWN_TYPE,
                    BE_STREAM_LEN);
    scan_error_case("negative length", &cfg, FX("D\xff\xff\xff\xff" "xx"), PG_E_LENGTH,
                    BE_STREAM_LEN + 1);
    scan_error_case("length 3", &cfg, FX("D\x00\x00\x00\x03"), PG_E_LENGTH, BE_STREAM_LEN + 1);
    scan_error_case("length over max", &cfg, FX("D\x00\x00\x03\xe9" "xx"), PG_E_TOO_LARGE,
                    BE_STREAM_LEN + 1);
    /* A wanted ErrorResponse of 71 bytes over inspect_max 64; refused once its header is in. */
    uint8_t tail[sizeof(fx_err_full)];
    memcpy(tail, fx_err_full, sizeof(fx_err_full) - 1);
    scan_error_case("wanted over inspect_max", &cfg, tail, 10, PG_E_TOO_LARGE, BE_STREAM_LEN + 1);

    /* The limits are inclusive: length 1000 passes at max 1000, a 64-byte wanted one is whole. */
    struct pg_scan s;
    struct pg_scan_item it;
    size_t off;
    pg_scan_init(&s, 1, 1000, 64);
    assert_int_equal(pg_scan_next(&s, guard_at(FX("D\x00\x00\x03\xe8")), 5, &it, &off), 5);
    assert_int_equal(it.start, 1);
    assert_int_equal(it.whole, 0);
    assert_int_equal(s.body_left, 996);
    uint8_t m64[64];
    memset(m64, 'x', sizeof(m64));
    memcpy(m64, "N\x00\x00\x00\x3f", 5);
    pg_scan_init(&s, 1, 1000, 64);
    pg_scan_want(&s, 'N', 1);
    assert_int_equal(pg_scan_next(&s, guard_at(m64, 64), 64, &it, &off), 64);
    assert_int_equal(it.whole, 1);
    m64[4] = 0x40;
    off = 99;
    assert_int_equal(pg_scan_next(&s, guard_at(m64, 64), 64, &it, &off), PG_E_TOO_LARGE);
    assert_int_equal(off, 1);
    /* Unwanted again, the 65-byte message passes in pieces. */
    pg_scan_want(&s, 'N', 0);
    assert_int_equal(pg_scan_next(&s, guard_at(m64, 64), 64, &it, &off), 64);
    assert_int_equal(it.whole, 0);
    assert_int_equal(pg_scan_at_boundary(&s), 0);
    assert_int_equal(pg_scan_next(&s, guard_at(FX("x")), 1, &it, &off), 1);
    assert_int_equal(it.start, 0);
    assert_int_equal(it.type, 'N');
    assert_int_equal(pg_scan_at_boundary(&s), 1);

    /* Empty input and a partial header after a known type byte are PG_NEED_MORE. */
    pg_scan_init(&s, 0, 1000, 64);
    assert_int_equal(pg_scan_next(&s, guard_at(NULL, 0), 0, &it, &off), PG_NEED_MORE);
    assert_int_equal(pg_scan_next(&s, guard_at(FX("Q\xff\xff\xff")), 4, &it, &off), PG_NEED_MORE);
    /* The type byte is judged first: alone, or before a bad length, it is the error. */
    off = 99;
    assert_int_equal(pg_scan_next(&s, guard_at(FX("\xff")), 1, &it, &off), PG_E_UNKNOWN_TYPE);
    assert_int_equal(off, 0);
    off = 99;
    assert_int_equal(pg_scan_next(&s, guard_at(FX("Z\xff\xff\xff\xff")), 5, &it, &off),
                     PG_E_UNKNOWN_TYPE);
    assert_int_equal(off, 0);
    /* Without err_off the errors are still reported. */
    assert_int_equal(pg_scan_next(&s, guard_at(FX("Z\x00\x00\x00\x05")), 5, &it, NULL),
                     PG_E_UNKNOWN_TYPE);
}

/* A 3000-byte DataRow body that is not wanted goes through in pieces as the chunks come. */
static void test_scan_large_passthrough(void **state)
{
    (void)state;
    static uint8_t stream[3005 + 6];
    memset(stream, 'Z', sizeof(stream)); /* body bytes that look like headers */
    memcpy(stream, "D\x00\x00\x0b\xbc", 5); /* length 3004 */
    memcpy(stream + 3005, "Z\x00\x00\x00\x05" "T", 6);

    struct pg_scan s;
    struct pg_scan_item it;
    size_t off;
    pg_scan_init(&s, 1, 1u << 20, 64);
    pg_scan_want(&s, 'Z', 1);

    size_t pos = 0, pieces = 0;
    while (pos < 3000) {
        int rc = pg_scan_next(&s, guard_at(stream + pos, 100), 100, &it, &off);
        assert_eq_at(rc, 100, "large passthrough", pos);
        assert_eq_at(it.type, 'D', "large passthrough", pos);
        assert_eq_at(it.start, pos == 0, "large passthrough", pos);
        assert_eq_at(it.whole, 0, "large passthrough", pos);
        assert_eq_at(pg_scan_at_boundary(&s), 0, "large passthrough", pos);
        pos += 100;
        pieces++;
    }
    assert_int_equal(pieces, 30);
    assert_int_equal(s.body_left, 5);
    /* The last chunk holds the end of the DataRow and the whole ReadyForQuery. */
    int rc = pg_scan_next(&s, guard_at(stream + pos, 11), 11, &it, &off);
    assert_int_equal(rc, 5);
    assert_int_equal(it.type, 'D');
    assert_int_equal(it.start, 0);
    assert_int_equal(pg_scan_at_boundary(&s), 1);
    rc = pg_scan_next(&s, guard_at(stream + pos + 5, 6), 6, &it, &off);
    assert_int_equal(rc, 6);
    assert_int_equal(it.type, 'Z');
    assert_int_equal(it.start, 1);
    assert_int_equal(it.whole, 1);

    /* The whole stream in one buffer: the DataRow is one whole piece, then the ReadyForQuery. */
    const struct scan_cfg cfg = {1, 1u << 20, 64, "Z"};
    struct scan_result r;
    scan_feed(&cfg, stream, sizeof(stream), NULL, 0, &r);
    assert_int_equal(r.nmsg, 2);
    assert_int_equal(r.msg[0].total, 3005);
    assert_int_equal(r.msg[0].whole, 1);
    assert_int_equal(r.msg[1].start, 3005);
    assert_int_equal(r.consumed, sizeof(stream));
    /* And in 7-byte chunks: same messages. */
    static size_t cuts[sizeof(stream) / 7 + 1];
    size_t n = 0;
    for (size_t c = 7; c < sizeof(stream); c += 7)
        cuts[n++] = c;
    scan_feed(&cfg, stream, sizeof(stream), cuts, n, &r);
    assert_int_equal(r.nmsg, 2);
    assert_int_equal(r.msg[0].total, 3005);
    assert_int_equal(r.msg[0].whole, 0);
    assert_int_equal(r.msg[1].total, 6);
    assert_int_equal(r.msg[1].whole, 1);
    assert_int_equal(r.consumed, sizeof(stream));
}

/* ---- Encoders ---- */

/* Every capacity below need fails with PG_E_SPACE and writes nothing (the caller's out is used). */
#define EXPECT_SPACE_BELOW(need, call_with_out_cap)                                              \
    do {                                                                                         \
        for (size_t cap = 0; cap < (size_t)(need); cap++) {                                      \
            out = guard_out(cap);                                                                \
            assert_eq_at((call_with_out_cap), PG_E_SPACE, #call_with_out_cap, cap);              \
            for (size_t b = 0; b < cap; b++)                                                     \
                assert_eq_at(out[b], 0xA5, "untouched output", b);                               \
        }                                                                                        \
    } while (0)

static const uint8_t fx_err_write[] =
    "E\x00\x00\x00\x4f" "SFATAL\0" "VFATAL\0" "C57P01\0"
    "Mterminating connection due to administrator command\0" "\0";

/* The old unframed error form, byte for byte as PostgreSQL 15 sends it to a 2.0 client. */
static void test_write_error_v2(void **state)
{
    (void)state;
    static const char want[] =
        "EFATAL:  unsupported frontend protocol 2.0: server supports 3.0 to 3.0\n";
    const char *msg = "unsupported frontend protocol 2.0: server supports 3.0 to 3.0";
    size_t need = sizeof(want); /* with the final NUL */
    uint8_t *out = guard_out(need);
    assert_int_equal(pg_be_write_error_v2(out, need, "FATAL", msg), (int)need);
    assert_memory_equal(out, want, need);
    EXPECT_SPACE_BELOW(need, pg_be_write_error_v2(out, cap, "FATAL", msg));
}

static void test_write_error(void **state)
{
    (void)state;
    const char *msg = "terminating connection due to administrator command";
    uint8_t *out = guard_out(80);
    assert_int_equal(pg_be_write_error(out, 80, "FATAL", "57P01", msg), 80);
    assert_memory_equal(out, fx_err_write, 80);
    struct pg_error_fields f;
    assert_int_equal(pg_be_parse_error(out, 80, &f), 80);
    assert_string_equal(f.severity, "FATAL");
    assert_string_equal(f.sqlstate, "57P01");
    assert_string_equal(f.message, msg);
    assert_null(f.detail);
    EXPECT_SPACE_BELOW(80, pg_be_write_error(out, cap, "FATAL", "57P01", msg));

    /* Round trip through the scanner as well: a wanted 'E' of 80 bytes. */
    struct pg_scan s;
    struct pg_scan_item it;
    pg_scan_init(&s, 1, 1000, 80);
    pg_scan_want(&s, 'E', 1);
    out = guard_out(200);
    int n = pg_be_write_error(out + 120, 80, "ERROR", "", "");
    assert_int_equal(n, 5 + 1 + 7 + 7 + 2 + 2);
    assert_int_equal(pg_scan_next(&s, out + 120, (size_t)n, &it, NULL), n);
    assert_int_equal(it.whole, 1);
    assert_int_equal(pg_be_parse_error(out + 120, (size_t)n, &f), n);
    assert_string_equal(f.sqlstate, "");
    assert_string_equal(f.message, "");
}

static void test_write_backend_key(void **state)
{
    (void)state;
    uint8_t *out = guard_out(13);
    assert_int_equal(pg_be_write_backend_key(out, 13, 4242, 0xdeadbeef), 13);
    assert_memory_equal(out, fx_bkey4, 13);
    uint32_t pid = 0;
    const uint8_t *key = NULL;
    size_t key_len = 0;
    assert_int_equal(pg_be_parse_backend_key(out, 13, &pid, &key, &key_len), 13);
    assert_int_equal(pid, 4242);
    assert_int_equal(key_len, 4);
    assert_int_equal(pg_get_u32(key), 0xdeadbeef);
    EXPECT_SPACE_BELOW(13, pg_be_write_backend_key(out, cap, 4242, 0xdeadbeef));
}

static void test_write_ready(void **state)
{
    (void)state;
    static const uint8_t st[] = "ITE";
    for (int i = 0; i < 3; i++) {
        uint8_t *out = guard_out(6);
        assert_int_equal(pg_be_write_ready(out, 6, st[i]), 6);
        assert_memory_equal(out, "Z\x00\x00\x00\x05", 5);
        assert_int_equal(out[5], st[i]);
        uint8_t got = 0;
        assert_int_equal(pg_be_parse_ready(out, 6, &got), 6);
        assert_int_equal(got, st[i]);
    }
    uint8_t *out = NULL;
    EXPECT_SPACE_BELOW(6, pg_be_write_ready(out, cap, 'I'));
}

static void test_write_cancel(void **state)
{
    (void)state;
    struct pg_startup st;
    uint8_t *out = guard_out(16);
    assert_int_equal(pg_fe_write_cancel(out, 16, 4242, (const uint8_t *)"\xde\xad\xbe\xef", 4), 16);
    assert_memory_equal(out, fx_cancel4, 16);
    assert_int_equal(pg_fe_parse_startup(out, 16, 10000, &st, NULL), 16);
    assert_int_equal(st.kind, PG_STARTUP_CANCEL);
    assert_int_equal(st.cancel_pid, 4242);
    assert_int_equal(st.cancel_key_len, 4);
    EXPECT_SPACE_BELOW(16, pg_fe_write_cancel(out, cap, 4242, (const uint8_t *)"\xde\xad\xbe\xef", 4));

    out = guard_out(44);
    assert_int_equal(pg_fe_write_cancel(out, 44, 77, fx_cancel32 + 12, 32), 44);
    assert_memory_equal(out, fx_cancel32, 44);
    assert_int_equal(pg_fe_parse_startup(out, 44, 10000, &st, NULL), 44);
    assert_int_equal(st.cancel_pid, 77);
    assert_int_equal(st.cancel_key_len, 32);
    assert_memory_equal(st.cancel_key, fx_cancel32 + 12, 32);
    EXPECT_SPACE_BELOW(44, pg_fe_write_cancel(out, cap, 77, fx_cancel32 + 12, 32));

    static uint8_t key[257];
    memset(key, 0x33, sizeof(key));
    out = guard_out(300);
    assert_int_equal(pg_fe_write_cancel(out, 300, 1, key, 256), 268);
    assert_int_equal(pg_fe_parse_startup(out, 268, 10000, &st, NULL), 268);
    assert_int_equal(st.cancel_key_len, 256);
    /* A key longer than 3.2 allows is refused, however large the buffer. */
    assert_int_equal(pg_fe_write_cancel(out, 300, 1, key, 257), PG_E_SPACE);
}

static void test_write_startup(void **state)
{
    (void)state;
    const struct pg_param params[] = {
        {"user", "alice"},
        {"database", "shop"},
        {"options", "-c search_path=app"},
        {"application_name", "psql"},
    };
    uint8_t *out = guard_out(83);
    assert_int_equal(pg_fe_write_startup(out, 83, PG_PROTO_V3, params, 4), 83);
    assert_memory_equal(out, fx_startup_full, 83);
    struct pg_startup st;
    assert_int_equal(pg_fe_parse_startup(out, 83, 10000, &st, NULL), 83);
    assert_int_equal(st.kind, PG_STARTUP_MESSAGE);
    assert_int_equal(st.version, PG_PROTO_V3);
    assert_int_equal(st.nparams, 4);
    for (size_t i = 0; i < 4; i++) {
        assert_string_equal(st.params[i].name, params[i].name);
        assert_string_equal(st.params[i].value, params[i].value);
    }
    assert_string_equal(st.user, "alice");
    assert_string_equal(st.database, "shop");
    EXPECT_SPACE_BELOW(83, pg_fe_write_startup(out, cap, PG_PROTO_V3, params, 4));

    /* No parameters: a 9-byte packet with a well-formed (empty) list. It decodes, without a
     * user: refusing that (28000) is the session's part, as it is the server's. */
    out = guard_out(9);
    assert_int_equal(pg_fe_write_startup(out, 9, PG_PROTO_V3, NULL, 0), 9);
    assert_memory_equal(out, "\x00\x00\x00\x09" "\x00\x03\x00\x00" "\x00", 9);
    assert_int_equal(pg_fe_parse_startup(out, 9, 10000, &st, NULL), 9);
    assert_int_equal(st.nparams, 0);
    assert_null(st.user);
}

static void test_write_query_terminate(void **state)
{
    (void)state;
    uint8_t *out = guard_out(14);
    assert_int_equal(pg_fe_write_query(out, 14, "SELECT 1"), 14);
    assert_memory_equal(out, "Q\x00\x00\x00\x0d" "SELECT 1\0", 14);
    struct pg_scan s;
    struct pg_scan_item it;
    pg_scan_init(&s, 0, 1000, 64);
    pg_scan_want(&s, 'Q', 1);
    assert_int_equal(pg_scan_next(&s, out, 14, &it, NULL), 14);
    assert_int_equal(it.type, 'Q');
    assert_int_equal(it.whole, 1);
    struct pg_header h;
    assert_int_equal(pg_header_read(out, 14, 1000, &h, NULL), PG_HEADER_LEN);
    assert_int_equal(h.len, 13);
    assert_string_equal((const char *)out + PG_HEADER_LEN, "SELECT 1");
    EXPECT_SPACE_BELOW(14, pg_fe_write_query(out, cap, "SELECT 1"));

    out = guard_out(6);
    assert_int_equal(pg_fe_write_query(out, 6, ""), 6);
    assert_memory_equal(out, "Q\x00\x00\x00\x05" "\0", 6);

    out = guard_out(5);
    assert_int_equal(pg_fe_write_terminate(out, 5), 5);
    assert_memory_equal(out, "X\x00\x00\x00\x04", 5);
    pg_scan_want(&s, 'X', 1);
    assert_int_equal(pg_scan_next(&s, out, 5, &it, NULL), 5);
    assert_int_equal(it.type, 'X');
    assert_int_equal(it.whole, 1);
    EXPECT_SPACE_BELOW(5, pg_fe_write_terminate(out, cap));
}

/* ---- Seed corpora for the fuzz targets ---- */

/*
 * fuzz_pg_scan's input layout (see tests/fuzz/fuzz_pg_scan.c): flags (bit 0 backend, bits 1-2
 * max_len choice), inspect_max / 8, a 32-bit little-endian mask over the direction's type list,
 * a chunk-size count n (low 4 bits), n chunk sizes minus one, then the stream.
 */
static const char scan_fe_types[] = "BCdcfDEHFPpQSX";
static const char scan_be_types[] = "RK23CdcGHWDIEVvnNAtS1sZT";

static int write_file(const char *dir, const char *name, const void *bytes, size_t len)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(bytes, 1, len, f) != len || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

static int write_scan_seed(const char *dir, const char *name, int backend, uint8_t inspect8,
                           const char *want, const uint8_t *chunks, size_t nchunks,
                           const uint8_t *stream, size_t len)
{
    static uint8_t buf[4096];
    const char *types = backend ? scan_be_types : scan_fe_types;
    uint32_t mask = 0;
    for (const char *t = want; *t; t++)
        mask |= 1u << (strchr(types, *t) - types);
    size_t p = 0;
    buf[p++] = (uint8_t)(backend ? 1 : 0);
    buf[p++] = inspect8;
    for (int i = 0; i < 4; i++)
        buf[p++] = (uint8_t)(mask >> (8 * i));
    buf[p++] = (uint8_t)nchunks;
    if (nchunks > 0)
        memcpy(buf + p, chunks, nchunks);
    p += nchunks;
    memcpy(buf + p, stream, len);
    return write_file(dir, name, buf, p + len);
}

static int write_corpus(const char *root)
{
    char dir[4096];
    int rc = 0;
    const char *sub[] = {"startup", "scan", "be_msgs"};
    for (int i = 0; i < 3; i++) {
        snprintf(dir, sizeof(dir), "%s/%s", root, sub[i]);
        if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
            fprintf(stderr, "cannot create %s: %s\n", dir, strerror(errno));
            return 1;
        }
    }

    snprintf(dir, sizeof(dir), "%s/startup", root);
    rc |= write_file(dir, "startup_full", FX(fx_startup_full));
    rc |= write_file(dir, "startup_user_only", FX(fx_startup_user_only));
    rc |= write_file(dir, "ssl", FX(fx_ssl));
    rc |= write_file(dir, "gssenc", FX(fx_gssenc));
    rc |= write_file(dir, "cancel4", FX(fx_cancel4));
    rc |= write_file(dir, "cancel32", FX(fx_cancel32));
    rc |= write_file(dir, "bad_v4", FX("\x00\x00\x00\x12" "\x00\x04\x00\x00" "user\0" "bob\0" "\0"));
    rc |= write_file(dir, "bad_name_no_value",
                     FX("\x00\x00\x00\x1a" "\x00\x03\x00\x00" "user\0" "bob\0" "database\0"));
    rc |= write_file(dir, "bad_no_final_nul", FX("\x00\x00\x00\x11" "\x00\x03\x00\x00" "user\0" "bob\0"));
    rc |= write_file(dir, "bad_negative", FX("\xff\xff\xff\xff" "\x00\x03\x00\x00"));

    snprintf(dir, sizeof(dir), "%s/be_msgs", root);
    rc |= write_file(dir, "ready", FX("Z\x00\x00\x00\x05" "T"));
    rc |= write_file(dir, "parameter_status", FX(fx_param_status));
    rc |= write_file(dir, "backend_key", FX(fx_bkey4));
    rc |= write_file(dir, "auth_ok", FX("R\x00\x00\x00\x08" "\x00\x00\x00\x00"));
    rc |= write_file(dir, "auth_md5", FX("R\x00\x00\x00\x0c" "\x00\x00\x00\x05" "\x01\x02\x03\x04"));
    rc |= write_file(dir, "auth_sasl", FX("R\x00\x00\x00\x17" "\x00\x00\x00\x0a" "SCRAM-SHA-256\0" "\0"));
    rc |= write_file(dir, "error_full", FX(fx_err_full));
    rc |= write_file(dir, "error_nostate", FX(fx_err_nostate));
    rc |= write_file(dir, "error_written", FX(fx_err_write));
    rc |= write_file(dir, "notice", FX(fx_notice));

    snprintf(dir, sizeof(dir), "%s/scan", root);
    rc |= write_scan_seed(dir, "be_whole", 1, 8, "RSKZE", NULL, 0, FX(fx_be_stream));
    rc |= write_scan_seed(dir, "be_chunks", 1, 8, "RSKZE", (const uint8_t *)"\x06\x00\x10", 3,
                          FX(fx_be_stream));
    rc |= write_scan_seed(dir, "be_nothing_wanted", 1, 0, "", (const uint8_t *)"\x02", 1,
                          FX(fx_be_stream));
    rc |= write_scan_seed(dir, "fe_whole", 0, 128, "QXp", NULL, 0, FX(fx_fe_stream));
    rc |= write_scan_seed(dir, "fe_chunks", 0, 2, "QX", (const uint8_t *)"\x00\x04", 2,
                          FX(fx_fe_stream));
    return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--write-corpus") == 0)
        return write_corpus(argv[2]);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(guard_test_traps),
        cmocka_unit_test(test_strerror_and_names),
        cmocka_unit_test(test_header_read),
        cmocka_unit_test(test_startup_message),
        cmocka_unit_test(test_startup_requests),
        cmocka_unit_test(test_startup_bad),
        cmocka_unit_test(test_startup_max_len),
        cmocka_unit_test(test_startup_param_count),
        cmocka_unit_test(test_be_ready),
        cmocka_unit_test(test_be_parameter_status),
        cmocka_unit_test(test_be_backend_key),
        cmocka_unit_test(test_be_auth),
        cmocka_unit_test(test_be_error),
        cmocka_unit_test(test_be_huge_lengths),
        cmocka_unit_test(test_scan_backend_stream),
        cmocka_unit_test(test_scan_frontend_stream),
        cmocka_unit_test(test_scan_errors),
        cmocka_unit_test(test_scan_large_passthrough),
        cmocka_unit_test(test_write_error),
        cmocka_unit_test(test_write_error_v2),
        cmocka_unit_test(test_write_backend_key),
        cmocka_unit_test(test_write_ready),
        cmocka_unit_test(test_write_cancel),
        cmocka_unit_test(test_write_startup),
        cmocka_unit_test(test_write_query_terminate),
    };
    return cmocka_run_group_tests(tests, guard_setup, guard_teardown);
}
