/*
 * Unit tests for the password cryptography (proxy/pg_crypto.c).
 *
 * Expected values come from outside this code: RFC 7677's SCRAM-SHA-256 exchange (user "user",
 * password "pencil"), a verifier and md5 hashes made by libpq 15's PQencryptPasswordConn
 * (PostgreSQL's own code; no server needed, none is started), and values computed with Python's
 * hashlib.pbkdf2_hmac / hmac / md5, which agreed with libpq when the fixtures were made. Then
 * whole exchanges run through the codec (protocol/pg/pg_scram.c) with Switchyard on each side,
 * including the pass-through: log into a server with the ClientKey recovered from a client.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "protocol/pg/pg_scram.h"
#include "proxy/pg_crypto.h"

/* Hex of n bytes into out (2n + 1). */
static const char *hex(const uint8_t *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", b[i]);
    out[2 * n] = '\0';
    return out;
}

/* 32 bytes equal a hex string, printing both on failure. */
#define assert_hex32(bytes, want)                                                                \
    do {                                                                                         \
        char h_[65];                                                                             \
        assert_string_equal(hex((bytes), 32, h_), (want));                                       \
    } while (0)

/* 32 bytes equal a base64 string. */
#define assert_b64_32(bytes, want)                                                               \
    do {                                                                                         \
        char b_[45];                                                                             \
        assert_int_equal(pg_scram_b64_encode((bytes), 32, b_, 44), 44);                          \
        b_[44] = '\0';                                                                           \
        assert_string_equal(b_, (want));                                                         \
    } while (0)

/* ---- RFC 7677 ---- */

#define RFC_CNONCE "rOprNGfwEbeRWgbNEkqO"
#define RFC_SNONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define RFC_NONCE RFC_CNONCE RFC_SNONCE
#define RFC_CLIENT_FIRST "n,,n=user,r=" RFC_CNONCE
#define RFC_SERVER_FIRST "r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
#define RFC_CLIENT_FINAL                                                                         \
    "c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define RFC_AUTH_MESSAGE "n=user,r=" RFC_CNONCE "," RFC_SERVER_FIRST ",c=biws,r=" RFC_NONCE

static const uint8_t rfc_salt[16] = "\x5b\x6d\x99\x68\x9d\x12\x35\x8e\xec\xa0\x4b\x14\x12\x36\xfa\x81";

/* Made by libpq 15 PQencryptPasswordConn("correct horse battery staple", "alice", "scram-sha-256"). */
#define PQ_PASSWORD "correct horse battery staple"
#define PQ_VERIFIER                                                                              \
    "SCRAM-SHA-256$4096:nO1uWRXOHCBL74z7hNb5qA==$swSi8GVnppDI5niQO56MIFUn1Rq77yUdJHt6dEvRRzA=:"  \
    "jcEAFLlAbDoZhEprDJYgWgSSeR0oooVLlaZ8mZHtxDo="

static void test_strerror(void **state)
{
    (void)state;
    assert_string_equal(pg_crypto_strerror(PG_CRYPTO_E_OPENSSL), "cryptographic library failure");
    assert_string_equal(pg_crypto_strerror(PG_CRYPTO_E_MISMATCH), "proof or signature does not match");
    assert_string_equal(pg_crypto_strerror(PG_CRYPTO_E_ARG),
                        "invalid argument to a cryptographic function");
    assert_string_equal(pg_crypto_strerror(PG_CRYPTO_E_SPACE), "output buffer too small");
    assert_string_equal(pg_crypto_strerror(0), "unknown error");
    assert_string_equal(pg_crypto_strerror(-5), "unknown error");
}

static void test_rfc7677_keys(void **state)
{
    (void)state;
    uint8_t salted[32], ck[32], stored[32], sk[32];
    assert_int_equal(pg_crypto_salted_password("pencil", 6, rfc_salt, 16, 4096, salted), 0);
    assert_hex32(salted, "c4a49510323ab4f952cac1fa99441939e78ea74d6be81ddf7096e87513dc615d");
    assert_int_equal(pg_crypto_client_key(salted, ck), 0);
    assert_hex32(ck, "a60fc923d67e8644a92d16b96eda5ef4656b0c725c484374be25535576996e8b");
    assert_int_equal(pg_crypto_stored_key(ck, stored), 0);
    assert_hex32(stored, "586e5df283e6dceb5c3e791d8b8528ec191e664045ce971792e2e6b5bb13e2a6");
    assert_int_equal(pg_crypto_server_key(salted, sk), 0);
    assert_hex32(sk, "c1f3cbc1c13a9d35a14c0990eed97629ea225863e566a4314ab99f3f00e5d9d5");

    /* All at once gives the same; NULL outputs are skipped. */
    uint8_t ck2[32], stored2[32], sk2[32];
    assert_int_equal(pg_crypto_scram_keys("pencil", 6, rfc_salt, 16, 4096, ck2, stored2, sk2), 0);
    assert_memory_equal(ck2, ck, 32);
    assert_memory_equal(stored2, stored, 32);
    assert_memory_equal(sk2, sk, 32);
    memset(stored2, 0, 32);
    assert_int_equal(pg_crypto_scram_keys("pencil", 6, rfc_salt, 16, 4096, NULL, stored2, NULL), 0);
    assert_memory_equal(stored2, stored, 32);

    /* Proof and signature over RFC 7677's AuthMessage: the RFC's own p= and v= values. */
    static const char am[] = RFC_AUTH_MESSAGE;
    uint8_t proof[32], sig[32];
    assert_int_equal(pg_crypto_client_proof(ck, stored, am, sizeof(am) - 1, proof), 0);
    assert_b64_32(proof, "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
    assert_int_equal(pg_crypto_server_signature(sk, am, sizeof(am) - 1, sig), 0);
    assert_b64_32(sig, "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");

    /* ClientSignature is the XOR of the two. */
    uint8_t csig[32];
    assert_int_equal(pg_crypto_client_signature(stored, am, sizeof(am) - 1, csig), 0);
    for (int i = 0; i < 32; i++)
        assert_int_equal(csig[i], ck[i] ^ proof[i]);
}

/* Python's hashlib.pbkdf2_hmac for edge inputs: empty password, a password over the HMAC block. */
static void test_salted_password_edges(void **state)
{
    (void)state;
    uint8_t out[32];
    assert_int_equal(pg_crypto_salted_password("", 0, (const uint8_t *)"salt", 4, 1, out), 0);
    assert_hex32(out, "f135c27993baf98773c5cdb40a5706ce6a345cde61b000a67858650cd6a324d7");
    char pw[100];
    memset(pw, 'p', sizeof pw);
    assert_int_equal(pg_crypto_salted_password(pw, sizeof pw, (const uint8_t *)"NaCl", 4, 2, out), 0);
    assert_hex32(out, "877903719dbe2750c133849e68d5432654094b03ce832b55f537bf6887bdb3cf");

    assert_int_equal(pg_crypto_salted_password("x", 1, (const uint8_t *)"s", 1, 0, out),
                     PG_CRYPTO_E_ARG);
    assert_int_equal(pg_crypto_salted_password("x", 1, (const uint8_t *)"s", 1,
                                               PG_SCRAM_ITERATIONS_MAX + 1, out),
                     PG_CRYPTO_E_ARG);
    assert_int_equal(pg_crypto_salted_password("x", 1, (const uint8_t *)"s", 0, 1, out),
                     PG_CRYPTO_E_ARG);
    assert_int_equal(pg_crypto_salted_password("x", 1, NULL, 1, 1, out), PG_CRYPTO_E_ARG);
}

/* The server's side of RFC 7677: parse the client's messages and check them with the verifier. */
static void test_rfc7677_verify(void **state)
{
    (void)state;
    uint8_t stored[32], sk[32], ck[32];
    assert_int_equal(pg_crypto_scram_keys("pencil", 6, rfc_salt, 16, 4096, ck, stored, sk), 0);

    struct pg_scram_client_first cf;
    struct pg_scram_client_final fin;
    assert_int_equal(pg_scram_fe_parse_client_first((const uint8_t *)RFC_CLIENT_FIRST,
                                                    strlen(RFC_CLIENT_FIRST), &cf, NULL),
                     (int)strlen(RFC_CLIENT_FIRST));
    assert_int_equal(pg_scram_fe_parse_client_final((const uint8_t *)RFC_CLIENT_FINAL,
                                                    strlen(RFC_CLIENT_FINAL), RFC_NONCE,
                                                    strlen(RFC_NONCE), &fin, NULL),
                     (int)strlen(RFC_CLIENT_FINAL));
    assert_int_equal(pg_scram_check_cbind(&fin, &cf, NULL, 0), 0);
    char am[512];
    struct pg_scram_view sf = {RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST)};
    int n = pg_scram_write_auth_message(am, sizeof am, cf.bare, sf, fin.without_proof);
    assert_int_equal(n, (int)strlen(RFC_AUTH_MESSAGE));
    assert_memory_equal(am, RFC_AUTH_MESSAGE, (size_t)n);

    uint8_t got[32];
    memset(got, 0x77, sizeof got);
    assert_int_equal(pg_crypto_verify_client_proof(stored, am, (size_t)n, fin.proof, got), 0);
    assert_memory_equal(got, ck, 32);
    assert_int_equal(pg_crypto_verify_client_proof(stored, am, (size_t)n, fin.proof, NULL), 0);

    /* One bit off in the proof, the AuthMessage or the StoredKey: refused, key zeroed. */
    uint8_t bad[32], zero[32] = {0};
    memcpy(bad, fin.proof, 32);
    bad[5] ^= 0x10;
    memset(got, 0x77, sizeof got);
    assert_int_equal(pg_crypto_verify_client_proof(stored, am, (size_t)n, bad, got),
                     PG_CRYPTO_E_MISMATCH);
    assert_memory_equal(got, zero, 32);
    am[0] ^= 1;
    assert_int_equal(pg_crypto_verify_client_proof(stored, am, (size_t)n, fin.proof, got),
                     PG_CRYPTO_E_MISMATCH);
    am[0] ^= 1;
    uint8_t stored_bad[32];
    memcpy(stored_bad, stored, 32);
    stored_bad[31] ^= 0x80;
    assert_int_equal(pg_crypto_verify_client_proof(stored_bad, am, (size_t)n, fin.proof, got),
                     PG_CRYPTO_E_MISMATCH);

    /* The client's side: the server's v= checks out, and one bit off does not. */
    uint8_t sig[32];
    assert_int_equal(pg_crypto_server_signature(sk, am, (size_t)n, sig), 0);
    assert_int_equal(pg_crypto_verify_server_signature(sk, am, (size_t)n, sig), 0);
    sig[0] ^= 1;
    assert_int_equal(pg_crypto_verify_server_signature(sk, am, (size_t)n, sig), PG_CRYPTO_E_MISMATCH);
}

/* ---- Verifiers ---- */

static void test_verifier_matches_postgres(void **state)
{
    (void)state;
    struct pg_scram_verifier v;
    size_t len = strlen(PQ_VERIFIER);
    assert_int_equal(pg_scram_parse_verifier((const uint8_t *)PQ_VERIFIER, len, &v, NULL), (int)len);
    char out[PG_CRYPTO_VERIFIER_MAX];
    assert_int_equal(pg_crypto_scram_verifier_with(PQ_PASSWORD, strlen(PQ_PASSWORD), v.salt,
                                                   v.salt_len, v.iterations, out, sizeof out),
                     (int)len);
    assert_string_equal(out, PQ_VERIFIER);

    /* A fixed salt 00..0f with "pencil", from Python's hashlib. */
    uint8_t salt[16];
    for (int i = 0; i < 16; i++)
        salt[i] = (uint8_t)i;
    assert_int_equal(pg_crypto_scram_verifier_with("pencil", 6, salt, 16, 4096, out, sizeof out), 133);
    assert_string_equal(out, "SCRAM-SHA-256$4096:AAECAwQFBgcICQoLDA0ODw==$"
                             "zHCdol2044/ZyWzPLi7oxApCkamKw9Z+E4U/QApd/5Y=:"
                             "dd5peBOitVnLNFu7VmwP+HiDaaw4OUCv396eVCWhYiE=");
    /* Exactly the room it needs, NUL included; one less is refused. */
    assert_int_equal(pg_crypto_scram_verifier_with("pencil", 6, salt, 16, 4096, out, 134), 133);
    assert_int_equal(pg_crypto_scram_verifier_with("pencil", 6, salt, 16, 4096, out, 133),
                     PG_CRYPTO_E_SPACE);
    assert_int_equal(pg_crypto_scram_verifier_with("pencil", 6, salt, 0, 4096, out, sizeof out),
                     PG_CRYPTO_E_ARG);
    assert_int_equal(pg_crypto_scram_verifier_with("pencil", 6, salt, 16, 0, out, sizeof out),
                     PG_CRYPTO_E_ARG);
}

static void test_verifier_random(void **state)
{
    (void)state;
    char a[PG_CRYPTO_VERIFIER_MAX], b[PG_CRYPTO_VERIFIER_MAX], again[PG_CRYPTO_VERIFIER_MAX];
    int na = pg_crypto_scram_verifier("pencil", 6, a, sizeof a);
    int nb = pg_crypto_scram_verifier("pencil", 6, b, sizeof b);
    assert_int_equal(na, 133);
    assert_int_equal(nb, 133);
    assert_string_not_equal(a, b); /* fresh salts */
    struct pg_scram_verifier v;
    assert_int_equal(pg_scram_parse_verifier((const uint8_t *)a, (size_t)na, &v, NULL), na);
    assert_int_equal(v.iterations, 4096);
    assert_int_equal(v.salt_len, 16);
    assert_int_equal(pg_crypto_scram_verifier_with("pencil", 6, v.salt, 16, 4096, again,
                                                   sizeof again),
                     na);
    assert_string_equal(again, a);
    assert_int_equal(pg_crypto_scram_verifier("pencil", 6, a, 100), PG_CRYPTO_E_SPACE);
}

/* ---- Whole exchanges, Switchyard on both sides ---- */

struct exchange {
    char cfirst[128];
    size_t cfirst_len, bare_off;
    char sfirst[256];
    size_t sfirst_len;
    char cfinal[256];
    size_t cfinal_len, without_proof_len;
    char am[768];
    size_t am_len;
};

/* The client's part up to the AuthMessage: nonce, client-first, read server-first. */
static void client_start(struct exchange *x, const char *cnonce)
{
    int n = pg_scram_fe_write_client_first(x->cfirst, sizeof x->cfirst, PG_SCRAM_CBIND_N, NULL,
                                           cnonce, strlen(cnonce), &x->bare_off);
    assert_true(n > 0);
    x->cfirst_len = (size_t)n;
}

/* The server's part: read client-first, write server-first from the verifier. */
static void server_first(struct exchange *x, const struct pg_scram_verifier *v,
                         struct pg_scram_client_first *cf)
{
    assert_int_equal(pg_scram_fe_parse_client_first((const uint8_t *)x->cfirst, x->cfirst_len, cf,
                                                    NULL),
                     (int)x->cfirst_len);
    char snonce[PG_CRYPTO_NONCE_LEN + 1];
    assert_int_equal(pg_crypto_scram_nonce(snonce), 0);
    int n = pg_scram_be_write_server_first(x->sfirst, sizeof x->sfirst, cf->nonce.ptr, cf->nonce.len,
                                           snonce, strlen(snonce), v->salt, v->salt_len,
                                           v->iterations);
    assert_true(n > 0);
    x->sfirst_len = (size_t)n;
}

/* The client reads server-first and writes client-final with the proof from client_key. */
static void client_final(struct exchange *x, const char *cnonce, const uint8_t client_key[32],
                         const uint8_t stored_key[32], struct pg_scram_server_first *sf,
                         uint8_t *salt)
{
    assert_int_equal(pg_scram_be_parse_server_first((const uint8_t *)x->sfirst, x->sfirst_len,
                                                    cnonce, strlen(cnonce), salt,
                                                    PG_SCRAM_SALT_MAX, sf, NULL),
                     (int)x->sfirst_len);
    int n = pg_scram_fe_write_client_final_without_proof(x->cfinal, sizeof x->cfinal, x->cfirst,
                                                         x->bare_off, NULL, 0, sf->nonce.ptr,
                                                         sf->nonce.len);
    assert_true(n > 0);
    x->without_proof_len = (size_t)n;
    struct pg_scram_view bare = {x->cfirst + x->bare_off, x->cfirst_len - x->bare_off};
    struct pg_scram_view sfv = {x->sfirst, x->sfirst_len};
    struct pg_scram_view wp = {x->cfinal, x->without_proof_len};
    n = pg_scram_write_auth_message(x->am, sizeof x->am, bare, sfv, wp);
    assert_true(n > 0);
    x->am_len = (size_t)n;
    uint8_t proof[32];
    assert_int_equal(pg_crypto_client_proof(client_key, stored_key, x->am, x->am_len, proof), 0);
    n = pg_scram_fe_write_client_final(x->cfinal, sizeof x->cfinal, x->cfinal, x->without_proof_len,
                                       proof);
    assert_true(n > 0);
    x->cfinal_len = (size_t)n;
}

/* The server checks client-final; returns pg_crypto_verify_client_proof's answer. */
static int server_check(struct exchange *x, const struct pg_scram_verifier *v,
                        const struct pg_scram_client_first *cf, uint8_t recovered[32],
                        uint8_t sig[32])
{
    struct pg_scram_client_final fin;
    const char *full_nonce = x->sfirst + 2;
    size_t full_len = (size_t)(strchr(full_nonce, ',') - full_nonce);
    assert_int_equal(pg_scram_fe_parse_client_final((const uint8_t *)x->cfinal, x->cfinal_len,
                                                    full_nonce, full_len, &fin, NULL),
                     (int)x->cfinal_len);
    assert_int_equal(pg_scram_check_cbind(&fin, cf, NULL, 0), 0);
    char am[768];
    struct pg_scram_view sfv = {x->sfirst, x->sfirst_len};
    int n = pg_scram_write_auth_message(am, sizeof am, cf->bare, sfv, fin.without_proof);
    assert_int_equal(n, (int)x->am_len);
    assert_memory_equal(am, x->am, x->am_len);
    int rc = pg_crypto_verify_client_proof(v->stored_key, am, (size_t)n, fin.proof, recovered);
    if (rc == 0)
        assert_int_equal(pg_crypto_server_signature(v->server_key, am, (size_t)n, sig), 0);
    return rc;
}

static void test_exchange_against_postgres_verifier(void **state)
{
    (void)state;
    struct pg_scram_verifier v;
    assert_int_equal(pg_scram_parse_verifier((const uint8_t *)PQ_VERIFIER, strlen(PQ_VERIFIER), &v,
                                             NULL),
                     (int)strlen(PQ_VERIFIER));
    char cnonce[PG_CRYPTO_NONCE_LEN + 1];
    assert_int_equal(pg_crypto_scram_nonce(cnonce), 0);

    /* A client that knows the password, against the verifier PostgreSQL made. */
    struct exchange x;
    struct pg_scram_client_first cf;
    struct pg_scram_server_first sf;
    uint8_t salt[PG_SCRAM_SALT_MAX], ck[32], stored[32], sk[32], recovered[32], sig[32];
    client_start(&x, cnonce);
    server_first(&x, &v, &cf);
    /* The client reads the salt and iterations from server-first, then hashes. */
    assert_int_equal(pg_scram_be_parse_server_first((const uint8_t *)x.sfirst, x.sfirst_len, cnonce,
                                                    strlen(cnonce), salt, sizeof salt, &sf, NULL),
                     (int)x.sfirst_len);
    assert_int_equal(sf.iterations, 4096);
    assert_int_equal(pg_crypto_scram_keys(PQ_PASSWORD, strlen(PQ_PASSWORD), salt, sf.salt_len,
                                          sf.iterations, ck, stored, sk),
                     0);
    assert_memory_equal(stored, v.stored_key, 32);
    assert_memory_equal(sk, v.server_key, 32);
    client_final(&x, cnonce, ck, stored, &sf, salt);
    assert_int_equal(server_check(&x, &v, &cf, recovered, sig), 0);
    assert_memory_equal(recovered, ck, 32);
    assert_int_equal(pg_crypto_verify_server_signature(sk, x.am, x.am_len, sig), 0);

    /* A wrong password: the keys differ, the proof is refused. */
    uint8_t wck[32], wstored[32];
    assert_int_equal(pg_crypto_scram_keys("Correct horse battery staple", 28, v.salt, v.salt_len,
                                          v.iterations, wck, wstored, NULL),
                     0);
    client_start(&x, cnonce);
    server_first(&x, &v, &cf);
    client_final(&x, cnonce, wck, wstored, &sf, salt);
    assert_int_equal(server_check(&x, &v, &cf, recovered, sig), PG_CRYPTO_E_MISMATCH);
}

/*
 * PgBouncer's pass-through: Switchyard checks a client against the verifier, keeps the ClientKey
 * it recovers, and logs into a server (same verifier: same salt and iterations) with a fresh
 * exchange, never knowing the password. The server's signature checks out with the verifier's
 * ServerKey.
 */
static void test_pass_through(void **state)
{
    (void)state;
    struct pg_scram_verifier v;
    assert_int_equal(pg_scram_parse_verifier((const uint8_t *)PQ_VERIFIER, strlen(PQ_VERIFIER), &v,
                                             NULL),
                     (int)strlen(PQ_VERIFIER));
    uint8_t ck[32], stored[32], salt[PG_SCRAM_SALT_MAX], recovered[32], sig[32];
    assert_int_equal(pg_crypto_scram_keys(PQ_PASSWORD, strlen(PQ_PASSWORD), v.salt, v.salt_len,
                                          v.iterations, ck, stored, NULL),
                     0);

    /* Leg 1: the application logs into Switchyard. */
    struct exchange x;
    struct pg_scram_client_first cf;
    struct pg_scram_server_first sf;
    client_start(&x, "appnonce");
    server_first(&x, &v, &cf);
    client_final(&x, "appnonce", ck, stored, &sf, salt);
    assert_int_equal(server_check(&x, &v, &cf, recovered, sig), 0);

    /* Leg 2: Switchyard logs into the server with only the recovered ClientKey. */
    uint8_t rstored[32];
    assert_int_equal(pg_crypto_stored_key(recovered, rstored), 0);
    assert_memory_equal(rstored, v.stored_key, 32);
    struct exchange y;
    char pnonce[PG_CRYPTO_NONCE_LEN + 1];
    assert_int_equal(pg_crypto_scram_nonce(pnonce), 0);
    client_start(&y, pnonce);
    server_first(&y, &v, &cf);
    client_final(&y, pnonce, recovered, v.stored_key, &sf, salt);
    /* The caller's duty before sending: the server's salt and iterations are the verifier's. */
    assert_int_equal(sf.salt_len, v.salt_len);
    assert_memory_equal(salt, v.salt, v.salt_len);
    assert_int_equal(sf.iterations, v.iterations);
    uint8_t srec[32];
    assert_int_equal(server_check(&y, &v, &cf, srec, sig), 0);
    assert_int_equal(pg_crypto_verify_server_signature(v.server_key, y.am, y.am_len, sig), 0);
    /* The second exchange is not a replay of the first. */
    assert_true(y.am_len != x.am_len || memcmp(y.am, x.am, x.am_len) != 0);
}

/* ---- MD5 ---- */

static void test_md5(void **state)
{
    (void)state;
    char out[PG_CRYPTO_MD5_LEN + 1];
    /* Stored forms from libpq PQencryptPasswordConn(..., "md5"). */
    assert_int_equal(pg_crypto_md5_stored("pencil", "user", out), PG_CRYPTO_MD5_LEN);
    assert_string_equal(out, "md520c46e3762c864548e296b33c3406aa9");
    assert_int_equal(pg_crypto_md5_stored(PQ_PASSWORD, "alice", out), PG_CRYPTO_MD5_LEN);
    assert_string_equal(out, "md5687f3363b311a9a9913eb588a2ed1308");

    /* Wire responses, from Python's hashlib.md5 of the hex part and the salt. */
    static const uint8_t salt1[4] = {0x01, 0x02, 0x03, 0x04};
    static const uint8_t salt2[4] = {0xde, 0xad, 0xbe, 0xef};
    assert_int_equal(pg_crypto_md5_response("md520c46e3762c864548e296b33c3406aa9", salt1, out),
                     PG_CRYPTO_MD5_LEN);
    assert_string_equal(out, "md54376eb6913b38f9aaff38dc7cf19ca76");
    assert_int_equal(pg_crypto_md5_response_from_password("pencil", "user", salt1, out),
                     PG_CRYPTO_MD5_LEN);
    assert_string_equal(out, "md54376eb6913b38f9aaff38dc7cf19ca76");
    assert_int_equal(pg_crypto_md5_response_from_password(PQ_PASSWORD, "alice", salt2, out),
                     PG_CRYPTO_MD5_LEN);
    assert_string_equal(out, "md5eab6d845c4c9b89ce2e549c6e7cf7b2b");

    /* The server's check. */
    const char *stored = "md520c46e3762c864548e296b33c3406aa9";
    assert_int_equal(pg_crypto_md5_verify(stored, salt1, "md54376eb6913b38f9aaff38dc7cf19ca76", 35), 0);
    assert_int_equal(pg_crypto_md5_verify(stored, salt2, "md54376eb6913b38f9aaff38dc7cf19ca76", 35),
                     PG_CRYPTO_E_MISMATCH);
    assert_int_equal(pg_crypto_md5_verify(stored, salt1, "md54376eb6913b38f9aaff38dc7cf19ca77", 35),
                     PG_CRYPTO_E_MISMATCH);
    assert_int_equal(pg_crypto_md5_verify(stored, salt1, "md54376eb6913b38f9aaff38dc7cf19ca76", 34),
                     PG_CRYPTO_E_MISMATCH);
    assert_int_equal(pg_crypto_md5_verify(stored, salt1, "md54376eb6913b38f9aaff38dc7cf19ca76x", 36),
                     PG_CRYPTO_E_MISMATCH);
    assert_int_equal(pg_crypto_md5_verify(stored, salt1, "", 0), PG_CRYPTO_E_MISMATCH);

    /* A stored form that is not "md5" + 32 lowercase hex digits is an argument error. */
    static const char *bad[] = {
        "md520C46E3762C864548E296B33C3406AA9", "md520c46e3762c864548e296b33c3406aa",
        "md520c46e3762c864548e296b33c3406aa9a", "MD520c46e3762c864548e296b33c3406aa9",
        "pencil", "", "md5", "md520c46e3762c864548e296b33c3406ag9",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(pg_crypto_md5_response(bad[i], salt1, out), PG_CRYPTO_E_ARG);
        assert_int_equal(pg_crypto_md5_verify(bad[i], salt1, "md54376eb6913b38f9aaff38dc7cf19ca76",
                                              35),
                         PG_CRYPTO_E_ARG);
    }
    assert_int_equal(pg_crypto_md5_response(NULL, salt1, out), PG_CRYPTO_E_ARG);
}

/* ---- Random bytes and nonces ---- */

static void test_random(void **state)
{
    (void)state;
    uint8_t a[64], b[64];
    assert_int_equal(pg_crypto_random(a, 0), 0);
    assert_int_equal(pg_crypto_random(a, sizeof a), 0);
    assert_int_equal(pg_crypto_random(b, sizeof b), 0);
    assert_memory_not_equal(a, b, sizeof a);

    char n1[PG_CRYPTO_NONCE_LEN + 1], n2[PG_CRYPTO_NONCE_LEN + 1];
    memset(n1, 'Z', sizeof n1);
    assert_int_equal(pg_crypto_scram_nonce(n1), 0);
    assert_int_equal(pg_crypto_scram_nonce(n2), 0);
    assert_int_equal(strlen(n1), PG_CRYPTO_NONCE_LEN);
    assert_string_not_equal(n1, n2);
    /* Usable as a SCRAM nonce: printable, no ','. */
    for (size_t i = 0; i < PG_CRYPTO_NONCE_LEN; i++)
        assert_true(n1[i] > 0x20 && n1[i] < 0x7f && n1[i] != ',');
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_rfc7677_keys),
        cmocka_unit_test(test_salted_password_edges),
        cmocka_unit_test(test_rfc7677_verify),
        cmocka_unit_test(test_verifier_matches_postgres),
        cmocka_unit_test(test_verifier_random),
        cmocka_unit_test(test_exchange_against_postgres_verifier),
        cmocka_unit_test(test_pass_through),
        cmocka_unit_test(test_md5),
        cmocka_unit_test(test_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
