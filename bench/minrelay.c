/*
 * minrelay: the smallest possible TCP relay, used by bench.sh as a floor. Two blocking threads
 * per connection, each doing read() then write() with a fixed buffer: no event loop, no parsing,
 * no protocol. Whatever latency it adds is the cost of one extra hop on this machine (two
 * loopback writes and two wake-ups per round trip), which no proxy can undercut.
 *
 *   minrelay LISTEN_PORT TARGET_PORT     (loopback only)
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

struct pipe_fds {
    int from, to;
};

static void *pump(void *arg)
{
    struct pipe_fds *p = arg;
    char buf[16384];
    for (;;) {
        ssize_t n = read(p->from, buf, sizeof(buf));
        if (n <= 0)
            break;
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(p->to, buf + off, (size_t)(n - off));
            if (w <= 0)
                goto out;
            off += w;
        }
    }
out:
    shutdown(p->to, SHUT_WR);
    shutdown(p->from, SHUT_RD);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: minrelay LISTEN_PORT TARGET_PORT\n");
        return 2;
    }
    int lport = atoi(argv[1]), tport = atoi(argv[2]), one = 1;
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)lport),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(ls, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(ls, 1024) != 0) {
        perror("minrelay: listen");
        return 1;
    }
    for (;;) {
        int c = accept(ls, NULL, NULL);
        if (c < 0)
            continue;
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in t = {.sin_family = AF_INET, .sin_port = htons((uint16_t)tport),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        if (connect(s, (struct sockaddr *)&t, sizeof(t)) != 0) {
            close(c);
            close(s);
            continue;
        }
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        struct pipe_fds *up = malloc(sizeof(*up)), *down = malloc(sizeof(*down));
        up->from = c; up->to = s;
        down->from = s; down->to = c;
        pthread_t t1, t2;
        pthread_create(&t1, NULL, pump, up);
        pthread_create(&t2, NULL, pump, down);
        pthread_detach(t1);
        pthread_detach(t2);
    }
}
