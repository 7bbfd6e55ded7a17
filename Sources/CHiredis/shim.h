#ifndef BATON_CHIREDIS_SHIM_H
#define BATON_CHIREDIS_SHIM_H
/* hiredis 0.14.1 (Debian 12). Only the *Argv entry points are used from Swift:
 * redisCommand / redisAppendCommand are C-variadic and do not import. */
#include <hiredis/hiredis.h>
#include <signal.h>

/* Ignore SIGPIPE once: hiredis writes with write(2), and a write into a socket the server
 * closed would otherwise kill the process (exit 141). */
static inline void baton_ignore_sigpipe(void) { signal(SIGPIPE, SIG_IGN); }

/* errstr is char[128] and imports as a tuple; hand Swift a pointer instead. */
static inline const char *baton_redis_errstr(const redisContext *c) { return c->errstr; }
static inline int baton_redis_fd(const redisContext *c) { return c->fd; }
#endif
