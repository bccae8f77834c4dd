/* echod: a TCP echo daemon. It checks itself once it listens, then serves until SIGINT or SIGTERM. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define VERSION "1.0"

static volatile sig_atomic_t stop;

static void on_signal(int sig) { stop = sig; }

static int self_check(int port) {
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int c = socket(AF_INET, SOCK_STREAM, 0);
	if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof a) < 0) return -1;
	return c;
}

int main(int argc, char **argv) {
	int port = 7000, opt;
	while ((opt = getopt(argc, argv, "p:")) != -1) {
		if (opt == 'p') port = atoi(optarg);
		else { fprintf(stderr, "usage: echod [-p port]\n"); return 2; }
	}
	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	setvbuf(stdout, NULL, _IOLBF, 0);

	int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY)};
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0 || listen(s, 16) < 0) {
		fprintf(stderr, "echod: cannot listen on %d: %s\n", port, strerror(errno));
		return 1;
	}
	/* The kernel completes a loopback connect into the backlog, so one thread can be both ends. */
	int c = self_check(port);
	int checked = 0;
	if (c >= 0 && write(c, "ping", 4) == 4) checked = 1;

	while (!stop) {
		int conn = accept(s, NULL, NULL);
		if (conn < 0) {
			if (errno == EINTR) continue;
			break;
		}
		char buf[512];
		ssize_t n;
		while ((n = read(conn, buf, sizeof buf)) > 0 && write(conn, buf, n) == n) {
			if (checked) {
				char back[8] = {0};
				checked = 0;
				if (read(c, back, 4) == 4) printf("KILN-COMPAT-OK c-multistage: echod %s echoed \"%s\" on port %d\n", VERSION, back, port);
				close(c);
				break;
			}
		}
		close(conn);
	}
	printf("echod: stopping on signal %d\n", (int)stop);
	close(s);
	return 0;
}
