/*
 * The cryptography of PostgreSQL password authentication: SCRAM-SHA-256 keys, proofs and
 * signatures (RFC 5802, RFC 7677), PostgreSQL's MD5 scheme, and random bytes. OpenSSL 3
 * (EVP, EVP_MAC, PKCS5_PBKDF2_HMAC, RAND_bytes); the SCRAM message syntax lives in
 * protocol/pg/pg_scram.h.
 *
 * Every function returns 0 (or, for writers, the length written) or a negative PG_CRYPTO_E_*
 * code from one list; pg_crypto_strerror() names them. No function logs, and nothing here keeps
 * a secret beyond the call: intermediate keys on the stack are wiped with OPENSSL_cleanse. The
 * caller wipes what it gets back.
 *
 * Passwords are hashed as the bytes given. PostgreSQL first applies SASLprep (NFKC and a few
 * mappings) to a password that is valid UTF-8; the two agree for ASCII passwords and for
 * passwords already in SASLprep form, but a non-ASCII password that SASLprep would change gives
 * a different SaltedPassword here than in PostgreSQL.
 *
 * The SCRAM words, for one exchange with AuthMessage = client-first-bare "," server-first ","
 * client-final-without-proof:
 *   SaltedPassword  = Hi(password, salt, i)          (PBKDF2-HMAC-SHA-256)
 *   ClientKey       = HMAC(SaltedPassword, "Client Key")
 *   StoredKey       = SHA-256(ClientKey)
 *   ServerKey       = HMAC(SaltedPassword, "Server Key")
 *   ClientSignature = HMAC(StoredKey, AuthMessage)
 *   ClientProof     = ClientKey XOR ClientSignature
 *   ServerSignature = HMAC(ServerKey, AuthMessage)
 * A server keeps only (salt, i, StoredKey, ServerKey): the verifier.
 */
#ifndef SY_PG_CRYPTO_H
#define SY_PG_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#define PG_CRYPTO_KEY_LEN 32            /* SHA-256 */
#define PG_CRYPTO_SCRAM_SALT_LEN 16     /* PostgreSQL's SCRAM_DEFAULT_SALT_LEN */
#define PG_CRYPTO_SCRAM_ITERATIONS 4096 /* PostgreSQL's default scram_iterations */
#define PG_CRYPTO_NONCE_RAW_LEN 18      /* random bytes in a nonce, as PostgreSQL and libpq use */
#define PG_CRYPTO_NONCE_LEN 24          /* base64 of those 18 bytes */
#define PG_CRYPTO_MD5_LEN 35            /* "md5" + 32 hex digits, without the NUL */
#define PG_CRYPTO_VERIFIER_MAX 512      /* room for a verifier made here, NUL included */

enum pg_crypto_error {
    PG_CRYPTO_E_OPENSSL = -1,  /* the library failed (out of memory, no provider, no entropy) */
    PG_CRYPTO_E_MISMATCH = -2, /* a proof, signature or md5 response is wrong */
    PG_CRYPTO_E_ARG = -3,      /* an argument out of range (iterations 0, an empty salt, a
                                  stored md5 hash that is not "md5" + 32 lowercase hex) */
    PG_CRYPTO_E_SPACE = -4,    /* an output buffer too small */
};

/* A text for logs; "unknown error" for anything else. */
const char *pg_crypto_strerror(int err);

/* Fills out with n cryptographically random bytes. Returns 0 or PG_CRYPTO_E_OPENSSL. */
int pg_crypto_random(uint8_t *out, size_t n);

/*
 * Writes a fresh SCRAM nonce: 18 random bytes in base64, PG_CRYPTO_NONCE_LEN characters and a
 * NUL (printable, no ','). Returns 0 or PG_CRYPTO_E_OPENSSL.
 */
int pg_crypto_scram_nonce(char out[PG_CRYPTO_NONCE_LEN + 1]);

/* ---- SCRAM-SHA-256 keys ---- */

/*
 * SaltedPassword = Hi(password, salt, iterations). Returns 0, PG_CRYPTO_E_ARG (no salt,
 * iterations 0 or over 100,000,000) or PG_CRYPTO_E_OPENSSL.
 */
int pg_crypto_salted_password(const char *password, size_t password_len, const uint8_t *salt,
                              size_t salt_len, uint32_t iterations,
                              uint8_t out[PG_CRYPTO_KEY_LEN]);

/* ClientKey from SaltedPassword. Returns 0 or PG_CRYPTO_E_OPENSSL. */
int pg_crypto_client_key(const uint8_t salted[PG_CRYPTO_KEY_LEN], uint8_t out[PG_CRYPTO_KEY_LEN]);
/* ServerKey from SaltedPassword. Returns 0 or PG_CRYPTO_E_OPENSSL. */
int pg_crypto_server_key(const uint8_t salted[PG_CRYPTO_KEY_LEN], uint8_t out[PG_CRYPTO_KEY_LEN]);
/* StoredKey = SHA-256(ClientKey). Returns 0 or PG_CRYPTO_E_OPENSSL. */
int pg_crypto_stored_key(const uint8_t client_key[PG_CRYPTO_KEY_LEN],
                         uint8_t out[PG_CRYPTO_KEY_LEN]);

/*
 * All three keys from a password in one call (any output may be NULL). Returns 0,
 * PG_CRYPTO_E_ARG or PG_CRYPTO_E_OPENSSL.
 */
int pg_crypto_scram_keys(const char *password, size_t password_len, const uint8_t *salt,
                         size_t salt_len, uint32_t iterations,
                         uint8_t client_key[PG_CRYPTO_KEY_LEN],
                         uint8_t stored_key[PG_CRYPTO_KEY_LEN],
                         uint8_t server_key[PG_CRYPTO_KEY_LEN]);

/* ClientSignature = HMAC(StoredKey, AuthMessage). Returns 0 or PG_CRYPTO_E_OPENSSL. */
int pg_crypto_client_signature(const uint8_t stored_key[PG_CRYPTO_KEY_LEN],
                               const void *auth_message, size_t auth_message_len,
                               uint8_t out[PG_CRYPTO_KEY_LEN]);

/*
 * ClientProof = ClientKey XOR HMAC(StoredKey, AuthMessage): what a client sends in p=. Used to
 * log into a server either with a password's keys or with the ClientKey recovered from a
 * client's own exchange (pg_crypto_verify_client_proof), the pass-through PgBouncer does: that
 * works only when the server's salt and iteration count equal those of the verifier the key
 * was recovered against (compare them before trying; the server will refuse otherwise).
 * stored_key must be SHA-256(client_key). Returns 0 or PG_CRYPTO_E_OPENSSL.
 */
int pg_crypto_client_proof(const uint8_t client_key[PG_CRYPTO_KEY_LEN],
                           const uint8_t stored_key[PG_CRYPTO_KEY_LEN], const void *auth_message,
                           size_t auth_message_len, uint8_t out[PG_CRYPTO_KEY_LEN]);

/* ServerSignature = HMAC(ServerKey, AuthMessage). Returns 0 or PG_CRYPTO_E_OPENSSL. */
int pg_crypto_server_signature(const uint8_t server_key[PG_CRYPTO_KEY_LEN],
                               const void *auth_message, size_t auth_message_len,
                               uint8_t out[PG_CRYPTO_KEY_LEN]);

/*
 * The server's check of a client's proof against a stored verifier: ClientKey = proof XOR
 * HMAC(StoredKey, AuthMessage), then SHA-256(ClientKey) must equal StoredKey (compared in
 * constant time). On success the recovered ClientKey is written to client_key (when not NULL):
 * with the verifier's ServerKey it lets Switchyard log into a server as this client. Returns 0,
 * PG_CRYPTO_E_MISMATCH (client_key is then zeroed) or PG_CRYPTO_E_OPENSSL.
 */
int pg_crypto_verify_client_proof(const uint8_t stored_key[PG_CRYPTO_KEY_LEN],
                                  const void *auth_message, size_t auth_message_len,
                                  const uint8_t proof[PG_CRYPTO_KEY_LEN],
                                  uint8_t client_key[PG_CRYPTO_KEY_LEN]);

/*
 * The client's check of a server's v= signature, in constant time. Returns 0,
 * PG_CRYPTO_E_MISMATCH or PG_CRYPTO_E_OPENSSL.
 */
int pg_crypto_verify_server_signature(const uint8_t server_key[PG_CRYPTO_KEY_LEN],
                                      const void *auth_message, size_t auth_message_len,
                                      const uint8_t signature[PG_CRYPTO_KEY_LEN]);

/*
 * Builds a verifier as PostgreSQL stores it, "SCRAM-SHA-256$<i>:<salt>$<StoredKey>:<ServerKey>",
 * NUL-terminated, with a fresh 16-byte salt and 4096 iterations (what PostgreSQL and libpq do).
 * For tests, documentation and a future "switchyardctl hash-password". Returns the length (not
 * counting the NUL), PG_CRYPTO_E_SPACE (cap below PG_CRYPTO_VERIFIER_MAX is enough) or
 * PG_CRYPTO_E_OPENSSL.
 */
int pg_crypto_scram_verifier(const char *password, size_t password_len, char *out, size_t cap);

/* The same with a given salt and iteration count. Also returns PG_CRYPTO_E_ARG. */
int pg_crypto_scram_verifier_with(const char *password, size_t password_len, const uint8_t *salt,
                                  size_t salt_len, uint32_t iterations, char *out, size_t cap);

/* ---- MD5 (PostgreSQL's "md5" password method) ---- */

/*
 * PostgreSQL's stored form: "md5" + hex(md5(password || user)), NUL-terminated. Returns
 * PG_CRYPTO_MD5_LEN or PG_CRYPTO_E_OPENSSL.
 */
int pg_crypto_md5_stored(const char *password, const char *user,
                         char out[PG_CRYPTO_MD5_LEN + 1]);

/*
 * The PasswordMessage a client sends for AuthenticationMD5Password with a 4-byte salt:
 * "md5" + hex(md5(hex part of the stored form || salt)), NUL-terminated. The stored form is
 * enough: whoever holds the md5 hash can log in, which is why md5 is discouraged. Returns
 * PG_CRYPTO_MD5_LEN, PG_CRYPTO_E_ARG (stored is not "md5" + 32 lowercase hex) or
 * PG_CRYPTO_E_OPENSSL.
 */
int pg_crypto_md5_response(const char *stored, const uint8_t salt[4],
                           char out[PG_CRYPTO_MD5_LEN + 1]);

/* The same from the password and user. Returns PG_CRYPTO_MD5_LEN or PG_CRYPTO_E_OPENSSL. */
int pg_crypto_md5_response_from_password(const char *password, const char *user,
                                         const uint8_t salt[4], char out[PG_CRYPTO_MD5_LEN + 1]);

/*
 * The server's check of a client's md5 response (resp, resp_len bytes, not NUL-terminated)
 * against the stored form, in constant time. Returns 0, PG_CRYPTO_E_MISMATCH, PG_CRYPTO_E_ARG
 * or PG_CRYPTO_E_OPENSSL.
 */
int pg_crypto_md5_verify(const char *stored, const uint8_t salt[4], const char *resp,
                         size_t resp_len);

#endif
