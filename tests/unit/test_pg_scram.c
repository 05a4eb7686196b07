/*
 * Unit tests for the SCRAM-SHA-256 codec (protocol/pg/pg_scram.c).
 *
 * As in test_pg_proto.c, every parser runs on byte fixtures placed so that their last byte sits
 * right before a PROT_NONE page: a read past len crashes the test. Each fixture is parsed whole
 * (exact fields, or the exact error and offset) and also fed as every proper prefix: a SCRAM
 * message arrives whole, so a prefix must answer either an error from the list or, when the
 * prefix happens to be a valid message itself, exactly its own length; never 0 (need more).
 * Encoders write into buffers that end at the guard page, at their exact size and one byte
 * less. The exchange is RFC 7677's test vector; the stored verifier was made by libpq's
 * PQencryptPasswordConn (PostgreSQL's own code) for the password "correct horse battery staple".
 *
 * `test_pg_scram --write-corpus DIR` writes the fixtures as seeds for fuzz_pg_scram into
 * DIR/scram (tests/fuzz/corpus in the source tree), in that target's input format.
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
#include <sys/stat.h>
#include <unistd.h>

#include "protocol/pg/pg_proto.h"
#include "protocol/pg/pg_scram.h"
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

/* A view equals a C string, printing both on failure. */
#define assert_view(v, want)                                                                     \
    do {                                                                                         \
        struct pg_scram_view v_ = (v);                                                           \
        const char *w_ = (want);                                                                 \
        if (v_.len != strlen(w_) || memcmp(v_.ptr, w_, v_.len) != 0)                             \
            fail_msg("%s is \"%.*s\", want \"%s\"", #v, (int)v_.len, v_.ptr, w_);                \
    } while (0)

/* ---- RFC 7677's exchange: user "user", password "pencil" ---- */

#define RFC_CNONCE "rOprNGfwEbeRWgbNEkqO"
#define RFC_NONCE RFC_CNONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define RFC_CLIENT_FIRST "n,,n=user,r=" RFC_CNONCE
#define RFC_SERVER_FIRST "r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
#define RFC_FINAL_NO_PROOF "c=biws,r=" RFC_NONCE
#define RFC_PROOF_B64 "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define RFC_CLIENT_FINAL RFC_FINAL_NO_PROOF ",p=" RFC_PROOF_B64
#define RFC_SERVER_FINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

static const uint8_t rfc_salt[16] = "\x5b\x6d\x99\x68\x9d\x12\x35\x8e\xec\xa0\x4b\x14\x12\x36\xfa\x81";
static const uint8_t rfc_proof[32] =
    "\x74\x7c\xdb\x65\xaa\x56\x22\x4e\x23\x52\x13\x7e\x52\xd7\xbd\xca"
    "\xd6\xa0\xf7\x38\xdf\x30\x78\x2c\xaa\x69\xa2\xcf\xb0\x27\x75\x54";
static const uint8_t rfc_server_sig[32] =
    "\xea\xba\xe2\x4d\x10\x62\xdb\x75\xa9\x45\x1f\xf0\xb6\xea\x7e\x98"
    "\xc8\x54\x65\x49\xff\x74\x1e\x67\x2d\x32\x51\xb2\x39\x7d\xe4\x6e";

/* Made by libpq 15 PQencryptPasswordConn("correct horse battery staple", "alice", "scram-sha-256"). */
#define PQ_VERIFIER                                                                              \
    "SCRAM-SHA-256$4096:nO1uWRXOHCBL74z7hNb5qA==$swSi8GVnppDI5niQO56MIFUn1Rq77yUdJHt6dEvRRzA=:"  \
    "jcEAFLlAbDoZhEprDJYgWgSSeR0oooVLlaZ8mZHtxDo="
static const uint8_t pq_salt[16] = "\x9c\xed\x6e\x59\x15\xce\x1c\x20\x4b\xef\x8c\xfb\x84\xd6\xf9\xa8";
static const uint8_t pq_stored[32] =
    "\xb3\x04\xa2\xf0\x65\x67\xa6\x90\xc8\xe6\x78\x90\x3b\x9e\x8c\x20"
    "\x55\x27\xd5\x1a\xbb\xef\x25\x1d\x24\x7b\x7a\x74\x4b\xd1\x47\x30";
static const uint8_t pq_server[32] =
    "\x8d\xc1\x00\x14\xb9\x40\x6c\x3a\x19\x84\x4a\x6b\x0c\x96\x20\x5a"
    "\x04\x92\x79\x1d\x28\xa2\x85\x4b\x95\xa6\x7c\x99\x91\xed\xc4\x3a";

/* ---- One driver for every parser ---- */

enum parser {
    P_SASL_INITIAL = 0,
    P_CLIENT_FIRST = 1,
    P_SERVER_FIRST = 2,
    P_CLIENT_FINAL = 3,
    P_SERVER_FINAL = 4,
    P_VERIFIER = 5,
    P_AUTH_SASL = 7,
};

union parsed {
    struct pg_scram_sasl_initial si;
    struct pg_scram_client_first cf;
    struct pg_scram_server_first sf;
    struct pg_scram_client_final cfin;
    struct pg_scram_server_final sfin;
    struct pg_scram_verifier ver;
    struct pg_scram_auth_sasl as;
};

/* Parameters of the parsers that take them: the client nonce, the expected nonce, the salt. */
static const char *g_nonce = RFC_CNONCE;     /* server-first: our client nonce */
static const char *g_expected = RFC_NONCE;   /* client-final: NULL for no check */
static uint8_t g_salt[64];
static size_t g_salt_cap = 16;

static int run(enum parser p, const uint8_t *buf, size_t len, union parsed *out, size_t *off)
{
    switch (p) {
    case P_SASL_INITIAL: return pg_scram_fe_parse_sasl_initial(buf, len, &out->si, off);
    case P_CLIENT_FIRST: return pg_scram_fe_parse_client_first(buf, len, &out->cf, off);
    case P_SERVER_FIRST:
        return pg_scram_be_parse_server_first(buf, len, g_nonce, strlen(g_nonce), g_salt,
                                              g_salt_cap, &out->sf, off);
    case P_CLIENT_FINAL:
        return pg_scram_fe_parse_client_final(buf, len, g_expected,
                                              g_expected ? strlen(g_expected) : 0, &out->cfin, off);
    case P_SERVER_FINAL: return pg_scram_be_parse_server_final(buf, len, &out->sfin, off);
    case P_VERIFIER: return pg_scram_parse_verifier(buf, len, &out->ver, off);
    case P_AUTH_SASL: return pg_scram_be_parse_auth_sasl(buf, len, &out->as, off);
    }
    return 0;
}

static int is_scram_error(int rc) { return rc <= PG_SCRAM_E_MALFORMED && rc >= PG_SCRAM_E_SPACE; }

/*
 * Feeds every proper prefix, then the whole fixture. A prefix must answer an error from the
 * list or its own length. The whole must answer want_rc (len for success) and, for an error,
 * set *err_off to want_off. Leaves *out parsed from the whole, with views into the guard area.
 */
static int check(const char *name, enum parser p, const uint8_t *bytes, size_t len, int want_rc,
                 size_t want_off, union parsed *out)
{
    union parsed tmp;
    size_t off;
    for (size_t k = 0; k < len; k++) {
        off = SIZE_MAX;
        int rc = run(p, guard_at(bytes, k), k, &tmp, &off);
        if (rc < 0) {
            if (!is_scram_error(rc))
                fail_msg("%s (fed %zu bytes): %d is not a PG_SCRAM_E_* code", name, k, rc);
            if (off > k && !(rc == PG_SCRAM_E_TOO_LONG))
                fail_msg("%s (fed %zu bytes): error offset %zu is past the input", name, k, off);
        } else {
            assert_eq_at(rc, k, name, k);
        }
    }
    off = SIZE_MAX;
    memset(out, 0x5a, sizeof *out);
    int rc = run(p, guard_at(bytes, len), len, out, &off);
    assert_eq_at(rc, want_rc, name, len);
    if (want_rc < 0)
        assert_eq_at(off, want_off, name, len);
    /* Without err_off the same answer comes back. */
    assert_eq_at(run(p, guard_at(bytes, len), len, &tmp, NULL), want_rc, name, len);
    if (want_rc >= 0)
        run(p, guard_at(bytes, len), len, out, &off);
    return rc;
}

/* The start of the fixture in the guard area, for pointer checks. */
static const char *base_of(size_t len) { return (const char *)guard_end() - len; }

/* ---- Error strings ---- */

static void test_strerror(void **state)
{
    (void)state;
    assert_string_equal(pg_scram_strerror(PG_SCRAM_E_MALFORMED), "malformed SCRAM message");
    assert_string_equal(pg_scram_strerror(PG_SCRAM_E_TOO_LONG),
                        "SCRAM message or field over its length limit");
    assert_string_equal(pg_scram_strerror(PG_SCRAM_E_BASE64), "invalid base64 in SCRAM message");
    assert_string_equal(pg_scram_strerror(PG_SCRAM_E_NONCE), "invalid or mismatched SCRAM nonce");
    assert_string_equal(pg_scram_strerror(PG_SCRAM_E_ITERATIONS), "invalid SCRAM iteration count");
    assert_string_equal(pg_scram_strerror(PG_SCRAM_E_EXTENSION),
                        "unsupported mandatory SCRAM extension");
    assert_string_equal(pg_scram_strerror(PG_SCRAM_E_AUTHZID),
                        "SCRAM authorization identity not supported");
    assert_string_equal(pg_scram_strerror(PG_SCRAM_E_KEY_LENGTH),
                        "SCRAM proof, signature or key is not 32 bytes");
    assert_string_equal(pg_scram_strerror(PG_SCRAM_E_CBIND), "SCRAM channel binding mismatch");
    assert_string_equal(pg_scram_strerror(PG_SCRAM_E_SPACE), "output buffer too small");
    assert_string_equal(pg_scram_strerror(0), "unknown error");
    assert_string_equal(pg_scram_strerror(-11), "unknown error");
    assert_string_equal(pg_scram_strerror(5), "unknown error");
}

/* ---- base64 ---- */

static void test_base64_vectors(void **state)
{
    (void)state;
    /* RFC 4648, section 10. */
    static const struct {
        const char *raw, *b64;
    } v[] = {
        {"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},        {"foo", "Zm9v"},
        {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        size_t rl = strlen(v[i].raw), bl = strlen(v[i].b64);
        assert_int_equal(pg_scram_b64_len(rl), bl);
        char *out = (char *)guard_out(bl);
        assert_eq_at(pg_scram_b64_encode((const uint8_t *)v[i].raw, rl, out, bl), bl, v[i].b64, bl);
        assert_memory_equal(out, v[i].b64, bl);
        if (bl > 0)
            assert_eq_at(pg_scram_b64_encode((const uint8_t *)v[i].raw, rl, out, bl - 1),
                         PG_SCRAM_E_SPACE, v[i].b64, bl);
        const char *in = (const char *)guard_at((const uint8_t *)v[i].b64, bl);
        uint8_t dec[8];
        assert_eq_at(pg_scram_b64_decode(in, bl, dec, rl), rl, v[i].b64, bl);
        assert_memory_equal(dec, v[i].raw, rl);
        if (rl > 0)
            assert_eq_at(pg_scram_b64_decode(in, bl, dec, rl - 1), PG_SCRAM_E_SPACE, v[i].b64, bl);
    }
    /* Every byte value, at every length up to 70, goes there and back. */
    uint8_t raw[70], dec[70];
    char enc[96];
    for (size_t i = 0; i < sizeof raw; i++)
        raw[i] = (uint8_t)(i * 37 + 11);
    for (size_t n = 0; n <= sizeof raw; n++) {
        int e = pg_scram_b64_encode(raw, n, enc, sizeof enc);
        assert_eq_at(e, pg_scram_b64_len(n), "round trip", n);
        assert_eq_at(pg_scram_b64_decode(enc, (size_t)e, dec, sizeof dec), n, "round trip", n);
        assert_memory_equal(dec, raw, n);
    }
    uint8_t all[256];
    char all64[344];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    assert_int_equal(pg_scram_b64_encode(all, 256, all64, sizeof all64), 344);
    uint8_t back[256];
    assert_int_equal(pg_scram_b64_decode(all64, 344, back, sizeof back), 256);
    assert_memory_equal(back, all, 256);
}

static void test_base64_strict(void **state)
{
    (void)state;
    static const char *bad[] = {
        "Zg=",      /* length not a multiple of 4 */
        "Zg",       /* unpadded */
        "Zg=a",     /* '=' before the end */
        "Z===",     /* three padding characters */
        "====",     /* nothing but padding */
        "Zh==",     /* unused bits set: not the canonical encoding of "f" */
        "Zm9=",     /* unused bits set */
        "Zm9v\n",   /* whitespace */
        "Zm 9v",    /* whitespace */
        "Zm9v\r\n", /* CRLF */
        "Zm-v",     /* base64url alphabet */
        "Zm_v",
        "Zm9vZg==Zm9v", /* padding in the middle */
        "\xc3\xa9" "AA",
    };
    uint8_t out[16];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t n = strlen(bad[i]);
        const char *in = (const char *)guard_at((const uint8_t *)bad[i], n);
        assert_eq_at(pg_scram_b64_decode(in, n, out, sizeof out), PG_SCRAM_E_BASE64, bad[i], n);
    }
    /* A NUL is just a bad character, not an end. */
    assert_int_equal(pg_scram_b64_decode((const char *)guard_at(FX("Zm\0v")), 4, out, sizeof out),
                     PG_SCRAM_E_BASE64);
    /* Bad input is reported as bad even when it would not fit either. */
    assert_int_equal(pg_scram_b64_decode("Zm9v!m9v", 8, out, 1), PG_SCRAM_E_BASE64);
}

/* ---- SASLInitialResponse body ---- */

static void test_sasl_initial(void **state)
{
    (void)state;
    union parsed o;
    static const uint8_t ok[] = "SCRAM-SHA-256\0" "\x00\x00\x00\x20" RFC_CLIENT_FIRST;
    size_t len = sizeof(ok) - 1;
    assert_int_equal(check("sasl initial", P_SASL_INITIAL, ok, len, (int)len, 0, &o), (int)len);
    assert_string_equal(o.si.mechanism, "SCRAM-SHA-256");
    assert_ptr_equal(o.si.mechanism, base_of(len));
    assert_int_equal(o.si.has_data, 1);
    assert_int_equal(o.si.data_len, 32);
    assert_ptr_equal(o.si.data, (const uint8_t *)base_of(len) + 18);
    assert_memory_equal(o.si.data, RFC_CLIENT_FIRST, 32);

    static const uint8_t none[] = "SCRAM-SHA-256-PLUS\0" "\xff\xff\xff\xff";
    len = sizeof(none) - 1;
    assert_int_equal(check("sasl initial -1", P_SASL_INITIAL, none, len, (int)len, 0, &o), (int)len);
    assert_string_equal(o.si.mechanism, "SCRAM-SHA-256-PLUS");
    assert_int_equal(o.si.has_data, 0);
    assert_null(o.si.data);
    assert_int_equal(o.si.data_len, 0);

    static const uint8_t empty[] = "X\0" "\x00\x00\x00\x00";
    len = sizeof(empty) - 1;
    assert_int_equal(check("sasl initial empty data", P_SASL_INITIAL, empty, len, (int)len, 0, &o),
                     (int)len);
    assert_int_equal(o.si.has_data, 1);
    assert_int_equal(o.si.data_len, 0);

    static const struct {
        const char *name;
        const uint8_t *bytes;
        size_t len;
        int rc;
        size_t off;
    } bad[] = {
        {"empty", FX(""), PG_SCRAM_E_MALFORMED, 0},
        {"no NUL", FX("SCRAM-SHA-256"), PG_SCRAM_E_MALFORMED, 13},
        {"empty mechanism", FX("\0\x00\x00\x00\x00"), PG_SCRAM_E_MALFORMED, 0},
        {"short length", FX("M\0\x00\x00\x00"), PG_SCRAM_E_MALFORMED, 2},
        {"length -2", FX("M\0\xff\xff\xff\xfe"), PG_SCRAM_E_MALFORMED, 2},
        {"length INT_MIN", FX("M\0\x80\x00\x00\x00"), PG_SCRAM_E_MALFORMED, 2},
        {"length over", FX("M\0\x00\x00\x00\x03" "ab"), PG_SCRAM_E_MALFORMED, 2},
        {"length under", FX("M\0\x00\x00\x00\x01" "ab"), PG_SCRAM_E_MALFORMED, 2},
        {"-1 with data", FX("M\0\xff\xff\xff\xff" "a"), PG_SCRAM_E_MALFORMED, 6},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        check(bad[i].name, P_SASL_INITIAL, bad[i].bytes, bad[i].len, bad[i].rc, bad[i].off, &o);

    /* Over the limit: refused before anything is read. */
    size_t big = PG_SCRAM_SASL_MAX + 1025;
    uint8_t *huge = calloc(1, big);
    assert_non_null(huge);
    size_t off = 0;
    assert_int_equal(pg_scram_fe_parse_sasl_initial(huge, big, &o.si, &off), PG_SCRAM_E_TOO_LONG);
    assert_int_equal(off, PG_SCRAM_SASL_MAX + 1024);
    free(huge);
}

/* ---- client-first-message ---- */

static void test_client_first(void **state)
{
    (void)state;
    union parsed o;
    size_t len = strlen(RFC_CLIENT_FIRST);
    assert_int_equal(check("rfc client-first", P_CLIENT_FIRST, FX(RFC_CLIENT_FIRST), (int)len, 0, &o),
                     (int)len);
    assert_int_equal(o.cf.cbind_flag, PG_SCRAM_CBIND_N);
    assert_int_equal(o.cf.cbind_name.len, 0);
    assert_view(o.cf.gs2_header, "n,,");
    assert_view(o.cf.username, "user");
    assert_view(o.cf.nonce, RFC_CNONCE);
    assert_view(o.cf.bare, "n=user,r=" RFC_CNONCE);
    assert_ptr_equal(o.cf.bare.ptr, base_of(len) + 3);
    assert_ptr_equal(o.cf.nonce.ptr, base_of(len) + 12);

    /* libpq's: an empty user name. */
    check("libpq client-first", P_CLIENT_FIRST, FX("n,,n=,r=abcXYZ+/="), 17, 0, &o);
    assert_view(o.cf.username, "");
    assert_view(o.cf.nonce, "abcXYZ+/=");
    assert_view(o.cf.bare, "n=,r=abcXYZ+/=");

    check("y flag", P_CLIENT_FIRST, FX("y,,n=,r=a"), 9, 0, &o);
    assert_int_equal(o.cf.cbind_flag, PG_SCRAM_CBIND_Y);
    assert_view(o.cf.gs2_header, "y,,");

    check("p flag", P_CLIENT_FIRST, FX("p=tls-server-end-point,,n=,r=q!~"), 32, 0, &o);
    assert_int_equal(o.cf.cbind_flag, PG_SCRAM_CBIND_P);
    assert_view(o.cf.cbind_name, "tls-server-end-point");
    assert_view(o.cf.gs2_header, "p=tls-server-end-point,,");
    assert_view(o.cf.bare, "n=,r=q!~");

    /* Another channel-binding type is reported, not judged: the caller decides. */
    check("p=tls-unique", P_CLIENT_FIRST, FX("p=tls-unique,,n=,r=a"), 20, 0, &o);
    assert_view(o.cf.cbind_name, "tls-unique");

    /* Extensions after the nonce are ignored; the username is raw (=2C not decoded). */
    check("extensions", P_CLIENT_FIRST, FX("n,,n=a=2Cb,r=abc,x=1,Y=a=b"), 26, 0, &o);
    assert_view(o.cf.username, "a=2Cb");
    assert_view(o.cf.nonce, "abc");
    assert_view(o.cf.bare, "n=a=2Cb,r=abc,x=1,Y=a=b");

    static const struct {
        const char *name;
        const uint8_t *bytes;
        size_t len;
        int rc;
        size_t off;
    } bad[] = {
        {"empty", FX(""), PG_SCRAM_E_MALFORMED, 0},
        {"flag x", FX("x,,n=,r=a"), PG_SCRAM_E_MALFORMED, 0},
        {"flag only", FX("n"), PG_SCRAM_E_MALFORMED, 1},
        {"p without =", FX("p,,n=,r=a"), PG_SCRAM_E_MALFORMED, 0},
        {"p empty type", FX("p=,,n=,r=a"), PG_SCRAM_E_MALFORMED, 2},
        {"p bad type", FX("p=tls_x,,n=,r=a"), PG_SCRAM_E_MALFORMED, 5},
        {"authzid", FX("n,a=bob,n=,r=a"), PG_SCRAM_E_AUTHZID, 2},
        {"junk authzid", FX("n,b,n=,r=a"), PG_SCRAM_E_MALFORMED, 2},
        {"mandatory ext", FX("n,,m=foo,n=,r=a"), PG_SCRAM_E_EXTENSION, 3},
        {"no user", FX("n,,r=abc"), PG_SCRAM_E_MALFORMED, 3},
        {"no nonce", FX("n,,n=u"), PG_SCRAM_E_MALFORMED, 6},
        {"no nonce after comma", FX("n,,n=u,"), PG_SCRAM_E_MALFORMED, 7},
        {"empty nonce", FX("n,,n=,r="), PG_SCRAM_E_NONCE, 8},
        {"space in nonce", FX("n,,n=,r=ab c"), PG_SCRAM_E_NONCE, 10},
        {"DEL in nonce", FX("n,,n=,r=ab\x7f"), PG_SCRAM_E_NONCE, 10},
        {"8-bit nonce", FX("n,,n=,r=\xc3\xa9"), PG_SCRAM_E_NONCE, 8},
        {"NUL in nonce", FX("n,,n=,r=a\0b"), PG_SCRAM_E_MALFORMED, 9},
        {"NUL in user", FX("n,,n=us\0er,r=abc"), PG_SCRAM_E_MALFORMED, 7},
        {"trailing comma", FX("n,,n=,r=abc,"), PG_SCRAM_E_MALFORMED, 12},
        {"ext not alpha", FX("n,,n=,r=abc,1=x"), PG_SCRAM_E_MALFORMED, 12},
        {"ext empty value", FX("n,,n=,r=abc,x="), PG_SCRAM_E_MALFORMED, 14},
        {"ext no =", FX("n,,n=,r=abc,xy"), PG_SCRAM_E_MALFORMED, 12},
        {"gs2 only", FX("n,,"), PG_SCRAM_E_MALFORMED, 3},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        check(bad[i].name, P_CLIENT_FIRST, bad[i].bytes, bad[i].len, bad[i].rc, bad[i].off, &o);
}

static void test_client_first_limits(void **state)
{
    (void)state;
    union parsed o;
    static uint8_t m[PG_SCRAM_MSG_MAX + 8];
    /* A nonce of exactly PG_SCRAM_NONCE_MAX is fine; one more is refused. */
    memcpy(m, "n,,n=,r=", 8);
    memset(m + 8, 'x', PG_SCRAM_NONCE_MAX + 1);
    check("nonce at max", P_CLIENT_FIRST, m, 8 + PG_SCRAM_NONCE_MAX, 8 + PG_SCRAM_NONCE_MAX, 0, &o);
    assert_int_equal(o.cf.nonce.len, PG_SCRAM_NONCE_MAX);
    check("nonce over max", P_CLIENT_FIRST, m, 9 + PG_SCRAM_NONCE_MAX, PG_SCRAM_E_NONCE, 8, &o);

    /* A channel-binding type of PG_SCRAM_CBIND_NAME_MAX characters is fine; one more is not. */
    memcpy(m, "p=", 2);
    memset(m + 2, 'c', PG_SCRAM_CBIND_NAME_MAX + 1);
    memcpy(m + 2 + PG_SCRAM_CBIND_NAME_MAX, ",,n=,r=a", 8);
    check("type at max", P_CLIENT_FIRST, m, PG_SCRAM_CBIND_NAME_MAX + 10,
          PG_SCRAM_CBIND_NAME_MAX + 10, 0, &o);
    assert_int_equal(o.cf.cbind_name.len, PG_SCRAM_CBIND_NAME_MAX);
    memset(m + 2, 'c', PG_SCRAM_CBIND_NAME_MAX + 1);
    memcpy(m + 3 + PG_SCRAM_CBIND_NAME_MAX, ",,n=,r=a", 8);
    check("type over max", P_CLIENT_FIRST, m, PG_SCRAM_CBIND_NAME_MAX + 11, PG_SCRAM_E_TOO_LONG,
          2 + PG_SCRAM_CBIND_NAME_MAX, &o);
    char name[PG_SCRAM_CBIND_NAME_MAX + 2];
    memset(name, 'c', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    char out[200];
    assert_int_equal(pg_scram_fe_write_client_first(out, sizeof out, PG_SCRAM_CBIND_P, name, "a", 1,
                                                    NULL),
                     PG_SCRAM_E_MALFORMED);
    name[PG_SCRAM_CBIND_NAME_MAX] = '\0';
    assert_int_equal(pg_scram_fe_write_client_first(out, sizeof out, PG_SCRAM_CBIND_P, name, "a", 1,
                                                    NULL),
                     PG_SCRAM_CBIND_NAME_MAX + 10);

    /* A message of exactly PG_SCRAM_MSG_MAX (a long extension) is fine; one more is refused. */
    memcpy(m, "n,,n=,r=abc,x=", 14);
    memset(m + 14, 'v', sizeof m - 14);
    size_t off = 0;
    assert_int_equal(pg_scram_fe_parse_client_first(guard_at(m, PG_SCRAM_MSG_MAX), PG_SCRAM_MSG_MAX,
                                                    &o.cf, &off),
                     PG_SCRAM_MSG_MAX);
    assert_int_equal(pg_scram_fe_parse_client_first(guard_at(m, PG_SCRAM_MSG_MAX + 1),
                                                    PG_SCRAM_MSG_MAX + 1, &o.cf, &off),
                     PG_SCRAM_E_TOO_LONG);
    assert_int_equal(off, PG_SCRAM_MSG_MAX);
}

static void test_write_client_first(void **state)
{
    (void)state;
    size_t bare = 99;
    static const char want_n[] = "n,,n=,r=" RFC_CNONCE;
    size_t n = sizeof(want_n) - 1;
    char *out = (char *)guard_out(n);
    assert_int_equal(pg_scram_fe_write_client_first(out, n, PG_SCRAM_CBIND_N, NULL, RFC_CNONCE,
                                                    strlen(RFC_CNONCE), &bare),
                     (int)n);
    assert_memory_equal(out, want_n, n);
    assert_int_equal(bare, 3);
    out = (char *)guard_out(n - 1);
    assert_int_equal(pg_scram_fe_write_client_first(out, n - 1, PG_SCRAM_CBIND_N, NULL, RFC_CNONCE,
                                                    strlen(RFC_CNONCE), &bare),
                     PG_SCRAM_E_SPACE);

    static const char want_p[] = "p=tls-server-end-point,,n=,r=abc";
    n = sizeof(want_p) - 1;
    out = (char *)guard_out(n);
    assert_int_equal(pg_scram_fe_write_client_first(out, n, PG_SCRAM_CBIND_P,
                                                    PG_SCRAM_CBIND_TLS_SERVER_END_POINT, "abc", 3,
                                                    &bare),
                     (int)n);
    assert_memory_equal(out, want_p, n);
    assert_int_equal(bare, 24);
    for (size_t cap = 0; cap < n; cap++)
        assert_eq_at(pg_scram_fe_write_client_first((char *)guard_out(cap), cap,
                                                    PG_SCRAM_CBIND_P, "tls-server-end-point",
                                                    "abc", 3, NULL),
                     PG_SCRAM_E_SPACE, "write p", cap);

    char buf[64];
    assert_int_equal(pg_scram_fe_write_client_first(buf, sizeof buf, PG_SCRAM_CBIND_Y, NULL, "a", 1,
                                                    NULL),
                     9);
    assert_memory_equal(buf, "y,,n=,r=a", 9);
    assert_int_equal(pg_scram_fe_write_client_first(buf, sizeof buf, PG_SCRAM_CBIND_N, NULL, "a,b",
                                                    3, NULL),
                     PG_SCRAM_E_NONCE);
    assert_int_equal(pg_scram_fe_write_client_first(buf, sizeof buf, PG_SCRAM_CBIND_N, NULL, "", 0,
                                                    NULL),
                     PG_SCRAM_E_NONCE);
    assert_int_equal(pg_scram_fe_write_client_first(buf, sizeof buf, PG_SCRAM_CBIND_P, NULL, "a", 1,
                                                    NULL),
                     PG_SCRAM_E_MALFORMED);
    assert_int_equal(pg_scram_fe_write_client_first(buf, sizeof buf, PG_SCRAM_CBIND_P, "a,b", "a",
                                                    1, NULL),
                     PG_SCRAM_E_MALFORMED);
    assert_int_equal(pg_scram_fe_write_client_first(buf, sizeof buf, (enum pg_scram_cbind_flag)'q',
                                                    NULL, "a", 1, NULL),
                     PG_SCRAM_E_MALFORMED);

    /* What the builder writes, the parser reads back. */
    union parsed o;
    int w = pg_scram_fe_write_client_first(buf, sizeof buf, PG_SCRAM_CBIND_P, "tls-server-end-point",
                                           "xyz", 3, &bare);
    assert_int_equal(check("built p", P_CLIENT_FIRST, (const uint8_t *)buf, (size_t)w, w, 0, &o), w);
    assert_view(o.cf.cbind_name, "tls-server-end-point");
    assert_view(o.cf.nonce, "xyz");
    assert_int_equal(o.cf.gs2_header.len, bare);
}

/* ---- server-first-message ---- */

static void test_server_first(void **state)
{
    (void)state;
    union parsed o;
    size_t len = strlen(RFC_SERVER_FIRST);
    g_nonce = RFC_CNONCE;
    g_salt_cap = 16;
    assert_int_equal(check("rfc server-first", P_SERVER_FIRST, FX(RFC_SERVER_FIRST), (int)len, 0, &o),
                     (int)len);
    assert_view(o.sf.nonce, RFC_NONCE);
    assert_ptr_equal(o.sf.nonce.ptr, base_of(len) + 2);
    assert_int_equal(o.sf.salt_len, 16);
    assert_memory_equal(g_salt, rfc_salt, 16);
    assert_int_equal(o.sf.iterations, 4096);

    check("extension", P_SERVER_FIRST, FX("r=" RFC_NONCE ",s=AAAA,i=1,z=zz"), 68, 0, &o);
    assert_int_equal(o.sf.iterations, 1);
    assert_int_equal(o.sf.salt_len, 3);
    check("max iterations", P_SERVER_FIRST, FX("r=" RFC_CNONCE "x,s=AAAA,i=100000000"), 42, 0, &o);
    assert_int_equal(o.sf.iterations, 100000000);

    static const struct {
        const char *name;
        const uint8_t *bytes;
        size_t len;
        int rc;
        size_t off;
    } bad[] = {
        {"empty", FX(""), PG_SCRAM_E_MALFORMED, 0},
        {"mandatory ext", FX("m=x,r=" RFC_NONCE ",s=AAAA,i=1"), PG_SCRAM_E_EXTENSION, 0},
        {"only our nonce", FX("r=" RFC_CNONCE ",s=AAAA,i=1"), PG_SCRAM_E_NONCE, 2},
        {"other nonce", FX("r=rOprNGfwEbeRWgbNEkqX1234,s=AAAA,i=1"), PG_SCRAM_E_NONCE, 2},
        {"short nonce", FX("r=rOpr,s=AAAA,i=1"), PG_SCRAM_E_NONCE, 2},
        {"space in nonce", FX("r=" RFC_CNONCE "a b,s=AAAA,i=1"), PG_SCRAM_E_NONCE, 23},
        {"no salt", FX("r=" RFC_NONCE ",i=4096"), PG_SCRAM_E_MALFORMED, 53},
        {"no iterations", FX("r=" RFC_NONCE ",s=AAAA"), PG_SCRAM_E_MALFORMED, 59},
        {"order", FX("r=" RFC_NONCE ",i=1,s=AAAA"), PG_SCRAM_E_MALFORMED, 53},
        {"empty salt", FX("r=" RFC_NONCE ",s=,i=1"), PG_SCRAM_E_MALFORMED, 55},
        {"bad salt", FX("r=" RFC_NONCE ",s=AA*A,i=1"), PG_SCRAM_E_BASE64, 57},
        {"unpadded salt", FX("r=" RFC_NONCE ",s=AAA,i=1"), PG_SCRAM_E_BASE64, 55},
        {"salt over cap", FX("r=" RFC_NONCE ",s=AAAAAAAAAAAAAAAAAAAAAAAA,i=1"), PG_SCRAM_E_TOO_LONG, 55},
        {"iterations 0", FX("r=" RFC_NONCE ",s=AAAA,i=0"), PG_SCRAM_E_ITERATIONS, 62},
        {"iterations empty", FX("r=" RFC_NONCE ",s=AAAA,i="), PG_SCRAM_E_ITERATIONS, 62},
        {"leading zero", FX("r=" RFC_NONCE ",s=AAAA,i=04096"), PG_SCRAM_E_ITERATIONS, 62},
        {"iterations over", FX("r=" RFC_NONCE ",s=AAAA,i=100000001"), PG_SCRAM_E_ITERATIONS, 70},
        {"iterations huge", FX("r=" RFC_NONCE ",s=AAAA,i=99999999999999999999"), PG_SCRAM_E_ITERATIONS, 70},
        {"iterations sign", FX("r=" RFC_NONCE ",s=AAAA,i=-1"), PG_SCRAM_E_ITERATIONS, 62},
        {"iterations hex", FX("r=" RFC_NONCE ",s=AAAA,i=40a6"), PG_SCRAM_E_ITERATIONS, 64},
        {"trailing comma", FX("r=" RFC_NONCE ",s=AAAA,i=1,"), PG_SCRAM_E_MALFORMED, 64},
        {"NUL", FX("r=" RFC_NONCE ",s=AAAA,i=1\0"), PG_SCRAM_E_MALFORMED, 63},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        check(bad[i].name, P_SERVER_FIRST, bad[i].bytes, bad[i].len, bad[i].rc, bad[i].off, &o);

    /* A nonce over PG_SCRAM_NONCE_MAX, even one that extends ours. */
    static uint8_t m[PG_SCRAM_NONCE_MAX + 64];
    size_t p = 0;
    memcpy(m, "r=" RFC_CNONCE, 22);
    p = 22;
    memset(m + p, 'k', PG_SCRAM_NONCE_MAX + 1 - 20);
    p += PG_SCRAM_NONCE_MAX + 1 - 20;
    memcpy(m + p, ",s=AAAA,i=1", 11);
    check("nonce over max", P_SERVER_FIRST, m, p + 11, PG_SCRAM_E_NONCE, 2, &o);
    m[1 + 0] = 'r';
    m[1 + 1] = '=';
    memcpy(m + 3, RFC_CNONCE, 20);
    check("nonce at max", P_SERVER_FIRST, m + 1, p + 10, (int)(p + 10), 0, &o);
    assert_int_equal(o.sf.nonce.len, PG_SCRAM_NONCE_MAX);

    /* No client nonce to compare with is a caller error, reported as a nonce error. */
    size_t off;
    assert_int_equal(pg_scram_be_parse_server_first(FX(RFC_SERVER_FIRST), "", 0, g_salt, 16, &o.sf,
                                                    &off),
                     PG_SCRAM_E_NONCE);
}

static void test_write_server_first(void **state)
{
    (void)state;
    size_t n = strlen(RFC_SERVER_FIRST);
    static const char snonce[] = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    for (size_t cap = 0; cap <= n; cap++) {
        char *out = (char *)guard_out(cap);
        int rc = pg_scram_be_write_server_first(out, cap, RFC_CNONCE, 20, snonce, strlen(snonce),
                                                rfc_salt, 16, 4096);
        if (cap < n) {
            assert_eq_at(rc, PG_SCRAM_E_SPACE, "server-first", cap);
        } else {
            assert_eq_at(rc, n, "server-first", cap);
            assert_memory_equal(out, RFC_SERVER_FIRST, n);
        }
    }
    char buf[256];
    assert_int_equal(pg_scram_be_write_server_first(buf, sizeof buf, "", 0, "b", 1, rfc_salt, 16, 1),
                     PG_SCRAM_E_NONCE);
    assert_int_equal(pg_scram_be_write_server_first(buf, sizeof buf, "a", 1, "", 0, rfc_salt, 16, 1),
                     PG_SCRAM_E_NONCE);
    assert_int_equal(pg_scram_be_write_server_first(buf, sizeof buf, "a", 1, "b,", 2, rfc_salt, 16, 1),
                     PG_SCRAM_E_NONCE);
    assert_int_equal(pg_scram_be_write_server_first(buf, sizeof buf, "a", 1, "b", 1, rfc_salt, 0, 1),
                     PG_SCRAM_E_TOO_LONG);
    assert_int_equal(pg_scram_be_write_server_first(buf, sizeof buf, "a", 1, "b", 1, rfc_salt, 16, 0),
                     PG_SCRAM_E_ITERATIONS);
    assert_int_equal(pg_scram_be_write_server_first(buf, sizeof buf, "a", 1, "b", 1, rfc_salt, 16,
                                                    PG_SCRAM_ITERATIONS_MAX + 1),
                     PG_SCRAM_E_ITERATIONS);
    int w = pg_scram_be_write_server_first(buf, sizeof buf, "a", 1, "b", 1, rfc_salt, 1,
                                           PG_SCRAM_ITERATIONS_MAX);
    assert_int_equal(w, 23);
    assert_memory_equal(buf, "r=ab,s=Ww==,i=100000000", 23);
}

/* ---- client-final-message ---- */

static void test_client_final(void **state)
{
    (void)state;
    union parsed o;
    size_t len = strlen(RFC_CLIENT_FINAL);
    g_expected = RFC_NONCE;
    assert_int_equal(check("rfc client-final", P_CLIENT_FINAL, FX(RFC_CLIENT_FINAL), (int)len, 0, &o),
                     (int)len);
    assert_view(o.cfin.cbind_b64, "biws");
    assert_int_equal(o.cfin.cbind_len, 3);
    assert_memory_equal(o.cfin.cbind, "n,,", 3);
    assert_view(o.cfin.nonce, RFC_NONCE);
    assert_memory_equal(o.cfin.proof, rfc_proof, 32);
    assert_view(o.cfin.without_proof, RFC_FINAL_NO_PROOF);
    assert_ptr_equal(o.cfin.without_proof.ptr, base_of(len));

    g_expected = NULL;
    check("no nonce check", P_CLIENT_FINAL, FX("c=biws,r=anything,p=" RFC_PROOF_B64), 64, 0, &o);
    assert_view(o.cfin.nonce, "anything");

    check("extension", P_CLIENT_FINAL, FX("c=eSws,r=n,x=1,p=" RFC_PROOF_B64), 61, 0, &o);
    assert_memory_equal(o.cfin.cbind, "y,,", 3);
    assert_view(o.cfin.without_proof, "c=eSws,r=n,x=1");

    /* tls-server-end-point: the gs2 header then 32 bytes of certificate hash. */
    static const uint8_t tls[] =
        "c=cD10bHMtc2VydmVyLWVuZC1wb2ludCwsAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=,r=n,p="
        RFC_PROOF_B64;
    check("tls-server-end-point", P_CLIENT_FINAL, tls, sizeof(tls) - 1, (int)sizeof(tls) - 1, 0, &o);
    assert_int_equal(o.cfin.cbind_len, 24 + 32);
    assert_memory_equal(o.cfin.cbind, "p=tls-server-end-point,,", 24);
    for (int i = 0; i < 32; i++)
        assert_int_equal(o.cfin.cbind[24 + i], i);

    g_expected = RFC_NONCE;
    static const struct {
        const char *name;
        const uint8_t *bytes;
        size_t len;
        int rc;
        size_t off;
    } bad[] = {
        {"empty", FX(""), PG_SCRAM_E_MALFORMED, 0},
        {"nonce first", FX("r=" RFC_NONCE ",c=biws,p=" RFC_PROOF_B64), PG_SCRAM_E_MALFORMED, 0},
        {"wrong nonce", FX("c=biws,r=" RFC_CNONCE "X,p=" RFC_PROOF_B64), PG_SCRAM_E_NONCE, 9},
        {"short nonce", FX("c=biws,r=" RFC_CNONCE ",p=" RFC_PROOF_B64), PG_SCRAM_E_NONCE, 9},
        {"no proof", FX(RFC_FINAL_NO_PROOF), PG_SCRAM_E_MALFORMED, 59},
        {"no proof, ext", FX(RFC_FINAL_NO_PROOF ",x=1"), PG_SCRAM_E_MALFORMED, 63},
        {"proof not last", FX(RFC_CLIENT_FINAL ",x=1"), PG_SCRAM_E_MALFORMED, 106},
        {"proof 31 bytes", FX(RFC_FINAL_NO_PROOF ",p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="),
         PG_SCRAM_E_KEY_LENGTH, 62},
        {"proof 33 bytes", FX(RFC_FINAL_NO_PROOF ",p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
         PG_SCRAM_E_KEY_LENGTH, 62},
        {"proof bad b64", FX(RFC_FINAL_NO_PROOF ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ"),
         PG_SCRAM_E_BASE64, 62 + 40},
        {"proof empty", FX(RFC_FINAL_NO_PROOF ",p="), PG_SCRAM_E_KEY_LENGTH, 62},
        {"empty cbind", FX("c=,r=" RFC_NONCE ",p=" RFC_PROOF_B64), PG_SCRAM_E_MALFORMED, 2},
        {"bad cbind", FX("c=biw,r=" RFC_NONCE ",p=" RFC_PROOF_B64), PG_SCRAM_E_BASE64, 2},
        {"empty nonce", FX("c=biws,r=,p=" RFC_PROOF_B64), PG_SCRAM_E_NONCE, 9},
        {"no nonce", FX("c=biws,p=" RFC_PROOF_B64), PG_SCRAM_E_MALFORMED, 7},
        {"NUL", FX("c=biws,r=" RFC_NONCE ",p=" RFC_PROOF_B64 "\0"), PG_SCRAM_E_MALFORMED, 106},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        check(bad[i].name, P_CLIENT_FINAL, bad[i].bytes, bad[i].len, bad[i].rc, bad[i].off, &o);

    /* Channel-binding input over PG_SCRAM_CBIND_DATA_MAX (257 bytes decoded). */
    static uint8_t m[600];
    memcpy(m, "c=", 2);
    memset(m + 2, 'A', 344);
    memcpy(m + 346, ",r=" RFC_NONCE ",p=" RFC_PROOF_B64, 3 + 50 + 3 + 44);
    check("cbind over max", P_CLIENT_FINAL, m, 346 + 100, PG_SCRAM_E_CBIND, 2, &o);
}

static void test_check_cbind(void **state)
{
    (void)state;
    struct pg_scram_client_first first;
    struct pg_scram_client_final fin;
    static const uint8_t hash[32] = {1, 2, 3};
    uint8_t other[32];
    memcpy(other, hash, 32);
    other[31] ^= 1;

    assert_int_equal(pg_scram_fe_parse_client_first(FX("n,,n=,r=a"), &first, NULL), 9);
    assert_int_equal(pg_scram_fe_parse_client_final(FX("c=biws,r=ab,p=" RFC_PROOF_B64), NULL, 0,
                                                    &fin, NULL),
                     58);
    assert_int_equal(pg_scram_check_cbind(&fin, &first, NULL, 0), 0);
    /* Data the server offers is not expected from a client that did not ask for binding. */
    assert_int_equal(pg_scram_check_cbind(&fin, &first, hash, 32), 0);
    /* "y,," in c= after "n,," in the first message: a downgrade attempt. */
    assert_int_equal(pg_scram_fe_parse_client_final(FX("c=eSws,r=ab,p=" RFC_PROOF_B64), NULL, 0,
                                                    &fin, NULL),
                     58);
    assert_int_equal(pg_scram_check_cbind(&fin, &first, NULL, 0), PG_SCRAM_E_CBIND);

    /* p=tls-server-end-point with the right hash, a wrong hash, no hash. */
    char buf[256];
    size_t bare;
    int w = pg_scram_fe_write_client_first(buf, sizeof buf, PG_SCRAM_CBIND_P,
                                           PG_SCRAM_CBIND_TLS_SERVER_END_POINT, "n", 1, &bare);
    assert_int_equal(pg_scram_fe_parse_client_first((const uint8_t *)buf, (size_t)w, &first, NULL), w);
    char fbuf[256];
    w = pg_scram_fe_write_client_final_without_proof(fbuf, sizeof fbuf, first.gs2_header.ptr,
                                                     first.gs2_header.len, hash, 32, "nx", 2);
    assert_true(w > 0);
    w = pg_scram_fe_write_client_final(fbuf, sizeof fbuf, fbuf, (size_t)w, rfc_proof);
    assert_int_equal(pg_scram_fe_parse_client_final((const uint8_t *)fbuf, (size_t)w, "nx", 2, &fin,
                                                    NULL),
                     w);
    assert_int_equal(pg_scram_check_cbind(&fin, &first, hash, 32), 0);
    assert_int_equal(pg_scram_check_cbind(&fin, &first, other, 32), PG_SCRAM_E_CBIND);
    assert_int_equal(pg_scram_check_cbind(&fin, &first, hash, 31), PG_SCRAM_E_CBIND);
    assert_int_equal(pg_scram_check_cbind(&fin, &first, NULL, 0), PG_SCRAM_E_CBIND);
}

/* The server's judgement of mechanism and gs2 flag, case by case as PostgreSQL 15 answers them
 * (tests/integration/test_channel_binding.c checks the same cases against a real server). */
static void test_cbind_verdict(void **state)
{
    (void)state;
    static const struct {
        int offered;
        const char *mech;
        const char *first;
        enum pg_scram_cbind_verdict want;
        const char *sqlstate;
    } cases[] = {
        {1, "SCRAM-SHA-256-PLUS", "p=tls-server-end-point,,n=,r=a", PG_SCRAM_CB_OK, ""},
        {1, "SCRAM-SHA-256", "n,,n=,r=a", PG_SCRAM_CB_OK, ""},
        {0, "SCRAM-SHA-256", "n,,n=,r=a", PG_SCRAM_CB_OK, ""},
        /* y: fine where the server really cannot bind, a downgrade where it offered to. */
        {0, "SCRAM-SHA-256", "y,,n=,r=a", PG_SCRAM_CB_OK, ""},
        {1, "SCRAM-SHA-256", "y,,n=,r=a", PG_SCRAM_CB_DOWNGRADE, "28000"},
        {1, "SCRAM-SHA-256-PLUS", "n,,n=,r=a", PG_SCRAM_CB_PLUS_WITHOUT_DATA, "08P01"},
        {1, "SCRAM-SHA-256-PLUS", "y,,n=,r=a", PG_SCRAM_CB_PLUS_WITHOUT_DATA, "08P01"},
        {1, "SCRAM-SHA-256", "p=tls-server-end-point,,n=,r=a", PG_SCRAM_CB_DATA_WITHOUT_PLUS,
         "08P01"},
        {1, "SCRAM-SHA-256-PLUS", "p=tls-unique,,n=,r=a", PG_SCRAM_CB_BAD_TYPE, "08P01"},
        /* A name that only starts like the right one is another type. */
        {1, "SCRAM-SHA-256-PLUS", "p=tls-server-end-pointx,,n=,r=a", PG_SCRAM_CB_BAD_TYPE, "08P01"},
        /* PLUS where it was not offered (plaintext), or an unknown mechanism. */
        {0, "SCRAM-SHA-256-PLUS", "p=tls-server-end-point,,n=,r=a", PG_SCRAM_CB_BAD_MECHANISM,
         "08P01"},
        {1, "SCRAM-SHA-1", "n,,n=,r=a", PG_SCRAM_CB_BAD_MECHANISM, "08P01"},
        {1, "", "n,,n=,r=a", PG_SCRAM_CB_BAD_MECHANISM, "08P01"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct pg_scram_client_first cf;
        size_t n = strlen(cases[i].first);
        assert_int_equal(pg_scram_fe_parse_client_first(guard_at((const uint8_t *)cases[i].first, n),
                                                        n, &cf, NULL),
                         (int)n);
        enum pg_scram_cbind_verdict v =
            pg_scram_be_cbind_verdict(cases[i].offered, cases[i].mech, &cf);
        if (v != cases[i].want)
            fail_msg("case %zu (%s, %s, offered %d): verdict %d, want %d", i, cases[i].mech,
                     cases[i].first, cases[i].offered, (int)v, (int)cases[i].want);
        assert_string_equal(pg_scram_cbind_verdict_sqlstate(v), cases[i].sqlstate);
        assert_true((v == PG_SCRAM_CB_OK) == (pg_scram_cbind_verdict_message(v)[0] == 0));
    }
    assert_string_equal(pg_scram_cbind_verdict_message(PG_SCRAM_CB_DOWNGRADE),
                        "SCRAM channel binding negotiation error");
    assert_string_equal(pg_scram_cbind_verdict_message(PG_SCRAM_CB_BAD_MECHANISM),
                        "client selected an invalid SASL authentication mechanism");
}

/* A whole bound exchange as both sides write and read it: the client's gs2 header and the
 * certificate hash go into c=, the server accepts them with its own hash and nothing else, and
 * the AuthMessage both sign carries them. */
static void test_cbind_round_trip(void **state)
{
    (void)state;
    uint8_t hash[48]; /* a SHA-384 certificate */
    for (size_t i = 0; i < sizeof(hash); i++)
        hash[i] = (uint8_t)(0xc0 + i);
    char first[256];
    size_t bare = 0;
    int w = pg_scram_fe_write_client_first(first, sizeof first, PG_SCRAM_CBIND_P,
                                           PG_SCRAM_CBIND_TLS_SERVER_END_POINT, "cnonce", 6, &bare);
    assert_int_equal(bare, strlen("p=tls-server-end-point,,"));
    struct pg_scram_client_first cf;
    assert_int_equal(pg_scram_fe_parse_client_first(guard_at((const uint8_t *)first, (size_t)w),
                                                    (size_t)w, &cf, NULL),
                     w);
    assert_int_equal(pg_scram_be_cbind_verdict(1, PG_SCRAM_MECHANISM_PLUS, &cf), PG_SCRAM_CB_OK);
    char fin_buf[512];
    int f = pg_scram_fe_write_client_final_without_proof(fin_buf, sizeof fin_buf, first, bare,
                                                         hash, sizeof hash, "cnonceSNONCE", 12);
    assert_true(f > 0);
    /* c= is base64 of the header and the 48 bytes: 72 bytes, 96 characters. */
    assert_int_equal(strcspn(fin_buf, ","), 2 + 96);
    int whole = pg_scram_fe_write_client_final(fin_buf, sizeof fin_buf, fin_buf, (size_t)f,
                                               rfc_proof);
    struct pg_scram_client_final fin;
    assert_int_equal(pg_scram_fe_parse_client_final(guard_at((const uint8_t *)fin_buf, (size_t)whole),
                                                    (size_t)whole, "cnonceSNONCE", 12, &fin, NULL),
                     whole);
    assert_int_equal(fin.cbind_len, bare + sizeof hash);
    assert_int_equal(fin.without_proof.len, (size_t)f);
    /* cf's views pointed into the guard area, which the final message now holds: read the
     * first message again from its own buffer. */
    assert_int_equal(pg_scram_fe_parse_client_first((const uint8_t *)first, (size_t)w, &cf, NULL), w);
    assert_int_equal(pg_scram_check_cbind(&fin, &cf, hash, sizeof hash), 0);
    hash[0] ^= 1; /* the certificate someone in the middle presented */
    assert_int_equal(pg_scram_check_cbind(&fin, &cf, hash, sizeof hash), PG_SCRAM_E_CBIND);
    hash[0] ^= 1;
    assert_int_equal(pg_scram_check_cbind(&fin, &cf, hash, 32), PG_SCRAM_E_CBIND);
}

static void test_write_client_final(void **state)
{
    (void)state;
    size_t n = strlen(RFC_FINAL_NO_PROOF);
    for (size_t cap = 0; cap <= n; cap++) {
        char *out = (char *)guard_out(cap);
        int rc = pg_scram_fe_write_client_final_without_proof(out, cap, "n,,", 3, NULL, 0, RFC_NONCE,
                                                              strlen(RFC_NONCE));
        if (cap < n) {
            assert_eq_at(rc, PG_SCRAM_E_SPACE, "without proof", cap);
        } else {
            assert_eq_at(rc, n, "without proof", cap);
            assert_memory_equal(out, RFC_FINAL_NO_PROOF, n);
        }
    }
    /* Appending the proof in place gives RFC 7677's message. */
    size_t full = strlen(RFC_CLIENT_FINAL);
    char buf[200];
    int w = pg_scram_fe_write_client_final_without_proof(buf, sizeof buf, "n,,", 3, NULL, 0,
                                                         RFC_NONCE, strlen(RFC_NONCE));
    assert_int_equal(w, (int)n);
    assert_int_equal(pg_scram_fe_write_client_final(buf, sizeof buf, buf, n, rfc_proof), (int)full);
    assert_memory_equal(buf, RFC_CLIENT_FINAL, full);
    for (size_t cap = n; cap < full; cap++) {
        char *out = (char *)guard_out(cap);
        assert_eq_at(pg_scram_fe_write_client_final(out, cap, RFC_FINAL_NO_PROOF, n, rfc_proof),
                     PG_SCRAM_E_SPACE, "client-final", cap);
    }
    char *out = (char *)guard_out(full);
    assert_int_equal(pg_scram_fe_write_client_final(out, full, RFC_FINAL_NO_PROOF, n, rfc_proof),
                     (int)full);
    assert_memory_equal(out, RFC_CLIENT_FINAL, full);

    uint8_t big[PG_SCRAM_CBIND_DATA_MAX];
    memset(big, 7, sizeof big);
    assert_int_equal(pg_scram_fe_write_client_final_without_proof(buf, sizeof buf, "n,,", 3, big,
                                                                  PG_SCRAM_CBIND_DATA_MAX - 2,
                                                                  "a", 1),
                     PG_SCRAM_E_CBIND);
    assert_int_equal(pg_scram_fe_write_client_final_without_proof(buf, sizeof buf, "", 0, NULL, 0,
                                                                  "a", 1),
                     PG_SCRAM_E_CBIND);
    assert_int_equal(pg_scram_fe_write_client_final_without_proof(buf, sizeof buf, "n,,", 3, NULL, 0,
                                                                  "a b", 3),
                     PG_SCRAM_E_NONCE);
}

/* ---- server-final-message ---- */

static void test_server_final(void **state)
{
    (void)state;
    union parsed o;
    size_t len = strlen(RFC_SERVER_FINAL);
    assert_int_equal(check("rfc server-final", P_SERVER_FINAL, FX(RFC_SERVER_FINAL), (int)len, 0, &o),
                     (int)len);
    assert_int_equal(o.sfin.is_error, 0);
    assert_memory_equal(o.sfin.signature, rfc_server_sig, 32);
    assert_null(o.sfin.error.ptr);

    check("error", P_SERVER_FINAL, FX("e=invalid-proof"), 15, 0, &o);
    assert_int_equal(o.sfin.is_error, 1);
    assert_view(o.sfin.error, "invalid-proof");
    assert_ptr_equal(o.sfin.error.ptr, base_of(15) + 2);

    check("with extension", P_SERVER_FINAL, FX(RFC_SERVER_FINAL ",x=y"), (int)len + 4, 0, &o);
    assert_memory_equal(o.sfin.signature, rfc_server_sig, 32);
    check("error with extension", P_SERVER_FINAL, FX("e=other-error,q=1"), 17, 0, &o);
    assert_view(o.sfin.error, "other-error");

    static const struct {
        const char *name;
        const uint8_t *bytes;
        size_t len;
        int rc;
        size_t off;
    } bad[] = {
        {"empty", FX(""), PG_SCRAM_E_MALFORMED, 0},
        {"other attribute", FX("x=abc"), PG_SCRAM_E_MALFORMED, 0},
        {"empty error", FX("e="), PG_SCRAM_E_MALFORMED, 2},
        {"short signature", FX("v=AAAA"), PG_SCRAM_E_KEY_LENGTH, 2},
        {"empty signature", FX("v="), PG_SCRAM_E_KEY_LENGTH, 2},
        {"bad signature", FX("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4"), PG_SCRAM_E_BASE64, 42},
        {"trailing comma", FX(RFC_SERVER_FINAL ","), PG_SCRAM_E_MALFORMED, 47},
        {"NUL in error", FX("e=inv\0alid"), PG_SCRAM_E_MALFORMED, 5},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        check(bad[i].name, P_SERVER_FINAL, bad[i].bytes, bad[i].len, bad[i].rc, bad[i].off, &o);
}

static void test_write_server_final(void **state)
{
    (void)state;
    size_t n = strlen(RFC_SERVER_FINAL);
    assert_int_equal(n, 46);
    char *out = (char *)guard_out(n);
    assert_int_equal(pg_scram_be_write_server_final(out, n, rfc_server_sig), 46);
    assert_memory_equal(out, RFC_SERVER_FINAL, n);
    out = (char *)guard_out(n - 1);
    assert_int_equal(pg_scram_be_write_server_final(out, n - 1, rfc_server_sig), PG_SCRAM_E_SPACE);

    out = (char *)guard_out(15);
    assert_int_equal(pg_scram_be_write_server_error(out, 15, "invalid-proof"), 15);
    assert_memory_equal(out, "e=invalid-proof", 15);
    out = (char *)guard_out(14);
    assert_int_equal(pg_scram_be_write_server_error(out, 14, "invalid-proof"), PG_SCRAM_E_SPACE);
    char buf[128];
    assert_int_equal(pg_scram_be_write_server_error(buf, sizeof buf, ""), PG_SCRAM_E_MALFORMED);
    assert_int_equal(pg_scram_be_write_server_error(buf, sizeof buf, "a,b"), PG_SCRAM_E_MALFORMED);
    assert_int_equal(pg_scram_be_write_server_error(buf, sizeof buf, NULL), PG_SCRAM_E_MALFORMED);
}

/* ---- AuthMessage ---- */

static void test_auth_message(void **state)
{
    (void)state;
    static const char want[] = "n=user,r=" RFC_CNONCE "," RFC_SERVER_FIRST "," RFC_FINAL_NO_PROOF;
    size_t n = sizeof(want) - 1;
    struct pg_scram_view a = {"n=user,r=" RFC_CNONCE, strlen("n=user,r=" RFC_CNONCE)};
    struct pg_scram_view b = {RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST)};
    struct pg_scram_view c = {RFC_FINAL_NO_PROOF, strlen(RFC_FINAL_NO_PROOF)};
    char *out = (char *)guard_out(n);
    assert_int_equal(pg_scram_write_auth_message(out, n, a, b, c), (int)n);
    assert_memory_equal(out, want, n);
    for (size_t cap = 0; cap < n; cap++)
        assert_eq_at(pg_scram_write_auth_message((char *)guard_out(cap), cap, a, b, c),
                     PG_SCRAM_E_SPACE, "auth message", cap);
}

/* ---- Stored verifier ---- */

static void test_verifier(void **state)
{
    (void)state;
    union parsed o;
    size_t len = strlen(PQ_VERIFIER);
    assert_int_equal(check("libpq verifier", P_VERIFIER, FX(PQ_VERIFIER), (int)len, 0, &o), (int)len);
    assert_int_equal(o.ver.iterations, 4096);
    assert_int_equal(o.ver.salt_len, 16);
    assert_memory_equal(o.ver.salt, pq_salt, 16);
    assert_memory_equal(o.ver.stored_key, pq_stored, 32);
    assert_memory_equal(o.ver.server_key, pq_server, 32);

    /* Written back, it is the same string, with a NUL after it. */
    char *out = (char *)guard_out(len + 1);
    assert_int_equal(pg_scram_write_verifier(out, len + 1, &o.ver), (int)len);
    assert_memory_equal(out, PQ_VERIFIER, len + 1);
    out = (char *)guard_out(len);
    assert_int_equal(pg_scram_write_verifier(out, len, &o.ver), PG_SCRAM_E_SPACE);

#define KEYS "$swSi8GVnppDI5niQO56MIFUn1Rq77yUdJHt6dEvRRzA=:jcEAFLlAbDoZhEprDJYgWgSSeR0oooVLlaZ8mZHtxDo="
    static const struct {
        const char *name;
        const uint8_t *bytes;
        size_t len;
        int rc;
        size_t off;
    } bad[] = {
        {"empty", FX(""), PG_SCRAM_E_MALFORMED, 0},
        {"md5", FX("md5a3556571e93b0d20722ba62be61e8c2d"), PG_SCRAM_E_MALFORMED, 0},
        {"SHA-1", FX("SCRAM-SHA-1$4096:AAAA" KEYS), PG_SCRAM_E_MALFORMED, 10},
        {"lower case", FX("scram-sha-256$4096:AAAA" KEYS), PG_SCRAM_E_MALFORMED, 0},
        {"prefix only", FX("SCRAM-SHA-256$"), PG_SCRAM_E_MALFORMED, 14},
        {"iterations 0", FX("SCRAM-SHA-256$0:AAAA" KEYS), PG_SCRAM_E_ITERATIONS, 14},
        {"iterations empty", FX("SCRAM-SHA-256$:AAAA" KEYS), PG_SCRAM_E_ITERATIONS, 14},
        {"iterations text", FX("SCRAM-SHA-256$4k:AAAA" KEYS), PG_SCRAM_E_ITERATIONS, 15},
        {"iterations over", FX("SCRAM-SHA-256$100000001:AAAA" KEYS), PG_SCRAM_E_ITERATIONS, 22},
        {"no salt end", FX("SCRAM-SHA-256$4096:AAAA"), PG_SCRAM_E_MALFORMED, 23},
        {"empty salt", FX("SCRAM-SHA-256$4096:" KEYS), PG_SCRAM_E_MALFORMED, 19},
        {"bad salt", FX("SCRAM-SHA-256$4096:AA.A" KEYS), PG_SCRAM_E_BASE64, 21},
        {"no server key", FX("SCRAM-SHA-256$4096:AAAA$swSi8GVnppDI5niQO56MIFUn1Rq77yUdJHt6dEvRRzA="),
         PG_SCRAM_E_MALFORMED, 68},
        {"short stored key", FX("SCRAM-SHA-256$4096:AAAA$AAAA:jcEAFLlAbDoZhEprDJYgWgSSeR0oooVLlaZ8mZHtxDo="),
         PG_SCRAM_E_KEY_LENGTH, 24},
        {"short server key", FX("SCRAM-SHA-256$4096:AAAA$swSi8GVnppDI5niQO56MIFUn1Rq77yUdJHt6dEvRRzA=:AAAA"),
         PG_SCRAM_E_KEY_LENGTH, 69},
        {"junk after", FX("SCRAM-SHA-256$4096:AAAA" KEYS "x"), PG_SCRAM_E_BASE64, 113},
        {"two colons", FX("SCRAM-SHA-256$4096:AAAA" KEYS ":"), PG_SCRAM_E_BASE64, 113},
    };
#undef KEYS
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        check(bad[i].name, P_VERIFIER, bad[i].bytes, bad[i].len, bad[i].rc, bad[i].off, &o);

    /* Salt limits: PG_SCRAM_SALT_MAX bytes is fine, 3 more are refused. */
    static char m[1200];
    struct pg_scram_verifier v;
    memset(&v, 0, sizeof v);
    v.iterations = 1;
    v.salt_len = PG_SCRAM_SALT_MAX;
    int w = pg_scram_write_verifier(m, sizeof m, &v);
    assert_true(w > 0);
    check("salt at max", P_VERIFIER, (const uint8_t *)m, (size_t)w, w, 0, &o);
    assert_int_equal(o.ver.salt_len, PG_SCRAM_SALT_MAX);
    static char m2[1200];
    memcpy(m2, m, 16);
    memcpy(m2 + 16, "AAAA", 4);
    memcpy(m2 + 20, m + 16, (size_t)w - 16);
    check("salt over max", P_VERIFIER, (const uint8_t *)m2, (size_t)w + 4, PG_SCRAM_E_TOO_LONG, 16, &o);

    /* Length limit. */
    memset(m, 'A', sizeof m);
    size_t off = 0;
    assert_int_equal(pg_scram_parse_verifier((const uint8_t *)m, PG_SCRAM_VERIFIER_MAX + 1, &o.ver,
                                             &off),
                     PG_SCRAM_E_TOO_LONG);
    assert_int_equal(off, PG_SCRAM_VERIFIER_MAX);

    char buf[300];
    v.iterations = 0;
    assert_int_equal(pg_scram_write_verifier(buf, sizeof buf, &v), PG_SCRAM_E_ITERATIONS);
    v.iterations = 1;
    v.salt_len = 0;
    assert_int_equal(pg_scram_write_verifier(buf, sizeof buf, &v), PG_SCRAM_E_TOO_LONG);
}

/* ---- Framed SASL messages ---- */

static void test_sasl_framing(void **state)
{
    (void)state;
    union parsed o;
    static const uint8_t sasl[] = "R\x00\x00\x00\x17\x00\x00\x00\x0a" "SCRAM-SHA-256\0\0";
    static const uint8_t sasl_plus[] =
        "R\x00\x00\x00\x2a\x00\x00\x00\x0a" "SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0";
    size_t n = sizeof(sasl) - 1;
    uint8_t *out = guard_out(n);
    assert_int_equal(pg_scram_be_write_auth_sasl(out, n, 0), (int)n);
    assert_memory_equal(out, sasl, n);
    assert_int_equal(pg_scram_be_write_auth_sasl(guard_out(n - 1), n - 1, 0), PG_SCRAM_E_SPACE);
    n = sizeof(sasl_plus) - 1;
    out = guard_out(n);
    assert_int_equal(pg_scram_be_write_auth_sasl(out, n, 1), (int)n);
    assert_memory_equal(out, sasl_plus, n);

    check("auth sasl", P_AUTH_SASL, FX(sasl), 24, 0, &o);
    assert_int_equal(o.as.code, 10);
    assert_int_equal(o.as.offers_scram, 1);
    assert_int_equal(o.as.offers_scram_plus, 0);
    check("auth sasl plus", P_AUTH_SASL, FX(sasl_plus), 43, 0, &o);
    assert_int_equal(o.as.offers_scram, 1);
    assert_int_equal(o.as.offers_scram_plus, 1);
    check("auth sasl other", P_AUTH_SASL, FX("R\x00\x00\x00\x0f\x00\x00\x00\x0a" "OTHER\0\0"), 16, 0,
          &o);
    assert_int_equal(o.as.offers_scram, 0);
    assert_int_equal(o.as.offers_scram_plus, 0);

    static const uint8_t cont[] = "R\x00\x00\x00\x08\x00\x00\x00\x0b";
    char sf[] = RFC_SERVER_FIRST;
    uint8_t buf[256];
    int w = pg_scram_be_write_auth_sasl_continue(buf, sizeof buf, sf, strlen(sf));
    assert_int_equal(w, 9 + (int)strlen(sf));
    assert_int_equal(pg_get_u32(buf + 1), 8 + strlen(sf));
    assert_memory_equal(buf + 5, cont + 5, 4);
    assert_memory_equal(buf + 9, sf, strlen(sf));
    check("sasl continue", P_AUTH_SASL, buf, (size_t)w, w, 0, &o);
    assert_int_equal(o.as.code, 11);
    assert_int_equal(o.as.data_len, strlen(sf));
    assert_memory_equal(o.as.data, sf, strlen(sf));

    w = pg_scram_be_write_auth_sasl_final(buf, sizeof buf, RFC_SERVER_FINAL, 46);
    assert_int_equal(w, 55);
    assert_memory_equal(buf, "R\x00\x00\x00\x36\x00\x00\x00\x0c" RFC_SERVER_FINAL, 55);
    check("sasl final", P_AUTH_SASL, buf, 55, 55, 0, &o);
    assert_int_equal(o.as.code, 12);
    assert_int_equal(o.as.data_len, 46);
    assert_int_equal(pg_scram_be_write_auth_sasl_final(guard_out(54), 54, RFC_SERVER_FINAL, 46),
                     PG_SCRAM_E_SPACE);

    static const struct {
        const char *name;
        const uint8_t *bytes;
        size_t len;
        int rc;
        size_t off;
    } bad[] = {
        {"short", FX("R\x00\x00\x00\x08\x00\x00\x00"), PG_SCRAM_E_MALFORMED, 0},
        {"not R", FX("E\x00\x00\x00\x08\x00\x00\x00\x0b"), PG_SCRAM_E_MALFORMED, 0},
        {"length", FX("R\x00\x00\x00\x09\x00\x00\x00\x0b"), PG_SCRAM_E_MALFORMED, 1},
        {"code 5", FX("R\x00\x00\x00\x0c\x00\x00\x00\x05" "salt"), PG_SCRAM_E_MALFORMED, 5},
        {"code 0", FX("R\x00\x00\x00\x08\x00\x00\x00\x00"), PG_SCRAM_E_MALFORMED, 5},
        {"empty list", FX("R\x00\x00\x00\x08\x00\x00\x00\x0a"), PG_SCRAM_E_MALFORMED, 9},
        {"list unterminated", FX("R\x00\x00\x00\x0b\x00\x00\x00\x0a" "ABC"), PG_SCRAM_E_MALFORMED, 9},
        {"list no end", FX("R\x00\x00\x00\x0c\x00\x00\x00\x0a" "ABC\0"), PG_SCRAM_E_MALFORMED, 13},
        {"after list", FX("R\x00\x00\x00\x0e\x00\x00\x00\x0a" "ABC\0\0x"), PG_SCRAM_E_MALFORMED, 14},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        check(bad[i].name, P_AUTH_SASL, bad[i].bytes, bad[i].len, bad[i].rc, bad[i].off, &o);

    /* SASLInitialResponse and SASLResponse, and back through the body parser. */
    static const uint8_t init[] =
        "p\x00\x00\x00\x36" "SCRAM-SHA-256\0" "\x00\x00\x00\x20" RFC_CLIENT_FIRST;
    n = sizeof(init) - 1;
    out = guard_out(n);
    assert_int_equal(pg_scram_fe_write_sasl_initial(out, n, "SCRAM-SHA-256", RFC_CLIENT_FIRST, 32),
                     (int)n);
    assert_memory_equal(out, init, n);
    assert_int_equal(pg_scram_fe_write_sasl_initial(guard_out(n - 1), n - 1, "SCRAM-SHA-256",
                                                    RFC_CLIENT_FIRST, 32),
                     PG_SCRAM_E_SPACE);
    check("written initial", P_SASL_INITIAL, init + 5, n - 5, (int)n - 5, 0, &o);
    assert_int_equal(o.si.data_len, 32);
    assert_int_equal(pg_scram_fe_write_sasl_initial(buf, sizeof buf, "M", NULL, 0), 11);
    assert_memory_equal(buf, "p\x00\x00\x00\x0a" "M\0\xff\xff\xff\xff", 11);

    n = 5 + strlen(RFC_CLIENT_FINAL);
    out = guard_out(n);
    assert_int_equal(pg_scram_fe_write_sasl_response(out, n, RFC_CLIENT_FINAL, n - 5), (int)n);
    assert_memory_equal(out, "p\x00\x00\x00\x6e" RFC_CLIENT_FINAL, n);
    assert_int_equal(pg_scram_fe_write_sasl_response(guard_out(n - 1), n - 1, RFC_CLIENT_FINAL,
                                                     n - 5),
                     PG_SCRAM_E_SPACE);
    assert_int_equal(pg_scram_fe_write_sasl_response(buf, SIZE_MAX, buf, PG_SCRAM_SASL_MAX + 1),
                     PG_SCRAM_E_SPACE);
}

/* ---- The whole exchange through the codec: each side reads what the other wrote ---- */

static void test_exchange_roundtrip(void **state)
{
    (void)state;
    char cfirst[128], sfirst[256], cfinal[256], sfinal[64], am[512];
    size_t bare_off;
    int n1 = pg_scram_fe_write_client_first(cfirst, sizeof cfirst, PG_SCRAM_CBIND_N, NULL,
                                            RFC_CNONCE, 20, &bare_off);
    struct pg_scram_client_first cf;
    assert_int_equal(pg_scram_fe_parse_client_first((const uint8_t *)cfirst, (size_t)n1, &cf, NULL),
                     n1);
    int n2 = pg_scram_be_write_server_first(sfirst, sizeof sfirst, cf.nonce.ptr, cf.nonce.len,
                                            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0", 30, rfc_salt, 16, 4096);
    assert_int_equal(n2, (int)strlen(RFC_SERVER_FIRST));
    struct pg_scram_server_first sf;
    uint8_t salt[32];
    assert_int_equal(pg_scram_be_parse_server_first((const uint8_t *)sfirst, (size_t)n2, RFC_CNONCE,
                                                    20, salt, sizeof salt, &sf, NULL),
                     n2);
    int n3 = pg_scram_fe_write_client_final_without_proof(cfinal, sizeof cfinal, cfirst, bare_off,
                                                          NULL, 0, sf.nonce.ptr, sf.nonce.len);
    struct pg_scram_view cfb = {cfirst + bare_off, (size_t)n1 - bare_off};
    struct pg_scram_view sfv = {sfirst, (size_t)n2};
    struct pg_scram_view wp = {cfinal, (size_t)n3};
    int n4 = pg_scram_write_auth_message(am, sizeof am, cfb, sfv, wp);
    static const char want_am[] = "n=,r=" RFC_CNONCE "," RFC_SERVER_FIRST "," RFC_FINAL_NO_PROOF;
    assert_int_equal(n4, (int)sizeof(want_am) - 1);
    assert_memory_equal(am, want_am, sizeof(want_am) - 1);
    int n5 = pg_scram_fe_write_client_final(cfinal, sizeof cfinal, cfinal, (size_t)n3, rfc_proof);
    struct pg_scram_client_final fin;
    assert_int_equal(pg_scram_fe_parse_client_final((const uint8_t *)cfinal, (size_t)n5, sfirst + 2,
                                                    sf.nonce.len, &fin, NULL),
                     n5);
    assert_int_equal(pg_scram_check_cbind(&fin, &cf, NULL, 0), 0);
    assert_int_equal(fin.without_proof.len, (size_t)n3);
    assert_memory_equal(fin.proof, rfc_proof, 32);
    int n6 = pg_scram_be_write_server_final(sfinal, sizeof sfinal, rfc_server_sig);
    struct pg_scram_server_final sfin;
    assert_int_equal(pg_scram_be_parse_server_final((const uint8_t *)sfinal, (size_t)n6, &sfin, NULL),
                     n6);
    assert_memory_equal(sfin.signature, rfc_server_sig, 32);
}

/* ---- Seeds for fuzz_pg_scram ---- */

static int write_file(const char *dir, const char *name, const void *bytes, size_t len)
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

/*
 * One seed in fuzz_pg_scram's format: a selector byte, then for the server-first and
 * client-final parsers a nonce-length byte and that many nonce bytes, then the message.
 */
static int seed(const char *dir, const char *name, uint8_t sel, const char *nonce,
                const void *msg, size_t len)
{
    static uint8_t buf[4096];
    size_t p = 0;
    buf[p++] = sel;
    if (sel == P_SERVER_FIRST || sel == P_CLIENT_FINAL) {
        size_t k = nonce ? strlen(nonce) : 0;
        buf[p++] = (uint8_t)k;
        if (k > 0)
            memcpy(buf + p, nonce, k);
        p += k;
    }
    if (p + len > sizeof buf)
        return 1;
    memcpy(buf + p, msg, len);
    return write_file(dir, name, buf, p + len);
}

#define SEED(name, sel, nonce, lit) seed(dir, name, sel, nonce, lit, sizeof(lit) - 1)

static int write_corpus(const char *root)
{
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/scram", root);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "cannot create %s: %s\n", dir, strerror(errno));
        return 1;
    }
    int rc = 0;
    rc |= SEED("sasl_initial", P_SASL_INITIAL, NULL,
               "SCRAM-SHA-256\0" "\x00\x00\x00\x20" RFC_CLIENT_FIRST);
    rc |= SEED("sasl_initial_none", P_SASL_INITIAL, NULL, "SCRAM-SHA-256-PLUS\0" "\xff\xff\xff\xff");
    rc |= SEED("client_first_rfc", P_CLIENT_FIRST, NULL, RFC_CLIENT_FIRST);
    rc |= SEED("client_first_libpq", P_CLIENT_FIRST, NULL, "n,,n=,r=" RFC_CNONCE);
    rc |= SEED("client_first_y", P_CLIENT_FIRST, NULL, "y,,n=,r=abc,x=1");
    rc |= SEED("client_first_p", P_CLIENT_FIRST, NULL, "p=tls-server-end-point,,n=,r=abc");
    rc |= SEED("client_first_authzid", P_CLIENT_FIRST, NULL, "n,a=bob,n=,r=a");
    rc |= SEED("client_first_mext", P_CLIENT_FIRST, NULL, "n,,m=foo,n=,r=a");
    rc |= SEED("server_first_rfc", P_SERVER_FIRST, RFC_CNONCE, RFC_SERVER_FIRST);
    rc |= SEED("server_first_ext", P_SERVER_FIRST, RFC_CNONCE, "r=" RFC_NONCE ",s=AAAA,i=1,z=zz");
    rc |= SEED("server_first_mext", P_SERVER_FIRST, RFC_CNONCE, "m=x,r=" RFC_NONCE ",s=AAAA,i=1");
    rc |= SEED("server_first_iter", P_SERVER_FIRST, RFC_CNONCE, "r=" RFC_NONCE ",s=AAAA,i=100000001");
    rc |= SEED("client_final_rfc", P_CLIENT_FINAL, RFC_NONCE, RFC_CLIENT_FINAL);
    rc |= SEED("client_final_nocheck", P_CLIENT_FINAL, NULL, RFC_CLIENT_FINAL);
    rc |= SEED("client_final_tls", P_CLIENT_FINAL, NULL,
               "c=cD10bHMtc2VydmVyLWVuZC1wb2ludCwsAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=,"
               "r=n,x=1,p=" RFC_PROOF_B64);
    rc |= SEED("server_final_rfc", P_SERVER_FINAL, NULL, RFC_SERVER_FINAL);
    rc |= SEED("server_final_error", P_SERVER_FINAL, NULL, "e=invalid-proof");
    rc |= SEED("verifier_libpq", P_VERIFIER, NULL, PQ_VERIFIER);
    rc |= SEED("verifier_bad", P_VERIFIER, NULL, "SCRAM-SHA-256$0:AAAA$AAAA:AAAA");
    rc |= SEED("base64", 6, NULL, "Zm9vYmE=");
    rc |= SEED("base64_bad", 6, NULL, "Zh==");
    rc |= SEED("auth_sasl_plus", P_AUTH_SASL, NULL,
               "R\x00\x00\x00\x2a\x00\x00\x00\x0a" "SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0");
    rc |= SEED("auth_sasl_final", P_AUTH_SASL, NULL,
               "R\x00\x00\x00\x36\x00\x00\x00\x0c" RFC_SERVER_FINAL);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--write-corpus") == 0)
        return write_corpus(argv[2]);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(guard_test_traps),
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_base64_vectors),
        cmocka_unit_test(test_base64_strict),
        cmocka_unit_test(test_sasl_initial),
        cmocka_unit_test(test_client_first),
        cmocka_unit_test(test_client_first_limits),
        cmocka_unit_test(test_write_client_first),
        cmocka_unit_test(test_server_first),
        cmocka_unit_test(test_write_server_first),
        cmocka_unit_test(test_client_final),
        cmocka_unit_test(test_check_cbind),
        cmocka_unit_test(test_cbind_verdict),
        cmocka_unit_test(test_cbind_round_trip),
        cmocka_unit_test(test_write_client_final),
        cmocka_unit_test(test_server_final),
        cmocka_unit_test(test_write_server_final),
        cmocka_unit_test(test_auth_message),
        cmocka_unit_test(test_verifier),
        cmocka_unit_test(test_sasl_framing),
        cmocka_unit_test(test_exchange_roundtrip),
    };
    return cmocka_run_group_tests(tests, guard_setup, guard_teardown);
}
