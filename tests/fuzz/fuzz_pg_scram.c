/*
 * libFuzzer target for the SCRAM codec (protocol/pg/pg_scram.c): the SASLInitialResponse body,
 * client-first, server-first, client-final and server-final messages, the stored verifier,
 * base64, and the AuthenticationSASL* messages.
 *
 * Input: one selector byte (mod 8) picks the parser; the server-first and client-final parsers
 * then take a length byte k and k bytes of nonce (the client nonce to match, or the full nonce
 * to expect; k = 0 means none for client-final); the rest is the message.
 * Checks, beyond "no crash and no over-read" (ASan): a parser never answers 0 (need more),
 * succeeds only with consumed == len, fails only with a code from the list and an offset inside
 * the input, every view lies inside the input, and decode-then-encode round-trips: the verifier
 * and base64 byte for byte (both are canonical), the messages field for field and byte for byte
 * when the input has nothing the encoder leaves out (extensions, a user name).
 * Seeds: tests/fuzz/corpus/scram (written by `test_pg_scram --write-corpus`).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/pg/pg_scram.h"
#include "fuzz_common.h"

static int is_error(int rc) { return rc <= PG_SCRAM_E_MALFORMED && rc >= PG_SCRAM_E_SPACE; }

/* The common contract of every parser's answer. */
static void check_rc(int rc, size_t len, size_t off)
{
    CHECK(rc != 0);
    if (rc > 0) {
        CHECK((size_t)rc == len);
        return;
    }
    CHECK(is_error(rc));
    CHECK(off <= len || rc == PG_SCRAM_E_TOO_LONG);
}

static int view_inside(struct pg_scram_view v, const uint8_t *buf, size_t len)
{
    const uint8_t *p = (const uint8_t *)v.ptr;
    return p >= buf && p <= buf + len && v.len <= (size_t)(buf + len - p);
}

static int printable(struct pg_scram_view v)
{
    for (size_t i = 0; i < v.len; i++) {
        uint8_t c = (uint8_t)v.ptr[i];
        if (c < 0x21 || c > 0x7e || c == ',')
            return 0;
    }
    return v.len > 0;
}

static void fuzz_sasl_initial(const uint8_t *buf, size_t len)
{
    struct pg_scram_sasl_initial si;
    size_t off = 0;
    int rc = pg_scram_fe_parse_sasl_initial(buf, len, &si, &off);
    check_rc(rc, len, off);
    if (rc < 0)
        return;
    size_t mlen = strlen(si.mechanism); /* its NUL is inside buf */
    CHECK(mlen > 0 && (const uint8_t *)si.mechanism == buf && mlen + 5 <= len);
    CHECK(si.has_data ? si.data == buf + mlen + 5 && si.data_len == len - mlen - 5
                      : si.data == NULL && si.data_len == 0 && len == mlen + 5);
    uint8_t *out = malloc(len + 5);
    CHECK(out != NULL);
    if (mlen < 256 && si.data_len <= PG_SCRAM_SASL_MAX) {
        int w = pg_scram_fe_write_sasl_initial(out, len + 5, si.mechanism,
                                               si.has_data ? (const void *)si.data : NULL,
                                               si.data_len);
        CHECK(w == (int)len + 5 && memcmp(out + 5, buf, len) == 0);
    }
    free(out);
}

/* The server's verdict on every choice a client could pair with this client-first-message:
 * a known verdict with a message and SQLSTATE, PLUS never accepted unless offered, and
 * accepted only with flag p and the one type; y refused exactly when PLUS was offered. */
static void check_cbind_verdicts(const struct pg_scram_client_first *cf)
{
    static const char *const mechs[] = {PG_SCRAM_MECHANISM, PG_SCRAM_MECHANISM_PLUS, "x"};
    for (int offered = 0; offered < 2; offered++) {
        for (size_t m = 0; m < 3; m++) {
            enum pg_scram_cbind_verdict v = pg_scram_be_cbind_verdict(offered, mechs[m], cf);
            CHECK(v >= PG_SCRAM_CB_OK && v <= PG_SCRAM_CB_BAD_TYPE);
            CHECK((v == PG_SCRAM_CB_OK) == (pg_scram_cbind_verdict_message(v)[0] == 0));
            CHECK(strlen(pg_scram_cbind_verdict_sqlstate(v)) == (v == PG_SCRAM_CB_OK ? 0 : 5));
            if (m == 2 || (m == 1 && !offered))
                CHECK(v == PG_SCRAM_CB_BAD_MECHANISM);
            if (m == 1 && v == PG_SCRAM_CB_OK)
                CHECK(cf->cbind_flag == PG_SCRAM_CBIND_P &&
                      cf->cbind_name.len == strlen(PG_SCRAM_CBIND_TLS_SERVER_END_POINT));
            if (m == 0 && cf->cbind_flag == PG_SCRAM_CBIND_Y)
                CHECK(v == (offered ? PG_SCRAM_CB_DOWNGRADE : PG_SCRAM_CB_OK));
        }
    }
}

static void fuzz_client_first(const uint8_t *buf, size_t len)
{
    struct pg_scram_client_first cf;
    size_t off = 0;
    int rc = pg_scram_fe_parse_client_first(buf, len, &cf, &off);
    check_rc(rc, len, off);
    if (rc < 0)
        return;
    CHECK(cf.cbind_flag == PG_SCRAM_CBIND_N || cf.cbind_flag == PG_SCRAM_CBIND_Y ||
          cf.cbind_flag == PG_SCRAM_CBIND_P);
    CHECK((const uint8_t *)cf.gs2_header.ptr == buf);
    CHECK(cf.bare.ptr == cf.gs2_header.ptr + cf.gs2_header.len);
    CHECK(cf.gs2_header.len + cf.bare.len == len);
    CHECK(view_inside(cf.username, buf, len) && view_inside(cf.nonce, buf, len));
    CHECK(view_inside(cf.cbind_name, buf, len));
    CHECK(printable(cf.nonce) && cf.nonce.len <= PG_SCRAM_NONCE_MAX);
    CHECK((cf.cbind_flag == PG_SCRAM_CBIND_P) == (cf.cbind_name.len > 0));
    check_cbind_verdicts(&cf);

    /* Rebuild with the parsed flag, type and nonce, and read it back. */
    char name[80] = "";
    if (cf.cbind_name.len >= sizeof name)
        return;
    memcpy(name, cf.cbind_name.ptr, cf.cbind_name.len);
    name[cf.cbind_name.len] = '\0';
    char out[PG_SCRAM_MSG_MAX + 128];
    size_t bare = 0;
    int w = pg_scram_fe_write_client_first(out, sizeof out, cf.cbind_flag, name, cf.nonce.ptr,
                                           cf.nonce.len, &bare);
    CHECK(w > 0 && bare == cf.gs2_header.len);
    /* Nothing left out (no user name, no extensions): the same bytes. */
    if (cf.username.len == 0 && (const uint8_t *)cf.nonce.ptr + cf.nonce.len == buf + len)
        CHECK((size_t)w == len && memcmp(out, buf, len) == 0);
    struct pg_scram_client_first again;
    CHECK(pg_scram_fe_parse_client_first((const uint8_t *)out, (size_t)w, &again, NULL) == w);
    CHECK(again.cbind_flag == cf.cbind_flag && again.nonce.len == cf.nonce.len &&
          memcmp(again.nonce.ptr, cf.nonce.ptr, cf.nonce.len) == 0);
    CHECK(again.cbind_name.len == cf.cbind_name.len &&
          memcmp(again.cbind_name.ptr, cf.cbind_name.ptr, cf.cbind_name.len) == 0);
}

static void fuzz_server_first(const uint8_t *buf, size_t len, const char *cnonce, size_t clen)
{
    struct pg_scram_server_first sf;
    uint8_t salt[PG_SCRAM_SALT_MAX];
    size_t off = 0;
    int rc = pg_scram_be_parse_server_first(buf, len, cnonce, clen, salt, sizeof salt, &sf, &off);
    check_rc(rc, len, off);
    if (rc < 0)
        return;
    CHECK(view_inside(sf.nonce, buf, len) && printable(sf.nonce));
    CHECK(sf.nonce.len > clen && sf.nonce.len <= PG_SCRAM_NONCE_MAX);
    CHECK(memcmp(sf.nonce.ptr, cnonce, clen) == 0);
    CHECK(sf.salt_len >= 1 && sf.salt_len <= sizeof salt);
    CHECK(sf.iterations >= 1 && sf.iterations <= PG_SCRAM_ITERATIONS_MAX);

    char out[PG_SCRAM_MSG_MAX + 256];
    int w = pg_scram_be_write_server_first(out, sizeof out, cnonce, clen, sf.nonce.ptr + clen,
                                           sf.nonce.len - clen, salt, sf.salt_len, sf.iterations);
    CHECK(w > 0 && (size_t)w <= len);
    /* Shorter only by the extensions the encoder does not write. */
    if ((size_t)w == len)
        CHECK(memcmp(out, buf, len) == 0);
    else
        CHECK(memcmp(out, buf, (size_t)w) == 0 && buf[w] == ',');
    struct pg_scram_server_first again;
    uint8_t salt2[PG_SCRAM_SALT_MAX];
    CHECK(pg_scram_be_parse_server_first((const uint8_t *)out, (size_t)w, cnonce, clen, salt2,
                                         sizeof salt2, &again, NULL) == w);
    CHECK(again.iterations == sf.iterations && again.salt_len == sf.salt_len &&
          memcmp(salt2, salt, sf.salt_len) == 0);
}

static void fuzz_client_final(const uint8_t *buf, size_t len, const char *expected, size_t elen)
{
    struct pg_scram_client_final fin;
    size_t off = 0;
    int rc = pg_scram_fe_parse_client_final(buf, len, expected, elen, &fin, &off);
    check_rc(rc, len, off);
    if (rc < 0)
        return;
    CHECK(view_inside(fin.cbind_b64, buf, len) && view_inside(fin.nonce, buf, len));
    CHECK((const uint8_t *)fin.without_proof.ptr == buf && fin.without_proof.len < len);
    CHECK(fin.cbind_len >= 1 && fin.cbind_len <= PG_SCRAM_CBIND_DATA_MAX);
    CHECK(printable(fin.nonce));
    if (expected)
        CHECK(fin.nonce.len == elen && memcmp(fin.nonce.ptr, expected, elen) == 0);

    /* "c=" + base64(cbind) + ",r=" + nonce is where the input starts; then the proof. */
    char out[PG_SCRAM_MSG_MAX + 256];
    int w = pg_scram_fe_write_client_final_without_proof(out, sizeof out, (const char *)fin.cbind,
                                                         fin.cbind_len, NULL, 0, fin.nonce.ptr,
                                                         fin.nonce.len);
    CHECK(w > 0 && (size_t)w <= fin.without_proof.len && memcmp(out, buf, (size_t)w) == 0);
    int w2 = pg_scram_fe_write_client_final(out, sizeof out, out, (size_t)w, fin.proof);
    CHECK(w2 > w);
    if ((size_t)w == fin.without_proof.len)
        CHECK((size_t)w2 == len && memcmp(out, buf, len) == 0);
    struct pg_scram_client_final again;
    CHECK(pg_scram_fe_parse_client_final((const uint8_t *)out, (size_t)w2, fin.nonce.ptr,
                                         fin.nonce.len, &again, NULL) == w2);
    CHECK(memcmp(again.proof, fin.proof, PG_SCRAM_KEY_LEN) == 0);
    CHECK(again.cbind_len == fin.cbind_len && memcmp(again.cbind, fin.cbind, fin.cbind_len) == 0);
}

static void fuzz_server_final(const uint8_t *buf, size_t len)
{
    struct pg_scram_server_final sfin;
    size_t off = 0;
    int rc = pg_scram_be_parse_server_final(buf, len, &sfin, &off);
    check_rc(rc, len, off);
    if (rc < 0)
        return;
    char out[128];
    int w;
    if (sfin.is_error) {
        CHECK(view_inside(sfin.error, buf, len) && sfin.error.len > 0);
        CHECK(memchr(sfin.error.ptr, ',', sfin.error.len) == NULL);
        CHECK(memchr(sfin.error.ptr, 0, sfin.error.len) == NULL);
        if (sfin.error.len > 64)
            return;
        char e[65];
        memcpy(e, sfin.error.ptr, sfin.error.len);
        e[sfin.error.len] = '\0';
        w = pg_scram_be_write_server_error(out, sizeof out, e);
    } else {
        w = pg_scram_be_write_server_final(out, sizeof out, sfin.signature);
        CHECK(w == 46);
    }
    CHECK(w > 0 && (size_t)w <= len && memcmp(out, buf, (size_t)w) == 0);
    CHECK((size_t)w == len || buf[w] == ',');
    struct pg_scram_server_final again;
    CHECK(pg_scram_be_parse_server_final((const uint8_t *)out, (size_t)w, &again, NULL) == w);
    CHECK(again.is_error == sfin.is_error);
    if (!sfin.is_error)
        CHECK(memcmp(again.signature, sfin.signature, PG_SCRAM_KEY_LEN) == 0);
}

static void fuzz_verifier(const uint8_t *buf, size_t len)
{
    struct pg_scram_verifier v;
    size_t off = 0;
    int rc = pg_scram_parse_verifier(buf, len, &v, &off);
    check_rc(rc, len, off);
    if (rc < 0)
        return;
    CHECK(v.iterations >= 1 && v.iterations <= PG_SCRAM_ITERATIONS_MAX);
    CHECK(v.salt_len >= 1 && v.salt_len <= PG_SCRAM_SALT_MAX);
    /* The verifier form is canonical: written back, it is the same string. */
    char out[PG_SCRAM_VERIFIER_MAX + 1];
    int w = pg_scram_write_verifier(out, sizeof out, &v);
    CHECK(w == (int)len && memcmp(out, buf, len) == 0 && out[len] == '\0');
}

static void fuzz_base64(const uint8_t *buf, size_t len)
{
    uint8_t *dec = malloc(len + 1);
    char *enc = malloc(len / 3 * 4 + 8);
    CHECK(dec != NULL && enc != NULL);
    int d = pg_scram_b64_decode((const char *)buf, len, dec, len);
    if (d >= 0) {
        /* Strict decoding accepts only canonical text: encoding gives it back. */
        CHECK((size_t)d <= len / 4 * 3);
        int e = pg_scram_b64_encode(dec, (size_t)d, enc, len);
        CHECK(e == (int)len && memcmp(enc, buf, len) == 0);
        if (d > 0)
            CHECK(pg_scram_b64_decode((const char *)buf, len, dec, (size_t)d - 1) ==
                  PG_SCRAM_E_SPACE);
    } else {
        CHECK(d == PG_SCRAM_E_BASE64);
    }
    /* Any bytes encode and decode back. */
    int e = pg_scram_b64_encode(buf, len, enc, len / 3 * 4 + 8);
    CHECK(e == (int)pg_scram_b64_len(len));
    uint8_t *back = malloc(len + 1);
    CHECK(back != NULL);
    CHECK(pg_scram_b64_decode(enc, (size_t)e, back, len) == (int)len);
    CHECK(memcmp(back, buf, len) == 0);
    free(back);
    free(dec);
    free(enc);
}

static void fuzz_auth_sasl(const uint8_t *buf, size_t len)
{
    struct pg_scram_auth_sasl as;
    size_t off = 0;
    int rc = pg_scram_be_parse_auth_sasl(buf, len, &as, &off);
    check_rc(rc, len, off);
    if (rc < 0)
        return;
    CHECK(len >= 9 && buf[0] == 'R');
    CHECK(as.code == 10 || as.code == 11 || as.code == 12);
    if (as.code == 10) {
        CHECK(buf[len - 1] == 0 && as.data == NULL);
        return;
    }
    CHECK(as.data == buf + 9 && as.data_len == len - 9);
    uint8_t *out = malloc(len);
    CHECK(out != NULL);
    int w = as.code == 11 ? pg_scram_be_write_auth_sasl_continue(out, len, as.data, as.data_len)
                          : pg_scram_be_write_auth_sasl_final(out, len, as.data, as.data_len);
    CHECK(w == (int)len && memcmp(out, buf, len) == 0);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    switch (data[0] % 8) {
    case 0: fuzz_sasl_initial(p, n); break;
    case 1: fuzz_client_first(p, n); break;
    case 2:
    case 3: {
        if (n < 1 || n - 1 < p[0])
            return 0;
        size_t k = p[0];
        /* A copy of exactly k bytes, so a read past the nonce is caught too. */
        char *nonce = fuzz_exact_copy(p + 1, k);
        if (data[0] % 8 == 2)
            fuzz_server_first(p + 1 + k, n - 1 - k, nonce, k);
        else
            fuzz_client_final(p + 1 + k, n - 1 - k, k ? nonce : NULL, k);
        free(nonce);
        break;
    }
    case 4: fuzz_server_final(p, n); break;
    case 5: fuzz_verifier(p, n); break;
    case 6:
        if (n <= 4096)
            fuzz_base64(p, n);
        break;
    case 7: fuzz_auth_sasl(p, n); break;
    }
    return 0;
}
