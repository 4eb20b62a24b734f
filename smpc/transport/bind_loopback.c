/* LD_PRELOAD shim: a wildcard bind() on one of the ports listed in MEDFEDCHAIN_LOOPBACK_PORTS
 * (comma-separated) binds loopback instead. TensorFlow's gRPC server always listens on
 * "0.0.0.0:port" (gRPC turns that into a dual-stack [::] socket); this keeps the raw,
 * unauthenticated TF port reachable only from the party's own machine. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

typedef int (*bind_fn)(int, const struct sockaddr *, socklen_t);

static int port_listed(unsigned short port) {
    const char *list = getenv("MEDFEDCHAIN_LOOPBACK_PORTS");
    if (list == NULL) return 0;
    while (*list) {
        char *end;
        long value = strtol(list, &end, 10);
        if (end == list) return 0;
        if (value == port) return 1;
        list = (*end == ',') ? end + 1 : end;
        if (*end != ',' && *end != '\0') return 0;
    }
    return 0;
}

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    static bind_fn real_bind = NULL;
    if (real_bind == NULL) real_bind = (bind_fn)dlsym(RTLD_NEXT, "bind");
    if (addr != NULL && addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in v4;
        memcpy(&v4, addr, sizeof v4);
        if (v4.sin_addr.s_addr == htonl(INADDR_ANY) && port_listed(ntohs(v4.sin_port))) {
            v4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            return real_bind(fd, (const struct sockaddr *)&v4, sizeof v4);
        }
    } else if (addr != NULL && addr->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 v6;
        memcpy(&v6, addr, sizeof v6);
        if (memcmp(&v6.sin6_addr, &in6addr_any, sizeof in6addr_any) == 0 &&
            port_listed(ntohs(v6.sin6_port))) {
            /* ::ffff:127.0.0.1, so the dual-stack socket still accepts 127.0.0.1 clients. */
            memset(&v6.sin6_addr, 0, sizeof v6.sin6_addr);
            v6.sin6_addr.s6_addr[10] = 0xff;
            v6.sin6_addr.s6_addr[11] = 0xff;
            v6.sin6_addr.s6_addr[12] = 127;
            v6.sin6_addr.s6_addr[15] = 1;
            return real_bind(fd, (const struct sockaddr *)&v6, sizeof v6);
        }
    }
    return real_bind(fd, addr, len);
}
