/*
 * mock_compute_engine: a C port of HTC-Grid's C++ mock engine, for command-handler tasks.
 *
 *   mock_compute_engine <delay_ms> <ram_mb> <iterations>
 *
 * delay_ms >= 0: sleep delay_ms milliseconds and print delay_ms.
 * delay_ms <  0: compute a Fibonacci-like recurrence modulo 1e9 for <iterations> steps over a
 *                ring buffer of about ram_mb MiB of 64-bit values, and print the last value.
 *
 * The last value is F(iterations) mod 1e9 (F(0) = 0, F(1) = 1) whatever the buffer size, so
 * a client can check it; the buffer only makes the task use memory bandwidth and RAM.
 *
 * Fixed from the original: the delay is parsed signed (its unsigned parse made the compute
 * branch unreachable), arguments are validated, sizes are 64-bit, allocation is checked,
 * usage goes to stderr with exit status 2.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define MODULUS 1000000000LL

static void usage(const char *prog) {
    fprintf(stderr,
            "usage: %s <delay_ms> <ram_mb> <iterations>\n"
            "  delay_ms    sleep this many ms and print it; -1 to compute instead\n"
            "  ram_mb      approximate MiB of RAM for the ring buffer (compute mode)\n"
            "  iterations  steps of the recurrence (compute mode)\n",
            prog);
}

/* Parse a whole decimal argument into *out; 0 on success. */
static int parse_ll(const char *text, long long *out) {
    char *end = NULL;
    errno = 0;
    long long value = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0') {
        return -1;
    }
    *out = value;
    return 0;
}

static int sleep_ms(long long ms) {
    struct timespec req = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&req, &req) != 0) {
        if (errno != EINTR) {
            return -1;
        }
    }
    return 0;
}

static int compute(long long ram_mb, long long iterations, int64_t *result) {
    int64_t slots = (int64_t)(ram_mb * 1024 * 1024 / (long long)sizeof(int64_t));
    if (slots < 2) {
        slots = 2;
    }
    /* never allocate more slots than the recurrence will write */
    if (iterations + 1 < slots) {
        slots = iterations + 1 < 2 ? 2 : iterations + 1;
    }
    int64_t *ring = malloc((size_t)slots * sizeof(int64_t));
    if (ring == NULL) {
        return -1;
    }
    ring[0] = 0;
    ring[1] = 1;
    int64_t value = iterations == 0 ? 0 : 1;
    for (long long i = 2; i <= iterations; i++) {
        value = (ring[(i - 2) % slots] + ring[(i - 1) % slots]) % MODULUS;
        ring[i % slots] = value;
    }
    free(ring);
    *result = value;
    return 0;
}

int main(int argc, char *argv[]) {
    long long delay_ms, ram_mb, iterations;
    if (argc != 4 || parse_ll(argv[1], &delay_ms) != 0 || parse_ll(argv[2], &ram_mb) != 0 ||
        parse_ll(argv[3], &iterations) != 0) {
        usage(argv[0]);
        return 2;
    }
    if (delay_ms >= 0) {
        if (sleep_ms(delay_ms) != 0) {
            perror("nanosleep");
            return 1;
        }
        printf("%lld\n", delay_ms);
        return 0;
    }
    if (ram_mb < 0 || ram_mb > 1024LL * 1024 || iterations < 0) {
        fprintf(stderr, "ram_mb must be in [0, 1048576] and iterations >= 0\n");
        return 2;
    }
    int64_t result;
    if (compute(ram_mb, iterations, &result) != 0) {
        fprintf(stderr, "cannot allocate %lld MiB\n", ram_mb);
        return 1;
    }
    printf("%" PRId64 "\n", result);
    return 0;
}
