/*
 * Unit tests for config/config.c: the INI parser, its error messages (file:line and the fix),
 * the value parsers shared with the command line, and sy_config_load.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"

/* A [blue] and [green] pair that every "valid" test appends. */
#define SIDES "[blue]\nhost = blue.db\nport = 5432\n[green]\nhost = green.db\nport = 5433\n"
#define MINIMAL "[switchyard]\nlisten = 127.0.0.1:6432\n" SIDES

/* Parses text that must be valid into *cfg; fails the test with the message otherwise. */
static void parse_ok(const char *text, struct sy_config *cfg)
{
    char err[512] = "untouched";
    int rc = sy_config_parse(text, strlen(text), "t.ini", cfg, err, sizeof err);
    if (rc != 0)
        fail_msg("expected success, got rc=%d err='%s' for:\n%s", rc, err, text);
}

/*
 * Parses text that must be invalid; the message must start with prefix (the "t.ini:LINE: "
 * part) and contain needle.
 */
static void parse_err(const char *text, const char *prefix, const char *needle)
{
    struct sy_config cfg;
    char err[512] = "";
    int rc = sy_config_parse(text, strlen(text), "t.ini", &cfg, err, sizeof err);
    if (rc != -1 || strncmp(err, prefix, strlen(prefix)) != 0 || strstr(err, needle) == NULL)
        fail_msg("rc=%d err='%s'\nwanted rc=-1, prefix '%s', containing '%s'\ntext:\n%s", rc, err,
                 prefix, needle, text);
}

/* ---- valid files ---- */

static void test_full_valid(void **state)
{
    static const char text[] =
        "; Switchyard test config\n"
        "[switchyard]\n"
        "protocol = postgres\n"
        "listen = 127.0.0.1:6432, [::1]:6433\n"
        "listen = 0.0.0.0:7000\n"
        "admin_socket = /run/sy/admin.sock\n"
        "admin_socket_mode = 0660\n"
        "active = green\n"
        "log_level = debug\n"
        "max_message_size = 64MB\n"
        "max_startup_packet = 20000\n"
        "max_client_conn = 500\n"
        "io_buffer_size = 128KB\n"
        "client_login_timeout = 10s\n"
        "server_connect_timeout = 2500ms\n"
        "shutdown_grace = 2m\n"
        "shadow_recheck = off\n"
        "shadow_recheck_timeout = 750ms\n"
        "\n"
        "[blue]\n"
        "host = 10.0.0.1\n"
        "port = 5432\n"
        "[green]\n"
        "host = green.example.com\n"
        "port = 6543\n";
    struct sy_config cfg;
    parse_ok(text, &cfg);
    assert_string_equal(cfg.path, "");
    assert_int_equal(cfg.protocol, SY_PROTO_POSTGRES);
    assert_int_equal(cfg.nlisten, 3);
    assert_string_equal(cfg.listen[0].host, "127.0.0.1");
    assert_int_equal(cfg.listen[0].port, 6432);
    assert_string_equal(cfg.listen[1].host, "::1");
    assert_int_equal(cfg.listen[1].port, 6433);
    assert_string_equal(cfg.listen[2].host, "0.0.0.0");
    assert_int_equal(cfg.listen[2].port, 7000);
    assert_string_equal(cfg.admin_socket, "/run/sy/admin.sock");
    assert_int_equal(cfg.admin_socket_mode, 0660);
    assert_int_equal(cfg.active, SY_GREEN);
    assert_int_equal(cfg.log_level, SY_LOG_DEBUG);
    assert_int_equal(cfg.max_message_size, 64u * 1024 * 1024);
    assert_int_equal(cfg.max_startup_packet, 20000);
    assert_int_equal(cfg.max_client_conn, 500);
    assert_int_equal(cfg.io_buffer_size, 128u * 1024);
    assert_int_equal(cfg.client_login_timeout_ms, 10000);
    assert_int_equal(cfg.server_connect_timeout_ms, 2500);
    assert_int_equal(cfg.shutdown_grace_ms, 120000);
    assert_int_equal(cfg.shadow_recheck, 0);
    assert_int_equal(cfg.shadow_recheck_timeout_ms, 750);
    assert_string_equal(cfg.server[SY_BLUE].host, "10.0.0.1");
    assert_int_equal(cfg.server[SY_BLUE].port, 5432);
    assert_string_equal(cfg.server[SY_GREEN].host, "green.example.com");
    assert_int_equal(cfg.server[SY_GREEN].port, 6543);
}

static void check_defaults(const struct sy_config *cfg)
{
    assert_int_equal(cfg->protocol, SY_PROTO_POSTGRES);
    assert_string_equal(cfg->admin_socket, "/tmp/switchyard.sock");
    assert_int_equal(cfg->admin_socket_mode, 0600);
    assert_int_equal(cfg->active, SY_BLUE);
    assert_int_equal(cfg->log_level, SY_LOG_INFO);
    assert_int_equal(cfg->max_message_size, 1024u * 1024 * 1024);
    assert_int_equal(cfg->max_startup_packet, 10000);
    assert_int_equal(cfg->max_client_conn, 10000);
    assert_int_equal(cfg->io_buffer_size, 64 * 1024);
    assert_int_equal(cfg->client_login_timeout_ms, 15000);
    assert_int_equal(cfg->server_connect_timeout_ms, 5000);
    assert_int_equal(cfg->shutdown_grace_ms, 30000);
    assert_int_equal(cfg->shadow_recheck, 1);
    assert_int_equal(cfg->shadow_recheck_timeout_ms, 2000);
}

static void test_defaults(void **state)
{
    struct sy_config cfg;
    memset(&cfg, 0x5a, sizeof cfg);
    sy_config_defaults(&cfg);
    check_defaults(&cfg);
    assert_int_equal(cfg.nlisten, 0);
    assert_string_equal(cfg.path, "");
    assert_string_equal(cfg.server[SY_BLUE].host, "");
    assert_int_equal(cfg.server[SY_GREEN].port, 0);

    memset(&cfg, 0x5a, sizeof cfg); /* the parser must not depend on what was there */
    parse_ok(MINIMAL, &cfg);
    check_defaults(&cfg);
    assert_int_equal(cfg.nlisten, 1);
    assert_string_equal(cfg.server[SY_BLUE].host, "blue.db");
    assert_int_equal(cfg.server[SY_GREEN].port, 5433);
}

static void test_listen_many(void **state)
{
    static const char text[] =
        "[switchyard]\n"
        "listen = localhost:1 , 10.1.2.3:65535,[fe80::1:2]:6432\n"
        "listen=[::]:6432\n" SIDES;
    struct sy_config cfg;
    parse_ok(text, &cfg);
    assert_int_equal(cfg.nlisten, 4);
    assert_string_equal(cfg.listen[0].host, "localhost");
    assert_int_equal(cfg.listen[0].port, 1);
    assert_string_equal(cfg.listen[1].host, "10.1.2.3");
    assert_int_equal(cfg.listen[1].port, 65535);
    assert_string_equal(cfg.listen[2].host, "fe80::1:2");
    assert_int_equal(cfg.listen[2].port, 6432);
    assert_string_equal(cfg.listen[3].host, "::");
    assert_int_equal(cfg.listen[3].port, 6432);
}

static void test_listen_max(void **state)
{
    char text[2048];
    size_t off = (size_t)snprintf(text, sizeof text, "[switchyard]\n");
    for (int i = 0; i < SY_LISTEN_MAX; i++)
        off += (size_t)snprintf(text + off, sizeof text - off, "listen = 127.0.0.1:%d\n", 7000 + i);
    snprintf(text + off, sizeof text - off, "%s", SIDES);
    struct sy_config cfg;
    parse_ok(text, &cfg);
    assert_int_equal(cfg.nlisten, SY_LISTEN_MAX);
    assert_int_equal(cfg.listen[SY_LISTEN_MAX - 1].port, 7000 + SY_LISTEN_MAX - 1);

    /* One more on line 18 (1 header + 16 listen lines before it). */
    snprintf(text + off, sizeof text - off, "listen = 127.0.0.1:9999\n%s", SIDES);
    parse_err(text, "t.ini:18: ", "too many listen addresses; the limit is 16");
}

static void test_listen_errors(void **state)
{
    parse_err("[switchyard]\nlisten = 127.0.0.1\n" SIDES, "t.ini:2: ",
              "listen '127.0.0.1' has no port");
    parse_err("[switchyard]\nlisten = 127.0.0.1:0\n" SIDES, "t.ini:2: ", "bad port");
    parse_err("[switchyard]\nlisten = 127.0.0.1:65536\n" SIDES, "t.ini:2: ", "1 to 65535");
    parse_err("[switchyard]\nlisten = 127.0.0.1:64x\n" SIDES, "t.ini:2: ", "bad port");
    parse_err("[switchyard]\nlisten = ::1:6432\n" SIDES, "t.ini:2: ",
              "put an IPv6 address in brackets, like [::1]:6432");
    parse_err("[switchyard]\nlisten = 1.2.3:6432\n" SIDES, "t.ini:2: ",
              "must be a numeric IPv4 address");
    parse_err("[switchyard]\nlisten = db.example.com:6432\n" SIDES, "t.ini:2: ",
              "must be a numeric IPv4 address");
    parse_err("[switchyard]\nlisten = :6432\n" SIDES, "t.ini:2: ", "use 0.0.0.0:6432");
    parse_err("[switchyard]\nlisten = [::1:6432\n" SIDES, "t.ini:2: ", "missing ']'");
    parse_err("[switchyard]\nlisten = [::1]\n" SIDES, "t.ini:2: ", "has no port");
    parse_err("[switchyard]\nlisten = [::1]6432\n" SIDES, "t.ini:2: ", "expected ':PORT'");
    parse_err("[switchyard]\nlisten = [1.2.3.4]:6432\n" SIDES, "t.ini:2: ",
              "not a numeric IPv6 address");
    parse_err("[switchyard]\nlisten = 127.0.0.1:6432,\n" SIDES, "t.ini:2: ",
              "empty address in listen");
    parse_err("[switchyard]\nlisten = 127.0.0.1:6432\n\nlisten = 127.0.0.1:6432\n" SIDES,
              "t.ini:4: ", "'127.0.0.1:6432' is given twice");
}

static void test_quoted_values(void **state)
{
    static const char text[] =
        "[switchyard]\n"
        "listen = \"127.0.0.1:6432\"   ; quoted too\n"
        "admin_socket = \"/tmp/a;b #c.sock\"  # comment after the quote\n"
        "log_level = \"warn\"\n"
        "[blue]\n"
        "host = \"blue.db\"\n"
        "port = \"5432\"\n"
        "[green]\nhost = green.db\nport = 5433\n";
    struct sy_config cfg;
    parse_ok(text, &cfg);
    assert_string_equal(cfg.admin_socket, "/tmp/a;b #c.sock");
    assert_int_equal(cfg.log_level, SY_LOG_WARN);
    assert_string_equal(cfg.listen[0].host, "127.0.0.1");
    assert_string_equal(cfg.server[SY_BLUE].host, "blue.db");
    assert_int_equal(cfg.server[SY_BLUE].port, 5432);

    parse_err("[switchyard]\nadmin_socket = \"/tmp/x.sock\n", "t.ini:2: ",
              "value of 'admin_socket' has no closing '\"'");
    parse_err("[switchyard]\n\nadmin_socket = \"/tmp/x.sock\" junk\n", "t.ini:3: ",
              "unexpected text after the closing '\"' of 'admin_socket'");
    parse_err("[switchyard]\nlisten = 127.0.0.1:6432\n[blue]\nhost = \"\"\n", "t.ini:4: ",
              "host in [blue] is empty");
}

static void test_comments_and_layout(void **state)
{
    static const char text[] =
        "\xEF\xBB\xBF# a byte order mark, then a comment\r\n"
        "  ; indented comment\r\n"
        "[switchyard]   ; header comment\r\n"
        "\t listen\t=\t127.0.0.1:6432   ; trailing comment\r\n"
        "admin_socket = /tmp/x#y;z.sock # kept: no space before # and ;\r\n"
        "io_buffer_size = 8KB#no space: part of the value, so bad\r\n";
    parse_err(text, "t.ini:6: ", "bad size '8KB#no space: part of the value, so bad'");

    static const char good[] =
        "\xEF\xBB\xBF# a byte order mark, then a comment\r\n"
        "  ; indented comment\r\n"
        "[ switchyard ]   ; header comment\r\n"
        "\t listen\t=\t127.0.0.1:6432   ; trailing comment\r\n"
        "admin_socket = /tmp/x#y;z.sock # kept: no space before # and ;\r\n"
        "max_client_conn = 7\t# tab before the comment\r\n"
        "\r\n"
        "[blue]\r\nhost = b\r\nport = 1\r\n[green]#c\r\nhost = g\r\nport = 2"; /* no final \n */
    struct sy_config cfg;
    parse_ok(good, &cfg);
    assert_int_equal(cfg.listen[0].port, 6432);
    assert_string_equal(cfg.admin_socket, "/tmp/x#y;z.sock");
    assert_int_equal(cfg.max_client_conn, 7);
    assert_string_equal(cfg.server[SY_GREEN].host, "g");
    assert_int_equal(cfg.server[SY_GREEN].port, 2);
}

/* ---- errors: structure ---- */

static void test_errors_keys(void **state)
{
    parse_err("[switchyard]\n; c\n\n\n\n\nlisen = 127.0.0.1:6432\n", "t.ini:7: ",
              "unknown key 'lisen' in [switchyard]; did you mean 'listen'?");
    parse_err("[switchyard]\nLog_level = info\n", "t.ini:2: ", "did you mean 'log_level'?");
    parse_err("[switchyard]\nshutdown_garce = 1s\n", "t.ini:2: ",
              "did you mean 'shutdown_grace'?");
    parse_err("[switchyard]\nfrobnicate = 1\n", "t.ini:2: ",
              "unknown key 'frobnicate' in [switchyard]; see docs/config.md");
    parse_err("[blue]\nhots = x\n", "t.ini:2: ", "unknown key 'hots' in [blue]; did you mean 'host'?");
    parse_err("listen = 127.0.0.1:6432\n", "t.ini:1: ",
              "key 'listen' is outside any section; put it under [switchyard]");
    parse_err("\nport = 1\n", "t.ini:2: ", "put it under [blue] or [green]");
    parse_err("foo = 1\n", "t.ini:1: ", "keys go under [switchyard], [blue] or [green]");
    parse_err("[switchyard]\nhost = x\n", "t.ini:2: ",
              "key 'host' does not belong in [switchyard]; put it under [blue] or [green]");
    parse_err("[green]\nlisten = 127.0.0.1:1\n", "t.ini:2: ",
              "key 'listen' does not belong in [green]; put it under [switchyard]");
    parse_err("[switchyard]\nactive = blue\nlog_level = info\nactive = green\n", "t.ini:4: ",
              "duplicate key 'active' in [switchyard] (first set on line 2)");
    parse_err("[switchyard]\nlisten = 127.0.0.1:1\n[blue]\nport = 1\nport = 2\n", "t.ini:5: ",
              "duplicate key 'port' in [blue] (first set on line 4)");
    parse_err("[switchyard]\nlisten 127.0.0.1:6432\n", "t.ini:2: ",
              "expected 'key = value', a [section] header or a comment");
    parse_err("[switchyard]\n = 5\n", "t.ini:2: ", "missing key before '='");
    parse_err("[switchyard]\nlog_level =   ; nothing\n", "t.ini:2: ",
              "missing value for 'log_level'");
}

static void test_errors_sections(void **state)
{
    parse_err("[switchyard]\nlisten = 127.0.0.1:1\n[gren]\n", "t.ini:3: ",
              "unknown section [gren]; did you mean [green]?");
    parse_err("[proxy]\n", "t.ini:1: ",
              "unknown section [proxy]; the sections are [switchyard], [blue] and [green]");
    parse_err("[switchyard\n", "t.ini:1: ", "section header has no closing ']'");
    parse_err("[blue] x\n", "t.ini:1: ", "unexpected text after the section header");
    parse_err(MINIMAL "[blue]\n", "t.ini:9: ", "section [blue] appears twice (first on line 3)");
    parse_err("[switchyard]\nlisten = 127.0.0.1:1\n[blue]\nhost = b\nport = 1\n", "t.ini: ",
              "missing section [green]; add it with host and port");
    parse_err(SIDES, "t.ini: ", "missing section [switchyard]; add it with at least one listen");
    parse_err("", "t.ini: ", "missing section [switchyard]");
    parse_err("[switchyard]\nactive = blue\n" SIDES, "t.ini:1: ",
              "[switchyard] has no listen address; add one");
    parse_err("[switchyard]\nlisten = 127.0.0.1:1\n[blue]\nport = 1\n[green]\nhost = g\nport = 2\n",
              "t.ini:3: ", "[blue] has no host; add host = ADDRESS");
    parse_err("[switchyard]\nlisten = 127.0.0.1:1\n[blue]\nhost = b\nport = 1\n[green]\nhost = g\n",
              "t.ini:6: ", "[green] has no port; add port = 5432");
}

static void test_errors_nul(void **state)
{
    static const char text[] = "[switchyard]\nlisten = 127.0.0.1:1\nactive = bl\0ue\n" SIDES;
    struct sy_config cfg;
    char err[256] = "";
    int rc = sy_config_parse(text, sizeof text - 1, "t.ini", &cfg, err, sizeof err);
    assert_int_equal(rc, -1);
    assert_string_equal(err, "t.ini:3: the line contains a NUL byte; save the file as plain text");
}

/* ---- errors: values ---- */

static void test_errors_values(void **state)
{
#define SW(line) "[switchyard]\nlisten = 127.0.0.1:6432\n" line "\n" SIDES
    parse_err(SW("protocol = mysql"), "t.ini:3: ", "protocol 'mysql' is not supported yet");
    parse_err(SW("protocol = oracle"), "t.ini:3: ", "unknown protocol 'oracle'; use protocol = postgres");
    parse_err(SW("active = purple"), "t.ini:3: ", "active must be blue or green, not 'purple'");
    parse_err(SW("log_level = loud"), "t.ini:3: ", "log_level must be error, warn, info or debug");
    parse_err(SW("admin_socket_mode = 0800"), "t.ini:3: ", "admin_socket_mode '0800' is not octal");
    parse_err(SW("admin_socket_mode = 01000"), "t.ini:3: ", "admin_socket_mode 01000 is over 0777");
    parse_err(SW("admin_socket_mode = -600"), "t.ini:3: ", "is not octal");
    parse_err(SW("max_message_size = 512"), "t.ini:3: ",
              "max_message_size = 512 is too small; use at least 1KB");
    parse_err(SW("max_message_size = 2GB"), "t.ini:3: ",
              "max_message_size = 2GB is too large; use at most 1GB");
    parse_err(SW("max_message_size = lots"), "t.ini:3: ", "bad size 'lots' for max_message_size");
    parse_err(SW("max_startup_packet = 63"), "t.ini:3: ", "use at least 64 bytes");
    parse_err(SW("max_startup_packet = 2MB"), "t.ini:3: ", "use at most 1MB");
    parse_err(SW("io_buffer_size = 1KB"), "t.ini:3: ", "use at least 4KB");
    parse_err(SW("io_buffer_size = 32MB"), "t.ini:3: ", "use at most 16MB");
    parse_err(SW("max_client_conn = 0"), "t.ini:3: ", "max_client_conn 0 is out of range");
    parse_err(SW("max_client_conn = -5"), "t.ini:3: ", "'-5' is not a whole number");
    parse_err(SW("max_client_conn = 99999999999999999999999"), "t.ini:3: ", "is out of range");
    parse_err(SW("max_client_conn = 1000001"), "t.ini:3: ", "1000001 is out of range; use 1 to 1000000");
    parse_err(SW("client_login_timeout = 0"), "t.ini:3: ", "client_login_timeout must be more than 0");
    parse_err(SW("server_connect_timeout = 0ms"), "t.ini:3: ", "server_connect_timeout must be more");
    parse_err(SW("client_login_timeout = 1.5s"), "t.ini:3: ",
              "bad duration '1.5s' for client_login_timeout");
    parse_err(SW("shutdown_grace = forever"), "t.ini:3: ", "bad duration 'forever'");
    parse_err(SW("shadow_recheck = maybe"), "t.ini:3: ",
              "shadow_recheck must be on or off, not 'maybe'");
    parse_err(SW("shadow_recheck_timeout = 0"), "t.ini:3: ",
              "shadow_recheck_timeout must be more than 0");
    parse_err(SW("shadow_recheck_timeout = 61s"), "t.ini:3: ",
              "shadow_recheck_timeout = 61s is too long; use at most 60s");
    parse_err("[switchyard]\nlisten = 127.0.0.1:1\n[blue]\nhost = b\nport = 0\n", "t.ini:5: ",
              "bad port '0' in [blue]; use a number from 1 to 65535");
    parse_err("[switchyard]\nlisten = 127.0.0.1:1\n[green]\nport = 70000\n", "t.ini:4: ",
              "bad port '70000' in [green]");
    parse_err("[switchyard]\nlisten = 127.0.0.1:1\n[blue]\nhost = \"a b\"\n", "t.ini:4: ",
              "host in [blue] contains a space");
#undef SW
}

static void test_errors_lengths(void **state)
{
    char text[1200], path[120];
    memset(path, 'p', sizeof path);
    path[0] = '/';
    path[108] = '\0'; /* 108 characters: one too many */
    snprintf(text, sizeof text, "[switchyard]\nadmin_socket = %s\n", path);
    parse_err(text, "t.ini:2: ", "admin_socket is 108 characters; a Unix socket path may have at most 107");
    path[107] = '\0'; /* 107 is fine */
    snprintf(text, sizeof text, "[switchyard]\nlisten = 127.0.0.1:1\nadmin_socket = %s\n%s", path,
             SIDES);
    struct sy_config cfg;
    parse_ok(text, &cfg);
    assert_int_equal(strlen(cfg.admin_socket), 107);

    char host[300];
    memset(host, 'h', sizeof host);
    host[256] = '\0';
    snprintf(text, sizeof text, "[blue]\nhost = %s\n", host);
    parse_err(text, "t.ini:2: ", "host in [blue] is 256 characters; the limit is 255");

    static char big[8192];
    memset(big, 'x', sizeof big);
    memcpy(big, "[switchyard]\nadmin_socket = ", 28);
    big[sizeof big - 1] = '\0';
    parse_err(big, "t.ini:2: ", "the value of 'admin_socket' is 8163 bytes; the limit is 4095");
}

/* ---- robustness ---- */

/* The parser must stop at len: the text past it is never looked at. */
static void test_length_respected(void **state)
{
    static const char text[] = MINIMAL "max_client_conn = 1\n";
    /* Cut after "port = 5433" inside [green]: "\nmax_client_conn..." must not be read. */
    size_t len = strlen(MINIMAL) - 1;
    char *exact = malloc(len); /* no NUL terminator, so ASan catches an over-read */
    assert_non_null(exact);
    memcpy(exact, text, len);
    struct sy_config cfg;
    char err[256] = "";
    assert_int_equal(sy_config_parse(exact, len, "t.ini", &cfg, err, sizeof err), 0);
    assert_int_equal(cfg.server[SY_GREEN].port, 5433);
    assert_int_equal(cfg.max_client_conn, 10000);
    assert_int_equal(sy_config_parse(exact, len - 1, "t.ini", &cfg, err, sizeof err), 0);
    assert_int_equal(cfg.server[SY_GREEN].port, 543);
    free(exact);
}

static void test_failure_keeps_cfg(void **state)
{
    struct sy_config cfg, before;
    parse_ok(MINIMAL, &cfg);
    before = cfg;
    char err[256];
    static const char bad[] = "[switchyard]\nlisten = 10.0.0.1:1\nactive = green\nbogus = 1\n";
    assert_int_equal(sy_config_parse(bad, strlen(bad), "t.ini", &cfg, err, sizeof err), -1);
    assert_memory_equal(&cfg, &before, sizeof cfg);
}

static void test_small_err_buffer(void **state)
{
    static const char bad[] = "[nope]\n";
    struct sy_config cfg;
    char err[8];
    memset(err, 'Z', sizeof err);
    assert_int_equal(sy_config_parse(bad, strlen(bad), "t.ini", &cfg, err, sizeof err), -1);
    assert_string_equal(err, "t.ini:1");
    assert_int_equal(sy_config_parse(bad, strlen(bad), "t.ini", &cfg, NULL, 0), -1);
    assert_int_equal(sy_config_parse(MINIMAL, strlen(MINIMAL), "t.ini", &cfg, NULL, 0), 0);
}

static void test_value_words_ignore_case(void **state)
{
    struct sy_config cfg;
    parse_ok("[switchyard]\nlisten = 127.0.0.1:1\nactive = GREEN\nlog_level = Error\n"
             "protocol = PostgreS\n" SIDES, &cfg);
    assert_int_equal(cfg.active, SY_GREEN);
    assert_int_equal(cfg.log_level, SY_LOG_ERROR);
    assert_int_equal(cfg.protocol, SY_PROTO_POSTGRES);
}

/* ---- errors never echo a secret ---- */

/*
 * Parses text that must be invalid: the message must start with prefix, contain needle, and
 * not contain secret anywhere.
 */
static void parse_err_hidden(const char *text, const char *prefix, const char *needle,
                             const char *secret)
{
    parse_err(text, prefix, needle);
    struct sy_config cfg;
    char err[512] = "";
    assert_int_equal(sy_config_parse(text, strlen(text), "t.ini", &cfg, err, sizeof err), -1);
    if (strstr(err, secret) != NULL)
        fail_msg("the message quotes '%s': '%s'\ntext:\n%s", secret, err, text);
}

static void test_errors_hide_secrets(void **state)
{
#define SWX(line) "[switchyard]\nlisten = 127.0.0.1:6432\n" line "\n" SIDES
    /* A colon instead of '=': the key is named with the fix, the rest is not shown. */
    parse_err_hidden(SWX("auth_password: Hunter2"), "t.ini:3: ",
                     "write auth_password = VALUE", "Hunter2");
    parse_err_hidden(SWX("auth_password Hunter2"), "t.ini:3: ",
                     "starts with the key 'auth_password' but has no '='", "Hunter2");
    parse_err_hidden("[blue]\ncontrol_password:Hunter2\n", "t.ini:2: ",
                     "write control_password = VALUE", "Hunter2");
    /* A line that is only a secret, or a key nobody knows followed by one. */
    parse_err_hidden(SWX("Hunter2"), "t.ini:3: ", "the line is not shown", "Hunter2");
    parse_err_hidden(SWX("  \"Hunter2\"  "), "t.ini:3: ", "the line is not shown", "Hunter2");
    parse_err_hidden(SWX("mypassword: Hunter2"), "t.ini:3: ", "the line is not shown", "Hunter2");
    /* Text before '=' that is no key name is not quoted either. */
    parse_err_hidden(SWX("auth_password Hunter2 = x"), "t.ini:3: ", "is not a key name",
                     "Hunter2");
    parse_err_hidden(SWX("Hunter2! = x"), "t.ini:3: ", "is not a key name", "Hunter2");
    /* [users] maps a user to an auth_type: a password written there is not echoed. */
    parse_err_hidden(SWX("[users]\nalice = Hunter2"), "t.ini:4: ", "passwords go in auth_file",
                     "Hunter2");
    /* A section header that is no name. */
    parse_err_hidden(SWX("[Hunter2 x]"), "t.ini:3: ", "holds no section name", "Hunter2");
    /* Secret values with an error of their own: unterminated quote, too long. */
    parse_err_hidden(SWX("auth_password = \"Hunter2"), "t.ini:3: ",
                     "the value of 'auth_password' has no closing", "Hunter2");
    parse_err_hidden(SWX("auth_password = \"Hunter2\" junk"), "t.ini:3: ",
                     "unexpected text after the closing", "Hunter2");
    char big[600];
    snprintf(big, sizeof big, SWX("[blue]\ncontrol_password = Hunter2%0300d"), 0);
    parse_err_hidden(big, "t.ini:4: ", "control_password is 307 characters", "Hunter2");
    /* Names are still quoted where they help: unknown keys and sections. */
    parse_err(SWX("auth_pasword = Hunter2"), "t.ini:3: ", "did you mean 'auth_password'?");
    parse_err_hidden(SWX("auth_pasword = Hunter2"), "t.ini:3: ", "auth_pasword", "Hunter2");
    parse_err(SWX("[gren]"), "t.ini:3: ", "unknown section [gren]");
    /* A value of an ordinary key is still quoted: it tells the operator what was read. */
    parse_err(SWX("log_level = loud"), "t.ini:3: ", "not 'loud'");
#undef SWX
}

static void fraction_ok(const char *s, uint32_t want)
{
    uint32_t got = 12345;
    if (sy_parse_fraction_ppm(s, &got) != 0 || got != want)
        fail_msg("fraction '%s': got %u, want %u", s, got, want);
}

static void fraction_bad(const char *s)
{
    uint32_t got = 12345;
    if (sy_parse_fraction_ppm(s, &got) != -1 || got != 12345)
        fail_msg("fraction '%s' should be rejected, got %u", s, got);
}

static void test_parse_fraction(void **state)
{
    fraction_ok("0", 0);
    fraction_ok("1", 1000000);
    fraction_ok("1.000", 1000000);
    fraction_ok("0.25", 250000);
    fraction_ok(".5", 500000);
    fraction_ok("0.", 0);
    fraction_ok("0.0000004", 0);
    fraction_ok("0.0000005", 1);
    fraction_ok("0.9999995", 1000000);
    fraction_ok("0.12345678901234567890", 123457);
    fraction_ok("000.5", 500000);
    fraction_bad("");
    fraction_bad(".");
    fraction_bad("-0");
    fraction_bad("-0.5");
    fraction_bad("+0.5");
    fraction_bad("1e-1");
    fraction_bad("0x0.8");
    fraction_bad("nan");
    fraction_bad("inf");
    fraction_bad("1.0000001");
    fraction_bad("2");
    fraction_bad("18446744073709551617");
    fraction_bad(" 0.5");
    fraction_bad("0.5 ");
    fraction_bad("0,5");
    fraction_bad("0.5.1");
    assert_int_equal(sy_parse_fraction_ppm(NULL, NULL), -1);
}

/* ---- value parsers ---- */

static void duration_ok(const char *s, uint64_t want)
{
    uint64_t got = 12345;
    if (sy_parse_duration_ms(s, &got) != 0 || got != want)
        fail_msg("duration '%s': got %llu, want %llu", s, (unsigned long long)got,
                 (unsigned long long)want);
}

static void duration_bad(const char *s)
{
    uint64_t got = 12345;
    if (sy_parse_duration_ms(s, &got) != -1 || got != 12345)
        fail_msg("duration '%s' should be rejected, got %llu", s ? s : "(null)",
                 (unsigned long long)got);
}

static void test_parse_duration(void **state)
{
    duration_ok("0", 0);
    duration_ok("15", 15000);
    duration_ok("15s", 15000);
    duration_ok("15S", 15000);
    duration_ok("250ms", 250);
    duration_ok("250 MS", 250);
    duration_ok("7\tms", 7);
    duration_ok("2m", 120000);
    duration_ok("1h", 3600000);
    duration_ok("3H", 10800000);
    duration_ok("0007s", 7000);
    duration_ok("18446744073709551615ms", UINT64_MAX);
    duration_ok("18446744073709551s", 18446744073709551000ull);
    duration_bad("18446744073709551616ms"); /* 2^64 */
    duration_bad("18446744073709552s");     /* fits, but not once scaled to ms */
    duration_bad("5124095576030432h");
    duration_bad("");
    duration_bad("s");
    duration_bad("-1s");
    duration_bad("+1s");
    duration_bad(" 1s");
    duration_bad("1s ");
    duration_bad("1 ");
    duration_bad("1.5s");
    duration_bad("15x");
    duration_bad("15sec");
    duration_bad("15 s s");
    duration_bad("1d");
    duration_bad(NULL);
    assert_int_equal(sy_parse_duration_ms("1s", NULL), -1);
}

static void size_ok(const char *s, uint64_t want)
{
    uint64_t got = 12345;
    if (sy_parse_size(s, &got) != 0 || got != want)
        fail_msg("size '%s': got %llu, want %llu", s, (unsigned long long)got,
                 (unsigned long long)want);
}

static void size_bad(const char *s)
{
    uint64_t got = 12345;
    if (sy_parse_size(s, &got) != -1 || got != 12345)
        fail_msg("size '%s' should be rejected, got %llu", s ? s : "(null)",
                 (unsigned long long)got);
}

static void test_parse_size(void **state)
{
    size_ok("0", 0);
    size_ok("10000", 10000);
    size_ok("5B", 5);
    size_ok("5b", 5);
    size_ok("64KB", 65536);
    size_ok("64kb", 65536);
    size_ok("64 Kb", 65536);
    size_ok("16MB", 16777216);
    size_ok("1GB", 1073741824);
    size_ok("1gB", 1073741824);
    size_ok("18446744073709551615", UINT64_MAX);
    size_ok("17179869183GB", 17179869183ull * 1073741824ull);
    size_bad("17179869184GB"); /* 2^34 GB = 2^64 bytes */
    size_bad("18446744073709551616");
    size_bad("99999999999999999999999KB");
    size_bad("");
    size_bad("KB");
    size_bad("-1");
    size_bad("-1KB");
    size_bad("64K");
    size_bad("64KiB");
    size_bad("1.5MB");
    size_bad("64KB ");
    size_bad(" 64KB");
    size_bad("64 ");
    size_bad("1TB");
    size_bad("0x10");
    size_bad(NULL);
    assert_int_equal(sy_parse_size("1KB", NULL), -1);
}

/* ---- files ---- */

/* Writes len bytes of text to a new temporary file; returns its path in path (64 bytes). */
static void write_temp(char *path, const char *text, size_t len)
{
    snprintf(path, 64, "/tmp/sy_test_config_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
}

static void test_load(void **state)
{
    char path[64], err[512] = "";
    struct sy_config cfg;
    write_temp(path, MINIMAL, strlen(MINIMAL));
    assert_int_equal(sy_config_load(path, &cfg, err, sizeof err), 0);
    assert_string_equal(cfg.path, path);
    assert_int_equal(cfg.listen[0].port, 6432);
    assert_string_equal(cfg.server[SY_BLUE].host, "blue.db");
    unlink(path);

    static const char bad[] = "[switchyard]\nlisen = 1\n";
    write_temp(path, bad, strlen(bad));
    char want[128];
    snprintf(want, sizeof want, "%s:2: unknown key 'lisen'", path);
    assert_int_equal(sy_config_load(path, &cfg, err, sizeof err), -1);
    assert_true(strncmp(err, want, strlen(want)) == 0);
    unlink(path);
}

static void test_load_errors(void **state)
{
    char err[512] = "";
    struct sy_config cfg;
    assert_int_equal(sy_config_load("/nonexistent/x.ini", &cfg, err, sizeof err), -1);
    assert_string_equal(err, "cannot read /nonexistent/x.ini: No such file or directory");

    assert_int_equal(sy_config_load("/tmp", &cfg, err, sizeof err), -1);
    assert_string_equal(err, "cannot read /tmp: Is a directory");

    size_t len = 1024 * 1024 + 1;
    char *big = malloc(len), path[64];
    assert_non_null(big);
    memset(big, '\n', len);
    write_temp(path, big, len);
    free(big);
    assert_int_equal(sy_config_load(path, &cfg, err, sizeof err), -1);
    assert_non_null(strstr(err, "the file is over the 1 MiB limit"));
    unlink(path);
}


/* ---- authentication and TLS keys ---- */

static void test_auth_and_tls_keys(void **state)
{
    struct sy_config cfg;
    parse_ok(MINIMAL, &cfg);
    assert_int_equal(cfg.auth_type, SY_AUTH_SCRAM);
    assert_int_equal(cfg.client_tls, SY_CLIENT_TLS_DISABLE);
    assert_int_equal(cfg.server[SY_BLUE].tls, SY_SERVER_TLS_PREFER);
    assert_int_equal(cfg.server[SY_GREEN].tls, SY_SERVER_TLS_PREFER);
    assert_string_equal(cfg.auth_dbname, "postgres");
    assert_non_null(strstr(cfg.auth_query, "pg_catalog.pg_authid"));
    parse_ok("[switchyard]\nlisten = 127.0.0.1:6432\nauth_type = md5\nauth_file = /etc/u.txt\n"
             "auth_user = sy\nauth_password = \"p;w\"\nauth_dbname = db\n"
             "auth_allow_cleartext_without_tls = on\nclient_tls = require\n"
             "client_tls_cert = /c.crt\nclient_tls_key = /c.key\nclient_tls_ca = /ca.crt\n"
             "[blue]\nhost = b\nport = 1\nserver_tls = verify-full\nserver_tls_ca = /b.crt\n"
             "[green]\nhost = g\nport = 2\nserver_tls = disable\n"
             "[users]\nalice = trust\nbob = CERT\n",
             &cfg);
    assert_int_equal(cfg.auth_type, SY_AUTH_MD5);
    assert_string_equal(cfg.auth_file, "/etc/u.txt");
    assert_string_equal(cfg.auth_user, "sy");
    assert_string_equal(cfg.auth_password, "p;w");
    assert_string_equal(cfg.auth_dbname, "db");
    assert_int_equal(cfg.auth_cleartext_without_tls, 1);
    assert_int_equal(cfg.client_tls, SY_CLIENT_TLS_REQUIRE);
    assert_string_equal(cfg.client_tls_ca, "/ca.crt");
    assert_int_equal(cfg.server[SY_BLUE].tls, SY_SERVER_TLS_VERIFY_FULL);
    assert_string_equal(cfg.server[SY_BLUE].tls_ca, "/b.crt");
    assert_int_equal(cfg.server[SY_GREEN].tls, SY_SERVER_TLS_DISABLE);
    assert_int_equal(cfg.nuser_auth, 2);
    assert_int_equal(sy_config_user_auth(&cfg, "alice"), SY_AUTH_TRUST);
    assert_int_equal(sy_config_user_auth(&cfg, "bob"), SY_AUTH_CERT);
    assert_int_equal(sy_config_user_auth(&cfg, "carol"), SY_AUTH_MD5);
    assert_string_equal(sy_auth_type_name(SY_AUTH_SCRAM), "scram-sha-256");
    assert_string_equal(sy_server_tls_name(SY_SERVER_TLS_VERIFY_CA), "verify-ca");
}

static void test_auth_and_tls_errors(void **state)
{
    parse_err("[switchyard]\nlisten = 127.0.0.1:1\nauth_type = kerberos\n" SIDES, "t.ini:3: ",
              "auth_type must be scram-sha-256, md5, password, trust or cert, not 'kerberos'");
    parse_err("[switchyard]\nlisten = 127.0.0.1:1\nclient_tls = maybe\n" SIDES, "t.ini:3: ",
              "client_tls must be disable, allow or require");
    parse_err("[switchyard]\nlisten = 127.0.0.1:1\nclient_tls = allow\n" SIDES, "t.ini:1: ",
              "client_tls_cert and client_tls_key");
    parse_err("[switchyard]\nlisten = 127.0.0.1:1\nauth_type = cert\n" SIDES, "t.ini:1: ",
              "auth_type cert needs client_tls");
    parse_err("[switchyard]\nlisten = 127.0.0.1:1\nauth_query = SELECT 1\n" SIDES, "t.ini:3: ",
              "auth_query must use $1");
    parse_err("[switchyard]\nlisten = 127.0.0.1:1\nauth_allow_cleartext_without_tls = yes\n" SIDES,
              "t.ini:3: ", "must be on or off");
    parse_err("[switchyard]\nlisten = 127.0.0.1:1\n[blue]\nhost = b\nport = 1\n"
              "server_tls = verify-full\n[green]\nhost = g\nport = 2\n",
              "t.ini:6: ", "server_tls = verify-full in [blue] needs server_tls_ca");
    parse_err("[switchyard]\nlisten = 127.0.0.1:1\n[blue]\nhost = b\nport = 1\n"
              "server_tls = sometimes\n[green]\nhost = g\nport = 2\n",
              "t.ini:6: ", "server_tls in [blue] must be disable, prefer");
    parse_err(MINIMAL "[users]\nalice = md5\nalice = trust\n", "t.ini:11: ",
              "user 'alice' appears twice in [users]");
    parse_err(MINIMAL "[users]\nalice = magic\n", "t.ini:10: ", "must be scram-sha-256");
}

static void test_side_name(void **state)
{
    assert_string_equal(sy_side_name(SY_BLUE), "blue");
    assert_string_equal(sy_side_name(SY_GREEN), "green");
    assert_string_equal(sy_side_name((enum sy_side)7), "unknown");
}

/* shadow_accept (repeatable, the words of switchyardctl shadow accept) and
 * shadow_gate_inconclusive. */
#define SW(line) "[switchyard]\nlisten = 127.0.0.1:6432\n" line "\n" SIDES
static void test_shadow_accept(void **state)
{
    (void)state;
    struct sy_config *cfg = malloc(sizeof(*cfg));
    assert_non_null(cfg);
    parse_ok("[switchyard]\nlisten = 127.0.0.1:6432\n"
             "shadow_accept = select id,  v from widened where v = ? --column id\n"
             "shadow_accept = e3983c63abf63391 --class order_only\n"
             "shadow_accept = select ? --class inconclusive\n"
             "shadow_gate_inconclusive = allow\n" SIDES, cfg);
    assert_int_equal(cfg->nshadow_accept, 3);
    assert_string_equal(cfg->shadow_accept[0].fingerprint, "select id, v from widened where v = ?");
    assert_string_equal(cfg->shadow_accept[0].column, "id");
    assert_string_equal(cfg->shadow_accept[0].cls, "real");
    assert_int_equal(cfg->shadow_accept[0].has_hash, 0);
    assert_int_equal(cfg->shadow_accept[1].has_hash, 1);
    assert_true(cfg->shadow_accept[1].hash == 0xe3983c63abf63391ull);
    assert_string_equal(cfg->shadow_accept[1].fingerprint, "");
    assert_string_equal(cfg->shadow_accept[1].cls, "order_only");
    assert_string_equal(cfg->shadow_accept[2].cls, "inconclusive");
    assert_int_equal(cfg->shadow_gate_inconclusive_blocks, 0);
    parse_ok(MINIMAL, cfg);
    assert_int_equal(cfg->nshadow_accept, 0);
    assert_int_equal(cfg->shadow_gate_inconclusive_blocks, 1);
    free(cfg);
    parse_err(SW("shadow_gate_inconclusive = maybe"), "t.ini:3: ",
              "shadow_gate_inconclusive must be block or allow, not 'maybe'");
    parse_err(SW("shadow_accept = --column id"), "t.ini:3: ", "shadow_accept: an accept needs a "
              "fingerprint");
    parse_err(SW("shadow_accept = select ? --class bogus"), "t.ini:3: ",
              "--class takes real, order_only or inconclusive, not 'bogus'");
    parse_err(SW("shadow_accept = select ? --column a --class order_only"), "t.ini:3: ",
              "--column applies to class real only");
    parse_err(SW("shadow_accept = select ? --column"), "t.ini:3: ", "--column needs a column name");
    parse_err(SW("shadow_accept = select ? --class real --class real"), "t.ini:3: ",
              "--class is given twice");
    parse_err(SW("shadow_accept = select ? --column id x"), "t.ini:3: ", "unexpected word 'x'");
    parse_err(SW("shadow_accept = select ? --column "
                 "a234567890123456789012345678901234567890123456789012345678901234"),
              "t.ini:3: ", "is longer than 63 bytes");
    /* The words of the admin command go through the same parser. */
    char *words[] = {"select", "?", "--column", "id"};
    struct sy_shadow_accept_spec a;
    char err[200];
    assert_int_equal(sy_parse_shadow_accept(4, words, &a, err, sizeof(err)), 0);
    assert_string_equal(a.fingerprint, "select ?");
    assert_int_equal(sy_parse_shadow_accept(0, words, &a, err, sizeof(err)), -1);
}
#undef SW

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_valid),
        cmocka_unit_test(test_shadow_accept),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_listen_many),
        cmocka_unit_test(test_listen_max),
        cmocka_unit_test(test_listen_errors),
        cmocka_unit_test(test_quoted_values),
        cmocka_unit_test(test_comments_and_layout),
        cmocka_unit_test(test_errors_keys),
        cmocka_unit_test(test_errors_sections),
        cmocka_unit_test(test_errors_nul),
        cmocka_unit_test(test_errors_values),
        cmocka_unit_test(test_errors_lengths),
        cmocka_unit_test(test_length_respected),
        cmocka_unit_test(test_failure_keeps_cfg),
        cmocka_unit_test(test_small_err_buffer),
        cmocka_unit_test(test_value_words_ignore_case),
        cmocka_unit_test(test_errors_hide_secrets),
        cmocka_unit_test(test_parse_fraction),
        cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_load),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_side_name),
        cmocka_unit_test(test_auth_and_tls_keys),
        cmocka_unit_test(test_auth_and_tls_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
