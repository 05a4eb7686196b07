/*
 * SCRAM key derivation off the event loop. PBKDF2 with the iteration count a verifier or a
 * server names costs milliseconds at PostgreSQL's 4096 and minutes at 10^8; run on the loop it
 * would stall every session of the process. Each derivation is a job on libuv's threadpool
 * (uv_queue_work), so several logins derive in parallel while the loop keeps relaying.
 *
 * A job owns copies of what it needs (password, salt, iteration count) and never points into a
 * session: the caller names its session by id and its login by the token submit returns, and
 * looks both up again when the result comes back (the session may have closed meanwhile; then
 * the result is dropped). Secrets in a job are wiped with OPENSSL_cleanse before it is freed.
 *
 * Loop thread only, except the derivation itself.
 */
#ifndef SY_PG_DERIVE_H
#define SY_PG_DERIVE_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "pg_crypto.h"

/* What a derivation produced: the three SCRAM keys of a password, or a failure. */
struct pg_derive_keys {
    int rc; /* 0, or a PG_CRYPTO_E_* code (the keys are then zero) */
    uint8_t client_key[PG_CRYPTO_KEY_LEN];
    uint8_t stored_key[PG_CRYPTO_KEY_LEN];
    uint8_t server_key[PG_CRYPTO_KEY_LEN];
};

/* Called on the loop thread when a job ends (unless it was cancelled before it started), with
 * the ctx, session id and token it was submitted with. keys is wiped after the call returns. */
typedef void (*pg_derive_done_fn)(void *ctx, uint64_t session_id, uint64_t token,
                                  const struct pg_derive_keys *keys);

/*
 * Queues the derivation of password's SCRAM keys (pg_crypto_scram_keys) with salt and
 * iterations on libuv's threadpool; done is called on the loop when it is over. Everything is
 * copied. Returns a token (never 0) that names the job, or 0 when it could not be queued
 * (out of memory, a salt over PG_SCRAM_SALT_MAX); done is then never called.
 */
uint64_t pg_derive_submit(uv_loop_t *loop, const char *password, size_t password_len,
                          const uint8_t *salt, size_t salt_len, uint32_t iterations,
                          pg_derive_done_fn done, void *ctx, uint64_t session_id);

/*
 * Takes the job named by token off the queue if no thread has started it: it is then never
 * reported. One already running cannot be stopped (PBKDF2 cannot be interrupted) and reports
 * as usual, so done must always find its session and token again before using a result. A
 * token that is 0, unknown or already reported is ignored.
 */
void pg_derive_cancel(uint64_t token);

/* Jobs submitted and not yet ended (queued, running, or ended but not yet handed back). */
size_t pg_derive_pending(void);

#endif
