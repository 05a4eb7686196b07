/* SCRAM-SHA-256 and MD5 cryptography with OpenSSL 3. See pg_crypto.h for the contracts. */
#include "pg_crypto.h"

#include <limits.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "protocol/pg/pg_scram.h"

const char *pg_crypto_strerror(int err)
{
    switch (err) {
    case PG_CRYPTO_E_OPENSSL: return "cryptographic library failure";
    case PG_CRYPTO_E_MISMATCH: return "proof or signature does not match";
    case PG_CRYPTO_E_ARG: return "invalid argument to a cryptographic function";
    case PG_CRYPTO_E_SPACE: return "output buffer too small";
    default: return "unknown error";
    }
}

int pg_crypto_random(uint8_t *out, size_t n)
{
    /* RAND_bytes takes an int; ask in slices so any size works. */
    while (n > 0) {
        int k = n > 65536 ? 65536 : (int)n;
        if (RAND_bytes(out, k) != 1)
            return PG_CRYPTO_E_OPENSSL;
        out += k;
        n -= (size_t)k;
    }
    return 0;
}

int pg_crypto_scram_nonce(char out[PG_CRYPTO_NONCE_LEN + 1])
{
    uint8_t raw[PG_CRYPTO_NONCE_RAW_LEN];
    if (pg_crypto_random(raw, sizeof raw) < 0)
        return PG_CRYPTO_E_OPENSSL;
    int n = pg_scram_b64_encode(raw, sizeof raw, out, PG_CRYPTO_NONCE_LEN);
    OPENSSL_cleanse(raw, sizeof raw);
    if (n != PG_CRYPTO_NONCE_LEN)
        return PG_CRYPTO_E_OPENSSL;
    out[n] = '\0';
    return 0;
}

/* HMAC-SHA-256(key, data) into out[32]. */
static int hmac_sha256(const uint8_t *key, size_t key_len, const void *data, size_t data_len,
                       uint8_t out[PG_CRYPTO_KEY_LEN])
{
    size_t out_len = 0;
    static const unsigned char empty[1];
    const unsigned char *d = data_len > 0 ? data : empty;
    if (EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, key_len, d, data_len, out,
                  PG_CRYPTO_KEY_LEN, &out_len) == NULL ||
        out_len != PG_CRYPTO_KEY_LEN)
        return PG_CRYPTO_E_OPENSSL;
    return 0;
}

static int sha256(const void *data, size_t len, uint8_t out[PG_CRYPTO_KEY_LEN])
{
    unsigned int out_len = 0;
    if (EVP_Digest(data, len, out, &out_len, EVP_sha256(), NULL) != 1 ||
        out_len != PG_CRYPTO_KEY_LEN)
        return PG_CRYPTO_E_OPENSSL;
    return 0;
}

int pg_crypto_salted_password(const char *password, size_t password_len, const uint8_t *salt,
                              size_t salt_len, uint32_t iterations,
                              uint8_t out[PG_CRYPTO_KEY_LEN])
{
    if (salt == NULL || salt_len == 0 || salt_len > INT_MAX || password_len > INT_MAX ||
        iterations == 0 || iterations > PG_SCRAM_ITERATIONS_MAX)
        return PG_CRYPTO_E_ARG;
    if (PKCS5_PBKDF2_HMAC(password_len > 0 ? password : "", (int)password_len, salt,
                          (int)salt_len, (int)iterations, EVP_sha256(), PG_CRYPTO_KEY_LEN,
                          out) != 1)
        return PG_CRYPTO_E_OPENSSL;
    return 0;
}

int pg_crypto_client_key(const uint8_t salted[PG_CRYPTO_KEY_LEN], uint8_t out[PG_CRYPTO_KEY_LEN])
{
    return hmac_sha256(salted, PG_CRYPTO_KEY_LEN, "Client Key", 10, out);
}

int pg_crypto_server_key(const uint8_t salted[PG_CRYPTO_KEY_LEN], uint8_t out[PG_CRYPTO_KEY_LEN])
{
    return hmac_sha256(salted, PG_CRYPTO_KEY_LEN, "Server Key", 10, out);
}

int pg_crypto_stored_key(const uint8_t client_key[PG_CRYPTO_KEY_LEN],
                         uint8_t out[PG_CRYPTO_KEY_LEN])
{
    return sha256(client_key, PG_CRYPTO_KEY_LEN, out);
}

int pg_crypto_scram_keys(const char *password, size_t password_len, const uint8_t *salt,
                         size_t salt_len, uint32_t iterations,
                         uint8_t client_key[PG_CRYPTO_KEY_LEN],
                         uint8_t stored_key[PG_CRYPTO_KEY_LEN],
                         uint8_t server_key[PG_CRYPTO_KEY_LEN])
{
    uint8_t salted[PG_CRYPTO_KEY_LEN], ck[PG_CRYPTO_KEY_LEN];
    int rc = pg_crypto_salted_password(password, password_len, salt, salt_len, iterations, salted);
    if (rc == 0)
        rc = pg_crypto_client_key(salted, ck);
    if (rc == 0 && stored_key != NULL)
        rc = pg_crypto_stored_key(ck, stored_key);
    if (rc == 0 && server_key != NULL)
        rc = pg_crypto_server_key(salted, server_key);
    if (rc == 0 && client_key != NULL)
        memcpy(client_key, ck, sizeof ck);
    OPENSSL_cleanse(salted, sizeof salted);
    OPENSSL_cleanse(ck, sizeof ck);
    return rc;
}

int pg_crypto_client_signature(const uint8_t stored_key[PG_CRYPTO_KEY_LEN],
                               const void *auth_message, size_t auth_message_len,
                               uint8_t out[PG_CRYPTO_KEY_LEN])
{
    return hmac_sha256(stored_key, PG_CRYPTO_KEY_LEN, auth_message, auth_message_len, out);
}

int pg_crypto_client_proof(const uint8_t client_key[PG_CRYPTO_KEY_LEN],
                           const uint8_t stored_key[PG_CRYPTO_KEY_LEN], const void *auth_message,
                           size_t auth_message_len, uint8_t out[PG_CRYPTO_KEY_LEN])
{
    uint8_t sig[PG_CRYPTO_KEY_LEN];
    int rc = pg_crypto_client_signature(stored_key, auth_message, auth_message_len, sig);
    if (rc == 0) {
        for (size_t i = 0; i < PG_CRYPTO_KEY_LEN; i++)
            out[i] = client_key[i] ^ sig[i];
    }
    OPENSSL_cleanse(sig, sizeof sig);
    return rc;
}

int pg_crypto_server_signature(const uint8_t server_key[PG_CRYPTO_KEY_LEN],
                               const void *auth_message, size_t auth_message_len,
                               uint8_t out[PG_CRYPTO_KEY_LEN])
{
    return hmac_sha256(server_key, PG_CRYPTO_KEY_LEN, auth_message, auth_message_len, out);
}

int pg_crypto_verify_client_proof(const uint8_t stored_key[PG_CRYPTO_KEY_LEN],
                                  const void *auth_message, size_t auth_message_len,
                                  const uint8_t proof[PG_CRYPTO_KEY_LEN],
                                  uint8_t client_key[PG_CRYPTO_KEY_LEN])
{
    uint8_t sig[PG_CRYPTO_KEY_LEN], ck[PG_CRYPTO_KEY_LEN], h[PG_CRYPTO_KEY_LEN];
    int rc = pg_crypto_client_signature(stored_key, auth_message, auth_message_len, sig);
    if (rc == 0) {
        for (size_t i = 0; i < PG_CRYPTO_KEY_LEN; i++)
            ck[i] = proof[i] ^ sig[i];
        rc = sha256(ck, sizeof ck, h);
    }
    if (rc == 0 && CRYPTO_memcmp(h, stored_key, PG_CRYPTO_KEY_LEN) != 0)
        rc = PG_CRYPTO_E_MISMATCH;
    if (client_key != NULL) {
        if (rc == 0)
            memcpy(client_key, ck, sizeof ck);
        else
            memset(client_key, 0, PG_CRYPTO_KEY_LEN);
    }
    OPENSSL_cleanse(sig, sizeof sig);
    OPENSSL_cleanse(ck, sizeof ck);
    OPENSSL_cleanse(h, sizeof h);
    return rc;
}

int pg_crypto_verify_server_signature(const uint8_t server_key[PG_CRYPTO_KEY_LEN],
                                      const void *auth_message, size_t auth_message_len,
                                      const uint8_t signature[PG_CRYPTO_KEY_LEN])
{
    uint8_t want[PG_CRYPTO_KEY_LEN];
    int rc = pg_crypto_server_signature(server_key, auth_message, auth_message_len, want);
    if (rc == 0 && CRYPTO_memcmp(want, signature, PG_CRYPTO_KEY_LEN) != 0)
        rc = PG_CRYPTO_E_MISMATCH;
    OPENSSL_cleanse(want, sizeof want);
    return rc;
}

int pg_crypto_scram_verifier_with(const char *password, size_t password_len, const uint8_t *salt,
                                  size_t salt_len, uint32_t iterations, char *out, size_t cap)
{
    struct pg_scram_verifier v;
    if (salt_len == 0 || salt_len > PG_SCRAM_SALT_MAX)
        return PG_CRYPTO_E_ARG;
    memcpy(v.salt, salt, salt_len);
    v.salt_len = salt_len;
    v.iterations = iterations;
    int rc = pg_crypto_scram_keys(password, password_len, salt, salt_len, iterations, NULL,
                                  v.stored_key, v.server_key);
    if (rc == 0) {
        rc = pg_scram_write_verifier(out, cap, &v);
        if (rc == PG_SCRAM_E_SPACE)
            rc = PG_CRYPTO_E_SPACE;
        else if (rc < 0)
            rc = PG_CRYPTO_E_ARG;
    }
    OPENSSL_cleanse(&v, sizeof v);
    return rc;
}

int pg_crypto_scram_verifier(const char *password, size_t password_len, char *out, size_t cap)
{
    uint8_t salt[PG_CRYPTO_SCRAM_SALT_LEN];
    if (pg_crypto_random(salt, sizeof salt) < 0)
        return PG_CRYPTO_E_OPENSSL;
    return pg_crypto_scram_verifier_with(password, password_len, salt, sizeof salt,
                                         PG_CRYPTO_SCRAM_ITERATIONS, out, cap);
}

/* ---- MD5 ---- */

/* "md5" + hex(md5(a || b)) and a NUL into out. */
static int md5_hex(const void *a, size_t a_len, const void *b, size_t b_len,
                   char out[PG_CRYPTO_MD5_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t d[16];
    unsigned int d_len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_md5(), NULL) == 1 &&
             EVP_DigestUpdate(ctx, a, a_len) == 1 && EVP_DigestUpdate(ctx, b, b_len) == 1 &&
             EVP_DigestFinal_ex(ctx, d, &d_len) == 1 && d_len == 16;
    EVP_MD_CTX_free(ctx);
    if (!ok)
        return PG_CRYPTO_E_OPENSSL;
    memcpy(out, "md5", 3);
    for (size_t i = 0; i < 16; i++) {
        out[3 + 2 * i] = hex[d[i] >> 4];
        out[4 + 2 * i] = hex[d[i] & 15];
    }
    out[PG_CRYPTO_MD5_LEN] = '\0';
    OPENSSL_cleanse(d, sizeof d);
    return PG_CRYPTO_MD5_LEN;
}

/* Whether s is "md5" followed by exactly 32 lowercase hex digits. */
static int md5_stored_ok(const char *s)
{
    if (s == NULL || strncmp(s, "md5", 3) != 0)
        return 0;
    for (size_t i = 3; i < PG_CRYPTO_MD5_LEN; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return 0;
    }
    return s[PG_CRYPTO_MD5_LEN] == '\0';
}

int pg_crypto_md5_stored(const char *password, const char *user, char out[PG_CRYPTO_MD5_LEN + 1])
{
    return md5_hex(password, strlen(password), user, strlen(user), out);
}

int pg_crypto_md5_response(const char *stored, const uint8_t salt[4],
                           char out[PG_CRYPTO_MD5_LEN + 1])
{
    if (!md5_stored_ok(stored))
        return PG_CRYPTO_E_ARG;
    return md5_hex(stored + 3, 32, salt, 4, out);
}

int pg_crypto_md5_response_from_password(const char *password, const char *user,
                                         const uint8_t salt[4], char out[PG_CRYPTO_MD5_LEN + 1])
{
    char stored[PG_CRYPTO_MD5_LEN + 1];
    int rc = pg_crypto_md5_stored(password, user, stored);
    if (rc >= 0)
        rc = pg_crypto_md5_response(stored, salt, out);
    OPENSSL_cleanse(stored, sizeof stored);
    return rc;
}

int pg_crypto_md5_verify(const char *stored, const uint8_t salt[4], const char *resp,
                         size_t resp_len)
{
    char want[PG_CRYPTO_MD5_LEN + 1];
    int rc = pg_crypto_md5_response(stored, salt, want);
    if (rc >= 0)
        rc = resp_len == PG_CRYPTO_MD5_LEN && CRYPTO_memcmp(want, resp, PG_CRYPTO_MD5_LEN) == 0
                 ? 0
                 : PG_CRYPTO_E_MISMATCH;
    OPENSSL_cleanse(want, sizeof want);
    return rc;
}
