/* The physical limit for bench/gateway.sh: an HTTP/1.1 keep-alive server that
 * answers every read with the same fixed bytes, without parsing anything
 * (wrk sends one request and waits for its answer, so one read is one
 * request). Two threads, each with its own SO_REUSEPORT listener and epoll
 * loop, as the machine has two cores.
 *
 *   responder PORT        listens on 127.0.0.1:PORT until killed
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static const char RESPONSE[] =
    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n[]";
static int port;

static int listener(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) || listen(fd, 1024)) {
    perror("responder: listen");
    exit(1);
  }
  return fd;
}

static void *serve(void *unused) {
  (void)unused;
  int lfd = listener(), ep = epoll_create1(0), one = 1;
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd}, events[256];
  char buf[16384];
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  for (;;) {
    int n = epoll_wait(ep, events, 256, -1);
    for (int i = 0; i < n; i++) {
      int fd = events[i].data.fd;
      if (fd == lfd) {
        int c = accept(lfd, NULL, NULL);
        if (c < 0) continue;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        ev = (struct epoll_event){.events = EPOLLIN, .data.fd = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
      } else if (read(fd, buf, sizeof buf) <= 0 ||
                 write(fd, RESPONSE, sizeof RESPONSE - 1) != sizeof RESPONSE - 1) {
        close(fd);
      }
    }
  }
  return NULL;
}

int main(int argc, char **argv) {
  pthread_t thread;
  if (argc != 2) {
    fprintf(stderr, "usage: responder PORT\n");
    return 2;
  }
  port = atoi(argv[1]);
  pthread_create(&thread, NULL, serve, NULL);
  serve(NULL);
  return 0;
}
