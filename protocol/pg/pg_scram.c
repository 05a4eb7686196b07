/* SCRAM-SHA-256 message codec. See pg_scram.h for the contracts. */
#include "pg_scram.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "pg_proto.h"

const char *pg_scram_strerror(int err)
{
    switch (err) {
    case PG_SCRAM_E_MALFORMED: return "malformed SCRAM message";
    case PG_SCRAM_E_TOO_LONG: return "SCRAM message or field over its length limit";
    case PG_SCRAM_E_BASE64: return "invalid base64 in SCRAM message";
    case PG_SCRAM_E_NONCE: return "invalid or mismatched SCRAM nonce";
    case PG_SCRAM_E_ITERATIONS: return "invalid SCRAM iteration count";
    case PG_SCRAM_E_EXTENSION: return "unsupported mandatory SCRAM extension";
    case PG_SCRAM_E_AUTHZID: return "SCRAM authorization identity not supported";
    case PG_SCRAM_E_KEY_LENGTH: return "SCRAM proof, signature or key is not 32 bytes";
    case PG_SCRAM_E_CBIND: return "SCRAM channel binding mismatch";
    case PG_SCRAM_E_SPACE: return "output buffer too small";
    default: return "unknown error";
    }
}

/* ---- base64 ---- */

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* The value of a base64 character, or -1. */
static int b64_value(uint8_t c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

int pg_scram_b64_encode(const uint8_t *in, size_t n, char *out, size_t cap)
{
    if (n > (size_t)INT_MAX / 4 * 3 - 3 || pg_scram_b64_len(n) > cap)
        return PG_SCRAM_E_SPACE;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = b64_alphabet[(v >> 18) & 63];
        out[o++] = b64_alphabet[(v >> 12) & 63];
        out[o++] = i + 1 < n ? b64_alphabet[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? b64_alphabet[v & 63] : '=';
    }
    return (int)o;
}

/*
 * Validates n base64 characters. Returns 0 and sets *dlen to the decoded length, or -1 with
 * *bad at the offset of the first offending character.
 */
static int b64_check(const uint8_t *in, size_t n, size_t *dlen, size_t *bad)
{
    if (n % 4 != 0) {
        *bad = n - n % 4; /* the incomplete last group */
        return -1;
    }
    size_t pad = 0;
    if (n >= 4 && in[n - 1] == '=')
        pad = in[n - 2] == '=' ? 2 : 1;
    for (size_t i = 0; i < n - pad; i++) {
        if (b64_value(in[i]) < 0) {
            *bad = i;
            return -1;
        }
    }
    /* Bits that padding leaves unused must be zero, or two encodings mean the same bytes. */
    if (pad == 1 && (b64_value(in[n - 2]) & 3) != 0) {
        *bad = n - 2;
        return -1;
    }
    if (pad == 2 && (b64_value(in[n - 3]) & 15) != 0) {
        *bad = n - 3;
        return -1;
    }
    *dlen = n / 4 * 3 - pad;
    return 0;
}

/* Decodes n pre-checked characters into out, which has room. */
static size_t b64_put(const uint8_t *in, size_t n, uint8_t *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        uint32_t v = 0;
        int got = 0;
        for (int k = 0; k < 4; k++) {
            int d = b64_value(in[i + (size_t)k]);
            if (d < 0)
                break;
            v |= (uint32_t)d << (18 - 6 * k);
            got++;
        }
        out[o++] = (uint8_t)(v >> 16);
        if (got >= 3)
            out[o++] = (uint8_t)(v >> 8);
        if (got == 4)
            out[o++] = (uint8_t)v;
    }
    return o;
}

/* Decodes with an error offset; returns bytes, PG_SCRAM_E_BASE64 or PG_SCRAM_E_SPACE. */
static int b64_decode_at(const uint8_t *in, size_t n, uint8_t *out, size_t cap, size_t *bad)
{
    size_t dlen = 0;
    if (b64_check(in, n, &dlen, bad) < 0)
        return PG_SCRAM_E_BASE64;
    if (dlen > cap || dlen > INT_MAX) {
        *bad = 0;
        return PG_SCRAM_E_SPACE;
    }
    return (int)b64_put(in, n, out);
}

int pg_scram_b64_decode(const char *in, size_t n, uint8_t *out, size_t cap)
{
    size_t bad;
    return b64_decode_at((const uint8_t *)in, n, out, cap, &bad);
}

/* ---- The cursor the parsers read through ---- */

struct sc_cur {
    const uint8_t *buf;
    size_t len;
    size_t pos;
    size_t *err_off;
};

/* Records the offset of an error and returns the code. */
static int sc_fail(struct sc_cur *c, size_t at, int code)
{
    if (c->err_off)
        *c->err_off = at;
    return code;
}

static int sc_at_end(const struct sc_cur *c) { return c->pos >= c->len; }

/* Whether the next two bytes are "<name>=". */
static int sc_peek_attr(const struct sc_cur *c, char name)
{
    return c->len - c->pos >= 2 && c->buf[c->pos] == (uint8_t)name && c->buf[c->pos + 1] == '=';
}

/* Consumes a ',' or fails with PG_SCRAM_E_MALFORMED at the current byte. */
static int sc_comma(struct sc_cur *c)
{
    if (sc_at_end(c) || c->buf[c->pos] != ',')
        return sc_fail(c, c->pos, PG_SCRAM_E_MALFORMED);
    c->pos++;
    return 0;
}

/*
 * Reads "<name>=<value>" where the value runs to the next ',' or the end and holds no NUL.
 * The value may be empty; callers that need one check. Returns 0 or PG_SCRAM_E_MALFORMED.
 */
static int sc_attr(struct sc_cur *c, char name, struct pg_scram_view *v)
{
    if (!sc_peek_attr(c, name))
        return sc_fail(c, c->pos, PG_SCRAM_E_MALFORMED);
    c->pos += 2;
    size_t start = c->pos;
    while (c->pos < c->len && c->buf[c->pos] != ',') {
        if (c->buf[c->pos] == 0)
            return sc_fail(c, c->pos, PG_SCRAM_E_MALFORMED);
        c->pos++;
    }
    v->ptr = (const char *)c->buf + start;
    v->len = c->pos - start;
    return 0;
}

/* Reads one extension "<ALPHA>=<1*value-char>"; the content is ignored. */
static int sc_extension(struct sc_cur *c)
{
    uint8_t a = c->pos < c->len ? c->buf[c->pos] : 0;
    if (!((a >= 'a' && a <= 'z') || (a >= 'A' && a <= 'Z')))
        return sc_fail(c, c->pos, PG_SCRAM_E_MALFORMED);
    struct pg_scram_view v;
    size_t at = c->pos;
    int rc = sc_attr(c, (char)a, &v);
    if (rc < 0)
        return rc;
    if (v.len == 0)
        return sc_fail(c, at + 2, PG_SCRAM_E_MALFORMED);
    return 0;
}

/* Reads ",ext" pieces up to the end of the message. */
static int sc_extensions_to_end(struct sc_cur *c)
{
    while (!sc_at_end(c)) {
        int rc = sc_comma(c);
        if (rc == 0)
            rc = sc_extension(c);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* printable = %x21-2B / %x2D-7E: visible ASCII without ','. */
static int scram_printable(uint8_t ch) { return ch >= 0x21 && ch <= 0x7e && ch != ','; }

/* Checks a nonce view at offset at: 1 to PG_SCRAM_NONCE_MAX printable characters. */
static int sc_check_nonce(struct sc_cur *c, struct pg_scram_view v, size_t at)
{
    if (v.len == 0 || v.len > PG_SCRAM_NONCE_MAX)
        return sc_fail(c, at, PG_SCRAM_E_NONCE);
    for (size_t i = 0; i < v.len; i++) {
        if (!scram_printable((uint8_t)v.ptr[i]))
            return sc_fail(c, at + i, PG_SCRAM_E_NONCE);
    }
    return 0;
}

/*
 * Parses an iteration count: decimal digits without a leading zero, 1 to
 * PG_SCRAM_ITERATIONS_MAX. Returns 0, or PG_SCRAM_E_ITERATIONS with *bad at the offending digit.
 */
static int parse_iterations(const char *s, size_t n, uint32_t *out, size_t *bad)
{
    uint64_t v = 0;
    if (n == 0 || s[0] == '0') {
        *bad = 0;
        return PG_SCRAM_E_ITERATIONS;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            *bad = i;
            return PG_SCRAM_E_ITERATIONS;
        }
        v = v * 10 + (uint64_t)(s[i] - '0');
        if (v > PG_SCRAM_ITERATIONS_MAX) {
            *bad = i;
            return PG_SCRAM_E_ITERATIONS;
        }
    }
    *out = (uint32_t)v;
    return 0;
}

/* Decodes a base64 view at offset at into out; maps errors to an offset in the message. */
static int sc_b64(struct sc_cur *c, struct pg_scram_view v, size_t at, uint8_t *out, size_t cap,
                  int space_code, size_t *got)
{
    size_t bad = 0;
    int n = b64_decode_at((const uint8_t *)v.ptr, v.len, out, cap, &bad);
    if (n == PG_SCRAM_E_SPACE)
        return sc_fail(c, at, space_code);
    if (n < 0)
        return sc_fail(c, at + bad, n);
    *got = (size_t)n;
    return 0;
}

static void sc_init(struct sc_cur *c, const uint8_t *buf, size_t len, size_t *err_off)
{
    c->buf = buf;
    c->len = len;
    c->pos = 0;
    c->err_off = err_off;
}

/* ---- client-first-message ---- */

/* cb-name = 1*(ALPHA / DIGIT / "." / "-") */
static int cbind_name_char(uint8_t ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '-';
}

/* Reads the gs2 header up to and including its second ','. */
static int client_first_gs2(struct sc_cur *c, struct pg_scram_client_first *out)
{
    if (sc_at_end(c))
        return sc_fail(c, 0, PG_SCRAM_E_MALFORMED);
    uint8_t flag = c->buf[0];
    out->cbind_name.ptr = (const char *)c->buf;
    out->cbind_name.len = 0;
    if (flag == 'n' || flag == 'y') {
        c->pos = 1;
    } else if (flag == 'p') {
        struct pg_scram_view name;
        int rc = sc_attr(c, 'p', &name);
        if (rc < 0)
            return rc;
        for (size_t i = 0; i < name.len; i++) {
            if (!cbind_name_char((uint8_t)name.ptr[i]))
                return sc_fail(c, 2 + i, PG_SCRAM_E_MALFORMED);
        }
        if (name.len == 0)
            return sc_fail(c, 2, PG_SCRAM_E_MALFORMED);
        if (name.len > PG_SCRAM_CBIND_NAME_MAX)
            return sc_fail(c, 2 + PG_SCRAM_CBIND_NAME_MAX, PG_SCRAM_E_TOO_LONG);
        out->cbind_name = name;
    } else {
        return sc_fail(c, 0, PG_SCRAM_E_MALFORMED);
    }
    out->cbind_flag = (enum pg_scram_cbind_flag)flag;
    int rc = sc_comma(c);
    if (rc < 0)
        return rc;
    /* PostgreSQL refuses an authorization identity rather than ignoring it. */
    if (sc_peek_attr(c, 'a'))
        return sc_fail(c, c->pos, PG_SCRAM_E_AUTHZID);
    rc = sc_comma(c);
    if (rc < 0)
        return rc;
    out->gs2_header.ptr = (const char *)c->buf;
    out->gs2_header.len = c->pos;
    return 0;
}

int pg_scram_fe_parse_client_first(const uint8_t *buf, size_t len,
                                   struct pg_scram_client_first *out, size_t *err_off)
{
    struct sc_cur c;
    sc_init(&c, buf, len, err_off);
    if (len > PG_SCRAM_MSG_MAX)
        return sc_fail(&c, PG_SCRAM_MSG_MAX, PG_SCRAM_E_TOO_LONG);
    int rc = client_first_gs2(&c, out);
    if (rc < 0)
        return rc;
    size_t bare = c.pos;
    if (sc_peek_attr(&c, 'm'))
        return sc_fail(&c, c.pos, PG_SCRAM_E_EXTENSION);
    if ((rc = sc_attr(&c, 'n', &out->username)) < 0 || (rc = sc_comma(&c)) < 0)
        return rc;
    size_t nonce_at = c.pos + 2;
    if ((rc = sc_attr(&c, 'r', &out->nonce)) < 0 ||
        (rc = sc_check_nonce(&c, out->nonce, nonce_at)) < 0)
        return rc;
    if ((rc = sc_extensions_to_end(&c)) < 0)
        return rc;
    out->bare.ptr = (const char *)buf + bare;
    out->bare.len = len - bare;
    return (int)len;
}

/* Copies n bytes at *p if they fit cap; returns 0 or PG_SCRAM_E_SPACE. */
static int put(char *out, size_t cap, size_t *p, const void *s, size_t n)
{
    if (n > cap || *p > cap - n)
        return PG_SCRAM_E_SPACE;
    if (n > 0)
        memmove(out + *p, s, n);
    *p += n;
    return 0;
}

static int put_str(char *out, size_t cap, size_t *p, const char *s)
{
    return put(out, cap, p, s, strlen(s));
}

static int put_b64(char *out, size_t cap, size_t *p, const uint8_t *in, size_t n)
{
    int w = pg_scram_b64_encode(in, n, out + *p, cap - *p);
    if (w < 0)
        return w;
    *p += (size_t)w;
    return 0;
}

/* Checks a nonce given to an encoder. */
static int nonce_ok(const char *s, size_t n)
{
    if (s == NULL || n == 0 || n > PG_SCRAM_NONCE_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (!scram_printable((uint8_t)s[i]))
            return 0;
    }
    return 1;
}

int pg_scram_fe_write_client_first(char *out, size_t cap, enum pg_scram_cbind_flag flag,
                                   const char *cbind_name, const char *nonce, size_t nonce_len,
                                   size_t *bare_off)
{
    if (!nonce_ok(nonce, nonce_len))
        return PG_SCRAM_E_NONCE;
    size_t p = 0;
    int rc;
    if (flag == PG_SCRAM_CBIND_N || flag == PG_SCRAM_CBIND_Y) {
        rc = put(out, cap, &p, flag == PG_SCRAM_CBIND_N ? "n,," : "y,,", 3);
    } else if (flag == PG_SCRAM_CBIND_P) {
        size_t n = cbind_name ? strlen(cbind_name) : 0;
        for (size_t i = 0; i < n; i++) {
            if (!cbind_name_char((uint8_t)cbind_name[i]))
                return PG_SCRAM_E_MALFORMED;
        }
        if (n == 0 || n > PG_SCRAM_CBIND_NAME_MAX)
            return PG_SCRAM_E_MALFORMED;
        if ((rc = put(out, cap, &p, "p=", 2)) == 0 && (rc = put(out, cap, &p, cbind_name, n)) == 0)
            rc = put(out, cap, &p, ",,", 2);
    } else {
        return PG_SCRAM_E_MALFORMED;
    }
    if (rc < 0)
        return rc;
    size_t bare = p;
    if ((rc = put(out, cap, &p, "n=,r=", 5)) < 0 || (rc = put(out, cap, &p, nonce, nonce_len)) < 0)
        return rc;
    if (p > INT_MAX)
        return PG_SCRAM_E_SPACE;
    if (bare_off)
        *bare_off = bare;
    return (int)p;
}

/* ---- client-final-message ---- */

/* Reads ",p=<proof>" at the end, after any extensions; records where the proof starts. */
static int client_final_tail(struct sc_cur *c, struct pg_scram_client_final *out)
{
    for (;;) {
        size_t comma = c->pos;
        int rc = sc_comma(c); /* at the end: the proof is missing */
        if (rc < 0)
            return rc;
        if (sc_peek_attr(c, 'p')) {
            out->without_proof.ptr = (const char *)c->buf;
            out->without_proof.len = comma;
            struct pg_scram_view v;
            size_t at = c->pos + 2, got = 0;
            if ((rc = sc_attr(c, 'p', &v)) < 0)
                return rc;
            if (!sc_at_end(c)) /* the proof is the last attribute */
                return sc_fail(c, c->pos, PG_SCRAM_E_MALFORMED);
            if ((rc = sc_b64(c, v, at, out->proof, sizeof out->proof, PG_SCRAM_E_KEY_LENGTH,
                             &got)) < 0)
                return rc;
            if (got != PG_SCRAM_KEY_LEN)
                return sc_fail(c, at, PG_SCRAM_E_KEY_LENGTH);
            return 0;
        }
        if ((rc = sc_extension(c)) < 0)
            return rc;
    }
}

int pg_scram_fe_parse_client_final(const uint8_t *buf, size_t len, const char *expected_nonce,
                                   size_t expected_nonce_len, struct pg_scram_client_final *out,
                                   size_t *err_off)
{
    struct sc_cur c;
    sc_init(&c, buf, len, err_off);
    if (len > PG_SCRAM_MSG_MAX)
        return sc_fail(&c, PG_SCRAM_MSG_MAX, PG_SCRAM_E_TOO_LONG);
    int rc;
    size_t at = 2;
    if ((rc = sc_attr(&c, 'c', &out->cbind_b64)) < 0)
        return rc;
    if ((rc = sc_b64(&c, out->cbind_b64, at, out->cbind, sizeof out->cbind, PG_SCRAM_E_CBIND,
                     &out->cbind_len)) < 0)
        return rc;
    if (out->cbind_len == 0) /* a gs2 header is never empty */
        return sc_fail(&c, at, PG_SCRAM_E_MALFORMED);
    if ((rc = sc_comma(&c)) < 0)
        return rc;
    at = c.pos + 2;
    if ((rc = sc_attr(&c, 'r', &out->nonce)) < 0 || (rc = sc_check_nonce(&c, out->nonce, at)) < 0)
        return rc;
    if (expected_nonce != NULL &&
        (out->nonce.len != expected_nonce_len ||
         memcmp(out->nonce.ptr, expected_nonce, expected_nonce_len) != 0))
        return sc_fail(&c, at, PG_SCRAM_E_NONCE);
    if ((rc = client_final_tail(&c, out)) < 0)
        return rc;
    return (int)len;
}

int pg_scram_fe_write_client_final_without_proof(char *out, size_t cap, const char *gs2_header,
                                                 size_t gs2_len, const uint8_t *cbind_data,
                                                 size_t cbind_len, const char *nonce,
                                                 size_t nonce_len)
{
    uint8_t input[PG_SCRAM_CBIND_DATA_MAX];
    if (gs2_len == 0 || gs2_len > sizeof input || cbind_len > sizeof input - gs2_len)
        return PG_SCRAM_E_CBIND;
    if (!nonce_ok(nonce, nonce_len))
        return PG_SCRAM_E_NONCE;
    memcpy(input, gs2_header, gs2_len);
    if (cbind_len > 0)
        memcpy(input + gs2_len, cbind_data, cbind_len);
    size_t p = 0;
    int rc;
    if ((rc = put(out, cap, &p, "c=", 2)) < 0 ||
        (rc = put_b64(out, cap, &p, input, gs2_len + cbind_len)) < 0 ||
        (rc = put(out, cap, &p, ",r=", 3)) < 0 || (rc = put(out, cap, &p, nonce, nonce_len)) < 0)
        return rc;
    return p > INT_MAX ? PG_SCRAM_E_SPACE : (int)p;
}

int pg_scram_fe_write_client_final(char *out, size_t cap, const char *without_proof,
                                   size_t without_proof_len, const uint8_t proof[PG_SCRAM_KEY_LEN])
{
    size_t p = 0;
    int rc;
    if ((rc = put(out, cap, &p, without_proof, without_proof_len)) < 0 ||
        (rc = put(out, cap, &p, ",p=", 3)) < 0 ||
        (rc = put_b64(out, cap, &p, proof, PG_SCRAM_KEY_LEN)) < 0)
        return rc;
    return p > INT_MAX ? PG_SCRAM_E_SPACE : (int)p;
}

int pg_scram_check_cbind(const struct pg_scram_client_final *fin,
                         const struct pg_scram_client_first *first, const uint8_t *cbind_data,
                         size_t cbind_len)
{
    size_t h = first->gs2_header.len;
    size_t extra = first->cbind_flag == PG_SCRAM_CBIND_P ? cbind_len : 0;
    if (fin->cbind_len != h + extra || memcmp(fin->cbind, first->gs2_header.ptr, h) != 0)
        return PG_SCRAM_E_CBIND;
    if (extra > 0 && memcmp(fin->cbind + h, cbind_data, extra) != 0)
        return PG_SCRAM_E_CBIND;
    return 0;
}

/* ---- server-first-message ---- */

int pg_scram_be_parse_server_first(const uint8_t *buf, size_t len, const char *client_nonce,
                                   size_t client_nonce_len, uint8_t *salt, size_t salt_cap,
                                   struct pg_scram_server_first *out, size_t *err_off)
{
    struct sc_cur c;
    sc_init(&c, buf, len, err_off);
    if (len > PG_SCRAM_MSG_MAX)
        return sc_fail(&c, PG_SCRAM_MSG_MAX, PG_SCRAM_E_TOO_LONG);
    if (sc_peek_attr(&c, 'm'))
        return sc_fail(&c, 0, PG_SCRAM_E_EXTENSION);
    int rc;
    if ((rc = sc_attr(&c, 'r', &out->nonce)) < 0 || (rc = sc_check_nonce(&c, out->nonce, 2)) < 0)
        return rc;
    /* The server must echo our nonce and add its own, or the exchange is not fresh. */
    if (client_nonce == NULL || client_nonce_len == 0 || out->nonce.len <= client_nonce_len ||
        memcmp(out->nonce.ptr, client_nonce, client_nonce_len) != 0)
        return sc_fail(&c, 2, PG_SCRAM_E_NONCE);
    struct pg_scram_view v;
    if ((rc = sc_comma(&c)) < 0)
        return rc;
    size_t at = c.pos + 2;
    if ((rc = sc_attr(&c, 's', &v)) < 0 ||
        (rc = sc_b64(&c, v, at, salt, salt_cap, PG_SCRAM_E_TOO_LONG, &out->salt_len)) < 0)
        return rc;
    if (out->salt_len == 0)
        return sc_fail(&c, at, PG_SCRAM_E_MALFORMED);
    if ((rc = sc_comma(&c)) < 0)
        return rc;
    at = c.pos + 2;
    if ((rc = sc_attr(&c, 'i', &v)) < 0)
        return rc;
    size_t bad = 0;
    if (parse_iterations(v.ptr, v.len, &out->iterations, &bad) < 0)
        return sc_fail(&c, at + bad, PG_SCRAM_E_ITERATIONS);
    if ((rc = sc_extensions_to_end(&c)) < 0)
        return rc;
    return (int)len;
}

int pg_scram_be_write_server_first(char *out, size_t cap, const char *client_nonce,
                                   size_t client_nonce_len, const char *server_nonce,
                                   size_t server_nonce_len, const uint8_t *salt, size_t salt_len,
                                   uint32_t iterations)
{
    if (!nonce_ok(client_nonce, client_nonce_len) || !nonce_ok(server_nonce, server_nonce_len) ||
        client_nonce_len + server_nonce_len > PG_SCRAM_NONCE_MAX)
        return PG_SCRAM_E_NONCE;
    if (salt_len == 0 || salt_len > PG_SCRAM_SALT_MAX)
        return PG_SCRAM_E_TOO_LONG;
    if (iterations == 0 || iterations > PG_SCRAM_ITERATIONS_MAX)
        return PG_SCRAM_E_ITERATIONS;
    char num[16];
    snprintf(num, sizeof num, "%u", (unsigned)iterations);
    size_t p = 0;
    int rc;
    if ((rc = put(out, cap, &p, "r=", 2)) < 0 ||
        (rc = put(out, cap, &p, client_nonce, client_nonce_len)) < 0 ||
        (rc = put(out, cap, &p, server_nonce, server_nonce_len)) < 0 ||
        (rc = put(out, cap, &p, ",s=", 3)) < 0 || (rc = put_b64(out, cap, &p, salt, salt_len)) < 0 ||
        (rc = put(out, cap, &p, ",i=", 3)) < 0 || (rc = put_str(out, cap, &p, num)) < 0)
        return rc;
    return (int)p;
}

/* ---- server-final-message ---- */

int pg_scram_be_parse_server_final(const uint8_t *buf, size_t len,
                                   struct pg_scram_server_final *out, size_t *err_off)
{
    struct sc_cur c;
    sc_init(&c, buf, len, err_off);
    if (len > PG_SCRAM_MSG_MAX)
        return sc_fail(&c, PG_SCRAM_MSG_MAX, PG_SCRAM_E_TOO_LONG);
    int rc;
    struct pg_scram_view v;
    if (sc_peek_attr(&c, 'e')) {
        if ((rc = sc_attr(&c, 'e', &v)) < 0)
            return rc;
        if (v.len == 0)
            return sc_fail(&c, 2, PG_SCRAM_E_MALFORMED);
        out->is_error = 1;
        out->error = v;
        memset(out->signature, 0, sizeof out->signature);
    } else {
        if ((rc = sc_attr(&c, 'v', &v)) < 0)
            return rc;
        size_t got = 0;
        if ((rc = sc_b64(&c, v, 2, out->signature, sizeof out->signature, PG_SCRAM_E_KEY_LENGTH,
                         &got)) < 0)
            return rc;
        if (got != PG_SCRAM_KEY_LEN)
            return sc_fail(&c, 2, PG_SCRAM_E_KEY_LENGTH);
        out->is_error = 0;
        out->error.ptr = NULL;
        out->error.len = 0;
    }
    if ((rc = sc_extensions_to_end(&c)) < 0)
        return rc;
    return (int)len;
}

int pg_scram_be_write_server_final(char *out, size_t cap,
                                   const uint8_t signature[PG_SCRAM_KEY_LEN])
{
    size_t p = 0;
    int rc;
    if ((rc = put(out, cap, &p, "v=", 2)) < 0 ||
        (rc = put_b64(out, cap, &p, signature, PG_SCRAM_KEY_LEN)) < 0)
        return rc;
    return (int)p;
}

int pg_scram_be_write_server_error(char *out, size_t cap, const char *error)
{
    size_t n = error ? strlen(error) : 0;
    if (n == 0 || n > 64 || memchr(error, ',', n) != NULL)
        return PG_SCRAM_E_MALFORMED;
    size_t p = 0;
    int rc;
    if ((rc = put(out, cap, &p, "e=", 2)) < 0 || (rc = put(out, cap, &p, error, n)) < 0)
        return rc;
    return (int)p;
}

int pg_scram_write_auth_message(char *out, size_t cap, struct pg_scram_view client_first_bare,
                                struct pg_scram_view server_first,
                                struct pg_scram_view client_final_without_proof)
{
    size_t p = 0;
    int rc;
    if ((rc = put(out, cap, &p, client_first_bare.ptr, client_first_bare.len)) < 0 ||
        (rc = put(out, cap, &p, ",", 1)) < 0 ||
        (rc = put(out, cap, &p, server_first.ptr, server_first.len)) < 0 ||
        (rc = put(out, cap, &p, ",", 1)) < 0 ||
        (rc = put(out, cap, &p, client_final_without_proof.ptr, client_final_without_proof.len)) < 0)
        return rc;
    return p > INT_MAX ? PG_SCRAM_E_SPACE : (int)p;
}

/* ---- Stored verifier ---- */

#define VERIFIER_PREFIX "SCRAM-SHA-256$"

/* Finds sep in [c->pos, c->len); returns the view before it and moves past it. */
static int sc_until(struct sc_cur *c, uint8_t sep, struct pg_scram_view *v)
{
    const uint8_t *s = c->pos < c->len ? memchr(c->buf + c->pos, sep, c->len - c->pos) : NULL;
    if (s == NULL)
        return sc_fail(c, c->len, PG_SCRAM_E_MALFORMED);
    v->ptr = (const char *)c->buf + c->pos;
    v->len = (size_t)(s - (c->buf + c->pos));
    c->pos += v->len + 1;
    return 0;
}

/* Decodes a 32-byte key from a base64 view at offset at. */
static int sc_key(struct sc_cur *c, struct pg_scram_view v, size_t at, uint8_t key[PG_SCRAM_KEY_LEN])
{
    size_t got = 0;
    int rc = sc_b64(c, v, at, key, PG_SCRAM_KEY_LEN, PG_SCRAM_E_KEY_LENGTH, &got);
    if (rc < 0)
        return rc;
    return got == PG_SCRAM_KEY_LEN ? 0 : sc_fail(c, at, PG_SCRAM_E_KEY_LENGTH);
}

int pg_scram_parse_verifier(const uint8_t *buf, size_t len, struct pg_scram_verifier *out,
                            size_t *err_off)
{
    struct sc_cur c;
    sc_init(&c, buf, len, err_off);
    if (len > PG_SCRAM_VERIFIER_MAX)
        return sc_fail(&c, PG_SCRAM_VERIFIER_MAX, PG_SCRAM_E_TOO_LONG);
    size_t plen = sizeof(VERIFIER_PREFIX) - 1;
    for (size_t i = 0; i < plen; i++) {
        if (i >= len || buf[i] != (uint8_t)VERIFIER_PREFIX[i])
            return sc_fail(&c, i, PG_SCRAM_E_MALFORMED);
    }
    c.pos = plen;
    struct pg_scram_view it, salt, stored, server;
    size_t at_it = c.pos, bad = 0;
    int rc;
    if ((rc = sc_until(&c, ':', &it)) < 0)
        return rc;
    if (parse_iterations(it.ptr, it.len, &out->iterations, &bad) < 0)
        return sc_fail(&c, at_it + bad, PG_SCRAM_E_ITERATIONS);
    size_t at_salt = c.pos;
    if ((rc = sc_until(&c, '$', &salt)) < 0)
        return rc;
    if ((rc = sc_b64(&c, salt, at_salt, out->salt, sizeof out->salt, PG_SCRAM_E_TOO_LONG,
                     &out->salt_len)) < 0)
        return rc;
    if (out->salt_len == 0)
        return sc_fail(&c, at_salt, PG_SCRAM_E_MALFORMED);
    size_t at_stored = c.pos;
    if ((rc = sc_until(&c, ':', &stored)) < 0 || (rc = sc_key(&c, stored, at_stored, out->stored_key)) < 0)
        return rc;
    server.ptr = (const char *)buf + c.pos;
    server.len = len - c.pos;
    if ((rc = sc_key(&c, server, c.pos, out->server_key)) < 0)
        return rc;
    return (int)len;
}

int pg_scram_write_verifier(char *out, size_t cap, const struct pg_scram_verifier *v)
{
    if (v->iterations == 0 || v->iterations > PG_SCRAM_ITERATIONS_MAX)
        return PG_SCRAM_E_ITERATIONS;
    if (v->salt_len == 0 || v->salt_len > PG_SCRAM_SALT_MAX)
        return PG_SCRAM_E_TOO_LONG;
    char num[16];
    snprintf(num, sizeof num, "%u:", (unsigned)v->iterations);
    size_t p = 0;
    int rc;
    if ((rc = put_str(out, cap, &p, VERIFIER_PREFIX)) < 0 || (rc = put_str(out, cap, &p, num)) < 0 ||
        (rc = put_b64(out, cap, &p, v->salt, v->salt_len)) < 0 ||
        (rc = put(out, cap, &p, "$", 1)) < 0 ||
        (rc = put_b64(out, cap, &p, v->stored_key, PG_SCRAM_KEY_LEN)) < 0 ||
        (rc = put(out, cap, &p, ":", 1)) < 0 ||
        (rc = put_b64(out, cap, &p, v->server_key, PG_SCRAM_KEY_LEN)) < 0 ||
        (rc = put(out, cap, &p, "", 1)) < 0)
        return rc;
    return (int)(p - 1);
}

/* ---- Framed SASL messages ---- */

/* 'R', length, code, data. */
static int write_auth(uint8_t *out, size_t cap, uint32_t code, const void *data, size_t len)
{
    if (len > PG_SCRAM_SASL_MAX || cap < 9 + len)
        return PG_SCRAM_E_SPACE;
    out[0] = 'R';
    pg_put_u32(out + 1, (uint32_t)(8 + len));
    pg_put_u32(out + 5, code);
    if (len > 0)
        memcpy(out + 9, data, len);
    return (int)(9 + len);
}

int pg_scram_be_write_auth_sasl(uint8_t *out, size_t cap, int plus)
{
    /* Both names with their NULs, then the empty name that ends the list. */
    static const char both[] = PG_SCRAM_MECHANISM_PLUS "\0" PG_SCRAM_MECHANISM "\0";
    static const char one[] = PG_SCRAM_MECHANISM "\0";
    return plus ? write_auth(out, cap, 10, both, sizeof both)
                : write_auth(out, cap, 10, one, sizeof one);
}

int pg_scram_be_write_auth_sasl_continue(uint8_t *out, size_t cap, const void *data, size_t len)
{
    return write_auth(out, cap, 11, data, len);
}

int pg_scram_be_write_auth_sasl_final(uint8_t *out, size_t cap, const void *data, size_t len)
{
    return write_auth(out, cap, 12, data, len);
}

int pg_scram_fe_write_sasl_initial(uint8_t *out, size_t cap, const char *mechanism,
                                   const void *data, size_t len)
{
    size_t mlen = strlen(mechanism) + 1;
    size_t dlen = data ? len : 0;
    if (mlen > 256 || dlen > PG_SCRAM_SASL_MAX || cap < PG_HEADER_LEN + mlen + 4 + dlen)
        return PG_SCRAM_E_SPACE;
    size_t total = PG_HEADER_LEN + mlen + 4 + dlen;
    out[0] = 'p';
    pg_put_u32(out + 1, (uint32_t)(total - 1));
    memcpy(out + PG_HEADER_LEN, mechanism, mlen);
    pg_put_u32(out + PG_HEADER_LEN + mlen, data ? (uint32_t)len : 0xffffffffu);
    if (dlen > 0)
        memcpy(out + PG_HEADER_LEN + mlen + 4, data, dlen);
    return (int)total;
}

int pg_scram_fe_write_sasl_response(uint8_t *out, size_t cap, const void *data, size_t len)
{
    if (len > PG_SCRAM_SASL_MAX || cap < PG_HEADER_LEN + len)
        return PG_SCRAM_E_SPACE;
    out[0] = 'p';
    pg_put_u32(out + 1, (uint32_t)(4 + len));
    if (len > 0)
        memcpy(out + PG_HEADER_LEN, data, len);
    return (int)(PG_HEADER_LEN + len);
}

int pg_scram_fe_parse_sasl_initial(const uint8_t *buf, size_t len,
                                   struct pg_scram_sasl_initial *out, size_t *err_off)
{
    struct sc_cur c;
    sc_init(&c, buf, len, err_off);
    if (len > PG_SCRAM_SASL_MAX + 1024)
        return sc_fail(&c, PG_SCRAM_SASL_MAX + 1024, PG_SCRAM_E_TOO_LONG);
    const uint8_t *nul = len > 0 ? memchr(buf, 0, len) : NULL;
    if (nul == NULL)
        return sc_fail(&c, len, PG_SCRAM_E_MALFORMED);
    if (nul == buf)
        return sc_fail(&c, 0, PG_SCRAM_E_MALFORMED);
    size_t pos = (size_t)(nul - buf) + 1;
    if (len - pos < 4)
        return sc_fail(&c, pos, PG_SCRAM_E_MALFORMED);
    uint32_t l = pg_get_u32(buf + pos);
    size_t rest = len - pos - 4;
    out->mechanism = (const char *)buf;
    if (l == 0xffffffffu) {
        if (rest != 0)
            return sc_fail(&c, pos + 4, PG_SCRAM_E_MALFORMED);
        out->data = NULL;
        out->data_len = 0;
        out->has_data = 0;
        return (int)len;
    }
    if (l > 0x7fffffffu || (size_t)l != rest)
        return sc_fail(&c, pos, PG_SCRAM_E_MALFORMED);
    out->data = buf + pos + 4;
    out->data_len = rest;
    out->has_data = 1;
    return (int)len;
}

/* Reads the NUL-terminated mechanism names of AuthenticationSASL, ending with an empty one. */
static int auth_sasl_list(const uint8_t *msg, size_t len, struct pg_scram_auth_sasl *out,
                          size_t *err_off)
{
    size_t pos = 9;
    for (;;) {
        const uint8_t *nul = pos < len ? memchr(msg + pos, 0, len - pos) : NULL;
        if (nul == NULL) {
            if (err_off)
                *err_off = pos;
            return PG_SCRAM_E_MALFORMED;
        }
        size_t n = (size_t)(nul - (msg + pos));
        if (n == 0)
            break;
        if (n == strlen(PG_SCRAM_MECHANISM) && memcmp(msg + pos, PG_SCRAM_MECHANISM, n) == 0)
            out->offers_scram = 1;
        if (n == strlen(PG_SCRAM_MECHANISM_PLUS) &&
            memcmp(msg + pos, PG_SCRAM_MECHANISM_PLUS, n) == 0)
            out->offers_scram_plus = 1;
        pos += n + 1;
    }
    if (pos + 1 != len) {
        if (err_off)
            *err_off = pos + 1;
        return PG_SCRAM_E_MALFORMED;
    }
    return (int)len;
}

int pg_scram_be_parse_auth_sasl(const uint8_t *msg, size_t len, struct pg_scram_auth_sasl *out,
                                size_t *err_off)
{
    size_t off = 0;
    if (err_off)
        *err_off = 0;
    if (len > PG_SCRAM_SASL_MAX + 1024)
        return PG_SCRAM_E_TOO_LONG;
    if (len < 9 || msg[0] != 'R')
        return PG_SCRAM_E_MALFORMED;
    if ((size_t)pg_get_u32(msg + 1) + 1 != len) {
        off = 1;
        goto bad;
    }
    memset(out, 0, sizeof *out);
    out->code = pg_get_u32(msg + 5);
    if (out->code == 10)
        return auth_sasl_list(msg, len, out, err_off);
    if (out->code != 11 && out->code != 12) {
        off = 5;
        goto bad;
    }
    out->data = msg + 9;
    out->data_len = len - 9;
    return (int)len;
bad:
    if (err_off)
        *err_off = off;
    return PG_SCRAM_E_MALFORMED;
}

/* ---- channel-binding negotiation, judged as a server ---- */

static int view_is(struct pg_scram_view v, const char *s)
{
    size_t n = strlen(s);
    return v.len == n && memcmp(v.ptr, s, n) == 0;
}

enum pg_scram_cbind_verdict pg_scram_be_cbind_verdict(int plus_offered, const char *mechanism,
                                                      const struct pg_scram_client_first *first)
{
    int plus;
    if (plus_offered && strcmp(mechanism, PG_SCRAM_MECHANISM_PLUS) == 0)
        plus = 1;
    else if (strcmp(mechanism, PG_SCRAM_MECHANISM) == 0)
        plus = 0;
    else
        return PG_SCRAM_CB_BAD_MECHANISM;
    switch (first->cbind_flag) {
    case PG_SCRAM_CBIND_N:
        return plus ? PG_SCRAM_CB_PLUS_WITHOUT_DATA : PG_SCRAM_CB_OK;
    case PG_SCRAM_CBIND_Y:
        if (plus)
            return PG_SCRAM_CB_PLUS_WITHOUT_DATA;
        return plus_offered ? PG_SCRAM_CB_DOWNGRADE : PG_SCRAM_CB_OK;
    case PG_SCRAM_CBIND_P:
        if (!plus)
            return PG_SCRAM_CB_DATA_WITHOUT_PLUS;
        return view_is(first->cbind_name, PG_SCRAM_CBIND_TLS_SERVER_END_POINT) ? PG_SCRAM_CB_OK
                                                                               : PG_SCRAM_CB_BAD_TYPE;
    }
    return PG_SCRAM_CB_DATA_WITHOUT_PLUS; /* the parser reports only n, y and p */
}

const char *pg_scram_cbind_verdict_message(enum pg_scram_cbind_verdict v)
{
    switch (v) {
    case PG_SCRAM_CB_OK: return "";
    case PG_SCRAM_CB_BAD_MECHANISM: return "client selected an invalid SASL authentication mechanism";
    case PG_SCRAM_CB_PLUS_WITHOUT_DATA:
    case PG_SCRAM_CB_DATA_WITHOUT_PLUS: return "malformed SCRAM message";
    case PG_SCRAM_CB_DOWNGRADE: return "SCRAM channel binding negotiation error";
    case PG_SCRAM_CB_BAD_TYPE: return "unsupported SCRAM channel-binding type";
    }
    return "malformed SCRAM message";
}

const char *pg_scram_cbind_verdict_sqlstate(enum pg_scram_cbind_verdict v)
{
    if (v == PG_SCRAM_CB_OK)
        return "";
    return v == PG_SCRAM_CB_DOWNGRADE ? "28000" : "08P01";
}
