/*
 * A thread that runs queued work items one at a time, off the loop, and hands each back to the
 * loop when it is done: for blocking work (libpq lookups, rechecks) that must not stall the
 * relay. The owner embeds struct sy_work as the first member of its item type and fills the
 * callbacks before sy_worker_start.
 */
#ifndef SY_WORKER_H
#define SY_WORKER_H

#include <stdatomic.h>
#include <stdint.h>

#include <uv.h>

struct sy_work {
    struct sy_work *next;
};

struct sy_worker {
    /* Set by the owner. */
    void (*run)(struct sy_worker *w, struct sy_work *item);  /* the thread: do the work */
    void (*done)(struct sy_worker *w, struct sy_work *item); /* the loop, oldest first; owns it */
    void (*drop)(struct sy_work *item);     /* frees an item never handed back (at stop) */
    void (*idle)(struct sy_worker *w);      /* the thread, every idle_ms with nothing to do */
    uint64_t idle_ms;                       /* 0: no idle calls */
    void (*exit)(struct sy_worker *w);      /* the thread, as it ends (optional) */
    void *data;
    /* Private. */
    uv_thread_t thread;
    uv_mutex_t mu;
    uv_cond_t cv;
    uv_async_t async;
    struct sy_work *todo, *todo_tail, *finished;
    atomic_int stopping;
    int started;
};

/* Starts the thread. Returns 0, or -1 after logging (name says which worker). */
int sy_worker_start(struct sy_worker *w, uv_loop_t *loop, const char *name);
/* Queues item (the worker's from now on). */
void sy_worker_submit(struct sy_worker *w, struct sy_work *item);
/* For long waits in run(): whether the worker is being stopped. */
int sy_worker_stopping(struct sy_worker *w);
/* Lets the item running now finish, joins the thread and drops what was never handed back. */
void sy_worker_stop(struct sy_worker *w);

#endif
