/* Network reach from a box: connect to the host's listener on 127.0.0.1,
 * ::1 and (argv[2], optional) a non-loopback host address; a listener of
 * the box's own; UDP out; and the denied socket families.
 * Usage: net PORT [HOST_IPV4] */
#include "attack.h"
#include <arpa/inet.h>
#include <linux/vm_sockets.h>
#include <netinet/in.h>
#include <sys/socket.h>

static long connect4(const char *ip, int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, ip, &a.sin_addr);
    long r = connect(s, (struct sockaddr *)&a, sizeof a);
    int e = errno;
    close(s);
    errno = e;
    return r;
}

static long connect6(const char *ip, int port) {
    int s = socket(AF_INET6, SOCK_STREAM, 0);
    if (s < 0)
        return -1;
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
    inet_pton(AF_INET6, ip, &a.sin6_addr);
    long r = connect(s, (struct sockaddr *)&a, sizeof a);
    int e = errno;
    close(s);
    errno = e;
    return r;
}

/* Listens on an ephemeral loopback port of the box and connects to it. */
static long self_connect(void) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    socklen_t len = sizeof a;
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 1) < 0 ||
        getsockname(l, (struct sockaddr *)&a, &len) < 0)
        return -1;
    return connect4("127.0.0.1", ntohs(a.sin_port));
}

int main(int argc, char **argv) {
    int port = atoi(argv[1]);
    report("connect 127.0.0.1", connect4("127.0.0.1", port));
    report("connect ::1", connect6("::1", port));
    if (argc > 2)
        report("connect host", connect4(argv[2], port));
    report("self", self_connect());
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in out = {.sin_family = AF_INET, .sin_port = htons(53)};
    inet_pton(AF_INET, "192.0.2.1", &out.sin_addr);
    report("udp 192.0.2.1", sendto(u, "x", 1, 0, (struct sockaddr *)&out, sizeof out));
    report("socket AF_NETLINK", socket(AF_NETLINK, SOCK_RAW, 0));
    report("socket AF_PACKET", socket(AF_PACKET, SOCK_RAW, 0));
    report("socket AF_VSOCK", socket(AF_VSOCK, SOCK_STREAM, 0));
    return 0;
}
