// The network floor for Scripts/bench's CPU rows: what a full-mesh audio node costs this machine
// before any codec, encryption, ICE library or Parley code. N processes on 127.0.0.1, one UDP
// socket per peer (as libnice gives each ICE stream its own), each process with the two
// device-paced threads an audio node cannot do without:
//   - "capture": wakes once a 20 ms frame and sends one 120-byte datagram (a 32 kb/s Opus frame with
//     Parley's headers) to every peer, one sendto per peer;
//   - "playback": wakes once a frame, half a frame later, and reads what every socket holds with one
//     recvmmsg per socket (receiving batched to the frame: no wake-up per datagram).
// Each process measures its own CPU (getrusage, all threads) over the window after a second of
// warm-up. On loopback a datagram's whole path, the receiver's side included, is charged to the
// machine that runs both ends, as in Parley's loopback meetings.
//
//   mesh-floor NODES SECONDS
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_NODES 16
#define FRAME_NS 20000000LL
#define DATAGRAM 120
#define BATCH 16

static int nodes, self;
static double seconds;
static int sockets[MAX_NODES][MAX_NODES];           // [node][peer]: the node's socket for that peer
static struct sockaddr_in addresses[MAX_NODES][MAX_NODES];
static struct timespec start;                        // the first frame, shared by every process
static long received;  // the playback thread adds, the main thread reads: __atomic builtins

static void add_ns(struct timespec *t, long long ns) {
    long long total = t->tv_nsec + ns;
    t->tv_sec += total / 1000000000LL;
    t->tv_nsec = total % 1000000000LL;
}

static double elapsed(const struct timespec *since) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - since->tv_sec) + (now.tv_nsec - since->tv_nsec) / 1e9;
}

static void *capture(void *unused) {
    char datagram[DATAGRAM];
    memset(datagram, 0x5a, sizeof datagram);
    struct timespec next = start;
    while (elapsed(&start) < seconds + 1.5) {
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
        for (int peer = 0; peer < nodes; peer++) {
            if (peer == self) continue;
            sendto(sockets[self][peer], datagram, sizeof datagram, 0,
                   (struct sockaddr *)&addresses[peer][self], sizeof addresses[peer][self]);
        }
        add_ns(&next, FRAME_NS);
    }
    return NULL;
}

static void *playback(void *unused) {
    char buffers[BATCH][1500];
    struct iovec vectors[BATCH];
    struct mmsghdr messages[BATCH];
    struct timespec next = start;
    add_ns(&next, FRAME_NS / 2);
    while (elapsed(&start) < seconds + 1.5) {
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
        for (int peer = 0; peer < nodes; peer++) {
            if (peer == self) continue;
            int count;
            do {
                for (int i = 0; i < BATCH; i++) {
                    vectors[i] = (struct iovec){.iov_base = buffers[i], .iov_len = sizeof buffers[i]};
                    messages[i] = (struct mmsghdr){.msg_hdr = {.msg_iov = &vectors[i], .msg_iovlen = 1}};
                }
                count = recvmmsg(sockets[self][peer], messages, BATCH, MSG_DONTWAIT, NULL);
                if (count > 0) __atomic_fetch_add(&received, count, __ATOMIC_RELAXED);
            } while (count == BATCH);
        }
        add_ns(&next, FRAME_NS);
    }
    return NULL;
}

static double cpu_seconds(void) {
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 + usage.ru_stime.tv_sec + usage.ru_stime.tv_usec / 1e6;
}

static void run_node(int report) {
    for (int node = 0; node < nodes; node++)
        for (int peer = 0; peer < nodes; peer++)
            if (node != self && peer != node) close(sockets[node][peer]);
    pthread_t threads[2];
    pthread_create(&threads[0], NULL, capture, NULL);
    pthread_create(&threads[1], NULL, playback, NULL);
    struct timespec from = start, to = start;
    add_ns(&from, 1000000000LL);
    add_ns(&to, 1000000000LL + (long long)(seconds * 1e9));
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &from, NULL);
    double cpu_before = cpu_seconds();
    long received_before = __atomic_load_n(&received, __ATOMIC_RELAXED);
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &to, NULL);
    double cpu = cpu_seconds() - cpu_before;
    long count = __atomic_load_n(&received, __ATOMIC_RELAXED) - received_before;
    pthread_join(threads[0], NULL);
    pthread_join(threads[1], NULL);
    double result[2] = {100 * cpu / seconds, count / seconds};
    if (write(report, result, sizeof result) != sizeof result) _exit(1);
    _exit(0);
}

int main(int argc, char **argv) {
    if (argc != 3 || (nodes = atoi(argv[1])) < 2 || nodes > MAX_NODES || (seconds = atof(argv[2])) <= 0) {
        fprintf(stderr, "usage: mesh-floor NODES SECONDS   (2 <= NODES <= %d)\n", MAX_NODES);
        return 2;
    }
    for (int node = 0; node < nodes; node++) {
        for (int peer = 0; peer < nodes; peer++) {
            if (peer == node) continue;
            struct sockaddr_in *address = &addresses[node][peer];
            address->sin_family = AF_INET;
            address->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            socklen_t length = sizeof *address;
            sockets[node][peer] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
            if (sockets[node][peer] < 0 || bind(sockets[node][peer], (struct sockaddr *)address, length) != 0 ||
                getsockname(sockets[node][peer], (struct sockaddr *)address, &length) != 0) {
                fprintf(stderr, "mesh-floor: cannot open a UDP socket on 127.0.0.1: %s\n", strerror(errno));
                return 1;
            }
        }
    }
    int reports[2];
    if (pipe(reports) != 0) return 1;
    clock_gettime(CLOCK_MONOTONIC, &start);
    add_ns(&start, 200000000LL);  // every process has forked by then
    pid_t children[MAX_NODES];
    for (self = 0; self < nodes; self++) {
        children[self] = fork();
        if (children[self] == 0) run_node(reports[1]);
        if (children[self] < 0) {
            fprintf(stderr, "mesh-floor: fork failed: %s\n", strerror(errno));
            return 1;
        }
    }
    double sum = 0, least = 1e9, most = 0, receives = 0;
    for (int node = 0; node < nodes; node++) {
        double result[2];
        if (read(reports[0], result, sizeof result) != sizeof result) {
            fprintf(stderr, "mesh-floor: a node did not report\n");
            return 1;
        }
        sum += result[0];
        least = result[0] < least ? result[0] : least;
        most = result[0] > most ? result[0] : most;
        receives += result[1];
    }
    for (int node = 0; node < nodes; node++) waitpid(children[node], NULL, 0);
    printf("mesh floor: %d nodes, 20 ms frames, %d-byte datagrams: sends %d/s, receives %.0f/s per node "
           "(expected %d): CPU per node mean %.2f %%, min %.2f, max %.2f over %.0f s\n",
           nodes, DATAGRAM, 50 * (nodes - 1), receives / nodes, 50 * (nodes - 1), sum / nodes, least, most, seconds);
    return 0;
}
