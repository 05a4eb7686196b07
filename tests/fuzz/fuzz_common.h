/*
 * What the libFuzzer targets in tests/fuzz share: a check that stops the fuzzer with a report
 * (without relying on assert, which NDEBUG turns off), and exact-size copies of input bytes.
 */
#ifndef SY_FUZZ_COMMON_H
#define SY_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Prints the failed condition with its file and line, then aborts: a crash libFuzzer keeps. */
#define CHECK(cond)                                                                              \
    do {                                                                                         \
        if (!(cond)) {                                                                           \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);             \
            abort();                                                                             \
        }                                                                                        \
    } while (0)

/* Copies n bytes into a heap block of exactly n bytes (1 when n is 0), so ASan sees any read
   past them. Free it with free(). */
static inline void *fuzz_exact_copy(const void *p, size_t n)
{
    void *c = malloc(n ? n : 1);
    CHECK(c != NULL);
    if (n)
        memcpy(c, p, n);
    return c;
}

#endif
