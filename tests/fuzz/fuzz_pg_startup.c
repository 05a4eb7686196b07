/*
 * libFuzzer target for pg_fe_parse_startup(), the first bytes any client sends.
 *
 * Checks: the three outcomes are kept apart; consumed never exceeds len and equals the packet's
 * length field; a decoded packet decodes the same from an exact-size copy (so nothing past it
 * was read) and not at all from its proper prefix; every view points inside the packet; and
 * decode-then-encode gives back the same bytes (pg_fe_write_startup, pg_fe_write_cancel), which
 * decode again to the same fields. Seeds: tests/fuzz/corpus/startup.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/pg/pg_proto.h"
#include "fuzz_common.h"

#define MAX_LEN 10000 /* PostgreSQL's own limit for a startup packet */

static int within(const void *p, const uint8_t *start, size_t len)
{
    const uint8_t *b = p;
    return b >= start && b < start + len;
}

static void check_message(const uint8_t *pkt, size_t len, const struct pg_startup *st)
{
    CHECK(st->nparams <= PG_STARTUP_PARAMS_MAX);
    /* No user decodes (the session refuses it, as the server does); a user is a view. */
    CHECK(st->user == NULL || within(st->user, pkt + 8, len - 8));
    CHECK((st->version >> 16) == 3);
    for (size_t i = 0; i < st->nparams; i++) {
        CHECK(within(st->params[i].name, pkt + 8, len - 8));
        CHECK(within(st->params[i].value, pkt + 8, len - 8));
        CHECK(st->params[i].name[0] != 0);
    }
    CHECK(st->database == NULL || within(st->database, pkt, len));

    /* Encoding the decoded fields gives back the packet byte for byte. */
    uint8_t *out = malloc(len);
    CHECK(out != NULL);
    CHECK(pg_fe_write_startup(out, len, st->version, st->params, st->nparams) == (int)len);
    CHECK(memcmp(out, pkt, len) == 0);
    CHECK(pg_fe_write_startup(out, len - 1, st->version, st->params, st->nparams) == PG_E_SPACE);

    struct pg_startup again;
    CHECK(pg_fe_parse_startup(out, len, MAX_LEN, &again, NULL) == (int)len);
    CHECK(again.kind == PG_STARTUP_MESSAGE && again.version == st->version);
    CHECK(again.nparams == st->nparams);
    for (size_t i = 0; i < st->nparams; i++) {
        CHECK(strcmp(again.params[i].name, st->params[i].name) == 0);
        CHECK(strcmp(again.params[i].value, st->params[i].value) == 0);
    }
    CHECK((again.user == NULL) == (st->user == NULL));
    CHECK(st->user == NULL || strcmp(again.user, st->user) == 0);
    CHECK((again.database == NULL) == (st->database == NULL));
    CHECK(st->database == NULL || strcmp(again.database, st->database) == 0);
    free(out);
}

static void check_cancel(const uint8_t *pkt, size_t len, const struct pg_startup *st)
{
    CHECK(st->cancel_key_len >= 4 && st->cancel_key_len <= 256);
    CHECK(st->cancel_key == pkt + 12 && st->cancel_key_len == len - 12);
    CHECK(st->cancel_pid == pg_get_u32(pkt + 8));

    uint8_t *out = malloc(len);
    CHECK(out != NULL);
    CHECK(pg_fe_write_cancel(out, len, st->cancel_pid, st->cancel_key, st->cancel_key_len) ==
          (int)len);
    CHECK(memcmp(out, pkt, len) == 0);
    CHECK(pg_fe_write_cancel(out, len - 1, st->cancel_pid, st->cancel_key, st->cancel_key_len) ==
          PG_E_SPACE);

    struct pg_startup again;
    CHECK(pg_fe_parse_startup(out, len, MAX_LEN, &again, NULL) == (int)len);
    CHECK(again.kind == PG_STARTUP_CANCEL && again.cancel_pid == st->cancel_pid);
    CHECK(again.cancel_key_len == st->cancel_key_len);
    CHECK(memcmp(again.cancel_key, st->cancel_key, st->cancel_key_len) == 0);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct pg_startup st;
    size_t off = SIZE_MAX;
    int rc = pg_fe_parse_startup(data, size, MAX_LEN, &st, &off);

    if (rc < 0) {
        CHECK(rc == PG_E_LENGTH || rc == PG_E_TOO_LARGE || rc == PG_E_VERSION ||
              rc == PG_E_MALFORMED || rc == PG_E_LIMIT);
        /* Only a length is judged before the whole packet is in, as the server does. */
        CHECK(rc == PG_E_LENGTH || rc == PG_E_TOO_LARGE || size >= pg_get_u32(data));
        CHECK(off <= size);
        return 0;
    }
    if (rc == PG_NEED_MORE) {
        CHECK(size < 8 || size < pg_get_u32(data));
        return 0;
    }

    size_t len = (size_t)rc;
    CHECK(len <= size);
    CHECK(len >= 8 && len <= MAX_LEN);
    CHECK(len == pg_get_u32(data));

    /* The packet alone, in an exact-size block, decodes the same; a proper prefix waits. */
    uint8_t *pkt = fuzz_exact_copy(data, len);
    CHECK(pg_fe_parse_startup(pkt, len - 1, MAX_LEN, &st, NULL) == PG_NEED_MORE);
    CHECK(pg_fe_parse_startup(pkt, len, MAX_LEN, &st, NULL) == rc);

    switch (st.kind) {
    case PG_STARTUP_MESSAGE:
        check_message(pkt, len, &st);
        break;
    case PG_STARTUP_CANCEL:
        check_cancel(pkt, len, &st);
        break;
    case PG_STARTUP_SSL:
        CHECK(pg_get_u32(pkt + 4) == PG_CODE_SSL); /* any length: the server ignores the rest */
        break;
    case PG_STARTUP_GSSENC:
        CHECK(pg_get_u32(pkt + 4) == PG_CODE_GSSENC);
        break;
    default:
        CHECK(!"unknown startup kind");
    }
    free(pkt);
    return 0;
}
