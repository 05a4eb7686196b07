/*
 * SCRAM-SHA-256 message codec (RFC 5802 and RFC 7677, as PostgreSQL uses them), strict base64,
 * and PostgreSQL's stored SCRAM verifier.
 *
 * Pure code like pg_proto: bytes in, views out; views in, bytes out. No crypto (proxy/pg_crypto
 * computes keys and proofs), no I/O, no allocation, no globals, no logging. Inputs are never
 * assumed NUL-terminated: every parser reads only inside (buf, len).
 *
 * A SCRAM message always arrives whole, as the payload of a framed SASL message, so no parser
 * here answers "need more". Each returns either the bytes consumed (always len: the whole
 * message, > 0) or a negative PG_SCRAM_E_* code; when err_off is given it is then set to the
 * offset of the first offending byte. Views point into the caller's input buffer and are valid
 * only while it is; they are not NUL-terminated.
 *
 * Encoders write into a caller-owned buffer and return the bytes written (no NUL terminator is
 * written unless the contract says so), or PG_SCRAM_E_SPACE, in which case the buffer's contents
 * are unspecified.
 *
 * Names carry the direction: pg_scram_fe_* for what a client sends (client-first and
 * client-final messages, SASLInitialResponse, SASLResponse), pg_scram_be_* for what a server
 * sends (server-first and server-final messages, AuthenticationSASL*). Switchyard uses both
 * sides: it is the server to its clients and the client to blue and green.
 *
 * The SCRAM user name is reported but PostgreSQL ignores it (libpq sends "n=" with nothing):
 * the user is the startup packet's.
 */
#ifndef SY_PG_SCRAM_H
#define SY_PG_SCRAM_H

#include <stddef.h>
#include <stdint.h>

#define PG_SCRAM_MECHANISM "SCRAM-SHA-256"
#define PG_SCRAM_MECHANISM_PLUS "SCRAM-SHA-256-PLUS"
#define PG_SCRAM_CBIND_TLS_SERVER_END_POINT "tls-server-end-point"

#define PG_SCRAM_KEY_LEN 32          /* SHA-256: keys, proofs and signatures */
#define PG_SCRAM_MSG_MAX 4096        /* longest SCRAM message any parser accepts */
#define PG_SCRAM_NONCE_MAX 1024      /* longest nonce (client part plus server part) */
#define PG_SCRAM_SALT_MAX 128        /* longest salt in a stored verifier, decoded */
#define PG_SCRAM_VERIFIER_MAX 1024   /* longest stored verifier string */
#define PG_SCRAM_ITERATIONS_MAX 100000000u /* more is refused: a hostile server could stall us */
#define PG_SCRAM_CBIND_DATA_MAX 256  /* largest channel-binding input (gs2 header + cbind data) */
#define PG_SCRAM_CBIND_NAME_MAX 64   /* longest channel-binding type name after "p=" */
#define PG_SCRAM_SASL_MAX 65535      /* largest SASL payload (PostgreSQL's PG_MAX_AUTH_TOKEN_LENGTH) */

/* Errors. Negative, from one list; pg_scram_strerror() names them for logs. */
enum pg_scram_error {
    PG_SCRAM_E_MALFORMED = -1,   /* the bytes do not follow the message's grammar */
    PG_SCRAM_E_TOO_LONG = -2,    /* the message, or a field, is over its limit */
    PG_SCRAM_E_BASE64 = -3,      /* a base64 field has a bad character, length or padding */
    PG_SCRAM_E_NONCE = -4,       /* a nonce is empty, over PG_SCRAM_NONCE_MAX, not printable, or
                                    does not extend (or equal) the nonce it must */
    PG_SCRAM_E_ITERATIONS = -5,  /* the iteration count is 0, over the maximum, or not a number */
    PG_SCRAM_E_EXTENSION = -6,   /* a mandatory extension (m=) that nobody supports */
    PG_SCRAM_E_AUTHZID = -7,     /* an authorization identity (a=): PostgreSQL refuses them */
    PG_SCRAM_E_KEY_LENGTH = -8,  /* a proof, signature or key that is not 32 bytes */
    PG_SCRAM_E_CBIND = -9,       /* channel-binding data that does not match what it must */
    PG_SCRAM_E_SPACE = -10,      /* an encoder's output buffer is too small */
};

/* A text for logs; "unknown error" for anything not in the list (including 0 and positives). */
const char *pg_scram_strerror(int err);

/* A piece of the input: ptr points into the caller's buffer; not NUL-terminated. */
struct pg_scram_view {
    const char *ptr;
    size_t len;
};

/* The gs2 channel-binding flag of a client-first-message. */
enum pg_scram_cbind_flag {
    PG_SCRAM_CBIND_N = 'n', /* the client does not support channel binding */
    PG_SCRAM_CBIND_Y = 'y', /* the client supports it but thinks the server does not */
    PG_SCRAM_CBIND_P = 'p', /* the client requires it, with the type in cbind_name */
};

/* ---- base64 (RFC 4648 standard alphabet, with padding; strict) ---- */

/* Bytes needed to encode n bytes: 4 * ceil(n / 3). */
static inline size_t pg_scram_b64_len(size_t n) { return (n + 2) / 3 * 4; }

/*
 * Encodes n bytes. Returns the characters written (pg_scram_b64_len(n)), or PG_SCRAM_E_SPACE
 * when cap is smaller or the result would not fit an int. Writes no NUL.
 */
int pg_scram_b64_encode(const uint8_t *in, size_t n, char *out, size_t cap);

/*
 * Decodes n characters. Only canonical base64 is accepted: a length that is a multiple of 4, the
 * 64 alphabet characters, '=' only as the last one or two, and zero bits where padding leaves
 * bits unused (so decode then encode gives back the input). No whitespace. An empty input
 * decodes to 0 bytes. Returns the bytes written, PG_SCRAM_E_BASE64, or PG_SCRAM_E_SPACE when
 * the decoded bytes do not fit cap.
 */
int pg_scram_b64_decode(const char *in, size_t n, uint8_t *out, size_t cap);

/* ---- Client side of the exchange (what a client sends) ---- */

/*
 * The SASLInitialResponse body (after the 'p' type byte and length): the mechanism name,
 * NUL-terminated, an int32 data length (-1: no data), and the data.
 */
struct pg_scram_sasl_initial {
    const char *mechanism; /* NUL-terminated, points into the input */
    const uint8_t *data;   /* the client-first-message; NULL when the length was -1 */
    size_t data_len;
    int has_data;          /* 0 when the length was -1 */
};

/*
 * Parses a SASLInitialResponse body. The mechanism is not judged: the caller compares it with
 * what it offered. Returns len, or PG_SCRAM_E_MALFORMED (an empty or unterminated mechanism
 * name, a length below -1, or a length that does not cover exactly the rest of the body) or
 * PG_SCRAM_E_TOO_LONG (len over PG_SCRAM_SASL_MAX + 1024).
 */
int pg_scram_fe_parse_sasl_initial(const uint8_t *buf, size_t len,
                                   struct pg_scram_sasl_initial *out, size_t *err_off);

struct pg_scram_client_first {
    enum pg_scram_cbind_flag cbind_flag;
    struct pg_scram_view cbind_name; /* PG_SCRAM_CBIND_P: the type ("tls-server-end-point");
                                        empty otherwise. Not judged here: the caller decides. */
    struct pg_scram_view gs2_header; /* "n,," or "y,," or "p=<type>,,": the start of the c=
                                        attribute the client-final-message must carry */
    struct pg_scram_view username;   /* raw saslname ("=2C" and "=3D" not decoded); may be empty */
    struct pg_scram_view nonce;      /* the client nonce: printable, no ',' */
    struct pg_scram_view bare;       /* client-first-message-bare, for the AuthMessage */
};

/*
 * Parses a client-first-message ("n,,n=,r=<nonce>"). Optional extensions after the nonce are
 * checked for syntax and ignored, as PostgreSQL does. The channel-binding flag is reported, not
 * judged; the caller does what PostgreSQL does: flag p if and only if the mechanism chosen was
 * SCRAM-SHA-256-PLUS, with the type tls-server-end-point, and no flag y when it offered
 * SCRAM-SHA-256-PLUS (the client was talked out of binding: a downgrade). Returns len, or
 * PG_SCRAM_E_MALFORMED, PG_SCRAM_E_TOO_LONG (over PG_SCRAM_MSG_MAX, or a channel-binding type
 * over PG_SCRAM_CBIND_NAME_MAX), PG_SCRAM_E_AUTHZID (an a= identity),
 * PG_SCRAM_E_EXTENSION (m=) or PG_SCRAM_E_NONCE.
 */
int pg_scram_fe_parse_client_first(const uint8_t *buf, size_t len,
                                   struct pg_scram_client_first *out, size_t *err_off);

/*
 * Writes a client-first-message with an empty user name, as libpq does:
 * "<gs2 header>n=,r=<nonce>". flag PG_SCRAM_CBIND_P needs cbind_name (e.g.
 * PG_SCRAM_CBIND_TLS_SERVER_END_POINT; at most PG_SCRAM_CBIND_NAME_MAX characters of letters,
 * digits, '.' and '-'); the other flags ignore it. The nonce must be 1 to
 * PG_SCRAM_NONCE_MAX printable characters without ','. *bare_off (when given) is set to where
 * the client-first-message-bare starts (the gs2 header's length). Returns the bytes written,
 * PG_SCRAM_E_SPACE, PG_SCRAM_E_NONCE, or PG_SCRAM_E_MALFORMED (an unknown flag or a bad type).
 */
int pg_scram_fe_write_client_first(char *out, size_t cap, enum pg_scram_cbind_flag flag,
                                   const char *cbind_name, const char *nonce, size_t nonce_len,
                                   size_t *bare_off);

struct pg_scram_client_final {
    struct pg_scram_view cbind_b64;     /* the c= attribute as sent */
    uint8_t cbind[PG_SCRAM_CBIND_DATA_MAX]; /* c= decoded: gs2 header + channel-binding data */
    size_t cbind_len;
    struct pg_scram_view nonce;          /* r=: the full nonce (client part + server part) */
    uint8_t proof[PG_SCRAM_KEY_LEN];     /* p= decoded */
    struct pg_scram_view without_proof;  /* client-final-message-without-proof, for the AuthMessage */
};

/*
 * Parses a client-final-message ("c=<b64>,r=<nonce>[,extensions],p=<b64 proof>"). When
 * expected_nonce is not NULL the nonce must equal it (the client nonce and the server's, as
 * sent in the server-first-message). The channel binding is decoded but not judged:
 * pg_scram_check_cbind() does that. Returns len, or PG_SCRAM_E_MALFORMED, PG_SCRAM_E_TOO_LONG,
 * PG_SCRAM_E_BASE64, PG_SCRAM_E_NONCE, PG_SCRAM_E_KEY_LENGTH (the proof is not 32 bytes) or
 * PG_SCRAM_E_CBIND (c= decodes to more than PG_SCRAM_CBIND_DATA_MAX bytes).
 */
int pg_scram_fe_parse_client_final(const uint8_t *buf, size_t len, const char *expected_nonce,
                                   size_t expected_nonce_len, struct pg_scram_client_final *out,
                                   size_t *err_off);

/*
 * Writes a client-final-message-without-proof: "c=<base64(gs2_header || cbind_data)>,r=<nonce>".
 * gs2_header is the one sent in the client-first-message ("n,," for no channel binding);
 * cbind_data (the tls-server-end-point hash) may be NULL when cbind_len is 0. Returns the bytes
 * written, PG_SCRAM_E_SPACE, PG_SCRAM_E_CBIND (header + data over PG_SCRAM_CBIND_DATA_MAX) or
 * PG_SCRAM_E_NONCE.
 */
int pg_scram_fe_write_client_final_without_proof(char *out, size_t cap, const char *gs2_header,
                                                 size_t gs2_len, const uint8_t *cbind_data,
                                                 size_t cbind_len, const char *nonce,
                                                 size_t nonce_len);

/*
 * Writes a client-final-message: the without-proof part, then ",p=<base64 proof>". out may be
 * the same buffer as without_proof (the usual case: write the part, compute the proof over the
 * AuthMessage, then append). Returns the bytes written or PG_SCRAM_E_SPACE.
 */
int pg_scram_fe_write_client_final(char *out, size_t cap, const char *without_proof,
                                   size_t without_proof_len, const uint8_t proof[PG_SCRAM_KEY_LEN]);

/*
 * Checks the c= attribute of a client-final-message against what it must be: the gs2 header of
 * the client-first-message followed, for PG_SCRAM_CBIND_P only, by the channel-binding data the
 * server computed itself (cbind_data, cbind_len). Returns 0 or PG_SCRAM_E_CBIND.
 */
int pg_scram_check_cbind(const struct pg_scram_client_final *fin,
                         const struct pg_scram_client_first *first, const uint8_t *cbind_data,
                         size_t cbind_len);

/* What a server makes of the client's choice of mechanism and channel-binding flag. */
enum pg_scram_cbind_verdict {
    PG_SCRAM_CB_OK = 0,               /* go on (binding with flag p, or none) */
    PG_SCRAM_CB_BAD_MECHANISM = 1,    /* a mechanism that was not offered */
    PG_SCRAM_CB_PLUS_WITHOUT_DATA = 2, /* SCRAM-SHA-256-PLUS chosen, flag n or y */
    PG_SCRAM_CB_DATA_WITHOUT_PLUS = 3, /* SCRAM-SHA-256 chosen, flag p */
    PG_SCRAM_CB_DOWNGRADE = 4,        /* flag y although PLUS was offered: the client was told
                                         the server cannot bind (someone in the middle) */
    PG_SCRAM_CB_BAD_TYPE = 5,         /* flag p with a type other than tls-server-end-point */
};

/*
 * Judges a SASLInitialResponse as PostgreSQL's server does (auth-scram.c: scram_init and
 * read_client_first_message), in its order. plus_offered: SCRAM-SHA-256-PLUS was in the
 * AuthenticationSASL list (the connection is TLS and its certificate hash is known); mechanism:
 * the NUL-terminated name the client chose; first: its parsed client-first-message. Returns a
 * verdict; every one but PG_SCRAM_CB_OK fails the login, with the text of
 * pg_scram_cbind_verdict_message() and the SQLSTATE of pg_scram_cbind_verdict_sqlstate().
 */
enum pg_scram_cbind_verdict pg_scram_be_cbind_verdict(int plus_offered, const char *mechanism,
                                                      const struct pg_scram_client_first *first);
/* PostgreSQL's message for a verdict ("" for PG_SCRAM_CB_OK). */
const char *pg_scram_cbind_verdict_message(enum pg_scram_cbind_verdict v);
/* PostgreSQL's SQLSTATE for a verdict: 28000 for a downgrade, 08P01 for the others ("" for
 * PG_SCRAM_CB_OK). */
const char *pg_scram_cbind_verdict_sqlstate(enum pg_scram_cbind_verdict v);

/* ---- Server side of the exchange (what a server sends) ---- */

struct pg_scram_server_first {
    struct pg_scram_view nonce;        /* r=: the client nonce followed by the server's */
    size_t salt_len;                   /* s= decoded into the caller's buffer */
    uint32_t iterations;               /* i=, 1 to PG_SCRAM_ITERATIONS_MAX */
};

/*
 * Parses a server-first-message ("r=<nonce>,s=<b64 salt>,i=<n>[,extensions]"), as a client.
 * The nonce must start with client_nonce and add at least one character of the server's;
 * the salt is decoded into salt (at most salt_cap bytes, at least 1). Returns len, or
 * PG_SCRAM_E_MALFORMED (including a missing attribute), PG_SCRAM_E_TOO_LONG (message over
 * PG_SCRAM_MSG_MAX or salt over salt_cap), PG_SCRAM_E_EXTENSION (m=), PG_SCRAM_E_NONCE,
 * PG_SCRAM_E_BASE64 or PG_SCRAM_E_ITERATIONS (0, over PG_SCRAM_ITERATIONS_MAX, a leading zero).
 */
int pg_scram_be_parse_server_first(const uint8_t *buf, size_t len, const char *client_nonce,
                                   size_t client_nonce_len, uint8_t *salt, size_t salt_cap,
                                   struct pg_scram_server_first *out, size_t *err_off);

/*
 * Writes a server-first-message: "r=<client nonce><server nonce>,s=<base64 salt>,i=<n>". Both
 * nonce parts must be non-empty and printable, together at most PG_SCRAM_NONCE_MAX; salt_len
 * 1 to PG_SCRAM_SALT_MAX; iterations 1 to PG_SCRAM_ITERATIONS_MAX. Returns the bytes written,
 * PG_SCRAM_E_SPACE, PG_SCRAM_E_NONCE, PG_SCRAM_E_TOO_LONG (salt) or PG_SCRAM_E_ITERATIONS.
 */
int pg_scram_be_write_server_first(char *out, size_t cap, const char *client_nonce,
                                   size_t client_nonce_len, const char *server_nonce,
                                   size_t server_nonce_len, const uint8_t *salt, size_t salt_len,
                                   uint32_t iterations);

struct pg_scram_server_final {
    int is_error;                          /* 1: e=<error>; 0: v=<signature> */
    uint8_t signature[PG_SCRAM_KEY_LEN];   /* v= decoded (is_error == 0) */
    struct pg_scram_view error;            /* e= value, e.g. "invalid-proof" (is_error == 1) */
};

/*
 * Parses a server-final-message ("v=<b64 signature>" or "e=<error>", optionally followed by
 * extensions), as a client. An e= message is a successful parse with is_error set: the caller
 * fails the login and may log the value (it is the server's fixed text, not a secret). Returns
 * len, or PG_SCRAM_E_MALFORMED, PG_SCRAM_E_TOO_LONG, PG_SCRAM_E_BASE64 or PG_SCRAM_E_KEY_LENGTH.
 */
int pg_scram_be_parse_server_final(const uint8_t *buf, size_t len,
                                   struct pg_scram_server_final *out, size_t *err_off);

/* Writes "v=<base64 ServerSignature>" (46 bytes). Returns 46 or PG_SCRAM_E_SPACE. */
int pg_scram_be_write_server_final(char *out, size_t cap,
                                   const uint8_t signature[PG_SCRAM_KEY_LEN]);

/*
 * Writes "e=<error>", error being one of RFC 5802's server-error-values such as
 * "invalid-proof", "invalid-encoding", "channel-bindings-dont-match" or "other-error" (any
 * non-empty text without ',' or NUL and at most 64 bytes is accepted). Returns the bytes
 * written, PG_SCRAM_E_SPACE or PG_SCRAM_E_MALFORMED.
 */
int pg_scram_be_write_server_error(char *out, size_t cap, const char *error);

/* ---- The AuthMessage both sides sign ---- */

/*
 * Writes client-first-message-bare "," server-first-message "," client-final-without-proof.
 * Returns the bytes written or PG_SCRAM_E_SPACE.
 */
int pg_scram_write_auth_message(char *out, size_t cap, struct pg_scram_view client_first_bare,
                                struct pg_scram_view server_first,
                                struct pg_scram_view client_final_without_proof);

/* ---- PostgreSQL's stored verifier (pg_authid.rolpassword) ---- */

struct pg_scram_verifier {
    uint32_t iterations;
    uint8_t salt[PG_SCRAM_SALT_MAX];
    size_t salt_len;                       /* 1 to PG_SCRAM_SALT_MAX */
    uint8_t stored_key[PG_SCRAM_KEY_LEN];
    uint8_t server_key[PG_SCRAM_KEY_LEN];
};

/*
 * Parses "SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>".
 * Returns len, or PG_SCRAM_E_MALFORMED (prefix or separators), PG_SCRAM_E_TOO_LONG (over
 * PG_SCRAM_VERIFIER_MAX, or a salt over PG_SCRAM_SALT_MAX), PG_SCRAM_E_ITERATIONS,
 * PG_SCRAM_E_BASE64 or PG_SCRAM_E_KEY_LENGTH. The result holds secrets: the caller wipes it.
 */
int pg_scram_parse_verifier(const uint8_t *buf, size_t len, struct pg_scram_verifier *out,
                            size_t *err_off);

/*
 * Writes a verifier in the form above, followed by a NUL (not counted). Returns the length,
 * PG_SCRAM_E_SPACE, PG_SCRAM_E_ITERATIONS or PG_SCRAM_E_TOO_LONG (salt_len 0 or over the max).
 */
int pg_scram_write_verifier(char *out, size_t cap, const struct pg_scram_verifier *v);

/* ---- The framed SASL messages that carry the above (header included) ---- */

/* AuthenticationSASL ('R', code 10) offering SCRAM-SHA-256-PLUS first when plus is set. */
int pg_scram_be_write_auth_sasl(uint8_t *out, size_t cap, int plus);
/* AuthenticationSASLContinue ('R', code 11) carrying data (a server-first-message). */
int pg_scram_be_write_auth_sasl_continue(uint8_t *out, size_t cap, const void *data, size_t len);
/* AuthenticationSASLFinal ('R', code 12) carrying data (a server-final-message). */
int pg_scram_be_write_auth_sasl_final(uint8_t *out, size_t cap, const void *data, size_t len);
/* SASLInitialResponse ('p'): mechanism, int32 length, data (data NULL: length -1). */
int pg_scram_fe_write_sasl_initial(uint8_t *out, size_t cap, const char *mechanism,
                                   const void *data, size_t len);
/* SASLResponse ('p') carrying data (a client-final-message). */
int pg_scram_fe_write_sasl_response(uint8_t *out, size_t cap, const void *data, size_t len);
/* Each of these five returns the bytes written or PG_SCRAM_E_SPACE (also for data over
   PG_SCRAM_SASL_MAX). */

/* What a server's AuthenticationSASL* message says, for Switchyard logging into a server. */
struct pg_scram_auth_sasl {
    uint32_t code;          /* 10 SASL, 11 SASLContinue, 12 SASLFinal */
    int offers_scram;       /* code 10: SCRAM-SHA-256 is in the list */
    int offers_scram_plus;  /* code 10: SCRAM-SHA-256-PLUS is in the list */
    const uint8_t *data;    /* codes 11 and 12: the SCRAM message */
    size_t data_len;
};

/*
 * Parses a whole AuthenticationSASL, AuthenticationSASLContinue or AuthenticationSASLFinal
 * message (type 'R' and length included). Returns len, or PG_SCRAM_E_MALFORMED (another type or
 * code, a length field that does not match len, a mechanism list that is not NUL-terminated
 * names ending with an empty one) or PG_SCRAM_E_TOO_LONG (over PG_SCRAM_SASL_MAX + 1024).
 */
int pg_scram_be_parse_auth_sasl(const uint8_t *msg, size_t len, struct pg_scram_auth_sasl *out,
                                size_t *err_off);

#endif
