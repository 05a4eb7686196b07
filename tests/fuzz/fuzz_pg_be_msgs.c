/*
 * libFuzzer target for the backend message decoders: pg_be_parse_ready, _parameter_status,
 * _backend_key, _auth and _error.
 *
 * Each decoder runs on the input as it is, and again on copies whose type byte is forced to
 * each decoder's own and whose length field is set to match the input's size, so the fuzzer
 * explores bodies without having to guess a type and keep a length in step. Checks: a
 * decoder never answers PG_NEED_MORE (it takes a whole message), succeeds only with
 * consumed == len, every view lies inside the message, and decode-then-encode round-trips where
 * an encoder exists (ReadyForQuery, 4-byte BackendKeyData, ErrorResponse with severity, SQLSTATE
 * and message). Seeds: tests/fuzz/corpus/be_msgs.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/pg/pg_proto.h"
#include "fuzz_common.h"

static int is_error(int rc)
{
    return rc == PG_E_LENGTH || rc == PG_E_TOO_LARGE || rc == PG_E_MALFORMED;
}

/* A NUL-terminated string that starts and ends inside [msg + PG_HEADER_LEN, msg + len). */
static int str_inside(const char *s, const uint8_t *msg, size_t len)
{
    const uint8_t *p = (const uint8_t *)s;
    if (p < msg + PG_HEADER_LEN || p >= msg + len)
        return 0;
    return memchr(p, 0, (size_t)(msg + len - p)) != NULL;
}

static void check_ready(const uint8_t *msg, size_t len)
{
    uint8_t status = 0;
    int rc = pg_be_parse_ready(msg, len, &status);
    CHECK(rc != PG_NEED_MORE);
    if (rc < 0) {
        CHECK(is_error(rc));
        return;
    }
    CHECK(rc == (int)len && len == 6 && msg[0] == 'Z');
    CHECK(status == 'I' || status == 'T' || status == 'E');
    uint8_t out[6];
    CHECK(pg_be_write_ready(out, sizeof(out), status) == 6);
    CHECK(memcmp(out, msg, 6) == 0);
}

static void check_parameter_status(const uint8_t *msg, size_t len)
{
    const char *name = NULL, *value = NULL;
    int rc = pg_be_parse_parameter_status(msg, len, &name, &value);
    CHECK(rc != PG_NEED_MORE);
    if (rc < 0) {
        CHECK(is_error(rc));
        return;
    }
    CHECK(rc == (int)len && msg[0] == 'S');
    CHECK((const uint8_t *)name == msg + PG_HEADER_LEN);
    CHECK(str_inside(name, msg, len) && str_inside(value, msg, len));
    CHECK(value == name + strlen(name) + 1);
    CHECK((const uint8_t *)value + strlen(value) + 1 == msg + len);
}

static void check_backend_key(const uint8_t *msg, size_t len)
{
    uint32_t pid = 0;
    const uint8_t *key = NULL;
    size_t key_len = 0;
    int rc = pg_be_parse_backend_key(msg, len, &pid, &key, &key_len);
    CHECK(rc != PG_NEED_MORE);
    if (rc < 0) {
        CHECK(is_error(rc));
        return;
    }
    CHECK(rc == (int)len && msg[0] == 'K');
    CHECK(key_len >= 4 && key_len <= 256);
    CHECK(key == msg + 9 && key_len == len - 9);
    CHECK(pid == pg_get_u32(msg + 5));
    if (key_len == 4) {
        uint8_t out[13];
        CHECK(pg_be_write_backend_key(out, sizeof(out), pid, pg_get_u32(key)) == 13);
        CHECK(memcmp(out, msg, 13) == 0);
    }
}

static void check_auth(const uint8_t *msg, size_t len)
{
    uint32_t code = 0;
    int rc = pg_be_parse_auth(msg, len, &code);
    CHECK(rc != PG_NEED_MORE);
    if (rc < 0) {
        CHECK(is_error(rc));
        return;
    }
    CHECK(rc == (int)len && msg[0] == 'R' && len >= 9);
    CHECK(code == pg_get_u32(msg + 5));
}

static void check_error(const uint8_t *msg, size_t len)
{
    struct pg_error_fields f;
    int rc = pg_be_parse_error(msg, len, &f);
    CHECK(rc != PG_NEED_MORE);
    if (rc < 0) {
        CHECK(is_error(rc));
        return;
    }
    CHECK(rc == (int)len && (msg[0] == 'E' || msg[0] == 'N'));
    CHECK(msg[len - 1] == 0);
    const char *fields[] = {f.severity, f.sqlstate, f.message, f.detail};
    for (size_t i = 0; i < 4; i++)
        CHECK(fields[i] == NULL || str_inside(fields[i], msg, len));
    if (!f.severity || !f.sqlstate || !f.message)
        return;

    /* Re-encode the three fields the proxy writes and read them back. */
    size_t need = PG_HEADER_LEN + 1 + 2 * (strlen(f.severity) + 2) + strlen(f.sqlstate) + 2 +
                  strlen(f.message) + 2;
    uint8_t *out = malloc(need);
    CHECK(out != NULL);
    CHECK(pg_be_write_error(out, need - 1, f.severity, f.sqlstate, f.message) == PG_E_SPACE);
    CHECK(pg_be_write_error(out, need, f.severity, f.sqlstate, f.message) == (int)need);
    struct pg_error_fields g;
    CHECK(pg_be_parse_error(out, need, &g) == (int)need);
    CHECK(strcmp(g.severity, f.severity) == 0);
    CHECK(strcmp(g.sqlstate, f.sqlstate) == 0);
    CHECK(strcmp(g.message, f.message) == 0);
    CHECK(g.detail == NULL);
    free(out);
}

static void check_all(const uint8_t *msg, size_t len)
{
    check_ready(msg, len);
    check_parameter_status(msg, len);
    check_backend_key(msg, len);
    check_auth(msg, len);
    check_error(msg, len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_all(data, size);
    if (size == 0)
        return 0;
    static const uint8_t types[] = {'Z', 'S', 'K', 'R', 'E', 'N'};
    uint8_t *copy = malloc(size);
    CHECK(copy != NULL);
    for (size_t i = 0; i < sizeof(types); i++) {
        memcpy(copy, data, size);
        copy[0] = types[i];
        if (size >= PG_HEADER_LEN)
            pg_put_u32(copy + 1, (uint32_t)(size - 1));
        check_all(copy, size);
    }
    free(copy);
    return 0;
}
