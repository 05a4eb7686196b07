/* Guard-page fixtures for the codec unit tests. See guard.h. */
#include "guard.h"

#include <stdarg.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static uint8_t *g_area;
static size_t g_page;

int guard_setup(void **state)
{
    (void)state;
    g_page = (size_t)sysconf(_SC_PAGESIZE);
    void *p = mmap(NULL, GUARD_SPAN + g_page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    if (p == MAP_FAILED)
        return -1;
    g_area = p;
    return mprotect(g_area + GUARD_SPAN, g_page, PROT_NONE);
}

int guard_teardown(void **state)
{
    (void)state;
    return munmap(g_area, GUARD_SPAN + g_page);
}

const uint8_t *guard_at(const void *bytes, size_t len)
{
    assert_true(len <= GUARD_SPAN);
    uint8_t *p = g_area + GUARD_SPAN - len;
    if (len > 0)
        memmove(p, bytes, len);
    return p;
}

uint8_t *guard_out(size_t cap)
{
    assert_true(cap <= GUARD_SPAN);
    uint8_t *p = g_area + GUARD_SPAN - cap;
    memset(p, 0xA5, cap);
    return p;
}

uint8_t *guard_end(void)
{
    return g_area + GUARD_SPAN;
}

static void on_segv(int sig)
{
    (void)sig;
    _exit(77);
}

/* The guard itself must trap, or every other test of the group proves nothing about over-reads. */
void guard_test_traps(void **state)
{
    (void)state;
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_segv;
        sigaction(SIGSEGV, &sa, NULL);
        sigaction(SIGBUS, &sa, NULL);
        const volatile uint8_t *p = guard_at("ab", 2);
        uint8_t past = p[2];
        _exit(past == 0xEE ? 1 : 0);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    /* Our handler exits 77; a sanitizer's own SEGV report exits non-zero or kills the child. */
    assert_true(WIFSIGNALED(st) || (WIFEXITED(st) && WEXITSTATUS(st) != 0));
}
