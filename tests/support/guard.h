/*
 * Guard-page fixtures for the codec unit tests: a GUARD_SPAN-byte area followed by one
 * PROT_NONE page. Bytes placed so that they end right at the page make any read (or write)
 * past their end crash the test instead of passing silently.
 *
 * Use guard_setup and guard_teardown as the cmocka group setup and teardown, and list
 * guard_test_traps among the group's tests: it proves the page really traps.
 */
#ifndef SY_TEST_GUARD_H
#define SY_TEST_GUARD_H

#include <stddef.h>
#include <stdint.h>

/* Usable bytes before the guard page: the longest fixture or output buffer. */
#define GUARD_SPAN (64 * 1024)

/* cmocka group setup and teardown: map the area and protect its last page; unmap it. */
int guard_setup(void **state);
int guard_teardown(void **state);

/* Copies len bytes (at most GUARD_SPAN) so that they end exactly at the guard page; returns
   where they start. Each call reuses the same area. */
const uint8_t *guard_at(const void *bytes, size_t len);

/* An output buffer of cap bytes (at most GUARD_SPAN) that ends at the guard page, filled with
   the marker byte 0xA5. */
uint8_t *guard_out(size_t cap);

/* The first byte of the guard page: guard_at(b, n) starts at guard_end() - n. */
uint8_t *guard_end(void);

/* A cmocka test: a read one byte past a fixture must crash (checked in a forked child). */
void guard_test_traps(void **state);

#endif
