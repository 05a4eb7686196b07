/*
 * libFuzzer target for the admin request parser (proxy/admin_parse.c): what the daemon runs on
 * every line a caller sends to the admin socket, and switchyardctl on its own command line.
 *
 * Checks, beyond "no crash and no over-read" (ASan on an exact-size copy):
 * - the return is one of the three documented codes; a failure leaves a non-empty,
 *   NUL-terminated, printable message, also when cut to a tiny buffer;
 * - a success yields 0 to SY_ADMIN_ARGS_MAX words, each non-empty, inside req.buf, without
 *   white space or control bytes, and a known command whose numbers are within their ranges;
 * - parsing the words joined again by single spaces gives the same command and values;
 * - sy_admin_parse_uint and sy_parse_fraction_ppm agree with a reference parser.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "fuzz_common.h"
#include "proxy/admin_parse.h"

static void check_message(const char *err, size_t cap)
{
    const char *end = memchr(err, '\0', cap);
    CHECK(end != NULL && end != err);
    for (const char *c = err; c < end; c++)
        CHECK((unsigned char)*c >= 0x20 && (unsigned char)*c < 0x7f);
}

static void check_request(const struct sy_admin_request *req)
{
    CHECK(req->argc >= 0 && req->argc <= SY_ADMIN_ARGS_MAX);
    CHECK((req->cmd == SY_ADMIN_NONE) == (req->argc == 0));
    for (int i = 0; i < req->argc; i++) {
        const char *w = req->argv[i];
        CHECK(w >= req->buf && w < req->buf + sizeof(req->buf));
        size_t n = strnlen(w, (size_t)(req->buf + sizeof(req->buf) - w));
        CHECK(n > 0 && w + n < req->buf + sizeof(req->buf));
        for (size_t j = 0; j < n; j++)
            CHECK((unsigned char)w[j] > 0x20 && w[j] != 0x7f);
    }
    if (req->cmd == SY_ADMIN_NONE)
        return;
    CHECK(strcmp(req->argv[0], sy_admin_cmd_name(req->cmd)) == 0);
    CHECK(req->pause_timeout_ms <= SY_ADMIN_TIMEOUT_MAX_MS);
    if (req->cmd == SY_ADMIN_PAUSE)
        CHECK(req->argc == 1 || req->pause_timeout_ms >= 1);
    if (req->cmd == SY_ADMIN_CUTOVER || req->cmd == SY_ADMIN_ROLLBACK)
        CHECK(!req->sw.has_timeout ||
              (req->sw.timeout_ms >= 1 && req->sw.timeout_ms <= SY_ADMIN_TIMEOUT_MAX_MS));
    if (req->cmd == SY_ADMIN_SHADOW) {
        CHECK(req->shadow.op >= SY_ADMIN_SHADOW_STATUS && req->shadow.op <= SY_ADMIN_SHADOW_ACCEPTS);
        CHECK(req->shadow.sample_ppm <= 1000000);
        CHECK(req->shadow.mode >= 0 && req->shadow.mode <= 2);
    }
}

/* The words joined by single spaces parse to the same request. */
static void check_rejoin(const struct sy_admin_request *req)
{
    static struct sy_admin_request again;
    char line[SY_ADMIN_LINE_MAX], err[256];
    size_t len = 0;
    for (int i = 0; i < req->argc; i++) {
        size_t n = strlen(req->argv[i]);
        CHECK(len + n + 1 < sizeof(line));
        if (i > 0)
            line[len++] = ' ';
        memcpy(line + len, req->argv[i], n);
        len += n;
    }
    CHECK(sy_admin_request_parse(line, len, &again, err, sizeof(err)) == SY_ADMIN_PARSE_OK);
    CHECK(again.cmd == req->cmd && again.argc == req->argc);
    CHECK(again.pause_timeout_ms == req->pause_timeout_ms);
    CHECK(memcmp(&again.sw, &req->sw, sizeof(req->sw)) == 0);
    CHECK(memcmp(&again.shadow, &req->shadow, sizeof(req->shadow)) == 0);
}

static void fuzz_request(const uint8_t *data, size_t size)
{
    static struct sy_admin_request req;
    char err[256], tiny[4];
    char *line = fuzz_exact_copy(data, size);
    int rc = sy_admin_request_parse(line, size, &req, err, sizeof(err));
    CHECK(rc == SY_ADMIN_PARSE_OK || rc == SY_ADMIN_PARSE_USAGE || rc == SY_ADMIN_PARSE_UNKNOWN);
    if (rc == SY_ADMIN_PARSE_OK) {
        CHECK(err[0] == '\0');
        check_request(&req);
        check_rejoin(&req);
    } else {
        check_message(err, sizeof(err));
    }
    int rc2 = sy_admin_request_parse(line, size, &req, tiny, sizeof(tiny));
    CHECK(rc2 == rc && memchr(tiny, '\0', sizeof(tiny)) != NULL);
    free(line);
}

/* Reference: digits only, no overflow, within [min, max]. */
static int ref_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    unsigned __int128 v = 0;
    if (*s == '\0')
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        v = v * 10 + (unsigned)(*s - '0');
        if (v > UINT64_MAX)
            return -1;
    }
    if (v < min || v > max)
        return -1;
    *out = (uint64_t)v;
    return 0;
}

static void fuzz_numbers(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    CHECK(s != NULL);
    memcpy(s, data, size);
    s[size] = '\0';
    uint64_t got = 7, want = 7, bounds[][2] = {{0, UINT64_MAX}, {1, SY_ADMIN_TIMEOUT_MAX_MS}, {5, 5}};
    for (size_t b = 0; b < 3; b++) {
        got = want = 7;
        int rc = sy_admin_parse_uint(s, bounds[b][0], bounds[b][1], &got);
        CHECK(rc == ref_uint(s, bounds[b][0], bounds[b][1], &want));
        CHECK(got == want);
        if (rc == 0) {
            char back[32];
            snprintf(back, sizeof(back), "%llu", (unsigned long long)got);
            uint64_t again = 0;
            CHECK(sy_admin_parse_uint(back, bounds[b][0], bounds[b][1], &again) == 0 &&
                  again == got);
        }
    }
    uint32_t ppm = 12345;
    if (sy_parse_fraction_ppm(s, &ppm) == 0) {
        CHECK(ppm <= 1000000);
        /* Only digits and one point; the value is that of strtod within rounding. */
        CHECK(strspn(s, "0123456789.") == size && strchr(s, '.') == strrchr(s, '.'));
        double d = strtod(s, NULL);
        CHECK(d >= 0.0 && d <= 1.0);
        double diff = d * 1e6 - (double)ppm;
        CHECK(diff > -1.0 && diff < 1.0);
    } else {
        CHECK(ppm == 12345);
    }
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_request(data, size);
    if (size <= 64 && memchr(data, '\0', size) == NULL)
        fuzz_numbers(data, size);
    return 0;
}
