/*
 * PostgreSQL protocol v3 codec: framing and the few messages Switchyard needs to read or write.
 *
 * Pure code: bytes in, views out; views in, bytes out. No I/O, no allocation, no globals, no
 * logging. Every decoder returns one of three outcomes, never mixed:
 *   > 0            bytes consumed (a whole message or packet was decoded),
 *   PG_NEED_MORE   the input is a valid prefix; call again with more bytes,
 *   < 0 (PG_E_*)   the input can never become valid; *err_off (when given) is the byte offset of
 *                  the first offending byte.
 * Decoded views point into the caller's input buffer and are valid only while it is.
 *
 * Names carry the direction: pg_fe_* for frontend messages (client to server), pg_be_* for
 * backend messages (server to client).
 */
#ifndef SY_PG_PROTO_H
#define SY_PG_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define PG_NEED_MORE 0

/* Decoder errors. Negative, from one list; pg_strerror() names them for logs. */
enum pg_error {
    PG_E_LENGTH = -1,       /* a length field is negative or smaller than its own header */
    PG_E_TOO_LARGE = -2,    /* a length field exceeds the configured maximum */
    PG_E_UNKNOWN_TYPE = -3, /* a message type byte this direction never carries */
    PG_E_VERSION = -4,      /* a startup packet with an unsupported protocol version */
    PG_E_MALFORMED = -5,    /* the body does not match the message's layout */
    PG_E_SPACE = -6,        /* an encoder's output buffer is too small */
    PG_E_LIMIT = -7,        /* well-formed, but more items than the decoder's fixed limit */
};

const char *pg_strerror(int err);

/* Frontend message types (client to server), as they appear on the wire. */
enum pg_fe_type {
    PG_FE_BIND = 'B',          /* Bind */
    PG_FE_CLOSE = 'C',         /* Close a statement or portal */
    PG_FE_COPY_DATA = 'd',     /* CopyData */
    PG_FE_COPY_DONE = 'c',     /* CopyDone */
    PG_FE_COPY_FAIL = 'f',     /* CopyFail */
    PG_FE_DESCRIBE = 'D',      /* Describe */
    PG_FE_EXECUTE = 'E',       /* Execute */
    PG_FE_FLUSH = 'H',         /* Flush */
    PG_FE_FUNCTION_CALL = 'F', /* FunctionCall */
    PG_FE_PARSE = 'P',         /* Parse */
    PG_FE_PASSWORD = 'p',      /* PasswordMessage, SASLInitialResponse, SASLResponse, GSSResponse */
    PG_FE_QUERY = 'Q',         /* simple Query */
    PG_FE_SYNC = 'S',          /* Sync */
    PG_FE_TERMINATE = 'X',     /* Terminate */
};

/* Backend message types (server to client). */
enum pg_be_type {
    PG_BE_AUTH = 'R',                  /* Authentication* */
    PG_BE_BACKEND_KEY_DATA = 'K',      /* BackendKeyData */
    PG_BE_BIND_COMPLETE = '2',         /* BindComplete */
    PG_BE_CLOSE_COMPLETE = '3',        /* CloseComplete */
    PG_BE_COMMAND_COMPLETE = 'C',      /* CommandComplete */
    PG_BE_COPY_DATA = 'd',             /* CopyData */
    PG_BE_COPY_DONE = 'c',             /* CopyDone */
    PG_BE_COPY_IN = 'G',               /* CopyInResponse */
    PG_BE_COPY_OUT = 'H',              /* CopyOutResponse */
    PG_BE_COPY_BOTH = 'W',             /* CopyBothResponse (replication) */
    PG_BE_DATA_ROW = 'D',              /* DataRow */
    PG_BE_EMPTY_QUERY = 'I',           /* EmptyQueryResponse */
    PG_BE_ERROR = 'E',                 /* ErrorResponse */
    PG_BE_FUNCTION_RESULT = 'V',       /* FunctionCallResponse */
    PG_BE_NEGOTIATE_VERSION = 'v',     /* NegotiateProtocolVersion */
    PG_BE_NO_DATA = 'n',               /* NoData */
    PG_BE_NOTICE = 'N',                /* NoticeResponse */
    PG_BE_NOTIFICATION = 'A',          /* NotificationResponse */
    PG_BE_PARAMETER_DESCRIPTION = 't', /* ParameterDescription */
    PG_BE_PARAMETER_STATUS = 'S',      /* ParameterStatus */
    PG_BE_PARSE_COMPLETE = '1',        /* ParseComplete */
    PG_BE_PORTAL_SUSPENDED = 's',      /* PortalSuspended */
    PG_BE_READY_FOR_QUERY = 'Z',       /* ReadyForQuery */
    PG_BE_ROW_DESCRIPTION = 'T',       /* RowDescription */
};

/* Names for logs; "unknown" for a byte outside the enum. */
const char *pg_fe_type_name(uint8_t type);
const char *pg_be_type_name(uint8_t type);
/* Whether a type byte is one the direction can carry at all. */
int pg_fe_type_valid(uint8_t type);
int pg_be_type_valid(uint8_t type);

/* ---- Framing of typed messages: 1 type byte, then an int32 length that counts itself. ---- */

#define PG_HEADER_LEN 5

struct pg_header {
    uint8_t type;
    uint32_t len; /* the length field: body length + 4 */
};

/*
 * Reads one message header. Returns PG_HEADER_LEN when a header was read, PG_NEED_MORE when
 * fewer than 5 bytes are given, PG_E_LENGTH for a length below 4 or negative, PG_E_TOO_LARGE
 * for a length above max_len (max_len counts the length field's own value). The type byte is
 * not checked here: callers check it against their direction with pg_*_type_valid().
 */
int pg_header_read(const uint8_t *buf, size_t len, uint32_t max_len, struct pg_header *hdr,
                   size_t *err_off);

/* ---- The untyped startup-phase packets: int32 length, int32 code or version, body. ---- */

#define PG_PROTO_V3 196608u          /* 3.0 */
#define PG_CODE_CANCEL 80877102u     /* CancelRequest */
#define PG_CODE_SSL 80877103u        /* SSLRequest */
#define PG_CODE_GSSENC 80877104u     /* GSSENCRequest */
#define PG_STARTUP_PARAMS_MAX 64     /* more startup parameters than this is treated as malformed */

enum pg_startup_kind {
    PG_STARTUP_MESSAGE = 1, /* StartupMessage, protocol 3.x */
    PG_STARTUP_SSL = 2,     /* SSLRequest */
    PG_STARTUP_GSSENC = 3,  /* GSSENCRequest */
    PG_STARTUP_CANCEL = 4,  /* CancelRequest */
};

struct pg_param {
    const char *name;  /* NUL-terminated, points into the input buffer */
    const char *value; /* NUL-terminated, points into the input buffer */
};

struct pg_startup {
    enum pg_startup_kind kind;
    uint32_t version;      /* PG_STARTUP_MESSAGE: the requested protocol version */
    uint32_t cancel_pid;   /* PG_STARTUP_CANCEL: the process id */
    const uint8_t *cancel_key; /* PG_STARTUP_CANCEL: the secret key bytes (4 in 3.0, up to 256 in 3.2) */
    size_t cancel_key_len;
    size_t nparams;
    struct pg_param params[PG_STARTUP_PARAMS_MAX];
    const char *user;     /* the "user" parameter (the last one given), or NULL */
    const char *database; /* the "database" parameter, or NULL (the server then uses user) */
};

/*
 * Decodes one startup-phase packet from the client, judging it in PostgreSQL's order
 * (ProcessStartupPacket): the length as soon as it is in, everything else only once the whole
 * packet is. max_len bounds the packet's length field (PostgreSQL uses 10,000). Returns bytes
 * consumed, PG_NEED_MORE, or:
 *   PG_E_LENGTH     a length below 8 or negative, or a CancelRequest that is not 16 to 268
 *                   bytes (what PostgreSQL calls "invalid length of startup packet");
 *   PG_E_TOO_LARGE  a length over max_len (the same, for PostgreSQL);
 *   PG_E_VERSION    a major version other than 3 or an unknown request code (*err_off 4);
 *   PG_E_MALFORMED  the parameter list is not name/value pairs ending in one empty name at the
 *                   packet's last byte ("invalid startup packet layout");
 *   PG_E_LIMIT      more than PG_STARTUP_PARAMS_MAX parameters (*err_off at the first extra).
 * An SSLRequest or GSSENCRequest longer than 8 bytes is accepted and its extra bytes skipped,
 * as PostgreSQL does. A StartupMessage without a user (or with an empty one) decodes: user is
 * then NULL or "", and refusing it (28000) is the caller's part, after any
 * NegotiateProtocolVersion, as in the server.
 */
int pg_fe_parse_startup(const uint8_t *buf, size_t len, uint32_t max_len, struct pg_startup *out,
                        size_t *err_off);

/* ---- Backend messages the proxy reads. Each takes a whole message (header included). ---- */

/* ReadyForQuery status: 'I' idle, 'T' in a transaction block, 'E' in a failed block. */
int pg_be_parse_ready(const uint8_t *msg, size_t len, uint8_t *status);

/* ParameterStatus: two NUL-terminated strings. */
int pg_be_parse_parameter_status(const uint8_t *msg, size_t len, const char **name,
                                 const char **value);

/* BackendKeyData: pid and a secret key of 4 bytes (3.0) or up to 256 (3.2). */
int pg_be_parse_backend_key(const uint8_t *msg, size_t len, uint32_t *pid, const uint8_t **key,
                            size_t *key_len);

/* Authentication request: the int32 code (0 ok, 3 cleartext, 5 md5, 10 SASL, 11, 12, ...). */
int pg_be_parse_auth(const uint8_t *msg, size_t len, uint32_t *code);

/* ErrorResponse and NoticeResponse fields. Absent fields are NULL. */
struct pg_error_fields {
    const char *severity; /* 'V' (non-localized), else 'S' */
    const char *sqlstate; /* 'C' */
    const char *message;  /* 'M' */
    const char *detail;   /* 'D' */
};
int pg_be_parse_error(const uint8_t *msg, size_t len, struct pg_error_fields *out);

/* ---- Backend message bodies, for callers that hold a message's type byte and its body apart
 * (the shadow comparison is fed them so). Each takes exactly the body, after the 5-byte header,
 * and never answers PG_NEED_MORE: the body is whole. Views point into the body. ---- */

/*
 * ErrorResponse or NoticeResponse body: the fields of pg_be_parse_error. Returns len, or
 * PG_E_MALFORMED (a field not NUL-terminated, no terminating zero, bytes after it, or an empty
 * body), or PG_E_TOO_LARGE for a body over INT_MAX bytes.
 */
int pg_be_body_error(const uint8_t *body, size_t len, struct pg_error_fields *out);

/*
 * CommandComplete body: one NUL-terminated tag that ends the body ("INSERT 0 5", "SELECT 3",
 * "CREATE TABLE"). Returns len, or PG_E_MALFORMED (no NUL, or bytes after it), or
 * PG_E_TOO_LARGE for a body over INT_MAX bytes.
 */
int pg_be_body_command_complete(const uint8_t *body, size_t len, const char **tag);

/* A bounds-checked cursor over a RowDescription or DataRow body, filled by the _begin calls. */
struct pg_body_cursor {
    const uint8_t *body;
    size_t len;
    size_t pos;    /* the next unread byte */
    uint32_t left; /* items still to read */
};

/* One RowDescription field. */
struct pg_field {
    const char *name;   /* NUL-terminated, points into the body */
    uint32_t table_oid; /* 0 when the column is not a table's */
    uint16_t column;    /* the table column's attribute number, or 0 */
    uint32_t type_oid;
    int16_t type_len;
    int32_t type_mod;
    uint16_t format; /* 0 text, 1 binary */
};

/* One DataRow value. */
struct pg_value {
    const uint8_t *data; /* points into the body; NULL for SQL NULL */
    int32_t len;         /* -1 for SQL NULL */
};

/*
 * Starts reading a RowDescription body. Returns the field count (>= 0) or PG_E_MALFORMED when
 * the body is shorter than its count.
 */
int pg_be_row_desc_begin(struct pg_body_cursor *c, const uint8_t *body, size_t len);
/*
 * Reads the next field. Returns 1 with *f filled; 0 when every field was read and the body
 * ended exactly there; PG_E_MALFORMED for a field cut short or bytes after the last field.
 */
int pg_be_row_desc_next(struct pg_body_cursor *c, struct pg_field *f);

/*
 * Starts reading a DataRow body. Returns the value count (>= 0) or PG_E_MALFORMED when the body
 * is shorter than its count.
 */
int pg_be_data_row_begin(struct pg_body_cursor *c, const uint8_t *body, size_t len);
/*
 * Reads the next value. Returns 1 with *v filled; 0 when every value was read and the body
 * ended exactly there; PG_E_MALFORMED for a length below -1, a value running past the body, or
 * bytes after the last value.
 */
int pg_be_data_row_next(struct pg_body_cursor *c, struct pg_value *v);

/* ---- Encoders: write into a caller-owned buffer; return bytes written or PG_E_SPACE. ---- */

/* ErrorResponse with severity (ERROR or FATAL), SQLSTATE and message. */
int pg_be_write_error(uint8_t *out, size_t cap, const char *severity, const char *sqlstate,
                      const char *message);
/* The error a server sends a client that asked for protocol 1.x or 2.x: the old, unframed form,
 * 'E' "FATAL:  <message>\n" NUL (PostgreSQL 14 and later still answer so, so that such a client
 * can show why it is refused). Returns the bytes written or PG_E_SPACE. */
int pg_be_write_error_v2(uint8_t *out, size_t cap, const char *severity, const char *message);
/* BackendKeyData with a 4-byte key (protocol 3.0). */
int pg_be_write_backend_key(uint8_t *out, size_t cap, uint32_t pid, uint32_t key);
/* ReadyForQuery. */
int pg_be_write_ready(uint8_t *out, size_t cap, uint8_t status);
/* CancelRequest for a server, 3.0 layout (4-byte key) or 3.2 (longer key). */
int pg_fe_write_cancel(uint8_t *out, size_t cap, uint32_t pid, const uint8_t *key, size_t key_len);
/* StartupMessage 3.0 from name/value pairs (user must be among them). */
int pg_fe_write_startup(uint8_t *out, size_t cap, uint32_t version, const struct pg_param *params,
                        size_t nparams);
/* A simple Query. */
int pg_fe_write_query(uint8_t *out, size_t cap, const char *sql);
/* Terminate. */
int pg_fe_write_terminate(uint8_t *out, size_t cap);


/* ---- Stream scanner: splits a byte stream into messages without copying it. ----
 *
 * The relay forwards bytes as they come; the scanner tells it where messages start and hands it
 * whole those few message types it wants to read (a bitmap of type bytes). Every other message
 * is passed in pieces as its bytes arrive, so a 50 MiB DataRow never needs a 50 MiB buffer.
 */
struct pg_scan {
    uint32_t max_len;      /* largest length field accepted */
    uint32_t inspect_max;  /* largest wanted message (header included) handed over whole */
    uint32_t body_left;    /* bytes of the current passing message still to come */
    uint8_t cur_type;      /* type of the current passing message */
    uint8_t backend;       /* 1: backend direction (type bytes checked with pg_be_type_valid) */
    uint8_t want[32];      /* bitmap: types handed over whole */
};

struct pg_scan_item {
    uint8_t type;  /* the message's type byte */
    uint8_t start; /* 1 when this piece starts the message */
    uint8_t whole; /* 1 when the piece is the whole message (header included) */
};

/* Initialises a scanner for one direction with no wanted types. */
void pg_scan_init(struct pg_scan *s, int backend, uint32_t max_len, uint32_t inspect_max);
/* Adds or removes a type from the wanted set. */
void pg_scan_want(struct pg_scan *s, uint8_t type, int on);
/* Whether the scanner is between messages (a reply can be injected without corrupting the stream). */
static inline int pg_scan_at_boundary(const struct pg_scan *s) { return s->body_left == 0; }

/*
 * Scans the next piece of buf. Returns the piece's length (> 0) and fills *item, PG_NEED_MORE
 * when buf holds only part of a header or part of a wanted message (keep those bytes and call
 * again with more appended), or PG_E_LENGTH, PG_E_TOO_LARGE (over max_len, or a wanted message
 * over inspect_max) or PG_E_UNKNOWN_TYPE with *err_off at the offending byte. The type byte is
 * judged as soon as it arrives, so an unknown type fails even when the length is not yet here.
 */
int pg_scan_next(struct pg_scan *s, const uint8_t *buf, size_t len, struct pg_scan_item *item,
                 size_t *err_off);

/* Big-endian helpers shared by the codec and its tests. */
static inline uint32_t pg_get_u32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline void pg_put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

#endif
