/* PostgreSQL protocol v3 codec. See pg_proto.h for the contracts. */
#include "pg_proto.h"

#include <limits.h>
#include <string.h>

const char *pg_strerror(int err)
{
    switch (err) {
    case PG_E_LENGTH: return "invalid message length";
    case PG_E_TOO_LARGE: return "message length over the configured limit";
    case PG_E_UNKNOWN_TYPE: return "unknown message type";
    case PG_E_VERSION: return "unsupported protocol version or request code";
    case PG_E_MALFORMED: return "malformed message body";
    case PG_E_SPACE: return "output buffer too small";
    case PG_E_LIMIT: return "more items than the decoder's limit";
    default: return "unknown error";
    }
}

/* One "unknown" for both directions, so validity is a pointer comparison on the relay path. */
static const char unknown_type[] = "unknown";

const char *pg_fe_type_name(uint8_t t)
{
    switch (t) {
    case PG_FE_BIND: return "Bind";
    case PG_FE_CLOSE: return "Close";
    case PG_FE_COPY_DATA: return "CopyData";
    case PG_FE_COPY_DONE: return "CopyDone";
    case PG_FE_COPY_FAIL: return "CopyFail";
    case PG_FE_DESCRIBE: return "Describe";
    case PG_FE_EXECUTE: return "Execute";
    case PG_FE_FLUSH: return "Flush";
    case PG_FE_FUNCTION_CALL: return "FunctionCall";
    case PG_FE_PARSE: return "Parse";
    case PG_FE_PASSWORD: return "PasswordMessage";
    case PG_FE_QUERY: return "Query";
    case PG_FE_SYNC: return "Sync";
    case PG_FE_TERMINATE: return "Terminate";
    default: return unknown_type;
    }
}

const char *pg_be_type_name(uint8_t t)
{
    switch (t) {
    case PG_BE_AUTH: return "Authentication";
    case PG_BE_BACKEND_KEY_DATA: return "BackendKeyData";
    case PG_BE_BIND_COMPLETE: return "BindComplete";
    case PG_BE_CLOSE_COMPLETE: return "CloseComplete";
    case PG_BE_COMMAND_COMPLETE: return "CommandComplete";
    case PG_BE_COPY_DATA: return "CopyData";
    case PG_BE_COPY_DONE: return "CopyDone";
    case PG_BE_COPY_IN: return "CopyInResponse";
    case PG_BE_COPY_OUT: return "CopyOutResponse";
    case PG_BE_COPY_BOTH: return "CopyBothResponse";
    case PG_BE_DATA_ROW: return "DataRow";
    case PG_BE_EMPTY_QUERY: return "EmptyQueryResponse";
    case PG_BE_ERROR: return "ErrorResponse";
    case PG_BE_FUNCTION_RESULT: return "FunctionCallResponse";
    case PG_BE_NEGOTIATE_VERSION: return "NegotiateProtocolVersion";
    case PG_BE_NO_DATA: return "NoData";
    case PG_BE_NOTICE: return "NoticeResponse";
    case PG_BE_NOTIFICATION: return "NotificationResponse";
    case PG_BE_PARAMETER_DESCRIPTION: return "ParameterDescription";
    case PG_BE_PARAMETER_STATUS: return "ParameterStatus";
    case PG_BE_PARSE_COMPLETE: return "ParseComplete";
    case PG_BE_PORTAL_SUSPENDED: return "PortalSuspended";
    case PG_BE_READY_FOR_QUERY: return "ReadyForQuery";
    case PG_BE_ROW_DESCRIPTION: return "RowDescription";
    default: return unknown_type;
    }
}

int pg_fe_type_valid(uint8_t t) { return pg_fe_type_name(t) != unknown_type; }
int pg_be_type_valid(uint8_t t) { return pg_be_type_name(t) != unknown_type; }

int pg_header_read(const uint8_t *buf, size_t len, uint32_t max_len, struct pg_header *hdr,
                   size_t *err_off)
{
    if (len < PG_HEADER_LEN)
        return PG_NEED_MORE;
    uint32_t l = pg_get_u32(buf + 1);
    if (l < 4 || l > 0x7fffffffu) {
        if (err_off)
            *err_off = 1;
        return PG_E_LENGTH;
    }
    if (l > max_len) {
        if (err_off)
            *err_off = 1;
        return PG_E_TOO_LARGE;
    }
    hdr->type = buf[0];
    hdr->len = l;
    return PG_HEADER_LEN;
}

/* Reads a NUL-terminated string at *pos within [0, end); advances *pos past the NUL. */
static const char *cstr_take(const uint8_t *buf, size_t end, size_t *pos)
{
    if (*pos >= end)
        return NULL;
    const uint8_t *nul = memchr(buf + *pos, 0, end - *pos);
    if (!nul)
        return NULL;
    const char *s = (const char *)(buf + *pos);
    *pos = (size_t)(nul - buf) + 1;
    return s;
}

/* The parameter list of a StartupMessage, with PostgreSQL's layout rule: name/value pairs,
 * then one empty name as the packet's last byte. A missing user is not an error here. */
static int startup_params(const uint8_t *buf, size_t plen, struct pg_startup *out, size_t *err_off)
{
    size_t pos = 8;
    out->nparams = 0;
    out->user = out->database = NULL;
    for (;;) {
        if (pos >= plen)
            goto bad; /* the list must end with an empty name */
        if (buf[pos] == 0 && pos + 1 == plen)
            break;
        size_t at = pos;
        const char *name = cstr_take(buf, plen, &pos);
        const char *value = name ? cstr_take(buf, plen, &pos) : NULL;
        if (!name || !value || name[0] == 0) {
            pos = at;
            goto bad;
        }
        if (out->nparams == PG_STARTUP_PARAMS_MAX) {
            if (err_off)
                *err_off = at;
            return PG_E_LIMIT;
        }
        out->params[out->nparams].name = name;
        out->params[out->nparams].value = value;
        out->nparams++;
        if (strcmp(name, "user") == 0)
            out->user = value;
        else if (strcmp(name, "database") == 0)
            out->database = value;
    }
    return (int)plen;
bad:
    if (err_off)
        *err_off = pos;
    return PG_E_MALFORMED;
}

int pg_fe_parse_startup(const uint8_t *buf, size_t len, uint32_t max_len, struct pg_startup *out,
                        size_t *err_off)
{
    if (len < 4)
        return PG_NEED_MORE;
    uint32_t plen = pg_get_u32(buf);
    if (err_off)
        *err_off = 0;
    if (plen < 8 || plen > 0x7fffffffu)
        return PG_E_LENGTH;
    if (plen > max_len)
        return PG_E_TOO_LARGE;
    /* The server reads the whole packet before it looks inside: a client that stops half way
     * is "incomplete", whatever its first bytes said. */
    if (len < plen)
        return PG_NEED_MORE;
    uint32_t code = pg_get_u32(buf + 4);
    out->nparams = 0;
    out->user = out->database = NULL;
    if (code == PG_CODE_SSL || code == PG_CODE_GSSENC) {
        out->kind = code == PG_CODE_SSL ? PG_STARTUP_SSL : PG_STARTUP_GSSENC;
        return (int)plen;
    }
    if (code == PG_CODE_CANCEL) {
        if (plen < 16 || plen > 8 + 4 + 256)
            return PG_E_LENGTH;
        out->kind = PG_STARTUP_CANCEL;
        out->cancel_pid = pg_get_u32(buf + 8);
        out->cancel_key = buf + 12;
        out->cancel_key_len = plen - 12;
        return (int)plen;
    }
    if ((code >> 16) != 3) {
        if (err_off)
            *err_off = 4;
        return PG_E_VERSION;
    }
    out->kind = PG_STARTUP_MESSAGE;
    out->version = code;
    return startup_params(buf, plen, out, err_off);
}

/*
 * Checks a whole message's header against its type and returns the body length, or < 0. The
 * decoders return len as an int, so a message longer than INT_MAX (length field 0x7fffffff) is
 * refused rather than returned as a negative number.
 */
static int whole_body(const uint8_t *msg, size_t len, uint8_t type, size_t *body_len)
{
    if (len < PG_HEADER_LEN || msg[0] != type)
        return PG_E_MALFORMED;
    uint32_t l = pg_get_u32(msg + 1);
    if (l < 4 || l > 0x7fffffffu || (size_t)l + 1 != len)
        return PG_E_LENGTH;
    if (len > INT_MAX)
        return PG_E_TOO_LARGE;
    *body_len = l - 4;
    return 0;
}

int pg_be_parse_ready(const uint8_t *msg, size_t len, uint8_t *status)
{
    size_t bl;
    int rc = whole_body(msg, len, PG_BE_READY_FOR_QUERY, &bl);
    if (rc < 0)
        return rc;
    if (bl != 1 || (msg[5] != 'I' && msg[5] != 'T' && msg[5] != 'E'))
        return PG_E_MALFORMED;
    *status = msg[5];
    return (int)len;
}

int pg_be_parse_parameter_status(const uint8_t *msg, size_t len, const char **name,
                                 const char **value)
{
    size_t bl;
    int rc = whole_body(msg, len, PG_BE_PARAMETER_STATUS, &bl);
    if (rc < 0)
        return rc;
    size_t pos = PG_HEADER_LEN;
    *name = cstr_take(msg, len, &pos);
    *value = *name ? cstr_take(msg, len, &pos) : NULL;
    if (!*value || pos != len)
        return PG_E_MALFORMED;
    return (int)len;
}

int pg_be_parse_backend_key(const uint8_t *msg, size_t len, uint32_t *pid, const uint8_t **key,
                            size_t *key_len)
{
    size_t bl;
    int rc = whole_body(msg, len, PG_BE_BACKEND_KEY_DATA, &bl);
    if (rc < 0)
        return rc;
    if (bl < 8 || bl > 4 + 256)
        return PG_E_MALFORMED;
    *pid = pg_get_u32(msg + 5);
    *key = msg + 9;
    *key_len = bl - 4;
    return (int)len;
}

int pg_be_parse_auth(const uint8_t *msg, size_t len, uint32_t *code)
{
    size_t bl;
    int rc = whole_body(msg, len, PG_BE_AUTH, &bl);
    if (rc < 0)
        return rc;
    if (bl < 4)
        return PG_E_MALFORMED;
    *code = pg_get_u32(msg + 5);
    return (int)len;
}

/* Reads ErrorResponse fields from buf[pos, len): 0, or PG_E_MALFORMED. */
static int error_fields(const uint8_t *buf, size_t pos, size_t len, struct pg_error_fields *out)
{
    memset(out, 0, sizeof(*out));
    const char *sev_s = NULL;
    for (;;) {
        if (pos >= len)
            return PG_E_MALFORMED;
        uint8_t code = buf[pos++];
        if (code == 0)
            break;
        const char *v = cstr_take(buf, len, &pos);
        if (!v)
            return PG_E_MALFORMED;
        switch (code) {
        case 'S': sev_s = v; break;
        case 'V': out->severity = v; break;
        case 'C': out->sqlstate = v; break;
        case 'M': out->message = v; break;
        case 'D': out->detail = v; break;
        default: break;
        }
    }
    if (pos != len)
        return PG_E_MALFORMED;
    if (!out->severity)
        out->severity = sev_s;
    return 0;
}

int pg_be_parse_error(const uint8_t *msg, size_t len, struct pg_error_fields *out)
{
    size_t bl;
    /* NoticeResponse has the same layout as ErrorResponse. */
    uint8_t type = len >= 1 && msg[0] == PG_BE_NOTICE ? PG_BE_NOTICE : PG_BE_ERROR;
    int rc = whole_body(msg, len, type, &bl);
    if (rc < 0)
        return rc;
    return error_fields(msg, PG_HEADER_LEN, len, out) < 0 ? PG_E_MALFORMED : (int)len;
}

/* ---- Backend message bodies ---- */

int pg_be_body_error(const uint8_t *body, size_t len, struct pg_error_fields *out)
{
    if (len > INT_MAX)
        return PG_E_TOO_LARGE;
    if (error_fields(body, 0, len, out) < 0)
        return PG_E_MALFORMED;
    return (int)len;
}

int pg_be_body_command_complete(const uint8_t *body, size_t len, const char **tag)
{
    if (len > INT_MAX)
        return PG_E_TOO_LARGE;
    size_t pos = 0;
    const char *t = cstr_take(body, len, &pos);
    if (!t || pos != len)
        return PG_E_MALFORMED;
    *tag = t;
    return (int)len;
}

static uint16_t get_u16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }

/* Both bodies start with an int16 count; anything else is read by the _next calls. */
static int body_begin(struct pg_body_cursor *c, const uint8_t *body, size_t len)
{
    c->body = body;
    c->len = len;
    c->pos = 0;
    c->left = 0;
    if (len < 2)
        return PG_E_MALFORMED;
    c->left = get_u16(body);
    c->pos = 2;
    return (int)c->left;
}

/* The end of a list: 0 when the body ends right after its last item, else PG_E_MALFORMED. */
static int body_end(const struct pg_body_cursor *c)
{
    return c->pos == c->len ? 0 : PG_E_MALFORMED;
}

int pg_be_row_desc_begin(struct pg_body_cursor *c, const uint8_t *body, size_t len)
{
    return body_begin(c, body, len);
}

int pg_be_row_desc_next(struct pg_body_cursor *c, struct pg_field *f)
{
    if (c->left == 0)
        return body_end(c);
    size_t pos = c->pos;
    const char *name = cstr_take(c->body, c->len, &pos);
    if (!name || c->len - pos < 18)
        return PG_E_MALFORMED;
    const uint8_t *p = c->body + pos;
    f->name = name;
    f->table_oid = pg_get_u32(p);
    f->column = get_u16(p + 4);
    f->type_oid = pg_get_u32(p + 6);
    f->type_len = (int16_t)get_u16(p + 10);
    f->type_mod = (int32_t)pg_get_u32(p + 12);
    f->format = get_u16(p + 16);
    c->pos = pos + 18;
    c->left--;
    return 1;
}

int pg_be_data_row_begin(struct pg_body_cursor *c, const uint8_t *body, size_t len)
{
    return body_begin(c, body, len);
}

int pg_be_data_row_next(struct pg_body_cursor *c, struct pg_value *v)
{
    if (c->left == 0)
        return body_end(c);
    if (c->len - c->pos < 4)
        return PG_E_MALFORMED;
    uint32_t raw = pg_get_u32(c->body + c->pos);
    if (raw == 0xffffffffu) {
        v->data = NULL;
        v->len = -1;
        c->pos += 4;
    } else {
        if (raw > 0x7fffffffu || raw > c->len - c->pos - 4)
            return PG_E_MALFORMED;
        v->data = c->body + c->pos + 4;
        v->len = (int32_t)raw;
        c->pos += 4 + (size_t)raw;
    }
    c->left--;
    return 1;
}

/* ---- Encoders ---- */

static size_t put_cstr(uint8_t *p, const char *s)
{
    size_t n = strlen(s) + 1;
    memcpy(p, s, n);
    return n;
}

int pg_be_write_error(uint8_t *out, size_t cap, const char *severity, const char *sqlstate,
                      const char *message)
{
    size_t need = PG_HEADER_LEN + 1 + 2 * (strlen(severity) + 2) + strlen(sqlstate) + 2 +
                  strlen(message) + 2;
    if (need > cap || need > 0x7fffffff)
        return PG_E_SPACE;
    size_t p = 0;
    out[p++] = PG_BE_ERROR;
    pg_put_u32(out + p, (uint32_t)(need - 1));
    p += 4;
    out[p++] = 'S';
    p += put_cstr(out + p, severity);
    out[p++] = 'V';
    p += put_cstr(out + p, severity);
    out[p++] = 'C';
    p += put_cstr(out + p, sqlstate);
    out[p++] = 'M';
    p += put_cstr(out + p, message);
    out[p++] = 0;
    return (int)p;
}

int pg_be_write_error_v2(uint8_t *out, size_t cap, const char *severity, const char *message)
{
    size_t sl = strlen(severity), ml = strlen(message);
    size_t need = 1 + sl + 3 + ml + 2;
    if (need > cap || need > 0x7fffffff)
        return PG_E_SPACE;
    size_t p = 0;
    out[p++] = PG_BE_ERROR;
    memcpy(out + p, severity, sl);
    p += sl;
    memcpy(out + p, ":  ", 3);
    p += 3;
    memcpy(out + p, message, ml);
    p += ml;
    out[p++] = '\n';
    out[p++] = 0;
    return (int)p;
}

int pg_be_write_backend_key(uint8_t *out, size_t cap, uint32_t pid, uint32_t key)
{
    if (cap < 13)
        return PG_E_SPACE;
    out[0] = PG_BE_BACKEND_KEY_DATA;
    pg_put_u32(out + 1, 12);
    pg_put_u32(out + 5, pid);
    pg_put_u32(out + 9, key);
    return 13;
}

int pg_be_write_ready(uint8_t *out, size_t cap, uint8_t status)
{
    if (cap < 6)
        return PG_E_SPACE;
    out[0] = PG_BE_READY_FOR_QUERY;
    pg_put_u32(out + 1, 5);
    out[5] = status;
    return 6;
}

int pg_fe_write_cancel(uint8_t *out, size_t cap, uint32_t pid, const uint8_t *key, size_t key_len)
{
    size_t need = 12 + key_len;
    if (need > cap || key_len > 256)
        return PG_E_SPACE;
    pg_put_u32(out, (uint32_t)need);
    pg_put_u32(out + 4, PG_CODE_CANCEL);
    pg_put_u32(out + 8, pid);
    memcpy(out + 12, key, key_len);
    return (int)need;
}

int pg_fe_write_startup(uint8_t *out, size_t cap, uint32_t version, const struct pg_param *params,
                        size_t nparams)
{
    size_t need = 9;
    for (size_t i = 0; i < nparams; i++)
        need += strlen(params[i].name) + strlen(params[i].value) + 2;
    if (need > cap || need > 0x7fffffff)
        return PG_E_SPACE;
    size_t p = 0;
    pg_put_u32(out, (uint32_t)need);
    pg_put_u32(out + 4, version);
    p = 8;
    for (size_t i = 0; i < nparams; i++) {
        p += put_cstr(out + p, params[i].name);
        p += put_cstr(out + p, params[i].value);
    }
    out[p++] = 0;
    return (int)p;
}

int pg_fe_write_query(uint8_t *out, size_t cap, const char *sql)
{
    size_t need = PG_HEADER_LEN + strlen(sql) + 1;
    if (need > cap || need > 0x7fffffff)
        return PG_E_SPACE;
    out[0] = PG_FE_QUERY;
    pg_put_u32(out + 1, (uint32_t)(need - 1));
    put_cstr(out + PG_HEADER_LEN, sql);
    return (int)need;
}

int pg_fe_write_terminate(uint8_t *out, size_t cap)
{
    if (cap < 5)
        return PG_E_SPACE;
    out[0] = PG_FE_TERMINATE;
    pg_put_u32(out + 1, 4);
    return 5;
}

/* ---- Stream scanner ---- */

void pg_scan_init(struct pg_scan *s, int backend, uint32_t max_len, uint32_t inspect_max)
{
    memset(s, 0, sizeof(*s));
    s->backend = backend ? 1 : 0;
    s->max_len = max_len;
    s->inspect_max = inspect_max;
}

void pg_scan_want(struct pg_scan *s, uint8_t type, int on)
{
    if (on)
        s->want[type >> 3] |= (uint8_t)(1u << (type & 7));
    else
        s->want[type >> 3] &= (uint8_t)~(1u << (type & 7));
}

int pg_scan_next(struct pg_scan *s, const uint8_t *buf, size_t len, struct pg_scan_item *item,
                 size_t *err_off)
{
    if (len == 0)
        return PG_NEED_MORE;
    if (s->body_left > 0) {
        size_t n = len < s->body_left ? len : s->body_left;
        if (n > 0x40000000)
            n = 0x40000000;
        s->body_left -= (uint32_t)n;
        item->type = s->cur_type;
        item->start = 0;
        item->whole = 0;
        return (int)n;
    }
    /* The type byte is judged first: it is the most telling sign of a stream that is not ours. */
    int known = s->backend ? pg_be_type_valid(buf[0]) : pg_fe_type_valid(buf[0]);
    if (!known) {
        if (err_off)
            *err_off = 0;
        return PG_E_UNKNOWN_TYPE;
    }
    struct pg_header h;
    int rc = pg_header_read(buf, len, s->max_len, &h, err_off);
    if (rc <= 0)
        return rc;
    size_t total = (size_t)h.len + 1;
    item->type = h.type;
    item->start = 1;
    if (s->want[h.type >> 3] & (1u << (h.type & 7))) {
        /* The piece's length is returned as an int: 2 GiB cannot be handed over whole. */
        if (total > s->inspect_max || total > INT_MAX) {
            if (err_off)
                *err_off = 1;
            return PG_E_TOO_LARGE;
        }
        if (len < total)
            return PG_NEED_MORE;
        item->whole = 1;
        return (int)total;
    }
    /* Pass the header and whatever of the body is here; the rest follows in later pieces. */
    size_t n = len < total ? len : total;
    if (n > 0x40000000)
        n = 0x40000000;
    item->whole = n == total;
    s->body_left = (uint32_t)(total - n);
    s->cur_type = h.type;
    return (int)n;
}
