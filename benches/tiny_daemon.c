/* The tiny daemon of the `peers` benchmark (benches/daemons/peers.rs), compiled by the
 * benchmark with `cc -O2` at run time.
 *
 *   tiny_daemon [DIR]     (DIR defaults to the working directory, so that a supervisor's
 *                          `run` can be a symlink to this binary: no shell in between)
 *
 * Serving (the default): bind and listen on DIR/sock, write its pid to DIR/pid (through
 * DIR/pid.tmp and a rename, so a reader never sees half a pid), then accept and close
 * connections forever. Since the pid file is written after listen(), a new pid in it means
 * the socket accepts.
 *
 * Crashing (when DIR/crash exists): append one byte to DIR/count and exit(1) at once: the
 * crash storm counts restarts by the size of that file, whoever supervises.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : ".";
    char path[4096];

    snprintf(path, sizeof path, "%s/crash", dir);
    if (access(path, F_OK) == 0) {
        snprintf(path, sizeof path, "%s/count", dir);
        int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (fd >= 0) {
            (void)!write(fd, "x", 1);
        }
        _exit(1);
    }

    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    if ((size_t)snprintf(addr.sun_path, sizeof addr.sun_path, "%s/sock", dir) >=
        sizeof addr.sun_path) {
        return 2;
    }
    unlink(addr.sun_path);
    int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0 ||
        listen(listener, 64) < 0) {
        return 3;
    }

    char tmp[4096], pid[32];
    snprintf(tmp, sizeof tmp, "%s/pid.tmp", dir);
    snprintf(path, sizeof path, "%s/pid", dir);
    int len = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, pid, (size_t)len) != len || close(fd) < 0 ||
        rename(tmp, path) < 0) {
        return 4;
    }

    for (;;) {
        int conn = accept(listener, NULL, NULL);
        if (conn >= 0) {
            close(conn);
        }
    }
}
