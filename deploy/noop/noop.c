/*
 * lifeboat-noop: the one program the pre-pull pods of a `kubelet` PrePullSet run.
 *
 * Such a pod pulls each image by starting an init container from it. Images built FROM scratch
 * or on distroless have no shell and no `true`, so the container runs this program instead, from
 * an emptyDir volume the pod shares between its containers. Built statically
 * (gcc -static -Os -s), it needs nothing from the image it runs in.
 *
 *   lifeboat-noop               exit 0 at once: what every pull container runs
 *   lifeboat-noop install DEST  copy this executable to DEST (mode 0555): the pod's first init
 *                               container puts it into the shared volume
 *   lifeboat-noop pause         wait for SIGTERM or SIGINT, then exit 0: the pod's main
 *                               container, which keeps the pod (and so its images) on the node
 *
 * Exit codes: 0 done, 1 install failed (the reason on stderr), 2 unknown arguments.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

static const char usage[] = "usage: lifeboat-noop [install DEST | pause]\n";

/* Reports the failed step with errno's reason; returns the exit code for it. */
static int failed(const char *step, const char *path, int error) {
    fprintf(stderr, "lifeboat-noop: %s %s: %s\n", step, path, strerror(error));
    return 1;
}

/* Writes all of buf, carrying on after short writes and interruptions. 0, or an errno value. */
static int write_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Copies the file open as `in` to `out`. 0, or an errno value. */
static int copy(int in, int out) {
    char buf[65536];
    for (;;) {
        ssize_t n = read(in, buf, sizeof buf);
        if (n == 0)
            return 0;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        int error = write_all(out, buf, (size_t)n);
        if (error != 0)
            return error;
    }
}

/*
 * Copies /proc/self/exe to a temporary file beside DEST, makes it 0555, syncs it, renames it
 * to DEST and syncs the directory. Renaming instead of writing DEST in place means that running
 * install again (init containers run again when the pod's sandbox is recreated, and the volume
 * keeps the first copy) replaces a read-only file, and that DEST is never seen half-written.
 */
static int install(const char *dest) {
    char tmp[4096], dir[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp-%ld", dest, (long)getpid()) >= (int)sizeof tmp)
        return failed("installing to", dest, ENAMETOOLONG);
    snprintf(dir, sizeof dir, "%s", dest);
    char *slash = strrchr(dir, '/');
    if (slash == NULL)
        snprintf(dir, sizeof dir, ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';

    int in = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return failed("opening", "/proc/self/exe", errno);
    int out = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (out < 0) {
        int error = errno;
        close(in);
        return failed("creating", tmp, error);
    }
    const char *step = "copying /proc/self/exe to", *path = tmp;
    int error = copy(in, out);
    close(in);
    if (error == 0 && fchmod(out, 0555) != 0)
        step = "setting the mode of", error = errno;
    if (error == 0 && fsync(out) != 0)
        step = "syncing", error = errno;
    if (close(out) != 0 && error == 0)
        step = "closing", error = errno;
    if (error == 0 && rename(tmp, dest) != 0)
        step = "renaming the copy to", path = dest, error = errno;
    if (error != 0) {
        unlink(tmp);
        return failed(step, path, error);
    }
    /* The rename is durable once the directory is synced. */
    int d = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (d < 0)
        return failed("opening", dir, errno);
    if (fsync(d) != 0) {
        error = errno;
        close(d);
        return failed("syncing", dir, error);
    }
    close(d);
    return 0;
}

/* Never runs: SIGTERM and SIGINT stay blocked and are taken by sigwait. */
static void on_signal(int sig) { (void)sig; }

/*
 * Sleeps in sigwait until SIGTERM or SIGINT arrives, then returns 0. The signals are blocked
 * first, so one that arrives before sigwait is called waits for it. They also get a handler:
 * PID 1 of a container is not sent signals whose action is the default, which is why
 * Kubernetes' own pause container installs handlers too.
 */
static int pause_until_signalled(void) {
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    if (sigprocmask(SIG_BLOCK, &stop, NULL) != 0)
        return failed("blocking", "SIGTERM and SIGINT", errno);
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_signal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGINT, &action, NULL);
    int sig;
    while (sigwait(&stop, &sig) != 0) {
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc <= 1)
        return 0;
    if (argc == 3 && strcmp(argv[1], "install") == 0)
        return install(argv[2]);
    if (argc == 2 && strcmp(argv[1], "pause") == 0)
        return pause_until_signalled();
    fputs(usage, stderr);
    return 2;
}
