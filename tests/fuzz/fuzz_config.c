/*
 * libFuzzer target for the config parser: sy_config_parse on raw bytes (not NUL-terminated),
 * plus the size and duration parsers on a NUL-terminated copy.
 *
 * Checks, beyond "no crash and no over-read" (ASan): a success yields a config within the
 * documented limits, a failure yields a NUL-terminated message starting with the file name,
 * and a message truncated to a tiny buffer is still NUL-terminated.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "fuzz_common.h"

static void fuzz_check_config(const struct sy_config *cfg)
{
    CHECK(cfg->nlisten >= 1 && cfg->nlisten <= SY_LISTEN_MAX);
    for (size_t i = 0; i < cfg->nlisten; i++) {
        CHECK(memchr(cfg->listen[i].host, '\0', sizeof cfg->listen[i].host) != NULL);
        CHECK(cfg->listen[i].port >= 1 && cfg->listen[i].port <= 65535);
    }
    for (int s = SY_BLUE; s <= SY_GREEN; s++) {
        CHECK(cfg->server[s].host[0] != '\0');
        CHECK(memchr(cfg->server[s].host, '\0', sizeof cfg->server[s].host) != NULL);
        CHECK(cfg->server[s].port >= 1 && cfg->server[s].port <= 65535);
    }
    CHECK(memchr(cfg->admin_socket, '\0', sizeof cfg->admin_socket) != NULL);
    CHECK(cfg->admin_socket_mode <= 0777);
    CHECK(cfg->protocol == SY_PROTO_POSTGRES);
    CHECK(cfg->active == SY_BLUE || cfg->active == SY_GREEN);
    CHECK(cfg->log_level >= SY_LOG_ERROR && cfg->log_level <= SY_LOG_DEBUG);
    CHECK(cfg->max_message_size >= 1024 && cfg->max_message_size <= 1024u * 1024 * 1024);
    CHECK(cfg->max_startup_packet >= 64 && cfg->max_startup_packet <= 1024 * 1024);
    CHECK(cfg->max_client_conn >= 1);
    CHECK(cfg->io_buffer_size >= 4096 && cfg->io_buffer_size <= 16 * 1024 * 1024);
    CHECK(cfg->client_login_timeout_ms > 0 && cfg->server_connect_timeout_ms > 0);
}

static void fuzz_parse(const uint8_t *data, size_t size)
{
    struct sy_config cfg;
    char err[512], tiny[4];
    /* An exact-size copy: any read past size lands outside the allocation. */
    char *text = fuzz_exact_copy(data, size);
    int rc = sy_config_parse(text, size, "f.ini", &cfg, err, sizeof err);
    CHECK(rc == 0 || rc == -1);
    if (rc == 0)
        fuzz_check_config(&cfg);
    else
        CHECK(memchr(err, '\0', sizeof err) != NULL && strncmp(err, "f.ini", 5) == 0);
    int rc2 = sy_config_parse(text, size, "f.ini", NULL, tiny, sizeof tiny);
    CHECK(rc2 == rc && memchr(tiny, '\0', sizeof tiny) != NULL);
    free(text);
}

static void fuzz_values(const uint8_t *data, size_t size)
{
    uint64_t v;
    char *s = malloc(size + 1);
    if (s == NULL)
        return;
    memcpy(s, data, size);
    s[size] = '\0';
    (void)sy_parse_size(s, &v);
    (void)sy_parse_duration_ms(s, &v);
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_parse(data, size);
    if (size <= 64)
        fuzz_values(data, size);
    return 0;
}
