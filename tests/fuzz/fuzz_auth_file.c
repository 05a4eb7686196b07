/*
 * libFuzzer target for the auth file parser (config/auth_file.c): sy_auth_file_parse on raw
 * bytes (not NUL-terminated, in an exact-size copy so a read past the end is caught).
 *
 * Checks, beyond "no crash and no over-read" (ASan): the answer is 0 or -1; a failure leaves
 * the struct empty and a NUL-terminated message starting with the file name, and a message
 * buffer of 4 bytes gives the same answer; a success gives entries within the limits, sorted
 * by user with no two alike, each found by sy_auth_file_find, each kind matching its secret;
 * and writing the entries back out in the file format and parsing that gives the same entries.
 * Seeds: tests/fuzz/corpus/auth_file (written by `test_auth_file --write-corpus`).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/auth_file.h"
#include "fuzz_common.h"

/* The kind the header's rules give a secret (the SCRAM shape is trusted to the parser). */
static void check_kind(const struct sy_auth_entry *e)
{
    const char *s = e->secret;
    size_t n = strlen(s);
    if (n == 0)
        CHECK(e->kind == SY_SECRET_NONE);
    else if (n == 35 && strncmp(s, "md5", 3) == 0 && strspn(s + 3, "0123456789abcdef") == 32)
        CHECK(e->kind == SY_SECRET_MD5);
    else if (strncmp(s, "SCRAM-SHA-256$", 14) == 0)
        CHECK(e->kind == SY_SECRET_SCRAM);
    else
        CHECK(e->kind == SY_SECRET_PLAIN);
}

static void check_file(const struct sy_auth_file *af)
{
    for (size_t i = 0; i < af->nentries; i++) {
        const struct sy_auth_entry *e = &af->entries[i];
        size_t ul = strlen(e->user), sl = strlen(e->secret);
        CHECK(ul >= 1 && ul <= SY_AUTH_USER_MAX && sl <= SY_AUTH_SECRET_MAX);
        CHECK(strchr(e->user, '\n') == NULL && strchr(e->secret, '\n') == NULL);
        CHECK(e->line >= 1);
        if (i > 0)
            CHECK(strcmp(af->entries[i - 1].user, e->user) < 0);
        CHECK(sy_auth_file_find(af, e->user) == e);
        check_kind(e);
    }
}

/* Writes "s" with every " doubled. */
static size_t put_quoted(char *out, const char *s)
{
    size_t p = 0;
    out[p++] = '"';
    for (; *s; s++) {
        if (*s == '"')
            out[p++] = '"';
        out[p++] = *s;
    }
    out[p++] = '"';
    return p;
}

static void check_round_trip(const struct sy_auth_file *af)
{
    size_t cap = 16;
    for (size_t i = 0; i < af->nentries; i++)
        cap += 2 * (strlen(af->entries[i].user) + strlen(af->entries[i].secret)) + 8;
    char *text = malloc(cap);
    CHECK(text != NULL);
    size_t p = 0;
    for (size_t i = 0; i < af->nentries; i++) {
        p += put_quoted(text + p, af->entries[i].user);
        text[p++] = ' ';
        p += put_quoted(text + p, af->entries[i].secret);
        text[p++] = '\n';
    }
    struct sy_auth_file again;
    char err[256];
    CHECK(sy_auth_file_parse(text, p, "again.txt", &again, err, sizeof err) == 0);
    CHECK(again.nentries == af->nentries);
    for (size_t i = 0; i < af->nentries; i++) {
        CHECK(strcmp(again.entries[i].user, af->entries[i].user) == 0);
        CHECK(strcmp(again.entries[i].secret, af->entries[i].secret) == 0);
        CHECK(again.entries[i].kind == af->entries[i].kind);
    }
    sy_auth_file_free(&again);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_exact_copy(data, size);
    struct sy_auth_file af;
    char err[512], tiny[4];
    int rc = sy_auth_file_parse(text, size, "f.txt", &af, err, sizeof err);
    CHECK(rc == 0 || rc == -1);
    if (rc == 0) {
        check_file(&af);
        check_round_trip(&af);
        sy_auth_file_free(&af);
        CHECK(af.entries == NULL && af.nentries == 0);
    } else {
        CHECK(af.entries == NULL && af.nentries == 0 && af.pool == NULL);
        CHECK(memchr(err, '\0', sizeof err) != NULL && strncmp(err, "f.txt:", 6) == 0);
    }
    struct sy_auth_file af2;
    int rc2 = sy_auth_file_parse(text, size, "f.txt", &af2, tiny, sizeof tiny);
    CHECK(rc2 == rc && memchr(tiny, '\0', sizeof tiny) != NULL);
    sy_auth_file_free(&af2);
    free(text);
    return 0;
}
