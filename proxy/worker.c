/* A work queue with its own thread. See worker.h. */
#include "worker.h"

#include "log.h"

static void worker_main(void *arg)
{
    struct sy_worker *w = arg;
    uv_mutex_lock(&w->mu);
    for (;;) {
        while (!w->todo && !atomic_load(&w->stopping)) {
            if (!w->idle || !w->idle_ms) {
                uv_cond_wait(&w->cv, &w->mu);
                continue;
            }
            if (uv_cond_timedwait(&w->cv, &w->mu, w->idle_ms * 1000000u) == UV_ETIMEDOUT) {
                uv_mutex_unlock(&w->mu);
                w->idle(w);
                uv_mutex_lock(&w->mu);
            }
        }
        if (atomic_load(&w->stopping))
            break;
        struct sy_work *it = w->todo;
        w->todo = it->next;
        if (!w->todo)
            w->todo_tail = NULL;
        uv_mutex_unlock(&w->mu);
        w->run(w, it);
        uv_mutex_lock(&w->mu);
        it->next = w->finished;
        w->finished = it;
        uv_async_send(&w->async);
    }
    uv_mutex_unlock(&w->mu);
    if (w->exit)
        w->exit(w);
}

static void on_async(uv_async_t *h)
{
    struct sy_worker *w = h->data;
    uv_mutex_lock(&w->mu);
    struct sy_work *list = w->finished, *rev = NULL;
    w->finished = NULL;
    uv_mutex_unlock(&w->mu);
    while (list) { /* newest first as pushed: hand them back oldest first */
        struct sy_work *n = list->next;
        list->next = rev;
        rev = list;
        list = n;
    }
    while (rev) {
        struct sy_work *n = rev->next;
        w->done(w, rev);
        rev = n;
    }
}

int sy_worker_start(struct sy_worker *w, uv_loop_t *loop, const char *name)
{
    atomic_store(&w->stopping, 0);
    w->todo = w->todo_tail = w->finished = NULL;
    if (uv_mutex_init(&w->mu) != 0)
        goto fail;
    if (uv_cond_init(&w->cv) != 0) {
        uv_mutex_destroy(&w->mu);
        goto fail;
    }
    if (uv_async_init(loop, &w->async, on_async) != 0) {
        uv_cond_destroy(&w->cv);
        uv_mutex_destroy(&w->mu);
        goto fail;
    }
    w->async.data = w;
    if (uv_thread_create(&w->thread, worker_main, w) != 0) {
        uv_close((uv_handle_t *)&w->async, NULL);
        uv_cond_destroy(&w->cv);
        uv_mutex_destroy(&w->mu);
        goto fail;
    }
    w->started = 1;
    return 0;
fail:
    sy_error("cannot start the %s thread", name);
    return -1;
}

void sy_worker_submit(struct sy_worker *w, struct sy_work *item)
{
    item->next = NULL;
    uv_mutex_lock(&w->mu);
    if (w->todo_tail)
        w->todo_tail->next = item;
    else
        w->todo = item;
    w->todo_tail = item;
    uv_cond_signal(&w->cv);
    uv_mutex_unlock(&w->mu);
}

int sy_worker_stopping(struct sy_worker *w) { return atomic_load(&w->stopping); }

void sy_worker_stop(struct sy_worker *w)
{
    if (!w->started)
        return;
    uv_mutex_lock(&w->mu);
    atomic_store(&w->stopping, 1);
    uv_cond_signal(&w->cv);
    uv_mutex_unlock(&w->mu);
    uv_thread_join(&w->thread);
    w->started = 0;
    struct sy_work *lists[2] = {w->todo, w->finished};
    for (int i = 0; i < 2; i++)
        while (lists[i]) {
            struct sy_work *it = lists[i];
            lists[i] = it->next;
            w->drop(it);
        }
    w->todo = w->todo_tail = w->finished = NULL;
    uv_close((uv_handle_t *)&w->async, NULL);
    uv_cond_destroy(&w->cv);
    uv_mutex_destroy(&w->mu);
}
