#ifndef BATON_CRABBITMQ_SHIM_H
#define BATON_CRABBITMQ_SHIM_H
#if __has_include(<rabbitmq-c/amqp.h>) /* upstream >= 0.12 moved the headers */
#include <rabbitmq-c/amqp.h>
#include <rabbitmq-c/tcp_socket.h>
#else /* 0.11 on Debian 12: /usr/include/amqp.h */
#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>
#endif
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

/* amqp_login_with_properties is C-variadic and does not import into Swift: wrap it (PLAIN only). */
static inline amqp_rpc_reply_t baton_amqp_login_plain(amqp_connection_state_t state, const char *vhost,
                                                      int channel_max, int frame_max, int heartbeat,
                                                      const amqp_table_t *client_properties,
                                                      const char *user, const char *password) {
    return amqp_login_with_properties(state, vhost, channel_max, frame_max, heartbeat, client_properties,
                                      AMQP_SASL_METHOD_PLAIN, user, password);
}

/* A non-blocking self-pipe used to wake the connection thread out of poll(2). */
static inline int baton_nonblocking_pipe(int fds[2]) {
    if (pipe(fds) != 0) return -1;
    fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK);
    fcntl(fds[1], F_SETFL, fcntl(fds[1], F_GETFL) | O_NONBLOCK);
    fcntl(fds[0], F_SETFD, FD_CLOEXEC);
    fcntl(fds[1], F_SETFD, FD_CLOEXEC);
    return 0;
}

_Static_assert(sizeof(amqp_channel_t) == 2, "amqp_channel_t is expected to be 16 bits");
_Static_assert(sizeof(amqp_method_number_t) == 4, "amqp_method_number_t is expected to be 32 bits");
#endif
