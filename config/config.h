/*
 * Switchyard configuration: the INI file parsed into one immutable struct.
 *
 * A reload builds a new struct and swaps it in; nothing edits a loaded config. Errors name the
 * file and line ("switchyard.ini:12: unknown key 'prot' in [switchyard]") so an operator can fix
 * them without guessing. See docs/config.md for every key.
 */
#ifndef SY_CONFIG_H
#define SY_CONFIG_H

#include <stddef.h>
#include <stdint.h>

enum sy_protocol {
    SY_PROTO_POSTGRES = 1, /* PostgreSQL protocol v3 */
    SY_PROTO_MYSQL = 2,    /* MySQL / MariaDB (not yet implemented; rejected at load) */
};

enum sy_side {
    SY_BLUE = 0,  /* the database live at the start */
    SY_GREEN = 1, /* the copy being tested or switched to */
};

enum sy_log_level {
    SY_LOG_ERROR = 0, /* failures only */
    SY_LOG_WARN = 1,  /* plus conditions an operator should look at */
    SY_LOG_INFO = 2,  /* plus connections, reloads, state changes (default) */
    SY_LOG_DEBUG = 3, /* plus per-session detail; never secrets or query parameters */
};

#define SY_LISTEN_MAX 16
#define SY_PATH_MAX 1024
#define SY_USER_AUTH_MAX 64

/* How clients prove who they are to Switchyard. */
enum sy_auth_type {
    SY_AUTH_SCRAM = 1,    /* scram-sha-256 (the default) */
    SY_AUTH_MD5 = 2,      /* md5; a user whose secret is a SCRAM verifier gets SCRAM, as in PostgreSQL */
    SY_AUTH_PASSWORD = 3, /* cleartext password: refused without TLS unless allowed */
    SY_AUTH_TRUST = 4,    /* no check at all (local tests) */
    SY_AUTH_CERT = 5,     /* a client certificate whose CN is the user name */
};

/* TLS on the client leg. */
enum sy_client_tls {
    SY_CLIENT_TLS_DISABLE = 0, /* answer SSLRequest 'N' */
    SY_CLIENT_TLS_ALLOW = 1,   /* TLS when the client asks */
    SY_CLIENT_TLS_REQUIRE = 2, /* refuse clients without TLS */
};

/* TLS on the server leg, as libpq's sslmode. */
enum sy_server_tls {
    SY_SERVER_TLS_DISABLE = 0,     /* plaintext */
    SY_SERVER_TLS_PREFER = 1,      /* TLS when the server offers it, unverified */
    SY_SERVER_TLS_REQUIRE = 2,     /* TLS or fail, unverified */
    SY_SERVER_TLS_VERIFY_CA = 3,   /* TLS with a certificate from server_tls_ca */
    SY_SERVER_TLS_VERIFY_FULL = 4, /* and the certificate names the host */
};

struct sy_user_auth {
    char user[64];          /* a user name from [users] */
    enum sy_auth_type type; /* its auth_type */
};

struct sy_listen_addr {
    char host[64]; /* numeric IPv4 or IPv6 address, or "localhost" */
    int port;
};

struct sy_server_config {
    char host[256]; /* host name or address of the database server */
    int port;
    enum sy_server_tls tls;       /* server_tls = prefer */
    char tls_ca[SY_PATH_MAX];     /* server_tls_ca = PATH (for verify-ca and verify-full) */
    /* The control connection (cutover and rollback: health, fence, catch-up). */
    char control_user[64];        /* control_user = postgres */
    char control_password[256];   /* control_password ("" for none) */
    char control_database[64];    /* control_database: holds the replication (postgres) */
};

/* What happens to the reverse replication at a cutover. */
enum sy_reverse_repl {
    SY_REVERSE_OFF = 0,    /* none: rollback is refused once green took writes */
    SY_REVERSE_AUTO = 1,   /* Switchyard sets up green -> blue logical replication at the switch */
    SY_REVERSE_MANUAL = 2, /* the operator set it up; Switchyard verifies it */
};

/* What a cutover does with a session holding state that cannot move. */
enum sy_unmovable {
    SY_UNMOVABLE_ABORT = 0, /* abort the cutover, naming the sessions */
    SY_UNMOVABLE_CLOSE = 1, /* close only those sessions, with a clear error */
    SY_UNMOVABLE_WAIT = 2,  /* the drain waits until they let go of it (up to its timeout) */
};

/* Shadow traffic (docs/shadow.md). */
enum sy_shadow_mode {
    SY_SHADOW_OFF = 0,   /* no mirroring */
    SY_SHADOW_READS = 1, /* mirror on read-only connections (default_transaction_read_only) */
    SY_SHADOW_ALL = 2,   /* replay everything, for a disposable green without replication */
};

/* What happens when the rollback window expires. */
enum sy_window_expiry {
    SY_EXPIRY_COMMIT = 0, /* commit by itself */
    SY_EXPIRY_KEEP = 1,   /* keep the window open until commit or rollback */
};

/*
 * One accepted divergence (docs/shadow.md, "Accepting intended changes"): the words of
 * shadow_accept in the config and of switchyardctl shadow accept, parsed by
 * sy_parse_shadow_accept.
 */
#define SY_SHADOW_ACCEPT_CFG_MAX 32   /* shadow_accept lines in a config */
#define SY_SHADOW_ACCEPT_TEXT_MAX 512 /* bytes of a fingerprint text, NUL included */
struct sy_shadow_accept_spec {
    char fingerprint[SY_SHADOW_ACCEPT_TEXT_MAX]; /* its words joined by one space; "" with a hash */
    uint64_t hash;                               /* the hash, when has_hash */
    int has_hash;                                /* given as 16 hex digits (the JSON report's) */
    char column[64];                             /* --column NAME; "" for the whole statement */
    char cls[16];                                /* --class: real (default), order_only,
                                                    inconclusive */
};

struct sy_config {
    char path[4096];              /* the file it was loaded from ("" for a string) */
    enum sy_protocol protocol;    /* protocol = postgres */
    size_t nlisten;               /* listen = ADDR:PORT[, ADDR:PORT ...], key may repeat */
    struct sy_listen_addr listen[SY_LISTEN_MAX];
    char admin_socket[108];       /* admin_socket = PATH (Unix socket) */
    unsigned admin_socket_mode;   /* admin_socket_mode = 0600 (octal) */
    enum sy_side active;          /* active = blue | green: the side live at start */
    enum sy_log_level log_level;  /* log_level = error | warn | info | debug */
    uint32_t max_message_size;    /* max_message_size = 1GB: largest protocol message */
    uint32_t max_startup_packet;  /* max_startup_packet = 10000 bytes */
    uint32_t max_client_conn;     /* max_client_conn = 10000 */
    uint32_t io_buffer_size;      /* io_buffer_size = 64KB: per connection and direction */
    uint64_t client_login_timeout_ms;   /* client_login_timeout = 15s */
    uint64_t server_connect_timeout_ms; /* server_connect_timeout = 5s */
    uint64_t shutdown_grace_ms;         /* shutdown_grace = 30s */
    uint32_t server_pool_size;          /* server_pool_size = 32: idle server connections kept */
    uint64_t server_idle_timeout_ms;    /* server_idle_timeout = 60s: how long one is kept */
    uint32_t server_scram_max_iterations; /* server_scram_max_iterations = 1000000: the most
                                             SCRAM iterations a server may ask for */
    struct sy_server_config server[2];  /* [blue] and [green], indexed by enum sy_side */
    /* Client authentication (docs/auth.md). */
    enum sy_auth_type auth_type;        /* auth_type = scram-sha-256 */
    char auth_file[SY_PATH_MAX];        /* auth_file = PATH ("user" "secret" lines) */
    char auth_query[1024];              /* auth_query = SQL with $1 for the user name */
    char auth_user[64];                 /* auth_user: the control user running auth_query */
    char auth_password[256];            /* auth_password: its password ("" for none) */
    char auth_dbname[64];               /* auth_dbname = postgres */
    int auth_cleartext_without_tls;     /* auth_allow_cleartext_without_tls = off */
    size_t nuser_auth;                  /* [users]: NAME = AUTH_TYPE overrides */
    struct sy_user_auth user_auth[SY_USER_AUTH_MAX];
    /* TLS on the client leg. */
    enum sy_client_tls client_tls;      /* client_tls = disable */
    char client_tls_cert[SY_PATH_MAX];  /* client_tls_cert = PATH (PEM) */
    char client_tls_key[SY_PATH_MAX];   /* client_tls_key = PATH (PEM) */
    char client_tls_ca[SY_PATH_MAX];    /* client_tls_ca = PATH: verify client certificates */
    /* Cutover and rollback (docs/runbook.md). */
    char state_file[SY_PATH_MAX];       /* state_file = PATH ("" = beside the admin socket) */
    uint64_t health_interval_ms;        /* health_interval = 5s */
    uint64_t drain_timeout_ms;          /* drain_timeout = 10s (cutover --timeout) */
    uint64_t catchup_timeout_ms;        /* catchup_timeout = 10s */
    uint64_t step_timeout_ms;           /* step_timeout = 10s: any other cutover step */
    uint64_t max_lag_bytes;             /* max_lag = 16MB: guardrail */
    uint64_t max_transaction_age_ms;    /* max_transaction_age = 30s: guardrail */
    enum sy_unmovable unmovable_sessions; /* unmovable_sessions = abort */
    uint64_t rollback_window_ms;        /* rollback_window = 1h (0: none) */
    enum sy_reverse_repl reverse_replication; /* reverse_replication = auto */
    enum sy_window_expiry window_expiry; /* rollback_window_expiry = commit */
    /* Shadow traffic (docs/shadow.md). */
    enum sy_shadow_mode shadow;         /* shadow = off | reads | all */
    uint32_t shadow_sample_ppm;         /* shadow_sample = 1.0 (fraction of sessions), per million */
    uint32_t shadow_queue;              /* shadow_queue = 1MB: bytes queued to green per session */
    uint64_t shadow_timeout_ms;         /* shadow_timeout = 5s: green's answer, else suspended */
    uint64_t shadow_resume_ms;          /* shadow_resume = 10s: a suspended session tries again */
    uint64_t shadow_lag_window_ms;      /* deprecated, no effect: 0 unless the config sets it */
    uint64_t shadow_lag_check_timeout_ms; /* shadow_lag_check_timeout = 5s: see docs/shadow.md */
    int shadow_redact;                  /* shadow_redact = off: values left out of the report */
    int cutover_requires_clean_shadow;  /* cutover_requires_clean_shadow = off */
    uint64_t shadow_gate_window_ms;     /* shadow_gate_window = 10m */
    uint32_t shadow_gate_max;           /* shadow_gate_max = 0 real divergences */
    int shadow_gate_inconclusive_blocks; /* shadow_gate_inconclusive = block (1) | allow (0) */
    size_t nshadow_accept;              /* shadow_accept = FINGERPRINT [--column N] [--class C] */
    struct sy_shadow_accept_spec shadow_accept[SY_SHADOW_ACCEPT_CFG_MAX]; /* key may repeat */
    int shadow_recheck;                 /* shadow_recheck = on: re-run divergent reads on blue */
    uint64_t shadow_recheck_timeout_ms; /* shadow_recheck_timeout = 2s: its statement_timeout */
};

/*
 * Parses a fraction from 0 to 1 written with digits and at most one point ("0.25", "1", ".5")
 * into parts per million. Returns 0, or -1 for anything else (a sign, an exponent, over 1).
 */
int sy_parse_fraction_ppm(const char *v, uint32_t *ppm);

/*
 * Parses the words of an accept: FINGERPRINT... [--column NAME] [--class CLASS]. The fingerprint
 * is one word of exactly 16 hex digits (a hash), or the words before the first option joined by
 * one space (at most SY_SHADOW_ACCEPT_TEXT_MAX - 1 bytes). --column takes a name of 1 to 63
 * bytes and needs --class real (the default); CLASS is real, order_only or inconclusive; each
 * option at most once. Returns 0 with *out filled, or -1 with a message in err (which quotes
 * no more than 40 bytes of a word).
 */
int sy_parse_shadow_accept(int n, char *const *words, struct sy_shadow_accept_spec *out,
                           char *err, size_t errlen);

/* The auth_type for a user: its [users] entry, else auth_type. */
enum sy_auth_type sy_config_user_auth(const struct sy_config *cfg, const char *user);
/* "scram-sha-256", "md5", ... */
const char *sy_auth_type_name(enum sy_auth_type t);
const char *sy_server_tls_name(enum sy_server_tls t);

/*
 * Fills *cfg with every default (no listen address, no servers). Used before parsing and by
 * tests.
 */
void sy_config_defaults(struct sy_config *cfg);

/*
 * Parses INI text. name is used in error messages as the file name. Returns 0 and fills *cfg,
 * or -1 and writes one message "name:line: what is wrong and how to fix it" into err.
 * Unknown sections or keys, bad values, duplicate single-valued keys, a missing [switchyard],
 * [blue] or [green] section, or no listen address are all errors.
 */
int sy_config_parse(const char *text, size_t len, const char *name, struct sy_config *cfg,
                    char *err, size_t errlen);

/* Reads and parses a file. Same returns as sy_config_parse; a file that cannot be read is -1. */
int sy_config_load(const char *path, struct sy_config *cfg, char *err, size_t errlen);

/* "blue" or "green". */
const char *sy_side_name(enum sy_side side);

/*
 * Value parsers shared with the command line and the admin socket. Each returns 0 on success,
 * -1 on a bad value. Durations: a number with ms, s, m or h ("250ms", "15s"; a bare number is
 * seconds). Sizes: a number with B, KB, MB or GB (powers of 1024; a bare number is bytes).
 */
int sy_parse_duration_ms(const char *s, uint64_t *out);
int sy_parse_size(const char *s, uint64_t *out);

#endif
