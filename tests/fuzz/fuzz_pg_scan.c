/*
 * libFuzzer target for the stream scanner, pg_scan_next().
 *
 * Input layout (tests/unit/test_pg_proto.c --write-corpus writes seeds in it):
 *   byte 0      bit 0: backend direction (else frontend); bits 1-2: max_len choice
 *   byte 1      inspect_max / 8 (255: no limit)
 *   bytes 2-5   little-endian mask over the direction's type list: bit i wants types[i]
 *   byte 6      n, the number of chunk sizes (low 4 bits)
 *   n bytes     chunk sizes minus one, used in turn
 *   the rest    the stream
 *
 * The stream is scanned twice as a relay would: once as a single chunk, once arriving in the
 * chunks above. Passed bytes are consumed; on PG_NEED_MORE the unconsumed bytes are kept and
 * offered again with the next chunk. Each call sees an exact-size copy of the unconsumed bytes,
 * so ASan catches any read past len. Checks: consumed <= len on every call and in total; a
 * start piece has a valid header and type for its direction; a wanted message comes whole and
 * within inspect_max; pieces of a passed message add up to its length; and both runs see the
 * same messages, consume the same bytes and stop on the same error at the same stream offset.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/pg/pg_proto.h"
#include "fuzz_common.h"

#define HEAD_LEN 7

static const char fe_types[] = "BCdcfDEHFPpQSX";
static const char be_types[] = "RK23CdcGHWDIEVvnNAtS1sZT";
static const uint32_t max_lens[4] = {0x7fffffffu, 65536, 1000, 64};

struct cfg {
    int backend;
    uint32_t max_len;
    uint32_t inspect_max;
    uint32_t mask;
    const uint8_t *chunks;
    size_t nchunks;
};

struct msg {
    uint8_t type;
    size_t start;
    size_t total;
};

struct run {
    struct msg *msgs;
    size_t nmsgs;
    int err;
    size_t err_at;
    size_t consumed;
};

static int wanted(const struct cfg *c, uint8_t type)
{
    const char *types = c->backend ? be_types : fe_types;
    for (size_t i = 0; types[i]; i++)
        if ((uint8_t)types[i] == type && (c->mask >> i) & 1)
            return 1;
    return 0;
}

/* One piece, checked against the stream it came from; returns the scanner's answer. */
static int scan_piece(struct pg_scan *s, const struct cfg *c, const uint8_t *stream,
                      size_t consumed, size_t avail, struct run *r)
{
    uint8_t *buf = fuzz_exact_copy(stream + consumed, avail);
    struct pg_scan_item it;
    size_t off = SIZE_MAX;
    int was_boundary = pg_scan_at_boundary(s);
    int rc = pg_scan_next(s, buf, avail, &it, &off);
    free(buf);

    if (rc < 0) {
        CHECK(rc == PG_E_LENGTH || rc == PG_E_TOO_LARGE || rc == PG_E_UNKNOWN_TYPE);
        CHECK(was_boundary && off < avail);
        r->err = rc;
        r->err_at = consumed + off;
        return rc;
    }
    if (rc == PG_NEED_MORE)
        return rc;

    CHECK((size_t)rc <= avail);
    const uint8_t *at = stream + consumed;
    if (it.start) {
        CHECK(was_boundary && avail >= PG_HEADER_LEN);
        CHECK(it.type == at[0]);
        CHECK(c->backend ? pg_be_type_valid(it.type) : pg_fe_type_valid(it.type));
        uint32_t l = pg_get_u32(at + 1);
        CHECK(l >= 4 && l <= c->max_len);
        CHECK(it.whole == ((size_t)rc == (size_t)l + 1));
        if (wanted(c, it.type))
            CHECK(it.whole && (size_t)l + 1 <= c->inspect_max);
        r->msgs[r->nmsgs].type = it.type;
        r->msgs[r->nmsgs].start = consumed;
        r->msgs[r->nmsgs].total = (size_t)rc;
        r->nmsgs++;
    } else {
        CHECK(!was_boundary && r->nmsgs > 0 && !it.whole);
        struct msg *m = &r->msgs[r->nmsgs - 1];
        CHECK(it.type == m->type && m->start + m->total == consumed);
        m->total += (size_t)rc;
    }
    const struct msg *m = &r->msgs[r->nmsgs - 1];
    size_t full = (size_t)pg_get_u32(stream + m->start + 1) + 1;
    CHECK(m->total <= full);
    CHECK(pg_scan_at_boundary(s) == (m->total == full));
    return rc;
}

static void scan_run(const struct cfg *c, const uint8_t *stream, size_t len, int chunked,
                     struct run *r)
{
    struct pg_scan s;
    pg_scan_init(&s, c->backend, c->max_len, c->inspect_max);
    const char *types = c->backend ? be_types : fe_types;
    for (size_t i = 0; types[i]; i++)
        if ((c->mask >> i) & 1)
            pg_scan_want(&s, (uint8_t)types[i], 1);

    /* Every message is at least 5 bytes, except a last partial one. */
    r->msgs = malloc((len / PG_HEADER_LEN + 2) * sizeof(*r->msgs));
    CHECK(r->msgs != NULL);
    r->nmsgs = 0;
    r->err = 0;
    r->err_at = 0;
    size_t consumed = 0, received = 0, k = 0;
    while (received < len) {
        size_t chunk = len - received;
        if (chunked && c->nchunks > 0) {
            size_t want = (size_t)c->chunks[k++ % c->nchunks] + 1;
            if (want < chunk)
                chunk = want;
        }
        received += chunk;
        while (consumed < received) {
            int rc = scan_piece(&s, c, stream, consumed, received - consumed, r);
            if (rc < 0) {
                r->consumed = consumed;
                return;
            }
            if (rc == PG_NEED_MORE)
                break;
            consumed += (size_t)rc;
            CHECK(consumed <= received && received <= len);
        }
    }
    r->consumed = consumed;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < HEAD_LEN)
        return 0;
    struct cfg c;
    c.backend = data[0] & 1;
    c.max_len = max_lens[(data[0] >> 1) & 3];
    c.inspect_max = data[1] == 255 ? UINT32_MAX : (uint32_t)data[1] * 8;
    c.mask = (uint32_t)data[2] | (uint32_t)data[3] << 8 | (uint32_t)data[4] << 16 |
             (uint32_t)data[5] << 24;
    c.nchunks = data[6] & 15;
    if (size < HEAD_LEN + c.nchunks)
        return 0;
    c.chunks = data + HEAD_LEN;
    const uint8_t *stream = data + HEAD_LEN + c.nchunks;
    size_t len = size - HEAD_LEN - c.nchunks;

    struct run whole, chunked;
    scan_run(&c, stream, len, 0, &whole);
    scan_run(&c, stream, len, 1, &chunked);

    CHECK(whole.consumed <= len && chunked.consumed <= len);
    CHECK(whole.consumed == chunked.consumed);
    CHECK(whole.err == chunked.err);
    CHECK(whole.err == 0 || whole.err_at == chunked.err_at);
    CHECK(whole.nmsgs == chunked.nmsgs);
    for (size_t i = 0; i < whole.nmsgs; i++) {
        CHECK(whole.msgs[i].type == chunked.msgs[i].type);
        CHECK(whole.msgs[i].start == chunked.msgs[i].start);
        CHECK(whole.msgs[i].total == chunked.msgs[i].total);
    }
    free(whole.msgs);
    free(chunked.msgs);
    return 0;
}
