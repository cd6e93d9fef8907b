/*
 * wsload: a single-threaded epoll WebSocket load generator (and a tiny calibration server).
 *
 * Written in C so that one client core can drive far more traffic than any Python server
 * on the other core: the numbers then measure the server, not the client.  It speaks just
 * enough RFC 6455 for benchmarking: masked client frames, unmasked server frames, ping ->
 * pong, and the close handshake.  It does not verify Sec-WebSocket-Accept (every server
 * under test is a real server; a wrong accept key is not what is being measured).
 *
 *   wsload echo  --port P [--path /ws/echo] [--conns 50] [--size 32] [--warmup 1] [--duration 5]
 *   wsload bcast --port P [--sub-path /ws/sub] [--pub-path /ws/pub] [--conns 200] [--size 64]
 *                [--window 4] [--pub-port P] [--port2 P2: every other subscriber to P2]
 *   wsload idle  --port P [--path /ws/echo] [--conns 5000] [--hold 60]
 *   wsload hs    --port P [--path /ws/echo] [--conns 50]
 *   wsload serve --port P            (calibration server: echo, and /ws/pub -> every /ws/sub)
 *
 * Each client mode prints one JSON object on stdout.  "idle" prints {"ready": ...} once all
 * connections are open and holds them until stdin closes or --hold seconds pass.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { ST_CONNECTING, ST_UPGRADING, ST_OPEN, ST_CLOSING, ST_DONE };
enum { R_ECHO, R_SUB, R_PUB, R_IDLE, R_HS };

typedef struct {
    int fd;
    int state;
    int role;
    int want_out;
    int got_any;
    char *rbuf;
    size_t rlen, rcap;
    char *wbuf;
    size_t wlen, wcap;
    uint64_t t0;
} conn_t;

/* ---- options ---- */
static const char *o_host = "127.0.0.1";
static int o_port = 0, o_pub_port = 0, o_port2 = 0;
static const char *o_path = "/ws/echo", *o_sub_path = "/ws/sub", *o_pub_path = "/ws/pub";
static int o_conns = 50, o_size = -1, o_window = 4;
static double o_warmup = 1.0, o_duration = 5.0, o_hold = 60.0, o_connect_timeout = 20.0;

/* ---- state ---- */
static int ep;
static conn_t *conns;
static int nconns;
static uint64_t t_measure_start, t_measure_end;
static int measuring;
static uint64_t count, errors, bytes_in;
static uint32_t *samples; /* latency in units of 100 ns */
static size_t nsamples, samples_cap;
static uint64_t rng = 0x9E3779B97F4A7C15ULL;

#define RING (1u << 16)
static uint64_t *pub_sendt;
static uint32_t *pub_count;
static uint64_t pub_sent, pub_oldest, pub_lost, pub_late;
/* Per ring slot: 1 once the message was given up on (counted lost); receipts after that
   are counted late, so a stall longer than the give-up time is told apart from a loss. */
static uint8_t *pub_gaveup;
/* Losses count from the first message published once every subscriber had one (all joined):
   a subscriber may rightly miss what was broadcast before its join took effect. */
static uint64_t pub_counted_from = UINT64_MAX;
static int nsubs;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t xrand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void die(const char *msg) {
    perror(msg);
    exit(2);
}

static void add_sample(uint64_t ns) {
    if (nsamples == samples_cap) {
        samples_cap = samples_cap ? samples_cap * 2 : 1 << 20;
        samples = realloc(samples, samples_cap * sizeof *samples);
        if (!samples) die("realloc");
    }
    uint64_t v = ns / 100;
    samples[nsamples++] = v > 0xFFFFFFFFu ? 0xFFFFFFFFu : (uint32_t)v;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_ms(double p) {
    if (!nsamples) return -1;
    size_t i = (size_t)(p * (double)(nsamples - 1));
    return samples[i] / 10000.0;
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static void buf_reserve(char **buf, size_t *cap, size_t need) {
    if (need <= *cap) return;
    size_t n = *cap ? *cap : 4096;
    while (n < need) n *= 2;
    *buf = realloc(*buf, n);
    if (!*buf) die("realloc");
    *cap = n;
}

static void ep_mod(conn_t *c, int out) {
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl mod");
    c->want_out = out;
}

/* Write what we can now; queue the rest and ask for EPOLLOUT. */
static void conn_write(conn_t *c, const char *data, size_t len) {
    if (c->wlen == 0) {
        ssize_t n = write(c->fd, data, len);
        if (n < 0) {
            if (errno != EAGAIN) return; /* the read side will see the error */
            n = 0;
        }
        data += n;
        len -= (size_t)n;
        if (len == 0) return;
    }
    buf_reserve(&c->wbuf, &c->wcap, c->wlen + len);
    memcpy(c->wbuf + c->wlen, data, len);
    c->wlen += len;
    if (!c->want_out) ep_mod(c, 1);
}

static void conn_flush(conn_t *c) {
    while (c->wlen) {
        ssize_t n = write(c->fd, c->wbuf, c->wlen);
        if (n < 0) {
            if (errno == EAGAIN) return;
            c->wlen = 0;
            break;
        }
        memmove(c->wbuf, c->wbuf + n, c->wlen - (size_t)n);
        c->wlen -= (size_t)n;
    }
    if (c->want_out && c->state != ST_CONNECTING) ep_mod(c, 0);
}

/* A masked client frame (FIN set). */
static void send_frame(conn_t *c, int opcode, const char *payload, size_t len) {
    char hdr[14 + 65536];
    size_t h = 0;
    hdr[h++] = (char)(0x80 | opcode);
    if (len < 126) {
        hdr[h++] = (char)(0x80 | len);
    } else {
        hdr[h++] = (char)(0x80 | 126);
        hdr[h++] = (char)(len >> 8);
        hdr[h++] = (char)(len & 0xff);
    }
    uint32_t key = (uint32_t)xrand();
    unsigned char mask[4];
    memcpy(mask, &key, 4);
    memcpy(hdr + h, mask, 4);
    h += 4;
    for (size_t i = 0; i < len; i++) hdr[h + i] = (char)(payload[i] ^ mask[i & 3]);
    conn_write(c, hdr, h + len);
}

static void send_close(conn_t *c) {
    char p[2] = {0x03, (char)0xE8}; /* 1000 */
    send_frame(c, 0x8, p, 2);
    c->state = ST_CLOSING;
}

static char echo_payload[65536];

static void send_echo(conn_t *c) {
    c->t0 = now_ns();
    send_frame(c, 0x1, echo_payload, (size_t)o_size);
}

static void publish(conn_t *c) {
    char p[65536];
    uint64_t seq = pub_sent;
    int n = snprintf(p, sizeof p, "seq:%012llu:", (unsigned long long)seq);
    for (int i = n; i < o_size; i++) p[i] = '.';
    pub_sendt[seq & (RING - 1)] = now_ns();
    pub_count[seq & (RING - 1)] = 0;
    pub_gaveup[seq & (RING - 1)] = 0;
    pub_sent++;
    send_frame(c, 0x1, p, (size_t)(o_size > n ? o_size : n));
}

static int open_conn(conn_t *c, int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, o_host, &sa.sin_addr);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    c->fd = fd;
    c->state = ST_CONNECTING;
    c->rlen = c->wlen = 0;
    c->got_any = 0;
    c->t0 = now_ns();
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl add");
    c->want_out = 1;
    return 0;
}

static void close_conn(conn_t *c) {
    if (c->fd >= 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
    c->state = ST_DONE;
}

static const char *role_path(conn_t *c) {
    if (c->role == R_SUB) return o_sub_path;
    if (c->role == R_PUB) return o_pub_path;
    return o_path;
}

static void on_open(conn_t *c);
static void on_message(conn_t *c, const char *p, size_t len);

static void on_connected(conn_t *c) {
    int err = 0;
    socklen_t l = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
    if (err) {
        errors++;
        close_conn(c);
        return;
    }
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     role_path(c), o_host, o_port);
    c->state = ST_UPGRADING;
    ep_mod(c, 0);
    conn_write(c, req, (size_t)n);
}

/* Parse as many server frames as rbuf holds. */
static void parse_frames(conn_t *c) {
    size_t off = 0;
    while (c->fd >= 0 && c->rlen - off >= 2) {
        unsigned char *b = (unsigned char *)c->rbuf + off;
        int op = b[0] & 0x0f;
        int masked = b[1] & 0x80;
        uint64_t len = b[1] & 0x7f;
        size_t h = 2;
        if (len == 126) {
            if (c->rlen - off < 4) break;
            len = ((uint64_t)b[2] << 8) | b[3];
            h = 4;
        } else if (len == 127) {
            if (c->rlen - off < 10) break;
            len = 0;
            for (int i = 0; i < 8; i++) len = (len << 8) | b[2 + i];
            h = 10;
        }
        if (masked) h += 4;
        if (c->rlen - off < h + len) break;
        char *p = (char *)b + h;
        if (masked)
            for (uint64_t i = 0; i < len; i++) p[i] ^= (char)b[h - 4 + (i & 3)];
        off += h + len;
        if (op == 0x9) {
            send_frame(c, 0xA, p, (size_t)len);
        } else if (op == 0x8) {
            if (c->state == ST_CLOSING) {
                close_conn(c);
            } else {
                send_close(c);
                if (c->role != R_HS) errors++;
            }
        } else if (op == 0x1 || op == 0x2 || op == 0x0) {
            if (b[0] & 0x80) on_message(c, p, (size_t)len);
        }
    }
    if (c->fd >= 0) {
        memmove(c->rbuf, c->rbuf + off, c->rlen - off);
        c->rlen -= off;
    }
}

static void on_readable(conn_t *c) {
    for (;;) {
        buf_reserve(&c->rbuf, &c->rcap, c->rlen + 16384);
        ssize_t n = read(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen);
        if (n == 0 || (n < 0 && errno != EAGAIN)) {
            if (c->state != ST_CLOSING) errors++;
            if (c->role == R_HS && c->state == ST_CLOSING) c->state = ST_DONE;
            close_conn(c);
            return;
        }
        if (n < 0) break;
        bytes_in += (uint64_t)n;
        c->rlen += (size_t)n;
        if (c->state == ST_UPGRADING) {
            char *end = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
            if (!end) continue;
            if (c->rlen < 12 || memcmp(c->rbuf + 9, "101", 3) != 0) {
                if (errors < 3) fprintf(stderr, "wsload: no upgrade: %.*s\n", 60, c->rbuf);
                errors++;
                close_conn(c);
                return;
            }
            size_t hl = (size_t)(end - c->rbuf) + 4;
            memmove(c->rbuf, c->rbuf + hl, c->rlen - hl);
            c->rlen -= hl;
            c->state = ST_OPEN;
            on_open(c);
            if (c->fd < 0) return;
        }
        if (c->state == ST_OPEN || c->state == ST_CLOSING) parse_frames(c);
        if (c->fd < 0) return;
        if ((size_t)n < 16384) break;
    }
}

/* ---- per-mode behaviour ---- */
static int mode_echo, mode_bcast, mode_idle, mode_hs;
static int opened;
static conn_t *pub;

static void on_open(conn_t *c) {
    opened++;
    if (mode_hs) {
        if (measuring) {
            count++;
            add_sample(now_ns() - c->t0);
        }
        send_close(c);
    }
}

static int stopping;

static void on_message(conn_t *c, const char *p, size_t len) {
    uint64_t t = now_ns();
    if (stopping) return;
    if (c->role == R_ECHO) {
        if (measuring) {
            count++;
            add_sample(t - c->t0);
        }
        if (len != (size_t)o_size) errors++;
        send_echo(c);
    } else if (c->role == R_SUB) {
        c->got_any = 1;
        if (len < 17 || memcmp(p, "seq:", 4) != 0) return;
        uint64_t seq = strtoull(p + 4, NULL, 10);
        if (seq >= pub_sent || pub_sent - seq >= RING) return;
        pub_count[seq & (RING - 1)]++;
        if (pub_gaveup[seq & (RING - 1)]) pub_late++;
        if (measuring) {
            count++;
            add_sample(t - pub_sendt[seq & (RING - 1)]);
        }
    }
}

static void pump_publisher(uint64_t t) {
    if (!pub || pub->state != ST_OPEN) return;
    while (pub_oldest < pub_sent) {
        uint32_t i = (uint32_t)(pub_oldest & (RING - 1));
        if (pub_count[i] >= (uint32_t)nsubs) {
            pub_oldest++;
        } else if (t - pub_sendt[i] > 2000000000ull) {
            if (pub_oldest >= pub_counted_from) pub_lost += (uint64_t)nsubs - pub_count[i];
            pub_gaveup[i] = 1;
            pub_oldest++;
        } else {
            break;
        }
    }
    while (pub_sent - pub_oldest < (uint64_t)o_window) publish(pub);
}

/* Close every connection with a close handshake (bounded), so servers see clean goodbyes. */
static void drain(double seconds) {
    stopping = 1;
    for (int i = 0; i < nconns; i++) {
        conn_t *c = &conns[i];
        if (c->state == ST_OPEN) send_close(c);
        else if (c->state == ST_CONNECTING || c->state == ST_UPGRADING) close_conn(c);
    }
    uint64_t deadline = now_ns() + (uint64_t)(seconds * 1e9);
    struct epoll_event evs[512];
    while (now_ns() < deadline) {
        int left = 0;
        for (int i = 0; i < nconns; i++)
            if (conns[i].fd >= 0) left++;
        if (!left) break;
        int n = epoll_wait(ep, evs, 512, 10);
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (!c || c->fd < 0) continue;
            if (evs[i].events & EPOLLOUT) conn_flush(c);
            if (c->fd >= 0 && (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))) on_readable(c);
        }
    }
}

static int parse_args(int argc, char **argv) {
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "wsload: %s needs a value\n", a);
            return -1;
        }
        i++;
        if (!strcmp(a, "--host")) o_host = v;
        else if (!strcmp(a, "--port")) o_port = atoi(v);
        else if (!strcmp(a, "--pub-port")) o_pub_port = atoi(v);
        else if (!strcmp(a, "--port2")) o_port2 = atoi(v);
        else if (!strcmp(a, "--path")) o_path = v;
        else if (!strcmp(a, "--sub-path")) o_sub_path = v;
        else if (!strcmp(a, "--pub-path")) o_pub_path = v;
        else if (!strcmp(a, "--conns")) o_conns = atoi(v);
        else if (!strcmp(a, "--size")) o_size = atoi(v);
        else if (!strcmp(a, "--window")) o_window = atoi(v);
        else if (!strcmp(a, "--warmup")) o_warmup = atof(v);
        else if (!strcmp(a, "--duration")) o_duration = atof(v);
        else if (!strcmp(a, "--hold")) o_hold = atof(v);
        else if (!strcmp(a, "--connect-timeout")) o_connect_timeout = atof(v);
        else {
            fprintf(stderr, "wsload: unknown option %s\n", a);
            return -1;
        }
    }
    if (o_port <= 0) {
        fprintf(stderr, "wsload: --port is required\n");
        return -1;
    }
    if (o_size < 0) o_size = mode_bcast ? 64 : 32;
    if (o_size > 60000) o_size = 60000;
    if (!o_pub_port) o_pub_port = o_port;
    return 0;
}

static int serve(int port);

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: wsload echo|bcast|idle|hs|serve --port N [options]\n");
        return 2;
    }
    const char *mode = argv[1];
    mode_echo = !strcmp(mode, "echo");
    mode_bcast = !strcmp(mode, "bcast");
    mode_idle = !strcmp(mode, "idle");
    mode_hs = !strcmp(mode, "hs");
    if (parse_args(argc, argv) < 0) return 2;
    signal(SIGPIPE, SIG_IGN);
    if (!strcmp(mode, "serve")) return serve(o_port);
    if (!(mode_echo || mode_bcast || mode_idle || mode_hs)) {
        fprintf(stderr, "wsload: unknown mode %s\n", mode);
        return 2;
    }
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);

    memset(echo_payload, 'x', sizeof echo_payload);
    ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1");
    nconns = o_conns + (mode_bcast ? 1 : 0);
    nsubs = o_conns;
    conns = calloc((size_t)nconns, sizeof *conns);
    pub_sendt = calloc(RING, sizeof *pub_sendt);
    pub_count = calloc(RING, sizeof *pub_count);
    pub_gaveup = calloc(RING, sizeof *pub_gaveup);
    for (int i = 0; i < nconns; i++) {
        conns[i].fd = -1;
        conns[i].state = ST_DONE;
        conns[i].role = mode_echo ? R_ECHO : mode_idle ? R_IDLE : mode_hs ? R_HS : R_SUB;
    }
    if (mode_bcast) {
        pub = &conns[o_conns];
        pub->role = R_PUB;
    }

    /* Connect at most this many at once, so a burst does not overflow the listen backlog. */
    int max_pending = mode_hs ? o_conns : 64;
    int next = 0;
    uint64_t t_begin = now_ns(), t_ready = 0, t_last_check = 0;
    int all_open = 0, ready_printed = 0, stdin_open = 1;
    double cpu0 = 0;
    if (mode_idle) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
        epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);
    }
    struct epoll_event evs[512];
    for (;;) {
        uint64_t t = now_ns();
        /* open connections, a bounded number in flight */
        if (!mode_hs && !all_open) {
            int pending = 0;
            for (int i = 0; i < next; i++)
                if (conns[i].state == ST_CONNECTING || conns[i].state == ST_UPGRADING) pending++;
            while (next < nconns && pending < max_pending) {
                conn_t *c = &conns[next++];
                /* --port2: every other connection goes to a second server process */
                int port = c->role == R_PUB ? o_pub_port
                           : (o_port2 && (next & 1)) ? o_port2 : o_port;
                if (open_conn(c, port) < 0) errors++;
                else pending++;
            }
            if (!all_open && next == nconns && pending == 0) {
                all_open = 1;
                t_ready = t;
            }
        } else if (mode_hs) {
            /* handshake loop: every finished slot opens a fresh connection */
            for (int i = 0; i < nconns; i++) {
                conn_t *c = &conns[i];
                if (c->state == ST_DONE) {
                    if (t_measure_end && t >= t_measure_end) continue;
                    if (open_conn(c, o_port) < 0) errors++;
                } else if (t - c->t0 > 5000000000ull) {
                    errors++;
                    close_conn(c);
                }
            }
            if (!all_open) {
                all_open = 1;
                t_ready = t;
            }
        }
        if (!all_open && (double)(t - t_begin) / 1e9 > o_connect_timeout) {
            fprintf(stderr, "wsload: only %d of %d connections opened in %.0f s\n", opened,
                    nconns, o_connect_timeout);
            all_open = 1;
            t_ready = t;
        }
        if (mode_idle && all_open && !ready_printed) {
            printf("{\"mode\":\"idle\",\"ready\":true,\"open\":%d,\"errors\":%llu,\"seconds\":%.3f}\n",
                   opened, (unsigned long long)errors, (double)(t - t_begin) / 1e9);
            fflush(stdout);
            ready_printed = 1;
        }
        if (mode_idle && ready_printed && (!stdin_open || (double)(t - t_ready) / 1e9 > o_hold))
            break;
        if (mode_bcast && all_open) {
            pump_publisher(t);
            if (!measuring && !t_measure_end) {
                int all_got = 1;
                for (int i = 0; i < nsubs && all_got; i++)
                    if (conns[i].fd >= 0 && !conns[i].got_any) all_got = 0;
                if ((double)(t - t_ready) / 1e9 > o_connect_timeout) all_got = 1;
                if (all_got && pub_counted_from == UINT64_MAX) pub_counted_from = pub_sent;
                if (all_got && (double)(t - t_ready) / 1e9 >= o_warmup) {
                    measuring = 1;
                    t_measure_start = t;
                    t_measure_end = t + (uint64_t)(o_duration * 1e9);
                    cpu0 = cpu_seconds();
                }
            }
        } else if ((mode_echo || mode_hs) && all_open && !measuring && !t_measure_end) {
            if (mode_echo && t_ready == t)
                for (int i = 0; i < nconns; i++)
                    if (conns[i].state == ST_OPEN) send_echo(&conns[i]);
            if ((double)(t - t_ready) / 1e9 >= o_warmup) {
                measuring = 1;
                t_measure_start = t;
                t_measure_end = t + (uint64_t)(o_duration * 1e9);
                cpu0 = cpu_seconds();
            }
        }
        if (measuring && t >= t_measure_end) break;
        (void)t_last_check;

        int n = epoll_wait(ep, evs, 512, 10);
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (!c) {
                char buf[256];
                if (read(0, buf, sizeof buf) <= 0) {
                    stdin_open = 0;
                    epoll_ctl(ep, EPOLL_CTL_DEL, 0, NULL);
                }
                continue;
            }
            if (c->fd < 0) continue;
            if (c->state == ST_CONNECTING) {
                if (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_connected(c);
                continue;
            }
            if (evs[i].events & EPOLLOUT) conn_flush(c);
            if (c->fd >= 0 && (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))) on_readable(c);
        }
        if (mode_bcast && all_open) pump_publisher(now_ns());
    }
    uint64_t t_end = now_ns();
    double cpu = cpu_seconds() - cpu0;
    if (mode_idle) {
        drain(5.0);
        return 0;
    }
    drain(2.0);

    double secs = (double)(t_end - t_measure_start) / 1e9;
    qsort(samples, nsamples, sizeof *samples, cmp_u32);
    printf("{\"mode\":\"%s\",\"conns\":%d,\"size\":%d,\"seconds\":%.3f,\"count\":%llu,"
           "\"rate\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,\"errors\":%llu,"
           "\"opened\":%d,\"lost\":%llu,\"late\":%llu,\"published\":%llu,\"client_cpu\":%.3f}\n",
           mode, o_conns, o_size, secs, (unsigned long long)count, (double)count / secs,
           pct_ms(0.5), pct_ms(0.99), pct_ms(1.0), (unsigned long long)errors, opened,
           (unsigned long long)pub_lost, (unsigned long long)pub_late,
           (unsigned long long)pub_sent, cpu / secs);
    return 0;
}

/* ---- calibration server: shows how much the client can drive when the server is free ---- */
typedef struct {
    int fd, upgraded, role;
    char buf[65536];
    size_t len;
} sconn_t;

static int serve(int port) {
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (bind(ls, (struct sockaddr *)&sa, sizeof sa) < 0) die("bind");
    if (listen(ls, 4096) < 0) die("listen");
    int e = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(e, EPOLL_CTL_ADD, ls, &ev);
    sconn_t **subs = calloc(65536, sizeof *subs);
    int nsub = 0;
    static const char resp[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                               "Connection: Upgrade\r\n"
                               "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
    struct epoll_event evs[512];
    for (uint64_t t_stop = now_ns() + (uint64_t)(o_hold * 1e9); now_ns() < t_stop;) {
        int n = epoll_wait(e, evs, 512, 100);
        for (int i = 0; i < n; i++) {
            sconn_t *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    sconn_t *s = calloc(1, sizeof *s);
                    s->fd = fd;
                    struct epoll_event cev = {.events = EPOLLIN, .data.ptr = s};
                    epoll_ctl(e, EPOLL_CTL_ADD, fd, &cev);
                }
                continue;
            }
            ssize_t r = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                for (int k = 0; k < nsub; k++)
                    if (subs[k] == c) subs[k] = subs[--nsub];
                close(c->fd);
                free(c);
                continue;
            }
            c->len += (size_t)r;
            if (!c->upgraded) {
                char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
                if (!end) continue;
                c->role = memmem(c->buf, 16, "/ws/sub", 7) ? 1 : memmem(c->buf, 16, "/ws/pub", 7) ? 2 : 0;
                size_t hl = (size_t)(end - c->buf) + 4;
                memmove(c->buf, c->buf + hl, c->len - hl);
                c->len -= hl;
                c->upgraded = 1;
                if (write(c->fd, resp, sizeof resp - 1) < 0) continue;
                if (c->role == 1 && nsub < 65536) subs[nsub++] = c;
            }
            size_t off = 0;
            while (c->len - off >= 6) {
                unsigned char *b = (unsigned char *)c->buf + off;
                size_t len = b[1] & 0x7f, h = 2;
                if (len == 126) {
                    len = ((size_t)b[2] << 8) | b[3];
                    h = 4;
                }
                h += 4;
                if (c->len - off < h + len) break;
                unsigned char out[65536 + 4];
                size_t oh = 0;
                out[oh++] = b[0];
                if (len < 126) out[oh++] = (unsigned char)len;
                else {
                    out[oh++] = 126;
                    out[oh++] = (unsigned char)(len >> 8);
                    out[oh++] = (unsigned char)len;
                }
                for (size_t k = 0; k < len; k++) out[oh + k] = b[h + k] ^ b[h - 4 + (k & 3)];
                off += h + len;
                int op = b[0] & 0x0f;
                if (op == 0x8) {
                    if (write(c->fd, out, oh + len) < 0) break;
                    shutdown(c->fd, SHUT_WR);
                } else if (c->role == 2) {
                    for (int k = 0; k < nsub; k++)
                        if (write(subs[k]->fd, out, oh + len) < 0) continue;
                } else if (write(c->fd, out, oh + len) < 0) {
                    break;
                }
            }
            memmove(c->buf, c->buf + off, c->len - off);
            c->len -= off;
        }
    }
    return 0;
}
