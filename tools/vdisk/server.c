/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vdisk.h"
#include "server.h"

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif

#define READY_FD 3 /* the pipe to `vdisk open`, in the server */

static const char *server_log; /* where stderr goes once the server is up */

/* The signals that stop a server, blocked in every thread of it. */
static void stop_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
}

/* In the child: detach from the caller, then run the server. */
static void __attribute__((noreturn))
child(const char *name, const char *log, int ready_fd, server_main_fn fn, void *arg)
{
    sigset_t stop;
    int null;

    setsid();
    if (chdir("/") < 0)
        _exit(err("chdir /: %m"));
    null = open("/dev/null", O_RDWR);
    if (null < 0)
        _exit(err("/dev/null: %m"));
    dup2(null, STDIN_FILENO);
    dup2(null, STDOUT_FILENO); /* stdout may be the caller's $(...) pipe */
    if (ready_fd != READY_FD) {
        dup2(ready_fd, READY_FD);
        close(ready_fd);
    }
    /* all but the key of an encrypted image (key.c), kept at its number */
    if (key_descriptor() > READY_FD) {
        close_range(READY_FD + 1, key_descriptor() - 1, 0);
        close_range(key_descriptor() + 1, ~0u, 0);
    } else {
        close_range(READY_FD + 1, ~0u, 0);
    }
    prctl(PR_SET_NAME, name);
    prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0);
    signal(SIGPIPE, SIG_IGN);
    stop_signals(&stop);
    pthread_sigmask(SIG_BLOCK, &stop, NULL); /* threads inherit it */
    server_log = log;
    fn(arg);
    _exit(1);
}

pid_t server_spawn(const char *name, const char *log, server_main_fn fn, void *arg, char *detail,
                   size_t detail_len)
{
    char msg[256];
    size_t got = 0;
    int pipefd[2], status;
    pid_t pid;

    if (pipe(pipefd) < 0)
        return -err("pipe: %m");
    fflush(NULL);
    pid = fork();
    if (pid < 0) {
        close(pipefd[0]);
        close(pipefd[1]);
        return -err("fork: %m");
    }
    if (pid == 0) {
        close(pipefd[0]);
        child(name, log, pipefd[1], fn, arg);
    }
    close(pipefd[1]);
    while (got < sizeof(msg) - 1) {
        ssize_t n = read(pipefd[0], msg + got, sizeof(msg) - 1 - got);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(pipefd[0]);
    msg[got] = '\0';
    if (strncmp(msg, "up ", 3) == 0) {
        snprintf(detail, detail_len, "%s", msg + 3);
        return pid;
    }
    /* it printed why on our stderr, unless it crashed */
    if (waitpid(pid, &status, 0) == pid && WIFSIGNALED(status))
        err("%s server died of signal %d before it was up", name, WTERMSIG(status));
    return -1;
}

void server_ready(const char *detail)
{
    int fd;

    key_forget(); /* the image is open: its key lives on only inside the library */
    if (dprintf(READY_FD, "up %s", detail) < 0)
        fprintf(stderr, "ready pipe: %m\n");
    close(READY_FD);
    fd = open(server_log ? server_log : "/dev/null",
              O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd >= 0) {
        dup2(fd, STDERR_FILENO);
        close(fd);
    }
}

void server_wait_stop(bool (*done)(void *), void *arg)
{
    struct timespec poll = {0, 250 * 1000 * 1000};
    sigset_t stop;

    stop_signals(&stop);
    while (!(done && done(arg))) {
        int sig = sigtimedwait(&stop, NULL, done ? &poll : NULL);

        if (sig > 0) {
            fprintf(stderr, "signal %d: stopping\n", sig);
            return;
        }
    }
}

bool server_running(pid_t pid, const char *name)
{
    char path[64], buf[256], *close_paren, *open_paren;
    size_t n;
    FILE *f;

    if (pid <= 0)
        return false;
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    f = fopen(path, "r");
    if (!f)
        return false;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* "PID (COMM) STATE ..." */
    open_paren = strchr(buf, '(');
    close_paren = strrchr(buf, ')');
    if (!open_paren || !close_paren || close_paren[1] != ' ' || strchr("ZX", close_paren[2]))
        return false;
    *close_paren = '\0';
    return strcmp(open_paren + 1, name) == 0;
}

/* Wait up to SECONDS for PID to exit, reaping it if it is our child. */
static bool wait_exit(pid_t pid, const char *name, int seconds)
{
    struct timespec tick = {0, 10 * 1000 * 1000};

    for (int i = 0; i < seconds * 100; i++) {
        waitpid(pid, NULL, WNOHANG);
        if (!server_running(pid, name))
            return true;
        nanosleep(&tick, NULL);
    }
    return !server_running(pid, name);
}

bool server_stop(pid_t pid, const char *name, int seconds)
{
    if (!server_running(pid, name))
        return true;
    kill(pid, SIGTERM);
    if (wait_exit(pid, name, seconds))
        return true;
    warn("%s server %d did not stop in %d s; killing it", name, (int)pid, seconds);
    kill(pid, SIGKILL);
    wait_exit(pid, name, 5);
    return false;
}
