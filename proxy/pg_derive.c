/* SCRAM key derivation on libuv's threadpool. See pg_derive.h. */
#include "pg_derive.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "protocol/pg/pg_scram.h"

struct derive_job {
    uv_work_t req;                       /* req.data is the job */
    struct derive_job *prev, *next;      /* in jobs, on the loop thread */
    uint64_t token;
    uint64_t session_id;
    pg_derive_done_fn done;
    void *ctx;
    /* The thread reads these and writes keys; nothing else touches them meanwhile. */
    uint32_t iterations;
    size_t salt_len;
    uint8_t salt[PG_SCRAM_SALT_MAX];
    struct pg_derive_keys keys;
    size_t password_len;
    char password[];                     /* not NUL-terminated */
};

/* Jobs not yet handed back, for pg_derive_cancel. Touched on the loop thread only. */
static struct derive_job *jobs;
static size_t njobs;
static uint64_t next_token;

static void job_unlink(struct derive_job *j)
{
    if (j->prev)
        j->prev->next = j->next;
    else
        jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    njobs--;
}

static void job_free(struct derive_job *j)
{
    OPENSSL_cleanse(j, sizeof(*j) + j->password_len);
    free(j);
}

/* A threadpool thread: the one expensive call. */
static void on_work(uv_work_t *req)
{
    struct derive_job *j = req->data;
    memset(&j->keys, 0, sizeof(j->keys));
    j->keys.rc = pg_crypto_scram_keys(j->password, j->password_len, j->salt, j->salt_len,
                                      j->iterations, j->keys.client_key, j->keys.stored_key,
                                      j->keys.server_key);
    if (j->keys.rc != 0) {
        int rc = j->keys.rc;
        OPENSSL_cleanse(&j->keys, sizeof(j->keys));
        j->keys.rc = rc;
    }
    /* The password is no longer needed; wipe it before the job waits for the loop. */
    OPENSSL_cleanse(j->password, j->password_len);
}

/* The loop: hands the keys over, unless the job was cancelled before it ran (UV_ECANCELED). */
static void on_after_work(uv_work_t *req, int status)
{
    struct derive_job *j = req->data;
    job_unlink(j);
    if (status == 0)
        j->done(j->ctx, j->session_id, j->token, &j->keys);
    job_free(j);
}

uint64_t pg_derive_submit(uv_loop_t *loop, const char *password, size_t password_len,
                          const uint8_t *salt, size_t salt_len, uint32_t iterations,
                          pg_derive_done_fn done, void *ctx, uint64_t session_id)
{
    if (salt_len > PG_SCRAM_SALT_MAX || password_len > SIZE_MAX - sizeof(struct derive_job))
        return 0;
    struct derive_job *j = calloc(1, sizeof(*j) + password_len);
    if (!j)
        return 0;
    j->req.data = j;
    j->token = ++next_token;
    j->session_id = session_id;
    j->done = done;
    j->ctx = ctx;
    j->iterations = iterations;
    j->salt_len = salt_len;
    if (salt_len)
        memcpy(j->salt, salt, salt_len);
    j->password_len = password_len;
    if (password_len)
        memcpy(j->password, password, password_len);
    if (uv_queue_work(loop, &j->req, on_work, on_after_work) != 0) {
        OPENSSL_cleanse(j, sizeof(*j) + password_len);
        free(j);
        return 0;
    }
    j->next = jobs;
    if (jobs)
        jobs->prev = j;
    jobs = j;
    njobs++;
    return j->token;
}

void pg_derive_cancel(uint64_t token)
{
    if (token == 0)
        return;
    for (struct derive_job *j = jobs; j; j = j->next) {
        if (j->token != token)
            continue;
        /* Fails (UV_EBUSY) once the job runs or has run: it then reports as usual. */
        uv_cancel((uv_req_t *)&j->req);
        return;
    }
}

size_t pg_derive_pending(void) { return njobs; }
